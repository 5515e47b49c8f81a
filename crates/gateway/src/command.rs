//! `tensorgate-gateway` (and `tensorgate-host gateway`): serve the client
//! protocol and forward items to the cluster's workers.

use std::path::PathBuf;
use std::sync::Arc;

use tensorgate_cluster::command::EngineArgs;
use tensorgate_cluster::ClusterError;
use tensorgate_server::command::{FrontArgs, RolloutArgs};
use tensorgate_server::front::quic::Front;
use tensorgate_server::StartError;

use crate::Gateway;

/// Serve the client protocol and forward items to the cluster's workers.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayCommand {
    /// Where clients connect, limits, TLS, access.
    #[command(flatten)]
    pub front: FrontArgs,
    /// The engine.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Trial terms of releases uploaded through this gateway.
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Directory for the TLS identity and runtime files.
    #[arg(long, env = "TENSORGATE_STATE_DIR", default_value = "tensorgate-state")]
    pub state_dir: PathBuf,
}

/// Why a gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The engine could not be reached or the settings are unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The front end could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A flag is out of range.
    #[error("{0}")]
    Flag(String),
    /// Writing the state directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl GatewayCommand {
    /// Runs the gateway until SIGINT or SIGTERM. Must run inside a tokio runtime.
    pub async fn run(self) -> Result<(), GatewayError> {
        let mut cluster = self.engine.config()?;
        cluster.rollout = self.rollout.rollout().map_err(GatewayError::Flag)?;
        let front = self.front.config(&self.state_dir).map_err(GatewayError::Flag)?;
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|source| GatewayError::Io { path: self.state_dir.display().to_string(), source })?;
        let gateway = Gateway::connect(cluster).await?;
        let serving = Front::start(front, Arc::new(gateway.clone()), Arc::new(gateway.clone()))?;
        tensorgate_server::announce(&self.state_dir, serving.addr(), serving.fingerprint())
            .map_err(|source| GatewayError::Io { path: self.state_dir.display().to_string(), source })?;
        tensorgate_server::shutdown_signal().await;
        tracing::info!("gateway shutting down");
        let _ = std::fs::remove_file(self.state_dir.join("listening"));
        serving.shutdown().await;
        gateway.shutdown().await;
        Ok(())
    }
}
