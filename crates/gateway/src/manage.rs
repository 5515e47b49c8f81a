//! Fleet management through a gateway: `status`, `models`, `upload`,
//! `fetch`, `delete`, `reload`, `promote`, `rollback`, acting on the whole
//! fleet. The cluster's repository lives in the engine: bundles in its
//! object store, the desired state and default-version policies in its KV
//! bucket (`tensorgate_cluster::wire`). Workers converge on the desired
//! state and report each outcome; a gateway changing it waits for the
//! reports of every live worker. A version that fails on any worker is
//! rolled back (the previous desired content, or none) and never becomes
//! the default; the failing worker's id and error are in the reply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest;
use tensorgate_cluster::core::rollouts::Decision;
use tensorgate_cluster::engine::{self, read_object};
use tensorgate_cluster::wire::{self, Desired, ReloadAnswer, Report};
use tensorgate_protocol::{AdminHeader, AdminReply, ErrorCode, LoadFailure, ModelInfo, RequestHeader};
use tensorgate_server::manage::{BoxFuture, Managed, Management, ModelState, Status};
use tensorgate_server::manifest::Manifest;
use tensorgate_server::request::Reject;
use tensorgate_server::rollout::{DefaultPolicy, PolicyError};

use crate::{lock, Gateway, Inner};

/// How long a gateway waits for every worker to report on a change.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

fn internal(what: &str, e: impl std::fmt::Display) -> Reject {
    Reject::new(ErrorCode::Internal, format!("{what}: {e}"))
}

fn required(h: &AdminHeader, op: &str) -> Result<String, Reject> {
    h.model.clone().ok_or_else(|| Reject::new(ErrorCode::BadRequest, format!("`{op}` needs a `model`")))
}

impl Inner {
    /// Ids of live, serving workers.
    fn live_workers(&self) -> Vec<String> {
        lock(&self.view).serving(Instant::now())
    }

    /// `models` entries of the fleet (this gateway's own request counts up to date).
    fn fleet_models(&self) -> (Vec<ModelInfo>, Vec<LoadFailure>) {
        let own = crate::adverts::own_advert(self, wire::WorkerState::Serving);
        let rollouts = lock(&self.rollouts).clone();
        let mut view = lock(&self.view);
        view.on_gateway(own, Instant::now());
        view.models(Instant::now(), &rollouts)
    }

    /// The versions of `name` every live serving worker holds ready.
    fn everywhere(&self, name: &str) -> Result<BTreeSet<u64>, Reject> {
        lock(&self.view).holdings(Instant::now(), name).map(|(_, everywhere)| everywhere)
    }

    /// The version a request naming none goes to.
    fn default_of(&self, name: &str) -> Option<u64> {
        let policy = lock(&self.rollouts).policy(name);
        lock(&self.view).default_version(Instant::now(), name, &policy)
    }

    fn holds(&self, ids: &[String], name: &str, version: u64, present: bool) -> bool {
        lock(&self.view).holds(Instant::now(), ids, name, version, present)
    }

    /// Applies a policy this gateway just wrote (the KV watch brings it
    /// too, a moment later; the reply must not race it).
    fn set_policy(&self, name: &str, policy: Option<DefaultPolicy>) {
        lock(&self.rollouts).apply(name, policy);
    }

    fn policy(&self, name: &str) -> DefaultPolicy {
        lock(&self.rollouts).policy(name)
    }

    /// Reads, changes with `edit` and writes back the policy of `name`,
    /// with compare-and-set so that two gateways changing it at once do not
    /// lose a change. Returns `edit`'s result and the policy written.
    async fn update_policy<T>(
        &self,
        name: &str,
        mut edit: impl FnMut(&mut DefaultPolicy) -> Result<T, Reject>,
    ) -> Result<(T, DefaultPolicy), Reject> {
        let key = wire::policy_key(name);
        let kv = &self.engine.stores.kv;
        let failed = |e: String| internal("writing the fleet's default versions", e);
        for _ in 0..8 {
            let entry = engine::entry(kv, &key).await.map_err(failed)?;
            let (mut policy, revision) = match &entry {
                Some((value, revision)) => (serde_json::from_slice(value).unwrap_or_default(), Some(*revision)),
                None => (DefaultPolicy::default(), None),
            };
            let out = edit(&mut policy)?;
            let body = wire::json(&policy);
            let written = match revision {
                Some(r) => kv.update(&key, body, r).await.map(|_| ()).map_err(|e| e.to_string()),
                None => kv.create(&key, body).await.map(|_| ()).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok((out, policy)),
                Err(e) => tracing::debug!(model = name, "default-version policy changed meanwhile (retrying): {e}"),
            }
        }
        Err(failed("another gateway kept changing it; try again".into()))
    }

    /// Reports from `workers` about one change, until each live one has
    /// reported (`done` true) or [`CHANGE_TIMEOUT`] passes.
    async fn collect_reports(
        &self,
        reports: &mut async_nats::Subscriber,
        workers: &[String],
        done: impl Fn(&Report) -> bool,
    ) -> BTreeMap<String, Report> {
        let mut got = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
        loop {
            let live = self.live_workers();
            if workers.iter().all(|w| got.contains_key(w) || !live.contains(w)) {
                return got;
            }
            match tokio::time::timeout(Duration::from_millis(250), reports.next()).await {
                Ok(Some(msg)) => {
                    if let Ok(r) = serde_json::from_slice::<Report>(&msg.payload) {
                        if workers.contains(&r.worker) && done(&r) {
                            got.insert(r.worker.clone(), r);
                        }
                    }
                }
                Ok(None) => return got,
                Err(_) if tokio::time::Instant::now() >= deadline => return got,
                Err(_) => {}
            }
        }
    }
}

/// Writes a trial's verdict to the fleet, unless another gateway ended
/// the trial first.
pub(crate) async fn decide(inner: Arc<Inner>, d: Decision) {
    let ended = inner
        .update_policy(&d.model, |p| {
            let on_trial = p.canary.as_ref().is_some_and(|c| c.version == d.canary);
            if on_trial {
                p.end_trial(d.canary, d.promoted, &d.why);
            }
            Ok(on_trial)
        })
        .await;
    match ended {
        Ok((true, policy)) => {
            inner.set_policy(&d.model, Some(policy));
            tensorgate_server::metrics::trial_ended(&d.model, d.canary, d.promoted, &d.why, " fleet-wide");
        }
        Ok((false, _)) => tracing::debug!(app = %d.model, version = d.canary, "the trial was ended elsewhere"),
        Err(e) => {
            tracing::warn!(app = %d.model, version = d.canary, "writing the trial's verdict (judged again on the next item): {}", e.message);
            lock(&inner.rollouts).undecided(&d.model);
        }
    }
}

fn policy_failure(e: PolicyError) -> Reject {
    let code = match e {
        PolicyError::NotReady { .. } => ErrorCode::UnknownModel,
        PolicyError::NothingEarlier { .. } => ErrorCode::Conflict,
    };
    Reject::new(code, format!("{e}; in a fleet, ready means held by every live worker serving the model"))
}

impl Management for Gateway {
    fn status(&self) -> BoxFuture<'_, Status> {
        Box::pin(async move {
            let inner = &self.inner;
            let rollouts = lock(&inner.rollouts).clone();
            let (mut models, workers, load_errors) = lock(&inner.view).status(Instant::now(), &rollouts);
            // Items queued in the engine and not yet pulled by any worker.
            for m in models.iter_mut() {
                m.queued += inner.engine.queued(&m.name, m.version).await.unwrap_or(0);
            }
            Status { role: "gateway", models, workers, load_errors }
        })
    }

    fn manage(&self, header: RequestHeader, upload: Vec<Bytes>) -> BoxFuture<'_, Result<Managed, Reject>> {
        Box::pin(async move {
            let inner = &self.inner;
            let reply = |reply: AdminReply| Managed { reply, archive: None };
            match header {
                RequestHeader::Models(_) => {
                    let (models, errors) = inner.fleet_models();
                    Ok(reply(AdminReply { models, errors, ..AdminReply::default() }))
                }
                RequestHeader::Upload(h) => {
                    let mut archive = Vec::with_capacity(upload.iter().map(Bytes::len).sum());
                    for c in &upload {
                        archive.extend_from_slice(c);
                    }
                    upload_bundle(inner, archive, h.replace).await.map(reply)
                }
                RequestHeader::Delete(h) => delete(inner, &h).await.map(reply),
                RequestHeader::Reload(h) => reload(inner, h.model).await.map(reply),
                RequestHeader::Promote(h) => promote(inner, &h).await.map(reply),
                RequestHeader::Rollback(h) => rollback(inner, &h).await.map(reply),
                RequestHeader::Fetch(h) => {
                    let (archive, message) = fetch(inner, &h).await?;
                    Ok(Managed { reply: AdminReply { message, ..AdminReply::default() }, archive: Some(archive) })
                }
                other => Err(Reject::new(ErrorCode::Internal, format!("`{}` is not a management request", other.op()))),
            }
        })
    }
}

/// Makes a version the fleet-wide default of its model; it must be ready on
/// every live worker serving the model.
async fn promote(inner: &Inner, h: &AdminHeader) -> Result<AdminReply, Reject> {
    let name = required(h, "promote")?;
    let version = h.version.ok_or_else(|| Reject::new(ErrorCode::BadRequest, "`promote` needs a `version`"))?;
    let ready = inner.everywhere(&name)?;
    let ((), policy) = inner.update_policy(&name, |p| p.promote(&name, version, &ready).map_err(policy_failure)).await?;
    inner.set_policy(&name, Some(policy));
    tracing::info!(app = %name, version, "promoted fleet-wide: the default version");
    let models = inner.fleet_models().0.into_iter().filter(|m| m.name == name).collect();
    Ok(AdminReply { message: format!("{name}: version {version} is the default on every gateway"), models, ..AdminReply::default() })
}

/// Rolls the fleet-wide default of a model back to the newest earlier
/// version every live worker holds and that is not rolled back.
async fn rollback(inner: &Inner, h: &AdminHeader) -> Result<AdminReply, Reject> {
    let name = required(h, "rollback")?;
    let ready = inner.everywhere(&name)?;
    let current = inner.default_of(&name);
    let ((from, to), policy) = inner
        .update_policy(&name, |p| {
            // Roll back what this gateway routes to (a pin not yet everywhere does not count).
            if let Some(c) = current.filter(|c| p.choose(&ready) != Some(*c)) {
                p.pinned = Some(c);
            }
            p.rollback(&name, &ready, "rolled back by hand").map_err(policy_failure)
        })
        .await?;
    inner.set_policy(&name, Some(policy));
    tracing::warn!(app = %name, from, to, "rolled back fleet-wide");
    let models = inner.fleet_models().0.into_iter().filter(|m| m.name == name).collect();
    Ok(AdminReply {
        message: format!("{name}: version {from} rolled back, version {to} is the default on every gateway"),
        models,
        ..AdminReply::default()
    })
}

/// After a successful upload: a new release takes over the default from a pin.
async fn released(inner: &Inner, name: &str, version: u64) {
    if !matches!(engine::entry(&inner.engine.stores.kv, &wire::policy_key(name)).await, Ok(Some(_))) {
        return;
    }
    match inner.update_policy(name, |p| Ok(p.released(version))).await {
        Ok((true, policy)) => {
            tracing::info!(app = %name, version, "a newer version is in the fleet: it is the default again, not the promoted one");
            inner.set_policy(name, Some(policy));
        }
        Ok((false, _)) => {}
        Err(e) => tracing::warn!(app = %name, "{}", e.message),
    }
}

/// Uploads a bundle to the fleet and waits until every live worker has it
/// ready, or rolls it back when any fails.
async fn upload_bundle(inner: &Inner, archive: Vec<u8>, replace: bool) -> Result<AdminReply, Reject> {
    let start = Instant::now();
    let text = tensorgate_server::manifest::text_in_archive(&archive).map_err(|e| Reject::new(ErrorCode::BadRequest, format!("bundle: {e}")))?;
    let manifest = Manifest::parse(&text, "manifest.toml").map_err(|e| Reject::new(ErrorCode::LoadFailed, e.to_string()))?;
    let (name, version) = (manifest.name.clone(), manifest.version);
    let sha256 = hex::encode(sha2::Sha256::digest(&archive));
    let key = wire::bundle_key(&name, version);
    let kv = &inner.engine.stores.kv;
    let previous = engine::entry(kv, &key).await.map_err(|e| internal("reading the fleet state", e))?.map(|(v, _)| v);
    let held_now = inner.fleet_models().0.iter().any(|m| m.name == name && m.version == version);
    if (previous.is_some() || held_now) && !replace {
        return Err(Reject::new(
            ErrorCode::Conflict,
            format!("{name} version {version} already exists in the fleet (upload with replace to swap it)"),
        ));
    }
    let object = wire::bundle_object(&name, version, &sha256);
    inner.engine.write_object(&inner.engine.stores.bundles, &object, &archive).await.map_err(|e| internal("storing the bundle", e))?;
    // A new release on trial is set up before any worker has it, so that
    // it never serves as the default before its trial starts.
    let before = inner.policy(&name);
    let terms = manifest.rollout.over(inner.cluster.rollout);
    let mut trial = false;
    if let Ok(mut ready) = inner.everywhere(&name) {
        ready.insert(version);
        if before.clone().start_trial(version, &ready, terms) {
            let (started, policy) = inner.update_policy(&name, |p| Ok(p.start_trial(version, &ready, terms))).await?;
            inner.set_policy(&name, Some(policy));
            if started {
                tracing::info!(app = %name, version, share = terms.canary_share, items = terms.canary_items, "on trial fleet-wide");
            }
            trial = started;
        }
    }
    let desired = Desired { name: name.clone(), version, object, sha256: sha256.clone(), bytes: archive.len() as u64 };
    let workers = inner.live_workers();
    let mut reports = inner
        .engine
        .client
        .subscribe(inner.engine.names.report(&name, version))
        .await
        .map_err(|e| internal("subscribing to reports", e))?;
    kv.put(&key, wire::json(&desired)).await.map_err(|e| internal("writing the fleet state", e))?;
    let got = inner.collect_reports(&mut reports, &workers, |r| r.sha256 == sha256 || r.error.is_some()).await;
    let failed: Vec<&Report> = got.values().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        if trial {
            let undone = inner
                .update_policy(&name, |p| {
                    if p.canary.as_ref().is_some_and(|c| c.version == version) {
                        (p.canary, p.pinned, p.newest) = (before.canary.clone(), before.pinned, before.newest);
                    }
                    Ok(())
                })
                .await;
            if let Ok(((), policy)) = undone {
                inner.set_policy(&name, Some(policy));
            }
        }
        // Roll back: the previous content, or nothing.
        let _ = match previous {
            Some(prev) => kv.put(&key, prev).await.map(|_| ()).map_err(|e| e.to_string()),
            None => kv.delete(&key).await.map_err(|e| e.to_string()),
        };
        let detail: Vec<String> =
            failed.iter().map(|r| format!("worker {}: {}", r.worker, r.error.as_deref().unwrap_or_default())).collect();
        return Err(Reject::new(
            ErrorCode::LoadFailed,
            format!(
                "{name} version {version} failed on {} of {} worker(s), rolled back; what served before keeps serving. {}",
                failed.len(),
                workers.len(),
                detail.join("; ")
            ),
        ));
    }
    released(inner, &name, version).await;
    let live = inner.live_workers();
    let missing: Vec<&String> = workers.iter().filter(|w| !got.contains_key(*w) && live.contains(w)).collect();
    // The reply says "serving" only once routing can see the version everywhere.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !inner.holds(&workers, &name, version, true) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let models: Vec<_> = inner.fleet_models().0.into_iter().filter(|m| m.name == name && m.version == version).collect();
    let serving = models.first().map(tensorgate_server::rollout::serving_as).unwrap_or_else(|| "serving".into());
    let message = match (workers.len(), missing.len()) {
        (0, _) => format!("{name} version {version} stored in the fleet; no worker is connected: workers load it when they join"),
        (n, 0) => format!("{name} version {version} ready on {n} worker(s) in {ms:.1} ms, {serving}"),
        (n, m) => format!(
            "{name} version {version} ready on {} of {n} worker(s) in {ms:.1} ms; no report yet from {}",
            n - m,
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    Ok(AdminReply { message, models, ..AdminReply::default() })
}

/// Deletes versions from the fleet (every version of the model when none
/// is given) and waits until no live worker serves them.
async fn delete(inner: &Inner, h: &AdminHeader) -> Result<AdminReply, Reject> {
    let name = required(h, "delete")?;
    let kv = &inner.engine.stores.kv;
    let mut versions: BTreeSet<u64> = inner.fleet_models().0.iter().filter(|m| m.name == name).map(|m| m.version).collect();
    versions.extend(engine::bundle_keys(kv).await.into_iter().filter(|(n, _)| *n == name).map(|(_, v)| v));
    if let Some(v) = h.version {
        versions.retain(|&x| x == v);
    }
    if versions.is_empty() {
        let what = h.version.map(|v| format!(" version {v}")).unwrap_or_default();
        return Err(Reject::new(ErrorCode::UnknownModel, format!("the fleet holds no {name}{what}")));
    }
    let before: Vec<ModelInfo> =
        inner.fleet_models().0.into_iter().filter(|m| m.name == name && versions.contains(&m.version)).collect();
    for v in &versions {
        kv.delete(wire::bundle_key(&name, *v)).await.map_err(|e| internal("writing the fleet state", e))?;
    }
    let policy_key = wire::policy_key(&name);
    if h.version.is_none() {
        let _ = kv.delete(&policy_key).await;
        inner.set_policy(&name, None);
    } else if matches!(engine::entry(kv, &policy_key).await, Ok(Some(_))) {
        let forgot = inner.update_policy(&name, |p| Ok(versions.iter().fold(false, |acc, v| p.forget(*v) | acc))).await;
        if let Ok((_, policy)) = forgot {
            inner.set_policy(&name, Some(policy));
        }
    }
    let workers = inner.live_workers();
    let deadline = Instant::now() + Duration::from_secs(30);
    while versions.iter().any(|v| !inner.holds(&workers, &name, *v, false)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed: Vec<String> = versions.iter().map(u64::to_string).collect();
    let models = before
        .into_iter()
        .map(|mut m| {
            m.state = ModelState::Deleted.to_string();
            m
        })
        .collect();
    Ok(AdminReply { message: format!("{name}: deleted version(s) {} from the fleet", listed.join(", ")), models, ..AdminReply::default() })
}

/// Every live worker reloads its repository from disk; the answers are merged.
async fn reload(inner: &Inner, only: Option<String>) -> Result<AdminReply, Reject> {
    let workers = inner.live_workers();
    let client = &inner.engine.client;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(|e| internal("subscribing", e))?;
    client
        .publish_with_reply(inner.engine.names.reload(), inbox, wire::json(&only))
        .await
        .map_err(|e| internal("asking workers to reload", e))?;
    let mut reply = AdminReply::default();
    let mut heard = BTreeSet::new();
    let mut unchanged = 0;
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    while heard.len() < workers.len() {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await else { break };
        let Ok(a) = serde_json::from_slice::<ReloadAnswer>(&msg.payload) else { continue };
        heard.insert(a.worker.clone());
        unchanged += a.unchanged;
        reply.models.extend(a.loaded);
        reply.models.extend(a.removed.into_iter().map(|mut m| {
            m.state = ModelState::Deleted.to_string();
            m
        }));
        reply.errors.extend(a.errors.into_iter().map(|f| LoadFailure { error: format!("worker {}: {}", a.worker, f.error), ..f }));
    }
    reply.message = format!(
        "{} of {} worker(s) reloaded: {} loaded, {} failed, {unchanged} unchanged",
        heard.len(),
        workers.len(),
        reply.models.len(),
        reply.errors.len()
    );
    Ok(reply)
}

/// The archive of a version in the fleet's store (the newest when none is given).
async fn fetch(inner: &Inner, h: &AdminHeader) -> Result<(Bytes, String), Reject> {
    let name = required(h, "fetch")?;
    let kv = &inner.engine.stores.kv;
    let newest = match h.version {
        Some(v) => Some(v),
        None => engine::bundle_keys(kv).await.into_iter().filter(|(n, _)| *n == name).map(|(_, v)| v).max(),
    };
    let missing = || {
        Reject::new(
            ErrorCode::UnknownModel,
            format!(
                "the fleet's store holds no {name}{} (a bundle on a worker's own disk is fetched from that worker)",
                h.version.map(|v| format!(" version {v}")).unwrap_or_default()
            ),
        )
    };
    let version = newest.ok_or_else(missing)?;
    let entry = kv.get(wire::bundle_key(&name, version)).await.map_err(|e| Reject::new(ErrorCode::Internal, e.to_string()))?;
    let d: Desired = serde_json::from_slice(&entry.ok_or_else(missing)?).map_err(|e| internal("fleet entry", e))?;
    let archive = read_object(&inner.engine.stores.bundles, &d.object).await.map_err(|e| internal("bundle", e))?;
    Ok((Bytes::from(archive), format!("{name} version {version}: {} bytes", d.bytes)))
}
