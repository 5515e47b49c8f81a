//! One loaded application version: its manifest, its plugin's instance pool
//! and its model's executor, with counters. Built by the repository
//! (`repository/build.rs`), run item by item by the pipeline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tensorgate_protocol::{ModelInfo, ModelStatus};

use crate::executor::ModelExecutor;
use tensorgate_server::manifest::{Manifest, TensorDecl};
use crate::plugin::{PluginInfo, PluginPool};

/// Per-version counters. A version replaced in place (a reload of changed
/// files, an upload with `replace`) keeps counting in the same counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items answered with a result.
    pub items_ok: AtomicU64,
    /// Items answered with an error.
    pub items_failed: AtomicU64,
    /// Requests routed to this version.
    pub requests: AtomicU64,
    /// This version's per-item metric handles.
    pub metrics: std::sync::OnceLock<tensorgate_server::metrics::ItemMetrics>,
}

/// Rings when an item fails anywhere in the process, so that a canary
/// that starts failing is judged at once rather than at the next tick.
pub static ITEM_FAILED: FailureBell = FailureBell { count: std::sync::Mutex::new(0), rung: std::sync::Condvar::new() };

/// A count of failed items and a condition variable to wait for the next one.
pub struct FailureBell {
    count: std::sync::Mutex<u64>,
    rung: std::sync::Condvar,
}

impl FailureBell {
    /// Counts one failed item and wakes the waiters.
    pub fn ring(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.rung.notify_all();
    }

    /// Waits until an item fails after `seen` (a count [`FailureBell::wait`]
    /// returned before) or `timeout` passes; returns the count now.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self.rung.wait_timeout_while(guard, timeout, |n| *n == seen).unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

pub use tensorgate_server::manage::ModelState;

/// One loaded application version: manifest, plugin instances and model.
pub struct Application {
    /// The manifest.
    pub manifest: Manifest,
    /// What the plugin said about itself.
    pub info: PluginInfo,
    /// The plugin's instance pool.
    pub plugin: PluginPool,
    /// The model's executor.
    pub model: ModelExecutor,
    /// Bundle directory.
    pub dir: PathBuf,
    /// Time to load plugin and model and run the warm-up item.
    pub load_time: Duration,
    /// When it became ready.
    pub loaded_at: SystemTime,
    /// The bundle's files as they were loaded (reload skips unchanged bundles).
    pub stamp: Stamp,
    /// Largest result (payload plus metadata) the plugin may return: what a
    /// client can receive in one frame.
    pub max_output_bytes: u64,
    /// Counters, shared with the instances of this name and version it replaced.
    pub counters: Arc<Counters>,
}

impl Application {
    /// What `models` lists about this version.
    pub fn info(&self, default: bool) -> ModelInfo {
        let decl = |t: &TensorDecl| format!("{}: {:?}{:?}", t.name, t.dtype, t.shape);
        ModelInfo {
            name: self.name().to_string(),
            version: self.version(),
            state: ModelState::Ready.to_string(),
            description: self.manifest.description.clone(),
            labels: self.manifest.labels.clone(),
            inputs: self.manifest.inputs.iter().map(decl).collect(),
            outputs: self.manifest.outputs.iter().map(decl).collect(),
            device: self.device(),
            default,
            rolled_back: None,
            canary: None,
            load_us: self.load_time.as_micros() as u64,
            plugin_cached: self.plugin.from_cache(),
            loaded_at_unix_s: unix_s(self.loaded_at),
            requests: self.counters.requests.load(Ordering::Relaxed),
            items_ok: self.counters.items_ok.load(Ordering::Relaxed),
            items_failed: self.counters.items_failed.load(Ordering::Relaxed),
            bundle_bytes: self.stamp.bytes(),
            error: None,
            plugin: self.info.name.clone(),
            accepts: self.info.accepts.clone(),
            format: self.manifest.model.format.name().into(),
            max_batch: self.manifest.model.batch_policy().max_batch as u64,
            max_delay_us: self.manifest.model.batch_policy().max_delay.as_micros() as u64,
            instances: self.manifest.model.instances as u64,
        }
    }

    /// What `status` shows of this version now: its counters, its model's
    /// forwards and queue, its idle plugin instances (a host's status and a
    /// worker's advert both read them here).
    pub fn status(&self) -> ModelStatus {
        let stats = self.model.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ModelStatus {
            name: self.name().to_string(),
            version: self.version(),
            description: self.manifest.description.clone(),
            device: self.device(),
            items_ok: load(&self.counters.items_ok),
            items_failed: load(&self.counters.items_failed),
            forwards: load(&stats.forwards),
            forward_rows: load(&stats.rows),
            forward_us: load(&stats.busy_ns) / 1000,
            forwards_inline: load(&stats.inlined),
            queued: stats.queued.load(Ordering::Relaxed) as u64,
            plugin_instances: self.plugin.idle_instances() as u64,
            ..ModelStatus::default()
        }
    }

    /// `name` of the application.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Version of the application.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// Device name of the model (`cpu`, `cuda:N`).
    pub fn device(&self) -> String {
        self.model.device().to_string()
    }
}

/// What a bundle's files look like now: relative path, size and mtime of
/// each. Two equal stamps mean nothing changed on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, u64, u128)>);

impl Stamp {
    /// Stamp of the bundle in `dir` (every regular file below it).
    pub fn of(dir: &Path) -> Stamp {
        let mut files: Vec<(PathBuf, u64, u128)> = walkdir::WalkDir::new(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos());
                let rel = e.path().strip_prefix(dir).map(Path::to_path_buf).unwrap_or_default();
                Some((rel, meta.len(), mtime.unwrap_or(0)))
            })
            .collect();
        files.sort();
        Stamp(files)
    }

    /// Total bytes of the bundle's files.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(_, len, _)| len).sum()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_sees_every_file_and_every_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("samples/deep")).unwrap();
        std::fs::write(dir.path().join("manifest.toml"), "a").unwrap();
        std::fs::write(dir.path().join("samples/deep/x.json"), "12345").unwrap();
        let a = Stamp::of(dir.path());
        assert_eq!(a.bytes(), 6);
        assert_eq!(a, Stamp::of(dir.path()), "unchanged files, equal stamps");
        std::fs::write(dir.path().join("samples/deep/x.json"), "123456").unwrap();
        assert_ne!(a, Stamp::of(dir.path()), "a nested file changed");
        assert_eq!(ModelState::Failed.to_string(), "failed");
    }
}
