//! `tensorgate`: submit items to a tensorgate host and inspect it.
//!
//! Settings come from flags first, then environment variables
//! (`TENSORGATE_HOST`, `TENSORGATE_FINGERPRINT`, `TENSORGATE_CA`), then defaults.

mod bench;
mod submit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use tensorgate_client::{Client, Trust};

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
    /// Host address (UDP).
    #[arg(long, global = true, env = "TENSORGATE_HOST", default_value = "127.0.0.1:7443")]
    host: SocketAddr,
    /// Pin the host certificate's SHA-256 fingerprint (hex, as the host prints it).
    #[arg(long, global = true, env = "TENSORGATE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Verify the host certificate against this CA file (PEM) instead.
    #[arg(long, global = true, env = "TENSORGATE_CA", conflicts_with = "fingerprint")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Submit files (paths, directories or quoted globs) as items; prints one
    /// JSON line per item as results arrive. Exit code 1 if any item failed.
    Submit(submit::SubmitArgs),
    /// Show the host's version, uptime and loaded models (JSON).
    Status,
    /// List the loaded models.
    Models,
    /// Load generator: send requests of one payload file and report latency
    /// percentiles and throughput.
    Bench(bench::BenchArgs),
}

/// Content type guessed from a file's extension.
pub(crate) fn content_type_for(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("json") => "application/json",
        Some("npy") => "application/x-npy",
        Some("npz") => "application/x-npz",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(cli))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let trust = match (&cli.conn.fingerprint, &cli.conn.ca) {
        (Some(fp), _) => Trust::Fingerprint(fp.clone()),
        (None, Some(ca)) => Trust::CaFile(ca.clone()),
        (None, None) => bail!("give --fingerprint (printed by tensorgate-host) or --ca to trust the host"),
    };
    let client = Arc::new(Client::connect(cli.conn.host, trust).await?);
    let code = match cli.command {
        Command::Submit(args) => submit::run(client.clone(), args).await?,
        Command::Bench(args) => {
            bench::run(client.clone(), args).await?;
            ExitCode::SUCCESS
        }
        Command::Status => {
            println!("{}", serde_json::to_string_pretty(&client.status().await?)?);
            ExitCode::SUCCESS
        }
        Command::Models => {
            let status = client.status().await?;
            println!(
                "{:<16} {:>7} {:<7} {:>9} {:>7} {:>6} {:>10} {:>6}  DESCRIPTION",
                "NAME", "VERSION", "DEVICE", "OK", "FAILED", "QUEUED", "BATCH_MEAN", "FWD_MS"
            );
            for m in status.models {
                let batch = m.forward_rows as f64 / m.forwards.max(1) as f64;
                let fwd_ms = m.forward_us as f64 / 1e3 / m.forwards.max(1) as f64;
                println!(
                    "{:<16} {:>7} {:<7} {:>9} {:>7} {:>6} {:>10.1} {:>6.2}  {}",
                    m.name, m.version, m.device, m.items_ok, m.items_failed, m.queued, batch, fwd_ms, m.description
                );
            }
            ExitCode::SUCCESS
        }
    };
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    Ok(code)
}
