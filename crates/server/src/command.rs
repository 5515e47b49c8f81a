//! Flags shared by the commands that serve clients (`tensorgate-host
//! serve`, `tensorgate-host gateway`, `tensorgate-gateway`), each a clap
//! struct the commands flatten.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tensorgate_protocol::Limits;

use crate::auth::AccessPolicy;
use crate::config::FrontConfig;
use crate::rollout::Rollout;

/// Where clients connect, the limits they meet, TLS and access.
#[derive(clap::Args, Debug, Clone)]
pub struct FrontArgs {
    /// UDP address to listen on (port 0: any free port).
    #[arg(long, env = "TENSORGATE_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IPs for the self-signed certificate.
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Most items in one request.
    #[arg(long, default_value_t = Limits::default().max_items_per_request)]
    pub max_items_per_request: u32,
    /// Largest header/control frame body in bytes.
    #[arg(long, default_value_t = Limits::default().max_header_bytes)]
    pub max_header_bytes: u32,
    /// Largest item frame as sent (compressed) in bytes.
    #[arg(long, default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: u64,
    /// Largest item payload after decompression in bytes.
    #[arg(long, default_value_t = Limits::default().max_item_bytes)]
    pub max_item_bytes: u64,
    /// Most concurrent requests (streams) per connection.
    #[arg(long, default_value_t = 256)]
    pub max_streams_per_connection: u32,
    /// Most items of one request processed at once (reading pauses beyond it).
    #[arg(long, default_value_t = 1024)]
    pub max_items_in_flight: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "TENSORGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Close connections idle for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// Access file (TOML): hashed bearer tokens, client CA, admin certificates
    /// (see docs/management.md). Without one, predict is open and management
    /// is allowed from loopback only.
    #[arg(long, env = "TENSORGATE_ACCESS")]
    pub access: Option<PathBuf>,
    /// Largest bundle an upload may carry (and unpack to), in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Serve the Open Inference Protocol (KServe v2, Triton's clients) over
    /// HTTP/REST on this TCP address (off by default; docs/oip.md).
    #[arg(long, env = "TENSORGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Serve the Open Inference Protocol over gRPC on this TCP address (off by default).
    #[arg(long, env = "TENSORGATE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Serve HTTP and gRPC over TLS, with the certificate the QUIC front uses
    /// (written as STATE_DIR/tls/cert.pem for clients) and client
    /// certificates as the access file says.
    #[arg(long, env = "TENSORGATE_OIP_TLS")]
    pub oip_tls: bool,
}

impl FrontArgs {
    /// The front end's configuration, keeping state in `state_dir`.
    pub fn config(&self, state_dir: &Path) -> Result<FrontConfig, String> {
        let mut c = FrontConfig::new(state_dir);
        c.listen = self.listen;
        c.tls_names = self.tls_names.clone();
        c.limits = Limits {
            max_header_bytes: self.max_header_bytes,
            max_frame_bytes: self.max_frame_bytes,
            max_item_bytes: self.max_item_bytes,
            max_items_per_request: self.max_items_per_request,
        };
        c.max_streams_per_connection = self.max_streams_per_connection;
        c.idle_timeout = Duration::from_secs(self.idle_timeout_s);
        c.metrics_listen = self.metrics_listen;
        c.max_items_in_flight = self.max_items_in_flight.max(1);
        c.max_upload_bytes = self.max_upload_bytes;
        c.http_listen = self.http_listen;
        c.grpc_listen = self.grpc_listen;
        c.oip_tls = self.oip_tls;
        if let Some(path) = &self.access {
            c.access = AccessPolicy::load(path).map_err(|e| e.to_string())?;
        }
        Ok(c)
    }
}

/// How a new version is tried before it becomes the default.
#[derive(clap::Args, Debug, Clone)]
pub struct RolloutArgs {
    /// Share of the requests naming no version that a new version takes on
    /// trial before it becomes the default (0: none, the default at once);
    /// a manifest's `[rollout]` overrides it.
    #[arg(long, default_value_t = 0.0)]
    pub canary_share: f64,
    /// Items a new version on trial must answer before it is promoted.
    #[arg(long, default_value_t = 200)]
    pub canary_items: u64,
    /// How much a canary's item-failure rate may exceed the default's (0.02: two points).
    #[arg(long, default_value_t = 0.02)]
    pub canary_max_failure_increase: f64,
}

impl RolloutArgs {
    /// The trial terms, checked.
    pub fn rollout(&self) -> Result<Rollout, String> {
        if !(0.0..=1.0).contains(&self.canary_share) {
            return Err(format!("--canary-share {} is not in 0..=1", self.canary_share));
        }
        if self.canary_items < 1 {
            return Err("--canary-items must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.canary_max_failure_increase) {
            return Err(format!("--canary-max-failure-increase {} is not in 0..=1", self.canary_max_failure_increase));
        }
        Ok(Rollout {
            canary_share: self.canary_share,
            canary_items: self.canary_items,
            max_failure_increase: self.canary_max_failure_increase,
        })
    }
}

/// Why a command (`serve`, `worker`, `gateway`) stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag is unusable.
    #[error("{0}")]
    Flag(String),
    /// Reading or writing the state directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The role could not start or run (its own error).
    #[error(transparent)]
    Role(Box<dyn std::error::Error + Send + Sync>),
}

impl CommandError {
    /// A role's own error.
    pub fn role(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        CommandError::Role(Box::new(e))
    }

    /// An IO error about `path`, for `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CommandError + '_ {
        move |source| CommandError::Io { path: path.display().to_string(), source }
    }
}
