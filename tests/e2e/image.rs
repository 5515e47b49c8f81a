//! The `image` application (TFaaS /image): PNGs decoded inside the plugin,
//! resized and normalised, classified; compared with PyTorch's
//! decode -> interpolate(bilinear) -> normalise -> forward on the same images
//! (plugins/image/reference.json, from scripts/make_models.py).
//! Tolerance: 1e-4 absolute on softmax scores.

use serde_json::Value;
use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Input, Submission};
use tensorgate_tests::{root, TestHost};

#[tokio::test(flavor = "multi_thread")]
async fn png_top_k_matches_pytorch() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let dir = root().join("plugins/image");
    let reference: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let items = cases
        .iter()
        .map(|c| Input::new(std::fs::read(dir.join("samples").join(c["file"].as_str().unwrap())).unwrap(), "image/png"))
        .collect();
    let reply = client.predict(Submission::new("image", items)).await.unwrap();
    let mut worst = 0f64;
    for (case, outcome) in cases.iter().zip(&reply.outcomes) {
        let out = outcome.as_ref().unwrap_or_else(|e| panic!("{}: {e}", case["file"]));
        assert_eq!(out.content_type, "application/json");
        let got: Value = serde_json::from_slice(&out.payload).unwrap();
        let top = got["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 3, "params.top_k = 3");
        let want = case["scores"].as_object().unwrap();
        let mut ranked: Vec<(&String, f64)> = want.iter().map(|(k, v)| (k, v.as_f64().unwrap())).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (t, (label, score)) in top.iter().zip(&ranked) {
            assert_eq!(t["label"].as_str(), Some(label.as_str()), "{}: ranking", case["file"]);
            let d = (t["score"].as_f64().unwrap() - score).abs();
            worst = worst.max(d);
            assert!(d <= 1e-4, "{}: {label} host {} vs pytorch {score}", case["file"], t["score"]);
        }
        assert_eq!(top[0]["label"], case["label"], "{} is classified as drawn", case["file"]);
    }
    eprintln!("image: {} PNGs, max |host - pytorch| = {worst:e}", cases.len());
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_png_is_a_clear_item_error() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let good = std::fs::read(root().join("plugins/image/samples/disc-0.png")).unwrap();
    let items = vec![
        Input::new(good[..good.len() / 2].to_vec(), "image/png"),
        Input::new(b"GIF89a".to_vec(), "image/png"),
        Input::new(good, "image/png"),
    ];
    let reply = client.predict(Submission::new("image", items)).await.unwrap();
    for i in 0..2 {
        let e = reply.outcomes[i].as_ref().expect_err("fails");
        assert_eq!(e.code, ErrorCode::PluginError);
        assert!(e.message.contains("cannot decode PNG"), "{}", e.message);
    }
    assert!(reply.outcomes[2].is_ok(), "a bad image fails alone");
    client.close().await;
    host.stop().await;
}
