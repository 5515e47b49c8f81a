//! What a gateway hears and says about the fleet: workers' and other
//! gateways' adverts (into its [`FleetView`](tensorgate_cluster::core::fleet::FleetView)),
//! the default-version policies in the fleet's KV bucket (into its
//! [`Rollouts`](tensorgate_cluster::core::rollouts::Rollouts)), and its own
//! advert every heartbeat, which tells workers it is alive.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Instant;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;
use tensorgate_cluster::core::fleet::FleetEvent;
use tensorgate_cluster::wire::{self, Advert, GatewayAdvert, RequestCount, WorkerState};
use tensorgate_server::metrics::names;
use tensorgate_server::rollout::DefaultPolicy;

use crate::{lock, Inner};

/// Logs (and counts) what changed in the fleet view.
pub(crate) fn log_events(inner: &Inner) {
    for event in lock(&inner.view).take_events() {
        let counted = match &event {
            FleetEvent::Joined { .. } => Some("joined"),
            FleetEvent::Left { .. } => Some("left"),
            FleetEvent::Dropped { .. } => Some("dropped"),
            FleetEvent::Restarted { .. } => Some("restarted"),
            FleetEvent::GatewayGone { .. } => None,
        };
        if let Some(event) = counted {
            metrics::counter!(names::CLUSTER_WORKER_EVENTS, "event" => event).increment(1);
        }
        match event {
            FleetEvent::Joined { id, hostname, device, apps } => {
                tracing::info!(worker = %id, host = %hostname, %device, apps, "worker joined")
            }
            FleetEvent::Left { id } => tracing::info!(worker = %id, "worker left"),
            FleetEvent::Dropped { id, silent } => {
                tracing::warn!(worker = %id, silent_ms = silent.as_millis() as u64, "worker dropped: no advert for three periods")
            }
            FleetEvent::Restarted { id } => tracing::info!(worker = %id, "worker restarted"),
            FleetEvent::GatewayGone { id } => tracing::info!(gateway = %id, "gateway gone"),
        }
    }
}

/// Keeps the fleet view from the workers' adverts.
pub(crate) async fn listen_workers(inner: Weak<Inner>, mut adverts: async_nats::Subscriber) {
    while let Some(msg) = adverts.next().await {
        let Some(inner) = inner.upgrade() else { return };
        match serde_json::from_slice::<Advert>(&msg.payload) {
            Ok(advert) => lock(&inner.view).on_advert(advert, Instant::now()),
            Err(e) => tracing::debug!("unreadable worker advert: {e}"),
        }
        log_events(&inner);
    }
}

/// Keeps the other gateways (and this one) in the fleet view: their
/// request counts make the fleet's `requests`.
pub(crate) async fn listen_gateways(inner: Weak<Inner>, mut adverts: async_nats::Subscriber) {
    while let Some(msg) = adverts.next().await {
        let Some(inner) = inner.upgrade() else { return };
        match serde_json::from_slice::<GatewayAdvert>(&msg.payload) {
            Ok(advert) => lock(&inner.view).on_gateway(advert, Instant::now()),
            Err(e) => tracing::debug!("unreadable gateway advert: {e}"),
        }
    }
}

/// This gateway's advert now.
pub(crate) fn own_advert(inner: &Inner, state: WorkerState) -> GatewayAdvert {
    let requests = lock(&inner.requests)
        .iter()
        .map(|((model, version), n)| RequestCount { model: model.clone(), version: *version, requests: *n })
        .collect();
    GatewayAdvert { id: inner.id.clone(), state, heartbeat_ms: inner.cluster.heartbeat.as_millis() as u64, requests }
}

/// Publishes this gateway's advert.
pub(crate) async fn publish_advert(inner: &Inner, state: WorkerState) {
    let advert = own_advert(inner, state);
    if let Err(e) = inner.engine.client.publish(inner.engine.names.gateway_advert(), wire::json(&advert)).await {
        tracing::debug!("gateway advert not sent: {e}");
    }
}

/// Advertises every heartbeat until stopped, and drops silent workers
/// from the view (logging it) at the same pace.
pub(crate) async fn advertise(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = match inner.upgrade() {
        Some(i) => i.cluster.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = Shown::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        publish_advert(&inner, WorkerState::Serving).await;
        lock(&inner.view).expire(Instant::now());
        log_events(&inner);
        if tensorgate_server::metrics::installed() {
            shown = record_fleet(&inner, shown).await;
        }
    }
}

/// Exports the fleet-change counters at zero (a rate over them then works
/// from the start).
pub(crate) fn zero_counters() {
    for event in ["joined", "left", "dropped", "restarted"] {
        metrics::counter!(names::CLUSTER_WORKER_EVENTS, "event" => event).increment(0);
    }
}

/// Sets the fleet gauges: workers per model and messages queued in the
/// engine per version (one consumer-info round trip each); a model or
/// version in `shown` (the last call's) and gone now is set to zero.
/// Returns what it set.
async fn record_fleet(inner: &Inner, shown: Shown) -> Shown {
    let (workers, versions) = lock(&inner.view).per_model(Instant::now());
    for gone in shown.0.iter().filter(|m| !workers.contains_key(*m)) {
        metrics::gauge!(names::CLUSTER_WORKERS, "model" => gone.clone()).set(0.0);
    }
    for (model, n) in &workers {
        metrics::gauge!(names::CLUSTER_WORKERS, "model" => model.clone()).set(*n as f64);
    }
    for (model, version) in shown.1.iter().filter(|v| !versions.contains(*v)) {
        metrics::gauge!(names::CLUSTER_QUEUED, "model" => model.clone(), "version" => version.to_string()).set(0.0);
    }
    for (model, version) in &versions {
        if let Some(queued) = inner.engine.queued(model, *version).await {
            metrics::gauge!(names::CLUSTER_QUEUED, "model" => model.clone(), "version" => version.to_string()).set(queued as f64);
        }
    }
    (workers.into_keys().collect(), versions)
}

/// The models and versions the fleet gauges were last set for.
type Shown = (BTreeSet<String>, BTreeSet<(String, u64)>);

/// Keeps each model's default-version policy from the fleet's KV bucket
/// (every gateway routes by the same policies).
pub(crate) async fn watch_policies(inner: Weak<Inner>) {
    loop {
        let Some(kv) = inner.upgrade().map(|i| i.engine.stores.kv.clone()) else { return };
        let mut watch = match kv.watch_with_history(format!("{}>", wire::POLICY_PREFIX)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the default versions (retrying): {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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
            let Some(name) = entry.key.strip_prefix(wire::POLICY_PREFIX) else { continue };
            match (entry.operation, serde_json::from_slice::<DefaultPolicy>(&entry.value)) {
                (Operation::Put, Ok(p)) => lock(&inner.rollouts).apply(name, Some(p)),
                (Operation::Put, Err(e)) => tracing::warn!(model = name, "unreadable default-version policy: {e}"),
                _ => lock(&inner.rollouts).apply(name, None),
            }
        }
    }
}
