//! The model repository: bundles on disk (`REPO/NAME/VERSION/`), loaded into
//! [`Application`]s and routed by name and version.

mod manifest;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use manifest::{DtypeName, Manifest, ManifestError, ModelSection, PluginSection, TensorDecl};

use crate::config::HostConfig;
use crate::executor::{device_name, DeviceSpec, ModelError, ModelExecutor};
use crate::plugin::{CallError, PluginEngine, PluginInfo, PluginLoadError, PluginPool};

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The bundle's location does not match its manifest.
    #[error("{dir}: {message}")]
    Layout {
        /// Bundle directory.
        dir: String,
        /// What does not match.
        message: String,
    },
    /// The plugin failed to compile or link.
    #[error(transparent)]
    Plugin(#[from] PluginLoadError),
    /// `describe()` failed.
    #[error("plugin describe() failed: {0}")]
    Describe(#[from] CallError),
    /// The model failed to load.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Per-application counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items answered with a result.
    pub items_ok: AtomicU64,
    /// Items answered with an error.
    pub items_failed: AtomicU64,
}

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
    /// Time to load plugin and model.
    pub load_time: Duration,
    /// Counters.
    pub counters: Counters,
}

impl Application {
    /// Loads the bundle in `dir`: manifest, plugin (compiled, instantiated,
    /// `describe()`d) and model. Nothing is visible to clients until this returns.
    pub fn load(dir: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Self, LoadError> {
        let start = Instant::now();
        let manifest = Manifest::load(dir)?;
        let layout = |message: String| LoadError::Layout { dir: dir.display().to_string(), message };
        let dir_version = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
        if dir_version != Some(manifest.version) {
            return Err(layout(format!("manifest version {} does not match the directory name", manifest.version)));
        }
        let dir_name = dir.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
        if dir_name != Some(manifest.name.as_str()) {
            return Err(layout(format!("manifest name `{}` does not match the directory name", manifest.name)));
        }
        let timeout = manifest.plugin.timeout_ms.map(Duration::from_millis).unwrap_or(config.plugin_call_timeout);
        let memory = manifest
            .plugin
            .memory_mb
            .map(|mb| (mb as usize).saturating_mul(1 << 20))
            .unwrap_or(config.plugin_memory_limit);
        let plugin = engine.load(&manifest.name, &dir.join(&manifest.plugin.file), manifest.for_plugin(), timeout, memory)?;
        let info = plugin.describe()?;
        let device = match &manifest.model.device {
            // Validated when the manifest was parsed.
            Some(d) => d.parse::<DeviceSpec>().unwrap_or(config.device),
            None => config.device,
        };
        let model = ModelExecutor::load(
            &manifest.name,
            &dir.join(&manifest.model.file),
            device.resolve()?,
            manifest.model.batch_policy(),
            manifest.model.instances,
        )?;
        Ok(Application { manifest, info, plugin, model, dir: dir.to_path_buf(), load_time: start.elapsed(), counters: Counters::default() })
    }

    /// `name` of the application.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Version of the application.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// Device name of the model.
    pub fn device(&self) -> String {
        device_name(self.model.device())
    }
}

/// Why a request could not be routed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// No application of that name.
    #[error("unknown model `{name}` (loaded: {loaded})")]
    UnknownModel {
        /// Requested name.
        name: String,
        /// Names loaded.
        loaded: String,
    },
    /// The application exists but not in that version.
    #[error("model `{name}` has no version {version} (loaded: {loaded})")]
    UnknownVersion {
        /// Requested name.
        name: String,
        /// Requested version.
        version: u64,
        /// Versions loaded.
        loaded: String,
    },
}

/// The loaded applications, by name then version.
#[derive(Default)]
pub struct Repository {
    apps: RwLock<HashMap<String, BTreeMap<u64, Arc<Application>>>>,
    failures: RwLock<Vec<String>>,
}

impl Repository {
    /// Loads every `NAME/VERSION` bundle under `root`. A bundle that fails
    /// to load is logged and recorded, and does not stop the others.
    pub fn load_dir(root: &Path, engine: &PluginEngine, config: &HostConfig) -> std::io::Result<Self> {
        let repo = Repository::default();
        for name_dir in sorted_dirs(root)? {
            for version_dir in sorted_dirs(&name_dir)? {
                match Application::load(&version_dir, engine, config) {
                    Ok(app) => {
                        tracing::info!(
                            app = app.name(), version = app.version(), device = %app.device(),
                            load_ms = app.load_time.as_secs_f64() * 1e3,
                            plugin_from_cache = app.plugin.from_cache(), "loaded"
                        );
                        repo.insert(Arc::new(app));
                    }
                    Err(e) => {
                        tracing::error!(dir = %version_dir.display(), "failed to load: {e}");
                        repo.failures.write().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
                    }
                }
            }
        }
        Ok(repo)
    }

    /// Makes `app` visible (replacing the same name and version).
    pub fn insert(&self, app: Arc<Application>) {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        apps.entry(app.name().to_string()).or_default().insert(app.version(), app);
    }

    /// The application serving `name` at `version` (newest when `None`).
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<Application>, RouteError> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        let Some(versions) = apps.get(name) else {
            let mut loaded: Vec<&str> = apps.keys().map(String::as_str).collect();
            loaded.sort_unstable();
            return Err(RouteError::UnknownModel { name: name.to_string(), loaded: loaded.join(", ") });
        };
        let found = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        };
        found.cloned().ok_or_else(|| RouteError::UnknownVersion {
            name: name.to_string(),
            version: version.unwrap_or(0),
            loaded: versions.keys().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Every loaded application version.
    pub fn all(&self) -> Vec<Arc<Application>> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = apps.values().flat_map(|v| v.values().cloned()).collect();
        all.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
        all
    }

    /// Load errors met so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}
