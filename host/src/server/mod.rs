//! The QUIC front end: accepts connections, runs one request per
//! bidirectional stream, streams each item's reply as soon as it is done.

mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::QuicServerConfig;
use tokio::task::JoinHandle;

use crate::config::HostConfig;
use crate::plugin::PluginEngine;
use crate::repository::Repository;
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
    /// The repository could not be read.
    #[error("repository {path}: {source}")]
    Repository {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The wasmtime engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// Binding the UDP socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// State shared by every connection and stream.
pub(crate) struct Shared {
    pub(crate) config: HostConfig,
    pub(crate) repo: Arc<Repository>,
    pub(crate) started: Instant,
}

/// A host with its repository loaded, not yet serving.
pub struct Host {
    shared: Arc<Shared>,
    identity: Identity,
    _engine: PluginEngine,
}

impl Host {
    /// Loads the TLS identity and every bundle in the repository. Blocking:
    /// call it before entering the async runtime or from `spawn_blocking`.
    pub fn load(config: HostConfig) -> Result<Self, StartError> {
        if config.intra_op_threads > 0 {
            tch::set_num_threads(config.intra_op_threads as i32);
        }
        let identity = Identity::load_or_create(&config.state_dir.join("tls"), &config.tls_names)?;
        let engine = PluginEngine::new().map_err(|e| StartError::Engine(e.to_string()))?;
        let repo = Repository::load_dir(&config.repository, &engine, &config).map_err(|source| {
            StartError::Repository { path: config.repository.display().to_string(), source }
        })?;
        let shared = Arc::new(Shared { config, repo: Arc::new(repo), started: Instant::now() });
        Ok(Host { shared, identity, _engine: engine })
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        &self.shared.repo
    }

    /// SHA-256 fingerprint of the host certificate (hex).
    pub fn fingerprint(&self) -> String {
        self.identity.fingerprint()
    }

    /// Binds the QUIC endpoint and starts serving. Must run inside a tokio runtime.
    pub fn serve(self) -> Result<RunningHost, StartError> {
        let config = &self.shared.config;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| StartError::TlsConfig(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.identity.cert.clone()], self.identity.key.clone_key())
            .map_err(|e| StartError::TlsConfig(e.to_string()))?;
        tls.alpn_protocols = vec![tensorgate_protocol::ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| StartError::TlsConfig(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(config.max_streams_per_connection.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, config.listen)
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = endpoint.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let fingerprint = self.identity.fingerprint();
        let shared = self.shared.clone();
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(shared, conn).await,
                        Err(e) => tracing::debug!("handshake failed: {e}"),
                    }
                });
            }
        });
        tracing::info!(%addr, %fingerprint, "serving");
        Ok(RunningHost { addr, fingerprint, endpoint, task, host: self })
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection open");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(stream::serve_stream(shared.clone(), send, recv));
            }
            Err(e) => {
                tracing::debug!(%remote, "connection closed: {e}");
                return;
            }
        }
    }
}

/// A host that is serving.
pub struct RunningHost {
    addr: SocketAddr,
    fingerprint: String,
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
    host: Host,
}

impl RunningHost {
    /// The bound UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 fingerprint of the host certificate (hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        self.host.repository()
    }

    /// Stops accepting, closes connections and waits for the endpoint to go idle.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"host shutting down");
        self.task.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
