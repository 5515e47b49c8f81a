//! The model repository: bundles on disk (`REPO/NAME/VERSION/`), loaded into
//! [`Application`]s and routed by name and version.
//!
//! - `build.rs`: one bundle directory → a ready application (plugin, model, warm-up);
//! - `check.rs`: the checks a version passes before it serves;
//! - `routes.rs`: the lock-free routing table;
//! - `defaults.rs`: which version is a model's default (`promote`, `rollback`);
//! - `reconcile.rs`: `reload`, bringing the table in line with the disk;
//! - `store.rs`: crash-safe changes on disk (uploads, replacements, deletes);
//! - `watch.rs`: reload on file changes.

pub mod build;
pub mod check;
pub mod defaults;
mod reconcile;
pub mod routes;
pub mod store;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tensorgate_protocol::{LoadFailure, ModelInfo};

pub use crate::manifest::{Manifest, ManifestError, ModelSection, PluginSection, TensorDecl, Warmup};
pub use build::LoadError;
pub use defaults::{DefaultPolicy, PolicyError};
pub use reconcile::ReloadReport;
pub use routes::RouteError;
pub use store::{Stamp, StoreError};

use crate::application::{Application, ModelState};
use crate::config::HostConfig;
use crate::plugin::PluginEngine;
use reconcile::{file_name, sorted_dirs, Failures};

/// Why a change to the repository was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Storing or removing files failed, or the archive is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundle did not load; the versions serving before keep serving.
    #[error("bundle did not load (nothing changed): {0}")]
    Load(#[from] LoadError),
    /// No such model or version.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// `promote` or `rollback` could not be done.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The model repository: the bundles under one directory and the table that
/// routes requests to their loaded versions.
///
/// Every change prepares the new version fully before it is swapped into
/// the routing table. A request keeps the `Arc<Application>` it was routed
/// to, so it finishes on that version; a replaced or deleted version is
/// freed (model, executor threads, plugin instances) when its last request
/// ends.
pub struct Repository {
    root: PathBuf,
    engine: PluginEngine,
    config: HostConfig,
    routes: routes::Routes,
    failures: Failures,
    /// Serializes changes (reload, upload commit, delete).
    changes: Mutex<()>,
}

impl Repository {
    /// Opens the repository at `root`: repairs what a crash may have left
    /// (see [`store`]) and loads every `NAME/VERSION` bundle. A bundle that
    /// fails to load is logged and recorded, and does not stop the others.
    pub fn open(root: &Path, engine: PluginEngine, config: HostConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            what: "creating",
            path: root.display().to_string(),
            source,
        })?;
        store::recover(root)?;
        let repo = Repository {
            root: root.to_path_buf(),
            engine,
            config,
            routes: routes::Routes::default(),
            failures: Failures::default(),
            changes: Mutex::new(()),
        };
        repo.routes.set_policies(defaults::load(root));
        repo.reload(None);
        Ok(repo)
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Installs a bundle from a `.tar.zst` archive: unpacked into staging,
    /// loaded there (plugin, model, warm-up), and only then renamed to
    /// `REPO/NAME/VERSION` and swapped in. On any failure nothing changes.
    pub fn upload(&self, archive: &[u8], replace: bool) -> Result<Arc<Application>, ChangeError> {
        let staged = store::unpack(&self.root, archive, self.config.max_upload_bytes)?;
        let holder = staged.ancestors().find(|p| p.parent() == Some(&self.root.join(store::STAGING))).map(Path::to_path_buf);
        let result = self.install(&staged, replace);
        if let Some(h) = holder {
            let _ = std::fs::remove_dir_all(h);
        }
        result
    }

    fn install(&self, staged: &Path, replace: bool) -> Result<Arc<Application>, ChangeError> {
        let manifest = Manifest::load(staged).map_err(|e| build::in_bundle(e.into(), staged))?;
        let home = self.root.join(&manifest.name).join(manifest.version.to_string());
        if home.exists() && !replace {
            return Err(StoreError::Exists { name: manifest.name, version: manifest.version }.into());
        }
        let app = build::prepare(staged, &home, &self.engine, &self.config)?;
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        store::commit(&self.root, staged, app.name(), app.version(), replace)?;
        log_loaded(&app);
        self.failures.clear(&home);
        let app = self.routes.insert(app);
        self.released(&[(app.name().to_string(), app.version())]);
        Ok(app)
    }

    /// Newly installed versions: a new release takes over the default from
    /// a pin (saved). Called with the change lock held.
    fn released(&self, installed: &[(String, u64)]) {
        let mut policies = self.routes.policies();
        let mut changed = false;
        for (name, version) in installed {
            if let Some(p) = policies.get_mut(name) {
                if p.released(*version) {
                    tracing::info!(app = %name, version, "a newer version is installed: it is the default again, not the promoted one");
                    changed = true;
                }
            }
        }
        if changed {
            self.save_policies(policies);
        }
    }

    fn save_policies(&self, policies: std::collections::BTreeMap<String, DefaultPolicy>) {
        if let Err(e) = defaults::save(&self.root, &policies) {
            tracing::warn!(dir = %self.root.display(), "could not save the default versions (they hold until a restart): {e}");
        }
        self.routes.set_policies(policies);
    }

    /// Makes `version` the default of `name` until a newer version is
    /// installed; returns every version of the model afterwards.
    pub fn promote(&self, name: &str, version: u64) -> Result<Vec<ModelInfo>, ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready_versions(name)?;
        let mut policies = self.routes.policies();
        policies.entry(name.to_string()).or_default().promote(name, version, &ready)?;
        self.save_policies(policies);
        tracing::info!(app = name, version, "promoted: the default version");
        Ok(self.models_of(name))
    }

    /// Rolls the default of `name` back to the newest earlier version not
    /// rolled back, marking the current default rolled back with `reason`.
    /// Returns `(from, to)` and every version of the model afterwards.
    pub fn rollback(&self, name: &str, reason: &str) -> Result<((u64, u64), Vec<ModelInfo>), ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready_versions(name)?;
        let mut policies = self.routes.policies();
        let moved = policies.entry(name.to_string()).or_default().rollback(name, &ready, reason)?;
        self.save_policies(policies);
        tracing::warn!(app = name, from = moved.0, to = moved.1, "rolled back: {reason}");
        Ok((moved, self.models_of(name)))
    }

    fn ready_versions(&self, name: &str) -> Result<std::collections::BTreeSet<u64>, RouteError> {
        let ready: std::collections::BTreeSet<u64> = self.routes.versions(name).keys().copied().collect();
        if ready.is_empty() {
            return Err(RouteError::UnknownModel { name: name.into(), loaded: self.routes.names().join(", ") });
        }
        Ok(ready)
    }

    fn models_of(&self, name: &str) -> Vec<ModelInfo> {
        self.models().into_iter().filter(|m| m.name == name).collect()
    }

    /// Stops serving `name` at `version` (every version when `None`) and
    /// removes the bundles from disk. Requests already routed finish first.
    /// Returns what was removed (loaded versions and failed bundles).
    pub fn delete(&self, name: &str, version: Option<u64>) -> Result<Vec<ModelInfo>, ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut versions: Vec<u64> = sorted_dirs(&self.root.join(name))
            .iter()
            .filter_map(|d| file_name(d).parse().ok())
            .filter(|v| version.is_none_or(|want| want == *v))
            .collect();
        let routed = self.routes.versions(name);
        for v in routed.keys().filter(|v| version.is_none_or(|want| want == **v)) {
            if !versions.contains(v) {
                versions.push(*v);
            }
        }
        if versions.is_empty() {
            return Err(match version {
                Some(v) if !routed.is_empty() || self.root.join(name).exists() => RouteError::UnknownVersion {
                    name: name.into(),
                    version: v,
                    loaded: routed.keys().map(u64::to_string).collect::<Vec<_>>().join(", "),
                },
                _ => RouteError::UnknownModel { name: name.into(), loaded: self.routes.names().join(", ") },
            }
            .into());
        }
        let mut removed = Vec::new();
        for v in versions {
            let mut info = match routed.get(&v) {
                Some(app) => app.info(false),
                None => ModelInfo { name: name.into(), version: v, ..Default::default() },
            };
            self.routes.remove(name, v);
            store::remove(&self.root, name, v)?;
            self.failures.clear(&self.root.join(name).join(v.to_string()));
            tracing::info!(app = name, version = v, "deleted");
            info.state = ModelState::Deleted.to_string();
            removed.push(info);
        }
        let mut policies = self.routes.policies();
        if let Some(p) = policies.get_mut(name) {
            let mut changed = false;
            for m in &removed {
                changed |= p.forget(m.version);
            }
            if changed {
                self.save_policies(policies);
            }
        }
        Ok(removed)
    }

    /// The application serving `name` at `version` (the default when `None`).
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<Application>, RouteError> {
        self.routes.resolve(name, version)
    }

    /// Every loaded application version, by name then version.
    pub fn all(&self) -> Vec<Arc<Application>> {
        self.routes.all().into_iter().map(|(a, _)| a).collect()
    }

    /// Every version: loaded ones (`ready`) and bundles that failed (`failed`).
    pub fn models(&self) -> Vec<ModelInfo> {
        let policies = self.routes.policies();
        let mut out: Vec<ModelInfo> = self
            .routes
            .all()
            .iter()
            .map(|(a, default)| {
                let mut info = a.info(*default);
                info.rolled_back = policies.get(a.name()).and_then(|p| p.rolled_back.get(&a.version()).cloned());
                info
            })
            .collect();
        for f in self.failures.all() {
            let Some(v) = f.version else { continue };
            if !out.iter().any(|m| m.name == f.model && m.version == v) {
                out.push(ModelInfo {
                    name: f.model.clone(),
                    version: v,
                    state: ModelState::Failed.to_string(),
                    error: Some(f.error.clone()),
                    ..Default::default()
                });
            }
        }
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        out
    }

    /// Load errors of the bundles on disk that are not serving as they are.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures.all()
    }
}

fn log_loaded(app: &Application) {
    tracing::info!(
        app = app.name(), version = app.version(), device = %app.device(),
        load_ms = app.load_time.as_secs_f64() * 1e3,
        plugin_from_cache = app.plugin.from_cache(), "loaded"
    );
}
