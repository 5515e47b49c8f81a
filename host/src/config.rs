//! Host configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tensorgate_protocol::Limits;

use crate::device::DeviceSpec;

/// Everything the host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// UDP address to serve QUIC on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Model repository: `REPO/NAME/VERSION/{manifest.toml, model.pt, plugin.wasm}`.
    pub repository: PathBuf,
    /// Where the TLS certificate and key are kept (created on first start).
    pub state_dir: PathBuf,
    /// Where compiled plugins are cached, keyed by the component's hash and
    /// the engine (default: `STATE_DIR/compiled`); hosts may share one.
    pub compile_cache: Option<PathBuf>,
    /// Extra DNS names or IPs for the self-signed certificate.
    pub tls_names: Vec<String>,
    /// Default device for models whose manifest says `auto`.
    pub device: DeviceSpec,
    /// Wire protocol limits.
    pub limits: Limits,
    /// Libtorch intra-op threads (0: libtorch's default).
    pub intra_op_threads: usize,
    /// Wall-clock budget of one plugin call.
    pub plugin_call_timeout: Duration,
    /// Linear-memory cap of one plugin instance (bytes).
    pub plugin_memory_limit: usize,
    /// Most concurrent requests (streams) per connection.
    pub max_streams_per_connection: u32,
    /// Connection idle timeout.
    pub idle_timeout: Duration,
    /// Most items of one request being processed at once; the host reads no
    /// further items of that request until some finish.
    pub max_items_in_flight: usize,
    /// Serve Prometheus metrics over HTTP here (off when `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// Largest bundle an upload may unpack to (bytes); the archive itself is
    /// held in memory while it arrives, so it is bounded by this too.
    pub max_upload_bytes: u64,
    /// Watch the repository directory and reload what changes on disk.
    pub watch: bool,
    /// How long the repository must be quiet before a watched change is loaded.
    pub watch_debounce: Duration,
    /// Who may do what.
    pub access: crate::auth::AccessPolicy,
    /// How a new version is tried before it becomes the default, where its
    /// manifest's `[rollout]` does not say (default: no trial).
    pub rollout: crate::manifest::Rollout,
}

impl HostConfig {
    /// The compiled-plugin cache directory in effect.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.compile_cache.clone().unwrap_or_else(|| self.state_dir.join("compiled"))
    }

    /// The request machine's settings.
    pub fn request_machine(&self) -> crate::request::Config {
        crate::request::Config {
            limits: self.limits,
            max_items_in_flight: self.max_items_in_flight.max(1),
            max_upload_bytes: self.max_upload_bytes,
        }
    }

    /// Defaults for a host serving `repository`, keeping state in `state_dir`.
    pub fn new(repository: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            repository: repository.into(),
            state_dir: state_dir.into(),
            compile_cache: None,
            tls_names: Vec::new(),
            device: DeviceSpec::Auto,
            limits: Limits::default(),
            intra_op_threads: 0,
            plugin_call_timeout: Duration::from_secs(10),
            plugin_memory_limit: 1 << 30,
            max_streams_per_connection: 256,
            idle_timeout: Duration::from_secs(60),
            max_items_in_flight: 1024,
            metrics_listen: None,
            max_upload_bytes: 4 << 30,
            watch: false,
            watch_debounce: Duration::from_millis(500),
            access: crate::auth::AccessPolicy::default(),
            rollout: crate::manifest::Rollout::default(),
        }
    }
}
