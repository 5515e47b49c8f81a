//! `tensorgate`: submit items to a tensorgate host and inspect it.
//!
//! Settings come from flags first, then environment variables
//! (`TENSORGATE_HOST`, `TENSORGATE_FINGERPRINT`, `TENSORGATE_CA`), then defaults.

mod bench;
mod install;
mod pbtxt;
mod plugin;
mod submit;
mod triton;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tensorgate_client::{trust_per_address, ConnectOptions, Failover, Identity, TargetsError};

#[derive(Parser)]
#[command(name = "tensorgate", version, about = "Submit work to a tensorgate host")]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConnArgs {
    /// Host address (UDP); several, comma-separated (cluster gateways): one
    /// is used, and `submit` fails over to the next, resubmitting the items
    /// that got no answer.
    #[arg(long, global = true, env = "TENSORGATE_HOST", default_value = "127.0.0.1:7443", value_delimiter = ',')]
    host: Vec<SocketAddr>,
    /// Pin the host certificate's SHA-256 fingerprint (hex, as the host
    /// prints it); with several hosts, one per host (comma-separated) or one for all.
    #[arg(long, global = true, env = "TENSORGATE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Verify the host certificate against this CA file (PEM) instead.
    #[arg(long, global = true, env = "TENSORGATE_CA", conflicts_with = "fingerprint")]
    ca: Option<PathBuf>,
    /// Bearer token sent with every request (for hosts that require one).
    #[arg(long, global = true, env = "TENSORGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client certificate (PEM) for hosts that check them; needs --key.
    #[arg(long, global = true, env = "TENSORGATE_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "TENSORGATE_KEY", requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Submit files (paths, directories or quoted globs) as items; prints one
    /// JSON line per item as results arrive. Exit code 1 if any item failed.
    Submit(submit::SubmitArgs),
    /// Show the host's version, uptime and loaded models (JSON).
    Status,
    /// List every model version with its state, load time and counts
    /// (admin; `--json` for the full records).
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle (a directory with manifest.toml, or a .tar.zst of
    /// one); returns once the host serves it (admin).
    Upload {
        /// Bundle directory or archive.
        path: PathBuf,
        /// Replace an existing bundle of the same name and version.
        #[arg(long)]
        replace: bool,
    },
    /// Download a bundle as .tar.zst (admin).
    Fetch {
        /// Model name.
        model: String,
        /// Version (newest when absent).
        #[arg(long)]
        version: Option<u64>,
        /// Output file (default MODEL-VERSION.tar.zst).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Remove a model version, or all its versions (admin).
    Delete {
        /// Model name.
        model: String,
        /// Version (every version when absent).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Re-read the repository on disk and load what changed (admin).
    /// Exit code 1 if a bundle failed to load.
    Reload {
        /// Only this model.
        model: Option<String>,
    },
    /// Make a version the model's default (served when a request names no
    /// version) until a newer version is installed (admin).
    Promote {
        /// Model name.
        model: String,
        /// Version to serve by default.
        version: u64,
    },
    /// The model's default version is bad: go back to the newest earlier
    /// version not rolled back (admin). The bad version stays loaded for
    /// requests that name it.
    Rollback {
        /// Model name.
        model: String,
    },
    /// Load generator: send requests of one payload file and report latency
    /// percentiles and throughput. Exit code 1 if any request or item failed.
    Bench(bench::BenchArgs),
    /// Scaffold (`plugin new NAME`) and build (`plugin build DIR`) plugin crates; needs no host.
    Plugin(plugin::PluginArgs),
    /// Bring models from another server across (`import triton DIR`); needs no host.
    Import(triton::ImportArgs),
}

fn print_models(models: &[tensorgate_client::protocol::ModelInfo]) {
    println!(
        "{:<16} {:>7} {:<8} {:<6} {:>9} {:>9} {:>7} {:>8}  DESCRIPTION",
        "NAME", "VERSION", "STATE", "DEVICE", "REQUESTS", "ITEMS_OK", "FAILED", "LOAD_MS"
    );
    for m in models {
        let default = if m.default { "*" } else { "" };
        let rolled_back = m.rolled_back.as_ref().map(|r| format!("[rolled back: {r}] "));
        let canary = m.canary.as_ref().map(|c| {
            format!("[canary, {:.0} % of traffic: {} of {} items, {} failed] ", c.share * 100.0, c.items_ok + c.items_failed, c.items_needed, c.items_failed)
        });
        let notes = format!("{}{}", canary.unwrap_or_default(), rolled_back.unwrap_or_default());
        let about = m.error.clone().unwrap_or_else(|| format!("{notes}{}", m.description));
        println!(
            "{:<16} {:>7} {:<8} {:<6} {:>9} {:>9} {:>7} {:>8.1}  {about}",
            m.name,
            format!("{}{default}", m.version),
            m.state,
            m.device,
            m.requests,
            m.items_ok,
            m.items_failed,
            m.load_us as f64 / 1e3
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Plugin(args) => return plugin::main(args),
        Command::Import(args) => return triton::main(args),
        _ => {}
    }
    match tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(cli))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let identity = match (&cli.conn.cert, &cli.conn.key) {
        (Some(cert), Some(key)) => Some(Identity { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let trust = trust_per_address(&cli.conn.host, cli.conn.fingerprint.as_deref(), cli.conn.ca.as_deref()).map_err(|e| match e {
        // The rule is the client library's; the remedy names this command's flags.
        TargetsError::NoTrust => anyhow::anyhow!("give --fingerprint (printed by tensorgate-host) or --ca to trust the host"),
        other => other.into(),
    })?;
    let targets = cli
        .conn
        .host
        .iter()
        .zip(trust)
        .map(|(addr, trust)| (*addr, ConnectOptions { trust, identity: identity.clone(), token: cli.conn.token.clone() }))
        .collect();
    let failover = Arc::new(Failover::new(targets)?);
    let client = failover.client().await?;
    let code = match cli.command {
        Command::Submit(args) => submit::run(failover.clone(), args).await?,
        Command::Plugin(_) | Command::Import(_) => unreachable!("handled in main before connecting"),
        Command::Bench(args) => bench::run(client.clone(), args).await?,
        Command::Status => {
            println!("{}", serde_json::to_string_pretty(&client.status().await?)?);
            ExitCode::SUCCESS
        }
        Command::Models { json } => {
            let models = client.models().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
            } else {
                print_models(&models);
            }
            ExitCode::SUCCESS
        }
        Command::Upload { path, replace } => {
            let reply = client.upload(&path, replace).await?;
            println!("{}", reply.message);
            ExitCode::SUCCESS
        }
        Command::Fetch { model, version, output } => {
            let archive = client.fetch(&model, version).await?;
            let output = output.unwrap_or_else(|| {
                PathBuf::from(format!("{model}-{}.tar.zst", version.map(|v| v.to_string()).unwrap_or("latest".into())))
            });
            std::fs::write(&output, &archive)?;
            println!("{} ({} bytes)", output.display(), archive.len());
            ExitCode::SUCCESS
        }
        Command::Delete { model, version } => {
            println!("{}", client.delete(&model, version).await?.message);
            ExitCode::SUCCESS
        }
        Command::Promote { model, version } => {
            println!("{}", client.promote(&model, version).await?.message);
            ExitCode::SUCCESS
        }
        Command::Rollback { model } => {
            println!("{}", client.rollback(&model).await?.message);
            ExitCode::SUCCESS
        }
        Command::Reload { model } => {
            let reply = client.reload(model.as_deref()).await?;
            println!("{}", reply.message);
            for m in &reply.models {
                println!("  {} {} {} ({:.1} ms)", m.state, m.name, m.version, m.load_us as f64 / 1e3);
            }
            for e in &reply.errors {
                eprintln!("  failed {} {}: {}", e.model, e.version.map(|v| v.to_string()).unwrap_or_default(), e.error);
            }
            if reply.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    };
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    Ok(code)
}
