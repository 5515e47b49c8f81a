//! Cluster mode on NATS: GPU **workers** that dial out to the engine and
//! pull work, **gateways** that speak the unchanged client protocol and
//! forward items. See `docs/cluster.md` for the picture.
//!
//! ```text
//! client ─QUIC─▶ gateway: request machine (as on a host) + RemoteRunner
//!   ─JetStream publish─▶ work stream, subject PREFIX.work.MODEL.VERSION
//!   ─pull (only with free capacity)─▶ worker: LocalRunner (plugin, batcher, model)
//!   ─request PREFIX.reply.GATEWAY─▶ gateway (answers the item once) ─QUIC─▶ client
//! ```
//!
//! The engine does the routing, discovery and buffering; this module
//! builds no broker. The pieces:
//! - [`wire`]: subjects, headers and the messages between roles;
//! - [`worker`]: pulls items for each application version it holds, runs
//!   them, replies, heartbeats, drains on SIGTERM;
//! - [`gateway`]: the item runner that forwards items and the fleet view
//!   (`status`, `models`, routing) built from the workers' adverts;
//! - [`fleet`]: fleet management: bundles in the engine's object store,
//!   the desired state in its KV bucket, workers converging on it.
//!
//! Delivery: an item is a JetStream message; a worker acknowledges it only
//! after its reply reached the gateway. A worker that dies stops sending
//! progress, so the engine hands its unacknowledged items to another worker
//! after [`ClusterConfig::redeliver_after`]. The gateway answers each item
//! at most once (the first reply wins; later ones are dropped), and the
//! request machine answers each item exactly once.

pub mod fleet;
pub mod gateway;
pub mod wire;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;

/// How to reach the engine and the cluster's shared settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Engine URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// Subject prefix and stream name stem: several clusters can share one engine.
    pub prefix: String,
    /// Credentials for the engine.
    pub auth: EngineAuth,
    /// CA certificate (PEM) to verify the engine's TLS certificate; TLS is
    /// required when set.
    pub tls_ca: Option<PathBuf>,
    /// How long an item held by a silent worker waits before it is handed
    /// to another (JetStream `ack_wait`); a live worker extends it while
    /// the item runs.
    pub redeliver_after: Duration,
    /// Most times one item is handed to a worker; past that it fails.
    pub max_deliveries: i64,
    /// Worker advert period; a worker silent for three periods is dropped
    /// from the fleet view.
    pub heartbeat: Duration,
    /// Largest amount of queued work the engine holds (bytes); past it new
    /// items fail `busy`.
    pub max_queued_bytes: i64,
    /// Trial terms of a new release uploaded through a gateway where its
    /// manifest's `[rollout]` says nothing (the `--canary-*` flags).
    pub rollout: crate::manifest::Rollout,
}

impl ClusterConfig {
    /// Defaults for an engine at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            prefix: "tg".into(),
            auth: EngineAuth::None,
            tls_ca: None,
            redeliver_after: Duration::from_secs(3),
            max_deliveries: 5,
            heartbeat: Duration::from_secs(1),
            max_queued_bytes: 1 << 30,
            rollout: crate::manifest::Rollout::default(),
        }
    }

    /// The JetStream stream that holds queued items.
    pub fn work_stream(&self) -> String {
        format!("{}_WORK", self.prefix.to_ascii_uppercase())
    }
}

/// Credentials for the engine.
#[derive(Debug, Clone, Default)]
pub enum EngineAuth {
    /// None (an engine on a private network or loopback).
    #[default]
    None,
    /// User and password.
    User {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// An nkey seed (`SU…`).
    Nkey(String),
    /// A credentials file (JWT + nkey seed).
    CredsFile(PathBuf),
}

/// Errors reaching or preparing the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The engine could not be reached or refused the credentials.
    #[error("engine {url}: {reason}")]
    Connect {
        /// Engine URL.
        url: String,
        /// Cause.
        reason: String,
    },
    /// A JetStream call failed.
    #[error("engine JetStream: {0}")]
    JetStream(String),
    /// The worker's repository or front end could not start.
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
}

/// Connects to the engine; reconnects by itself for the life of the process
/// (workers and gateways keep serving what they hold meanwhile).
pub async fn connect(config: &ClusterConfig, name: &str) -> Result<async_nats::Client, ClusterError> {
    let err = |reason: String| ClusterError::Connect { url: config.url.clone(), reason };
    let mut options = match &config.auth {
        EngineAuth::None => async_nats::ConnectOptions::new(),
        EngineAuth::User { user, password } => async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone()),
        EngineAuth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        EngineAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| err(format!("credentials file {}: {e}", path.display())))?,
    };
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let name = name.to_string();
    options = options
        .name(&name)
        .ping_interval(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(%name, "engine connected"),
                    async_nats::Event::Disconnected => tracing::warn!(%name, "engine disconnected; reconnecting"),
                    other => tracing::debug!(%name, "engine event: {other}"),
                }
            }
        });
    options.connect(config.url.as_str()).await.map_err(|e| err(e.to_string()))
}

/// Creates the work stream if it does not exist (every role calls this; the
/// first one's settings stand).
pub async fn ensure_work_stream(js: &jetstream::Context, config: &ClusterConfig) -> Result<(), ClusterError> {
    let stream = jetstream::stream::Config {
        name: config.work_stream(),
        subjects: vec![format!("{}.work.>", config.prefix)],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        discard: jetstream::stream::DiscardPolicy::New,
        max_bytes: config.max_queued_bytes,
        duplicate_window: Duration::from_secs(120),
        description: Some("tensorgate items waiting for a worker".into()),
        ..Default::default()
    };
    js.get_or_create_stream(stream).await.map(|_| ()).map_err(|e| ClusterError::JetStream(e.to_string()))
}
