//! `tensorgate-host`: serve a model repository over QUIC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tensorgate_host::auth::AccessPolicy;
use tensorgate_host::device::DeviceSpec;
use tensorgate_host::{Host, HostConfig};
use tensorgate_protocol::Limits;

/// Serve TorchScript models with WebAssembly pre/post-processing over QUIC.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model repository: REPO/NAME/VERSION/{manifest.toml, model.pt, plugin.wasm}
    /// (not used by a gateway).
    #[arg(long, env = "TENSORGATE_REPO", required_unless_present = "gateway")]
    repository: Option<PathBuf>,
    /// UDP address to listen on (port 0: any free port).
    #[arg(long, env = "TENSORGATE_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Directory for the TLS identity and runtime files.
    #[arg(long, env = "TENSORGATE_STATE_DIR", default_value = "tensorgate-state")]
    state_dir: PathBuf,
    /// Cache of compiled plugins, shareable between hosts (default: STATE_DIR/compiled).
    #[arg(long, env = "TENSORGATE_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
    /// Default device for models: auto, cpu or cuda:N.
    #[arg(long, env = "TENSORGATE_DEVICE", default_value = "auto")]
    device: DeviceSpec,
    /// Libtorch intra-op threads (0: libtorch's default).
    #[arg(long, env = "TENSORGATE_THREADS", default_value_t = 0)]
    threads: usize,
    /// Extra DNS names or IPs for the self-signed certificate.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Plugin call budget in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    plugin_timeout_ms: u64,
    /// Most items in one request.
    #[arg(long, default_value_t = Limits::default().max_items_per_request)]
    max_items_per_request: u32,
    /// Largest header/control frame body in bytes.
    #[arg(long, default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: u32,
    /// Largest item frame as sent (compressed) in bytes.
    #[arg(long, default_value_t = Limits::default().max_frame_bytes)]
    max_frame_bytes: u64,
    /// Largest item payload after decompression in bytes.
    #[arg(long, default_value_t = Limits::default().max_item_bytes)]
    max_item_bytes: u64,
    /// Most concurrent requests (streams) per connection.
    #[arg(long, default_value_t = 256)]
    max_streams_per_connection: u32,
    /// Most items of one request processed at once (reading pauses beyond it).
    #[arg(long, default_value_t = 1024)]
    max_items_in_flight: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "TENSORGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Close connections idle for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_s: u64,
    /// Access file (TOML): hashed bearer tokens, client CA, admin certificates
    /// (see docs/management.md). Without one, predict is open and management
    /// is allowed from loopback only.
    #[arg(long, env = "TENSORGATE_ACCESS")]
    access: Option<PathBuf>,
    /// Watch the repository and reload bundles that change on disk.
    #[arg(long, env = "TENSORGATE_WATCH")]
    watch: bool,
    /// Quiet time (ms) the repository needs before a watched change is loaded.
    #[arg(long, default_value_t = 500)]
    watch_debounce_ms: u64,
    /// Check the bundle in DIR as a host would before serving it, run each
    /// of its samples (`samples/`, or the `[warmup]` item) and print one JSON
    /// line per sample; exit 1 if anything failed. Needs no other flag.
    #[arg(long, value_name = "DIR")]
    check: Option<PathBuf>,
    /// Largest bundle an upload may unpack to, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    max_upload_bytes: u64,
    /// Share of the requests naming no version that a new version takes on
    /// trial before it becomes the default (0: none, the default at once);
    /// a manifest's `[rollout]` overrides it.
    #[arg(long, default_value_t = 0.0)]
    canary_share: f64,
    /// Items a new version on trial must answer before it is promoted.
    #[arg(long, default_value_t = 200)]
    canary_items: u64,
    /// How much a canary's item-failure rate may exceed the default's (0.02: two points).
    #[arg(long, default_value_t = 0.02)]
    canary_max_failure_increase: f64,
    /// Cluster mode: the NATS engine's URL(s), comma-separated. With a
    /// repository this process is a worker (it dials out and listens on no
    /// port); with `--gateway` it is a gateway (see docs/cluster.md).
    #[arg(long, env = "TENSORGATE_NATS")]
    nats: Option<String>,
    /// Be a cluster gateway: serve the client protocol and forward items to
    /// the workers (needs `--nats`).
    #[arg(long, requires = "nats")]
    gateway: bool,
    /// Engine user (with TENSORGATE_NATS_PASSWORD).
    #[arg(long, env = "TENSORGATE_NATS_USER")]
    nats_user: Option<String>,
    /// Engine password.
    #[arg(long, env = "TENSORGATE_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// File holding the engine nkey seed (`SU…`).
    #[arg(long, env = "TENSORGATE_NATS_NKEY")]
    nats_nkey: Option<PathBuf>,
    /// Engine credentials file (JWT and nkey seed).
    #[arg(long, env = "TENSORGATE_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) of the engine's TLS; TLS to the engine is required when set.
    #[arg(long, env = "TENSORGATE_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// Subject prefix: several clusters can share one engine.
    #[arg(long, env = "TENSORGATE_CLUSTER", default_value = "tg")]
    cluster: String,
    /// An item held by a worker that went silent is handed to another after this long (ms).
    #[arg(long, default_value_t = 3000)]
    redeliver_after_ms: u64,
    /// Worker advert period (ms); a worker silent for three is dropped from the fleet.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Worker: items pulled at once per application version (default: 2 × max_batch × instances).
    #[arg(long)]
    capacity: Option<usize>,
    /// Most queued item bytes the engine holds for the cluster (MiB); past it
    /// new items fail `busy` (set by whichever role creates the work stream first).
    #[arg(long, default_value_t = 1024)]
    max_queued_mb: i64,
    /// Worker: on SIGTERM, wait at most this long (s) for the items it holds.
    #[arg(long, default_value_t = 120)]
    drain_timeout_s: u64,
    /// Print the SHA-256 of a token read from stdin (for the access file) and exit.
    #[arg(long, exclusive = true)]
    hash_token: bool,
    /// Print what libtorch offers here as JSON (whether the CUDA library is
    /// linked and loaded, the CUDA devices it sees, where `auto` runs) and exit.
    #[arg(long, exclusive = true)]
    devices: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `--check DIR` needs no repository either: check one bundle and exit.
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--check") {
        let dir = argv.get(i + 1).context("--check needs a bundle directory")?;
        return check_bundle(std::path::Path::new(dir));
    }
    // `--devices`: what libtorch offers here (CUDA linked, devices seen), as JSON.
    if std::env::args().any(|a| a == "--devices") {
        println!("{}", serde_json::to_string(&tensorgate_host::executor::torch::devices())?);
        return Ok(());
    }
    // `--hash-token` needs no repository: handle it before the required flags.
    if std::env::args().any(|a| a == "--hash-token") {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        println!("{}", tensorgate_host::auth::sha256_hex(token.trim_end_matches(['\r', '\n']).as_bytes()));
        return Ok(());
    }
    let args = Args::parse();
    let mut config = HostConfig::new(args.repository.clone().unwrap_or_default(), &args.state_dir);
    config.listen = args.listen;
    config.compile_cache = args.compile_cache.clone();
    config.device = args.device;
    config.intra_op_threads = args.threads;
    config.tls_names = args.tls_names.clone();
    config.plugin_call_timeout = Duration::from_millis(args.plugin_timeout_ms);
    config.limits = Limits {
        max_header_bytes: args.max_header_bytes,
        max_frame_bytes: args.max_frame_bytes,
        max_item_bytes: args.max_item_bytes,
        max_items_per_request: args.max_items_per_request,
    };
    config.max_streams_per_connection = args.max_streams_per_connection;
    config.idle_timeout = Duration::from_secs(args.idle_timeout_s);
    config.metrics_listen = args.metrics_listen;
    config.max_items_in_flight = args.max_items_in_flight.max(1);
    config.watch = args.watch;
    config.watch_debounce = Duration::from_millis(args.watch_debounce_ms);
    config.max_upload_bytes = args.max_upload_bytes;
    anyhow::ensure!((0.0..=1.0).contains(&args.canary_share), "--canary-share {} is not in 0..=1", args.canary_share);
    anyhow::ensure!(args.canary_items >= 1, "--canary-items must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.canary_max_failure_increase),
        "--canary-max-failure-increase {} is not in 0..=1",
        args.canary_max_failure_increase
    );
    config.rollout = tensorgate_host::manifest::Rollout {
        canary_share: args.canary_share,
        canary_items: args.canary_items,
        max_failure_increase: args.canary_max_failure_increase,
    };
    if let Some(path) = &args.access {
        config.access = AccessPolicy::load(path)?;
    }

    if let Some(url) = &args.nats {
        return run_cluster(&args, url, config);
    }
    let host = Host::load(config).context("starting the host")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let running = host.serve()?;
        announce(&args.state_dir, running.addr(), running.fingerprint())?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = std::fs::remove_file(args.state_dir.join("listening"));
        running.shutdown().await;
        anyhow::Ok(())
    })
}

/// `--check DIR`: the checks a host makes before serving the bundle, then
/// one JSON line per sample with its output or its error; exit status 1 if
/// anything failed.
fn check_bundle(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut config = HostConfig::new(dir, std::env::temp_dir());
    config.compile_cache = std::env::var_os("TENSORGATE_COMPILE_CACHE").map(PathBuf::from);
    let checked = match tensorgate_host::repository::check::bundle(dir, &config) {
        Ok(c) => c,
        Err(e) => {
            println!("{}", serde_json::json!({ "bundle": dir.display().to_string(), "ok": false, "error": e.to_string() }));
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for (file, outcome) in &checked {
        let line = match outcome {
            Ok(out) => {
                let result = serde_json::from_slice::<serde_json::Value>(&out.data).ok();
                match result {
                    Some(r) => serde_json::json!({ "file": file, "ok": true, "content_type": out.content_type, "result": r }),
                    None => serde_json::json!({ "file": file, "ok": true, "content_type": out.content_type, "bytes": out.data.len() }),
                }
            }
            Err(f) => {
                failed = true;
                serde_json::json!({ "file": file, "ok": false, "code": f.code.to_string(), "error": f.message })
            }
        };
        println!("{line}");
    }
    eprintln!("{}: checked, {} sample(s){}", dir.display(), checked.len(), if failed { ", some failed" } else { ", all passed" });
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints where the front end listens and writes it for scripts.
fn announce(state_dir: &std::path::Path, addr: SocketAddr, fingerprint: &str) -> anyhow::Result<()> {
    println!("tensorgate-host listening on {addr}");
    println!("certificate sha256 fingerprint: {fingerprint}");
    // The fingerprint first: `listening` appearing means both are there.
    // Each is written whole under a temporary name, then renamed, so a
    // script polling for them never reads a half-written file.
    write_whole(&state_dir.join("fingerprint"), fingerprint)?;
    write_whole(&state_dir.join("listening"), &addr.to_string())?;
    Ok(())
}

/// Writes `text` to `path` atomically: a temporary file, then a rename.
fn write_whole(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// A worker or a gateway of the cluster at `url`.
fn run_cluster(args: &Args, url: &str, config: HostConfig) -> anyhow::Result<()> {
    use tensorgate_host::cluster::{gateway::Gateway, worker, ClusterConfig, EngineAuth};
    let mut cluster = ClusterConfig::new(url);
    cluster.prefix = args.cluster.clone();
    cluster.redeliver_after = Duration::from_millis(args.redeliver_after_ms.max(100));
    cluster.heartbeat = Duration::from_millis(args.heartbeat_ms.max(50));
    cluster.tls_ca = args.nats_ca.clone();
    cluster.max_queued_bytes = args.max_queued_mb.max(1) << 20;
    cluster.rollout = config.rollout;
    cluster.auth = match (&args.nats_user, &args.nats_password, &args.nats_nkey, &args.nats_creds) {
        (Some(user), password, None, None) => {
            EngineAuth::User { user: user.clone(), password: password.clone().unwrap_or_default() }
        }
        (None, None, Some(seed), None) => EngineAuth::Nkey(
            std::fs::read_to_string(seed).with_context(|| format!("reading the nkey seed {}", seed.display()))?.trim().to_string(),
        ),
        (None, None, None, Some(creds)) => EngineAuth::CredsFile(creds.clone()),
        (None, None, None, None) => EngineAuth::None,
        _ => anyhow::bail!("give one kind of engine credentials: --nats-user/--nats-password, --nats-nkey or --nats-creds"),
    };
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    if args.gateway {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(async move {
            let gateway = Gateway::connect(cluster).await.context("connecting the gateway to the engine")?;
            let front = tensorgate_host::server::Front::gateway(config, Arc::new(gateway.clone()), Arc::new(gateway))
                .context("starting the gateway")?;
            announce(&args.state_dir, front.addr(), front.fingerprint())?;
            shutdown_signal().await;
            tracing::info!("gateway shutting down");
            let _ = std::fs::remove_file(args.state_dir.join("listening"));
            front.shutdown().await;
            anyhow::Ok(())
        });
    }
    let host = Host::load(config).context("starting the worker")?;
    let options = worker::WorkerOptions { capacity: args.capacity, drain_timeout: Duration::from_secs(args.drain_timeout_s) };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let running = worker::RunningWorker::start(host, cluster, options).await.context("connecting the worker to the engine")?;
        println!("tensorgate worker {} pulling work from {url}", running.id());
        write_whole(&args.state_dir.join("worker"), &running.id().to_string())?;
        shutdown_signal().await;
        tracing::info!("worker draining");
        running.drain().await;
        let _ = std::fs::remove_file(args.state_dir.join("worker"));
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
