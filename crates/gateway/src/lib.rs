//! The gateway role: the client protocol, unchanged (the same fronts and
//! request machine as a host), with a [`Gateway`] as the item runner and
//! the management. It links neither libtorch nor wasmtime.
//!
//! A gateway routes by the workers' adverts ([`tensorgate_cluster::core::fleet`]),
//! queues each request's items in the engine in groups for the version
//! they were routed to ([`runner`]), answers each with the first reply a
//! worker sends back ([`replies`]), advertises itself so workers know it
//! is alive ([`adverts`]), and manages the fleet ([`manage`]).

pub mod adverts;
pub mod command;
pub mod manage;
pub mod replies;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_cluster::core::fleet::FleetView;
use tensorgate_cluster::core::pending::Pending;
use tensorgate_cluster::core::rollouts::Rollouts;
use tensorgate_cluster::engine::Engine;
use tensorgate_cluster::{short_id, ClusterConfig, ClusterError};
use tensorgate_server::request::ItemDone;
use tokio::sync::oneshot;

/// Forwards items to the fleet, keeps the fleet view and manages the
/// fleet. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// What the gateway's tasks share.
struct Inner {
    /// This gateway's id (its reply subject's last token).
    id: String,
    /// Where its replies arrive.
    reply_subject: String,
    cluster: ClusterConfig,
    engine: Engine,
    /// Items waiting for a worker's reply.
    pending: Mutex<Pending<oneshot::Sender<ItemDone>>>,
    /// Workers and gateways as their adverts show them.
    view: Mutex<FleetView>,
    /// Default-version policies and canary trials.
    rollouts: Mutex<Rollouts>,
    /// Requests this gateway routed, per model version (its adverts carry them).
    requests: Mutex<BTreeMap<(String, u64), u64>>,
    /// Set when the gateway shuts down: its tasks end.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Locks a mutex, taking the data even if a holder panicked (every
/// critical section here leaves the data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gateway {
    /// Connects to the engine, starts listening for replies and adverts,
    /// advertises itself, and asks every worker to advertise (waiting
    /// briefly for their answers).
    pub async fn connect(cluster: ClusterConfig) -> Result<Gateway, ClusterError> {
        let id = format!("g-{}", short_id());
        let engine = Engine::connect(&cluster, &format!("tensorgate gateway {id}")).await?;
        let names = engine.names.clone();
        let sub_err = |e: async_nats::SubscribeError| ClusterError::JetStream(format!("subscribing: {e}"));
        let replies = engine.client.subscribe(names.reply(&id)).await.map_err(sub_err)?;
        let worker_adverts = engine.client.subscribe(names.advert()).await.map_err(sub_err)?;
        let gateway_adverts = engine.client.subscribe(names.gateway_advert()).await.map_err(sub_err)?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            reply_subject: names.reply(&id),
            id,
            view: Mutex::new(FleetView::new(cluster.heartbeat)),
            cluster,
            engine,
            pending: Mutex::new(Pending::new()),
            rollouts: Mutex::new(Rollouts::default()),
            requests: Mutex::new(BTreeMap::new()),
            stop,
        });
        tokio::spawn(adverts::watch_policies(Arc::downgrade(&inner)));
        tokio::spawn(replies::listen(Arc::downgrade(&inner), replies));
        tokio::spawn(adverts::listen_workers(Arc::downgrade(&inner), worker_adverts));
        tokio::spawn(adverts::listen_gateways(Arc::downgrade(&inner), gateway_adverts));
        tokio::spawn(adverts::advertise(Arc::downgrade(&inner), inner.stop.subscribe()));
        let _ = inner.engine.client.publish(names.ping(), Bytes::new()).await;
        let _ = inner.engine.client.flush().await;
        // Workers answer a ping within milliseconds; don't route blind at start.
        let wait = inner.cluster.heartbeat.min(Duration::from_millis(300));
        tokio::time::sleep(wait).await;
        let workers = lock(&inner.view).serving(Instant::now()).len();
        tracing::info!(gateway = %inner.id, workers, "gateway connected to the engine");
        Ok(Gateway { inner })
    }

    /// This gateway's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Says it leaves (workers then drop what it queued at once, instead of
    /// after three advert periods) and stops its tasks.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        adverts::publish_advert(&self.inner, tensorgate_cluster::wire::WorkerState::Left).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.engine.client.flush()).await;
    }
}
