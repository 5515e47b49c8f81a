//! The WASI a plugin may import: what a language runtime compiled into the
//! component (CPython, for plugins built with componentize-py) needs to run,
//! and nothing that reaches outside the host. Rust plugins import no WASI.
//!
//! Granted (each instance its own, empty [`WasiCtx`]):
//! - `wasi:io` error, poll and streams: the plumbing of the streams below;
//! - `wasi:cli` stdin (closed), stdout and stderr (into the host's log,
//!   [`MAX_OUTPUT_BYTES`] per call), environment (no variables, no
//!   arguments, no working directory), exit (ends the call as a trap),
//!   terminal-* (no terminal);
//! - `wasi:clocks` wall clock and monotonic clock readings — but not their
//!   `subscribe-*` (sleeping): a plugin may not wait, it traps instead;
//! - `wasi:random` (CPython seeds its hashes from it);
//! - `wasi:filesystem` types and preopens with no preopened directory: no
//!   file can be opened, so a runtime probing for files gets "not found";
//! - `wasi:sockets` linked (CPython's socket module imports it) with a
//!   context that allows no TCP, no UDP, no address and no name lookup:
//!   every attempt is refused with `access-denied`.
//!
//! Nothing else: a component importing any other interface (`wasi:http`,
//! say) fails to load, naming the import.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most bytes a plugin's stdout and stderr (together) keep per call; the
/// rest is counted and dropped.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// One instance's WASI state: its context (which grants nothing outside)
/// and its resource table, plus what it wrote to stdout and stderr.
pub struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    output: Arc<Mutex<Captured>>,
}

impl Wasi {
    /// A context with no files, no environment, no network, stdin closed,
    /// stdout and stderr captured.
    pub fn new() -> Self {
        let output = Arc::new(Mutex::new(Captured::default()));
        let (stdout, stderr) = (LogPipe { output: output.clone(), stderr: false }, LogPipe { output, stderr: true });
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let output = stdout.output;
        Wasi { ctx, table: ResourceTable::new(), output }
    }

    /// Takes what the plugin wrote during the call, stdout and stderr as
    /// `(is_stderr, line)` in order, and the bytes dropped past the cap.
    pub fn take_output(&mut self) -> (Vec<(bool, String)>, usize) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let captured = std::mem::take(&mut *out);
        let mut lines = Vec::new();
        for (stderr, bytes) in captured.chunks {
            let text = String::from_utf8_lossy(&bytes);
            lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(|l| (stderr, l.to_string())));
        }
        (lines, captured.dropped)
    }
}

impl Default for Wasi {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes written to stdout or stderr during a call.
#[derive(Default)]
struct Captured {
    /// `(is_stderr, bytes)`, consecutive writes to one stream merged.
    chunks: Vec<(bool, Vec<u8>)>,
    kept: usize,
    dropped: usize,
}

impl Captured {
    fn push(&mut self, stderr: bool, bytes: &[u8]) {
        let room = MAX_OUTPUT_BYTES.saturating_sub(self.kept);
        let keep = bytes.len().min(room);
        self.dropped += bytes.len() - keep;
        if keep == 0 {
            return;
        }
        self.kept += keep;
        match self.chunks.last_mut() {
            Some((s, chunk)) if *s == stderr => chunk.extend_from_slice(&bytes[..keep]),
            _ => self.chunks.push((stderr, bytes[..keep].to_vec())),
        }
    }
}

/// stdout or stderr of a plugin: always ready, never blocks, keeps at most
/// [`MAX_OUTPUT_BYTES`] per call and drops the rest.
#[derive(Clone)]
struct LogPipe {
    output: Arc<Mutex<Captured>>,
    stderr: bool,
}

impl LogPipe {
    fn push(&self, bytes: &[u8]) {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).push(self.stderr, bytes);
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Wasi {
    /// The view wasmtime-wasi's host functions work on.
    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds the granted WASI interfaces (module docs) to `linker`, with the
/// monotonic clock's `subscribe-*` replaced by traps.
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets, sync};
    let l = &mut *linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    // Linked so that a runtime's socket module loads, but the context allows
    // no TCP, no UDP, no address and no name lookup: every use is refused.
    let options = sync::LinkOptions::default();
    sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::network::add_to_linker::<T, WasiSockets>(l, &(&options).into(), T::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sync::sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sync::sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;

    // No sleeping: a wait would block the host thread past the call's time
    // budget (the epoch deadline interrupts wasm code, not a host wait).
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |_, (_,): (u64,)| -> wasmtime::Result<(Resource<wasmtime_wasi::p2::DynPollable>,)> {
        Err(wasmtime::Error::msg(NO_SLEEP))
    })?;
    clock.func_wrap("subscribe-instant", |_, (_,): (u64,)| -> wasmtime::Result<(Resource<wasmtime_wasi::p2::DynPollable>,)> {
        Err(wasmtime::Error::msg(NO_SLEEP))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The monotonic clock interface as wasmtime-wasi links it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Why a plugin's sleep trapped.
pub const NO_SLEEP: &str = "plugins may not sleep or wait (wasi:clocks/monotonic-clock subscribe): the host gives each call a time budget";
