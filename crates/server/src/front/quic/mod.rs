//! The QUIC front end: accepts connections, runs one request per
//! bidirectional stream (`stream.rs`: the pump around the request machine;
//! `inflight.rs`: where a request's items run), streams each item's reply
//! as soon as it is done; `admin.rs` answers status and management.

pub mod admin;
mod inflight;
mod stream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::QuicServerConfig;
use tokio::task::JoinHandle;

use crate::auth::AccessPolicy;
use crate::config::FrontConfig;
use crate::manage::Management;
use crate::request::ItemRunner;
use crate::tls::Identity;
use crate::StartError;

/// State shared by every connection and stream.
pub(crate) struct Shared {
    pub(crate) config: FrontConfig,
    pub(crate) management: Arc<dyn Management>,
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

impl Shared {
    fn new(config: FrontConfig, management: Arc<dyn Management>) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            management,
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
    /// Serves the client protocol: items run by `runner`, `status` and
    /// management by `management`. Loads (or makes, on first start) the TLS
    /// identity in `STATE_DIR/tls`. Must run inside a tokio runtime.
    pub fn start<R: ItemRunner + 'static>(
        config: FrontConfig,
        runner: Arc<R>,
        management: Arc<dyn Management>,
    ) -> Result<Front, StartError> {
        let identity = Identity::load_or_create(&config.state_dir.join("tls"), &config.tls_names)?;
        Front::serve(Shared::new(config, management), &identity, runner)
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
pub(crate) fn client_verifier(access: &AccessPolicy) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, StartError> {
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
