//! The worker side of fleet management: its repository converges on the
//! fleet's desired state (its disk is a cache of the fleet), and it answers
//! fleet-wide reloads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tensorgate_cluster::engine::{has_bundles, read_object};
use tensorgate_cluster::wire::{self, Desired, ReloadAnswer, Report};

use crate::Shared;

/// Keeps the worker's repository converged on the desired state; notifies
/// `changed` after each change and sets `caught_up` once the state as it
/// was at start has been applied. Runs for the worker's life. Each outcome
/// is reported on the version's report subject.
pub(crate) async fn converge(shared: Arc<Shared>, changed: Arc<tokio::sync::Notify>, caught_up: tokio::sync::watch::Sender<bool>) {
    let kv = shared.engine.stores.kv.clone();
    let mut applied: BTreeMap<(String, u64), String> = BTreeMap::new();
    loop {
        let mut watch = match kv.watch_with_history(format!("{}>", wire::BUNDLE_PREFIX)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the fleet state (retrying): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // No bundle in the bucket: nothing to replay.
        if !has_bundles(&kv).await {
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
            let Some((name, version)) = wire::parse_bundle_key(&entry.key) else { continue };
            let report = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<Desired>(&entry.value) {
                    Ok(d) if applied.get(&(name.clone(), version)) == Some(&d.sha256) => None,
                    Ok(d) => {
                        let r = apply(&shared, &d).await;
                        if r.error.is_none() {
                            applied.insert((name.clone(), version), d.sha256.clone());
                        }
                        Some(r)
                    }
                    Err(e) => Some(Report { error: Some(format!("unreadable fleet entry: {e}")), ..Default::default() }),
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    applied.remove(&(name.clone(), version));
                    Some(Report { error: remove(&shared, &name, version).await, ..Default::default() })
                }
            };
            if let Some(mut r) = report {
                r.worker = shared.id.clone();
                r.name = name.clone();
                r.version = version;
                if let Some(e) = &r.error {
                    tracing::warn!(app = %name, version, "fleet change failed here: {e}");
                }
                changed.notify_one();
                let _ = shared.engine.client.publish(shared.engine.names.report(&name, version), wire::json(&r)).await;
            }
            if entry.delta == 0 {
                let _ = caught_up.send(true);
            }
        }
    }
}

/// Deletes a version the fleet no longer holds; why it failed, if it did.
async fn remove(shared: &Shared, name: &str, version: u64) -> Option<String> {
    if shared.repo.resolve(name, Some(version)).is_err() {
        return None;
    }
    let (repo, n) = (shared.repo.clone(), name.to_string());
    match tokio::task::spawn_blocking(move || repo.delete(&n, Some(version))).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("delete task failed: {e}")),
    }
}

/// Fetches and loads one desired bundle.
async fn apply(shared: &Shared, d: &Desired) -> Report {
    let mut report = Report { sha256: d.sha256.clone(), ..Default::default() };
    let archive = match read_object(&shared.engine.stores.bundles, &d.object).await {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(format!("bundle {e}"));
            return report;
        }
    };
    let repo = shared.repo.clone();
    match tokio::task::spawn_blocking(move || repo.upload(&archive, true)).await {
        Ok(Ok(app)) => {
            report.load_us = app.load_time.as_micros() as u64;
            tracing::info!(worker = %shared.id, app = %d.name, version = d.version, "fleet bundle loaded");
        }
        Ok(Err(e)) => report.error = Some(e.to_string()),
        Err(e) => report.error = Some(format!("load task failed: {e}")),
    }
    report
}

/// Answers fleet-wide reloads.
pub(crate) async fn answer_reloads(shared: Arc<Shared>, changed: Arc<tokio::sync::Notify>) {
    let client = shared.engine.client.clone();
    let Ok(mut sub) = client.subscribe(shared.engine.names.reload()).await else { return };
    while let Some(msg) = sub.next().await {
        let only: Option<String> = serde_json::from_slice(&msg.payload).ok().flatten();
        let r = shared.repo.clone();
        let Ok(report) = tokio::task::spawn_blocking(move || r.reload(only.as_deref())).await else { continue };
        let answer = ReloadAnswer {
            worker: shared.id.clone(),
            loaded: report.loaded.iter().map(|a| a.info(false)).collect(),
            removed: report.removed.iter().map(|a| a.info(false)).collect(),
            unchanged: report.unchanged,
            errors: report.errors,
        };
        changed.notify_one();
        if let Some(reply) = msg.reply {
            let _ = client.publish(reply, wire::json(&answer)).await;
        }
    }
}
