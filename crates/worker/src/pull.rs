//! One pull loop per held application version: it asks the engine for
//! work only while it has free slots, and runs each message in its own task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::StreamExt;
use tensorgate_cluster::core::intake::PullPlan;
use tensorgate_runtime::application::Application;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::run::Held;
use tokio::task::JoinHandle;

use crate::{Shared, WorkerOptions};

/// How long one pull request waits for items before the worker asks again
/// (also the longest a drain waits for a pull already sent).
const PULL_EXPIRES: Duration = Duration::from_millis(1000);

/// One held version's pull loop.
pub(crate) struct AppLoop {
    pub(crate) app: Arc<Application>,
    pub(crate) capacity: usize,
    /// Items taken and not yet answered (its semaphore's slots also cover
    /// pulls still waiting for items).
    pub(crate) held: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AppLoop {
    /// Stops pulling; what it holds still finishes.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until every item it took is answered.
    pub(crate) async fn finished(self) {
        let _ = self.task.await;
    }
}

/// Starts a pull loop for each newly held version and stops those of
/// versions no longer held (they finish what they hold).
pub(crate) fn sync_loops(shared: &Arc<Shared>, options: &WorkerOptions, loops: &mut HashMap<(String, u64), AppLoop>) {
    let held: HashMap<(String, u64), Arc<Application>> =
        shared.repo.all().into_iter().map(|a| ((a.name().to_string(), a.version()), a)).collect();
    loops.retain(|key, l| {
        let keep = held.get(key).is_some_and(|a| Arc::ptr_eq(a, &l.app));
        if !keep {
            l.stop();
        }
        keep
    });
    for (key, app) in held {
        if loops.contains_key(&key) {
            continue;
        }
        let m = &app.manifest.model;
        let capacity = options.capacity.unwrap_or(2 * m.max_batch.max(1) * m.instances.max(1)).clamp(1, 4096);
        let slots = Arc::new(Semaphore::new(capacity));
        let (stop, stopped) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(pull_loop(shared.clone(), app.clone(), capacity, slots, held.clone(), stopped));
        tracing::info!(app = %key.0, version = key.1, capacity, "pulling work");
        // Exported at zero from the start (a rate over it then works at once).
        metrics::counter!(tensorgate_server::metrics::names::CLUSTER_REDELIVERIES, "model" => key.0.clone()).increment(0);
        loops.insert(key, AppLoop { app, capacity, held, stop, task });
    }
}

/// Pulls items for one version while it has free slots, runs each message
/// in its own task, and when stopped waits until every item it took is answered.
async fn pull_loop(
    shared: Arc<Shared>,
    app: Arc<Application>,
    capacity: usize,
    slots: Arc<Semaphore>,
    held: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    let (name, version) = (app.name().to_string(), app.version());
    let consumer = loop {
        match consumer(&shared, &name, version).await {
            Ok(c) => break Some(c),
            Err(e) => {
                tracing::warn!(app = %name, version, "cannot open the work consumer (retrying): {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopped.changed() => break None,
                }
            }
        }
    };
    if let Some(consumer) = consumer {
        let mut plan = PullPlan::new();
        while !*stopped.borrow() {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped.changed() => break,
            };
            let mut permits = vec![first];
            while permits.len() < capacity {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let messages = plan.messages(permits.len());
            let batch = consumer.batch().max_messages(messages).expires(PULL_EXPIRES).messages().await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(app = %name, version, "pull failed (engine unreachable?): {e}");
                    drop(permits);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            // What a pull already sent delivers is this worker's to run, even
            // while it drains; the pull ends by itself within PULL_EXPIRES.
            // Bounded: with the engine gone a pull never ends by itself.
            while let Ok(Some(next)) = tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(1), batch.next()).await {
                let msg = match next {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::debug!(app = %name, version, "pull ended: {e}");
                        break;
                    }
                };
                // Delivered before: its worker died or went silent past --redeliver-after-ms.
                if msg.info().is_ok_and(|i| i.delivered > 1) {
                    metrics::counter!(tensorgate_server::metrics::names::CLUSTER_REDELIVERIES, "model" => name.clone()).increment(1);
                }
                // A message its gateway no longer wants takes no slot.
                let work = match crate::run::screen(&shared, msg).await {
                    Some(work) => work,
                    None => {
                        plan.on_dropped();
                        continue;
                    }
                };
                let items = work.len();
                plan.on_message(items);
                // A slot per item (a group larger than the capacity takes it all).
                let need = items.clamp(1, capacity);
                let mut mine: Vec<OwnedSemaphorePermit> = permits.drain(permits.len().saturating_sub(need)..).collect();
                if mine.len() < need {
                    match more_slots(&shared, &slots, need - mine.len(), work.message()).await {
                        Some(more) => mine.push(more),
                        None => break,
                    }
                }
                held.fetch_add(items, Ordering::Relaxed);
                let held = Held(held.clone(), items);
                tokio::spawn(crate::run::run_message(shared.clone(), app.clone(), work, (mine, held)));
            }
        }
    }
    // Every slot back means every item taken has been answered.
    let _ = slots.acquire_many(capacity as u32).await;
}

/// The durable consumer every worker serving `name` `version` pulls from.
async fn consumer(shared: &Shared, name: &str, version: u64) -> Result<jetstream::consumer::PullConsumer, String> {
    let names = &shared.engine.names;
    let durable = names.consumer(name, version);
    let stream = shared.engine.js.get_stream(names.work_stream()).await.map_err(|e| e.to_string())?;
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: names.work(name, version),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: shared.cluster.redeliver_after,
        max_deliver: shared.cluster.max_deliveries,
        max_ack_pending: 1 << 20,
        max_waiting: 4096,
        inactive_threshold: Duration::from_secs(3600),
        description: Some(format!("workers serving {name} version {version}")),
        ..Default::default()
    };
    stream.get_or_create_consumer(&durable, config).await.map_err(|e| e.to_string())
}

/// Waits for `n` more free slots for a message already taken (telling the
/// engine meanwhile that it is in hand); `None` if the slots are gone.
async fn more_slots(shared: &Shared, slots: &Arc<Semaphore>, n: usize, msg: &jetstream::Message) -> Option<OwnedSemaphorePermit> {
    let period = shared.cluster.redeliver_after / 3;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let acquire = slots.clone().acquire_many_owned(n as u32);
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            p = &mut acquire => return p.ok(),
            _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
}
