//! The plugin boundary: wasmtime component runtime, host imports, and a pool
//! of instances per application.
//!
//! One `bindgen!` from `wit/tensorgate.wit` (contract 0.3), the host state in
//! [`HostState`], all `Linker` wiring in [`PluginEngine::linker`]; the
//! host-owned tensors behind the plugin's handles, and the bulk operations on
//! them, in `tensors.rs`; the WASI a language runtime in a plugin may
//! import (no files, no network, no environment) in `wasi.rs`.

mod convert;
mod group;
mod pool;
pub mod precompiled;
mod tensors;
mod wasi;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

pub use group::Group;
pub use pool::{CallError, PluginInstance, PluginPool, Produced, DEFAULT_MAX_ITEMS_PER_CALL};
pub use tensors::{TensorCaps, DEFAULT_MAX_TENSORS, DEFAULT_MAX_TENSOR_BYTES};

/// The plugin contract this host speaks.
pub const CONTRACT: &str = "tensorgate:plugin@0.3.0";

/// The bindings generated from `wit/tensorgate.wit`; their records are
/// converted to the host's own types in `convert.rs` and `pool.rs` and go no
/// further into the host.
mod wit {
    wasmtime::component::bindgen!({
        world: "application",
        path: "../../wit",
        imports: { default: trappable },
        with: {
            "tensorgate:plugin/types.tensor": super::tensors::TensorHandle,
            "tensorgate:plugin/types.payload": super::tensors::PayloadHandle,
        },
    });

    pub use tensorgate::plugin::ops::{JsonLayout, Padded, Selection, Tiled};
    pub use tensorgate::plugin::types::{
        Body, Dtype, Item, LogLevel, Manifest as PluginManifest, Output, PluginError, PluginInfo, Produced, TensorSpec,
    };
}

use wit::{Application as Bindings, ApplicationPre as BindingsPre, LogLevel, PluginManifest};
pub use wit::{PluginError, PluginInfo};

/// One item as the plugin's `preprocess` gets it: the payload stays in the
/// host (the plugin reads ranges of it or asks for tensor views).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The item's bytes.
    pub data: Bytes,
    /// Its content type.
    pub content_type: String,
    /// Its metadata.
    pub metadata: Vec<(String, String)>,
}

/// What `preprocess` hands to the model: one tensor per model input, all
/// with the same leading batch dimension; tensors handed back to
/// `postprocess` untouched; and the plugin's opaque context.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Model inputs.
    pub inputs: Vec<tensorgate_backend::Tensor>,
    /// Given back to `postprocess` as they are.
    pub keep: Vec<tensorgate_backend::Tensor>,
    /// Given back to `postprocess` unchanged.
    pub context: Vec<u8>,
}

/// The reply for one item (an `npz` body already written out by the host).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The reply's bytes.
    pub data: Vec<u8>,
    /// Their content type.
    pub content_type: String,
    /// The plugin's metadata entries.
    pub metadata: Vec<(String, String)>,
}

/// State of one plugin instance's store: what the host imports can see.
pub struct HostState {
    app: Arc<str>,
    manifest: Arc<PluginManifest>,
    limits: Limiter,
    /// The tensors and payload of the current call.
    tensors: tensors::TensorTable,
    /// Log messages accepted during the current call.
    logged: u32,
    /// Log messages dropped during the current call (past [`MAX_LOGS_PER_CALL`]).
    suppressed: u64,
    /// The last error-level message of the current call (a guest's panic
    /// message, sent by the SDK's panic hook), attached to a trap.
    last_error: Option<String>,
    /// Log totals of every instance of this plugin.
    log_totals: Arc<LogTotals>,
    /// WASI state (used only by components that import WASI).
    wasi: wasi::Wasi,
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.view()
    }
}

/// Log messages of all instances of one plugin: accepted and dropped.
#[derive(Debug, Default)]
pub struct LogTotals {
    /// Messages passed on to the host's log.
    pub logged: std::sync::atomic::AtomicU64,
    /// Messages dropped past [`MAX_LOGS_PER_CALL`].
    pub suppressed: std::sync::atomic::AtomicU64,
    /// Bytes that crossed the component boundary, both ways: the lists of
    /// bytes of payload and tensor reads, tensor writes, contexts and
    /// replies written by the plugin (tensors moved by handle do not cross).
    pub crossed: std::sync::atomic::AtomicU64,
}

/// Most log messages a plugin may emit per call; the rest are counted and dropped.
pub const MAX_LOGS_PER_CALL: u32 = 64;
/// Longest log message kept (bytes); longer ones are cut.
pub const MAX_LOG_BYTES: usize = 4096;

impl HostState {
    /// Resets the per-call log accounting; the call is given `items` items.
    fn begin_call(&mut self, items: usize) {
        self.tensors.begin(items);
        self.logged = 0;
        self.suppressed = 0;
        self.last_error = None;
    }

    /// Ends a call: reports dropped log messages; returns the last error message.
    fn end_call(&mut self) -> Option<String> {
        // What the plugin printed goes to the log like its log messages
        // (stdout as info, stderr as warn), under the same per-call cap.
        let (printed, dropped) = self.wasi.take_output();
        for (stderr, line) in printed {
            let level = if stderr { LogLevel::Warn } else { LogLevel::Info };
            let _ = wit::tensorgate::plugin::host::Host::log(self, level, line);
        }
        if dropped > 0 {
            tracing::warn!(target: "plugin", app = &*self.app, dropped, "plugin stdout/stderr bytes dropped (limit {} per call)", wasi::MAX_OUTPUT_BYTES);
        }
        let totals = &self.log_totals;
        totals.crossed.fetch_add(self.tensors.crossed, std::sync::atomic::Ordering::Relaxed);
        self.tensors.clear();
        totals.logged.fetch_add(self.logged as u64, std::sync::atomic::Ordering::Relaxed);
        totals.suppressed.fetch_add(self.suppressed, std::sync::atomic::Ordering::Relaxed);
        if self.suppressed > 0 {
            tracing::warn!(target: "plugin", app = &*self.app, suppressed = self.suppressed, "plugin log messages dropped (limit {MAX_LOGS_PER_CALL} per call)");
        }
        self.last_error.take()
    }
}

/// The store's resource limits, remembering a refused growth so that the
/// trap it leads to (an allocation failure aborts a Rust guest) is reported
/// as `plugin memory limit`, not as a generic trap.
pub struct Limiter {
    inner: StoreLimits,
    /// Linear-memory cap (bytes).
    memory_limit: usize,
    /// The last refused growth: bytes asked for.
    refused: Option<usize>,
}

impl Limiter {
    fn new(memory_limit: usize) -> Self {
        Limiter {
            inner: StoreLimitsBuilder::new().memory_size(memory_limit).instances(16).tables(64).table_elements(1 << 20).build(),
            memory_limit,
            refused: None,
        }
    }

    /// Takes the record of a refused memory growth, if there was one.
    pub fn take_refused(&mut self) -> Option<(usize, usize)> {
        self.refused.take().map(|asked| (asked, self.memory_limit))
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.refused = Some(desired);
        }
        Ok(ok)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl wit::tensorgate::plugin::host::Host for HostState {
    fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        if matches!(level, LogLevel::Error) {
            self.last_error = Some(message.clone());
        }
        if self.logged >= MAX_LOGS_PER_CALL {
            self.suppressed += 1;
            return Ok(());
        }
        self.logged += 1;
        let app = &*self.app;
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", app, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", app, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", app, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", app, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", app, "{message}"),
        }
        Ok(())
    }
}

/// Errors loading a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// The wasmtime engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The component targets another version of the plugin contract.
    #[error("plugin {path} is built for {found}, but this host speaks {CONTRACT}: rebuild it with the tensorgate SDK for {CONTRACT} (docs/writing-a-plugin.md)")]
    Contract {
        /// File.
        path: String,
        /// The contract the component exports, or a description when it exports none.
        found: String,
    },
    /// The component failed to compile or link.
    #[error("plugin {path}: {reason}")]
    Compile {
        /// File.
        path: String,
        /// Cause, with wasmtime's context.
        reason: String,
    },
}

/// The process-wide wasmtime engine plus the epoch ticker that enforces
/// per-call time budgets.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<PathBuf>,
    /// Write the precompiled artefact into bundles that lack a valid one
    /// (`tensorgate-host check --precompile`; [`precompiled`]).
    write_artefacts: bool,
}

/// When set in the environment, the engine writes `/tmp/perf-PID.map`, so
/// that `perf report` names plugin functions instead of `[unknown]` JIT code.
pub const PERFMAP_ENV: &str = "TENSORGATE_WASM_PERFMAP";

/// Granularity of plugin call budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

impl PluginEngine {
    /// Creates the engine and starts its epoch ticker thread. Compiled
    /// plugins are cached in `cache` (when given), keyed by the component's
    /// SHA-256 and the engine's compatibility hash, so a restart or a reload
    /// of an unchanged plugin skips compilation.
    pub fn new(cache: Option<PathBuf>) -> Result<Self, PluginLoadError> {
        let engine_err = |e: String| PluginLoadError::Engine(e);
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if std::env::var_os(PERFMAP_ENV).is_some() {
            // Names the JIT code of plugins for `perf` (/tmp/perf-PID.map).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| engine_err(format!("{e:#}")))?;
        let weak = engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        }).map_err(|e| engine_err(e.to_string()))?;
        let linker = Arc::new(Self::linker(&engine).map_err(|e| engine_err(format!("{e:#}")))?);
        Ok(PluginEngine { engine, linker, cache, write_artefacts: false })
    }

    /// All host imports, wired in one place.
    fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = Linker::new(engine);
        Bindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        wasi::add_to_linker(&mut linker)?;
        Ok(linker)
    }

    /// This engine, writing the precompiled artefact (`plugin.cwasm`) into
    /// each bundle it loads that lacks a valid one ([`precompiled`]).
    pub fn writing_artefacts(mut self, on: bool) -> Self {
        self.write_artefacts = on;
        self
    }

    /// Compiles and links the component at `path` for application `app`, and
    /// returns a pool of its instances. The bundle's precompiled artefact
    /// beside `path` is used when it verifies ([`precompiled`]), else the
    /// compile cache, else the component is compiled.
    pub fn load(
        &self,
        app: &str,
        path: &std::path::Path,
        manifest: &tensorgate_server::manifest::Manifest,
        call_timeout: Duration,
        memory_limit: usize,
    ) -> Result<PluginPool, PluginLoadError> {
        let err = |e: wasmtime::Error| PluginLoadError::Compile {
            path: path.display().to_string(),
            reason: format!("{e:#}"),
        };
        let bytes = std::fs::read(path).map_err(|e| PluginLoadError::Compile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let (component, source) = self.compiled(path, &bytes, self.write_artefacts).map_err(err)?;
        let from_cache = source != precompiled::Source::Compiled;
        contract(&self.engine, &component).map_err(|found| PluginLoadError::Contract { path: path.display().to_string(), found })?;
        // A component that imports WASI carries a language runtime (wasi.rs).
        let uses_wasi = component.component_type().imports(&self.engine).any(|(name, _)| name.starts_with("wasi:"));
        let pre = self.linker.instantiate_pre(&component).map_err(err)?;
        let pre = BindingsPre::new(pre).map_err(err)?;
        let app: Arc<str> = Arc::from(app);
        let manifest_plugin = &manifest.plugin;
        let manifest = Arc::new(convert::plugin_manifest(manifest));
        let log_totals = Arc::new(LogTotals::default());
        let totals = log_totals.clone();
        let caps = TensorCaps {
            max_tensors: manifest_plugin.max_tensors.unwrap_or(DEFAULT_MAX_TENSORS),
            max_bytes: manifest_plugin.max_tensor_mb.map(|mb| mb.saturating_mul(1 << 20)).unwrap_or(DEFAULT_MAX_TENSOR_BYTES),
        };
        let new_state = Box::new(move || HostState {
            app: app.clone(),
            manifest: manifest.clone(),
            limits: Limiter::new(memory_limit),
            tensors: tensors::TensorTable::new(caps),
            logged: 0,
            suppressed: 0,
            last_error: None,
            log_totals: totals.clone(),
            wasi: wasi::Wasi::new(),
        });
        let max_items = manifest_plugin.max_items_per_call.unwrap_or(DEFAULT_MAX_ITEMS_PER_CALL);
        Ok(PluginPool::new(self.engine.clone(), pre, new_state, call_timeout, from_cache, uses_wasi, log_totals, max_items))
    }

    /// The compiled component for `bytes` and its serialized form, from the
    /// cache when present and valid (a stale or corrupt entry is recompiled
    /// and replaced); the flag says whether compilation was skipped.
    fn cached_compile(&self, dir: &Path, bytes: &[u8]) -> wasmtime::Result<(Component, Vec<u8>, bool)> {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut compat);
        let key = format!("{}-{:016x}", hex::encode(Sha256::digest(bytes)), compat.finish());
        let file = dir.join(format!("{key}.cwasm"));
        // Read into memory rather than `deserialize_file`: a mapped file that
        // someone truncates while the plugin is loaded would crash the host
        // (SIGBUS); a copy in memory cannot change under us.
        if let Ok(cached) = std::fs::read(&file) {
            // SAFETY: the cache directory is the host's own state directory and
            // holds only files this function wrote with `precompile_component`;
            // wasmtime still checks the header and the engine compatibility.
            match unsafe { Component::deserialize(&self.engine, &cached) } {
                Ok(c) => return Ok((c, cached, true)),
                Err(e) => tracing::warn!(file = %file.display(), "discarding unusable compiled plugin: {e:#}"),
            }
        }
        let compiled = self.engine.precompile_component(bytes)?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{key}.tmp{}-{n}", std::process::id()));
        let write = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &compiled))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = write {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %dir.display(), "cannot cache the compiled plugin: {e}");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled)? };
        Ok((component, compiled, false))
    }
}

impl HostState {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limits
    }
}

/// Checks that `component` exports this host's plugin interface; the error
/// names the contract it targets instead (read from its export's version).
fn contract(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let want = CONTRACT.replacen("tensorgate:plugin@", "tensorgate:plugin/plugin@", 1);
    if names.iter().any(|n| *n == want) {
        return Ok(());
    }
    match names.iter().find_map(|n| n.strip_prefix("tensorgate:plugin/plugin@")) {
        Some(version) => Err(format!("tensorgate:plugin@{version}")),
        None => Err(format!("no tensorgate plugin contract (it exports {})", if names.is_empty() { "nothing".to_string() } else { names.join(", ") })),
    }
}
