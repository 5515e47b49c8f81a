//! `tensorgate-gateway` (and `tensorgate-host gateway`): serve the client
//! protocol and forward items to the cluster's workers.

use std::path::PathBuf;
use std::sync::Arc;

use tensorgate_cluster::command::EngineArgs;
use tensorgate_server::command::{CommandError, FrontArgs, RolloutArgs};
use tensorgate_server::front::Fronts;

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

impl GatewayCommand {
    /// Runs the gateway until SIGINT or SIGTERM. Must run inside a tokio runtime.
    pub async fn run(self) -> Result<(), CommandError> {
        let mut cluster = self.engine.config().map_err(CommandError::role)?;
        cluster.rollout = self.rollout.rollout().map_err(CommandError::Flag)?;
        let front = self.front.config(&self.state_dir).map_err(CommandError::Flag)?;
        std::fs::create_dir_all(&self.state_dir).map_err(CommandError::io(&self.state_dir))?;
        if let Some(addr) = front.metrics_listen {
            // Before joining: the workers already there are counted as joined.
            tensorgate_server::metrics::install(addr).map_err(CommandError::role)?;
            crate::adverts::zero_counters();
        }
        let gateway = Gateway::connect(cluster).await.map_err(CommandError::role)?;
        let serving = Fronts::start(front, Arc::new(gateway.clone()), Arc::new(gateway.clone())).map_err(CommandError::role)?;
        tensorgate_server::announce(&self.state_dir, &serving).map_err(CommandError::io(&self.state_dir))?;
        tensorgate_server::shutdown_signal().await;
        tracing::info!("gateway shutting down");
        let _ = std::fs::remove_file(self.state_dir.join("listening"));
        serving.shutdown().await;
        gateway.shutdown().await;
        Ok(())
    }
}
