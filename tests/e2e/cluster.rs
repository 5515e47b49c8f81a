//! Cluster mode with real processes on loopback: a `nats-server` with
//! JetStream, `tensorgate-host` workers (dialing out, listening on no port)
//! and a gateway speaking the unchanged client protocol.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Client, ClientError, Input, Submission};
use tensorgate_tests::cluster::{repository_of, Engine, Proc};
use tensorgate_tests::{repository, root};

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

/// The reference cases as inputs, repeated to `n` items, with their PyTorch scores.
fn tabular_items(n: usize) -> (Vec<Input>, Vec<serde_json::Map<String, Value>>) {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap().clone();
    let mut inputs = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        let c = &cases[i % cases.len()];
        inputs.push(Input::json(serde_json::to_vec(&c["request"]).unwrap()));
        want.push(c["scores"].as_object().unwrap().clone());
    }
    (inputs, want)
}

/// Every item answered once, in order, and equal to PyTorch's scores.
fn check_scores(reply: &tensorgate_client::Reply, want: &[serde_json::Map<String, Value>]) {
    assert_eq!(reply.outcomes.len(), want.len());
    assert_eq!(reply.summary.ok as usize, want.len(), "every item answered with a result");
    for (i, (outcome, want)) in reply.outcomes.iter().zip(want).enumerate() {
        let out = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(out.index as usize, i);
        let got: serde_json::Map<String, Value> = serde_json::from_slice(&out.payload).unwrap();
        for (label, w) in want {
            let (g, w) = (got[label].as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-5, "item {i} label {label}: cluster {g} vs pytorch {w}");
        }
    }
}

/// `n` items for the test-only `slow` application, each `rows` x 256 f32 (.npy).
fn slow_items(n: usize, rows: u64) -> Vec<Input> {
    let x = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![rows, 256], 0.5f32.to_le_bytes().repeat(256 * rows as usize)).unwrap();
    let sample = tensorgate_plugin::npy::write_npy(&x);
    (0..n).map(|_| Input::new(sample.clone(), "application/x-npy")).collect()
}

/// Waits until the gateway's status shows `n` serving workers.
async fn wait_for_workers(client: &Client, n: usize) -> tensorgate_client::protocol::StatusReply {
    let start = Instant::now();
    loop {
        let status = client.status().await.expect("gateway status");
        if status.workers.iter().filter(|w| w.state == "serving").count() == n {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "gateway saw {:?}, want {n} workers", status.workers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn items_spread_over_workers_match_pytorch_and_the_gateway_shows_the_fleet() {
    let engine = Engine::start();
    let repo = repository();
    let _w1 = Proc::worker(&engine, &repo, &[]);
    let _w2 = Proc::worker(&engine, &repo, &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    let status = wait_for_workers(&client, 2).await;
    assert_eq!(status.role, "gateway");
    assert!(status.models.iter().any(|m| m.name == "tabular" && m.workers == 2 && m.capacity > 0), "{:#?}", status.models);

    // Several requests at once, so that both workers have work to pull.
    let client = std::sync::Arc::new(client);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (inputs, want) = tabular_items(200);
            let reply = client.predict(Submission::new("tabular", inputs)).await.expect("predict through the gateway");
            check_scores(&reply, &want);
            assert_eq!((reply.summary.model.as_str(), reply.summary.version), ("tabular", 1));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status = client.status().await.unwrap();
    let per_worker: Vec<u64> = status.workers.iter().map(|w| w.items_ok).collect();
    // Adverts lag by up to one heartbeat: wait for the counts to settle.
    let start = Instant::now();
    let mut status = status;
    while status.workers.iter().map(|w| w.items_ok).sum::<u64>() < 1200 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = client.status().await.unwrap();
    }
    let per_worker_now: Vec<u64> = status.workers.iter().map(|w| w.items_ok).collect();
    assert_eq!(per_worker_now.iter().sum::<u64>(), 1200, "each item ran to a result once: {per_worker:?} then {per_worker_now:?}");
    assert!(per_worker_now.iter().all(|&n| n > 0), "work reached every worker: {per_worker_now:?}");
    for w in &status.workers {
        assert!(!w.device.is_empty() && w.capacity > 0 && w.models.iter().any(|m| m == "tabular/1"), "{w:?}");
    }
    let models = client.models().await.expect("models through the gateway");
    assert!(models.iter().any(|m| m.name == "tabular" && m.default && m.items_ok >= 1200), "{models:#?}");
    // The gateway counts the requests it routed (workers see items, not requests).
    let tabular = models.iter().find(|m| m.name == "tabular").unwrap();
    assert!(tabular.requests >= 6, "requests through the gateway: {}", tabular.requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_no_worker_serves_fails_at_once_with_a_clear_code() {
    let engine = Engine::start();
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    let start = Instant::now();
    let err = client.predict(Submission::new("tabular", vec![Input::json(&b"{}"[..])])).await.expect_err("no worker");
    assert!(start.elapsed() < Duration::from_secs(1), "failed after {:?}", start.elapsed());
    match err {
        ClientError::Request { code, message } => {
            assert_eq!(code, ErrorCode::UnknownModel);
            assert!(message.contains("no worker serves model `tabular`"), "{message}");
        }
        other => panic!("expected a request error, got {other}"),
    }
    // With a worker up, a model it does not serve is named too.
    let _w = Proc::worker(&engine, &repository(), &[]);
    wait_for_workers(&client, 1).await;
    let err = client.predict(Submission::new("nope", vec![Input::json(&b"{}"[..])])).await.expect_err("unknown model");
    assert!(err.to_string().contains("no worker serves model `nope`") && err.to_string().contains("tabular"), "{err}");
    let err = client.predict(Submission::new("tabular", vec![Input::json(&b"{}"[..])]).version(99)).await.unwrap_err();
    assert!(err.to_string().contains("version 99 (served: 1)"), "{err}");
}

/// The items of a many-item request travel in group messages: far fewer
/// engine messages than items, every result still right and answered once.
#[tokio::test(flavor = "multi_thread")]
async fn many_items_travel_in_few_engine_messages() {
    let engine = Engine::start();
    let repo = repository_of(&["tabular"]);
    let _w = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    wait_for_workers(&client, 1).await;
    let (inputs, want) = tabular_items(600);
    let reply = client.predict(Submission::new("tabular", inputs)).await.expect("predict");
    check_scores(&reply, &want);
    assert_eq!(reply.summary.ok, 600);
    let nats = async_nats::connect(&engine.url).await.expect("engine");
    let mut stream = async_nats::jetstream::new(nats).get_stream("TG_WORK").await.expect("work stream");
    let messages = stream.info().await.expect("stream info").state.last_sequence;
    assert!(messages > 0 && messages <= 600 / 4, "600 items took {messages} engine messages");
    tracing_free_log(&format!("600 items in {messages} engine messages"));
}

/// Groups never hand a worker more items than its capacity: a worker that
/// runs 3 at once holds at most 3 while a 48-item request flows.
#[tokio::test(flavor = "multi_thread")]
async fn groups_respect_a_worker_s_capacity() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let w = Proc::worker(&engine, repo.path(), &["--capacity", "3"]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = std::sync::Arc::new(gateway.client().await);
    wait_for_workers(&client, 1).await;
    let c = client.clone();
    // Long enough (about 0.5 s here) for several of the worker's adverts (every 200 ms), which carry the count.
    let request = tokio::spawn(async move { c.predict(Submission::new("slow", slow_items(48, 100))).await });
    let mut most = 0;
    while !request.is_finished() {
        let status = client.status().await.unwrap();
        if let Some(me) = status.workers.iter().find(|x| x.id == w.announced) {
            most = most.max(me.in_flight);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = request.await.unwrap().expect("predict");
    assert_eq!(reply.summary.ok, 48, "{:?}", reply.summary);
    assert!((1..=3).contains(&most), "the worker held {most} items at once with --capacity 3");
}

/// A worker SIGKILLed while it holds items: the engine hands them to the
/// other worker after `--redeliver-after-ms`, and every item reaches the
/// client exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_items_run_elsewhere_and_each_is_answered_once() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let mut w1 = Proc::worker(&engine, repo.path(), &[]);
    let _w2 = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    wait_for_workers(&client, 2).await;
    // Enough for the request to last several of the workers' adverts (every
    // 200 ms, which carry the count of items held): 120 took ~150 ms.
    let items = slow_items(600, 1);
    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let request = tokio::spawn(async move { c.predict(Submission::new("slow", items)).await });
    // Kill w1 once it holds items.
    let start = Instant::now();
    loop {
        let status = client.status().await.unwrap();
        if status.workers.iter().any(|w| w.id == w1.announced && w.in_flight > 0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "w1 never held items: {:?}", status.workers);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w1.kill();
    let killed = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(60), request).await.expect("request finishes").unwrap().expect("predict");
    assert_eq!(reply.summary.ok, 600, "every item answered with a result: {:?}", reply.summary);
    let indices: BTreeSet<u32> = reply.outcomes.iter().map(|o| o.as_ref().unwrap().index).collect();
    assert_eq!(indices.len(), 600, "each item exactly once");
    tracing_free_log(&format!("killed worker's items finished {:?} after the kill", killed.elapsed()));
    // Once the killed worker is dropped from the fleet, what it had counted
    // still counts: the fleet's total never goes down.
    let start = Instant::now();
    let mut most = 0;
    loop {
        let status = client.status().await.unwrap();
        let ok: u64 = status.models.iter().filter(|m| m.name == "slow").map(|m| m.items_ok).sum();
        assert!(ok >= most, "the fleet's items_ok went from {most} down to {ok}: {:?}", status.workers);
        most = ok;
        if status.workers.len() == 1 && start.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the killed worker was never dropped: {:?}", status.workers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most >= 500, "items answered by both workers: {most}");
}

/// SIGTERM: the worker stops pulling, finishes what it holds, and exits 0;
/// nothing is lost and the other worker takes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_worker_without_losing_items() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let mut w1 = Proc::worker(&engine, repo.path(), &[]);
    let _w2 = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    wait_for_workers(&client, 2).await;
    let items = slow_items(120, 1);
    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let request = tokio::spawn(async move { c.predict(Submission::new("slow", items)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    assert!(w1.terminate(Duration::from_secs(30)), "the worker drained and exited 0");
    tracing_free_log(&format!("drain took {:?}", start.elapsed()));
    let reply = tokio::time::timeout(Duration::from_secs(60), request).await.expect("request finishes").unwrap().expect("predict");
    assert_eq!(reply.summary.ok, 120, "{:?}", reply.summary);
    // The drained worker said it left: the gateway drops it at once, not after three heartbeats.
    let status = client.status().await.unwrap();
    assert!(status.workers.iter().all(|w| w.id != w1.announced), "{:?}", status.workers);
}

/// A worker that joins while requests flow gets work within 2 s of
/// connecting, without any gateway being told about it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_joining_mid_run_gets_work_within_two_seconds() {
    let engine = Engine::start();
    let repo = repository();
    let _w1 = Proc::worker(&engine, &repo, &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = std::sync::Arc::new(gateway.client().await);
    wait_for_workers(&client, 1).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop) = (client.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut items = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (inputs, want) = tabular_items(50);
                let reply = client.predict(Submission::new("tabular", inputs)).await.expect("predict under load");
                check_scores(&reply, &want);
                items += 50;
            }
            items
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w2 = Proc::worker(&engine, &repo, &[]);
    let joined = Instant::now();
    let first_item = loop {
        let status = client.status().await.unwrap();
        if status.workers.iter().any(|w| w.id == w2.announced && w.items_ok > 0) {
            break joined.elapsed();
        }
        assert!(joined.elapsed() < Duration::from_secs(5), "the new worker got no work: {:?}", status.workers);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    tracing_free_log(&format!("new worker's first item seen {first_item:?} after it connected; {total} items, all checked"));
    // Seen through an advert (every 200 ms here), so the real time is shorter still.
    assert!(first_item < Duration::from_secs(2), "first item after {first_item:?}");
}

/// The engine killed and restarted mid-request: workers and the gateway
/// reconnect by themselves and every item is answered exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_restart_loses_and_duplicates_nothing() {
    let mut engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let _w1 = Proc::worker(&engine, repo.path(), &[]);
    let _w2 = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = std::sync::Arc::new(gateway.client().await);
    wait_for_workers(&client, 2).await;
    let items = slow_items(120, 1);
    let c = client.clone();
    let request = tokio::spawn(async move { c.predict(Submission::new("slow", items)).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    engine.restart(Duration::from_millis(500));
    let reply = tokio::time::timeout(Duration::from_secs(90), request).await.expect("request finishes").unwrap().expect("predict");
    assert_eq!(reply.summary.ok, 120, "{:?}", reply.summary);
    let indices: BTreeSet<u32> = reply.outcomes.iter().map(|o| o.as_ref().unwrap().index).collect();
    assert_eq!(indices.len(), 120, "each item exactly once");
    // And the cluster serves new requests after the restart.
    wait_for_workers(&client, 2).await;
    let (inputs, want) = tabular_items(20);
    let reply = client.predict(Submission::new("tabular", inputs)).await.expect("predict after the restart");
    check_scores(&reply, &want);
}

/// Fleet management through a gateway: an upload reaches every worker, the
/// default flips only once all have it ready, under continuous load with
/// no failed request; a worker joining later loads it; fetch returns the
/// bundle; delete removes it everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_upload_flips_the_default_only_when_every_worker_is_ready() {
    let engine = Engine::start();
    let repo1 = repository_of(&["tabular"]);
    let repo2 = repository_of(&["tabular"]);
    let _w1 = Proc::worker(&engine, repo1.path(), &[]);
    let _w2 = Proc::worker(&engine, repo2.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = std::sync::Arc::new(gateway.client().await);
    wait_for_workers(&client, 2).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (client, stop) = (client.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (inputs, want) = tabular_items(10);
                let reply = client.predict(Submission::new("tabular", inputs)).await.expect("no request fails during the rollout");
                check_scores(&reply, &want);
                versions.push(reply.summary.version);
            }
            versions
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let work = tempfile::tempdir().unwrap();
    let bundle = tensorgate_tests::tabular_bundle(work.path(), "tabular-v2", 2, |_| {});
    let start = Instant::now();
    let reply = client.upload(&bundle, false).await.expect("fleet upload");
    let took = start.elapsed();
    assert!(reply.message.contains("ready on 2 worker(s)"), "{}", reply.message);
    // Right after the reply, unversioned requests go to version 2.
    let (inputs, want) = tabular_items(5);
    let after = client.predict(Submission::new("tabular", inputs)).await.unwrap();
    check_scores(&after, &want);
    assert_eq!(after.summary.version, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = Vec::new();
    for t in load {
        seen.extend(t.await.unwrap());
    }
    // Once a request saw version 2, none later on the same task went back.
    assert!(seen.contains(&1) && seen.contains(&2), "{seen:?}");
    tracing_free_log(&format!("fleet upload to default flip: {took:?} ({} requests during, 0 failed)", seen.len()));

    // A worker joining later converges on the fleet state.
    let repo3 = repository_of(&["tabular"]);
    let w3 = Proc::worker(&engine, repo3.path(), &[]);
    let joined = Instant::now();
    loop {
        let status = client.status().await.unwrap();
        if status.workers.iter().any(|w| w.id == w3.announced && w.models.contains(&"tabular/2".to_string())) {
            break;
        }
        assert!(joined.elapsed() < Duration::from_secs(30), "the late worker never loaded v2: {:?}", status.workers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fetch returns the uploaded bundle; a second upload of it is a conflict.
    let archive = client.fetch("tabular", Some(2)).await.expect("fleet fetch");
    assert_eq!(archive, bytes::Bytes::from(tensorgate_client::pack_bundle(&bundle).unwrap()));
    let err = client.upload(&bundle, false).await.expect_err("same version again");
    assert!(matches!(&err, ClientError::Request { code: ErrorCode::Conflict, .. }), "{err}");
    // Delete removes it everywhere; the default goes back to version 1.
    let reply = client.delete("tabular", Some(2)).await.expect("fleet delete");
    assert!(reply.message.contains("deleted version(s) 2"), "{}", reply.message);
    let models = client.models().await.unwrap();
    assert!(models.iter().all(|m| m.version != 2), "{models:#?}");
    let (inputs, _) = tabular_items(1);
    assert_eq!(client.predict(Submission::new("tabular", inputs)).await.unwrap().summary.version, 1);
    // Reload through the gateway asks every worker.
    let reply = client.reload(None).await.expect("fleet reload");
    assert!(reply.message.starts_with("3 of 3 worker(s) reloaded"), "{}", reply.message);
}

/// `rollback` and `promote` through one gateway change what every gateway
/// routes to; a newer release takes over the default again.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_promote_through_one_gateway_route_every_gateway() {
    let engine = Engine::start();
    let repo1 = repository_of(&["tabular"]);
    let repo2 = repository_of(&["tabular"]);
    let _w1 = Proc::worker(&engine, repo1.path(), &[]);
    let _w2 = Proc::worker(&engine, repo2.path(), &[]);
    let (g1, g2) = (Proc::gateway(&engine, &[]), Proc::gateway(&engine, &[]));
    let (c1, c2) = (g1.client().await, g2.client().await);
    wait_for_workers(&c1, 2).await;
    wait_for_workers(&c2, 2).await;
    async fn served(client: &Client) -> u64 {
        let (inputs, want) = tabular_items(3);
        let reply = client.predict(Submission::new("tabular", inputs)).await.expect("predict");
        check_scores(&reply, &want);
        reply.summary.version
    }
    async fn eventually(client: &Client, want: u64, what: &str) {
        let start = Instant::now();
        while served(client).await != want {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}: still not version {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let work = tempfile::tempdir().unwrap();
    c1.upload(&tensorgate_tests::tabular_bundle(work.path(), "tabular-v2", 2, |_| {}), false).await.expect("upload v2");
    assert_eq!(served(&c1).await, 2);
    eventually(&c2, 2, "the other gateway after the upload").await;

    let reply = c1.rollback("tabular").await.expect("fleet rollback");
    assert!(reply.message.contains("version 2 rolled back, version 1 is the default"), "{}", reply.message);
    assert_eq!(served(&c1).await, 1, "the answering gateway routes by it at once");
    eventually(&c2, 1, "the other gateway after the rollback").await;
    let models = c2.models().await.unwrap();
    let v2 = models.iter().find(|m| m.name == "tabular" && m.version == 2).expect("v2 still listed");
    assert_eq!((v2.default, v2.rolled_back.as_deref()), (false, Some("rolled back by hand")));
    let (inputs, _) = tabular_items(1);
    let named = c2.predict(Submission::new("tabular", inputs).version(2)).await.unwrap();
    assert_eq!(named.summary.version, 2, "a rolled-back version still answers when named");
    let err = c2.rollback("tabular").await.expect_err("nothing before version 1");
    assert!(matches!(&err, ClientError::Request { code: ErrorCode::Conflict, .. }), "{err}");

    let err = c2.promote("tabular", 7).await.expect_err("no such version");
    assert!(matches!(&err, ClientError::Request { code: ErrorCode::UnknownModel, .. }), "{err}");
    c2.promote("tabular", 2).await.expect("fleet promote");
    assert_eq!(served(&c2).await, 2);
    eventually(&c1, 2, "the first gateway after the promote").await;

    // Rolled back again, then a newer release is the default on both.
    c2.rollback("tabular").await.unwrap();
    eventually(&c1, 1, "the first gateway after the second rollback").await;
    c1.upload(&tensorgate_tests::tabular_bundle(work.path(), "tabular-v3", 3, |_| {}), false).await.expect("upload v3");
    assert_eq!(served(&c1).await, 3);
    eventually(&c2, 3, "the other gateway after a new release").await;
    // Deleting v3: v2 is still rolled back, so version 1 serves.
    c1.delete("tabular", Some(3)).await.unwrap();
    eventually(&c2, 1, "v3 deleted, v2 still rolled back").await;
}

/// A fleet canary: with `--canary-share` on the gateways, a new release
/// uploaded through one takes that share of the requests naming no version
/// on every gateway, and is promoted (good) or rolled back automatically
/// (bad: a valid manifest whose plugin fails every real item) by the first
/// gateway to reach a verdict on its own traffic; under continuous load on
/// both gateways only the bad canary's items fail.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_canary_is_promoted_when_good_and_rolled_back_when_bad() {
    let engine = Engine::start();
    let repo = repository_of(&["tabular"]);
    let _w = Proc::worker(&engine, repo.path(), &[]);
    let terms = ["--canary-share", "0.5", "--canary-items", "40"];
    let (g1, g2) = (Proc::gateway(&engine, &terms), Proc::gateway(&engine, &terms));
    let (c1, c2) = (std::sync::Arc::new(g1.client().await), std::sync::Arc::new(g2.client().await));
    wait_for_workers(&c1, 1).await;
    wait_for_workers(&c2, 1).await;
    // Load on both gateways; v2 uploaded through one, v3 through the other, verdicts watched on the first.
    let load = [c1.clone(), c2.clone(), c1.clone(), c2.clone()];
    let run = tensorgate_tests::canary::canary_under_load(&load, [&c1, &c2], &c1).await;
    if let Some(c) = &run.v2_trial {
        assert_eq!((c.share, c.items_needed), (0.5, 40), "the gateways' terms");
    }
    tensorgate_tests::canary::until(&c2, "v2 the default on the other gateway", |m| m.iter().any(|m| m.version == 2 && m.default)).await;
    let v3 = run.models.iter().find(|m| m.version == 3).unwrap();
    assert!(v3.rolled_back.as_deref().is_some_and(|r| r.starts_with("canary: ")), "{:?}", v3.rolled_back);
    assert_eq!((run.failed_on(1), run.failed_on(2)), (0, 0), "only the bad canary's items fail");
    assert!(run.on(2) > 40 && run.on(3) > 0, "v2 served {} requests, v3 {}", run.on(2), run.on(3));
    let (inputs, want) = tabular_items(1);
    for c in [&c1, &c2] {
        let r = c.predict(Submission::new("tabular", inputs.clone())).await.unwrap();
        assert_eq!((r.summary.version, r.summary.ok), (2, 1), "nothing more goes to v3");
        check_scores(&r, &want);
    }
    eprintln!(
        "[fleet canary] v2 promoted {:?} after its upload; v3 rolled back {:?} after its upload, {} items failed on it, {} requests in all",
        run.promoted,
        run.rolled_back,
        run.failed_on(3),
        run.seen.len()
    );
}

/// A version that fails on one worker (here: its upload limit is too small)
/// is rolled back everywhere and never becomes the default; the reply names
/// that worker and its error.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_broken_on_one_worker_never_becomes_default() {
    let engine = Engine::start();
    let repo1 = repository_of(&["tabular"]);
    let repo2 = repository_of(&["tabular"]);
    let _good = Proc::worker(&engine, repo1.path(), &[]);
    let small = Proc::worker(&engine, repo2.path(), &["--max-upload-bytes", "1000"]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    wait_for_workers(&client, 2).await;
    let work = tempfile::tempdir().unwrap();
    let bundle = tensorgate_tests::tabular_bundle(work.path(), "tabular-v2", 2, |_| {});
    let err = client.upload(&bundle, false).await.expect_err("fails on one worker");
    match &err {
        ClientError::Request { code, message } => {
            assert_eq!(*code, ErrorCode::LoadFailed);
            assert!(message.contains(&format!("worker {}", small.announced)) && message.contains("rolled back"), "{message}");
        }
        other => panic!("expected load_failed, got {other}"),
    }
    let start = Instant::now();
    loop {
        let models = client.models().await.unwrap();
        if models.iter().all(|m| m.version != 2) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "v2 still held after the rollback: {models:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (inputs, want) = tabular_items(5);
    let reply = client.predict(Submission::new("tabular", inputs)).await.unwrap();
    check_scores(&reply, &want);
    assert_eq!(reply.summary.version, 1);
    // A bundle broken everywhere (bad manifest) fails before any worker sees it.
    let broken = tensorgate_tests::tabular_bundle(work.path(), "tabular-v3", 3, |m| *m = m.replace("[model]", "[modle]"));
    let err = client.upload(&broken, false).await.expect_err("bad manifest");
    assert!(err.to_string().contains("manifest.toml"), "{err}");
}

/// Items and results above the engine's message limit (here the default
/// 1 MB) pass through the large-item store: a raw 14 MB wire plane in, and
/// a 1.2 MB result out, both checked.
#[tokio::test(flavor = "multi_thread")]
async fn items_and_results_larger_than_an_engine_message_pass_transparently() {
    use tensorgate_plugin::npy::{parse_npz, write_npy};
    use tensorgate_plugin::{Dtype, Tensor};
    let engine = Engine::start_conf(&[], "");
    let repo = repository_of(&["plane-stats"]);
    let _w = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    wait_for_workers(&client, 1).await;
    let f32s = |t: &Tensor| t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    // A 3456 x 1008 plane (13.9 MB raw, sent uncompressed), a diagonal track of charge 2.0.
    let (w, t) = (3456u64, 1008u64);
    let mut values = vec![0f32; (w * t) as usize];
    for i in 0..1000usize {
        values[i * t as usize + i] = 2.0;
    }
    let plane = Tensor::from_parts(Dtype::F32, vec![1, w, t], values.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap();
    let start = Instant::now();
    let reply = client
        .predict(Submission::new("plane-stats", vec![Input::new(write_npy(&plane), "application/x-npy")]).uncompressed())
        .await
        .expect("a 14 MB item through a 1 MB engine");
    let took = start.elapsed();
    let got = parse_npz(&reply.outcomes[0].as_ref().expect("ok").payload).unwrap();
    assert_eq!(got[0].1.data()[..8], 1000i64.to_le_bytes());
    assert_eq!(f32s(&got[1].1), vec![2000.0]);
    tracing_free_log(&format!("13.9 MB item through the engine in {took:?} ({:.0} MB/s)", 13.9 / took.as_secs_f64()));
    // 300,000 wires: the per-wire maximum alone is 1.2 MB, above the engine's limit.
    let wires = 300_000usize;
    let mut values = vec![0f32; wires * 4];
    for (i, v) in values.iter_mut().enumerate() {
        *v = (i % 7) as f32;
    }
    let plane = Tensor::from_parts(Dtype::F32, vec![1, wires as u64, 4], values.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap();
    let reply = client
        .predict(Submission::new("plane-stats", vec![Input::new(write_npy(&plane), "application/x-npy")]))
        .await
        .expect("a large result");
    let got = parse_npz(&reply.outcomes[0].as_ref().expect("ok").payload).unwrap();
    let wire_max = f32s(&got[2].1);
    assert_eq!(wire_max.len(), wires);
    for (j, m) in wire_max.iter().enumerate() {
        let want = (0..4).map(|k| ((j * 4 + k) % 7) as f32).fold(0f32, f32::max);
        assert_eq!(*m, want, "wire {j}");
    }
}

/// Engine credentials: with the right user and password everything works;
/// a worker with a wrong one exits with an error naming the engine.
#[tokio::test(flavor = "multi_thread")]
async fn engine_credentials_are_required_and_checked() {
    let engine = Engine::start_conf(&[], "max_payload: 8388608\nauthorization { users = [ { user: tg, password: s3cret } ] }\n");
    let repo = repository_of(&["tabular"]);
    let creds = ["--nats-user", "tg", "--nats-password", "s3cret"];
    let _w = Proc::worker(&engine, repo.path(), &creds);
    let gateway = Proc::gateway(&engine, &creds);
    let client = gateway.client().await;
    wait_for_workers(&client, 1).await;
    let (inputs, want) = tabular_items(10);
    check_scores(&client.predict(Submission::new("tabular", inputs)).await.unwrap(), &want);
    let state = tempfile::tempdir().unwrap();
    let out = Proc::worker_command(&engine, repo.path(), state.path(), &["--nats-user", "tg", "--nats-password", "wrong"])
        .output()
        .expect("worker runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&engine.url) && stderr.to_lowercase().contains("authorization"), "{stderr}");
}

/// One of two gateways killed mid-request: a client given both fails over
/// and resubmits only the unanswered items; each is answered exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_given_two_gateways_survives_losing_one() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let _w1 = Proc::worker(&engine, repo.path(), &[]);
    let _w2 = Proc::worker(&engine, repo.path(), &[]);
    let mut g1 = Proc::gateway(&engine, &[]);
    let g2 = Proc::gateway(&engine, &[]);
    wait_for_workers(&g2.client().await, 2).await;
    let failover = std::sync::Arc::new(tensorgate_client::Failover::new(vec![g1.target(), g2.target()]).unwrap());
    let items = slow_items(120, 1);
    let f = failover.clone();
    let request = tokio::spawn(async move { f.predict(Submission::new("slow", items)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    g1.kill();
    let reply = tokio::time::timeout(Duration::from_secs(60), request).await.expect("request finishes").unwrap().expect("predict fails over");
    assert_eq!(reply.summary.ok, 120, "{:?}", reply.summary);
    for (i, o) in reply.outcomes.iter().enumerate() {
        assert_eq!(o.as_ref().expect("item ok").index as usize, i);
    }
}

/// A gateway SIGKILLed under a heavy load stalls nobody: workers learn it
/// is gone from its missing adverts, drop its queued items unrun instead
/// of running them and holding their replies, and a client of the other
/// gateway is answered within a few advert periods (the trial that found
/// it: 94.9 s). A client given both gateways gets every item exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_gateway_s_backlog_stalls_no_one_else() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let _w1 = Proc::worker(&engine, repo.path(), &[]);
    let _w2 = Proc::worker(&engine, repo.path(), &[]);
    let mut a = Proc::gateway(&engine, &[]);
    let b = Proc::gateway(&engine, &[]);
    let client_b = b.client().await;
    wait_for_workers(&client_b, 2).await;
    let client_a = std::sync::Arc::new(a.client().await);
    // A backlog through A: many-item requests of the slow model, several
    // seconds of work for the two workers (about 1,600 items/s here).
    let mut load = Vec::new();
    for _ in 0..12 {
        let c = client_a.clone();
        load.push(tokio::spawn(async move { c.predict(Submission::new("slow", slow_items(1000, 1))).await }));
    }
    let failover = std::sync::Arc::new(tensorgate_client::Failover::new(vec![a.target(), b.target()]).unwrap());
    let f = failover.clone();
    let survivor = tokio::spawn(async move { f.predict(Submission::new("slow", slow_items(300, 1))).await });
    // Kill A once the workers are into its backlog.
    let start = Instant::now();
    let mut done = 0;
    while done < 300 {
        let status = client_b.status().await.expect("status through B");
        done = status.models.iter().filter(|m| m.name == "slow").map(|m| m.items_ok).sum();
        assert!(start.elapsed() < Duration::from_secs(20), "the load did not start: {done} items answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    let killed = Instant::now();
    let probe = client_b.predict(Submission::new("slow", slow_items(3, 1)));
    let reply = tokio::time::timeout(Duration::from_secs(30), probe).await.expect("B answers").expect("predict through B");
    let first = killed.elapsed();
    assert_eq!(reply.summary.ok, 3, "{:?}", reply.summary);
    // Gone after three 200 ms advert periods (or two after a reply found
    // nobody listening); then its backlog is dropped as fast as it is
    // pulled, and B's items run behind at most what was already running.
    assert!(first < Duration::from_secs(3), "a client of the live gateway waited {first:?} after the other died");
    let reply = tokio::time::timeout(Duration::from_secs(60), survivor).await.expect("failover finishes").unwrap().expect("predict fails over");
    assert_eq!(reply.summary.ok, 300, "{:?}", reply.summary);
    for (i, o) in reply.outcomes.iter().enumerate() {
        assert_eq!(o.as_ref().expect("item ok").index as usize, i, "each item once, in order");
    }
    for l in load {
        let _ = l.await;
    }
    tracing_free_log(&format!("gateway killed with 12,000 items in flight, {done} answered: first answer through the other after {first:?}"));
}

/// A worker restarted with the same state directory keeps its id, and a
/// gateway logs a worker it drops, not only one that joins.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_keeps_its_id_and_a_dropped_one_is_logged() {
    let engine = Engine::start();
    let repo = repository_of(&["tabular"]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let gateway = Proc::gateway_logging(&engine, &[], log.path());
    let client = gateway.client().await;
    let mut w = Proc::worker(&engine, repo.path(), &[]);
    wait_for_workers(&client, 1).await;
    let first = w.announced.clone();
    w.kill();
    let state = w.take_state();
    // Dropped after three silent 200 ms periods.
    let start = Instant::now();
    while !std::fs::read_to_string(log.path()).unwrap_or_default().contains("worker dropped") {
        assert!(start.elapsed() < Duration::from_secs(10), "no drop logged: {}", std::fs::read_to_string(log.path()).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = Proc::worker_in(&engine, repo.path(), state, &[]);
    assert_eq!(again.announced, first, "the same state directory, the same worker id");
    let status = wait_for_workers(&client, 1).await;
    assert_eq!(status.workers[0].id, first);
}

/// A worker told to stop while the engine is down still exits, in bounded time.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_drains_even_with_the_engine_gone() {
    let mut engine = Engine::start();
    let repo = repository_of(&["tabular"]);
    let mut w = Proc::worker(&engine, repo.path(), &[]);
    engine.kill();
    let start = Instant::now();
    assert!(w.terminate(Duration::from_secs(20)), "the worker exited 0");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

/// Soak: continuous many-item requests while workers are SIGKILLed and
/// replaced and new versions are rolled out through the gateway. Every
/// item of every request is answered exactly once, with a result. CI runs
/// 15 s; `TENSORGATE_CLUSTER_SOAK_SECS` sets a longer run.
#[tokio::test(flavor = "multi_thread")]
async fn soak_with_worker_kills_and_rollouts_loses_and_duplicates_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let secs: u64 = std::env::var("TENSORGATE_CLUSTER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let engine = Engine::start();
    let repos: Vec<tempfile::TempDir> = (0..12).map(|_| repository_of(&["tabular"])).collect();
    let mut workers: Vec<Proc> = (0..3).map(|i| Proc::worker(&engine, repos[i].path(), &[])).collect();
    let gateway = Proc::gateway(&engine, &[]);
    let client = Arc::new(gateway.client().await);
    wait_for_workers(&client, 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (submitted, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, submitted, answered) = (client.clone(), stop.clone(), submitted.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (inputs, want) = tabular_items(50);
                submitted.fetch_add(50, Ordering::Relaxed);
                let reply = client.predict(Submission::new("tabular", inputs)).await.expect("a request during the soak");
                check_scores(&reply, &want);
                let indices: BTreeSet<u32> = reply.outcomes.iter().map(|o| o.as_ref().unwrap().index).collect();
                assert_eq!(indices.len(), 50, "each item exactly once");
                answered.fetch_add(50, Ordering::Relaxed);
            }
        }));
    }
    let work = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (mut kills, mut rollouts, mut next_repo, mut version) = (0, 0, 3, 1);
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Kill the oldest worker outright and start a fresh one (it converges on the fleet state).
        let mut victim = workers.remove(0);
        victim.kill();
        kills += 1;
        workers.push(Proc::worker(&engine, repos[next_repo % repos.len()].path(), &[]));
        next_repo += 1;
        if kills % 2 == 0 {
            version += 1;
            let bundle = tensorgate_tests::tabular_bundle(work.path(), &format!("tabular-v{version}"), version, |_| {});
            let reply = client.upload(&bundle, false).await.expect("a rollout during the soak");
            assert!(reply.message.contains("ready on"), "{}", reply.message);
            rollouts += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("load finishes").unwrap();
    }
    let (s, a) = (submitted.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
    tracing_free_log(&format!("soak {secs} s: {s} items submitted, {a} answered once each, {kills} worker kills, {rollouts} rollouts (to v{version})"));
    assert_eq!(s, a, "every submitted item answered");
    assert!(kills >= 3 && rollouts >= 1);
}

/// A saturated fleet: with the engine's queue bounded (here 1 MiB) and one
/// slow worker pulling one item at a time, items beyond the bound fail at
/// once with `busy` and a retry hint instead of piling up; the rest run.
#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_fleet_answers_busy_instead_of_queueing_without_bound() {
    let engine = Engine::start();
    let repo = tensorgate_tests::repository_with_slow();
    let bounded = ["--max-queued-mb", "1"];
    let _w = Proc::worker(&engine, repo.path(), &["--capacity", "1", "--max-queued-mb", "1"]);
    let gateway = Proc::gateway(&engine, &bounded);
    let client = gateway.client().await;
    wait_for_workers(&client, 1).await;
    // 40 items of 100 x 256 f32 (100 KiB each, sent raw): 4 MiB against a 1 MiB queue.
    let items = slow_items(40, 100);
    let reply = tokio::time::timeout(Duration::from_secs(120), client.predict(Submission::new("slow", items).uncompressed()))
        .await
        .expect("the request finishes")
        .expect("predict");
    let busy: Vec<_> = reply.outcomes.iter().filter_map(|o| o.as_ref().err()).filter(|e| e.code == ErrorCode::Busy).collect();
    let ok = reply.outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(reply.outcomes.len(), 40);
    assert!(!busy.is_empty() && ok > 0, "{ok} ok, {} busy: {:?}", busy.len(), reply.summary);
    assert_eq!(ok + busy.len(), 40, "only busy failures: {:?}", reply.outcomes.iter().filter_map(|o| o.as_ref().err()).collect::<Vec<_>>());
    assert!(busy.iter().all(|e| e.retry_after_ms.is_some() && e.message.contains("did not take the item")), "{busy:?}");
    tracing_free_log(&format!("saturated: {ok} ran, {} answered busy", busy.len()));
}

fn tracing_free_log(line: &str) {
    eprintln!("[cluster] {line}");
}
