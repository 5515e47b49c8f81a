//! The QUIC front end: accepts connections, runs one request per
//! bidirectional stream, streams each item's reply as soon as it is done.

pub mod admin;
mod inflight;
mod local;
mod stream;

pub use local::LocalRunner;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::QuicServerConfig;
use bytes::Bytes;
use tensorgate_protocol::{AdminReply, LoadFailure, ModelInfo, ModelStatus, RequestHeader, WorkerStatus};
use tokio::task::JoinHandle;

use crate::config::HostConfig;
use crate::auth::AccessPolicy;
use crate::plugin::PluginEngine;
use crate::repository::Repository;
use crate::request::ItemRunner;
use crate::tls::{Identity, TlsError};

/// Errors starting the host.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS identity problems.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// TLS configuration rejected.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The repository could not be opened.
    #[error("repository: {0}")]
    Repository(#[from] crate::repository::StoreError),
    /// The repository watcher could not start.
    #[error("watching the repository: {0}")]
    Watch(String),
    /// The client CA file could not be used.
    #[error("client CA {path}: {reason}")]
    ClientCa {
        /// File.
        path: String,
        /// Cause.
        reason: String,
    },
    /// The wasmtime engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The metrics exporter could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Binding the UDP socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where a front end's `status` and management answers come from.
pub(crate) enum Backend {
    /// This host's repository.
    Local(Arc<Repository>),
    /// A cluster's fleet (the front end is a gateway).
    Fleet(Arc<dyn Fleet>),
}

/// A gateway's fleet as `status` shows it.
#[derive(Debug, Clone, Default)]
pub struct FleetStatus {
    /// Every version the fleet serves, with counters summed over its workers.
    pub models: Vec<ModelStatus>,
    /// The live workers.
    pub workers: Vec<WorkerStatus>,
    /// Load errors of every worker.
    pub load_errors: Vec<LoadFailure>,
}

/// `status` and `models` of a front end whose items run elsewhere (a
/// cluster gateway); `server` knows nothing more of clusters.
pub trait Fleet: Send + Sync {
    /// The fleet now.
    fn status(&self) -> Pin<Box<dyn Future<Output = FleetStatus> + Send + '_>>;
    /// `models` entries and load errors.
    fn models(&self) -> (Vec<ModelInfo>, Vec<LoadFailure>);
    /// `upload`, `fetch`, `delete` or `reload` for the whole fleet: the
    /// reply, and for `fetch` the archive; `upload` holds an upload's chunks.
    fn manage(&self, header: RequestHeader, upload: Vec<Bytes>) -> Pin<Box<dyn Future<Output = Result<(Option<Bytes>, AdminReply), admin::Failure>> + Send + '_>>;
    /// The role `status` reports.
    fn role(&self) -> &'static str;
}

/// State shared by every connection and stream.
pub(crate) struct Shared {
    pub(crate) config: HostConfig,
    pub(crate) backend: Backend,
    pub(crate) started: Instant,
    /// Items cancelled because their client went away or their request failed.
    pub(crate) items_cancelled: AtomicU64,
    /// Streams refused by the per-connection limit.
    pub(crate) streams_refused: AtomicU64,
    /// Requests with items running (how `inflight.rs` decides where items run).
    pub(crate) busy_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Request streams being served now (from their first byte to their end).
    pub(crate) open_streams: std::sync::atomic::AtomicUsize,
}

/// QUIC lets a client open this many streams beyond the limit, so that the
/// extra ones get an explicit `limit_exceeded` reply instead of silently
/// waiting for stream credit; past that, QUIC flow control holds them back.
const STREAM_HEADROOM: u32 = 16;

/// A host with its repository loaded, not yet serving.
pub struct Host {
    shared: Arc<Shared>,
    repo: Arc<Repository>,
    identity: Identity,
    _watcher: Option<crate::repository::watch::RepositoryWatcher>,
}

impl Host {
    /// Loads the TLS identity and every bundle in the repository. Blocking:
    /// call it before entering the async runtime or from `spawn_blocking`.
    pub fn load(config: HostConfig) -> Result<Self, StartError> {
        // libtorch's own default, read before any executor thread sets its count.
        let _ = crate::executor::torch::default_threads();
        if config.intra_op_threads > 0 {
            tch::set_num_threads(config.intra_op_threads as i32);
        }
        let d = crate::executor::torch::devices();
        tracing::info!(
            cuda_feature = d.cuda_feature,
            libtorch_cuda = d.libtorch_cuda_loaded,
            cuda_devices = d.cuda_devices,
            auto = %d.auto,
            "libtorch sees {} CUDA device(s); models set to `auto` run on {}",
            d.cuda_devices,
            d.auto
        );
        let identity = Identity::load_or_create(&config.state_dir.join("tls"), &config.tls_names)?;
        let engine = PluginEngine::new(Some(config.compile_cache_dir()))
            .map_err(|e| StartError::Engine(e.to_string()))?;
        let repo = Arc::new(Repository::open(&config.repository, engine, config.clone())?);
        repo.judge_trials_every(std::time::Duration::from_millis(20));
        let watcher = match config.watch {
            true => Some(
                crate::repository::watch::watch(&repo, config.watch_debounce)
                    .map_err(|e| StartError::Watch(e.to_string()))?,
            ),
            false => None,
        };
        let shared = Shared::new(config, Backend::Local(repo.clone()));
        Ok(Host { shared, repo, identity, _watcher: watcher })
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// SHA-256 fingerprint of the host certificate (hex).
    pub fn fingerprint(&self) -> String {
        self.identity.fingerprint()
    }

    /// Binds the QUIC endpoint and starts serving. Must run inside a tokio runtime.
    pub fn serve(self) -> Result<RunningHost, StartError> {
        let runner = Arc::new(LocalRunner { repo: self.repo.clone(), max_item_bytes: self.shared.config.limits.max_item_bytes });
        let front = Front::serve(self.shared.clone(), &self.identity, runner)?;
        Ok(RunningHost { front, host: self })
    }
}

impl Shared {
    fn new(config: HostConfig, backend: Backend) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            backend,
            started: Instant::now(),
            items_cancelled: AtomicU64::new(0),
            streams_refused: AtomicU64::new(0),
            busy_streams: Arc::default(),
            open_streams: Default::default(),
        })
    }
}

/// The QUIC front end of a host or a gateway, serving.
pub struct Front {
    addr: SocketAddr,
    fingerprint: String,
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
}

impl Front {
    /// Serves the client protocol for a gateway: items run by `runner`,
    /// `status` and `models` from `fleet`. Must run inside a tokio runtime.
    pub fn gateway<R, F>(config: HostConfig, runner: Arc<R>, fleet: Arc<F>) -> Result<Front, StartError>
    where
        R: ItemRunner + 'static,
        F: Fleet + 'static,
    {
        let identity = Identity::load_or_create(&config.state_dir.join("tls"), &config.tls_names)?;
        Front::serve(Shared::new(config, Backend::Fleet(fleet)), &identity, runner)
    }

    fn serve<R: ItemRunner + 'static>(shared: Arc<Shared>, identity: &Identity, runner: Arc<R>) -> Result<Front, StartError> {
        let config = &shared.config;
        if let Some(addr) = config.metrics_listen {
            crate::metrics::install(addr)?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| StartError::TlsConfig(e.to_string()))?
            .with_client_cert_verifier(client_verifier(&config.access)?)
            .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .map_err(|e| StartError::TlsConfig(e.to_string()))?;
        tls.alpn_protocols = vec![tensorgate_protocol::ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| StartError::TlsConfig(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = tensorgate_client::transport_config();
        transport.max_concurrent_bidi_streams(config.max_streams_per_connection.saturating_add(STREAM_HEADROOM).into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, config.listen)
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = endpoint.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let fingerprint = identity.fingerprint();
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let (shared, runner) = (shared.clone(), runner.clone());
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(shared, runner, conn).await,
                        Err(e) => tracing::debug!("handshake failed: {e}"),
                    }
                });
            }
        });
        tracing::info!(%addr, %fingerprint, "serving");
        Ok(Front { addr, fingerprint, endpoint, task })
    }

    /// The bound UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 fingerprint of the certificate (hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Stops accepting, closes connections and waits for the endpoint to go idle.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"host shutting down");
        self.task.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Client certificates: verified against the access policy's CA when there
/// is one (required or optional as it says), otherwise not asked for.
fn client_verifier(access: &AccessPolicy) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, StartError> {
    let Some(ca) = &access.client_ca else {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    };
    let err = |reason: String| StartError::ClientCa { path: ca.display().to_string(), reason };
    let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificates in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if access.client_cert_required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| err(e.to_string()))
}

async fn serve_connection<R: ItemRunner + 'static>(shared: Arc<Shared>, runner: Arc<R>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection open");
    // The end-entity certificate, already verified against the client CA by rustls.
    let cert = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|c| c.to_vec()));
    let peer = shared.config.access.connection(remote, cert.as_deref());
    let active = Arc::new(AtomicU32::new(0));
    let limit = shared.config.max_streams_per_connection;
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                if active.fetch_add(1, Ordering::AcqRel) >= limit {
                    active.fetch_sub(1, Ordering::AcqRel);
                    shared.streams_refused.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(stream::refuse_stream(send, recv, limit));
                    continue;
                }
                let guard = StreamSlot(active.clone());
                let (shared, runner) = (shared.clone(), runner.clone());
                tokio::spawn(async move {
                    stream::serve_stream(shared, &*runner, peer, send, recv).await;
                    drop(guard);
                });
            }
            Err(e) => {
                tracing::debug!(%remote, "connection closed: {e}");
                return;
            }
        }
    }
}

/// Frees a connection's stream slot when its request ends.
struct StreamSlot(Arc<AtomicU32>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A host that is serving.
pub struct RunningHost {
    front: Front,
    host: Host,
}

impl RunningHost {
    /// The bound UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// SHA-256 fingerprint of the host certificate (hex).
    pub fn fingerprint(&self) -> &str {
        self.front.fingerprint()
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        self.host.repository()
    }

    /// Stops accepting, closes connections and waits for the endpoint to go idle.
    pub async fn shutdown(self) {
        self.front.shutdown().await;
    }
}
