//! The gateway role: the client protocol on QUIC, unchanged (the same
//! request machine and pump as a host), with a [`Gateway`] as the item
//! runner. It routes by the workers' adverts, queues each item in the
//! engine for the version it was routed to (the items of one request that
//! arrive together in one group message), and answers it with the first
//! reply a worker sends back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt;
use tensorgate_protocol::{
    AdminReply, ErrorCode, Item, ItemHead, LoadFailure, ModelInfo, ModelStatus, PredictHeader, RequestHeader, WorkerStatus,
};
use tokio::sync::oneshot;

use super::wire::{self, Advert, ReplyHead, Subjects, WorkHead, WorkerState};
use super::worker::{short_id, unix_ms, HEADER_ROOM};
use super::fleet::{self, Failure};
use super::{ClusterConfig, ClusterError};
use crate::repository::defaults::{self, Rollout, Tally, Verdict};
use crate::repository::DefaultPolicy;
use crate::request::{ItemDone, ItemFailure, ItemFuture, ItemRunner, Reject, Routed};
use crate::server::{Fleet, FleetStatus};

/// Attempts to queue one item while the engine does not confirm it.
const PUBLISH_ATTEMPTS: usize = 3;

/// Items in one group message at most.
pub const GROUP_MAX: usize = 64;

/// Forwards items to the fleet and keeps the fleet view. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    cluster: ClusterConfig,
    subjects: Subjects,
    reply_subject: String,
    js: jetstream::Context,
    client: async_nats::Client,
    /// Items waiting for a worker's reply, by key.
    pending: Mutex<HashMap<u64, oneshot::Sender<ItemDone>>>,
    next_key: AtomicU64,
    /// The latest advert of each worker and when it came.
    fleet: Mutex<HashMap<String, (Advert, Instant)>>,
    /// The fleet's desired state and bundles.
    stores: super::fleet::Stores,
    /// Each model's default-version policy (`promote`, `rollback`), kept
    /// from the fleet's KV bucket.
    policies: Mutex<HashMap<String, DefaultPolicy>>,
    /// The trials of the fleet's canaries, as this gateway sees them.
    trials: Mutex<HashMap<String, Trial>>,
}

/// A canary's trial, judged by each gateway on the items it routed since it
/// learnt of the trial; the first verdict reached is written to the fleet
/// (compare-and-set on the model's policy), and every gateway follows it.
#[derive(Debug, Clone)]
struct Trial {
    /// The version on trial.
    canary: u64,
    /// The default meanwhile (pinned when the trial started).
    base: u64,
    /// The trial's terms.
    rollout: Rollout,
    /// Items of the canary and of the default since then.
    canary_tally: Tally,
    base_tally: Tally,
    /// A verdict is being written.
    deciding: bool,
}

/// What one routed request's items need.
pub struct RemoteSession {
    subject: String,
    request_id: String,
    deadline_unix_ms: Option<u64>,
    /// Items started and waiting to be queued in the engine together.
    queue: Mutex<Outbox>,
    /// Live workers serving the version (at routing).
    workers: usize,
    /// Items per group at most: [`GROUP_MAX`], or the smallest capacity of
    /// those workers.
    group_max: usize,
    /// The model and version, when their items count in a trial.
    trial: Option<(String, u64)>,
}

/// A request's items on their way to the engine.
#[derive(Default)]
struct Outbox {
    /// Started, not yet sent.
    items: Vec<(u64, Item)>,
    /// Whether a task is sending: it takes what gathered here meanwhile
    /// when it is done (so under load the groups grow by themselves, and an
    /// idle request's item goes at once).
    sending: bool,
}

impl Gateway {
    /// Connects to the engine, starts listening for replies and adverts, and
    /// asks every worker to advertise (waiting briefly for their answers).
    pub async fn connect(cluster: ClusterConfig) -> Result<Gateway, ClusterError> {
        let id = format!("g-{}", short_id());
        let client = super::connect(&cluster, &format!("tensorgate gateway {id}")).await?;
        let js = jetstream::new(client.clone());
        super::ensure_work_stream(&js, &cluster).await?;
        let stores = super::fleet::stores(&js, &cluster).await?;
        let subjects = Subjects::new(&cluster.prefix);
        let sub_err = |e: async_nats::SubscribeError| ClusterError::JetStream(format!("subscribing: {e}"));
        let replies = client.subscribe(subjects.reply(&id)).await.map_err(sub_err)?;
        let adverts = client.subscribe(subjects.advert()).await.map_err(sub_err)?;
        let inner = Arc::new(Inner {
            reply_subject: subjects.reply(&id),
            id,
            cluster,
            subjects,
            js,
            client,
            pending: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            fleet: Mutex::new(HashMap::new()),
            stores,
            policies: Mutex::new(HashMap::new()),
            trials: Mutex::new(HashMap::new()),
        });
        tokio::spawn(watch_policies(Arc::downgrade(&inner)));
        tokio::spawn(listen_replies(Arc::downgrade(&inner), replies));
        tokio::spawn(listen_adverts(Arc::downgrade(&inner), adverts));
        let _ = inner.client.publish(inner.subjects.ping(), Bytes::new()).await;
        let _ = inner.client.flush().await;
        // Workers answer a ping within milliseconds; don't route blind at start.
        let wait = inner.cluster.heartbeat.min(Duration::from_millis(300));
        tokio::time::sleep(wait).await;
        tracing::info!(gateway = %inner.id, workers = inner.live().len(), "gateway connected to the engine");
        Ok(Gateway { inner })
    }

    /// This gateway's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }
}

impl Inner {
    /// Adverts of workers heard from within three heartbeats, by id.
    fn live(&self) -> Vec<Advert> {
        let horizon = self.cluster.heartbeat * 3;
        let mut fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        fleet.retain(|_, (_, at)| at.elapsed() < horizon);
        let mut out: Vec<Advert> = fleet.values().map(|(a, _)| a.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The versions of `model` held by some live serving worker (`any`),
    /// and those every one of them holds (`everywhere`: a new version is a
    /// candidate for the default only once the whole fleet has it ready).
    /// Workers still applying the fleet state they joined to do not hold
    /// the default back. Refused when no live worker serves the model.
    fn holdings(&self, model: &str) -> Result<(BTreeSet<u64>, BTreeSet<u64>), Reject> {
        let live = self.live();
        let serving: Vec<&Advert> = live.iter().filter(|w| w.state == WorkerState::Serving).collect();
        let versions = |w: &Advert| -> BTreeSet<u64> {
            w.apps.iter().filter(|a| a.info.name == model).map(|a| a.info.version).collect()
        };
        let holders: Vec<BTreeSet<u64>> = serving.iter().map(|w| versions(w)).filter(|v| !v.is_empty()).collect();
        let settled: Vec<BTreeSet<u64>> =
            serving.iter().filter(|w| w.converged).map(|w| versions(w)).filter(|v| !v.is_empty()).collect();
        if holders.is_empty() {
            let mut names: BTreeSet<&str> = BTreeSet::new();
            for w in &serving {
                names.extend(w.apps.iter().map(|a| a.info.name.as_str()));
            }
            let message = match serving.len() {
                0 => format!("no worker serves model `{model}`: no worker is connected to the cluster"),
                n => format!(
                    "no worker serves model `{model}` ({n} worker(s) serve: {})",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(Reject::new(ErrorCode::UnknownModel, message));
        }
        let any: BTreeSet<u64> = holders.iter().flatten().copied().collect();
        let basis = if settled.is_empty() { &holders } else { &settled };
        let everywhere = basis.iter().skip(1).fold(basis[0].clone(), |acc, v| &acc & v);
        Ok((any, everywhere))
    }

    /// The version a request for `model` (at `version`, if given) goes to.
    fn route(&self, model: &str, version: Option<u64>) -> Result<u64, Reject> {
        let (any, everywhere) = self.holdings(model)?;
        if let Some(v) = version {
            if any.contains(&v) {
                return Ok(v);
            }
            let listed: Vec<String> = any.iter().map(u64::to_string).collect();
            return Err(Reject::new(
                ErrorCode::UnknownModel,
                format!("no worker serves model `{model}` version {v} (served: {})", listed.join(", ")),
            ));
        }
        let policy = self.policy(model);
        let chosen = match policy.canary.is_some() {
            true => policy.route(&everywhere, fastrand::f64()),
            false => policy.choose(&everywhere),
        };
        Ok(chosen.or(any.last().copied()).unwrap_or_default())
    }

    /// The default version of `model` (not a canary's share).
    fn default_version(&self, model: &str) -> Option<u64> {
        let (any, everywhere) = self.holdings(model).ok()?;
        self.policy(model).choose(&everywhere).or(any.last().copied())
    }

    /// Applies a model's policy (from the KV watch, or written here), and
    /// starts or ends this gateway's view of its trial.
    fn apply_policy(&self, name: &str, policy: Option<DefaultPolicy>) {
        let mut trials = self.trials.lock().unwrap_or_else(|p| p.into_inner());
        match policy.as_ref().and_then(|p| p.canary.clone().map(|c| (c, p.pinned.unwrap_or_default()))) {
            Some((c, base)) => {
                if trials.get(name).is_none_or(|t| (t.canary, t.base) != (c.version, base)) {
                    let trial = Trial { canary: c.version, base, rollout: c.rollout, canary_tally: Tally::default(), base_tally: Tally::default(), deciding: false };
                    trials.insert(name.to_string(), trial);
                }
            }
            None => {
                trials.remove(name);
            }
        }
        drop(trials);
        let mut policies = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        match policy {
            Some(p) => policies.insert(name.to_string(), p),
            None => policies.remove(name),
        };
    }

    /// Whether items of `model` at `version` count in a trial.
    fn in_trial(&self, model: &str, version: u64) -> bool {
        let trials = self.trials.lock().unwrap_or_else(|p| p.into_inner());
        trials.get(model).is_some_and(|t| version == t.canary || version == t.base)
    }

    /// Counts one answered item in its model's trial and judges it; a
    /// verdict is written to the fleet off this path. Failures of the
    /// gateway or the engine (`busy`, `internal`) are not the version's.
    fn count(self: &Arc<Self>, model: &str, version: u64, done: &ItemDone) {
        let failed = match &done.result {
            Ok(_) => false,
            Err(f) if matches!(f.code, ErrorCode::Busy | ErrorCode::Internal | ErrorCode::DeadlineExceeded) => return,
            Err(_) => true,
        };
        let mut trials = self.trials.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = trials.get_mut(model) else { return };
        let tally = match version {
            v if v == t.canary => &mut t.canary_tally,
            v if v == t.base => &mut t.base_tally,
            _ => return,
        };
        match failed {
            true => tally.failed += 1,
            false => tally.ok += 1,
        }
        if t.deciding {
            return;
        }
        let (promoted, why) = match defaults::judge(&t.rollout, t.canary_tally, t.base_tally) {
            Verdict::Running => return,
            Verdict::Promote(why) => (true, why),
            Verdict::RollBack(why) => (false, why),
        };
        t.deciding = true;
        let canary = t.canary;
        drop(trials);
        tokio::spawn(self.clone().decide(model.to_string(), canary, promoted, why));
    }

    /// Writes a trial's verdict to the fleet, unless another gateway ended
    /// the trial first.
    async fn decide(self: Arc<Self>, name: String, version: u64, promoted: bool, why: String) {
        let ended = fleet::update_policy(&self.stores, &name, |p| {
            let on_trial = p.canary.as_ref().is_some_and(|c| c.version == version);
            if on_trial {
                p.end_trial(version, promoted, &why);
            }
            Ok(on_trial)
        })
        .await;
        match ended {
            Ok((true, policy)) => {
                self.apply_policy(&name, Some(policy));
                crate::metrics::trial_ended(&name, version, promoted, &why, " fleet-wide");
            }
            Ok((false, _)) => tracing::debug!(app = %name, version, "the trial was ended elsewhere"),
            Err((_, e)) => {
                tracing::warn!(app = %name, version, "writing the trial's verdict (judged again on the next item): {e}");
                if let Some(t) = self.trials.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&name) {
                    t.deciding = false;
                }
            }
        }
    }

    /// This gateway's view of `model`'s trial of `version`, for `models`.
    fn canary_info(&self, model: &str, version: u64) -> Option<tensorgate_protocol::CanaryInfo> {
        let trials = self.trials.lock().unwrap_or_else(|p| p.into_inner());
        trials.get(model).filter(|t| t.canary == version).map(|t| tensorgate_protocol::CanaryInfo {
            share: t.rollout.canary_share,
            items_needed: t.rollout.canary_items,
            items_ok: t.canary_tally.ok,
            items_failed: t.canary_tally.failed,
        })
    }

    /// The default-version policy of `model`.
    fn policy(&self, model: &str) -> DefaultPolicy {
        self.policies.lock().unwrap_or_else(|p| p.into_inner()).get(model).cloned().unwrap_or_default()
    }

    /// Payload bytes one engine message can carry.
    fn max_body(&self) -> usize {
        self.client.server_info().max_payload.saturating_sub(HEADER_ROOM)
    }

    /// Queues `queued` in the engine, then whatever the request started
    /// meanwhile, until nothing is left.
    async fn send_queued(self: Arc<Self>, session: Arc<RemoteSession>, mut queued: Vec<(u64, Item)>) {
        loop {
            self.send_groups(&session, queued).await;
            let mut outbox = session.queue.lock().unwrap_or_else(|p| p.into_inner());
            if outbox.items.is_empty() {
                outbox.sending = false;
                return;
            }
            queued = std::mem::take(&mut outbox.items);
        }
    }

    /// Queues items in the engine in groups (at most the session's
    /// `group_max` items, a fair share of the burst per worker, and half a
    /// message's bytes), all groups at once; an item the engine does not
    /// take fails `busy`.
    async fn send_groups(&self, session: &RemoteSession, queued: Vec<(u64, Item)>) {
        let budget = self.max_body() / 2;
        let mut groups = Vec::new();
        // Items cancelled meanwhile (deadline, client gone) are not sent.
        let queued: Vec<(u64, Item)> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            queued.into_iter().filter(|(key, _)| pending.contains_key(key)).collect()
        };
        // Spread a burst over the workers, and never hand one worker more
        // items in one message than it runs at once.
        let per_group = queued.len().div_ceil(session.workers).clamp(1, session.group_max);
        let mut rest = queued.into_iter().peekable();
        while rest.peek().is_some() {
            let (mut group, mut bytes) = (Vec::new(), 0);
            while let Some((_, item)) = rest.peek() {
                let head_bytes = 256 + item.head.content_type.len() + item.head.metadata.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
                let size = item.payload.len() + head_bytes;
                if !group.is_empty() && (group.len() == per_group || bytes + size > budget) {
                    break;
                }
                bytes += size;
                group.extend(rest.next());
            }
            groups.push(group);
        }
        let sends = groups.into_iter().map(|g| self.publish_group(session, g));
        futures_util::future::join_all(sends).await;
    }

    /// Queues one group (a lone item in the single-item form) and waits for
    /// the engine to confirm it, retrying with the same message id (the
    /// engine drops duplicates).
    async fn publish_group(&self, session: &RemoteSession, group: Vec<(u64, Item)>) {
        let keys: Vec<u64> = group.iter().map(|(k, _)| *k).collect();
        let work_head = |item: ItemHead| WorkHead { item, request_id: session.request_id.clone(), deadline_unix_ms: session.deadline_unix_ms };
        let reply_to = self.reply_subject.as_str();
        let (headers, body) = match <[(u64, Item); 1]>::try_from(group) {
            Ok([(key, item)]) => {
                let key = key.to_string();
                (wire::headers(&work_head(item.head), &[(wire::KEY, key.as_str()), (wire::REPLY_TO, reply_to)]), item.payload)
            }
            Err(group) => {
                let members: Vec<(u64, WorkHead, Bytes)> =
                    group.into_iter().map(|(key, item)| (key, work_head(item.head), item.payload)).collect();
                let mut map = async_nats::HeaderMap::new();
                map.insert(wire::GROUP, members.len().to_string().as_str());
                map.insert(wire::REPLY_TO, reply_to);
                (map, wire::pack(&members))
            }
        };
        let msg_id = format!("{}-{}", self.id, keys[0]);
        let mut last_error = String::new();
        for attempt in 0..PUBLISH_ATTEMPTS {
            let publish = PublishMessage::build().payload(body.clone()).headers(headers.clone()).message_id(&msg_id);
            match self.js.send_publish(session.subject.clone(), publish).await {
                Ok(ack) => match ack.into_future().await {
                    Ok(_) => return,
                    Err(e) => {
                        last_error = e.to_string();
                        tracing::debug!(items = keys.len(), attempt, "engine did not confirm the items: {e}");
                        if e.kind() != jetstream::context::PublishErrorKind::TimedOut {
                            break;
                        }
                    }
                },
                Err(e) => {
                    last_error = e.to_string();
                    tracing::debug!(items = keys.len(), attempt, "queueing failed: {e}");
                }
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if let Some(tx) = pending.remove(&key) {
                let mut failure = ItemFailure::new(ErrorCode::Busy, format!("the cluster engine did not take the item: {last_error}"));
                failure.retry_after_ms = Some(200);
                let _ = tx.send(ItemDone { result: Err(failure), timings: Default::default() });
            }
        }
    }

    /// Queues one item on its own (storing a payload above the engine's
    /// message limit in the large-item store) and waits for the first reply to it.
    async fn forward(self: Arc<Self>, session: Arc<RemoteSession>, item: Item) -> ItemDone {
        let index = item.head.index;
        let fail = |code, message: String| ItemDone { result: Err(ItemFailure::new(code, message)), timings: Default::default() };
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(key, tx);
        let _forget = Forget { inner: self.clone(), key };
        // Above the engine's message limit the payload goes to the large-item store.
        let max = self.client.server_info().max_payload.saturating_sub(HEADER_ROOM);
        let mut object = None;
        let payload = if item.payload.len() > max {
            let name = format!("i-{}-{key}", self.id);
            if let Err(e) = super::fleet::write_object(&self.client, &self.stores.large, &name, &item.payload).await {
                let mut done = fail(ErrorCode::Busy, format!("item {index}: the cluster engine did not store its {} bytes: {e}", item.payload.len()));
                if let Err(f) = &mut done.result {
                    f.retry_after_ms = Some(200);
                }
                return done;
            }
            object = Some(name);
            Bytes::new()
        } else {
            item.payload
        };
        let head = WorkHead {
            item: item.head,
            request_id: session.request_id.clone(),
            deadline_unix_ms: session.deadline_unix_ms,
        };
        let key_text = key.to_string();
        let mut extra = vec![(wire::KEY, key_text.as_str()), (wire::REPLY_TO, self.reply_subject.as_str())];
        if let Some(name) = &object {
            extra.push((wire::OBJECT, name.as_str()));
        }
        let headers = wire::headers(&head, &extra);
        let msg_id = format!("{}-{key}", self.id);
        let mut rx = rx;
        let mut last_error = String::new();
        for attempt in 0..PUBLISH_ATTEMPTS {
            let publish = PublishMessage::build().payload(payload.clone()).headers(headers.clone()).message_id(&msg_id);
            let ack = match self.js.send_publish(session.subject.clone(), publish).await {
                Ok(ack) => ack,
                Err(e) => {
                    last_error = e.to_string();
                    tracing::debug!(index, attempt, "queueing failed: {e}");
                    continue;
                }
            };
            let queued = Instant::now();
            // The reply can come before the engine's confirmation does.
            let ack = tokio::select! {
                ack = ack.into_future() => ack,
                done = &mut rx => return done.unwrap_or_else(|_| fail(ErrorCode::Internal, format!("item {index}: reply channel closed"))),
            };
            match ack {
                Ok(_) => {
                    let acked = queued.elapsed();
                    let done = rx.await.unwrap_or_else(|_| fail(ErrorCode::Internal, format!("item {index}: reply channel closed")));
                    tracing::trace!(index, ?acked, replied = ?queued.elapsed(), "item round trip");
                    return done;
                }
                Err(e) => {
                    last_error = e.to_string();
                    tracing::debug!(index, attempt, "engine did not confirm the item: {e}");
                    if e.kind() != jetstream::context::PublishErrorKind::TimedOut {
                        break;
                    }
                }
            }
        }
        if let Some(name) = &object {
            let _ = self.stores.large.delete(name).await;
        }
        let mut done = fail(ErrorCode::Busy, format!("item {index}: the cluster engine did not take the item: {last_error}"));
        if let Err(f) = &mut done.result {
            f.retry_after_ms = Some(200);
        }
        done
    }
}

/// Takes an item off the pending map when its future ends or is dropped
/// (answered, cancelled, deadline passed): a later reply is dropped.
struct Forget {
    inner: Arc<Inner>,
    key: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl ItemRunner for Gateway {
    type Session = Arc<RemoteSession>;

    fn route(&self, h: &PredictHeader) -> Result<(Routed, Arc<RemoteSession>), Reject> {
        let version = self.inner.route(&h.model, h.version)?;
        let capacities: Vec<u64> = self
            .inner
            .live()
            .iter()
            .filter(|w| w.state == WorkerState::Serving)
            .filter_map(|w| w.apps.iter().find(|a| a.info.name == h.model && a.info.version == version).map(|a| a.capacity))
            .collect();
        let smallest = capacities.iter().min().copied().unwrap_or(GROUP_MAX as u64);
        let session = RemoteSession {
            subject: self.inner.subjects.work(&h.model, version),
            request_id: h.request_id.clone(),
            deadline_unix_ms: h.deadline_ms.map(|ms| unix_ms().saturating_add(ms)),
            queue: Mutex::new(Outbox::default()),
            workers: capacities.len().max(1),
            group_max: (smallest as usize).clamp(1, GROUP_MAX),
            trial: self.inner.in_trial(&h.model, version).then(|| (h.model.clone(), version)),
        };
        Ok((Routed { model: h.model.clone(), version }, Arc::new(session)))
    }

    /// A large item goes on its own at once; a small one is registered and
    /// queued with the others of its burst until [`ItemRunner::flush`].
    fn run(&self, session: &Arc<RemoteSession>, item: Item, _alone: bool) -> ItemFuture {
        let inner = self.inner.clone();
        if item.payload.len() > inner.max_body() / 4 {
            let session = session.clone();
            return Box::pin(async move {
                let done = inner.clone().forward(session.clone(), item).await;
                if let Some((model, version)) = &session.trial {
                    inner.count(model, *version, &done);
                }
                done
            });
        }
        let index = item.head.index;
        let key = inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        inner.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(key, tx);
        session.queue.lock().unwrap_or_else(|p| p.into_inner()).items.push((key, item));
        let trial = session.trial.clone();
        let forget = Forget { inner, key };
        Box::pin(async move {
            let forget = forget;
            let done = rx.await.unwrap_or_else(|_| ItemDone {
                result: Err(ItemFailure::new(ErrorCode::Internal, format!("item {index}: reply channel closed"))),
                timings: Default::default(),
            });
            if let Some((model, version)) = &trial {
                forget.inner.count(model, *version, &done);
            }
            done
        })
    }

    fn flush(&self, session: &Arc<RemoteSession>) {
        let mut outbox = session.queue.lock().unwrap_or_else(|p| p.into_inner());
        if outbox.sending || outbox.items.is_empty() {
            return;
        }
        outbox.sending = true;
        let queued = std::mem::take(&mut outbox.items);
        drop(outbox);
        tokio::spawn(self.inner.clone().send_queued(session.clone(), queued));
    }
}

/// Hands each reply to its waiting item (the first one wins) and confirms
/// it to the worker, so that it acknowledges the item to the engine.
async fn listen_replies(inner: std::sync::Weak<Inner>, mut replies: async_nats::Subscriber) {
    while let Some(msg) = replies.next().await {
        let Some(inner) = inner.upgrade() else { return };
        if wire::text(msg.headers.as_ref(), wire::GROUP).is_some() {
            match wire::unpack::<ReplyHead>(&msg.payload) {
                Ok(members) => {
                    let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
                    for (key, head, payload) in members {
                        // None: already answered (a redelivered duplicate) or no longer wanted.
                        if let Some(tx) = pending.remove(&key) {
                            let _ = tx.send(head.into_done(payload));
                        }
                    }
                }
                // Not confirmed: the worker hands the items back and they run again.
                Err(e) => {
                    tracing::error!("unreadable group reply from a worker: {e}");
                    continue;
                }
            }
            if let Some(reply) = msg.reply {
                let _ = inner.client.publish(reply, Bytes::new()).await;
            }
            continue;
        }
        let key = wire::text(msg.headers.as_ref(), wire::KEY).and_then(|k| k.parse::<u64>().ok());
        let waiting = key.and_then(|k| inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&k));
        let object = wire::text(msg.headers.as_ref(), wire::OBJECT).map(str::to_string);
        match (waiting, wire::head::<ReplyHead>(msg.headers.as_ref())) {
            (Some(tx), Ok(head)) => match object {
                None => {
                    let _ = tx.send(head.into_done(msg.payload));
                }
                // A large result: fetched from the store off this loop.
                Some(name) => {
                    let large = inner.stores.large.clone();
                    tokio::spawn(async move {
                        let done = match super::fleet::read_object(&large, &name).await {
                            Ok(data) => head.into_done(Bytes::from(data)),
                            Err(e) => ItemDone {
                                result: Err(ItemFailure::new(ErrorCode::Internal, format!("large result: {e}"))),
                                timings: head.timings,
                            },
                        };
                        let _ = large.delete(&name).await;
                        let _ = tx.send(done);
                    });
                }
            },
            (Some(tx), Err(e)) => {
                let failure = ItemFailure::new(ErrorCode::Internal, format!("unreadable reply from a worker: {e}"));
                let _ = tx.send(ItemDone { result: Err(failure), timings: Default::default() });
            }
            // Already answered (a redelivered duplicate) or no longer wanted.
            (None, _) => {
                if let Some(name) = object {
                    let _ = inner.stores.large.delete(&name).await;
                }
            }
        }
        if let Some(reply) = msg.reply {
            let _ = inner.client.publish(reply, Bytes::new()).await;
        }
    }
}

/// Keeps each model's default-version policy from the fleet's KV bucket
/// (every gateway routes by the same policies).
async fn watch_policies(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(kv) = inner.upgrade().map(|i| i.stores.kv.clone()) else { return };
        let mut watch = match kv.watch_with_history(format!("{}>", fleet::POLICY_PREFIX)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the default versions (retrying): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Some(inner) = inner.upgrade() else { return };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!("default-version watch: {e}");
                    break;
                }
            };
            let Some(name) = entry.key.strip_prefix(fleet::POLICY_PREFIX) else { continue };
            match (entry.operation, serde_json::from_slice::<DefaultPolicy>(&entry.value)) {
                (async_nats::jetstream::kv::Operation::Put, Ok(p)) => inner.apply_policy(name, Some(p)),
                (async_nats::jetstream::kv::Operation::Put, Err(e)) => tracing::warn!(model = name, "unreadable default-version policy: {e}"),
                _ => inner.apply_policy(name, None),
            }
        }
    }
}

/// Keeps the fleet view from the workers' adverts.
async fn listen_adverts(inner: std::sync::Weak<Inner>, mut adverts: async_nats::Subscriber) {
    while let Some(msg) = adverts.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let advert: Advert = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("unreadable advert: {e}");
                continue;
            }
        };
        let mut fleet = inner.fleet.lock().unwrap_or_else(|p| p.into_inner());
        if advert.state == WorkerState::Left {
            tracing::info!(worker = %advert.id, "worker left");
            fleet.remove(&advert.id);
        } else {
            if !fleet.contains_key(&advert.id) {
                tracing::info!(worker = %advert.id, host = %advert.hostname, device = %advert.device, apps = advert.apps.len(), "worker joined");
            }
            fleet.insert(advert.id.clone(), (advert, Instant::now()));
        }
    }
}

impl Fleet for Gateway {
    fn status(&self) -> Pin<Box<dyn Future<Output = FleetStatus> + Send + '_>> {
        Box::pin(async move {
            let live = self.inner.live();
            let mut models: BTreeMap<(String, u64), ModelStatus> = BTreeMap::new();
            let mut workers = Vec::new();
            let mut load_errors: Vec<LoadFailure> = Vec::new();
            for w in &live {
                let mut ws = WorkerStatus {
                    id: w.id.clone(),
                    hostname: w.hostname.clone(),
                    state: w.state.as_str().to_string(),
                    device: w.device.clone(),
                    uptime_s: w.uptime_s,
                    ..WorkerStatus::default()
                };
                for a in &w.apps {
                    ws.models.push(format!("{}/{}", a.info.name, a.info.version));
                    ws.capacity += a.capacity;
                    ws.in_flight += a.in_flight;
                    ws.items_ok += a.info.items_ok;
                    ws.items_failed += a.info.items_failed;
                    let m = models.entry((a.info.name.clone(), a.info.version)).or_insert_with(|| ModelStatus {
                        name: a.info.name.clone(),
                        version: a.info.version,
                        description: a.info.description.clone(),
                        ..ModelStatus::default()
                    });
                    if !m.device.split(", ").any(|d| d == a.info.device) {
                        m.device = if m.device.is_empty() { a.info.device.clone() } else { format!("{}, {}", m.device, a.info.device) };
                    }
                    m.items_ok += a.info.items_ok;
                    m.items_failed += a.info.items_failed;
                    m.forwards += a.forwards;
                    m.forward_rows += a.forward_rows;
                    m.forward_us += a.forward_us;
                    m.queued += a.queued;
                    m.workers += 1;
                    m.capacity += a.capacity;
                    m.in_flight += a.in_flight;
                }
                load_errors.extend(w.load_errors.iter().map(|f| LoadFailure { error: format!("worker {}: {}", w.id, f.error), ..f.clone() }));
                workers.push(ws);
            }
            // Items queued in the engine and not yet pulled by any worker.
            if let Ok(stream) = self.inner.js.get_stream(self.inner.cluster.work_stream()).await {
                for ((name, version), m) in models.iter_mut() {
                    let durable = self.inner.subjects.consumer(name, *version);
                    if let Ok(mut c) = stream.get_consumer::<jetstream::consumer::pull::Config>(&durable).await {
                        if let Ok(info) = c.info().await {
                            m.queued += info.num_pending;
                        }
                    }
                }
            }
            for ((name, version), m) in models.iter_mut() {
                m.default = self.inner.default_version(name) == Some(*version);
                m.rolled_back = self.inner.policy(name).rolled_back.get(version).cloned();
                m.canary = self.inner.canary_info(name, *version);
            }
            FleetStatus { models: models.into_values().collect(), workers, load_errors }
        })
    }

    fn models(&self) -> (Vec<ModelInfo>, Vec<LoadFailure>) {
        let live = self.inner.live();
        let mut out: BTreeMap<(String, u64), ModelInfo> = BTreeMap::new();
        let mut errors = Vec::new();
        for w in &live {
            for a in &w.apps {
                let m = out.entry((a.info.name.clone(), a.info.version)).or_insert_with(|| ModelInfo {
                    requests: 0,
                    items_ok: 0,
                    items_failed: 0,
                    ..a.info.clone()
                });
                m.requests += a.info.requests;
                m.items_ok += a.info.items_ok;
                m.items_failed += a.info.items_failed;
            }
            errors.extend(w.load_errors.iter().map(|f| LoadFailure { error: format!("worker {}: {}", w.id, f.error), ..f.clone() }));
        }
        let mut models: Vec<ModelInfo> = out.into_values().collect();
        for m in &mut models {
            m.default = self.inner.default_version(&m.name) == Some(m.version);
            m.rolled_back = self.inner.policy(&m.name).rolled_back.get(&m.version).cloned();
            m.canary = self.inner.canary_info(&m.name, m.version);
        }
        (models, errors)
    }

    fn role(&self) -> &'static str {
        "gateway"
    }

    fn manage(
        &self,
        header: RequestHeader,
        upload: Vec<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<(Option<Bytes>, AdminReply), Failure>> + Send + '_>> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.cluster.prefix.as_str();
            match header {
                RequestHeader::Upload(h) => {
                    let mut archive = Vec::with_capacity(upload.iter().map(Bytes::len).sum());
                    for c in &upload {
                        archive.extend_from_slice(c);
                    }
                    fleet::upload(&inner.client, prefix, &inner.stores, self, archive, h.replace).await.map(|r| (None, r))
                }
                RequestHeader::Delete(h) => fleet::delete(&inner.stores, self, &h).await.map(|r| (None, r)),
                RequestHeader::Reload(h) => fleet::reload(&inner.client, prefix, self, h.model).await.map(|r| (None, r)),
                RequestHeader::Promote(h) => fleet::promote(&inner.stores, self, &h).await.map(|r| (None, r)),
                RequestHeader::Rollback(h) => fleet::rollback(&inner.stores, self, &h).await.map(|r| (None, r)),
                RequestHeader::Fetch(h) => {
                    let (archive, message) = fleet::fetch(&inner.stores, &h).await?;
                    Ok((Some(archive), AdminReply { message, ..AdminReply::default() }))
                }
                other => Err((ErrorCode::Internal, format!("`{}` is not a fleet management request", other.op()))),
            }
        })
    }
}

impl fleet::View for Gateway {
    fn live_workers(&self) -> Vec<String> {
        self.inner.live().into_iter().filter(|w| w.state == WorkerState::Serving).map(|w| w.id).collect()
    }

    fn holds(&self, ids: &[String], name: &str, version: u64, present: bool) -> bool {
        self.inner
            .live()
            .iter()
            .filter(|w| ids.contains(&w.id))
            .all(|w| w.apps.iter().any(|a| a.info.name == name && a.info.version == version) == present)
    }

    fn models(&self) -> Vec<ModelInfo> {
        Fleet::models(self).0
    }

    fn everywhere(&self, name: &str) -> Result<BTreeSet<u64>, Failure> {
        self.inner.holdings(name).map(|(_, everywhere)| everywhere).map_err(|r| (r.code, r.message))
    }

    fn default_of(&self, name: &str) -> Option<u64> {
        self.inner.default_version(name)
    }

    fn set_policy(&self, name: &str, policy: Option<DefaultPolicy>) {
        self.inner.apply_policy(name, policy);
    }

    fn policy(&self, name: &str) -> DefaultPolicy {
        self.inner.policy(name)
    }

    fn rollout(&self) -> Rollout {
        self.inner.cluster.rollout
    }
}
