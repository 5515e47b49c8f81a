//! The model runner: dedicated threads per loaded model (one per model
//! instance, `[model] instances`), each owning its own copy of the
//! TorchScript module on the model's device, run forwards under `no_grad`
//! and answer over a channel. Nothing is shared between models.

pub mod batch;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tch::{CModule, Device, IValue};
use tokio::sync::oneshot;

use crate::tensor::{self, Tensor, TensorError};

pub use batch::BatchPolicy;

/// Where a model should run, as written in config and manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first CUDA device when libtorch sees one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("device `{s}` is not one of auto, cpu, cuda:N")),
        }
    }
}

impl DeviceSpec {
    /// The libtorch device to use; `cuda:N` fails when that device is absent.
    pub fn resolve(self) -> Result<Device, ModelError> {
        match self {
            DeviceSpec::Auto => Ok(Device::cuda_if_available()),
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                let count = tch::Cuda::device_count() as usize;
                if n < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(ModelError::Device(format!(
                        "cuda:{n} requested but libtorch sees {count} CUDA device(s) \
                         (a host built without the `cuda` feature sees none)"
                    )))
                }
            }
        }
    }
}

/// Shows a device as `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The TorchScript file could not be loaded.
    #[error("loading TorchScript model {path}: {reason}")]
    Load {
        /// File.
        path: String,
        /// libtorch's message.
        reason: String,
    },
    /// The requested device is not available.
    #[error("{0}")]
    Device(String),
    /// An input or output tensor was unusable.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The forward pass failed.
    #[error("forward failed: {0}")]
    Forward(String),
    /// The model returned something other than tensors.
    #[error("model output must be a tensor or a tuple/list/dict of tensors, got {0}")]
    Output(String),
    /// The executor thread is gone (the model was unloaded).
    #[error("model executor stopped")]
    Stopped,
    /// The model's queue is full.
    #[error("model queue is full ({queued} items waiting, limit max_queue = {limit}); retry in ~{} ms", .retry_after.as_millis().max(1))]
    Busy {
        /// Items waiting.
        queued: usize,
        /// The limit.
        limit: usize,
        /// Estimated time for the queue to drain.
        retry_after: Duration,
    },
    /// The item's deadline passed while it waited for the executor.
    #[error("deadline passed while waiting for the model")]
    DeadlineExceeded,
}

struct Job {
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Forward, ModelError>>,
}

/// A finished forward pass.
pub struct Forward {
    /// Output tensors, flattened in order (tuples, lists, dict values).
    pub outputs: Vec<Tensor>,
    /// Time spent running the forward this item was part of (input copy,
    /// forward, output copy), excluding the wait for the executor.
    pub run_time: Duration,
}

/// Handle to a model's executor thread. Dropping the last handle stops the
/// thread and frees the model.
pub struct ModelExecutor {
    tx: mpsc::Sender<Job>,
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
}

impl ExecutorStats {
    fn ran(&self, rows: usize, took: Duration) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.busy_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Estimated time to run `rows` more rows, from the average so far.
    fn estimate(&self, rows: usize) -> Duration {
        let done = self.rows.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed) / done * rows as u64)
    }
}

impl ModelExecutor {
    /// Loads the TorchScript file at `path` on `device` in a new thread and
    /// waits until it is ready.
    pub fn load(
        name: &str,
        path: &Path,
        device: Device,
        policy: BatchPolicy,
        instances: usize,
    ) -> Result<Self, ModelError> {
        let (tx, rx) = mpsc::channel::<Job>();
        // The instances share one queue; whoever holds the lock forms the next
        // batch, then releases it while running its forward pass.
        let queue = Arc::new(Mutex::new((rx, VecDeque::new())));
        let stats = Arc::new(ExecutorStats::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Duration, ModelError>>(instances.max(1));
        for i in 0..instances.max(1) {
            let (queue, stats, ready_tx) = (queue.clone(), stats.clone(), ready_tx.clone());
            let model_name = name.to_string();
            let path_buf = path.to_path_buf();
            std::thread::Builder::new()
                .name(format!("model-{name}-{i}"))
                .spawn(move || {
                    let _no_grad = tch::no_grad_guard();
                    let start = Instant::now();
                    let module = match CModule::load_on_device(&path_buf, device) {
                        Ok(mut m) => {
                            m.set_eval();
                            m
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(ModelError::Load {
                                path: path_buf.display().to_string(),
                                reason: e.to_string(),
                            }));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(start.elapsed()));
                    loop {
                        let batch = {
                            let mut guard = queue.lock().unwrap_or_else(|p| p.into_inner());
                            let (rx, held) = &mut *guard;
                            next_batch(rx, held, policy, &stats)
                        };
                        let Some(batch) = batch else { break };
                        let rows = run_batch(&module, device, batch, &stats);
                        crate::metrics::forward(&model_name, rows, stats.queued.load(Ordering::Relaxed));
                    }
                })
                .map_err(|e| ModelError::Load { path: path.display().to_string(), reason: e.to_string() })?;
        }
        let mut load_time = Duration::ZERO;
        for _ in 0..instances.max(1) {
            load_time = load_time.max(ready_rx.recv().map_err(|_| ModelError::Stopped)??);
        }
        Ok(ModelExecutor { tx, device, load_time, stats, max_queue: policy.max_queue.max(1) })
    }

    /// Runs one forward pass on `inputs` (CPU tensors, batch dimension first).
    /// Fails at once with `Busy` when `max_queue` items are already waiting,
    /// and with `DeadlineExceeded` if `deadline` passes before it is run.
    pub async fn forward(&self, inputs: Vec<Tensor>, deadline: Option<Instant>) -> Result<Forward, ModelError> {
        let queued = self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queue {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::Busy { queued, limit: self.max_queue, retry_after: self.stats.estimate(queued) });
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { inputs, deadline, reply }).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ModelError::Stopped);
        }
        rx.await.map_err(|_| ModelError::Stopped)?
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

/// How long an idle executor polls for the next job before sleeping: a job
/// arriving within this window skips a thread wake-up (tens of µs).
const SPIN: Duration = Duration::from_micros(50);

/// The next job, polling briefly before blocking; `None` when all handles are gone.
fn next_job(rx: &mpsc::Receiver<Job>) -> Option<Job> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// The next group of compatible jobs: the oldest held or queued job, plus
/// those queued behind it (or arriving within `max_delay`) up to `max_batch`
/// rows. A job that does not fit is held for the next batch, in order.
fn next_batch(
    rx: &mpsc::Receiver<Job>,
    held: &mut VecDeque<Job>,
    policy: BatchPolicy,
    stats: &ExecutorStats,
) -> Option<Vec<Job>> {
    // Every job taken off the channel leaves the queue count; expired ones are answered here.
    let live = |job: Job| -> Option<Job> {
        stats.queued.fetch_sub(1, Ordering::AcqRel);
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = job.reply.send(Err(ModelError::DeadlineExceeded));
            return None;
        }
        Some(job)
    };
    let first = loop {
        match held.pop_front() {
            Some(job) => break job,
            None => {
                if let Some(job) = live(next_job(rx)?) {
                    break job;
                }
            }
        }
    };
    let mut rows = batch::rows(&first.inputs);
    let mut jobs = vec![first];
    let deadline = Instant::now() + policy.max_delay;
    while rows < policy.max_batch {
        let next = match held.pop_front() {
            Some(job) => job,
            None => match rx.try_recv() {
                Ok(job) => match live(job) {
                    Some(job) => job,
                    None => continue,
                },
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(job) => match live(job) {
                            Some(job) => job,
                            None => continue,
                        },
                        Err(_) => break,
                    }
                }
            },
        };
        let n = batch::rows(&next.inputs);
        if rows + n > policy.max_batch || !batch::compatible(&jobs[0].inputs, &next.inputs) {
            held.push_front(next);
            break;
        }
        rows += n;
        jobs.push(next);
    }
    Some(jobs)
}

/// Runs a group of jobs as one forward and answers each with its rows. If the
/// batched forward fails, or its outputs lack the batch dimension, each job
/// runs alone so that only a bad item fails.
/// Returns the rows of the last forward pass.
fn run_batch(module: &CModule, device: Device, jobs: Vec<Job>, stats: &ExecutorStats) -> usize {
    if jobs.len() > 1 {
        let start = Instant::now();
        let inputs: Vec<&[Tensor]> = jobs.iter().map(|j| j.inputs.as_slice()).collect();
        let counts: Vec<usize> = inputs.iter().map(|i| batch::rows(i)).collect();
        let rows = counts.iter().sum();
        if let Some(parts) = run(module, device, &batch::concat(&inputs)).ok().and_then(|out| batch::split(out, &counts)) {
            let run_time = start.elapsed();
            stats.ran(rows, run_time);
            for (job, outputs) in jobs.into_iter().zip(parts) {
                let _ = job.reply.send(Ok(Forward { outputs, run_time }));
            }
            return rows;
        }
    }
    let mut last = 0;
    for job in jobs {
        let start = Instant::now();
        let rows = batch::rows(&job.inputs);
        let result = run(module, device, &job.inputs);
        let run_time = start.elapsed();
        stats.ran(rows, run_time);
        let result = result.map(|outputs| Forward { outputs, run_time });
        let _ = job.reply.send(result);
        last = rows;
    }
    last
}

fn run(module: &CModule, device: Device, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
    let fwd = |e: tch::TchError| ModelError::Forward(e.to_string());
    let ivalues = inputs
        .iter()
        .map(|t| Ok(IValue::Tensor(tensor::to_torch(t)?.f_to_device(device).map_err(fwd)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let out = module.forward_is(&ivalues).map_err(fwd)?;
    let mut tensors = Vec::new();
    flatten(out, &mut tensors)?;
    tensors.iter().map(|t| tensor::from_torch(t).map_err(ModelError::from)).collect()
}

/// Flattens a tensor, or nested tuples/lists/dicts of tensors, in order.
fn flatten(v: IValue, out: &mut Vec<tch::Tensor>) -> Result<(), ModelError> {
    match v {
        IValue::Tensor(t) => out.push(t),
        IValue::TensorList(ts) => out.extend(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => {
            for v in vs {
                flatten(v, out)?;
            }
        }
        IValue::GenericDict(kvs) => {
            for (_, v) in kvs {
                flatten(v, out)?;
            }
        }
        other => return Err(ModelError::Output(format!("{other:?}").chars().take(80).collect())),
    }
    Ok(())
}
