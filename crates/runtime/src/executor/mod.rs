//! The model runner: dedicated threads per loaded model (one per model
//! instance, `[model] instances`), each owning its own instance of the
//! model on the model's device (loaded by the model's backend, behind the
//! narrow [`tensorgate_backend::Backend`] trait), run batches formed by the
//! batcher ([`batch`]) and answer over a channel. Nothing is shared between
//! models.

pub mod batch;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tensorgate_backend::{Backend, Device, Instance, Tensor};
use tokio::sync::oneshot;

pub use batch::{BatchJob, BatchPolicy, Batcher};
pub use tensorgate_backend::ModelError;

/// One instance of the model: its thread runs batches on it, and
/// [`ModelExecutor::try_inline`] borrows an idle one.
type Slot = Arc<Mutex<Option<Box<dyn Instance>>>>;

/// Longest forward (estimated from the model's forwards so far) that may
/// run on the caller's thread.
pub const INLINE_FORWARD_MAX: Duration = Duration::from_micros(200);
/// ... and only after the model has had no forward for this long: under
/// load forwards follow each other closely, and items are batched instead
/// (a request alone on the host says little: at concurrency 64 most
/// requests are on the wire, not on the host, at any instant).
pub const INLINE_IDLE_MIN: Duration = Duration::from_micros(100);

struct Job {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<Result<Forward, ModelError>>,
}

impl BatchJob for Job {
    fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }

    /// The item's future was dropped (cancelled, or its deadline passed).
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A finished forward pass.
pub struct Forward {
    /// Output tensors, flattened in order (tuples, lists, dict values).
    pub outputs: Vec<Tensor>,
    /// Time spent running the forward this item was part of (input copy,
    /// forward, output copy), excluding the wait for the executor.
    pub run_time: Duration,
}

/// Handle to a model's executor threads. Dropping it closes the queue and
/// waits for the threads to finish their forward in progress and free the
/// model: nothing of libtorch outlives the handle (a process that exits
/// while a forward runs would crash in libtorch's teardown).
pub struct ModelExecutor {
    tx: Option<mpsc::Sender<Job>>,
    /// Each instance's module, for [`Self::try_inline`].
    slots: Vec<Slot>,
    name: String,
    /// Intra-op threads of every instance thread.
    intra_op: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
    backend: Arc<dyn Backend>,
    device: Device,
    load_time: Duration,
    stats: Arc<ExecutorStats>,
    max_queue: usize,
}

/// Counters of an executor, for status and metrics.
#[derive(Debug, Default)]
pub struct ExecutorStats {
    /// Forward passes run.
    pub forwards: AtomicU64,
    /// Rows run through them (forward_rows / forwards = mean batch size).
    pub rows: AtomicU64,
    /// Time spent in forward passes (ns).
    pub busy_ns: AtomicU64,
    /// Items queued for the executor and not yet taken.
    pub queued: AtomicUsize,
    /// Forward passes run by each model instance (`[model] instances`).
    pub instance_forwards: Vec<AtomicU64>,
    /// libtorch's intra-op thread count as the last forward pass saw it on
    /// its executor thread (`[model] threads`; 0 before the first forward).
    pub intra_op_threads: AtomicUsize,
    /// Items on their way to this model: being preprocessed, not queued
    /// yet ([`ModelExecutor::coming`]); a batch that is not full waits a
    /// little for them.
    pub coming: AtomicUsize,
    /// Forward passes run on the caller's thread ([`ModelExecutor::forward`]'s `may_inline`).
    pub inlined: AtomicU64,
    /// When the last forward pass ended (ns since [`epoch`]).
    last_done_ns: AtomicU64,
}

/// The process's reference instant for the executors' timestamps.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ExecutorStats {
    fn ran(&self, instance: usize, rows: usize, took: Duration) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.instance_forwards.get(instance) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.busy_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.last_done_ns.store(epoch().elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long since the last forward pass ended.
    fn idle_for(&self) -> Duration {
        let since = epoch().elapsed().as_nanos() as u64;
        Duration::from_nanos(since.saturating_sub(self.last_done_ns.load(Ordering::Relaxed)))
    }

    /// Zeroes the counters of forwards run (kept: the queue), so that the
    /// load checks' forwards are not counted as served.
    pub fn reset(&self) {
        for n in [&self.forwards, &self.rows, &self.busy_ns, &self.inlined].into_iter().chain(&self.instance_forwards) {
            n.store(0, Ordering::Relaxed);
        }
    }

    /// Estimated time to run `rows` more rows, from the average so far.
    fn estimate(&self, rows: usize) -> Duration {
        let done = self.rows.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed) / done * rows as u64)
    }
}

impl ModelExecutor {
    /// Loads the model file at `path` with `backend` on `device`, one
    /// instance per thread, and waits until they are ready; each of its
    /// `instances` threads runs with `threads` intra-op threads (0: the
    /// backend's default).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        name: &str,
        path: &Path,
        backend: Arc<dyn Backend>,
        device: Device,
        policy: BatchPolicy,
        instances: usize,
        threads: usize,
    ) -> Result<Self, ModelError> {
        // Every executor thread sets its own count: libtorch's is per thread
        // (OpenMP's), but a thread that never sets one inherits the last
        // count set anywhere in the process.
        let intra_op = if threads > 0 { threads } else { backend.default_threads() };
        let (tx, rx) = mpsc::channel::<Job>();
        // The instances share one queue; whoever holds the lock forms the next
        // batch, then releases it while running its forward pass.
        let queue = Arc::new(Mutex::new((rx, Batcher::new(policy))));
        let stats = Arc::new(ExecutorStats {
            instance_forwards: (0..instances.max(1)).map(|_| AtomicU64::new(0)).collect(),
            ..ExecutorStats::default()
        });
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Duration, ModelError>>(instances.max(1));
        let mut threads = Vec::with_capacity(instances.max(1));
        let slots: Vec<Slot> = (0..instances.max(1)).map(|_| Arc::new(Mutex::new(None))).collect();
        for i in 0..instances.max(1) {
            let (queue, stats, ready_tx) = (queue.clone(), stats.clone(), ready_tx.clone());
            let slot = slots[i].clone();
            let model_name = name.to_string();
            let path_buf = path.to_path_buf();
            let format = backend.format();
            let backend = backend.clone();
            let thread = std::thread::Builder::new()
                .name(format!("model-{name}-{i}"))
                .spawn(move || {
                    backend.init_thread(intra_op);
                    let start = Instant::now();
                    let instance = match backend.load(&path_buf, device) {
                        Ok(instance) => instance,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(instance);
                    let _ = ready_tx.send(Ok(start.elapsed()));
                    loop {
                        let batch = {
                            let mut guard = queue.lock().unwrap_or_else(|p| p.into_inner());
                            let (rx, batcher) = &mut *guard;
                            batcher.next_batch(
                                rx,
                                || {
                                    stats.queued.fetch_sub(1, Ordering::AcqRel);
                                },
                                || stats.coming.load(Ordering::Acquire),
                            )
                        };
                        let Some(batch) = batch else { break };
                        // Recorded before the replies go, so that a forward is counted
                        // by whoever its caller sees afterwards (a warm-up finished
                        // before the metrics recorder is installed is never counted).
                        let record = |rows| tensorgate_server::metrics::forward(&model_name, rows, stats.queued.load(Ordering::Relaxed));
                        // Held for the batch: an inline forward takes only an idle instance.
                        let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(instance) = held.as_mut() else { break };
                        stats.intra_op_threads.store(backend.thread_threads(), Ordering::Relaxed);
                        run_batch(instance.as_mut(), batch, &stats, i, record);
                    }
                    // The module is freed on its own thread.
                    drop(slot.lock().unwrap_or_else(|p| p.into_inner()).take());
                })
                .map_err(|e| ModelError::Load { format, path: path.display().to_string(), reason: e.to_string() })?;
            threads.push(thread);
        }
        // From here on, an early return drops the executor: the threads are stopped and joined.
        let mut executor = ModelExecutor { tx: Some(tx), slots, name: name.to_string(), intra_op, threads, backend, device, load_time: Duration::ZERO, stats, max_queue: policy.max_queue.max(1) };
        for _ in 0..instances.max(1) {
            executor.load_time = executor.load_time.max(ready_rx.recv().map_err(|_| ModelError::Stopped)??);
        }
        Ok(executor)
    }

    /// Announces an item on its way to this model (about to be
    /// preprocessed) until the returned guard is dropped or handed to
    /// [`ModelExecutor::forward`].
    pub fn coming(&self) -> Coming<'_> {
        self.stats.coming.fetch_add(1, Ordering::AcqRel);
        Coming(&self.stats.coming)
    }

    /// Runs one forward pass on `inputs` (host tensors, batch dimension
    /// first); `coming`, the item's announcement, ends as the job is
    /// queued. Fails at once with `Busy` when `max_queue` items are already
    /// waiting. Dropping the returned future before it resolves withdraws the
    /// job: the batcher drops it unrun.
    ///
    /// With `may_inline` (the caller's item is a lone item of the only
    /// request open on the host, so there is nothing to batch it with) a
    /// short forward runs right here instead, on an idle instance: see
    /// [`Self::try_inline`].
    pub async fn forward(&self, inputs: Vec<Tensor>, coming: Option<Coming<'_>>, may_inline: bool) -> Result<Forward, ModelError> {
        let queued = self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queue {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::Busy { queued, limit: self.max_queue, retry_after: self.stats.estimate(queued) });
        }
        if may_inline && queued == 0 {
            if let Some(result) = self.try_inline(&inputs) {
                drop(coming);
                return result;
            }
        }
        let (reply, rx) = oneshot::channel();
        // Ended before the job is sent: a batcher that takes this job must not
        // then wait for it as one still coming.
        drop(coming);
        if self.tx.as_ref().is_none_or(|tx| tx.send(Job { inputs, reply }).is_err()) {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::Stopped);
        }
        rx.await.map_err(|_| ModelError::Stopped)?
    }

    /// Runs `inputs` on this thread, on an idle instance, when that cannot
    /// cost batching or stall the caller's thread: the model is on the CPU
    /// with one intra-op thread, nothing is queued or on its way besides
    /// this item, it ran no forward for [`INLINE_IDLE_MIN`], and forwards so
    /// far took at most [`INLINE_FORWARD_MAX`] for this many rows. `None`:
    /// queue it. A request alone on the host then skips two thread
    /// hand-offs (to the executor thread and back), which on a small model
    /// cost more than its forward.
    fn try_inline(&self, inputs: &[Tensor]) -> Option<Result<Forward, ModelError>> {
        let rows = batch::rows(inputs);
        let ran = self.stats.rows.load(Ordering::Relaxed) > 0;
        if self.device != Device::Cpu
            || self.intra_op != 1
            || !ran
            || self.stats.coming.load(Ordering::Acquire) > 1
            || self.stats.idle_for() < INLINE_IDLE_MIN
            || self.stats.estimate(rows) > INLINE_FORWARD_MAX
        {
            return None;
        }
        let (index, mut held) = self.slots.iter().enumerate().find_map(|(i, s)| s.try_lock().ok().map(|g| (i, g)))?;
        let instance = held.as_mut()?;
        self.backend.init_thread(1);
        self.stats.queued.fetch_sub(1, Ordering::AcqRel);
        self.stats.inlined.fetch_add(1, Ordering::Relaxed);
        let record = |rows| tensorgate_server::metrics::forward(&self.name, rows, self.stats.queued.load(Ordering::Relaxed));
        Some(forward_one(instance.as_mut(), inputs, &self.stats, index, record))
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Forward and row counters.
    pub fn stats(&self) -> &ExecutorStats {
        &self.stats
    }

    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}

/// An item announced as on its way to a model ([`ModelExecutor::coming`]).
pub struct Coming<'a>(&'a AtomicUsize);

impl Drop for Coming<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ModelExecutor {
    fn drop(&mut self) {
        drop(self.tx.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs `jobs` as one forward pass and answers each with its rows. If the
/// batched forward fails, or its outputs lack the batch dimension, each job
/// runs alone so that only a bad item fails. `record(rows)` is called for
/// each pass before its replies go.
fn run_batch(instance: &mut dyn Instance, jobs: Vec<Job>, stats: &ExecutorStats, index: usize, record: impl Fn(usize)) {
    if jobs.len() > 1 {
        let start = Instant::now();
        let inputs: Vec<&[Tensor]> = jobs.iter().map(|j| j.inputs.as_slice()).collect();
        let rows = inputs.iter().map(|i| batch::rows(i)).sum();
        if let Ok(Some(parts)) = instance.run(&inputs).map(|p| p.filter(|p| p.len() == jobs.len())) {
            let run_time = start.elapsed();
            stats.ran(index, rows, run_time);
            record(rows);
            for (job, outputs) in jobs.into_iter().zip(parts) {
                let _ = job.reply.send(Ok(Forward { outputs, run_time }));
            }
            return;
        }
        instance.settle();
    }
    for job in jobs {
        let result = forward_one(instance, &job.inputs, stats, index, &record);
        let _ = job.reply.send(result);
    }
}

/// One item's forward pass alone, counted and recorded (by an executor
/// thread, or inline by [`ModelExecutor::try_inline`]).
fn forward_one(
    instance: &mut dyn Instance,
    inputs: &[Tensor],
    stats: &ExecutorStats,
    index: usize,
    record: impl Fn(usize),
) -> Result<Forward, ModelError> {
    let start = Instant::now();
    let rows = batch::rows(inputs);
    let result = instance.run(&[inputs]).and_then(|parts| {
        parts.and_then(|mut p| p.pop()).ok_or_else(|| ModelError::Output("no outputs for the item".into()))
    });
    if result.is_err() {
        instance.settle();
    }
    let run_time = start.elapsed();
    stats.ran(index, rows, run_time);
    record(rows);
    result.map(|outputs| Forward { outputs, run_time })
}
