//! Fleet management: the cluster's repository lives in the engine. Bundles
//! are objects in a JetStream object store (`P_BUNDLES`, one object per
//! content: `NAME/VERSION/SHA256`), the desired state is a KV bucket
//! (`P_FLEET`, key `bundle.NAME.VERSION` → [`Desired`], and key
//! `default.NAME` → the model's [`DefaultPolicy`], which every gateway
//! routes by: `promote` and `rollback` change it). Every worker
//! watches the bucket and converges: fetches, loads and warms up each
//! desired bundle into its own repository (its disk is a cache of the
//! fleet), deletes what was deleted, and reports each outcome on
//! `P.fleet.report.NAME.VERSION`.
//!
//! A gateway changes the desired state and waits for the reports of every
//! live worker. A version that fails on any worker is rolled back (the
//! previous desired content, or none) and never becomes the default; the
//! failing worker's id and error are in the reply. Routing makes a version
//! the default only once every converged worker holds it, so a joining
//! worker that is still loading never drags the default back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tensorgate_protocol::{AdminHeader, AdminReply, ErrorCode, LoadFailure, ModelInfo};
use tokio::io::AsyncReadExt;

use super::{ClusterConfig, ClusterError};
use crate::application::ModelState;
use crate::repository::{DefaultPolicy, PolicyError, Repository};

/// A management failure: the code and message of its `RequestError`.
pub type Failure = (ErrorCode, String);

/// How long a gateway waits for every worker to report on a change.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// One bundle the fleet should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Object holding the archive.
    pub object: String,
    /// SHA-256 of the archive (hex).
    pub sha256: String,
    /// Archive size.
    pub bytes: u64,
}

/// A worker's outcome for one desired bundle (or deletion).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Worker id.
    pub worker: String,
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// The content it loaded (empty for a deletion).
    #[serde(default)]
    pub sha256: String,
    /// Why it failed, naming the file or field (none: ready, or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Load time (µs).
    #[serde(default)]
    pub load_us: u64,
}

/// A worker's answer to a fleet-wide `reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// Worker id.
    pub worker: String,
    /// Versions loaded.
    pub loaded: Vec<ModelInfo>,
    /// Versions removed.
    pub removed: Vec<ModelInfo>,
    /// Bundles left as they were.
    pub unchanged: usize,
    /// Bundles that failed.
    pub errors: Vec<LoadFailure>,
}

/// The engine-side stores of one cluster.
#[derive(Clone)]
pub struct Stores {
    /// Desired state.
    pub kv: kv::Store,
    /// Bundle archives.
    pub objects: object_store::ObjectStore,
    /// Item payloads and results too large for one engine message (each
    /// deleted once its item is answered; an hour's age limit clears what a
    /// lost gateway or worker leaves behind).
    pub large: object_store::ObjectStore,
}

/// Opens (creating when missing) the cluster's KV bucket and object store.
pub async fn stores(js: &jetstream::Context, config: &ClusterConfig) -> Result<Stores, ClusterError> {
    let stem = config.prefix.to_ascii_uppercase();
    let err = |e: String| ClusterError::JetStream(e);
    let kv = match js.get_key_value(format!("{stem}_FLEET")).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: format!("{stem}_FLEET"),
                description: "tensorgate: bundles the fleet should hold".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("creating the fleet KV bucket: {e}")))?,
    };
    let objects = object_store(js, format!("{stem}_BUNDLES"), "bundle archives", Duration::ZERO).await?;
    let large = object_store(js, format!("{stem}_LARGE"), "payloads larger than one engine message", Duration::from_secs(3600)).await?;
    Ok(Stores { kv, objects, large })
}

/// Opens the object store `bucket`, creating it (file storage, objects
/// older than `max_age` removed; zero: kept) when missing.
async fn object_store(
    js: &jetstream::Context,
    bucket: String,
    what: &str,
    max_age: Duration,
) -> Result<object_store::ObjectStore, ClusterError> {
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: bucket.clone(),
        description: Some(format!("tensorgate: {what}")),
        storage: jetstream::stream::StorageType::File,
        max_age,
        ..Default::default()
    };
    js.create_object_store(config).await.map_err(|e| ClusterError::JetStream(format!("creating the object store {bucket}: {e}")))
}

/// The KV key of one version.
pub fn key(name: &str, version: u64) -> String {
    format!("bundle.{name}.{version}")
}

/// `(name, version)` of a KV key.
fn parse_key(key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix("bundle.")?;
    let (name, version) = rest.rsplit_once('.')?;
    Some((name.to_string(), version.parse().ok()?))
}

/// Prefix of the KV keys holding default-version policies (`default.NAME`).
pub const POLICY_PREFIX: &str = "default.";

/// Subject of the reports about one version.
pub fn report_subject(prefix: &str, name: &str, version: u64) -> String {
    format!("{prefix}.fleet.report.{name}.{version}")
}

/// Subject of fleet-wide reloads.
pub fn reload_subject(prefix: &str) -> String {
    format!("{prefix}.fleet.reload")
}

// ---- worker side ----

/// Keeps a worker's repository converged on the desired state; calls
/// `changed` after each change and `caught_up` once the state as it was at
/// start has been applied. Runs for the worker's life.
pub async fn converge(
    worker: String,
    prefix: String,
    client: async_nats::Client,
    stores: Stores,
    repo: Arc<Repository>,
    changed: Arc<tokio::sync::Notify>,
    caught_up: tokio::sync::watch::Sender<bool>,
) {
    let mut applied: BTreeMap<(String, u64), String> = BTreeMap::new();
    loop {
        let mut watch = match stores.kv.watch_with_history("bundle.>").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the fleet state (retrying): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // No bundle in the bucket: nothing to replay.
        if !has_bundles(&stores.kv).await {
            let _ = caught_up.send(true);
        }
        while let Some(entry) = watch.next().await {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!("fleet watch: {e}");
                    break;
                }
            };
            let Some((name, version)) = parse_key(&entry.key) else { continue };
            let report = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<Desired>(&entry.value) {
                    Ok(d) if applied.get(&(name.clone(), version)) == Some(&d.sha256) => None,
                    Ok(d) => {
                        let r = apply(&worker, &stores, &repo, &d).await;
                        if r.error.is_none() {
                            applied.insert((name.clone(), version), d.sha256.clone());
                        }
                        Some(r)
                    }
                    Err(e) => Some(Report { error: Some(format!("unreadable fleet entry: {e}")), ..Default::default() }),
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    applied.remove(&(name.clone(), version));
                    let held = repo.resolve(&name, Some(version)).is_ok();
                    let error = match held {
                        true => {
                            let (repo, n) = (repo.clone(), name.clone());
                            match tokio::task::spawn_blocking(move || repo.delete(&n, Some(version))).await {
                                Ok(Ok(_)) => None,
                                Ok(Err(e)) => Some(e.to_string()),
                                Err(e) => Some(format!("delete task failed: {e}")),
                            }
                        }
                        false => None,
                    };
                    Some(Report { error, ..Default::default() })
                }
            };
            if let Some(mut r) = report {
                r.worker = worker.clone();
                r.name = name.clone();
                r.version = version;
                if let Some(e) = &r.error {
                    tracing::warn!(app = %name, version, "fleet change failed here: {e}");
                }
                changed.notify_one();
                let body = Bytes::from(serde_json::to_vec(&r).unwrap_or_default());
                let _ = client.publish(report_subject(&prefix, &name, version), body).await;
            }
            if entry.delta == 0 {
                let _ = caught_up.send(true);
            }
        }
    }
}

/// Whether the bucket holds any bundle key (it may hold only policies).
async fn has_bundles(kv: &kv::Store) -> bool {
    match kv.keys().await {
        Ok(mut keys) => {
            while let Some(k) = keys.next().await {
                match k {
                    Ok(k) if parse_key(&k).is_some() => return true,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
            false
        }
        // An empty bucket can answer "no keys" as an error.
        Err(_) => false,
    }
}

/// Fetches and loads one desired bundle.
async fn apply(worker: &str, stores: &Stores, repo: &Arc<Repository>, d: &Desired) -> Report {
    let mut report = Report { sha256: d.sha256.clone(), ..Default::default() };
    let archive = match fetch_object(stores, &d.object).await {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let repo = repo.clone();
    match tokio::task::spawn_blocking(move || repo.upload(&archive, true)).await {
        Ok(Ok(app)) => {
            report.load_us = app.load_time.as_micros() as u64;
            tracing::info!(%worker, app = %d.name, version = d.version, "fleet bundle loaded");
        }
        Ok(Err(e)) => report.error = Some(e.to_string()),
        Err(e) => report.error = Some(format!("load task failed: {e}")),
    }
    report
}

async fn fetch_object(stores: &Stores, object: &str) -> Result<Vec<u8>, String> {
    read_object(&stores.objects, object).await.map_err(|e| format!("bundle {e}"))
}

/// Stores `data` as object `name` in chunks as large as one engine
/// message allows (fewer round trips than the default 128 KiB).
pub async fn write_object(client: &async_nats::Client, store: &object_store::ObjectStore, name: &str, data: &[u8]) -> Result<(), String> {
    let chunk = client.server_info().max_payload.saturating_sub(super::worker::HEADER_ROOM).clamp(64 << 10, 8 << 20);
    let meta = object_store::ObjectMetadata { name: name.to_string(), chunk_size: Some(chunk), ..Default::default() };
    let mut reader = data;
    store.put(meta, &mut reader).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The bytes of one object.
pub async fn read_object(store: &object_store::ObjectStore, name: &str) -> Result<Vec<u8>, String> {
    let mut obj = store.get(name).await.map_err(|e| format!("{name}: {e}"))?;
    let mut data = Vec::with_capacity(obj.info().size);
    obj.read_to_end(&mut data).await.map_err(|e| format!("{name}: {e}"))?;
    Ok(data)
}

/// Answers fleet-wide reloads for one worker.
pub async fn answer_reloads(worker: String, client: async_nats::Client, prefix: String, repo: Arc<Repository>, changed: Arc<tokio::sync::Notify>) {
    let Ok(mut sub) = client.subscribe(reload_subject(&prefix)).await else { return };
    while let Some(msg) = sub.next().await {
        let only: Option<String> = serde_json::from_slice(&msg.payload).ok().flatten();
        let r = repo.clone();
        let Ok(report) = tokio::task::spawn_blocking(move || r.reload(only.as_deref())).await else { continue };
        let answer = ReloadAnswer {
            worker: worker.clone(),
            loaded: report.loaded.iter().map(|a| a.info(false)).collect(),
            removed: report.removed.iter().map(|a| a.info(false)).collect(),
            unchanged: report.unchanged,
            errors: report.errors,
        };
        changed.notify_one();
        if let Some(reply) = msg.reply {
            let _ = client.publish(reply, Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())).await;
        }
    }
}

// ---- gateway side ----

/// What a gateway's management needs of its fleet view.
pub trait View: Send + Sync {
    /// Ids of live, serving workers.
    fn live_workers(&self) -> Vec<String>;
    /// Whether every worker in `ids` that is still live advertises `name` `version`
    /// (`present`) or none does (`!present`).
    fn holds(&self, ids: &[String], name: &str, version: u64, present: bool) -> bool;
    /// `models` entries of the fleet.
    fn models(&self) -> Vec<ModelInfo>;
    /// The versions of `name` every live serving worker holds ready.
    fn everywhere(&self, name: &str) -> Result<BTreeSet<u64>, Failure>;
    /// The version a request for `name` naming no version goes to.
    fn default_of(&self, name: &str) -> Option<u64>;
    /// Applies a policy this gateway just wrote (the KV watch brings it too,
    /// a moment later; the reply must not race it).
    fn set_policy(&self, name: &str, policy: Option<DefaultPolicy>);
    /// The policy of `name` as this gateway holds it.
    fn policy(&self, name: &str) -> DefaultPolicy;
    /// Trial terms where a manifest's `[rollout]` says nothing.
    fn rollout(&self) -> crate::manifest::Rollout;
}

/// Reads, changes with `edit` and writes back the policy of `name`, with
/// compare-and-set so that two gateways changing it at once do not lose a
/// change. Returns `edit`'s result and the policy written.
pub(super) async fn update_policy<T>(
    stores: &Stores,
    name: &str,
    mut edit: impl FnMut(&mut DefaultPolicy) -> Result<T, Failure>,
) -> Result<(T, DefaultPolicy), Failure> {
    let key = format!("{POLICY_PREFIX}{name}");
    let internal = |e: String| (ErrorCode::Internal, format!("writing the fleet's default versions: {e}"));
    for _ in 0..8 {
        let entry = stores.kv.entry(&key).await.map_err(|e| internal(e.to_string()))?;
        let (mut policy, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => {
                (serde_json::from_slice(&e.value).unwrap_or_default(), Some(e.revision))
            }
            _ => (DefaultPolicy::default(), None),
        };
        let out = edit(&mut policy)?;
        let body = Bytes::from(serde_json::to_vec(&policy).unwrap_or_default());
        let written = match revision {
            Some(r) => stores.kv.update(&key, body, r).await.map(|_| ()).map_err(|e| e.to_string()),
            None => stores.kv.create(&key, body).await.map(|_| ()).map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok((out, policy)),
            Err(e) => tracing::debug!(model = name, "default-version policy changed meanwhile (retrying): {e}"),
        }
    }
    Err(internal("another gateway kept changing it; try again".into()))
}

fn policy_failure(e: PolicyError) -> Failure {
    let code = match e {
        PolicyError::NotReady { .. } => ErrorCode::UnknownModel,
        PolicyError::NothingEarlier { .. } => ErrorCode::Conflict,
    };
    (code, format!("{e}; in a fleet, ready means held by every live worker serving the model"))
}

/// Makes a version the fleet-wide default of its model; it must be ready on
/// every live worker serving the model.
pub async fn promote(stores: &Stores, view: &dyn View, h: &AdminHeader) -> Result<AdminReply, Failure> {
    let name = h.model.clone().ok_or_else(|| (ErrorCode::BadRequest, "`promote` needs a `model`".to_string()))?;
    let version = h.version.ok_or_else(|| (ErrorCode::BadRequest, "`promote` needs a `version`".to_string()))?;
    let ready = view.everywhere(&name)?;
    let ((), policy) = update_policy(stores, &name, |p| p.promote(&name, version, &ready).map_err(policy_failure)).await?;
    view.set_policy(&name, Some(policy));
    tracing::info!(app = %name, version, "promoted fleet-wide: the default version");
    let models = view.models().into_iter().filter(|m| m.name == name).collect();
    Ok(AdminReply { message: format!("{name}: version {version} is the default on every gateway"), models, ..AdminReply::default() })
}

/// Rolls the fleet-wide default of a model back to the newest earlier
/// version every live worker holds and that is not rolled back.
pub async fn rollback(stores: &Stores, view: &dyn View, h: &AdminHeader) -> Result<AdminReply, Failure> {
    let name = h.model.clone().ok_or_else(|| (ErrorCode::BadRequest, "`rollback` needs a `model`".to_string()))?;
    let ready = view.everywhere(&name)?;
    let current = view.default_of(&name);
    let ((from, to), policy) = update_policy(stores, &name, |p| {
        // Roll back what this gateway routes to (a pin not yet everywhere does not count).
        if let Some(c) = current.filter(|c| p.choose(&ready) != Some(*c)) {
            p.pinned = Some(c);
        }
        p.rollback(&name, &ready, "rolled back by hand").map_err(policy_failure)
    })
    .await?;
    view.set_policy(&name, Some(policy));
    tracing::warn!(app = %name, from, to, "rolled back fleet-wide");
    let models = view.models().into_iter().filter(|m| m.name == name).collect();
    Ok(AdminReply {
        message: format!("{name}: version {from} rolled back, version {to} is the default on every gateway"),
        models,
        ..AdminReply::default()
    })
}

/// After a successful upload: a new release takes over the default from a pin.
async fn released(stores: &Stores, view: &dyn View, name: &str, version: u64) {
    let key = format!("{POLICY_PREFIX}{name}");
    if !matches!(stores.kv.entry(&key).await, Ok(Some(e)) if e.operation == kv::Operation::Put) {
        return;
    }
    match update_policy(stores, name, |p| Ok(p.released(version))).await {
        Ok((true, policy)) => {
            tracing::info!(app = %name, version, "a newer version is in the fleet: it is the default again, not the promoted one");
            view.set_policy(name, Some(policy));
        }
        Ok((false, _)) => {}
        Err((_, e)) => tracing::warn!(app = %name, "{e}"),
    }
}

/// Uploads a bundle to the fleet and waits until every live worker has it
/// ready, or rolls it back when any fails.
pub async fn upload(
    client: &async_nats::Client,
    prefix: &str,
    stores: &Stores,
    view: &dyn View,
    archive: Vec<u8>,
    replace: bool,
) -> Result<AdminReply, Failure> {
    let start = Instant::now();
    let text = crate::repository::store::manifest_text(&archive).map_err(|e| (ErrorCode::BadRequest, format!("bundle: {e}")))?;
    let manifest = crate::manifest::Manifest::parse(&text, "manifest.toml").map_err(|e| (ErrorCode::LoadFailed, e.to_string()))?;
    let (name, version) = (manifest.name.clone(), manifest.version);
    let sha256 = hex::encode(sha2::Sha256::digest(&archive));
    let key = key(&name, version);
    let internal = |what: &str, e: String| (ErrorCode::Internal, format!("{what}: {e}"));
    let previous = stores.kv.entry(&key).await.map_err(|e| internal("reading the fleet state", e.to_string()))?;
    let previous = previous.filter(|e| e.operation == kv::Operation::Put).map(|e| e.value);
    let held_now = view.models().iter().any(|m| m.name == name && m.version == version);
    if (previous.is_some() || held_now) && !replace {
        return Err((ErrorCode::Conflict, format!("{name} version {version} already exists in the fleet (upload with replace to swap it)")));
    }
    let object = format!("{name}/{version}/{sha256}");
    write_object(client, &stores.objects, &object, &archive).await.map_err(|e| internal("storing the bundle", e))?;
    // A new release on trial is set up before any worker has it, so that
    // it never serves as the default before its trial starts.
    let before = view.policy(&name);
    let terms = manifest.rollout.over(view.rollout());
    let mut trial = false;
    if let Ok(mut ready) = view.everywhere(&name) {
        ready.insert(version);
        if before.clone().start_trial(version, &ready, terms) {
            let (started, policy) = update_policy(stores, &name, |p| Ok(p.start_trial(version, &ready, terms))).await?;
            view.set_policy(&name, Some(policy));
            if started {
                tracing::info!(app = %name, version, share = terms.canary_share, items = terms.canary_items, "on trial fleet-wide");
            }
            trial = started;
        }
    }
    let desired = Desired { name: name.clone(), version, object, sha256: sha256.clone(), bytes: archive.len() as u64 };
    let workers = view.live_workers();
    let mut reports = client
        .subscribe(report_subject(prefix, &name, version))
        .await
        .map_err(|e| internal("subscribing to reports", e.to_string()))?;
    let body = Bytes::from(serde_json::to_vec(&desired).unwrap_or_default());
    stores.kv.put(&key, body).await.map_err(|e| internal("writing the fleet state", e.to_string()))?;
    let got = collect_reports(&mut reports, view, &workers, |r| r.sha256 == sha256 || r.error.is_some()).await;
    let failed: Vec<&Report> = got.values().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        if trial {
            let undone = update_policy(stores, &name, |p| {
                if p.canary.as_ref().is_some_and(|c| c.version == version) {
                    (p.canary, p.pinned, p.newest) = (before.canary.clone(), before.pinned, before.newest);
                }
                Ok(())
            })
            .await;
            if let Ok(((), policy)) = undone {
                view.set_policy(&name, Some(policy));
            }
        }
        // Roll back: the previous content, or nothing.
        let _ = match previous {
            Some(prev) => stores.kv.put(&key, prev).await.map(|_| ()).map_err(|e| e.to_string()),
            None => stores.kv.delete(&key).await.map_err(|e| e.to_string()),
        };
        let detail: Vec<String> =
            failed.iter().map(|r| format!("worker {}: {}", r.worker, r.error.as_deref().unwrap_or_default())).collect();
        return Err((
            ErrorCode::LoadFailed,
            format!(
                "{name} version {version} failed on {} of {} worker(s), rolled back; what served before keeps serving. {}",
                failed.len(),
                workers.len(),
                detail.join("; ")
            ),
        ));
    }
    released(stores, view, &name, version).await;
    let missing: Vec<&String> = workers.iter().filter(|w| !got.contains_key(*w) && view.live_workers().contains(w)).collect();
    // The reply says "serving" only once routing can see the version everywhere.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !view.holds(&workers, &name, version, true) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let message = match (workers.len(), missing.len()) {
        (0, _) => format!("{name} version {version} stored in the fleet; no worker is connected: workers load it when they join"),
        (n, 0) => format!("{name} version {version} ready on {n} worker(s) in {ms:.1} ms and serving"),
        (n, m) => format!(
            "{name} version {version} ready on {} of {n} worker(s) in {ms:.1} ms; no report yet from {}",
            n - m,
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let models = view.models().into_iter().filter(|m| m.name == name && m.version == version).collect();
    Ok(AdminReply { message, models, ..AdminReply::default() })
}

/// Deletes versions from the fleet (every version of the model when none
/// is given) and waits until no live worker serves them.
pub async fn delete(stores: &Stores, view: &dyn View, h: &AdminHeader) -> Result<AdminReply, Failure> {
    let name = h.model.clone().ok_or_else(|| (ErrorCode::BadRequest, "`delete` needs a `model`".to_string()))?;
    let mut versions: BTreeSet<u64> = view.models().iter().filter(|m| m.name == name).map(|m| m.version).collect();
    if let Ok(mut keys) = stores.kv.keys().await {
        while let Some(Ok(k)) = keys.next().await {
            if let Some((n, v)) = parse_key(&k) {
                if n == name {
                    versions.insert(v);
                }
            }
        }
    }
    if let Some(v) = h.version {
        versions.retain(|&x| x == v);
    }
    if versions.is_empty() {
        let what = h.version.map(|v| format!(" version {v}")).unwrap_or_default();
        return Err((ErrorCode::UnknownModel, format!("the fleet holds no {name}{what}")));
    }
    let before: Vec<ModelInfo> = view.models().into_iter().filter(|m| m.name == name && versions.contains(&m.version)).collect();
    for v in &versions {
        stores.kv.delete(key(&name, *v)).await.map_err(|e| (ErrorCode::Internal, format!("writing the fleet state: {e}")))?;
    }
    let policy_key = format!("{POLICY_PREFIX}{name}");
    if h.version.is_none() {
        let _ = stores.kv.delete(&policy_key).await;
        view.set_policy(&name, None);
    } else if matches!(stores.kv.entry(&policy_key).await, Ok(Some(e)) if e.operation == kv::Operation::Put) {
        let forgot = update_policy(stores, &name, |p| Ok(versions.iter().fold(false, |acc, v| p.forget(*v) | acc))).await;
        if let Ok((_, policy)) = forgot {
            view.set_policy(&name, Some(policy));
        }
    }
    let workers = view.live_workers();
    let deadline = Instant::now() + Duration::from_secs(30);
    while versions.iter().any(|v| !view.holds(&workers, &name, *v, false)) && Instant::now() < deadline {
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
pub async fn reload(client: &async_nats::Client, prefix: &str, view: &dyn View, only: Option<String>) -> Result<AdminReply, Failure> {
    let workers = view.live_workers();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(|e| (ErrorCode::Internal, format!("subscribing: {e}")))?;
    let body = Bytes::from(serde_json::to_vec(&only).unwrap_or_default());
    client
        .publish_with_reply(reload_subject(prefix), inbox, body)
        .await
        .map_err(|e| (ErrorCode::Internal, format!("asking workers to reload: {e}")))?;
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
pub async fn fetch(stores: &Stores, h: &AdminHeader) -> Result<(Bytes, String), Failure> {
    let name = h.model.clone().ok_or_else(|| (ErrorCode::BadRequest, "`fetch` needs a `model`".to_string()))?;
    let mut newest: Option<u64> = h.version;
    if newest.is_none() {
        if let Ok(mut keys) = stores.kv.keys().await {
            while let Some(Ok(k)) = keys.next().await {
                if let Some((n, v)) = parse_key(&k) {
                    if n == name && newest.is_none_or(|x| v > x) {
                        newest = Some(v);
                    }
                }
            }
        }
    }
    let missing = || {
        (
            ErrorCode::UnknownModel,
            format!("the fleet's store holds no {name}{} (a bundle on a worker's own disk is fetched from that worker)", h.version.map(|v| format!(" version {v}")).unwrap_or_default()),
        )
    };
    let version = newest.ok_or_else(missing)?;
    let entry = stores.kv.get(key(&name, version)).await.map_err(|e| (ErrorCode::Internal, e.to_string()))?.ok_or_else(missing)?;
    let d: Desired = serde_json::from_slice(&entry).map_err(|e| (ErrorCode::Internal, format!("fleet entry: {e}")))?;
    let archive = fetch_object(stores, &d.object).await.map_err(|e| (ErrorCode::Internal, e))?;
    Ok((Bytes::from(archive), format!("{name} version {version}: {} bytes", d.bytes)))
}

/// Reports from `workers` about one change, until each live one has
/// reported (`done` true) or [`CHANGE_TIMEOUT`] passes.
async fn collect_reports(
    reports: &mut async_nats::Subscriber,
    view: &dyn View,
    workers: &[String],
    done: impl Fn(&Report) -> bool,
) -> BTreeMap<String, Report> {
    let mut got = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    loop {
        let live = view.live_workers();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_names_with_dashes_and_underscores() {
        assert_eq!(parse_key(&key("lartpc-dense_v", 12)), Some(("lartpc-dense_v".into(), 12)));
        assert_eq!(parse_key("bundle.x"), None);
        assert_eq!(parse_key("other.x.1"), None);
    }
}
