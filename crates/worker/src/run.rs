//! Running one work message: its members side by side, each result sent
//! back as it finishes (those finishing together in one reply message). The
//! message is acknowledged once every reply reached the gateway; dropped
//! (removed from the engine, its slots freed at once) when its gateway is
//! gone; handed back to the engine when a live gateway did not confirm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, AckKind};
use async_nats::RequestErrorKind;
use tokio::sync::OwnedSemaphorePermit;
use bytes::Bytes;
use futures_util::StreamExt;
use tensorgate_cluster::core::gateways::GatewayState;
use tensorgate_cluster::core::groups;
use tensorgate_cluster::core::intake::{intake, DropReason, Intake};
use tensorgate_cluster::core::retry::{ReplyDelivery, ReplyError, ReplyNext};
use tensorgate_cluster::engine::read_object;
use tensorgate_cluster::unix_ms;
use tensorgate_cluster::wire::{self, Budget, Packed, Payload, ReplyHead, WorkHead};
use tensorgate_protocol::{ErrorCode, Item};
use tensorgate_runtime::application::Application;
use tensorgate_server::request::{ItemDone, ItemFailure, ItemRunner};

use crate::{lock, Shared};

/// A work message that passed [`screen`]: who wants its answers, and how
/// many items it holds (its body is read when it runs).
pub(crate) struct Work {
    msg: jetstream::Message,
    reply_to: String,
    gateway: String,
    items: usize,
}

impl Work {
    /// Items in it.
    pub(crate) fn len(&self) -> usize {
        self.items
    }

    /// The engine's message.
    pub(crate) fn message(&self) -> &jetstream::Message {
        &self.msg
    }
}

/// How a message's replies fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The gateway has them all.
    Confirmed,
    /// Its gateway is gone: nobody wants them.
    Dropped,
    /// A live gateway did not confirm: run them again.
    HandBack,
}

impl Delivery {
    fn and(self, other: Delivery) -> Delivery {
        match (self, other) {
            (Delivery::HandBack, _) | (_, Delivery::HandBack) => Delivery::HandBack,
            (Delivery::Dropped, _) | (_, Delivery::Dropped) => Delivery::Dropped,
            _ => Delivery::Confirmed,
        }
    }
}

/// Decides on a pulled message before it takes any slot, from its headers
/// alone: a message nobody can be answered about, or whose gateway is gone,
/// is removed from the engine here.
pub(crate) async fn screen(shared: &Shared, msg: jetstream::Message) -> Option<Work> {
    let headers = msg.headers.as_ref();
    let Some(reply_to) = wire::text(headers, wire::REPLY_TO).map(str::to_string) else {
        // Nobody can be answered about it: drop it for good.
        tracing::warn!(subject = %msg.subject, "work message without a reply subject; dropped");
        let _ = msg.ack_with(AckKind::Term).await;
        return None;
    };
    let gateway = wire::text(headers, wire::GATEWAY)
        .map(str::to_string)
        .unwrap_or_else(|| reply_to.rsplit('.').next().unwrap_or_default().to_string());
    let items = wire::group_size(headers);
    if lock(&shared.gateways).state(&gateway, Instant::now()) == GatewayState::Gone {
        drop_unrun(shared, msg, &gateway, DropReason::GatewayGone, items).await;
        return None;
    }
    Some(Work { msg, reply_to, gateway, items })
}

/// Removes a message from the engine unrun (and the large-item objects its
/// members name), counted and logged.
async fn drop_unrun(shared: &Shared, msg: jetstream::Message, gateway: &str, reason: DropReason, items: usize) {
    dropped(shared, gateway, reason, items);
    let _ = msg.ack().await;
    if let Ok(members) = wire::unpack::<WorkHead>(&msg.payload) {
        delete_objects(shared, &members).await;
    }
}

/// Logs (once per gone gateway) and counts items dropped unrun.
fn dropped(shared: &Shared, gateway: &str, reason: DropReason, items: usize) {
    metrics::counter!(tensorgate_server::metrics::names::CLUSTER_DROPPED, "reason" => reason.as_str()).increment(items as u64);
    if reason == DropReason::GatewayGone && lock(&shared.dropped_for).insert(gateway.to_string()) {
        tracing::warn!(worker = %shared.id, %gateway, "gateway gone: its queued items are dropped unrun (its clients retry elsewhere)");
    }
}

/// The large-item objects members name.
fn object_names<H>(members: &[Packed<H>]) -> Vec<String> {
    members
        .iter()
        .filter_map(|(_, _, p)| match p {
            Payload::Object(name) => Some(name.clone()),
            Payload::Inline(_) => None,
        })
        .collect()
}

/// Deletes large-item objects (once their message is done).
async fn delete_names(shared: &Shared, names: &[String]) {
    for name in names {
        let _ = shared.engine.stores.large.delete(name).await;
    }
}

/// Deletes the large-item objects of members (once their message is done).
async fn delete_objects<H>(shared: &Shared, members: &[Packed<H>]) {
    delete_names(shared, &object_names(members)).await;
}

/// Runs a message's members side by side (at most as many at once as the
/// slots it holds), sends each result back as it finishes, and settles the
/// message with the engine.
pub(crate) async fn run_message(shared: Arc<Shared>, app: Arc<Application>, work: Work, holding: Holding) {
    if !shared.got_first.swap(true, Ordering::Relaxed) {
        tracing::info!(worker = %shared.id, after_ms = shared.started.elapsed().as_secs_f64() * 1e3, "first item since joining");
    }
    let Work { msg, reply_to, gateway, items } = work;
    let members = match wire::unpack::<WorkHead>(&msg.payload) {
        Ok(m) => m,
        Err(e) => {
            // Nobody can be answered about it: drop it for good.
            tracing::warn!(subject = %msg.subject, "work message with an unreadable body ({e}); dropped");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    // Screened when pulled; it may have waited for slots since. Items past
    // their deadline are not run (their gateway has answered them).
    let state = lock(&shared.gateways).state(&gateway, Instant::now());
    let deadlines: Vec<Option<u64>> = members.iter().map(|(_, h, _)| h.deadline_unix_ms).collect();
    let run = match intake(state, &deadlines, unix_ms()) {
        Intake::Run(run) => run,
        Intake::Drop(reason) => {
            drop_unrun(&shared, msg, &gateway, reason, items.max(members.len())).await;
            return;
        }
    };
    let at_once = holding.0.len().max(1);
    let total = members.len();
    let objects = object_names(&members);
    let mut wanted = vec![false; total];
    for i in run {
        if let Some(w) = wanted.get_mut(i) {
            *w = true;
        }
    }
    let alone = wanted.iter().filter(|w| **w).count() == 1;
    let runs = members.into_iter().zip(wanted).filter(|(_, w)| *w).map(|(m, _)| m);
    let tasks = runs.map(|(key, head, payload)| {
        let (shared, app) = (shared.clone(), app.clone());
        async move {
            let index = head.item.index;
            let payload = match payload {
                Payload::Inline(bytes) => Ok(bytes),
                Payload::Object(name) => read_object(&shared.engine.stores.large, &name).await.map(Bytes::from),
            };
            let done = match payload {
                Ok(payload) => {
                    // `false`: a worker pulls items in groups; they are batched, never run inline.
                    let work = shared.runner.run(&app, Item { head: head.item, payload }, false);
                    // A lone item runs in the message's task (no hand-off to
                    // another task and back); several each in their own, so
                    // that their plugin calls run in parallel.
                    match alone {
                        true => work.await,
                        false => tokio::spawn(work).await.unwrap_or_else(|e| ItemDone {
                            result: Err(ItemFailure::new(ErrorCode::Internal, format!("item {index}: its task failed: {e}"))),
                            timings: Default::default(),
                        }),
                    }
                }
                Err(e) => ItemDone {
                    result: Err(ItemFailure::new(
                        ErrorCode::Internal,
                        format!("item {index}: its payload is not in the engine's large-item store: {e}"),
                    )),
                    timings: Default::default(),
                },
            };
            (key, index, done)
        }
    });
    let mut running = futures_util::stream::iter(tasks).buffer_unordered(at_once);
    let mut sending = futures_util::stream::FuturesUnordered::new();
    let period = shared.cluster.redeliver_after / 3;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut outcome = Delivery::Confirmed;
    let mut running_done = false;
    while !running_done || !sending.is_empty() {
        tokio::select! {
            next = running.next(), if !running_done => match next {
                Some(done) => {
                    let mut finished = vec![done];
                    while let Some(Some(more)) = futures_util::FutureExt::now_or_never(running.next()) {
                        finished.push(more);
                    }
                    sending.push(send_results(&shared, &msg, &reply_to, &gateway, finished));
                }
                None => running_done = true,
            },
            Some(sent) = sending.next() => outcome = outcome.and(sent),
            _ = progress.tick() => {
                // Its gateway gone: the rest is not run (dropping the items cancels them).
                if lock(&shared.gateways).state(&gateway, Instant::now()) == GatewayState::Gone {
                    outcome = outcome.and(Delivery::Dropped);
                    break;
                }
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
    }
    match outcome {
        Delivery::Confirmed => {
            let _ = msg.ack().await;
        }
        Delivery::Dropped => {
            dropped(&shared, &gateway, DropReason::GatewayGone, total);
            let _ = msg.ack().await;
        }
        Delivery::HandBack => {
            tracing::warn!(%reply_to, "the gateway confirmed no reply in time; the message is handed back to the engine");
            let _ = msg.ack_with(AckKind::Nak(Some(shared.cluster.redeliver_after))).await;
            drop(holding);
            return;
        }
    }
    delete_names(&shared, &objects).await;
    drop(holding);
}

/// Sends results finished together: large ones through the large-item
/// store, in as few reply messages as the size budget allows.
async fn send_results(shared: &Shared, msg: &jetstream::Message, reply_to: &str, gateway: &str, finished: Vec<(u64, u32, ItemDone)>) -> Delivery {
    let budget = shared.engine.budget();
    let mut members: Vec<Packed<ReplyHead>> = Vec::with_capacity(finished.len());
    for (key, index, done) in finished {
        let (mut head, payload) = ReplyHead::from_done(&shared.id, done);
        let payload = match budget.inline(payload.len()) {
            true => Payload::Inline(payload),
            false => {
                let name = wire::result_object(&shared.id, &nuid::next().to_string());
                match shared.engine.write_object(&shared.engine.stores.large, &name, &payload).await {
                    Ok(()) => Payload::Object(name),
                    Err(e) => {
                        let failed = ItemDone {
                            result: Err(ItemFailure::new(
                                ErrorCode::Internal,
                                format!("item {index}: storing its {} byte result: {e}", payload.len()),
                            )),
                            timings: head.timings,
                        };
                        let (h, p) = ReplyHead::from_done(&shared.id, failed);
                        head = h;
                        Payload::Inline(p)
                    }
                }
            }
        };
        members.push((key, head, payload));
    }
    let sizes = members.iter().map(|(_, h, p)| Budget::member_size(p.body_len(), h.size()));
    let plan = groups::plan(sizes, usize::MAX, budget.group());
    let mut outcome = Delivery::Confirmed;
    for group in groups::split(members, &plan) {
        let sent = match outcome {
            Delivery::Confirmed => deliver(shared, msg, reply_to, gateway, &group).await,
            other => other,
        };
        if sent != Delivery::Confirmed {
            // Nobody will fetch these results.
            delete_objects(shared, &group).await;
        }
        outcome = outcome.and(sent);
    }
    outcome
}

/// Hands one reply message to its gateway, retrying as [`ReplyDelivery`]
/// decides (telling the engine meanwhile that the work is in hand).
async fn deliver(shared: &Shared, msg: &jetstream::Message, reply_to: &str, gateway: &str, group: &[Packed<ReplyHead>]) -> Delivery {
    let headers = wire::group_headers(group.len(), &[]);
    let body = wire::pack(group);
    let mut delivery = ReplyDelivery::new(Instant::now());
    loop {
        let attempt = shared.engine.client.request_with_headers(reply_to.to_string(), headers.clone(), body.clone());
        let error = match tokio::time::timeout(delivery.wait(Instant::now()), attempt).await {
            Ok(Ok(_)) => {
                lock(&shared.gateways).on_confirmed(gateway);
                return Delivery::Confirmed;
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                lock(&shared.gateways).on_unreachable(gateway, Instant::now());
                ReplyError::NoResponders
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => ReplyError::TimedOut,
            Ok(Err(e)) => {
                tracing::debug!("reply to {reply_to} not sent: {e}");
                ReplyError::Engine
            }
            Err(_) => ReplyError::TimedOut,
        };
        let state = lock(&shared.gateways).state(gateway, Instant::now());
        match delivery.next(error, state, Instant::now()) {
            ReplyNext::Retry(wait) => {
                let _ = msg.ack_with(AckKind::Progress).await;
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            ReplyNext::Drop => return Delivery::Dropped,
            ReplyNext::HandBack => return Delivery::HandBack,
        }
    }
}

/// What a work message's items hold while they run: their slots and their count.
pub(crate) type Holding = (Vec<OwnedSemaphorePermit>, Held);

/// Counts items as held until they are answered.
pub(crate) struct Held(pub(crate) Arc<AtomicUsize>, pub(crate) usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}
