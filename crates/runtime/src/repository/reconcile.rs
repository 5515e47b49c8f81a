//! Reconciliation: bringing what is served in line with the bundles on disk
//! (`reload`, at start, on `--watch` events), and the record of bundles that
//! failed to load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tensorgate_protocol::LoadFailure;

use super::build::{self, LoadError};
use super::Repository;
use crate::application::{unix_s, Application, Stamp};

/// What a reload did.
#[derive(Default)]
pub struct ReloadReport {
    /// Versions loaded (new or changed on disk).
    pub loaded: Vec<Arc<Application>>,
    /// Versions no longer on disk, no longer served.
    pub removed: Vec<Arc<Application>>,
    /// Bundles that failed to load (what served before keeps serving).
    pub errors: Vec<LoadFailure>,
    /// Bundles left as they were.
    pub unchanged: usize,
}

/// Bundles that failed to load, by `NAME/VERSION` directory, with the stamp
/// of the files that failed (unchanged files are not retried).
#[derive(Default)]
pub(super) struct Failures(Mutex<BTreeMap<PathBuf, (LoadFailure, Stamp)>>);

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, (LoadFailure, Stamp)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `dir` failed with exactly these files.
    pub(super) fn failed_with(&self, dir: &Path, stamp: &Stamp) -> bool {
        self.lock().get(dir).is_some_and(|(_, s)| s == stamp)
    }

    /// Records (and logs) that `dir` failed to load.
    pub(super) fn record(&self, dir: &Path, name: &str, version: Option<u64>, e: &LoadError, stamp: Stamp) -> LoadFailure {
        tracing::error!(dir = %dir.display(), "failed to load: {e}");
        let failure = LoadFailure { model: name.to_string(), version, error: e.to_string(), at_unix_s: unix_s(SystemTime::now()) };
        self.lock().insert(dir.to_path_buf(), (failure.clone(), stamp));
        failure
    }

    /// Forgets `dir` (it loaded, or it was deleted).
    pub(super) fn clear(&self, dir: &Path) {
        self.lock().remove(dir);
    }

    /// Forgets directories no longer on disk.
    fn retain_existing(&self) {
        self.lock().retain(|dir, _| dir.exists());
    }

    /// Every recorded failure.
    pub(super) fn all(&self) -> Vec<LoadFailure> {
        self.lock().values().map(|(f, _)| f.clone()).collect()
    }
}

impl Repository {
    /// Re-reads the bundles on disk (all, or one model's) and brings the
    /// routing table in line: new or changed bundles are loaded and swapped
    /// in, bundles gone from disk stop being served. A bundle that fails to
    /// load leaves the version that served before serving.
    pub fn reload(&self, only: Option<&str>) -> ReloadReport {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport::default();
        let mut on_disk = Vec::new();
        for name_dir in sorted_dirs(&self.root) {
            let name = file_name(&name_dir);
            if only.is_some_and(|o| o != name) {
                continue;
            }
            for version_dir in sorted_dirs(&name_dir) {
                let stamp = Stamp::of(&version_dir);
                let version = file_name(&version_dir).parse::<u64>().ok();
                if let Some(v) = version {
                    on_disk.push((name.clone(), v));
                    if self.routes.get(&name, v).is_some_and(|a| a.stamp == stamp) {
                        report.unchanged += 1;
                        continue;
                    }
                }
                if self.failures.failed_with(&version_dir, &stamp) {
                    report.unchanged += 1;
                    continue;
                }
                let loaded = match version {
                    None => Err(LoadError::Layout {
                        dir: version_dir.display().to_string(),
                        message: "version directories must be named by a whole number".into(),
                    }),
                    Some(_) => build::load(&version_dir, &self.engine, &self.config),
                };
                match loaded {
                    Ok(app) => {
                        super::log_loaded(&app);
                        self.failures.clear(&version_dir);
                        report.loaded.push(self.routes.insert(app));
                    }
                    Err(e) => report.errors.push(self.failures.record(&version_dir, &name, version, &e, stamp)),
                }
            }
        }
        // Loaded versions whose directory is gone.
        let gone: Vec<Arc<Application>> = self
            .routes
            .all()
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| only.is_none_or(|o| o == a.name()))
            .filter(|a| !on_disk.iter().any(|(n, v)| n == a.name() && *v == a.version()))
            .collect();
        for app in &gone {
            tracing::info!(app = app.name(), version = app.version(), "bundle gone from disk: no longer served");
            self.routes.remove(app.name(), app.version());
        }
        self.failures.retain_existing();
        let installed: Vec<(String, u64)> = report.loaded.iter().map(|a| (a.name().to_string(), a.version())).collect();
        self.released(&installed);
        report.removed = gone;
        report
    }
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Subdirectories of `dir`, sorted, skipping hidden ones (`.staging`, `.trash`).
pub(super) fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}
