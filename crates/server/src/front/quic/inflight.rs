//! The items of one request while they run, for the stream pump.
//!
//! Spawning a task per item costs a task, a wake-up of a parked worker and a
//! join per item, which in a 1,000-item request is more than the item's own
//! host work. So items run in the stream's own task whenever that loses no
//! parallelism: a lone item of an idle request, and every item while at
//! least as many requests have items running as there are async workers
//! (each worker then has a stream of its own to run). Otherwise the items
//! started together (one burst, decoded from one read) are split into
//! groups: the first runs in the stream's task, the others each in a task
//! of their own, enough of them to keep every worker busy. Every item still
//! finishes on its own: a group hands each result back as it is done, so
//! results stream out as they finish, and each item can be cancelled alone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::request::{ItemDone, ItemFuture};

/// Most items one group (one task) runs.
pub(crate) const GROUP_MAX: usize = 32;


type Tagged = Pin<Box<dyn Future<Output = (u32, Result<ItemDone, Aborted>)> + Send>>;

/// A request's running items, wherever they run.
pub(crate) struct InFlight {
    /// The group that runs in the stream's own task.
    local: FuturesUnordered<Tagged>,
    /// Tasks running the other groups.
    groups: JoinSet<()>,
    /// Results from those tasks (an aborted item reports `Err(Aborted)`).
    done_tx: mpsc::UnboundedSender<(u32, Result<ItemDone, Aborted>)>,
    done_rx: mpsc::UnboundedReceiver<(u32, Result<ItemDone, Aborted>)>,
    /// Items in those tasks not yet reported.
    in_groups: usize,
    /// Every running item, to cancel it alone.
    handles: HashMap<u32, AbortHandle>,
    /// Async workers to spread a burst over.
    workers: usize,
    /// Requests of this host with items running (this one counted while
    /// [`Self::busy`]).
    busy_streams: Arc<AtomicUsize>,
    counted: bool,
}

impl InFlight {
    /// Nothing running yet; `busy_streams` is shared by the host's requests.
    pub(crate) fn new(busy_streams: Arc<AtomicUsize>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let workers = tokio::runtime::Handle::try_current().map(|h| h.metrics().num_workers()).unwrap_or(1);
        InFlight {
            local: FuturesUnordered::new(),
            groups: JoinSet::new(),
            done_tx,
            done_rx,
            in_groups: 0,
            handles: HashMap::new(),
            workers: workers.max(1),
            busy_streams,
            counted: false,
        }
    }

    /// Keeps the host's count of busy requests in step with [`Self::busy`].
    fn settle(&mut self) {
        let busy = self.busy();
        if busy != self.counted {
            match busy {
                true => self.busy_streams.fetch_add(1, Ordering::Relaxed),
                false => self.busy_streams.fetch_sub(1, Ordering::Relaxed),
            };
            self.counted = busy;
        }
    }

    /// Whether any item is running (or an aborted one still has to be
    /// dropped), i.e. whether [`Self::next`] has something to wait for.
    pub(crate) fn busy(&self) -> bool {
        !self.local.is_empty() || self.in_groups > 0
    }

    /// Starts the items of one burst: all in this task while other requests
    /// keep the workers busy; else split into groups of about
    /// `len / (2 × workers)` items (at most [`GROUP_MAX`]), the first run in
    /// this task when nothing else does, the rest spawned.
    pub(crate) fn start(&mut self, burst: Vec<(u32, ItemFuture)>) {
        if burst.is_empty() {
            return;
        }
        let others = self.busy_streams.load(Ordering::Relaxed).saturating_sub(usize::from(self.counted));
        let per_group = match others >= self.workers {
            true => burst.len(),
            false => burst.len().div_ceil(2 * self.workers).clamp(1, GROUP_MAX),
        };
        let handles = &mut self.handles;
        let items: Vec<_> = burst
            .into_iter()
            .map(|(index, work)| {
                let (work, handle) = futures_util::future::abortable(work);
                handles.insert(index, handle);
                (index, work)
            })
            .collect();
        let mut items = items.into_iter();
        if self.local.is_empty() {
            for (index, work) in items.by_ref().take(per_group) {
                self.local.push(Box::pin(async move { (index, work.await) }));
            }
        }
        let mut group = Vec::with_capacity(per_group);
        for item in items {
            group.push(item);
            if group.len() == per_group {
                self.spawn(std::mem::take(&mut group));
            }
        }
        if !group.is_empty() {
            self.spawn(group);
        }
        self.settle();
    }

    fn spawn(&mut self, group: Vec<(u32, Abortable<ItemFuture>)>) {
        self.in_groups += group.len();
        let tx = self.done_tx.clone();
        self.groups.spawn(async move {
            let mut running: FuturesUnordered<_> =
                group.into_iter().map(|(index, work)| async move { (index, work.await) }).collect();
            while let Some(done) = running.next().await {
                // The receiver is gone only when the stream is: nothing to tell.
                let _ = tx.send(done);
            }
        });
    }

    /// Cancels one item (no-op if it is not running); it is not reported.
    pub(crate) fn cancel(&mut self, index: u32) {
        if let Some(handle) = self.handles.remove(&index) {
            handle.abort();
        }
    }

    /// The next item to finish. Pending forever when nothing runs (the
    /// pump polls it only while [`Self::busy`]).
    pub(crate) async fn next(&mut self) -> (u32, ItemDone) {
        loop {
            let (index, result) = tokio::select! {
                Some(done) = self.local.next(), if !self.local.is_empty() => done,
                Some(done) = self.done_rx.recv(), if self.in_groups > 0 => {
                    self.in_groups -= 1;
                    done
                }
                else => std::future::pending().await,
            };
            if let Some(done) = self.finished(index, result) {
                return done;
            }
        }
    }

    /// An item that has already finished, if any, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<(u32, ItemDone)> {
        use futures_util::FutureExt;
        loop {
            let (index, result) = match self.local.next().now_or_never() {
                Some(Some(done)) => done,
                _ => match self.done_rx.try_recv() {
                    Ok(done) => {
                        self.in_groups -= 1;
                        done
                    }
                    Err(_) => return None,
                },
            };
            if let Some(done) = self.finished(index, result) {
                return Some(done);
            }
        }
    }

    fn finished(&mut self, index: u32, result: Result<ItemDone, Aborted>) -> Option<(u32, ItemDone)> {
        self.settle();
        let done = result.ok()?;
        self.handles.remove(&index);
        Some((index, done))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counted {
            self.busy_streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    use crate::request::ItemOutput;

    fn item(index: u32, delay_ms: u64, dropped: Arc<AtomicUsize>) -> (u32, ItemFuture) {
        struct CountDrop(Arc<AtomicUsize>);
        impl Drop for CountDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = CountDrop(dropped);
        let work: ItemFuture = Box::pin(async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let payload = bytes::Bytes::from(index.to_le_bytes().to_vec());
            ItemDone { result: Ok(ItemOutput { payload, ..Default::default() }), timings: Default::default() }
        });
        (index, work)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_of_a_large_burst_is_reported_once_with_its_own_result() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut inflight = InFlight::new(Arc::default());
        inflight.start((0..1000).map(|i| item(i, (i % 7) as u64, dropped.clone())).collect());
        // 1000 items over 2 workers: groups of GROUP_MAX, the first in this task.
        assert_eq!(inflight.local.len(), GROUP_MAX);
        assert_eq!(inflight.in_groups, 1000 - GROUP_MAX);
        assert_eq!(inflight.groups.len(), (1000 - GROUP_MAX).div_ceil(GROUP_MAX));
        let mut seen = BTreeSet::new();
        while inflight.busy() {
            let (index, done) = tokio::time::timeout(Duration::from_secs(10), inflight.next()).await.expect("items finish");
            assert_eq!(done.result.unwrap().payload.as_ref(), index.to_le_bytes());
            assert!(seen.insert(index), "item {index} reported twice");
            while let Some((index, _)) = inflight.try_next() {
                assert!(seen.insert(index), "item {index} reported twice");
            }
        }
        assert_eq!(seen.len(), 1000);
        assert_eq!(dropped.load(Ordering::SeqCst), 1000);
        assert!(inflight.handles.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_item_runs_here_and_small_bursts_spread_over_the_workers() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut inflight = InFlight::new(Arc::default());
        inflight.start(vec![item(0, 1, dropped.clone())]);
        assert_eq!((inflight.local.len(), inflight.groups.len()), (1, 0));
        // While that runs, 4 more: one per group (4 / (2 × 2 workers)), all spawned.
        inflight.start((1..5).map(|i| item(i, 1, dropped.clone())).collect());
        assert_eq!((inflight.local.len(), inflight.groups.len(), inflight.in_groups), (1, 4, 4));
        let mut n = 0;
        while inflight.busy() {
            inflight.next().await;
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_item_is_dropped_and_never_reported() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut inflight = InFlight::new(Arc::default());
        // Slow items: one in this task, the rest in groups.
        inflight.start((0..100).map(|i| item(i, 60_000, dropped.clone())).collect());
        inflight.cancel(0);
        inflight.cancel(99);
        inflight.cancel(12345);
        // Both are dropped promptly (the group's task is woken to drop its item).
        for _ in 0..200 {
            if dropped.load(Ordering::SeqCst) == 2 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(10), inflight.next()).await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        assert!(inflight.try_next().is_none());
        assert_eq!(inflight.handles.len(), 98);
        // Dropping the set drops every item still running.
        drop(inflight);
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_other_requests_keep_the_workers_busy_every_item_runs_here() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        // Two other requests (one per worker) with items running.
        let mut others: Vec<InFlight> = (0..2).map(|_| InFlight::new(busy.clone())).collect();
        for (n, other) in others.iter_mut().enumerate() {
            other.start(vec![item(n as u32, 60_000, dropped.clone())]);
        }
        assert_eq!(busy.load(Ordering::SeqCst), 2);
        let mut inflight = InFlight::new(busy.clone());
        inflight.start((0..100).map(|i| item(i, 1, dropped.clone())).collect());
        assert_eq!((inflight.local.len(), inflight.groups.len()), (100, 0), "no task spawned");
        assert_eq!(busy.load(Ordering::SeqCst), 3);
        let mut n = 0;
        while inflight.busy() {
            inflight.next().await;
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!(busy.load(Ordering::SeqCst), 2, "a request whose items are done is not busy");
        // With one other request left, a burst is spread again.
        others.pop();
        assert_eq!(busy.load(Ordering::SeqCst), 1);
        inflight.start((0..100).map(|i| item(i, 1, dropped.clone())).collect());
        assert!(inflight.groups.len() > 1, "spread over tasks: {}", inflight.groups.len());
        drop(inflight);
        assert_eq!(busy.load(Ordering::SeqCst), 1, "a dropped request is not busy");
    }
}
