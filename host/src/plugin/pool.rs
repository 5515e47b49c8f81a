//! A pool of instances of one plugin. An instance serves one call at a time;
//! one that trapped is discarded and replaced from the pre-instantiated
//! template.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap};

use super::{Bindings, BindingsPre, HostState, Item, Output, PluginError, PluginInfo, Prepared, EPOCH_TICK};
use crate::tensor::Tensor;

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
}

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
    log_totals: std::sync::Arc<super::LogTotals>,
}

impl PluginPool {
    pub(super) fn new(
        engine: Engine,
        pre: BindingsPre<HostState>,
        new_state: Box<dyn Fn() -> HostState + Send + Sync>,
        call_timeout: Duration,
        from_cache: bool,
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
            log_totals,
        }
    }

    fn instantiate(&self) -> Result<PluginInstance, CallError> {
        let mut store = Store::new(&self.engine, (self.new_state)());
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(self.budget_ticks());
        let bindings = self.pre.instantiate(&mut store).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(PluginInstance { store, bindings })
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
        inst.store.set_epoch_deadline(self.budget_ticks());
        inst.store.data_mut().begin_call();
        let start = Instant::now();
        let result = f(&inst.bindings, &mut inst.store);
        self.record(start.elapsed());
        let refused = inst.store.data_mut().limits.take_refused();
        let last_error = inst.store.data_mut().end_call();
        match result {
            Ok(r) => {
                // A refused growth the guest survived (it handled the failure) is fine.
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
                Ok(r)
            }
            // The instance is dropped here: the next call gets a fresh one.
            Err(e) => Err(match (e.downcast_ref::<Trap>(), refused) {
                (Some(Trap::Interrupt), _) => CallError::Timeout(self.call_timeout),
                (_, Some((asked, limit))) => CallError::MemoryLimit { asked, limit },
                _ => CallError::Trapped(match last_error {
                    // The guest's own last words (the SDK logs a panic's message).
                    Some(said) => format!("{} ({})", said.replace('\n', " "), e.root_cause()),
                    None => format!("{e:#}"),
                }),
            }),
        }
    }

    /// Calls `describe`.
    pub fn describe(&self) -> Result<PluginInfo, CallError> {
        self.with_instance(|b, s| b.tensorgate_plugin_plugin().call_describe(s))
    }

    /// Calls `preprocess` on one item.
    pub fn preprocess(&self, item: &Item) -> Result<Prepared, CallError> {
        let prepared = self
            .with_instance(|b, s| b.tensorgate_plugin_plugin().call_preprocess(s, item))?
            .map_err(CallError::Plugin)?;
        Ok(Prepared { inputs: prepared.inputs.into_iter().map(Tensor::from).collect(), context: prepared.context })
    }

    /// Calls `postprocess` on one item's model outputs (moved across the
    /// boundary, not copied).
    pub fn postprocess(&self, outputs: Vec<Tensor>, context: &[u8]) -> Result<Output, CallError> {
        let outputs: Vec<super::wit::Tensor> = outputs.into_iter().map(Into::into).collect();
        self.with_instance(|b, s| b.tensorgate_plugin_plugin().call_postprocess(s, &outputs, context))?
            .map_err(CallError::Plugin)
    }

    fn record(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.average_ns.load(Ordering::Relaxed);
        // Exponential moving average, weight 1/8; a racing update just loses one sample.
        let new = if old == 0 { ns } else { old - old / 8 + ns / 8 };
        self.average_ns.store(new, Ordering::Relaxed);
    }

    /// Recent average duration of a call to this plugin (zero before the first).
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
