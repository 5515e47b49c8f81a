//! A canary's day under continuous load, as the host and the cluster tests
//! both run it: clients submit one tabular item per request throughout; a
//! good version 2 is uploaded and awaited promoted, then a bad version 3 (a
//! valid manifest whose plugin reads a feature the items lack: it passes the
//! load checks and fails every real item) is awaited rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tensorgate_client::protocol::ModelInfo;
use tensorgate_client::{Client, Input, Submission};

use crate::{root, tabular_bundle};

/// What happened.
pub struct CanaryRun {
    /// From v2's upload to its promotion (as `watch` saw it).
    pub promoted: Duration,
    /// From v3's upload to its rollback.
    pub rolled_back: Duration,
    /// Each request's serving version and failed items.
    pub seen: Vec<(u64, u32)>,
    /// `models` as `watch` saw it after the rollback.
    pub models: Vec<ModelInfo>,
    /// v2's trial as `models` showed it right after its upload, if it was still on trial.
    pub v2_trial: Option<tensorgate_client::protocol::CanaryInfo>,
}

impl CanaryRun {
    /// Requests that `version` served.
    pub fn on(&self, version: u64) -> usize {
        self.seen.iter().filter(|(v, _)| *v == version).count()
    }

    /// Requests with a failed item that `version` served.
    pub fn failed_on(&self, version: u64) -> usize {
        self.seen.iter().filter(|(v, failed)| *v == version && *failed > 0).count()
    }
}

/// Polls `client`'s `models` until `pred` holds (at most 20 s); returns how long it took.
pub async fn until(client: &Client, what: &str, pred: impl Fn(&[ModelInfo]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let models = client.models().await.expect("models");
        if pred(&models) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {models:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn jet(i: usize) -> Input {
    Input::json(std::fs::read(root().join(format!("plugins/tabular/samples/jet-{i}.json"))).expect("sample"))
}

/// Runs the day: `load` clients submit throughout (no request may fail);
/// v2 is uploaded through `upload[0]` and v3 through `upload[1]`; `watch`
/// is polled for the verdicts. Checks that v2 is on trial (not the default)
/// right after its upload whenever `models` shows a trial.
pub async fn canary_under_load(load: &[Arc<Client>], upload: [&Client; 2], watch: &Client) -> CanaryRun {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (t, client) in load.iter().enumerate() {
        let (client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = client.predict(Submission::new("tabular", vec![jet(t % 3)])).await.expect("no request fails");
                seen.push((r.summary.version, r.summary.failed));
            }
            seen
        }));
    }
    let work = tempfile::tempdir().expect("temp dir");
    tokio::time::sleep(Duration::from_millis(200)).await;
    upload[0].upload(&tabular_bundle(work.path(), "tabular-v2", 2, |_| {}), false).await.expect("upload v2");
    let models = upload[0].models().await.expect("models");
    let v2 = models.iter().find(|m| m.name == "tabular" && m.version == 2).expect("v2 listed");
    assert!(v2.canary.is_none() || !v2.default, "on trial, v2 is not the default yet: {v2:?}");
    let v2_trial = v2.canary.clone();
    let promoted = until(watch, "v2 promoted", |m| m.iter().any(|m| m.version == 2 && m.default && m.canary.is_none())).await;
    let bad = tabular_bundle(work.path(), "tabular-v3", 3, |m| *m = m.replace(r#""jet_pt","#, r#""jet_pt_typo","#));
    upload[1].upload(&bad, false).await.expect("v3 passes the load checks");
    let rolled_back = until(watch, "v3 rolled back", |m| m.iter().any(|m| m.version == 3 && m.rolled_back.is_some())).await;
    let models = watch.models().await.expect("models");
    // Items already on their way to v3 are answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.expect("load task"));
    }
    CanaryRun { promoted, rolled_back, seen, models, v2_trial }
}
