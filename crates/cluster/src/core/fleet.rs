//! A gateway's view of the fleet, from the adverts of workers and
//! gateways: who is live, which versions they hold, where a request goes,
//! and the fleet's counters for `status` and `models`.
//!
//! Counters are fleet totals and never drop: when a worker leaves, goes
//! silent or restarts (its counters start again from zero), or a version
//! is replaced on it, what it had counted is kept aside ("retired") and
//! still added in. A worker silent for three of its advert periods is
//! dropped; every join, leave and drop is an event the caller logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tensorgate_protocol::{CanaryInfo, ErrorCode, LoadFailure, ModelInfo, ModelStatus, WorkerStatus};
use tensorgate_server::request::Reject;
use tensorgate_server::rollout::DefaultPolicy;

use super::rollouts::Rollouts;
use crate::wire::{Advert, AppAdvert, GatewayAdvert, WorkerState};

/// Items in one work message at most.
pub const GROUP_MAX: usize = 64;

/// Something that changed in the fleet, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// A worker advertised for the first time.
    Joined {
        /// Worker id.
        id: String,
        /// Its host name.
        hostname: String,
        /// Its device.
        device: String,
        /// Versions it holds.
        apps: usize,
    },
    /// A worker said it left.
    Left {
        /// Worker id.
        id: String,
    },
    /// A worker went silent and was dropped from the fleet.
    Dropped {
        /// Worker id.
        id: String,
        /// How long it had been silent.
        silent: Duration,
    },
    /// A worker restarted (same id, uptime went back).
    Restarted {
        /// Worker id.
        id: String,
    },
    /// A gateway went silent or left.
    GatewayGone {
        /// Gateway id.
        id: String,
    },
}

/// Counters of one version summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Items answered with a result.
    pub items_ok: u64,
    /// Items failed.
    pub items_failed: u64,
    /// Forward passes.
    pub forwards: u64,
    /// Rows through them.
    pub forward_rows: u64,
    /// Time in them (µs).
    pub forward_us: u64,
}

impl Counters {
    fn of(a: &AppAdvert) -> Counters {
        Counters {
            items_ok: a.info.items_ok,
            items_failed: a.info.items_failed,
            forwards: a.forwards,
            forward_rows: a.forward_rows,
            forward_us: a.forward_us,
        }
    }

    fn add(&mut self, o: Counters) {
        self.items_ok += o.items_ok;
        self.items_failed += o.items_failed;
        self.forwards += o.forwards;
        self.forward_rows += o.forward_rows;
        self.forward_us += o.forward_us;
    }

    /// Whether any counter is below `before`'s (the counting started again).
    fn restarted_since(&self, before: &Counters) -> bool {
        self.items_ok < before.items_ok || self.items_failed < before.items_failed || self.forwards < before.forwards
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The version.
    pub version: u64,
    /// Live workers serving it.
    pub workers: usize,
    /// Items per work message at most: [`GROUP_MAX`], or the smallest
    /// capacity of those workers.
    pub group_max: usize,
}

#[derive(Debug, Clone)]
struct Seen<A> {
    advert: A,
    at: Instant,
}

/// The fleet as adverts show it.
#[derive(Debug, Clone)]
pub struct FleetView {
    /// The advert period assumed where an advert does not state one.
    default_period: Duration,
    workers: BTreeMap<String, Seen<Advert>>,
    gateways: BTreeMap<String, Seen<GatewayAdvert>>,
    /// Counters of workers and version incarnations no longer advertised.
    retired: BTreeMap<(String, u64), Counters>,
    /// Requests of gateways no longer advertising.
    retired_requests: BTreeMap<(String, u64), u64>,
    events: Vec<FleetEvent>,
}

type Key = (String, u64);

fn period(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

impl FleetView {
    /// An empty view; `default_period`: the advert period assumed where an
    /// advert does not state its own.
    pub fn new(default_period: Duration) -> Self {
        FleetView {
            default_period,
            workers: BTreeMap::new(),
            gateways: BTreeMap::new(),
            retired: BTreeMap::new(),
            retired_requests: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn retire(&mut self, advert: &Advert) {
        for a in &advert.apps {
            self.retired.entry((a.info.name.clone(), a.info.version)).or_default().add(Counters::of(a));
        }
    }

    /// A worker's advert arrived at `now`.
    pub fn on_advert(&mut self, advert: Advert, now: Instant) {
        if advert.state == WorkerState::Left {
            if let Some(old) = self.workers.remove(&advert.id) {
                self.retire(&old.advert);
            }
            self.events.push(FleetEvent::Left { id: advert.id });
            return;
        }
        match self.workers.get(&advert.id).map(|s| s.advert.clone()) {
            None => self.events.push(FleetEvent::Joined {
                id: advert.id.clone(),
                hostname: advert.hostname.clone(),
                device: advert.device.clone(),
                apps: advert.apps.len(),
            }),
            Some(old) if advert.uptime_s < old.uptime_s => {
                self.retire(&old);
                self.events.push(FleetEvent::Restarted { id: advert.id.clone() });
            }
            Some(old) => {
                // A version gone from the worker, or counting again from zero
                // (replaced, reloaded): what it counted is kept.
                for a in &old.apps {
                    let now_counts = advert.apps.iter().find(|n| n.info.name == a.info.name && n.info.version == a.info.version);
                    let before = Counters::of(a);
                    if now_counts.is_none_or(|n| Counters::of(n).restarted_since(&before)) {
                        self.retired.entry((a.info.name.clone(), a.info.version)).or_default().add(before);
                    }
                }
            }
        }
        self.workers.insert(advert.id.clone(), Seen { advert, at: now });
    }

    /// A gateway's advert arrived at `now`.
    pub fn on_gateway(&mut self, advert: GatewayAdvert, now: Instant) {
        if advert.state == WorkerState::Left {
            self.gateway_gone(&advert.id);
            return;
        }
        self.gateways.insert(advert.id.clone(), Seen { advert, at: now });
    }

    fn gateway_gone(&mut self, id: &str) {
        if let Some(old) = self.gateways.remove(id) {
            for r in &old.advert.requests {
                *self.retired_requests.entry((r.model.clone(), r.version)).or_default() += r.requests;
            }
            self.events.push(FleetEvent::GatewayGone { id: id.to_string() });
        }
    }

    /// Drops workers and gateways silent for three of their periods at `now`.
    pub fn expire(&mut self, now: Instant) {
        let default = self.default_period;
        let silent: Vec<(String, Duration)> = self
            .workers
            .iter()
            .map(|(id, s)| (id.clone(), now.saturating_duration_since(s.at), period(s.advert.heartbeat_ms, default)))
            .filter(|(_, quiet, p)| *quiet >= *p * 3)
            .map(|(id, quiet, _)| (id, quiet))
            .collect();
        for (id, quiet) in silent {
            if let Some(old) = self.workers.remove(&id) {
                self.retire(&old.advert);
            }
            self.events.push(FleetEvent::Dropped { id, silent: quiet });
        }
        let gone: Vec<String> = self
            .gateways
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.at) >= period(s.advert.heartbeat_ms, default) * 3)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.gateway_gone(&id);
        }
    }

    /// What changed since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<FleetEvent> {
        std::mem::take(&mut self.events)
    }

    /// Live workers at `now`, by id (drops the silent ones first).
    pub fn live(&mut self, now: Instant) -> Vec<&Advert> {
        self.expire(now);
        self.workers.values().map(|s| &s.advert).collect()
    }

    /// Ids of live, serving workers.
    pub fn serving(&mut self, now: Instant) -> Vec<String> {
        self.live(now).into_iter().filter(|w| w.state == WorkerState::Serving).map(|w| w.id.clone()).collect()
    }

    /// For the metrics: each model's live, serving workers (a worker holding
    /// two versions counts once) and every (model, version) held, at `now`.
    pub fn per_model(&mut self, now: Instant) -> (BTreeMap<String, usize>, BTreeSet<(String, u64)>) {
        let mut workers = BTreeMap::new();
        let mut versions = BTreeSet::new();
        for w in self.live(now).into_iter().filter(|w| w.state == WorkerState::Serving) {
            let names: BTreeSet<&str> = w.apps.iter().map(|a| a.info.name.as_str()).collect();
            for name in names {
                *workers.entry(name.to_string()).or_insert(0) += 1;
            }
            versions.extend(w.apps.iter().map(|a| (a.info.name.clone(), a.info.version)));
        }
        (workers, versions)
    }

    /// Whether every worker in `ids` that is still live holds `name`
    /// `version` (`present`) or none does (`!present`).
    pub fn holds(&mut self, now: Instant, ids: &[String], name: &str, version: u64, present: bool) -> bool {
        self.live(now)
            .into_iter()
            .filter(|w| ids.contains(&w.id))
            .all(|w| w.apps.iter().any(|a| a.info.name == name && a.info.version == version) == present)
    }

    /// The versions of `model` held by some live serving worker (`any`),
    /// and those every one of them holds (`everywhere`: a new version is a
    /// candidate for the default only once the whole fleet has it ready).
    /// Workers still applying the fleet state they joined to do not hold
    /// the default back. Refused when no live worker serves the model.
    pub fn holdings(&mut self, now: Instant, model: &str) -> Result<(BTreeSet<u64>, BTreeSet<u64>), Reject> {
        let serving: Vec<&Advert> = self.live(now).into_iter().filter(|w| w.state == WorkerState::Serving).collect();
        let versions =
            |w: &Advert| -> BTreeSet<u64> { w.apps.iter().filter(|a| a.info.name == model).map(|a| a.info.version).collect() };
        let holders: Vec<BTreeSet<u64>> = serving.iter().map(|w| versions(w)).filter(|v| !v.is_empty()).collect();
        let settled: Vec<BTreeSet<u64>> =
            serving.iter().filter(|w| w.converged).map(|w| versions(w)).filter(|v| !v.is_empty()).collect();
        if holders.is_empty() {
            let names: BTreeSet<&str> = serving.iter().flat_map(|w| w.apps.iter().map(|a| a.info.name.as_str())).collect();
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

    /// The version a request for `model` (at `version`, if given) goes to,
    /// under `policy`; `draw` in `0..1` decides a canary's share.
    pub fn route(&mut self, now: Instant, model: &str, version: Option<u64>, policy: &DefaultPolicy, draw: f64) -> Result<Route, Reject> {
        let (any, everywhere) = self.holdings(now, model)?;
        let chosen = match version {
            Some(v) if any.contains(&v) => v,
            Some(v) => {
                let listed: Vec<String> = any.iter().map(u64::to_string).collect();
                return Err(Reject::new(
                    ErrorCode::UnknownModel,
                    format!("no worker serves model `{model}` version {v} (served: {})", listed.join(", ")),
                ));
            }
            None => {
                let chosen = match policy.canary.is_some() {
                    true => policy.route(&everywhere, draw),
                    false => policy.choose(&everywhere),
                };
                chosen.or(any.last().copied()).unwrap_or_default()
            }
        };
        // `holdings` dropped the silent workers already.
        let capacities: Vec<u64> = self
            .workers
            .values()
            .map(|s| &s.advert)
            .filter(|w| w.state == WorkerState::Serving)
            .filter_map(|w| w.apps.iter().find(|a| a.info.name == model && a.info.version == chosen).map(|a| a.capacity))
            .collect();
        let smallest = capacities.iter().min().copied().unwrap_or(GROUP_MAX as u64);
        Ok(Route { version: chosen, workers: capacities.len().max(1), group_max: (smallest as usize).clamp(1, GROUP_MAX) })
    }

    /// The default version of `model` under `policy` (not a canary's share).
    pub fn default_version(&mut self, now: Instant, model: &str, policy: &DefaultPolicy) -> Option<u64> {
        let (any, everywhere) = self.holdings(now, model).ok()?;
        policy.choose(&everywhere).or(any.last().copied())
    }

    /// What `status` and `models` say of `name` `version`'s rollout: whether
    /// it is the default, why it was rolled back, its trial.
    fn rollout_of(&mut self, now: Instant, rollouts: &Rollouts, name: &str, version: u64) -> (bool, Option<String>, Option<CanaryInfo>) {
        let policy = rollouts.policy(name);
        let default = self.default_version(now, name, &policy) == Some(version);
        (default, policy.rolled_back.get(&version).cloned(), rollouts.canary_info(name, version))
    }

    /// Requests routed to each version by every live gateway, plus those
    /// of gateways gone.
    fn requests(&self) -> BTreeMap<Key, u64> {
        let mut out = self.retired_requests.clone();
        for g in self.gateways.values() {
            for r in &g.advert.requests {
                *out.entry((r.model.clone(), r.version)).or_default() += r.requests;
            }
        }
        out
    }

    /// Load errors of every live worker, each naming its worker.
    fn load_errors(&self) -> Vec<LoadFailure> {
        let mut errors = Vec::new();
        for s in self.workers.values() {
            let w = &s.advert;
            errors.extend(w.load_errors.iter().map(|f| LoadFailure { error: format!("worker {}: {}", w.id, f.error), ..f.clone() }));
        }
        errors
    }

    /// `status` of the fleet at `now`: every version live workers serve,
    /// counters summed (fleet totals: retired counters included), the live
    /// workers, their load errors. `queued` (items still in the engine) is
    /// the caller's to add.
    pub fn status(&mut self, now: Instant, rollouts: &Rollouts) -> (Vec<ModelStatus>, Vec<WorkerStatus>, Vec<LoadFailure>) {
        self.expire(now);
        let mut models: BTreeMap<Key, ModelStatus> = BTreeMap::new();
        let mut workers = Vec::new();
        for s in self.workers.values() {
            let w = &s.advert;
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
                add_counters(m, Counters::of(a));
                m.queued += a.queued;
                m.workers += 1;
                m.capacity += a.capacity;
                m.in_flight += a.in_flight;
            }
            workers.push(ws);
        }
        for (key, m) in models.iter_mut() {
            if let Some(c) = self.retired.get(key) {
                add_counters(m, *c);
            }
        }
        let errors = self.load_errors();
        let mut models: Vec<ModelStatus> = models.into_values().collect();
        for m in &mut models {
            (m.default, m.rolled_back, m.canary) = self.rollout_of(now, rollouts, &m.name, m.version);
        }
        (models, workers, errors)
    }

    /// `models` entries of the fleet at `now` (fleet totals) and every
    /// worker's load errors.
    pub fn models(&mut self, now: Instant, rollouts: &Rollouts) -> (Vec<ModelInfo>, Vec<LoadFailure>) {
        self.expire(now);
        let mut out: BTreeMap<Key, ModelInfo> = BTreeMap::new();
        for s in self.workers.values() {
            for a in &s.advert.apps {
                let m = out
                    .entry((a.info.name.clone(), a.info.version))
                    .or_insert_with(|| ModelInfo { requests: 0, items_ok: 0, items_failed: 0, ..a.info.clone() });
                m.items_ok += a.info.items_ok;
                m.items_failed += a.info.items_failed;
            }
        }
        let requests = self.requests();
        for (key, m) in out.iter_mut() {
            if let Some(c) = self.retired.get(key) {
                m.items_ok += c.items_ok;
                m.items_failed += c.items_failed;
            }
            m.requests = requests.get(key).copied().unwrap_or(0);
        }
        let errors = self.load_errors();
        let mut models: Vec<ModelInfo> = out.into_values().collect();
        for m in &mut models {
            (m.default, m.rolled_back, m.canary) = self.rollout_of(now, rollouts, &m.name, m.version);
        }
        (models, errors)
    }
}

fn add_counters(m: &mut ModelStatus, c: Counters) {
    m.items_ok += c.items_ok;
    m.items_failed += c.items_failed;
    m.forwards += c.forwards;
    m.forward_rows += c.forward_rows;
    m.forward_us += c.forward_us;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RequestCount;

    const HB: Duration = Duration::from_secs(1);

    fn app(name: &str, version: u64, ok: u64, capacity: u64) -> AppAdvert {
        AppAdvert {
            info: ModelInfo { name: name.into(), version, items_ok: ok, device: "cpu".into(), ..ModelInfo::default() },
            capacity,
            ..AppAdvert::default()
        }
    }

    fn worker(id: &str, uptime_s: u64, apps: Vec<AppAdvert>) -> Advert {
        Advert { id: id.into(), uptime_s, heartbeat_ms: 1000, apps, converged: true, ..Advert::default() }
    }

    fn ok_of(view: &mut FleetView, now: Instant) -> u64 {
        let (models, _, _) = view.status(now, &Rollouts::default());
        models.iter().map(|m| m.items_ok).sum()
    }

    #[test]
    fn routing_takes_the_newest_version_every_worker_holds_and_names_what_is_served() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 1, vec![app("m", 1, 0, 128), app("m", 2, 0, 128)]), t0);
        v.on_advert(worker("w2", 1, vec![app("m", 1, 0, 16)]), t0);
        let p = DefaultPolicy::default();
        let r = v.route(t0, "m", None, &p, 0.5).unwrap();
        assert_eq!(r, Route { version: 1, workers: 2, group_max: 16 }, "version 2 is not everywhere yet");
        assert_eq!(v.route(t0, "m", Some(2), &p, 0.5).unwrap(), Route { version: 2, workers: 1, group_max: 64 });
        let e = v.route(t0, "m", Some(3), &p, 0.5).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::UnknownModel, "no worker serves model `m` version 3 (served: 1, 2)"));
        let e = v.route(t0, "x", None, &p, 0.5).unwrap_err();
        assert_eq!(e.message, "no worker serves model `x` (2 worker(s) serve: m)");
        // A worker still converging does not hold the default back.
        v.on_advert(Advert { converged: false, ..worker("w3", 1, vec![app("m", 3, 0, 8)]) }, t0);
        assert_eq!(v.route(t0, "m", None, &p, 0.5).unwrap().version, 1);
    }

    #[test]
    fn per_model_counts_serving_workers_once_per_model_and_lists_held_versions() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 1, vec![app("m", 1, 0, 8), app("m", 2, 0, 8), app("n", 1, 0, 8)]), t0);
        v.on_advert(worker("w2", 1, vec![app("m", 1, 0, 8)]), t0);
        v.on_advert(Advert { state: WorkerState::Draining, ..worker("w3", 1, vec![app("n", 1, 0, 8)]) }, t0);
        let (workers, versions) = v.per_model(t0);
        assert_eq!(workers, BTreeMap::from([("m".to_string(), 2), ("n".to_string(), 1)]), "a draining worker serves nothing new");
        let want: BTreeSet<(String, u64)> = [("m", 1), ("m", 2), ("n", 1)].into_iter().map(|(m, n)| (m.to_string(), n)).collect();
        assert_eq!(versions, want);
        // w2 goes silent: three periods later it no longer counts.
        v.on_advert(worker("w1", 4, vec![app("m", 1, 0, 8)]), t0 + HB * 3);
        assert_eq!(v.per_model(t0 + HB * 3).0, BTreeMap::from([("m".to_string(), 1)]));
    }

    #[test]
    fn a_silent_worker_is_dropped_after_three_periods_and_the_drop_is_an_event() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 1, vec![app("m", 1, 0, 8)]), t0);
        v.on_advert(worker("w2", 1, vec![app("m", 1, 0, 8)]), t0);
        assert!(matches!(&v.take_events()[..], [FleetEvent::Joined { .. }, FleetEvent::Joined { .. }]));
        v.on_advert(worker("w2", 3, vec![app("m", 1, 0, 8)]), t0 + HB * 2);
        assert_eq!(v.serving(t0 + HB * 3), vec!["w2".to_string()]);
        assert_eq!(v.take_events(), vec![FleetEvent::Dropped { id: "w1".into(), silent: HB * 3 }]);
        v.on_advert(Advert { state: WorkerState::Left, ..worker("w2", 3, vec![]) }, t0 + HB * 3);
        assert_eq!(v.take_events(), vec![FleetEvent::Left { id: "w2".into() }]);
        let e = v.route(t0 + HB * 3, "m", None, &DefaultPolicy::default(), 0.0).unwrap_err();
        assert!(e.message.contains("no worker is connected"), "{}", e.message);
    }

    #[test]
    fn fleet_totals_never_drop_when_workers_leave_restart_or_reload() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 10, vec![app("m", 1, 100, 8)]), t0);
        v.on_advert(worker("w2", 10, vec![app("m", 1, 50, 8)]), t0);
        assert_eq!(ok_of(&mut v, t0), 150);
        // w1 restarts with the same id: its counters start again.
        v.on_advert(worker("w1", 0, vec![app("m", 1, 3, 8)]), t0 + HB);
        assert_eq!(ok_of(&mut v, t0 + HB), 153);
        assert!(v.take_events().contains(&FleetEvent::Restarted { id: "w1".into() }));
        // w2's version is reloaded (counting from zero), then w2 goes silent.
        v.on_advert(worker("w2", 11, vec![app("m", 1, 1, 8)]), t0 + HB);
        assert_eq!(ok_of(&mut v, t0 + HB), 154);
        v.on_advert(worker("w1", 5, vec![app("m", 1, 10, 8)]), t0 + HB * 4);
        assert_eq!(ok_of(&mut v, t0 + HB * 4), 161, "w2 dropped, its 1 kept");
        let (models, _) = v.models(t0 + HB * 4, &Rollouts::default());
        assert_eq!(models[0].items_ok, 161);
    }

    #[test]
    fn models_counts_the_requests_every_gateway_routed_including_gone_ones() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 1, vec![app("m", 1, 0, 8)]), t0);
        let g = |id: &str, n: u64| GatewayAdvert {
            id: id.into(),
            heartbeat_ms: 1000,
            requests: vec![RequestCount { model: "m".into(), version: 1, requests: n }],
            ..GatewayAdvert::default()
        };
        v.on_gateway(g("a", 7), t0);
        v.on_gateway(g("b", 5), t0);
        assert_eq!(v.models(t0, &Rollouts::default()).0[0].requests, 12);
        v.on_advert(worker("w1", 4, vec![app("m", 1, 0, 8)]), t0 + HB * 3);
        v.on_gateway(g("b", 6), t0 + HB * 3);
        assert_eq!(v.models(t0 + HB * 3, &Rollouts::default()).0[0].requests, 13, "a is gone; its 7 are kept");
        assert!(v.take_events().contains(&FleetEvent::GatewayGone { id: "a".into() }));
    }

    #[test]
    fn status_sums_per_version_and_marks_the_default() {
        let t0 = Instant::now();
        let mut v = FleetView::new(HB);
        v.on_advert(worker("w1", 1, vec![app("m", 1, 4, 8), app("m", 2, 1, 8)]), t0);
        v.on_advert(worker("w2", 1, vec![app("m", 1, 6, 16), app("m", 2, 2, 16)]), t0);
        let mut r = Rollouts::default();
        r.apply("m", Some(DefaultPolicy { pinned: Some(1), newest: 2, ..DefaultPolicy::default() }));
        let (models, workers, errors) = v.status(t0, &r);
        assert_eq!(workers.len(), 2);
        assert!(errors.is_empty());
        let one = models.iter().find(|m| m.version == 1).unwrap();
        assert_eq!((one.items_ok, one.workers, one.capacity, one.default), (10, 2, 24, true));
        assert!(!models.iter().find(|m| m.version == 2).unwrap().default);
    }
}
