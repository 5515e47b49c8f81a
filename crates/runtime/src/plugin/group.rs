//! Grouping items that wait for the same plugin call (contract 0.3).
//!
//! A plugin call has a fixed cost (entering the component, and for a
//! language runtime such as CPython, lifting the arguments into objects),
//! which a group of items pays once. [`Group`] lets at most `lanes` calls
//! run at once; an item that arrives while all lanes are busy waits, and the
//! next lane to come free takes every item waiting (up to `max_items`) into
//! one call. Nothing waits to fill a group: under light load each item is
//! called alone, as soon as it arrives; groups form only from items that
//! would have waited anyway.
//!
//! A lane is held by a [`Lane`] guard: whichever item holds it runs the
//! call, and when the guard is dropped (the call done, or a waiting item
//! given the lane dropped before it could run) the lane passes to the
//! oldest waiting item, so a cancelled item never loses a lane.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What a waiting item is told: its result (another item's call ran it),
/// or that it holds a lane and runs the next call itself.
enum Turn<I, O> {
    Done(O, Duration),
    Lead(I, Lane<I, O>),
}

struct Waiting<I, O> {
    input: I,
    reply: oneshot::Sender<Turn<I, O>>,
}

struct State<I, O> {
    running: usize,
    waiting: VecDeque<Waiting<I, O>>,
}

struct Shared<I, O> {
    state: Mutex<State<I, O>>,
    lanes: usize,
    max_items: usize,
}

/// Calls on one plugin version, grouped (see the module docs).
pub struct Group<I, O> {
    shared: Arc<Shared<I, O>>,
}

/// A held lane; dropping it passes the lane on (or frees it).
pub struct Lane<I, O> {
    /// `None` once the lane has been passed on by other means.
    shared: Option<Arc<Shared<I, O>>>,
}

impl<I, O> Lane<I, O> {
    fn new(shared: &Arc<Shared<I, O>>) -> Self {
        Lane { shared: Some(shared.clone()) }
    }
}

impl<I, O> Drop for Lane<I, O> {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        // Hand the lane to the oldest item still waiting for one; an item
        // that gave up (its receiver is gone) is skipped.
        while let Some(next) = state.waiting.pop_front() {
            match next.reply.send(Turn::Lead(next.input, Lane::new(&shared))) {
                Ok(()) => return,
                // Not handed over: disarm it (this drop still holds the lane).
                Err(Turn::Lead(_, mut lane)) => drop(lane.shared.take()),
                Err(Turn::Done(..)) => {}
            }
        }
        state.running -= 1;
    }
}

impl<I, O> Group<I, O> {
    /// At most `lanes` calls at once, each of at most `max_items` items.
    pub fn new(lanes: usize, max_items: usize) -> Self {
        Group {
            shared: Arc::new(Shared {
                state: Mutex::new(State { running: 0, waiting: VecDeque::new() }),
                lanes: lanes.max(1),
                max_items: max_items.max(1),
            }),
        }
    }

    /// Items waiting for a lane now.
    pub fn waiting(&self) -> usize {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).waiting.len()
    }

    /// Runs `input` through `call`, alone or with items waiting beside it,
    /// and returns its output and its share of the call's time (the call's
    /// duration over its items). `call` gets the group's inputs (this one
    /// first) and must return one output per input, in order; it runs on
    /// this task, synchronously.
    pub async fn run(&self, input: I, call: impl FnOnce(Vec<I>) -> Vec<O>) -> (O, Duration) {
        let lead = {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.running < self.shared.lanes {
                state.running += 1;
                Ok((input, Lane::new(&self.shared)))
            } else {
                let (tx, rx) = oneshot::channel();
                state.waiting.push_back(Waiting { input, reply: tx });
                Err(rx)
            }
        };
        let (input, lane) = match lead {
            Ok(lead) => lead,
            Err(rx) => match rx.await {
                Ok(Turn::Done(output, share)) => return (output, share),
                Ok(Turn::Lead(input, lane)) => (input, lane),
                // A lane holder answers every item it takes, unless its
                // call panicked (a host bug), which this item shares.
                Err(_) => panic!("the plugin call that took this item panicked"),
            },
        };
        self.lead(input, lane, call)
    }

    /// Runs one call with `input` and the items waiting now, answers them,
    /// then releases the lane.
    fn lead(&self, input: I, lane: Lane<I, O>, call: impl FnOnce(Vec<I>) -> Vec<O>) -> (O, Duration) {
        let others: Vec<Waiting<I, O>> = {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let n = state.waiting.len().min(self.shared.max_items - 1);
            state.waiting.drain(..n).collect()
        };
        let (replies, mut inputs): (Vec<_>, Vec<_>) = others.into_iter().map(|w| (w.reply, w.input)).unzip();
        inputs.insert(0, input);
        let n = inputs.len();
        let start = Instant::now();
        let outputs = call(inputs);
        let share = start.elapsed() / n as u32;
        assert_eq!(outputs.len(), n, "a grouped call returns one output per input");
        let mut outputs = outputs.into_iter();
        let mine = outputs.next().expect("one output per input");
        for (reply, output) in replies.into_iter().zip(outputs) {
            // An item that gave up meanwhile just drops its output.
            let _ = reply.send(Turn::Done(output, share));
        }
        drop(lane);
        (mine, share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_items_share_calls_and_each_gets_its_own_output() {
        let group = Arc::new(Group::<u32, u32>::new(1, 8));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let (group, calls, sizes) = (group.clone(), calls.clone(), sizes.clone());
                tokio::spawn(async move {
                    group
                        .run(i, |inputs| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            sizes.lock().unwrap().push(inputs.len());
                            std::thread::sleep(Duration::from_millis(2));
                            inputs.iter().map(|x| x * 10).collect()
                        })
                        .await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().0, i as u32 * 10, "item {i} got its own output");
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 40, "every item ran exactly once");
        assert!(sizes.iter().all(|&n| n <= 8), "no call over max_items: {sizes:?}");
        assert!(calls.load(Ordering::SeqCst) < 40, "items that waited were grouped: {sizes:?}");
        assert_eq!(group.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_alone_runs_at_once_and_a_cancelled_waiter_loses_no_lane() {
        let group = Arc::new(Group::<u32, u32>::new(1, 8));
        assert_eq!(group.run(7, |v| v).await.0, 7);
        // Hold the lane, queue one item and cancel it, then release: the lane
        // must come back (a later item runs).
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let g = group.clone();
        let holder = tokio::task::spawn_blocking(move || {
            futures_lite_block(g.run(1, move |v| {
                hold_rx.recv().unwrap();
                v
            }))
        });
        while group.shared.state.lock().unwrap().running == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let g = group.clone();
        let waiter = tokio::spawn(async move { g.run(2, |v| v).await });
        while group.waiting() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        waiter.abort();
        let _ = waiter.await;
        hold_tx.send(()).unwrap();
        assert_eq!(holder.await.unwrap().0, 1);
        let later = tokio::time::timeout(Duration::from_secs(5), group.run(3, |v| v)).await;
        assert_eq!(later.expect("the lane came back").0, 3);
    }

    fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
        pollster::block_on(f)
    }
}
