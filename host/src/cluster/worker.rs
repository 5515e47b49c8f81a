//! The worker role: a host that dials out to the engine, listens on no
//! port, and pulls items for every application version it holds, but only
//! as many as it has free capacity for, so a busy or slow GPU is never
//! handed more than it can run and faster workers take proportionally more.
//!
//! Each held version has its own pull loop (its own model executor and
//! plugin pool, so its own capacity). An item is acknowledged to the engine
//! only after its reply reached the gateway; while it runs the worker tells
//! the engine it is still working on it. On [`RunningWorker::drain`] it
//! stops pulling, finishes what it holds, says it left, and returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tensorgate_protocol::{ErrorCode, Item};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::wire::{self, Advert, AppAdvert, ReplyHead, Subjects, WorkHead, WorkerState};
use super::{ClusterConfig, ClusterError};
use crate::application::Application;
use crate::repository::Repository;
use crate::request::{ItemDone, ItemFailure, ItemRunner};
use crate::server::{Host, LocalRunner};

/// How long one pull request waits for items before the worker asks again
/// (also the longest a drain waits for a pull already sent).
const PULL_EXPIRES: Duration = Duration::from_millis(1000);
/// Waits between attempts to hand a reply to its gateway (about 5 s in all,
/// so a gateway reconnecting after an engine restart still gets it).
const REPLY_BACKOFF: [u64; 6] = [0, 100, 250, 500, 1000, 2000];
/// How long one reply attempt waits for the gateway's confirmation.
const REPLY_WAIT: Duration = Duration::from_secs(2);
/// Room left in a message for headers when checking payloads against the
/// engine's `max_payload`.
pub(crate) const HEADER_ROOM: usize = 4096;

/// Worker settings beside the cluster's.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Items pulled at once per application version; `None`: twice the
    /// model's `max_batch × instances` (the next batch fills while one runs).
    pub capacity: Option<usize>,
    /// Longest a drain waits for the items it holds.
    pub drain_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { capacity: None, drain_timeout: Duration::from_secs(120) }
    }
}

/// What every pull loop and item task of one worker shares.
struct Shared {
    id: String,
    hostname: String,
    device: String,
    cluster: ClusterConfig,
    subjects: Subjects,
    client: async_nats::Client,
    js: jetstream::Context,
    repo: Arc<Repository>,
    runner: LocalRunner,
    started: Instant,
    /// Set once the fleet state as it was at start has been applied.
    converged: watch::Receiver<bool>,
    /// Payloads and results above the engine's message limit.
    large: async_nats::jetstream::object_store::ObjectStore,
    /// Whether an item has arrived yet (its time after joining is logged once).
    got_first: std::sync::atomic::AtomicBool,
}

/// One held version's pull loop.
struct AppLoop {
    app: Arc<Application>,
    capacity: usize,
    /// Items taken and not yet answered (its semaphore's slots also cover
    /// pulls still waiting for items).
    held: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A worker connected to the engine and pulling work.
pub struct RunningWorker {
    id: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningWorker {
    /// Connects `host` (its repository loaded) to the engine and starts
    /// pulling. Must run inside a tokio runtime.
    pub async fn start(host: Host, cluster: ClusterConfig, options: WorkerOptions) -> Result<Self, ClusterError> {
        let id = format!("w-{}", short_id());
        let client = super::connect(&cluster, &format!("tensorgate worker {id}")).await?;
        let js = jetstream::new(client.clone());
        super::ensure_work_stream(&js, &cluster).await?;
        let repo = host.repository().clone();
        let config = host.config().clone();
        let stores = super::fleet::stores(&js, &cluster).await?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let (caught_up, converged) = watch::channel(false);
        let shared = Arc::new(Shared {
            converged,
            large: stores.large.clone(),
            got_first: std::sync::atomic::AtomicBool::new(false),
            hostname: hostname(),
            device: crate::executor::torch::resolve(config.device)
                .map(crate::executor::torch::device_name)
                .unwrap_or_else(|_| config.device.to_string()),
            subjects: Subjects::new(&cluster.prefix),
            runner: LocalRunner { repo: repo.clone(), max_item_bytes: config.limits.max_item_bytes },
            id: id.clone(),
            cluster,
            client,
            js,
            repo,
            started: Instant::now(),
        });
        let pings = shared
            .client
            .subscribe(shared.subjects.ping())
            .await
            .map_err(|e| ClusterError::JetStream(format!("subscribing to pings: {e}")))?;
        let converge = tokio::spawn(super::fleet::converge(
            id.clone(),
            shared.cluster.prefix.clone(),
            shared.client.clone(),
            stores,
            shared.repo.clone(),
            changed.clone(),
            caught_up,
        ));
        let reloads = tokio::spawn(super::fleet::answer_reloads(
            id.clone(),
            shared.client.clone(),
            shared.cluster.prefix.clone(),
            shared.repo.clone(),
            changed.clone(),
        ));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            control(shared, options, pings, changed, stopped, host).await;
            converge.abort();
            reloads.abort();
        });
        tracing::info!(worker = %id, "worker started; pulling work");
        Ok(RunningWorker { id, stop, task })
    }

    /// This worker's id, as adverts and `status` show it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops pulling, finishes every item it holds, advertises that it
    /// left, and returns.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Keeps one pull loop per held version, advertises every heartbeat and
/// when pinged; drains on stop. `host` is kept alive for the worker's life.
async fn control(
    shared: Arc<Shared>,
    options: WorkerOptions,
    mut pings: async_nats::Subscriber,
    changed: Arc<tokio::sync::Notify>,
    mut stopped: watch::Receiver<bool>,
    host: Host,
) {
    let mut converged = shared.converged.clone();
    let mut loops: HashMap<(String, u64), AppLoop> = HashMap::new();
    let mut tick = tokio::time::interval(shared.cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sync_loops(&shared, &options, &mut loops);
                advertise(&shared, &loops, WorkerState::Serving).await;
            }
            Some(_) = pings.next() => advertise(&shared, &loops, WorkerState::Serving).await,
            // The repository changed (fleet change applied, reload): say so at once.
            _ = changed.notified() => {
                sync_loops(&shared, &options, &mut loops);
                advertise(&shared, &loops, WorkerState::Serving).await;
            }
            Ok(()) = converged.changed() => {
                sync_loops(&shared, &options, &mut loops);
                advertise(&shared, &loops, WorkerState::Serving).await;
            }
            _ = stopped.changed() => break,
        }
    }
    tracing::info!(worker = %shared.id, "draining: no new work; finishing what is held");
    for l in loops.values() {
        let _ = l.stop.send(true);
    }
    advertise(&shared, &loops, WorkerState::Draining).await;
    let finish = async {
        for (_, l) in loops.drain() {
            let _ = l.task.await;
        }
    };
    if tokio::time::timeout(options.drain_timeout, finish).await.is_err() {
        tracing::warn!(worker = %shared.id, "items still running after {:?}; leaving (the engine hands them to another worker)", options.drain_timeout);
    }
    advertise(&shared, &HashMap::new(), WorkerState::Left).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.client.flush()).await;
    drop(host);
    tracing::info!(worker = %shared.id, "drained; left the cluster");
}

/// Starts a pull loop for each newly held version and stops those of
/// versions no longer held (they finish what they hold).
fn sync_loops(shared: &Arc<Shared>, options: &WorkerOptions, loops: &mut HashMap<(String, u64), AppLoop>) {
    let held: HashMap<(String, u64), Arc<Application>> =
        shared.repo.all().into_iter().map(|a| ((a.name().to_string(), a.version()), a)).collect();
    loops.retain(|key, l| {
        let keep = held.get(key).is_some_and(|a| Arc::ptr_eq(a, &l.app));
        if !keep {
            let _ = l.stop.send(true);
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
        loops.insert(key, AppLoop { app, capacity, held, stop, task });
    }
}

/// Pulls items for one version while it has free slots, runs each in its
/// own task, and when stopped waits until every item it took is answered.
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
        // Items per message lately (groups carry many): a pull asks for as
        // many messages as the free slots hold on that measure.
        let mut per_message = 1.0f64;
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
            let messages = ((permits.len() as f64 / per_message) as usize).clamp(1, permits.len());
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
                let items = group_size(&msg);
                per_message = 0.8 * per_message + 0.2 * items as f64;
                // A slot per item (a group larger than the capacity takes it all).
                let need = items.clamp(1, capacity);
                let mut mine: Vec<OwnedSemaphorePermit> = permits.drain(permits.len().saturating_sub(need)..).collect();
                if mine.len() < need {
                    match more_slots(&shared, &slots, need - mine.len(), &msg).await {
                        Some(more) => mine.push(more),
                        None => break,
                    }
                }
                held.fetch_add(items, Ordering::Relaxed);
                let held = Held(held.clone(), items);
                tokio::spawn(run_message(shared.clone(), app.clone(), msg, (mine, held)));
            }
        }
    }
    // Every slot back means every item taken has been answered.
    let _ = slots.acquire_many(capacity as u32).await;
}

/// The durable consumer every worker serving `name` `version` pulls from.
async fn consumer(shared: &Shared, name: &str, version: u64) -> Result<jetstream::consumer::PullConsumer, String> {
    let durable = shared.subjects.consumer(name, version);
    let stream = shared.js.get_stream(shared.cluster.work_stream()).await.map_err(|e| e.to_string())?;
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: shared.subjects.work(name, version),
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

/// Items in a work message: its `Tg-Group` count, or 1.
fn group_size(msg: &jetstream::Message) -> usize {
    wire::text(msg.headers.as_ref(), wire::GROUP).and_then(|n| n.parse().ok()).unwrap_or(1)
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

/// What a work message's items hold while they run: their slots and their count.
type Holding = (Vec<OwnedSemaphorePermit>, Held);

/// Runs a work message: one item, or a group of them.
async fn run_message(shared: Arc<Shared>, app: Arc<Application>, msg: jetstream::Message, holding: Holding) {
    if !shared.got_first.swap(true, Ordering::Relaxed) {
        tracing::info!(worker = %shared.id, after_ms = shared.started.elapsed().as_secs_f64() * 1e3, "first item since joining");
    }
    if wire::text(msg.headers.as_ref(), wire::GROUP).is_some() {
        run_group(shared, app, msg, holding).await
    } else {
        run_item(shared, app, msg, holding).await
    }
}

/// Runs a group's items side by side and sends back each result as it
/// finishes (those finishing together in one group reply); the message is
/// acknowledged once every reply reached the gateway, and handed back to
/// the engine otherwise (the gateway drops answers it already has).
async fn run_group(shared: Arc<Shared>, app: Arc<Application>, msg: jetstream::Message, holding: Holding) {
    let reply_to = wire::text(msg.headers.as_ref(), wire::REPLY_TO).map(str::to_string);
    let members = wire::unpack::<WorkHead>(&msg.payload);
    let (Some(reply_to), Ok(members)) = (reply_to, members) else {
        tracing::warn!(subject = %msg.subject, "group work message without a reply subject or with an unreadable body; dropped");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let group_len = members.len();
    if members.iter().any(|(_, h, _)| h.deadline_unix_ms.is_some_and(|d| unix_ms() > d)) {
        // Its gateway has already answered `deadline_exceeded`.
        let _ = msg.ack().await;
        return;
    }
    // Each item in its own task (plugin calls of different items run in
    // parallel), at most as many at once as the slots this message holds.
    let at_once = holding.0.len().max(1);
    let tasks = members.into_iter().map(|(key, head, payload)| {
        let index = head.item.index;
        let work = // `false`: a worker pulls items in groups; they are batched, never run inline.
        shared.runner.run(&app, Item { head: head.item, payload }, false);
        async move {
            let done = tokio::spawn(work).await.unwrap_or_else(|e| ItemDone {
                result: Err(ItemFailure::new(ErrorCode::Internal, format!("item {index}: its task failed: {e}"))),
                timings: Default::default(),
            });
            (key, index, done)
        }
    });
    let mut running = futures_util::stream::iter(tasks).buffer_unordered(at_once);
    let mut left = group_len;
    let mut sending = futures_util::stream::FuturesUnordered::new();
    let period = shared.cluster.redeliver_after / 3;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut delivered = true;
    while left > 0 || !sending.is_empty() {
        tokio::select! {
            Some(done) = running.next(), if left > 0 => {
                let mut finished = vec![done];
                while let Some(Some(more)) = futures_util::FutureExt::now_or_never(running.next()) {
                    finished.push(more);
                }
                left -= finished.len();
                sending.push(send_results(&shared, &msg, &reply_to, finished));
            }
            Some(ok) = sending.next() => delivered &= ok,
            _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
    if delivered {
        let _ = msg.ack().await;
    } else {
        tracing::warn!(%reply_to, "no gateway confirmed some replies; the group is handed back to the engine");
        let _ = msg.ack_with(AckKind::Nak(Some(shared.cluster.redeliver_after))).await;
    }
    drop(holding);
}

/// Sends results finished together: a large one alone (through the
/// large-item store when above the message limit), the others in group
/// replies of at most half a message each. Whether the gateway confirmed all.
async fn send_results(shared: &Shared, msg: &jetstream::Message, reply_to: &str, finished: Vec<(u64, u32, ItemDone)>) -> bool {
    let budget = shared.client.server_info().max_payload.saturating_sub(HEADER_ROOM) / 2;
    let mut ok = true;
    let mut group: Vec<(u64, ReplyHead, Bytes)> = Vec::new();
    let mut bytes = 0;
    for (key, index, done) in finished {
        let (head, payload) = ReplyHead::from_done(&shared.id, done);
        let size = payload.len() + 256 + head.message.len() + head.metadata.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
        if size > budget / 2 {
            ok &= send_one(shared, msg, reply_to, key, index, head, payload).await.is_ok();
            continue;
        }
        if !group.is_empty() && bytes + size > budget {
            ok &= send_group(shared, msg, reply_to, std::mem::take(&mut group)).await;
            bytes = 0;
        }
        bytes += size;
        group.push((key, head, payload));
    }
    match group.len() {
        0 => {}
        1 => {
            if let Some((key, head, payload)) = group.pop() {
                ok &= send_one(shared, msg, reply_to, key, 0, head, payload).await.is_ok();
            }
        }
        _ => ok &= send_group(shared, msg, reply_to, group).await,
    }
    ok
}

async fn send_group(shared: &Shared, msg: &jetstream::Message, reply_to: &str, group: Vec<(u64, ReplyHead, Bytes)>) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::GROUP, group.len().to_string().as_str());
    deliver(shared, msg, reply_to, headers, wire::pack(&group)).await
}

/// Sends one result in the single-reply form, storing it in the large-item
/// store when it is above the engine's message limit; `Ok` once the gateway
/// confirmed it, with the name of the object holding the result, if any.
async fn send_one(
    shared: &Shared,
    msg: &jetstream::Message,
    reply_to: &str,
    key: u64,
    index: u32,
    mut reply_head: ReplyHead,
    mut payload: Bytes,
) -> Result<(), ()> {
    let mut extra = vec![(wire::KEY, key.to_string())];
    let max = shared.client.server_info().max_payload.saturating_sub(HEADER_ROOM);
    if payload.len() > max {
        // A large result goes to the store; the gateway fetches and deletes it.
        let name = format!("r-{}-{}", shared.id, nuid::next());
        match super::fleet::write_object(&shared.client, &shared.large, &name, &payload).await {
            Ok(_) => {
                extra.push((wire::OBJECT, name));
                payload = Bytes::new();
            }
            Err(e) => {
                let failed = ItemDone {
                    result: Err(ItemFailure::new(ErrorCode::Internal, format!("item {index}: storing its {} byte result: {e}", payload.len()))),
                    timings: reply_head.timings,
                };
                (reply_head, payload) = ReplyHead::from_done(&shared.id, failed);
            }
        }
    }
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match deliver(shared, msg, reply_to, wire::headers(&reply_head, &extra), payload).await {
        true => Ok(()),
        false => Err(()),
    }
}

/// Hands a reply to its gateway, retrying for about 5 s (telling the engine
/// meanwhile that the work is in hand); whether the gateway confirmed it.
async fn deliver(shared: &Shared, msg: &jetstream::Message, reply_to: &str, headers: async_nats::HeaderMap, body: Bytes) -> bool {
    for wait in REPLY_BACKOFF {
        if wait > 0 {
            // (A zero sleep would still wait for the timer wheel's next turn.)
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let attempt = shared.client.request_with_headers(reply_to.to_string(), headers.clone(), body.clone());
        match tokio::time::timeout(REPLY_WAIT, attempt).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => tracing::debug!("reply to {reply_to} not confirmed: {e}"),
            Err(_) => tracing::debug!("reply to {reply_to} not confirmed in {REPLY_WAIT:?}"),
        }
        let _ = msg.ack_with(AckKind::Progress).await;
    }
    false
}

/// Runs one item and hands its reply to the gateway; the engine hears
/// "still working" while it runs and the acknowledgement once the gateway
/// has the reply.
async fn run_item(shared: Arc<Shared>, app: Arc<Application>, msg: jetstream::Message, holding: Holding) {
    let headers = msg.headers.as_ref();
    let head: Result<WorkHead, String> = wire::head(headers);
    let key = wire::text(headers, wire::KEY).and_then(|k| k.parse::<u64>().ok());
    let (Ok(head), Some(reply_to), Some(key)) = (head, wire::text(headers, wire::REPLY_TO), key) else {
        // Nobody can be answered about a message without its head: drop it for good.
        tracing::warn!(subject = %msg.subject, "work message without a readable head, reply subject or key; dropped");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let reply_to = reply_to.to_string();
    if head.deadline_unix_ms.is_some_and(|d| unix_ms() > d) {
        // Its gateway has already answered `deadline_exceeded`.
        let _ = msg.ack().await;
        return;
    }
    let index = head.item.index;
    let received = Instant::now();
    let object = wire::text(headers, wire::OBJECT).map(str::to_string);
    let payload = match &object {
        None => Ok(msg.payload.clone()),
        Some(name) => super::fleet::read_object(&shared.large, name).await.map(Bytes::from),
    };
    let mut work = match payload {
        Ok(payload) => shared.runner.run(&app, Item { head: head.item.clone(), payload }, false),
        Err(e) => {
            let failure = ItemFailure::new(ErrorCode::Internal, format!("item {index}: its payload is not in the engine's large-item store: {e}"));
            Box::pin(std::future::ready(ItemDone { result: Err(failure), timings: Default::default() }))
        }
    };
    // (Not `interval`: its first tick waits for the timer wheel's next turn, up to 1 ms.)
    let period = shared.cluster.redeliver_after / 3;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let done = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    };
    let ran = received.elapsed();
    let (reply_head, payload) = ReplyHead::from_done(&shared.id, done);
    let delivered = send_one(&shared, &msg, &reply_to, key, index, reply_head, payload).await.is_ok();
    tracing::trace!(index, ?ran, took = ?received.elapsed(), "item run and replied");
    if delivered {
        let _ = msg.ack().await;
        if let Some(name) = &object {
            let _ = shared.large.delete(name).await;
        }
    } else {
        // Its gateway is gone (its client with it) or unreachable: if it is
        // still waiting, another attempt may reach it; if not, the engine
        // stops after `max_deliveries`.
        tracing::warn!(index, %reply_to, "no gateway confirmed the reply; item handed back to the engine");
        let _ = msg.ack_with(AckKind::Nak(Some(shared.cluster.redeliver_after))).await;
    }
    drop(holding);
}

/// Counts items as held until they are answered.
struct Held(Arc<AtomicUsize>, usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Publishes this worker's advert.
async fn advertise(shared: &Shared, loops: &HashMap<(String, u64), AppLoop>, state: WorkerState) {
    let mut apps: Vec<AppAdvert> = loops
        .values()
        .map(|l| {
            let default = shared.repo.is_default(l.app.name(), l.app.version());
            let stats = l.app.model.stats();
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            AppAdvert {
                info: l.app.info(default),
                capacity: l.capacity as u64,
                in_flight: l.held.load(Ordering::Relaxed) as u64,
                queued: stats.queued.load(Ordering::Relaxed) as u64,
                forwards: load(&stats.forwards),
                forward_rows: load(&stats.rows),
                forward_us: load(&stats.busy_ns) / 1000,
            }
        })
        .collect();
    apps.sort_by(|a, b| (&a.info.name, a.info.version).cmp(&(&b.info.name, b.info.version)));
    let advert = Advert {
        id: shared.id.clone(),
        hostname: shared.hostname.clone(),
        state,
        device: shared.device.clone(),
        uptime_s: shared.started.elapsed().as_secs(),
        apps,
        load_errors: shared.repo.failures(),
        converged: *shared.converged.borrow(),
    };
    let body = Bytes::from(serde_json::to_vec(&advert).unwrap_or_default());
    if let Err(e) = shared.client.publish(shared.subjects.advert(), body).await {
        tracing::debug!("advert not sent: {e}");
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random id, unique across the fleet.
pub(crate) fn short_id() -> String {
    nuid::next().to_string()[..12].to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
