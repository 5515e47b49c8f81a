//! Dynamic batching across requests: batches form under concurrent load and
//! give the same results as running each item alone; a model that opts out
//! runs one item per forward.
//!
//! "The same" is within 1e-6 absolute, not bit for bit: libtorch's CPU GEMM
//! (oneDNN/MKL) picks different kernels for 1 row and for 64 rows, which sum
//! in a different order, and a few scores differ in the last bit (~3e-8).

use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::write_npy;
use tensorgate_plugin::{Dtype, Tensor};
use tensorgate_tests::{root, TestHost};

fn tabular_items(n: usize) -> Vec<Input> {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    (0..n)
        .map(|i| {
            // Distinct inputs: scale each reference case a little differently.
            let mut req = cases[i % cases.len()]["request"].clone();
            for x in req["values"].as_array_mut().unwrap() {
                *x = serde_json::json!(x.as_f64().unwrap() * (1.0 + i as f64 / 100.0));
            }
            Input::json(serde_json::to_vec(&req).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_items_are_batched_and_match_unbatched_results() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let items = tabular_items(256);
    // Unbatched: one request at a time, one item each.
    let mut alone = Vec::new();
    for item in &items {
        let reply = client.predict(Submission::new("tabular", vec![item.clone()])).await.unwrap();
        alone.push(reply.outcomes[0].as_ref().unwrap().payload.clone());
    }
    let before = client.status().await.unwrap().models.into_iter().find(|m| m.name == "tabular").unwrap();
    assert_eq!(before.forwards, before.forward_rows, "sequential single items run one per forward");
    // A lone item of the only request on the host runs its (short) forward on
    // the async worker, skipping the executor thread; the same results either way.
    // Inline only while forwards are short (the executor's mean forward time
    // per row within INLINE_FORWARD_MAX): on a machine loaded enough to slow
    // them past it, queueing them is the designed behaviour.
    let mean_us = before.forward_us as f64 / before.forward_rows.max(1) as f64;
    let short = mean_us * 1.5 < tensorgate_runtime::executor::INLINE_FORWARD_MAX.as_micros() as f64;
    if short {
        assert!(before.forwards_inline > 0, "no forward ran inline in {} sequential requests ({mean_us:.0} µs each)", before.forwards);
    } else {
        eprintln!("forwards took {mean_us:.0} µs per row on average (a loaded machine): too long to run inline, so none did");
    }
    assert!(before.forwards_inline <= before.forwards);
    // Concurrent: four requests of 64 items at once.
    let chunks: Vec<Vec<Input>> = items.chunks(64).map(|c| c.to_vec()).collect();
    let replies = futures_join(&client, chunks).await;
    let after = client.status().await.unwrap().models.into_iter().find(|m| m.name == "tabular").unwrap();
    let forwards = after.forwards - before.forwards;
    let rows = after.forward_rows - before.forward_rows;
    assert_eq!(rows, 256);
    assert!(forwards < rows, "no batching happened: {forwards} forwards for {rows} rows");
    eprintln!("mean batch size {:.1}", rows as f64 / forwards as f64);
    let mut identical = 0;
    for (chunk, reply) in replies.iter().enumerate() {
        for (i, outcome) in reply.outcomes.iter().enumerate() {
            let index = chunk * 64 + i;
            let got = &outcome.as_ref().unwrap().payload;
            if got == &alone[index] {
                identical += 1;
                continue;
            }
            let g: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(got).unwrap();
            let w: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&alone[index]).unwrap();
            assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>());
            for (label, value) in &g {
                let (a, b) = (value.as_f64().unwrap(), w[label].as_f64().unwrap());
                assert!((a - b).abs() <= 1e-6, "item {index} label {label}: batched {a} vs alone {b}");
            }
        }
    }
    eprintln!("{identical}/256 items bit-identical batched vs alone");
    assert!(identical > 0, "no item matched bit for bit: rows are probably misrouted");
    client.close().await;
    host.stop().await;
}

async fn futures_join(client: &tensorgate_client::Client, chunks: Vec<Vec<Input>>) -> Vec<tensorgate_client::Reply> {
    let mut it = chunks.into_iter();
    let (a, b, c, d) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let (a, b, c, d) = tokio::join!(
        client.predict(Submission::new("tabular", a)),
        client.predict(Submission::new("tabular", b)),
        client.predict(Submission::new("tabular", c)),
        client.predict(Submission::new("tabular", d)),
    );
    vec![a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_opts_out_runs_one_item_per_forward() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let plane = Tensor::from_parts(Dtype::F32, vec![1, 64, 32], vec![0; 64 * 32 * 4]).unwrap();
    let items = vec![Input::new(write_npy(&plane), "application/x-npy"); 8];
    let reply = client.predict(Submission::new("plane-stats", items)).await.unwrap();
    assert_eq!(reply.summary.ok, 8);
    let m = client.status().await.unwrap().models.into_iter().find(|m| m.name == "plane-stats").unwrap();
    assert_eq!((m.forwards, m.forward_rows), (8, 8));
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_model_does_not_hold_up_a_fast_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let repo = tensorgate_tests::repository_with_slow();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    assert!(host.host.repository().failures().is_empty(), "{:?}", host.host.repository().failures());
    let client = Arc::new(host.client().await);

    let x = Tensor::from_parts(Dtype::F32, vec![1, 256], 0.5f32.to_le_bytes().repeat(256)).unwrap();
    let slow_items = vec![Input::new(write_npy(&x), "application/x-npy"); 500];
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow = {
        let (client, done) = (client.clone(), slow_done.clone());
        tokio::spawn(async move {
            let reply = client.predict(Submission::new("slow", slow_items)).await.unwrap();
            done.store(true, Ordering::SeqCst);
            reply
        })
    };
    // Wait until the slow model is busy, then use the fast one.
    loop {
        let s = client.status().await.unwrap();
        if s.models.iter().any(|m| m.name == "slow" && m.forwards > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for item in tabular_items(20) {
        let reply = client.predict(Submission::new("tabular", vec![item])).await.unwrap();
        assert_eq!(reply.summary.ok, 1);
    }
    assert!(!slow_done.load(Ordering::SeqCst), "the fast model's 20 requests waited for the slow model's 500 items");
    let slow_reply = slow.await.unwrap();
    assert_eq!(slow_reply.summary.ok, 500);
    client.status().await.unwrap();
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_model_instances_share_the_queue() {
    let repo = tensorgate_tests::repository_with(|name, text| {
        if name == "tabular" {
            *text = text.replace("max_batch = 64", "max_batch = 4\ninstances = 2");
        }
    });
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let items = tabular_items(400);
    let mut alone = Vec::new();
    for item in items.iter().take(8) {
        alone.push(client.predict(Submission::new("tabular", vec![item.clone()])).await.unwrap().outcomes[0].clone().unwrap().payload);
    }
    let reply = client.predict(Submission::new("tabular", items)).await.unwrap();
    assert_eq!(reply.summary.ok, 400);
    for (i, want) in alone.iter().enumerate() {
        let got: serde_json::Value = serde_json::from_slice(&reply.outcomes[i].as_ref().unwrap().payload).unwrap();
        let want: serde_json::Value = serde_json::from_slice(want).unwrap();
        for label in ["qcd", "top", "w", "z"] {
            assert!((got[label].as_f64().unwrap() - want[label].as_f64().unwrap()).abs() <= 1e-6, "item {i} {label}");
        }
    }
    let m = client.status().await.unwrap().models.into_iter().find(|m| m.name == "tabular").unwrap();
    assert_eq!(m.forward_rows, 408);
    // Both instances took batches from the one queue.
    let app = host.host.repository().resolve("tabular", None).unwrap();
    let per_instance: Vec<u64> = app.model.stats().instance_forwards.iter().map(|n| n.load(std::sync::atomic::Ordering::Relaxed)).collect();
    assert_eq!(per_instance.len(), 2, "two instances loaded");
    assert!(per_instance.iter().all(|&n| n > 0), "every instance ran forwards: {per_instance:?}");
    assert_eq!(per_instance.iter().sum::<u64>(), m.forwards);
    client.close().await;
    host.stop().await;
}

/// `[model] threads`: each model's executor threads run libtorch with their
/// own intra-op thread count, whatever another model set since (libtorch
/// keeps the count per thread; the host sets it on every executor thread).
#[tokio::test(flavor = "multi_thread")]
async fn each_model_keeps_its_own_intra_op_threads() {
    let repo = tensorgate_tests::repository_with(|name, text| {
        let threads = match name {
            "tabular" => 2,
            "image" => 3,
            _ => return,
        };
        *text = text.replacen("[model]\n", &format!("[model]\nthreads = {threads}\n"), 1);
    });
    // The test host's own default is 1 (`intra_op_threads`).
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let png = std::fs::read(root().join("plugins/image/samples").read_dir().unwrap().next().unwrap().unwrap().path()).unwrap();
    let threads = |name: &str| {
        let app = host.host.repository().resolve(name, None).unwrap();
        app.model.stats().intra_op_threads.load(std::sync::atomic::Ordering::Relaxed)
    };
    for round in 0..2 {
        let r = client.predict(Submission::new("tabular", tabular_items(2))).await.unwrap();
        assert_eq!(r.summary.ok, 2);
        let r = client.predict(Submission::new("image", vec![Input::new(png.clone(), "image/png")])).await.unwrap();
        assert_eq!(r.summary.ok, 1, "{:?}", r.outcomes);
        assert_eq!((threads("tabular"), threads("image")), (2, 3), "round {round}: each model's count, after the other's forward");
    }
    // A model with more than one intra-op thread never runs on the async worker.
    let tabular = client.status().await.unwrap().models.into_iter().find(|m| m.name == "tabular").unwrap();
    assert_eq!(tabular.forwards_inline, 0);
    client.close().await;
    host.stop().await;
}
