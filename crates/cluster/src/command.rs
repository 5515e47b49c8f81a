//! The engine flags every cluster role takes (`tensorgate-host worker`,
//! `tensorgate-host gateway`, `tensorgate-gateway`).

use std::path::PathBuf;
use std::time::Duration;

use crate::{ClusterConfig, ClusterError, EngineAuth};

/// How to reach the cluster's engine.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// The NATS engine's URL(s), comma-separated.
    #[arg(long, env = "TENSORGATE_NATS")]
    pub nats: String,
    /// Engine user (with TENSORGATE_NATS_PASSWORD).
    #[arg(long, env = "TENSORGATE_NATS_USER")]
    pub nats_user: Option<String>,
    /// Engine password.
    #[arg(long, env = "TENSORGATE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// File holding the engine nkey seed (`SU…`).
    #[arg(long, env = "TENSORGATE_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// Engine credentials file (JWT and nkey seed).
    #[arg(long, env = "TENSORGATE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) of the engine's TLS; TLS to the engine is required when set.
    #[arg(long, env = "TENSORGATE_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Subject prefix: several clusters can share one engine.
    #[arg(long, env = "TENSORGATE_CLUSTER", default_value = "tg")]
    pub cluster: String,
    /// An item held by a worker that went silent is handed to another after this long (ms).
    #[arg(long, default_value_t = 3000)]
    pub redeliver_after_ms: u64,
    /// Advert period (ms) of workers and gateways; one silent for three is gone.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Most queued item bytes the engine holds for the cluster (MiB); past it
    /// new items fail `busy` (set by whichever role creates the work stream first).
    #[arg(long, default_value_t = 1024)]
    pub max_queued_mb: i64,
}

impl EngineArgs {
    /// The cluster settings these flags give.
    pub fn config(&self) -> Result<ClusterConfig, ClusterError> {
        let mut c = ClusterConfig::new(&self.nats);
        c.prefix = self.cluster.clone();
        c.redeliver_after = Duration::from_millis(self.redeliver_after_ms.max(100));
        c.heartbeat = Duration::from_millis(self.heartbeat_ms.max(50));
        c.tls_ca = self.nats_ca.clone();
        c.max_queued_bytes = self.max_queued_mb.max(1) << 20;
        c.auth = match (&self.nats_user, &self.nats_password, &self.nats_nkey, &self.nats_creds) {
            (Some(user), password, None, None) => {
                EngineAuth::User { user: user.clone(), password: password.clone().unwrap_or_default() }
            }
            (None, None, Some(seed), None) => EngineAuth::Nkey(
                std::fs::read_to_string(seed)
                    .map_err(|e| ClusterError::Config(format!("reading the nkey seed {}: {e}", seed.display())))?
                    .trim()
                    .to_string(),
            ),
            (None, None, None, Some(creds)) => EngineAuth::CredsFile(creds.clone()),
            (None, None, None, None) => EngineAuth::None,
            _ => {
                return Err(ClusterError::Config(
                    "give one kind of engine credentials: --nats-user/--nats-password, --nats-nkey or --nats-creds".into(),
                ))
            }
        };
        Ok(c)
    }
}
