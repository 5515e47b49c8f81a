//! The model repository: bundles on disk (`REPO/NAME/VERSION/`), loaded into
//! [`Application`]s and routed by name and version.

mod manifest;
pub mod store;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tensorgate_protocol::{LoadFailure, ModelInfo};

pub use manifest::{DtypeName, Manifest, ManifestError, ModelSection, PluginSection, TensorDecl, Warmup};
pub use store::{Stamp, StoreError};

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
    /// The manifest's warm-up item did not go through.
    #[error("warm-up item {file}: {message}")]
    Warmup {
        /// The warm-up file named in the manifest.
        file: String,
        /// What failed.
        message: String,
    },
}

/// Per-application counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items answered with a result.
    pub items_ok: AtomicU64,
    /// Items answered with an error.
    pub items_failed: AtomicU64,
    /// Requests routed to this version.
    pub requests: AtomicU64,
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
    /// Time to load plugin and model and run the warm-up item.
    pub load_time: Duration,
    /// When it became ready.
    pub loaded_at: SystemTime,
    /// The bundle's files as they were loaded (reload skips unchanged bundles).
    pub stamp: Stamp,
    /// Largest result (payload plus metadata) the plugin may return: what a
    /// client can receive in one frame.
    pub max_output_bytes: u64,
    /// Counters.
    pub counters: Counters,
}

impl Application {
    /// Loads the bundle in `dir` (which must sit at `REPO/NAME/VERSION`):
    /// manifest, plugin (compiled, instantiated, `describe()`d), model, and
    /// the manifest's warm-up item run end to end. Nothing is visible to
    /// clients until this returns.
    pub fn load(dir: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Arc<Self>, LoadError> {
        Self::prepare(dir, dir, engine, config)
    }

    /// Like [`Application::load`], for a bundle read from `dir` that will live
    /// at `home` (`REPO/NAME/VERSION`): an upload is prepared in staging and
    /// renamed into place only once it is ready.
    pub fn prepare(dir: &Path, home: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Arc<Self>, LoadError> {
        let start = Instant::now();
        let stamp = Stamp::of(dir);
        let manifest = Manifest::load(dir)?;
        let layout = |message: String| LoadError::Layout { dir: home.display().to_string(), message };
        let dir_version = home.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
        if dir_version != Some(manifest.version) {
            return Err(layout(format!("manifest version {} does not match the directory name", manifest.version)));
        }
        let dir_name = home.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
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
        let warmup = manifest.warmup.clone();
        let mut app = Application {
            manifest,
            info,
            plugin,
            model,
            dir: home.to_path_buf(),
            load_time: Duration::ZERO,
            loaded_at: SystemTime::now(),
            stamp,
            // Room for the frame's own fields (head length, index, compression).
            max_output_bytes: config.limits.max_frame_bytes.saturating_sub(256),
            counters: Counters::default(),
        };
        if let Some(w) = warmup {
            let fail = |message: String| LoadError::Warmup { file: w.file.clone(), message };
            let data = std::fs::read(dir.join(&w.file)).map_err(|e| fail(e.to_string()))?;
            crate::pipeline::warm_up(&app, data, &w.content_type, &w.metadata).map_err(|f| fail(format!("[{}] {}", f.code, f.message)))?;
        }
        app.load_time = start.elapsed();
        app.loaded_at = SystemTime::now();
        Ok(Arc::new(app))
    }

    /// What `models` lists about this version.
    pub fn info(&self, default: bool) -> ModelInfo {
        let decl = |t: &TensorDecl| format!("{}: {:?}{:?}", t.name, t.dtype, t.shape);
        ModelInfo {
            name: self.name().to_string(),
            version: self.version(),
            state: "ready".into(),
            description: self.manifest.description.clone(),
            labels: self.manifest.labels.clone(),
            inputs: self.manifest.inputs.iter().map(decl).collect(),
            outputs: self.manifest.outputs.iter().map(decl).collect(),
            device: self.device(),
            default,
            load_us: self.load_time.as_micros() as u64,
            plugin_cached: self.plugin.from_cache(),
            loaded_at_unix_s: unix_s(self.loaded_at),
            requests: self.counters.requests.load(Ordering::Relaxed),
            items_ok: self.counters.items_ok.load(Ordering::Relaxed),
            items_failed: self.counters.items_failed.load(Ordering::Relaxed),
            bundle_bytes: self.stamp.bytes(),
            error: None,
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
}

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

type Routes = HashMap<String, BTreeMap<u64, Arc<Application>>>;

/// The model repository: the bundles under one directory and the table that
/// routes requests to their loaded versions.
///
/// Requests read the table without locking (`arc-swap`); every change builds
/// a new table and swaps it in atomically, after the new version is fully
/// prepared. A request keeps the `Arc<Application>` it was routed to, so it
/// finishes on that version; a replaced or deleted version is freed (model,
/// executor threads, plugin instances) when its last request ends.
pub struct Repository {
    root: PathBuf,
    engine: PluginEngine,
    config: HostConfig,
    routes: ArcSwap<Routes>,
    /// Bundles that failed to load, by `NAME/VERSION` directory, with the
    /// stamp of the files that failed (unchanged files are not retried).
    failures: Mutex<BTreeMap<PathBuf, (LoadFailure, Stamp)>>,
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
            routes: ArcSwap::from_pointee(Routes::new()),
            failures: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(()),
        };
        repo.reload(None);
        Ok(repo)
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

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
                    let current = self.routes.load().get(&name).and_then(|m| m.get(&v)).cloned();
                    if current.is_some_and(|a| a.stamp == stamp) {
                        report.unchanged += 1;
                        continue;
                    }
                }
                if self.failed_with(&version_dir, &stamp) {
                    report.unchanged += 1;
                    continue;
                }
                let loaded = match version {
                    None => Err(LoadError::Layout {
                        dir: version_dir.display().to_string(),
                        message: "version directories must be named by a whole number".into(),
                    }),
                    Some(_) => Application::load(&version_dir, &self.engine, &self.config),
                };
                match loaded {
                    Ok(app) => {
                        log_loaded(&app);
                        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&version_dir);
                        self.swap(|routes| {
                            routes.entry(app.name().to_string()).or_default().insert(app.version(), app.clone());
                        });
                        report.loaded.push(app);
                    }
                    Err(e) => report.errors.push(self.record_failure(&version_dir, &name, version, &e, stamp)),
                }
            }
        }
        // Loaded versions whose directory is gone.
        let gone: Vec<Arc<Application>> = self
            .routes
            .load()
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .flat_map(|(_, versions)| versions.values())
            .filter(|a| !on_disk.iter().any(|(n, v)| n == a.name() && *v == a.version()))
            .cloned()
            .collect();
        for app in &gone {
            tracing::info!(app = app.name(), version = app.version(), "bundle gone from disk: no longer served");
            self.unroute(app.name(), app.version());
        }
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|dir, _| dir.exists());
        report.removed = gone;
        report
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
        let manifest = Manifest::load(staged).map_err(LoadError::from)?;
        let home = self.root.join(&manifest.name).join(manifest.version.to_string());
        if home.exists() && !replace {
            return Err(StoreError::Exists { name: manifest.name, version: manifest.version }.into());
        }
        let app = Application::prepare(staged, &home, &self.engine, &self.config)?;
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        store::commit(&self.root, staged, app.name(), app.version(), replace)?;
        log_loaded(&app);
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&home);
        self.swap(|routes| {
            routes.entry(app.name().to_string()).or_default().insert(app.version(), app.clone());
        });
        Ok(app)
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
        let routed = self.routes.load().get(name).cloned().unwrap_or_default();
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
                _ => RouteError::UnknownModel { name: name.into(), loaded: self.names().join(", ") },
            }
            .into());
        }
        let mut removed = Vec::new();
        for v in versions {
            let mut info = match routed.get(&v) {
                Some(app) => app.info(false),
                None => ModelInfo { name: name.into(), version: v, ..Default::default() },
            };
            self.unroute(name, v);
            store::remove(&self.root, name, v)?;
            self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.root.join(name).join(v.to_string()));
            tracing::info!(app = name, version = v, "deleted");
            info.state = "deleted".into();
            removed.push(info);
        }
        Ok(removed)
    }

    /// The application serving `name` at `version` (newest when `None`).
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<Application>, RouteError> {
        let routes = self.routes.load();
        let Some(versions) = routes.get(name) else {
            return Err(RouteError::UnknownModel { name: name.to_string(), loaded: self.names().join(", ") });
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

    /// Every loaded application version, by name then version.
    pub fn all(&self) -> Vec<Arc<Application>> {
        let routes = self.routes.load();
        let mut all: Vec<_> = routes.values().flat_map(|v| v.values().cloned()).collect();
        all.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
        all
    }

    /// Every version: loaded ones (`ready`) and bundles that failed (`failed`).
    pub fn models(&self) -> Vec<ModelInfo> {
        let routes = self.routes.load();
        let mut out: Vec<ModelInfo> = Vec::new();
        for versions in routes.values() {
            let newest = versions.keys().next_back().copied();
            out.extend(versions.values().map(|a| a.info(Some(a.version()) == newest)));
        }
        for (f, _) in self.failures.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let Some(v) = f.version else { continue };
            if !out.iter().any(|m| m.name == f.model && m.version == v) {
                out.push(ModelInfo {
                    name: f.model.clone(),
                    version: v,
                    state: "failed".into(),
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
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(f, _)| f.clone()).collect()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.load().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    fn failed_with(&self, dir: &Path, stamp: &Stamp) -> bool {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).get(dir).is_some_and(|(_, s)| s == stamp)
    }

    fn record_failure(&self, dir: &Path, name: &str, version: Option<u64>, e: &LoadError, stamp: Stamp) -> LoadFailure {
        tracing::error!(dir = %dir.display(), "failed to load: {e}");
        let failure = LoadFailure {
            model: name.to_string(),
            version,
            error: e.to_string(),
            at_unix_s: unix_s(SystemTime::now()),
        };
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), (failure.clone(), stamp));
        failure
    }

    fn unroute(&self, name: &str, version: u64) {
        self.swap(|routes| {
            if let Some(versions) = routes.get_mut(name) {
                versions.remove(&version);
                if versions.is_empty() {
                    routes.remove(name);
                }
            }
        });
    }

    /// Builds the next routing table from the current one and swaps it in.
    /// Callers hold `changes`, so no update is lost.
    fn swap(&self, edit: impl FnOnce(&mut Routes)) {
        let mut next = Routes::clone(&self.routes.load());
        edit(&mut next);
        self.routes.store(Arc::new(next));
    }
}

fn log_loaded(app: &Application) {
    tracing::info!(
        app = app.name(), version = app.version(), device = %app.device(),
        load_ms = app.load_time.as_secs_f64() * 1e3,
        plugin_from_cache = app.plugin.from_cache(), "loaded"
    );
}

/// Seconds since the Unix epoch.
pub fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Subdirectories of `dir`, sorted, skipping hidden ones (`.staging`, `.trash`).
fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
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
