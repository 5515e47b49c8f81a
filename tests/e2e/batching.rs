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
    let plane = Tensor { dtype: Dtype::F32, shape: vec![1, 64, 32], data: vec![0; 64 * 32 * 4] };
    let items = vec![Input::new(write_npy(&plane), "application/x-npy"); 8];
    let reply = client.predict(Submission::new("plane-stats", items)).await.unwrap();
    assert_eq!(reply.summary.ok, 8);
    let m = client.status().await.unwrap().models.into_iter().find(|m| m.name == "plane-stats").unwrap();
    assert_eq!((m.forwards, m.forward_rows), (8, 8));
    client.close().await;
    host.stop().await;
}
