//! A pool of instances of one plugin. An instance serves one call at a time;
//! one that trapped is discarded and replaced from the pre-instantiated
//! template.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap};

use super::{wit, Bindings, BindingsPre, HostState, Item, Output, PluginError, PluginInfo, Prepared, EPOCH_TICK};
use tensorgate_backend::Tensor;

/// Why a plugin call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned its own error for this item.
    #[error("plugin error [{}]: {}", .0.code, .0.message)]
    Plugin(PluginError),
    /// The plugin trapped (panic, unreachable, out-of-bounds access).
    #[error("plugin trapped: {0}")]
    Trapped(String),
    /// The call ran past its time budget.
    #[error("plugin timeout: call exceeded its budget of {0:?}")]
    Timeout(Duration),
    /// The instance asked for more linear memory than its cap, and trapped.
    #[error("plugin memory limit: instance asked for {asked} bytes of linear memory, cap is {limit} bytes")]
    MemoryLimit {
        /// Bytes asked for.
        asked: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin could not be instantiated.
    #[error("plugin instantiation failed: {0}")]
    Instantiate(String),
    /// The plugin's `configure` refused the manifest.
    #[error("plugin refused its manifest [{}]: {}", .0.code, .0.message)]
    Configure(PluginError),
}

/// A call longer than this counts as this long in [`PluginPool::average_call`]:
/// one call that was preempted (a busy machine stalls a 10 µs call for
/// milliseconds) must not make a fast plugin look slow for the calls after it.
pub const SAMPLE_MAX: Duration = Duration::from_micros(200);

/// One live instance with its own store.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Bindings,
}

/// Instances of one plugin, created on demand and reused.
pub struct PluginPool {
    engine: Engine,
    pre: BindingsPre<HostState>,
    new_state: Box<dyn Fn() -> HostState + Send + Sync>,
    idle: Mutex<Vec<PluginInstance>>,
    call_timeout: Duration,
    /// Moving average of call durations (ns), to decide where calls run.
    average_ns: AtomicU64,
    from_cache: bool,
    uses_wasi: bool,
    log_totals: std::sync::Arc<super::LogTotals>,
}

impl PluginPool {
    pub(super) fn new(
        engine: Engine,
        pre: BindingsPre<HostState>,
        new_state: Box<dyn Fn() -> HostState + Send + Sync>,
        call_timeout: Duration,
        from_cache: bool,
        uses_wasi: bool,
        log_totals: std::sync::Arc<super::LogTotals>,
    ) -> Self {
        PluginPool {
            engine,
            pre,
            new_state,
            idle: Mutex::new(Vec::new()),
            call_timeout,
            average_ns: AtomicU64::new(0),
            from_cache,
            uses_wasi,
            log_totals,
        }
    }

    /// A new instance, configured with the manifest (`configure` runs once
    /// per instance, before its first item).
    fn instantiate(&self) -> Result<PluginInstance, CallError> {
        let mut store = Store::new(&self.engine, (self.new_state)());
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(self.budget_ticks());
        let bindings = self.pre.instantiate(&mut store).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let mut inst = PluginInstance { store, bindings };
        let manifest = inst.store.data().manifest.clone();
        let configured = self.call(&mut inst, |b, s| b.tensorgate_plugin_plugin().call_configure(s, &manifest));
        match configured {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(e)) => Err(CallError::Configure(e)),
            Err(e) => Err(e),
        }
    }

    /// The call budget in epoch ticks (rounded up, plus one for the partial tick).
    fn budget_ticks(&self) -> u64 {
        (self.call_timeout.as_micros().div_ceil(EPOCH_TICK.as_micros())).max(1) as u64 + 1
    }

    /// Runs `f` on an idle instance (creating one if none is idle). An
    /// instance whose call trapped or timed out is dropped, not reused.
    fn with_instance<R>(
        &self,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(inst) => inst,
            None => self.instantiate()?,
        };
        let result = self.call(&mut inst, f);
        // Kept unless it trapped, or its handle numbers are nearly used up.
        if result.is_ok() && !inst.store.data().tensors.exhausted() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
        }
        result
    }

    /// One call on `inst` under the time budget, with the per-call state
    /// (logs, tensors) reset before and freed after.
    fn call<R>(
        &self,
        inst: &mut PluginInstance,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        inst.store.set_epoch_deadline(self.budget_ticks());
        inst.store.data_mut().begin_call();
        let start = Instant::now();
        let result = f(&inst.bindings, &mut inst.store);
        self.record(start.elapsed());
        let refused = inst.store.data_mut().limits.take_refused();
        let last_error = inst.store.data_mut().end_call();
        // A refused growth the guest survived (it handled the failure) is fine.
        result.map_err(|e| match (e.downcast_ref::<Trap>(), refused) {
            (Some(Trap::Interrupt), _) => CallError::Timeout(self.call_timeout),
            (_, Some((asked, limit))) => CallError::MemoryLimit { asked, limit },
            _ => CallError::Trapped(match last_error {
                // The guest's own last words (the SDK logs a panic's message).
                Some(said) => format!("{} ({})", said.replace('\n', " "), e.root_cause()),
                None => trap_message(&e),
            }),
        })
    }

    /// Calls `describe`.
    pub fn describe(&self) -> Result<PluginInfo, CallError> {
        self.with_instance(|b, s| b.tensorgate_plugin_plugin().call_describe(s))
    }

    /// Calls `preprocess` on one item; its payload is the plugin's to read
    /// during the call, and the tensors it returns are taken over.
    pub fn preprocess(&self, item: &Item) -> Result<Prepared, CallError> {
        self.with_instance(|b, s| {
            let payload = s.data_mut().tensors.set_payload(item.data.clone());
            let witem = wit::Item { payload, content_type: item.content_type.clone(), metadata: item.metadata.clone() };
            let prepared = b.tensorgate_plugin_plugin().call_preprocess(&mut *s, &witem)?;
            let table = &mut s.data_mut().tensors;
            Ok(prepared.and_then(|p| {
                table.crossed += p.context.len() as u64;
                let take = |table: &mut super::tensors::TensorTable, hs: Vec<_>| {
                    hs.into_iter().map(|h| table.take(h)).collect::<Result<Vec<Tensor>, PluginError>>()
                };
                let inputs = take(table, p.inputs)?;
                Ok(Prepared { inputs, keep: take(table, p.keep)?, context: p.context })
            }))
        })?
        .map_err(CallError::Plugin)
    }

    /// Calls `postprocess` on one item's model outputs and the tensors its
    /// `preprocess` kept (handed over by handle, not copied).
    pub fn postprocess(&self, outputs: Vec<Tensor>, kept: Vec<Tensor>, context: &[u8]) -> Result<Output, CallError> {
        self.with_instance(|b, s| {
            let table = &mut s.data_mut().tensors;
            table.crossed += context.len() as u64;
            let outputs: Vec<_> = outputs.into_iter().map(|t| table.hand_in(t)).collect();
            let kept: Vec<_> = kept.into_iter().map(|t| table.hand_in(t)).collect();
            let output = b.tensorgate_plugin_plugin().call_postprocess(&mut *s, &outputs, &kept, context)?;
            let table = &mut s.data_mut().tensors;
            Ok(output.and_then(|o| {
                let (data, npz) = match o.body {
                    wit::Body::Bytes(data) => {
                        table.crossed += data.len() as u64;
                        (data, false)
                    }
                    wit::Body::Npz(entries) => {
                        let entries = entries
                            .into_iter()
                            .map(|(name, h)| Ok((name, table.take(h)?)))
                            .collect::<Result<Vec<_>, PluginError>>()?;
                        (super::tensors::write_npz(&entries)?, true)
                    }
                };
                let content_type = if npz && o.content_type.is_empty() { "application/x-npz".to_string() } else { o.content_type };
                Ok(Output { data, content_type, metadata: o.metadata })
            }))
        })?
        .map_err(CallError::Plugin)
    }

    /// Bytes that crossed the component boundary in all calls so far (see
    /// [`super::LogTotals::crossed`]).
    pub fn crossed_bytes(&self) -> u64 {
        self.log_totals.crossed.load(Ordering::Relaxed)
    }

    fn record(&self, took: Duration) {
        let ns = took.min(SAMPLE_MAX).as_nanos() as u64;
        let old = self.average_ns.load(Ordering::Relaxed);
        // Exponential moving average, weight 1/8; a racing update just loses one sample.
        let new = if old == 0 { ns } else { old - old / 8 + ns / 8 };
        self.average_ns.store(new, Ordering::Relaxed);
    }

    /// Recent average duration of a call to this plugin (zero before the
    /// first), each call counted as at most [`SAMPLE_MAX`].
    pub fn average_call(&self) -> Duration {
        Duration::from_nanos(self.average_ns.load(Ordering::Relaxed))
    }

    /// Log messages of all calls so far: accepted and dropped.
    pub fn logs(&self) -> &super::LogTotals {
        &self.log_totals
    }

    /// Whether the compiled component came from the cache (no compilation).
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Whether the component imports WASI (a language runtime such as
    /// CPython): its calls must not run on an async worker, since
    /// wasmtime-wasi blocks on the runtime for stream operations.
    pub fn uses_wasi(&self) -> bool {
        self.uses_wasi
    }

    /// Creates instances until `n` are idle (pre-warming the pool).
    pub fn warm(&self, n: usize) -> Result<(), CallError> {
        while self.idle_instances() < n {
            let inst = self.instantiate()?;
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
        }
        Ok(())
    }

    /// Instances currently idle in the pool.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A trap as one line: its cause and the innermost guest function it
/// happened in (the full wasm backtrace of a language runtime runs to
/// dozens of frames; it goes to the debug log).
fn trap_message(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    let Some(trace) = e.downcast_ref::<wasmtime::WasmBacktrace>() else { return format!("{e:#}") };
    tracing::debug!(target: "plugin", "trap backtrace: {trace}");
    match trace.frames().first().and_then(|f| f.func_name()) {
        Some(func) => format!("{cause} (in {func})"),
        None => cause,
    }
}
