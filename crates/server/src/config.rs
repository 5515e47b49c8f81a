//! A front end's configuration: where it listens, its limits, TLS and access.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tensorgate_protocol::Limits;

/// Everything a front end needs to start.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// UDP address to serve QUIC on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the TLS certificate and key are kept (`STATE_DIR/tls`, created on first start).
    pub state_dir: PathBuf,
    /// Extra DNS names or IPs for the self-signed certificate.
    pub tls_names: Vec<String>,
    /// Wire protocol limits.
    pub limits: Limits,
    /// Most concurrent requests (streams) per connection.
    pub max_streams_per_connection: u32,
    /// Connection idle timeout.
    pub idle_timeout: Duration,
    /// Most items of one request being processed at once; the front reads
    /// no further items of that request until some finish.
    pub max_items_in_flight: usize,
    /// Serve Prometheus metrics over HTTP here (off when `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// Largest bundle an upload may carry (bytes); the archive is held in
    /// memory while it arrives, so it is bounded by this too.
    pub max_upload_bytes: u64,
    /// Who may do what.
    pub access: crate::auth::AccessPolicy,
    /// Serve the Open Inference Protocol over HTTP here (off when `None`).
    pub http_listen: Option<SocketAddr>,
    /// Serve the Open Inference Protocol over gRPC here (off when `None`).
    pub grpc_listen: Option<SocketAddr>,
    /// Serve HTTP and gRPC over TLS with the host's certificate.
    pub oip_tls: bool,
}

impl FrontConfig {
    /// Defaults, keeping state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        FrontConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            state_dir: state_dir.into(),
            tls_names: Vec::new(),
            limits: Limits::default(),
            max_streams_per_connection: 256,
            idle_timeout: Duration::from_secs(60),
            max_items_in_flight: 1024,
            metrics_listen: None,
            max_upload_bytes: 4 << 30,
            access: crate::auth::AccessPolicy::default(),
            http_listen: None,
            grpc_listen: None,
            oip_tls: false,
        }
    }

    /// The request machine's settings.
    pub fn request_machine(&self) -> crate::request::Config {
        crate::request::Config {
            limits: self.limits,
            max_items_in_flight: self.max_items_in_flight.max(1),
            max_upload_bytes: self.max_upload_bytes,
        }
    }
}
