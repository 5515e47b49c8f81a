//! `tensorgate`: submit items to a tensorgate host and inspect it.
//!
//! Settings come from flags, else environment variables (`TENSORGATE_HOST`,
//! `TENSORGATE_FINGERPRINT`, `TENSORGATE_CA`), else defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tensorgate_client::{Client, Event, Input, Submission, Trust};

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
    /// Submit files as items of one request; prints one JSON line per item.
    Submit {
        /// Application (model) name.
        #[arg(long)]
        model: String,
        /// Version (default: the newest).
        #[arg(long)]
        version: Option<u64>,
        /// Content type of every item (default: from each file's extension).
        #[arg(long)]
        content_type: Option<String>,
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the host's version, uptime and loaded models.
    Status,
    /// Load generator: send requests of one payload file and report latency
    /// percentiles and throughput.
    Bench(bench::BenchArgs),
}

mod bench;

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
    match tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(Cli::parse()))) {
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
    let client = Client::connect(cli.conn.host, trust).await?;
    let code = match cli.command {
        Command::Bench(args) => {
            let client = std::sync::Arc::new(client);
            bench::run(client.clone(), args).await?;
            if let Ok(client) = std::sync::Arc::try_unwrap(client) {
                client.close().await;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Status => {
            let status = client.status().await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            ExitCode::SUCCESS
        }
        Command::Submit { model, version, content_type, files } => {
            let mut items = Vec::with_capacity(files.len());
            for f in &files {
                let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let ct = content_type.as_deref().unwrap_or_else(|| content_type_for(f));
                items.push(Input::new(data, ct).with_meta("filename", &f.display().to_string()));
            }
            let mut submission = Submission::new(&model, items);
            if let Some(v) = version {
                submission = submission.version(v);
            }
            let mut failed = 0u32;
            let summary = client
                .predict_stream(submission, |event| {
                    if let Event::Item(outcome) = event {
                        let line = match outcome {
                            Ok(r) => {
                                let file = files.get(r.index as usize).map(|f| f.display().to_string());
                                let result = if r.content_type.contains("json") {
                                    serde_json::from_slice(&r.payload)
                                        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&r.payload).into()))
                                } else {
                                    serde_json::json!({ "bytes": r.payload.len(), "content_type": r.content_type })
                                };
                                serde_json::json!({ "index": r.index, "file": file, "ok": true, "result": result })
                            }
                            Err(e) => {
                                failed += 1;
                                let file = files.get(e.index as usize).map(|f| f.display().to_string());
                                serde_json::json!({ "index": e.index, "file": file, "ok": false, "code": e.code, "error": e.message })
                            }
                        };
                        println!("{line}");
                    }
                })
                .await?;
            eprintln!(
                "{} ok, {} failed ({} v{}, {:.1} ms server-side)",
                summary.ok,
                summary.failed,
                summary.model,
                summary.version,
                summary.elapsed_us as f64 / 1e3
            );
            if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
    };
    client.close().await;
    Ok(code)
}
