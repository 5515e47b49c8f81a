//! `tensorgate-host`: every role of tensorgate in one binary, one
//! subcommand each, each with only its own flags:
//!
//! - `serve`: a host on its own (repository, models, the QUIC front);
//! - `worker`: a host that pulls its work from a cluster's engine;
//! - `gateway`: a cluster's front (also the slim `tensorgate-gateway`);
//! - `check DIR`: a bundle checked as a host would, its samples run;
//! - `devices`: what libtorch offers here; `hash-token`: a token's hash.
//!
//! The flag forms of earlier releases (`--repository … [--nats …
//! [--gateway]]`, `--check DIR`, `--devices`, `--hash-token`) still work
//! and say which subcommand replaces them.

use std::ffi::OsString;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tensorgate_gateway::command::GatewayCommand;
use tensorgate_runtime::command::{CheckCommand, ServeCommand};
use tensorgate_worker::command::WorkerCommand;

/// Serve models with WebAssembly pre/post-processing plugins over QUIC,
/// alone or as a cluster's worker or gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a model repository to clients over QUIC.
    Serve(ServeCommand),
    /// Run models for a cluster: pull work from its engine, listen on no port.
    Worker(WorkerCommand),
    /// Serve the client protocol and forward items to a cluster's workers.
    Gateway(GatewayCommand),
    /// Check a bundle as a host would before serving it and run each of its
    /// samples (`samples/`, or the `[warmup]` item); one JSON line per
    /// sample; exit 1 if anything failed.
    Check(CheckCommand),
    /// Print what libtorch offers here as JSON (whether the CUDA library is
    /// linked and loaded, the CUDA devices it sees, where `auto` runs).
    Devices,
    /// Print the SHA-256 of a token read from stdin (for the access file).
    HashToken,
}

/// The subcommand an argument list of an earlier release means, and the
/// arguments for it; `None` when it already names a subcommand.
fn legacy(args: &[OsString]) -> Option<(&'static str, Vec<OsString>)> {
    let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let first = text.get(1)?;
    if !first.starts_with('-') || ["-h", "--help", "-V", "--version"].contains(&first.as_str()) {
        return None;
    }
    let rest = |drop: &[&str]| -> Vec<OsString> {
        args.iter().skip(1).filter(|a| !drop.contains(&a.to_string_lossy().as_ref())).cloned().collect()
    };
    let has = |flag: &str| text.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let command = if has("--check") {
        "check"
    } else if has("--devices") {
        "devices"
    } else if has("--hash-token") {
        "hash-token"
    } else if has("--gateway") {
        "gateway"
    } else if has("--nats") || std::env::var_os("TENSORGATE_NATS").is_some_and(|v| !v.is_empty()) {
        // As before: an engine given by flag or environment makes a worker.
        "worker"
    } else {
        "serve"
    };
    let mut out = vec![args[0].clone(), command.into()];
    out.extend(match command {
        "check" => rest(&["--check"]),
        "devices" => rest(&["--devices"]),
        "hash-token" => rest(&["--hash-token"]),
        "gateway" => rest(&["--gateway"]),
        _ => rest(&[]),
    });
    Some((command, out))
}

fn main() -> anyhow::Result<()> {
    tensorgate_server::init_tracing();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if let Some((command, rewritten)) = legacy(&args) {
        tracing::warn!("the flag form of `tensorgate-host` is deprecated: use `tensorgate-host {command} …`");
        args = rewritten;
    }
    match Cli::parse_from(args).command {
        Command::Serve(c) => c.run().context("serving")?,
        Command::Worker(c) => c.run().context("running the worker")?,
        Command::Gateway(c) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(c.run()).context("running the gateway")?;
        }
        Command::Check(c) => {
            if !c.run() {
                std::process::exit(1);
            }
        }
        Command::Devices => println!("{}", serde_json::to_string(&tensorgate_backend_torch::devices())?),
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            println!("{}", tensorgate_server::auth::sha256_hex(token.trim_end_matches(['\r', '\n']).as_bytes()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_old_flag_forms_map_to_subcommands() {
        let (c, a) = legacy(&os(&["h", "--repository", "r", "--listen", "127.0.0.1:0"])).unwrap();
        assert_eq!((c, a), ("serve", os(&["h", "serve", "--repository", "r", "--listen", "127.0.0.1:0"])));
        let (c, a) = legacy(&os(&["h", "--nats", "nats://x", "--gateway", "--listen", "x"])).unwrap();
        assert_eq!((c, a), ("gateway", os(&["h", "gateway", "--nats", "nats://x", "--listen", "x"])));
        assert_eq!(legacy(&os(&["h", "--nats=nats://x", "--repository", "r"])).unwrap().0, "worker");
        assert_eq!(legacy(&os(&["h", "--check", "dir"])).unwrap().1, os(&["h", "check", "dir"]));
        assert_eq!(legacy(&os(&["h", "--devices"])).unwrap().1, os(&["h", "devices"]));
        assert!(legacy(&os(&["h", "serve", "--repository", "r"])).is_none());
        assert!(legacy(&os(&["h", "--help"])).is_none());
        // Every rewritten form parses.
        for v in [&["h", "--repository", "r"][..], &["h", "--nats", "n", "--repository", "r"], &["h", "--nats", "n", "--gateway"], &["h", "--check", "d"]] {
            let (_, a) = legacy(&os(v)).unwrap();
            Cli::try_parse_from(a).expect("parses");
        }
    }
}
