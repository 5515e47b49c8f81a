//! A pool of instances of one plugin. An instance serves one call at a time;
//! one that trapped is discarded and replaced from the pre-instantiated
//! template.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap};

use super::{wit, Bindings, BindingsPre, Group, HostState, Item, Output, PluginError, PluginInfo, Prepared, EPOCH_TICK};
use tensorgate_backend::Tensor;

/// Why a plugin call produced no result.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The plugin broke the contract (e.g. returned another number of
    /// results than it was given items).
    #[error("plugin broke the contract: {0}")]
    Contract(String),
}

impl CallError {
    /// Whether the call died as a whole (a trap, the budget, the memory
    /// cap) rather than answering: a group's items are then run again one
    /// by one, so that only the item that caused it fails.
    fn killed_the_call(&self) -> bool {
        matches!(self, CallError::Trapped(_) | CallError::Timeout(_) | CallError::MemoryLimit { .. })
    }
}

/// Items the host hands a plugin in one call at most, unless the manifest
/// says otherwise (`[plugin] max_items_per_call`).
pub const DEFAULT_MAX_ITEMS_PER_CALL: usize = 32;

/// A call longer than this counts as this long in [`PluginPool::average_call`]:
/// one call that was preempted (a busy machine stalls a 10 µs call for
/// milliseconds) must not make a fast plugin look slow for the calls after it.
pub const SAMPLE_MAX: Duration = Duration::from_micros(200);

/// One item's model outputs, as `postprocess` gets them.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// The model's outputs for this item's rows.
    pub outputs: Vec<Tensor>,
    /// The tensors its `preprocess` kept.
    pub kept: Vec<Tensor>,
    /// Its `preprocess` context.
    pub context: Vec<u8>,
}

impl Produced {
    /// Bytes of its tensors and context.
    pub fn bytes(&self) -> usize {
        self.outputs.iter().chain(&self.kept).map(|t| t.data.len()).sum::<usize>() + self.context.len()
    }
}

/// Largest group (bytes of its model outputs, kept tensors and contexts)
/// `postprocess` gets in one call: a group's tensors are copied so that a
/// call that dies can be run again item by item.
pub const GROUP_COPY_MAX: usize = 1 << 20;

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
    /// Moving average of call durations per item (ns), to decide where calls run.
    average_ns: AtomicU64,
    from_cache: bool,
    uses_wasi: bool,
    log_totals: std::sync::Arc<super::LogTotals>,
    /// Items waiting for a `preprocess` call, grouped.
    pre_group: Group<Item, Result<Prepared, CallError>>,
    /// Items waiting for a `postprocess` call, grouped.
    post_group: Group<Produced, Result<Output, CallError>>,
}

impl PluginPool {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        engine: Engine,
        pre: BindingsPre<HostState>,
        new_state: Box<dyn Fn() -> HostState + Send + Sync>,
        call_timeout: Duration,
        from_cache: bool,
        uses_wasi: bool,
        log_totals: std::sync::Arc<super::LogTotals>,
        max_items: usize,
    ) -> Self {
        // As many calls at once as there are cores to run them; items that
        // arrive while all run wait and go together into the next call.
        let lanes = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let max_items = max_items.max(1);
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
            pre_group: Group::new(lanes, max_items),
            post_group: Group::new(lanes, max_items),
        }
    }

    /// A new instance, configured with the manifest (`configure` runs once
    /// per instance, before its first item).
    fn instantiate(&self) -> Result<PluginInstance, CallError> {
        let mut store = Store::new(&self.engine, (self.new_state)());
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(self.budget_ticks(1));
        let bindings = self.pre.instantiate(&mut store).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let mut inst = PluginInstance { store, bindings };
        let manifest = inst.store.data().manifest.clone();
        let configured = self.call(&mut inst, 1, |b, s| b.tensorgate_plugin_plugin().call_configure(s, &manifest));
        match configured {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(e)) => Err(CallError::Configure(e)),
            Err(e) => Err(e),
        }
    }

    /// The budget of a call given `items` items, in epoch ticks (rounded
    /// up, plus one for the partial tick): the per-call timeout per item.
    fn budget_ticks(&self, items: usize) -> u64 {
        let per_item = self.call_timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1) as u64;
        per_item.saturating_mul(items.max(1) as u64) + 1
    }

    /// Runs `f` on an idle instance (creating one if none is idle) as a call
    /// given `items` items. An instance whose call trapped or timed out is
    /// dropped, not reused.
    fn with_instance<R>(
        &self,
        items: usize,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(inst) => inst,
            None => self.instantiate()?,
        };
        let result = self.call(&mut inst, items, f);
        // Kept unless it trapped, or its handle numbers are nearly used up.
        if result.is_ok() && !inst.store.data().tensors.exhausted() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(inst);
        }
        result
    }

    /// One call on `inst`, given `items` items, under the time budget, with
    /// the per-call state (logs, tensors) reset before and freed after.
    fn call<R>(
        &self,
        inst: &mut PluginInstance,
        items: usize,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        inst.store.set_epoch_deadline(self.budget_ticks(items));
        inst.store.data_mut().begin_call(items);
        let start = Instant::now();
        let result = f(&inst.bindings, &mut inst.store);
        self.record(start.elapsed() / items.max(1) as u32);
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
        self.with_instance(1, |b, s| b.tensorgate_plugin_plugin().call_describe(s))
    }

    /// Calls `preprocess` on one item; its payload is the plugin's to read
    /// during the call, and the tensors it returns are taken over.
    pub fn preprocess(&self, item: &Item) -> Result<Prepared, CallError> {
        let mut results = self.preprocess_batch(std::slice::from_ref(item));
        results.pop().unwrap_or_else(|| Err(CallError::Contract("no result".into())))
    }

    /// Calls `preprocess` once on `items` (one result per item, in order).
    /// If the call dies as a whole (a trap, its budget, the memory cap), the
    /// items are run again one per call, so that only the item that caused
    /// it fails.
    pub fn preprocess_batch(&self, items: &[Item]) -> Vec<Result<Prepared, CallError>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let called = self.with_instance(n, |b, s| {
            let table = &mut s.data_mut().tensors;
            let witems: Vec<wit::Item> = items
                .iter()
                .map(|item| wit::Item {
                    payload: table.add_payload(item.data.clone()),
                    content_type: item.content_type.clone(),
                    metadata: item.metadata.clone(),
                })
                .collect();
            let results = b.tensorgate_plugin_plugin().call_preprocess(&mut *s, &witems)?;
            let table = &mut s.data_mut().tensors;
            if results.len() != n {
                return Ok(Err(results.len()));
            }
            let take = |table: &mut super::tensors::TensorTable, hs: Vec<_>| {
                hs.into_iter().map(|h| table.take(h)).collect::<Result<Vec<Tensor>, PluginError>>()
            };
            Ok(Ok(results
                .into_iter()
                .map(|r| {
                    r.and_then(|p| {
                        table.crossed += p.context.len() as u64;
                        let inputs = take(table, p.inputs)?;
                        Ok(Prepared { inputs, keep: take(table, p.keep)?, context: p.context })
                    })
                    .map_err(CallError::Plugin)
                })
                .collect::<Vec<_>>()))
        });
        match called {
            Ok(Ok(results)) => results,
            Ok(Err(count)) => vec![Err(CallError::Contract(format!("preprocess returned {count} results for {n} items"))); n],
            Err(e) if n > 1 && e.killed_the_call() => items.iter().map(|item| self.preprocess(item)).collect(),
            Err(e) => vec![Err(e); n],
        }
    }

    /// Calls `postprocess` on one item's model outputs and the tensors its
    /// `preprocess` kept (handed over by handle, not copied).
    pub fn postprocess(&self, outputs: Vec<Tensor>, kept: Vec<Tensor>, context: &[u8]) -> Result<Output, CallError> {
        let mut results = self.postprocess_batch(vec![Produced { outputs, kept, context: context.to_vec() }]);
        results.pop().unwrap_or_else(|| Err(CallError::Contract("no result".into())))
    }

    /// Calls `postprocess` once on `items` (one result per item, in order);
    /// a call that dies as a whole is retried item by item, as
    /// [`PluginPool::preprocess_batch`] does. For that a group's tensors are
    /// copied first; a group of more than [`GROUP_COPY_MAX`] bytes is
    /// called item by item instead (its per-call cost is small beside
    /// its size, and the copy would not be).
    pub fn postprocess_batch(&self, items: Vec<Produced>) -> Vec<Result<Output, CallError>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        if n > 1 && items.iter().map(Produced::bytes).sum::<usize>() > GROUP_COPY_MAX {
            return items.into_iter().map(|p| self.postprocess(p.outputs, p.kept, &p.context)).collect();
        }
        let spare = (n > 1).then(|| items.clone());
        let called = self.with_instance(n, move |b, s| {
            let table = &mut s.data_mut().tensors;
            let witems: Vec<wit::Produced> = items
                .into_iter()
                .map(|p| {
                    table.crossed += p.context.len() as u64;
                    wit::Produced {
                        outputs: p.outputs.into_iter().map(|t| table.hand_in(t)).collect(),
                        kept: p.kept.into_iter().map(|t| table.hand_in(t)).collect(),
                        context: p.context,
                    }
                })
                .collect();
            let results = b.tensorgate_plugin_plugin().call_postprocess(&mut *s, &witems)?;
            let table = &mut s.data_mut().tensors;
            if results.len() != n {
                return Ok(Err(results.len()));
            }
            Ok(Ok(results.into_iter().map(|r| r.and_then(|o| output(table, o)).map_err(CallError::Plugin)).collect::<Vec<_>>()))
        });
        match called {
            Ok(Ok(results)) => results,
            Ok(Err(count)) => vec![Err(CallError::Contract(format!("postprocess returned {count} results for {n} items"))); n],
            Err(e) if e.killed_the_call() && spare.is_some() => {
                spare.into_iter().flatten().map(|p| self.postprocess(p.outputs, p.kept, &p.context)).collect()
            }
            Err(e) => vec![Err(e); n],
        }
    }

    /// `preprocess` of one item, in a call shared with the items waiting
    /// for this plugin version (see `group.rs`); `run` runs the call (the
    /// pipeline decides on which thread). Returns the item's result and its
    /// share of the call's time.
    pub async fn preprocess_grouped(
        &self,
        item: Item,
        run: impl FnOnce(&dyn Fn() -> Vec<Result<Prepared, CallError>>, usize) -> Vec<Result<Prepared, CallError>>,
    ) -> (Result<Prepared, CallError>, Duration) {
        self.pre_group
            .run(item, |items| {
                let bytes = items.iter().map(|i| i.data.len()).sum();
                run(&|| self.preprocess_batch(&items), bytes)
            })
            .await
    }

    /// `postprocess` of one item, grouped as [`PluginPool::preprocess_grouped`].
    pub async fn postprocess_grouped(
        &self,
        item: Produced,
        run: impl FnOnce(&dyn Fn() -> Vec<Result<Output, CallError>>, usize) -> Vec<Result<Output, CallError>>,
    ) -> (Result<Output, CallError>, Duration) {
        self.post_group
            .run(item, |items| {
                let bytes = items.iter().map(Produced::bytes).sum();
                let items = std::cell::Cell::new(Some(items));
                run(&|| self.postprocess_batch(items.take().unwrap_or_default()), bytes)
            })
            .await
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

    /// Recent average duration of a call to this plugin per item it was
    /// given (zero before the first), each counted as at most [`SAMPLE_MAX`].
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

/// One `output` of the plugin as the host's [`Output`]: an `npz` body is
/// written out here.
fn output(table: &mut super::tensors::TensorTable, o: wit::Output) -> Result<Output, PluginError> {
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
}
