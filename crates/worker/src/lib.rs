//! The worker role: a host that dials out to the engine, listens on no
//! port, and pulls items for every application version it holds, but only
//! as many as it has free capacity for, so a busy or slow GPU is never
//! handed more than it can run and faster workers take proportionally more.
//!
//! Each held version has its own pull loop ([`pull`]: its own model
//! executor and plugin pool, so its own capacity). A message's items run
//! side by side ([`run`]); it is acknowledged to the engine only after its
//! replies reached the gateway, or dropped when its gateway is gone (the
//! worker follows the gateways' adverts). The worker advertises what it
//! holds every heartbeat ([`advert`]), converges on the fleet's desired
//! state ([`converge`]), and on [`RunningWorker::drain`] stops pulling,
//! finishes what it holds, says it left, and returns.

pub mod advert;
pub mod command;
pub mod converge;
pub mod pull;
pub mod run;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tensorgate_cluster::core::gateways::Gateways;
use tensorgate_cluster::engine::Engine;
use tensorgate_cluster::wire::{GatewayAdvert, WorkerState};
use tensorgate_cluster::{short_id, ClusterConfig, ClusterError};
use tensorgate_runtime::host::Host;
use tensorgate_runtime::local::LocalRunner;
use tensorgate_runtime::repository::Repository;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Worker settings beside the cluster's.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Items pulled at once per application version; `None`: twice the
    /// model's `max_batch × instances` (the next batch fills while one runs).
    pub capacity: Option<usize>,
    /// Longest a drain waits for the items it holds.
    pub drain_timeout: Duration,
    /// The worker's id (kept across restarts with the same state
    /// directory); `None`: a new one.
    pub id: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { capacity: None, drain_timeout: Duration::from_secs(120), id: None }
    }
}

/// What every pull loop and item task of one worker shares.
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) hostname: String,
    pub(crate) device: String,
    pub(crate) cluster: ClusterConfig,
    pub(crate) engine: Engine,
    pub(crate) repo: Arc<Repository>,
    pub(crate) runner: LocalRunner,
    pub(crate) started: Instant,
    /// Set once the fleet state as it was at start has been applied.
    pub(crate) converged: watch::Receiver<bool>,
    /// The gateways, as their adverts and replies show them.
    pub(crate) gateways: Mutex<Gateways>,
    /// Gateways whose items were dropped (logged once each).
    pub(crate) dropped_for: Mutex<std::collections::HashSet<String>>,
    /// Whether an item has arrived yet (its time after joining is logged once).
    pub(crate) got_first: AtomicBool,
}

/// Locks a mutex, taking the data even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let id = options.id.clone().unwrap_or_else(|| format!("w-{}", short_id()));
        let engine = Engine::connect(&cluster, &format!("tensorgate worker {id}")).await?;
        let repo = host.repository().clone();
        let changed = Arc::new(tokio::sync::Notify::new());
        let (caught_up, converged) = watch::channel(false);
        let sub_err = |e: async_nats::SubscribeError| ClusterError::JetStream(format!("subscribing: {e}"));
        let pings = engine.client.subscribe(engine.names.ping()).await.map_err(sub_err)?;
        let gateway_adverts = engine.client.subscribe(engine.names.gateway_advert()).await.map_err(sub_err)?;
        let shared = Arc::new(Shared {
            converged,
            gateways: Mutex::new(Gateways::new(cluster.heartbeat)),
            dropped_for: Mutex::default(),
            got_first: AtomicBool::new(false),
            hostname: hostname(),
            device: host.device_name(),
            runner: host.runner(),
            id: id.clone(),
            cluster,
            engine,
            repo,
            started: Instant::now(),
        });
        let converge = tokio::spawn(converge::converge(shared.clone(), changed.clone(), caught_up));
        let reloads = tokio::spawn(converge::answer_reloads(shared.clone(), changed.clone()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            control(shared, options, pings, gateway_adverts, changed, stopped, host).await;
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

/// Keeps one pull loop per held version, follows the gateways' adverts,
/// advertises every heartbeat and when pinged; drains on stop. `host` is
/// kept alive for the worker's life.
async fn control(
    shared: Arc<Shared>,
    options: WorkerOptions,
    mut pings: async_nats::Subscriber,
    mut gateway_adverts: async_nats::Subscriber,
    changed: Arc<tokio::sync::Notify>,
    mut stopped: watch::Receiver<bool>,
    host: Host,
) {
    let mut converged = shared.converged.clone();
    let mut loops: HashMap<(String, u64), pull::AppLoop> = HashMap::new();
    let mut tick = tokio::time::interval(shared.cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                pull::sync_loops(&shared, &options, &mut loops);
                advert::advertise(&shared, &loops, WorkerState::Serving).await;
                lock(&shared.gateways).forget_old(Instant::now());
            }
            Some(_) = pings.next() => advert::advertise(&shared, &loops, WorkerState::Serving).await,
            Some(msg) = gateway_adverts.next() => {
                if let Ok(g) = serde_json::from_slice::<GatewayAdvert>(&msg.payload) {
                    let period = Duration::from_millis(g.heartbeat_ms);
                    lock(&shared.gateways).on_advert(&g.id, period, g.state == WorkerState::Left, Instant::now());
                }
            }
            // The repository changed (fleet change applied, reload): say so at once.
            _ = changed.notified() => {
                pull::sync_loops(&shared, &options, &mut loops);
                advert::advertise(&shared, &loops, WorkerState::Serving).await;
            }
            Ok(()) = converged.changed() => {
                pull::sync_loops(&shared, &options, &mut loops);
                advert::advertise(&shared, &loops, WorkerState::Serving).await;
            }
            _ = stopped.changed() => break,
        }
    }
    tracing::info!(worker = %shared.id, "draining: no new work; finishing what is held");
    for l in loops.values() {
        l.stop();
    }
    advert::advertise(&shared, &loops, WorkerState::Draining).await;
    let finish = async {
        for (_, l) in loops.drain() {
            l.finished().await;
        }
    };
    if tokio::time::timeout(options.drain_timeout, finish).await.is_err() {
        tracing::warn!(worker = %shared.id, "items still running after {:?}; leaving (the engine hands them to another worker)", options.drain_timeout);
    }
    advert::advertise(&shared, &HashMap::new(), WorkerState::Left).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.engine.client.flush()).await;
    drop(host);
    tracing::info!(worker = %shared.id, "drained; left the cluster");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
