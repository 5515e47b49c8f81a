//! tensorgate's serving side without a model runtime (no libtorch, no
//! wasmtime): what a host and a cluster gateway share.
//!
//! - [`front`]: where clients connect (QUIC today), the pump around
//! - [`request`]: the sans-IO request machine (frame order, limits,
//!   deadline, bookkeeping, summary) and the [`request::ItemRunner`] seam
//!   to whatever runs items (the local runtime, or a cluster's fleet);
//! - [`manage`]: the one management interface behind `status` and the
//!   management requests;
//! - [`auth`] (roles), [`tls`] (identity), [`metrics`] (Prometheus),
//!   [`config`] and [`command`] (flags);
//! - [`manifest`]: the bundle manifest format; [`rollout`]: which version
//!   serves a model (promote, rollback, canary trials).
//!
//! Modules, bottom-up (each uses only those before it; a test checks every
//! file): `manifest`, `rollout`, `request`, `auth`, `tls`, `metrics`,
//! `config`, `manage`, `front`, `command`.

pub mod auth;
pub mod command;
pub mod config;
pub mod front;
pub mod item_stats;
pub mod manage;
pub mod manifest;
pub mod metrics;
pub mod request;
pub mod rollout;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;

pub use config::FrontConfig;

/// Errors starting a front end.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS identity problems.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// TLS configuration rejected.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The client CA file could not be used.
    #[error("client CA {path}: {reason}")]
    ClientCa {
        /// File.
        path: String,
        /// Cause.
        reason: String,
    },
    /// The metrics exporter could not start.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// Binding the UDP socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): every binary's first call.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Prints where the fronts listen and writes it for scripts:
/// `STATE_DIR/http-listening` and `STATE_DIR/grpc-listening` (when those
/// fronts serve), `STATE_DIR/fingerprint`, then `STATE_DIR/listening` (its
/// appearing means all are there).
pub fn announce(state_dir: &Path, fronts: &front::Fronts) -> std::io::Result<()> {
    let (addr, fingerprint) = (fronts.addr(), fronts.fingerprint());
    println!("tensorgate-host listening on {addr}");
    println!("certificate sha256 fingerprint: {fingerprint}");
    // The Open Inference Protocol's addresses first: `listening` says all are up.
    for (file, what, bound) in [("http-listening", "http", fronts.http_addr()), ("grpc-listening", "grpc", fronts.grpc_addr())] {
        match bound {
            Some(a) => {
                println!("Open Inference Protocol over {what} on {a}");
                write_whole(&state_dir.join(file), &a.to_string())?;
            }
            None => {
                let _ = std::fs::remove_file(state_dir.join(file));
            }
        }
    }
    write_whole(&state_dir.join("fingerprint"), fingerprint)?;
    write_whole(&state_dir.join("listening"), &addr.to_string())?;
    Ok(())
}

/// Writes `text` to `path` atomically (a temporary file, then a rename), so
/// a script polling for it never reads a half-written file.
pub fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
