//! A host's configuration: its front end's and its runtime's.

use std::path::PathBuf;
use std::time::Duration;

use tensorgate_backend::DeviceSpec;
use tensorgate_server::config::FrontConfig;

/// Everything a host (or a worker) needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The front end: listen address, limits, TLS, access, state directory.
    pub front: FrontConfig,
    /// Model repository: `REPO/NAME/VERSION/{manifest.toml, model.pt, plugin.wasm}`.
    pub repository: PathBuf,
    /// Where compiled plugins are cached, keyed by the component's hash and
    /// the engine (default: `STATE_DIR/compiled`); hosts may share one.
    pub compile_cache: Option<PathBuf>,
    /// Default device for models whose manifest says `auto`.
    pub device: DeviceSpec,
    /// Intra-op threads of the model runtime (0: its default).
    pub intra_op_threads: usize,
    /// Wall-clock budget of one plugin call.
    pub plugin_call_timeout: Duration,
    /// Linear-memory cap of one plugin instance (bytes).
    pub plugin_memory_limit: usize,
    /// Watch the repository directory and reload what changes on disk.
    pub watch: bool,
    /// How long the repository must be quiet before a watched change is loaded.
    pub watch_debounce: Duration,
    /// How a new version is tried before it becomes the default, where its
    /// manifest's `[rollout]` does not say (default: no trial).
    pub rollout: tensorgate_server::rollout::Rollout,
}

impl HostConfig {
    /// The compiled-plugin cache directory in effect.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.compile_cache.clone().unwrap_or_else(|| self.front.state_dir.join("compiled"))
    }

    /// Defaults for a host serving `repository`, keeping state in `state_dir`.
    pub fn new(repository: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            front: FrontConfig::new(state_dir),
            repository: repository.into(),
            compile_cache: None,
            device: DeviceSpec::Auto,
            intra_op_threads: 0,
            plugin_call_timeout: Duration::from_secs(10),
            plugin_memory_limit: 1 << 30,
            watch: false,
            watch_debounce: Duration::from_millis(500),
            rollout: Default::default(),
        }
    }
}
