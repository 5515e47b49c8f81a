//! The gateway's item runner: routes a request by the fleet view, gathers
//! the items of each burst, and queues them in the engine in groups (the
//! one planner of [`tensorgate_cluster::core::groups`]); each item waits
//! for its reply under its own key.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tensorgate_cluster::core::groups;
use tensorgate_cluster::core::retry::PublishRetry;
use tensorgate_cluster::unix_ms;
use tensorgate_cluster::wire::{self, Budget, Payload, WorkHead};
use tensorgate_protocol::{ErrorCode, Item, PredictHeader};
use tensorgate_server::request::{ItemDone, ItemFailure, ItemFuture, ItemRunner, Reject, Routed};
use tokio::sync::oneshot;

use crate::{lock, Gateway, Inner};

/// What one routed request's items need.
pub struct Session {
    /// Where its items are queued.
    subject: String,
    request_id: String,
    deadline_unix_ms: Option<u64>,
    /// Items started and waiting to be queued together.
    outbox: Mutex<Outbox>,
    /// Live workers serving the version (at routing).
    workers: usize,
    /// Items per message at most.
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

fn busy(message: String) -> ItemDone {
    let mut failure = ItemFailure::new(ErrorCode::Busy, message);
    failure.retry_after_ms = Some(PublishRetry::RETRY_AFTER_MS);
    ItemDone { result: Err(failure), timings: Default::default() }
}

impl Inner {
    /// Answers `key` with `done`, if it still waits.
    fn answer(&self, key: u64, done: ItemDone) {
        if let Some(tx) = lock(&self.pending).take(key) {
            let _ = tx.send(done);
        }
    }

    /// Queues `queued` in the engine, then whatever the request started
    /// meanwhile, until nothing is left.
    async fn send_queued(self: Arc<Self>, session: Arc<Session>, mut queued: Vec<(u64, Item)>) {
        loop {
            self.send(&session, queued).await;
            let mut outbox = lock(&session.outbox);
            if outbox.items.is_empty() {
                outbox.sending = false;
                return;
            }
            queued = std::mem::take(&mut outbox.items);
        }
    }

    /// Queues items in groups, all groups at once.
    async fn send(&self, session: &Session, queued: Vec<(u64, Item)>) {
        // Items cancelled meanwhile (deadline, client gone) are not sent.
        let queued: Vec<(u64, Item)> = {
            let pending = lock(&self.pending);
            queued.into_iter().filter(|(key, _)| pending.contains(*key)).collect()
        };
        let budget = self.engine.budget();
        let per_group = groups::per_group(queued.len(), session.workers, session.group_max);
        let sizes = queued.iter().map(|(_, item)| Budget::member_size(item.payload.len(), wire::item_head_size(&item.head)));
        let plan = groups::plan(sizes, per_group, budget.group());
        let sends = groups::split(queued, &plan).into_iter().map(|g| self.publish_group(session, budget, g));
        futures_util::future::join_all(sends).await;
    }

    /// Queues one group: payloads too large for a message go to the
    /// large-item store first. An item the engine does not take fails `busy`.
    async fn publish_group(&self, session: &Session, budget: Budget, group: Vec<(u64, Item)>) {
        let mut members = Vec::with_capacity(group.len());
        let mut objects = Vec::new();
        for (key, item) in group {
            let index = item.head.index;
            let payload = match budget.inline(item.payload.len()) {
                true => Payload::Inline(item.payload),
                false => {
                    let name = wire::item_object(&self.id, key);
                    if let Err(e) = self.engine.write_object(&self.engine.stores.large, &name, &item.payload).await {
                        let len = item.payload.len();
                        self.answer(key, busy(format!("item {index}: the cluster engine did not store its {len} bytes: {e}")));
                        continue;
                    }
                    objects.push(name.clone());
                    Payload::Object(name)
                }
            };
            let head = WorkHead { item: item.head, request_id: session.request_id.clone(), deadline_unix_ms: session.deadline_unix_ms };
            members.push((key, head, payload));
        }
        let Some(first) = members.first().map(|m| m.0) else { return };
        let headers =
            wire::group_headers(members.len(), &[(wire::REPLY_TO, self.reply_subject.as_str()), (wire::GATEWAY, self.id.as_str())]);
        let keys: Vec<u64> = members.iter().map(|m| m.0).collect();
        let msg_id = format!("{}-{first}", self.id);
        if let Err(e) = self.engine.publish_work(&session.subject, headers, wire::pack(&members), &msg_id).await {
            for name in objects {
                let _ = self.engine.stores.large.delete(&name).await;
            }
            for key in keys {
                self.answer(key, busy(format!("the cluster engine did not take the item: {}", e.message())));
            }
        }
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
        lock(&self.inner.pending).take(self.key);
    }
}

impl ItemRunner for Gateway {
    type Session = Arc<Session>;

    fn route(&self, h: &PredictHeader) -> Result<(Routed, Arc<Session>), Reject> {
        let inner = &self.inner;
        let policy = lock(&inner.rollouts).policy(&h.model);
        let route = lock(&inner.view).route(Instant::now(), &h.model, h.version, &policy, fastrand::f64())?;
        let on_trial = policy.in_trial(route.version);
        *lock(&inner.requests).entry((h.model.clone(), route.version)).or_default() += 1;
        let session = Session {
            subject: inner.engine.names.work(&h.model, route.version),
            request_id: h.request_id.clone(),
            deadline_unix_ms: h.deadline_ms.map(|ms| unix_ms().saturating_add(ms)),
            outbox: Mutex::new(Outbox::default()),
            workers: route.workers,
            group_max: route.group_max,
            trial: on_trial.then(|| (h.model.clone(), route.version)),
        };
        Ok((Routed { model: h.model.clone(), version: route.version }, Arc::new(session)))
    }

    /// Registers the item and gathers it with the others of its burst
    /// until [`ItemRunner::flush`].
    fn run(&self, session: &Arc<Session>, item: Item, _alone: bool) -> ItemFuture {
        let index = item.head.index;
        let (tx, rx) = oneshot::channel();
        let key = lock(&self.inner.pending).insert(tx);
        lock(&session.outbox).items.push((key, item));
        let trial = session.trial.clone();
        let forget = Forget { inner: self.inner.clone(), key };
        Box::pin(async move {
            let forget = forget;
            let done = rx.await.unwrap_or_else(|_| ItemDone {
                result: Err(ItemFailure::new(ErrorCode::Internal, format!("item {index}: reply channel closed"))),
                timings: Default::default(),
            });
            if let Some((model, version)) = &trial {
                let decision = lock(&forget.inner.rollouts).count(model, *version, &done);
                if let Some(d) = decision {
                    tokio::spawn(crate::manage::decide(forget.inner.clone(), d));
                }
            }
            done
        })
    }

    fn flush(&self, session: &Arc<Session>) {
        let mut outbox = lock(&session.outbox);
        if outbox.sending || outbox.items.is_empty() {
            return;
        }
        outbox.sending = true;
        let queued = std::mem::take(&mut outbox.items);
        drop(outbox);
        tokio::spawn(self.inner.clone().send_queued(session.clone(), queued));
    }
}
