//! Cluster mode on NATS, what gateways and workers share: the wire
//! ([`wire`]: every subject, key, object name and message), the decisions
//! ([`core`]: plain state, no IO) and the engine connection ([`engine`]).
//! The gateway (`tensorgate-gateway`) and the worker (`tensorgate-worker`)
//! are thin pumps over these. See `docs/cluster.md` for the picture.
//!
//! ```text
//! client ─QUIC─▶ gateway: request machine (as on a host) + its item runner
//!   ─JetStream publish─▶ work stream, subject PREFIX.work.MODEL.VERSION
//!   ─pull (only with free capacity)─▶ worker: local runner (plugin, batcher, model)
//!   ─request PREFIX.reply.GATEWAY─▶ gateway (answers the item once) ─QUIC─▶ client
//! ```
//!
//! Delivery: an item is (a member of) a JetStream message; a worker
//! acknowledges it only after its reply reached the gateway. A worker that
//! dies stops sending progress, so the engine hands its unacknowledged
//! items to another worker after [`ClusterConfig::redeliver_after`]. A
//! gateway that dies stops advertising: workers drop its items unrun and
//! stop retrying its replies ([`core::gateways`]). The gateway answers
//! each item at most once (the first reply wins), and the request machine
//! answers each item exactly once.

pub mod command;
pub mod core;
pub mod engine;
pub mod wire;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Advert period of workers and gateways; one silent for three periods
    /// is gone.
    pub heartbeat: Duration,
    /// Largest amount of queued work the engine holds (bytes); past it new
    /// items fail `busy`.
    pub max_queued_bytes: i64,
    /// Trial terms of a new release uploaded through a gateway where its
    /// manifest's `[rollout]` says nothing (the `--canary-*` flags).
    pub rollout: tensorgate_server::rollout::Rollout,
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
            rollout: Default::default(),
        }
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
    /// The cluster settings are unusable.
    #[error("{0}")]
    Config(String),
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random id, unique across the fleet.
pub fn short_id() -> String {
    nuid::next().to_string()[..12].to_string()
}
