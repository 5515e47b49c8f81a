//! The runtime's commands and flags: `tensorgate-host serve` (a host on
//! its own) and `tensorgate-host check` (a bundle checked as a host
//! would), and the runtime flags a worker takes too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tensorgate_backend::DeviceSpec;
use tensorgate_server::command::{CommandError, FrontArgs, RolloutArgs};
use tensorgate_server::config::FrontConfig;

use crate::config::HostConfig;
use crate::host::Host;

/// The repository and how its models run.
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Model repository: REPO/NAME/VERSION/{manifest.toml, model.pt, plugin.wasm}.
    #[arg(long, env = "TENSORGATE_REPO")]
    pub repository: PathBuf,
    /// Cache of compiled plugins, shareable between hosts (default: STATE_DIR/compiled).
    #[arg(long, env = "TENSORGATE_COMPILE_CACHE")]
    pub compile_cache: Option<PathBuf>,
    /// Default device for models: auto, cpu or cuda:N.
    #[arg(long, env = "TENSORGATE_DEVICE", default_value = "auto")]
    pub device: DeviceSpec,
    /// Intra-op threads of the model runtime (0: its default).
    #[arg(long, env = "TENSORGATE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Plugin call budget in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub plugin_timeout_ms: u64,
    /// Watch the repository and reload bundles that change on disk.
    #[arg(long, env = "TENSORGATE_WATCH")]
    pub watch: bool,
    /// Quiet time (ms) the repository needs before a watched change is loaded.
    #[arg(long, default_value_t = 500)]
    pub watch_debounce_ms: u64,
    /// Trial terms of new versions.
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

impl RuntimeArgs {
    /// The host's configuration: these flags, `front` for its front end.
    pub fn host_config(&self, front: FrontConfig) -> Result<HostConfig, String> {
        let mut c = HostConfig::new(&self.repository, &front.state_dir);
        c.front = front;
        c.compile_cache = self.compile_cache.clone();
        c.device = self.device;
        c.intra_op_threads = self.threads;
        c.plugin_call_timeout = Duration::from_millis(self.plugin_timeout_ms);
        c.watch = self.watch;
        c.watch_debounce = Duration::from_millis(self.watch_debounce_ms);
        c.rollout = self.rollout.rollout()?;
        Ok(c)
    }

    /// The configuration of a host that serves no clients (a worker),
    /// keeping state in `state_dir`.
    pub fn config(&self, state_dir: &Path) -> Result<HostConfig, String> {
        self.host_config(FrontConfig::new(state_dir))
    }
}

/// Serve a model repository to clients over QUIC.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeCommand {
    /// Where clients connect, limits, TLS, access.
    #[command(flatten)]
    pub front: FrontArgs,
    /// The repository and how its models run.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Directory for the TLS identity and runtime files.
    #[arg(long, env = "TENSORGATE_STATE_DIR", default_value = "tensorgate-state")]
    pub state_dir: PathBuf,
}

impl ServeCommand {
    /// Loads the repository and serves until SIGINT or SIGTERM. Blocking:
    /// builds its own async runtime.
    pub fn run(self) -> Result<(), CommandError> {
        let front = self.front.config(&self.state_dir).map_err(CommandError::Flag)?;
        let config = self.runtime.host_config(front).map_err(CommandError::Flag)?;
        let host = Host::load(config).map_err(CommandError::role)?;
        let rt = tokio::runtime::Runtime::new().map_err(CommandError::io(&self.state_dir))?;
        rt.block_on(async move {
            let running = host.serve().map_err(CommandError::role)?;
            tensorgate_server::announce(&self.state_dir, running.fronts())
                .map_err(CommandError::io(&self.state_dir))?;
            tensorgate_server::shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = std::fs::remove_file(self.state_dir.join("listening"));
            running.shutdown().await;
            Ok(())
        })
    }
}

/// Check a bundle as a host would before serving it, run each of its
/// samples and print one JSON line per sample; exit 1 if anything failed.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckCommand {
    /// The bundle directory (manifest.toml, model, plugin, samples/).
    pub bundle: PathBuf,
    /// Cache of compiled plugins (none by default).
    #[arg(long, env = "TENSORGATE_COMPILE_CACHE")]
    pub compile_cache: Option<PathBuf>,
    /// Write the plugin compiled for this host's engine into the bundle
    /// (`plugin.cwasm` beside `plugin.wasm`; a valid one is kept), so that
    /// hosts of the same tensorgate build on the same CPU load it without
    /// compiling.
    #[arg(long)]
    pub precompile: bool,
}

impl CheckCommand {
    /// Runs the check; whether everything passed. Each outcome is printed
    /// as a JSON line on stdout, a summary on stderr.
    pub fn run(self) -> bool {
        let dir = &self.bundle;
        let mut config = HostConfig::new(dir, std::env::temp_dir());
        config.compile_cache = self.compile_cache.clone();
        let checked = match crate::repository::dry_run::bundle(dir, &config, self.precompile) {
            Ok(c) => c,
            Err(e) => {
                println!("{}", serde_json::json!({ "bundle": dir.display().to_string(), "ok": false, "error": e.to_string() }));
                return false;
            }
        };
        let mut failed = false;
        for (file, outcome) in &checked {
            let line = match outcome {
                Ok(out) => match serde_json::from_slice::<serde_json::Value>(&out.data).ok() {
                    Some(r) => serde_json::json!({ "file": file, "ok": true, "content_type": out.content_type, "result": r }),
                    None => serde_json::json!({ "file": file, "ok": true, "content_type": out.content_type, "bytes": out.data.len() }),
                },
                Err(f) => {
                    failed = true;
                    serde_json::json!({ "file": file, "ok": false, "code": f.code.to_string(), "error": f.message })
                }
            };
            println!("{line}");
        }
        eprintln!("{}: checked, {} sample(s){}", dir.display(), checked.len(), if failed { ", some failed" } else { ", all passed" });
        !failed
    }
}
