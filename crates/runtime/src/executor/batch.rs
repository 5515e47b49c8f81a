//! The batcher, in one file: which queued jobs share one forward pass
//! ([`Batcher`], [`compatible`]). Their inputs are joined and the outputs
//! split back, row-exactly, by the model's backend
//! (`tensorgate_backend::Instance::run`).

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use tensorgate_server::manifest::{BatchPolicy, DEFAULT_MAX_QUEUE};
use tensorgate_backend::Tensor;

/// Rows an item's inputs contribute (its leading dimension).
pub fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().map(Tensor::rows).unwrap_or(1) as usize
}

/// A job the batcher can group with others.
pub trait BatchJob {
    /// The job's model inputs (batch dimension first).
    fn inputs(&self) -> &[Tensor];
    /// Whether whoever asked for this job no longer waits for it (its item
    /// was cancelled, e.g. because the request's deadline passed or its
    /// client went away): such a job is dropped unrun.
    fn abandoned(&self) -> bool;
}

/// Longest a batch that is not full waits for items already on their way
/// (being preprocessed: [`Batcher::next_batch`]'s `coming`), beyond
/// `max_delay`. A lone item never waits: nothing else is coming.
pub const COMING_WAIT_MAX: Duration = Duration::from_micros(300);

/// Groups jobs from a channel into batches under a [`BatchPolicy`]. A job
/// that does not fit the batch being formed (too many rows, or inputs of
/// another shape or dtype) is held back, in order, for the next one.
pub struct Batcher<J> {
    policy: BatchPolicy,
    held: VecDeque<J>,
}

impl<J: BatchJob> Batcher<J> {
    /// An empty batcher.
    pub fn new(policy: BatchPolicy) -> Self {
        Batcher { policy, held: VecDeque::new() }
    }

    /// Jobs held back for a later batch.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The next group of compatible jobs: the oldest held or queued job, plus
    /// those queued behind it (or arriving within `max_delay`) up to
    /// `max_batch` rows. While `coming()` says more items are on their way
    /// (being preprocessed), a batch that is not full waits for them, up to
    /// [`COMING_WAIT_MAX`]: under load, one forward for what is about to
    /// arrive instead of several small ones, and no wait for a lone item.
    /// `taken` is called once for each job taken off the channel (queue
    /// accounting); abandoned jobs are dropped here. Blocks until there is a
    /// job; `None` when the channel is closed and empty.
    pub fn next_batch(&mut self, rx: &mpsc::Receiver<J>, taken: impl Fn(), coming: impl Fn() -> usize) -> Option<Vec<J>> {
        let live = |job: J| -> Option<J> {
            taken();
            (!job.abandoned()).then_some(job)
        };
        let first = loop {
            match self.held.pop_front() {
                Some(job) if job.abandoned() => continue,
                Some(job) => break job,
                None => {
                    if let Some(job) = live(next_job(rx)?) {
                        break job;
                    }
                }
            }
        };
        let mut total = rows(first.inputs());
        let mut jobs = vec![first];
        let start = Instant::now();
        let until = start + self.policy.max_delay;
        let coming_until = until.max(start + COMING_WAIT_MAX);
        while total < self.policy.max_batch {
            let next = match self.held.pop_front() {
                Some(job) if job.abandoned() => continue,
                Some(job) => job,
                None => {
                    let got = match rx.try_recv() {
                        Ok(job) => Some(job),
                        Err(_) => {
                            let now = Instant::now();
                            let mut left = until.saturating_duration_since(now);
                            if left.is_zero() && coming() > 0 {
                                // Items on their way: wait a little for them, re-checking.
                                left = coming_until.saturating_duration_since(now).min(COMING_POLL);
                            }
                            if left.is_zero() {
                                break;
                            }
                            match rx.recv_timeout(left) {
                                Ok(job) => Some(job),
                                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < coming_until && coming() > 0 => continue,
                                Err(_) => None,
                            }
                        }
                    };
                    match got {
                        None => break,
                        Some(job) => match live(job) {
                            Some(job) => job,
                            None => continue,
                        },
                    }
                }
            };
            let n = rows(next.inputs());
            if total + n > self.policy.max_batch || !compatible(jobs[0].inputs(), next.inputs()) {
                self.held.push_front(next);
                break;
            }
            total += n;
            jobs.push(next);
        }
        Some(jobs)
    }
}

/// How often a batch waiting for coming items re-checks that some still are.
const COMING_POLL: Duration = Duration::from_micros(50);

/// The next job, blocking until there is one; `None` when all senders are
/// gone. An idle executor sleeps rather than spins: polling for the next job
/// took a core's time from the plugins and the transport (on 2 cores, 50 µs
/// of polling per forward cost more than the wake-up it sometimes saved).
fn next_job<J>(rx: &mpsc::Receiver<J>) -> Option<J> {
    rx.recv().ok()
}

/// Whether two items' inputs can be concatenated along the batch dimension.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.dtype == y.dtype && !x.shape.is_empty() && x.shape.get(1..) == y.shape.get(1..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorgate_backend::Dtype;

    fn t(rows: u64, cols: u64, start: u8) -> Tensor {
        let data: Vec<u8> = (0..rows * cols * 4).map(|i| start.wrapping_add(i as u8)).collect();
        Tensor { dtype: Dtype::F32, shape: vec![rows, cols], data: data.into() }
    }

    #[test]
    fn incompatible_shapes_and_dtypes() {
        assert!(compatible(&[t(1, 3, 0)], &[t(5, 3, 0)]));
        assert!(!compatible(&[t(1, 3, 0)], &[t(1, 4, 0)]));
        let mut d = t(1, 3, 0);
        d.dtype = Dtype::I32;
        assert!(!compatible(&[t(1, 3, 0)], &[d]));
        assert!(!compatible(&[t(1, 3, 0)], &[t(1, 3, 0), t(1, 3, 0)]));
        // A 0-dimensional tensor has no batch dimension: never batched (found by fuzzing).
        let scalar = Tensor { dtype: Dtype::F32, shape: vec![], data: vec![0; 4].into() };
        assert!(!compatible(&[scalar.clone()], &[scalar]));
    }

    /// A job with an id, `rows × cols` inputs, and an abandoned flag.
    struct Fake {
        id: u32,
        inputs: Vec<Tensor>,
        abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl BatchJob for Fake {
        fn inputs(&self) -> &[Tensor] {
            &self.inputs
        }
        fn abandoned(&self) -> bool {
            self.abandoned.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn fake(id: u32, rows: u64, cols: u64) -> Fake {
        Fake { id, inputs: vec![t(rows, cols, 0)], abandoned: Default::default() }
    }

    fn policy(max_batch: usize, max_delay: Duration) -> BatchPolicy {
        BatchPolicy { max_batch, max_delay, max_queue: 100 }
    }

    fn ids(batch: Option<Vec<Fake>>) -> Vec<u32> {
        batch.expect("a batch").iter().map(|j| j.id).collect()
    }

    #[test]
    fn batches_keep_arrival_order_and_respect_max_batch_rows() {
        let (tx, rx) = mpsc::channel();
        for (id, rows) in [(0, 1), (1, 2), (2, 1), (3, 3), (4, 1)] {
            tx.send(fake(id, rows, 3)).unwrap();
        }
        let taken = std::cell::Cell::new(0);
        let mut b = Batcher::new(policy(5, Duration::ZERO));
        // 1 + 2 + 1 = 4 rows; job 3 (3 rows) would make 7 > 5: held for the next batch.
        assert_eq!(ids(b.next_batch(&rx, || taken.set(taken.get() + 1), || 0)), vec![0, 1, 2]);
        assert_eq!(b.held(), 1);
        assert_eq!(ids(b.next_batch(&rx, || taken.set(taken.get() + 1), || 0)), vec![3, 4]);
        assert_eq!(taken.get(), 5, "every job taken off the channel is counted once");
        drop(tx);
        assert!(b.next_batch(&rx, || (), || 0).is_none(), "closed and empty");
    }

    #[test]
    fn incompatible_shapes_are_held_back_in_order() {
        let (tx, rx) = mpsc::channel();
        tx.send(fake(0, 1, 3)).unwrap();
        tx.send(fake(1, 1, 4)).unwrap(); // other inner shape
        tx.send(fake(2, 1, 3)).unwrap();
        let mut b = Batcher::new(policy(32, Duration::ZERO));
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![0]);
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![1]);
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![2]);
        let mut off = Batcher::new(BatchPolicy::OFF);
        for id in 3..6 {
            tx.send(fake(id, 1, 3)).unwrap();
        }
        for id in 3..6 {
            assert_eq!(ids(off.next_batch(&rx, || (), || 0)), vec![id], "max_batch 1: one job per forward");
        }
    }

    #[test]
    fn max_delay_waits_for_late_jobs_and_zero_does_not() {
        let (tx, rx) = mpsc::channel();
        tx.send(fake(0, 1, 3)).unwrap();
        let late = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            late.send(fake(1, 1, 3)).unwrap();
        });
        let mut b = Batcher::new(policy(2, Duration::from_secs(5)));
        let start = Instant::now();
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![0, 1], "the late job joins within max_delay");
        assert!(start.elapsed() < Duration::from_secs(5), "a full batch stops waiting");
        sender.join().unwrap();
        tx.send(fake(9, 1, 3)).unwrap();
        let mut b = Batcher::new(policy(8, Duration::from_millis(40)));
        let start = Instant::now();
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![9]);
        assert!(start.elapsed() >= Duration::from_millis(40), "a batch that is not full waits out max_delay");
        tx.send(fake(2, 1, 3)).unwrap();
        let mut b = Batcher::new(policy(8, Duration::ZERO));
        let start = Instant::now();
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![2]);
        assert!(start.elapsed() < Duration::from_secs(1), "max_delay 0 takes only what is queued");
    }

    #[test]
    fn a_batch_waits_for_coming_items_and_only_while_they_come() {
        let (tx, rx) = mpsc::channel();
        tx.send(fake(0, 1, 3)).unwrap();
        // The batcher finds the queue empty and asks what is coming: one item,
        // which arrives while it waits (sent from inside the question, so the
        // test does not depend on how fast another thread is scheduled).
        let asked = std::cell::Cell::new(0);
        let count = || {
            asked.set(asked.get() + 1);
            if asked.get() == 1 {
                tx.send(fake(1, 1, 3)).unwrap();
                return 1;
            }
            0
        };
        let mut b = Batcher::new(policy(8, Duration::ZERO));
        assert_eq!(ids(b.next_batch(&rx, || (), count)), vec![0, 1], "the item on its way joins the batch");
        assert!(asked.get() >= 1);
        // Nothing coming: take what is queued, no wait.
        tx.send(fake(2, 1, 3)).unwrap();
        let start = Instant::now();
        assert_eq!(ids(b.next_batch(&rx, || (), || 0)), vec![2]);
        assert!(start.elapsed() < COMING_WAIT_MAX, "a lone item does not wait");
        // Something announced that never comes: the wait is bounded.
        tx.send(fake(3, 1, 3)).unwrap();
        let start = Instant::now();
        assert_eq!(ids(b.next_batch(&rx, || (), || 1)), vec![3]);
        let waited = start.elapsed();
        assert!(waited >= COMING_WAIT_MAX && waited < Duration::from_secs(1), "bounded by COMING_WAIT_MAX: {waited:?}");
    }

    #[test]
    fn abandoned_jobs_are_dropped_unrun() {
        let (tx, rx) = mpsc::channel();
        let gone = fake(0, 1, 3);
        gone.abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
        tx.send(gone).unwrap();
        tx.send(fake(1, 1, 3)).unwrap();
        let held = fake(2, 1, 4);
        let flag = held.abandoned.clone();
        tx.send(held).unwrap();
        tx.send(fake(3, 1, 4)).unwrap();
        let taken = std::cell::Cell::new(0);
        let mut b = Batcher::new(policy(8, Duration::ZERO));
        assert_eq!(ids(b.next_batch(&rx, || taken.set(taken.get() + 1), || 0)), vec![1]);
        // Job 2 was held back (other shape), then abandoned while it waited.
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids(b.next_batch(&rx, || taken.set(taken.get() + 1), || 0)), vec![3]);
        assert_eq!(taken.get(), 4);
    }
}
