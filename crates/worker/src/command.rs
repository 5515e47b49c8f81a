//! `tensorgate-host worker`: run models for a cluster, pulling work from
//! its engine (no listening port).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tensorgate_cluster::command::EngineArgs;
use tensorgate_cluster::core::intake::DropReason;
use tensorgate_runtime::command::RuntimeArgs;
use tensorgate_runtime::host::Host;
use tensorgate_server::command::CommandError;

use crate::{RunningWorker, WorkerOptions};

/// Run models for a cluster: pull work from its engine, listen on no port.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerCommand {
    /// The repository and how models run.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// The engine.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Directory for the worker's id, compiled plugins and runtime files.
    #[arg(long, env = "TENSORGATE_STATE_DIR", default_value = "tensorgate-state")]
    pub state_dir: PathBuf,
    /// Items pulled at once per application version (default: 2 × max_batch × instances).
    #[arg(long)]
    pub capacity: Option<usize>,
    /// On SIGTERM, wait at most this long (s) for the items it holds.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_s: u64,
    /// Largest bundle a fleet upload may unpack to on this worker, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Largest item payload after decompression in bytes.
    #[arg(long, default_value_t = tensorgate_protocol::Limits::default().max_item_bytes)]
    pub max_item_bytes: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default): the
    /// models' items, stage times, batch sizes and queue depth, and redeliveries.
    #[arg(long, env = "TENSORGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The worker's id from `STATE_DIR/worker-id`, made and kept there the
/// first time: a worker restarted with the same state directory keeps it.
pub fn worker_id(state_dir: &Path) -> Result<String, CommandError> {
    let file = state_dir.join("worker-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("w-{}", tensorgate_cluster::short_id());
            tensorgate_server::write_whole(&file, &id).map_err(CommandError::io(&file))?;
            Ok(id)
        }
    }
}

impl WorkerCommand {
    /// Loads the repository, joins the cluster and pulls work until SIGINT
    /// or SIGTERM, then drains. Blocking: builds its own runtime.
    pub fn run(self) -> Result<(), CommandError> {
        let mut cluster = self.engine.config().map_err(CommandError::role)?;
        let mut config = self.runtime.config(&self.state_dir).map_err(CommandError::Flag)?;
        config.front.max_upload_bytes = self.max_upload_bytes;
        config.front.limits.max_item_bytes = self.max_item_bytes;
        cluster.rollout = config.rollout;
        std::fs::create_dir_all(&self.state_dir).map_err(CommandError::io(&self.state_dir))?;
        let id = worker_id(&self.state_dir)?;
        let host = Host::load(config).map_err(CommandError::role)?;
        let options =
            WorkerOptions { capacity: self.capacity, drain_timeout: Duration::from_secs(self.drain_timeout_s), id: Some(id) };
        let rt = tokio::runtime::Runtime::new().map_err(CommandError::io(&self.state_dir))?;
        rt.block_on(async move {
            if let Some(addr) = self.metrics_listen {
                tensorgate_server::metrics::install(addr).map_err(CommandError::role)?;
                tracing::info!(%addr, "metrics at http://{addr}/metrics");
                for reason in [DropReason::GatewayGone, DropReason::Expired] {
                    metrics::counter!(tensorgate_server::metrics::names::CLUSTER_DROPPED, "reason" => reason.as_str()).increment(0);
                }
            }
            let running = RunningWorker::start(host, cluster, options).await.map_err(CommandError::role)?;
            println!("tensorgate worker {} pulling work from {}", running.id(), self.engine.nats);
            let file = self.state_dir.join("worker");
            tensorgate_server::write_whole(&file, running.id()).map_err(CommandError::io(&file))?;
            tensorgate_server::shutdown_signal().await;
            tracing::info!("worker draining");
            running.drain().await;
            let _ = std::fs::remove_file(&file);
            Ok(())
        })
    }
}
