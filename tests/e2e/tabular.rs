//! The tabular application end to end: a real host on loopback, the real
//! wasm component, the real TorchScript MLP, over a real QUIC connection.
//! Scores are compared with PyTorch's (plugins/tabular/reference.json,
//! written by scripts/make_models.py) within 1e-5 absolute: both run the
//! same f32 kernels, so only summation order can differ.

use serde_json::Value;
use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Client, ClientError, Input, Submission, Trust};
use tensorgate_tests::{root, TestHost};

const TOLERANCE: f64 = 1e-5;

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

fn body(keys: &[&str], values: &[f64]) -> Input {
    Input::json(serde_json::to_vec(&serde_json::json!({ "keys": keys, "values": values })).unwrap())
}

fn features() -> Vec<String> {
    reference()["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// A reply's scores against a reference case's: the same labels in the
/// same order, each within [`TOLERANCE`] of PyTorch's.
fn assert_scores(payload: &[u8], case: &Value, what: &str) {
    let got: serde_json::Map<String, Value> = serde_json::from_slice(payload).unwrap();
    let want = case["scores"].as_object().unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "labels in manifest order");
    for (label, w) in want {
        let (g, w) = (got[label].as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= TOLERANCE, "{what} label {label}: host {g} vs pytorch {w}");
    }
}

fn good_input() -> Input {
    let f = features();
    let keys: Vec<&str> = f.iter().map(String::as_str).collect();
    body(&keys, &vec![0.5; keys.len()])
}

#[tokio::test(flavor = "multi_thread")]
async fn scores_match_pytorch_reference() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let items = cases.iter().map(|c| Input::json(serde_json::to_vec(&c["request"]).unwrap())).collect();
    let reply = client.predict(Submission::new("tabular", items)).await.expect("request succeeds");
    assert_eq!(reply.summary.ok as usize, cases.len());
    assert_eq!(reply.summary.failed, 0);
    assert_eq!((reply.summary.model.as_str(), reply.summary.version), ("tabular", 1));
    for (i, (case, outcome)) in cases.iter().zip(&reply.outcomes).enumerate() {
        let out = outcome.as_ref().expect("item ok");
        assert_eq!(out.index as usize, i);
        assert_eq!(out.content_type, "application/json");
        assert_scores(&out.payload, case, &format!("case {i}"));
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_items_on_one_connection_and_concurrent_requests() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let make = |n: usize| -> Vec<Input> {
        (0..n).map(|i| Input::json(serde_json::to_vec(&cases[i % cases.len()]["request"]).unwrap())).collect()
    };
    // Several concurrent requests on one connection, each with many items.
    let (a, b, c) = tokio::join!(
        client.predict(Submission::new("tabular", make(300))),
        client.predict(Submission::new("tabular", make(200))),
        client.predict(Submission::new("tabular", make(100))),
    );
    for (reply, n) in [(a.unwrap(), 300), (b.unwrap(), 200), (c.unwrap(), 100)] {
        assert_eq!(reply.summary.ok, n);
        for (i, outcome) in reply.outcomes.iter().enumerate() {
            let out = outcome.as_ref().unwrap();
            let got: Value = serde_json::from_slice(&out.payload).unwrap();
            let want = cases[i % cases.len()]["scores"]["top"].as_f64().unwrap();
            assert!((got["top"].as_f64().unwrap() - want).abs() <= TOLERANCE, "item {i} mapped to the wrong input");
        }
        assert!(reply.summary.timings.forward_us > 0);
    }
    let status = client.status().await.unwrap();
    let tabular = status.models.iter().find(|m| m.name == "tabular").expect("tabular listed");
    assert_eq!(tabular.items_ok, 600);
    assert_eq!(tabular.version, 1);
    assert_eq!(tabular.device, "cpu");
    client.close().await;
    host.stop().await;
}

/// The plugin tries each key where the key at that position went in the
/// previous item: runs of one key order, changes of order, and a bad item
/// between them must all map every value to its feature.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_and_changing_key_orders_map_every_value() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    // Reference cases by index (each has its own key order); `None`: case 0
    // with an unknown key.
    let plan = [0, 0, 0, 1, 1, 0].map(Some).into_iter().chain([None]).chain([2, 2, 2, 2, 3, 0, 0, 0].map(Some));
    // One request at a time, so one plugin instance sees them in this order.
    for (i, case) in plan.enumerate() {
        let mut request = cases[case.unwrap_or(0)]["request"].clone();
        if case.is_none() {
            request["keys"][3] = Value::from("jet_unknown");
        }
        let item = Input::json(serde_json::to_vec(&request).unwrap());
        let reply = client.predict(Submission::new("tabular", vec![item])).await.unwrap();
        let Some(case) = case else {
            let e = reply.outcomes[0].as_ref().expect_err("an unknown key fails the item");
            assert!(e.message.contains("jet_unknown"), "{}", e.message);
            continue;
        };
        let out = reply.outcomes[0].as_ref().expect("item ok");
        assert_scores(&out.payload, &cases[case], &format!("item {i} (case {case})"));
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_items_fail_alone_with_clear_errors() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let f = features();
    let keys: Vec<&str> = f.iter().map(String::as_str).collect();
    let items = vec![
        good_input(),
        Input::json(b"{\"keys\": [\"jet_pt\"], \"values\": [1.0".to_vec()), // malformed JSON
        body(&keys[1..], &vec![1.0; keys.len() - 1]),                       // missing jet_pt
        body(&[&keys[..], &["jet_charm"]].concat(), &vec![1.0; keys.len() + 1]), // unknown key
        body(&keys, &[1.0, 2.0]),                                          // length mismatch
        Input::json(b"{\"keys\": [\"jet_pt\"], \"values\": [\"high\"]}".to_vec()), // non-numeric
        good_input(),
        body(&[&keys[..], &["jet_eta"]].concat(), &vec![1.0; keys.len() + 1]), // jet_eta twice
    ];
    let reply = client.predict(Submission::new("tabular", items)).await.expect("request succeeds");
    assert_eq!((reply.summary.ok, reply.summary.failed), (2, 6));
    assert!(reply.outcomes[0].is_ok() && reply.outcomes[6].is_ok());
    let expect = [
        (1, "malformed-json"),
        (2, "missing key `jet_pt`"),
        (3, "unknown key `jet_charm`"),
        (4, "length-mismatch"),
        (5, "invalid type"),
        (7, "key `jet_eta` appears more than once"),
    ];
    for (i, needle) in expect {
        let err = reply.outcomes[i].as_ref().expect_err("item fails");
        assert_eq!(err.code, ErrorCode::PluginError, "item {i}");
        assert!(err.message.contains(needle), "item {i}: `{}` lacks `{needle}`", err.message);
    }
    // The host keeps serving on the same connection.
    let again = client.predict(Submission::new("tabular", vec![good_input()])).await.unwrap();
    assert_eq!(again.summary.ok, 1);

    // The plugin accepts JSON only: an .npy is refused by the host, naming both;
    // a content type with parameters, in any case, is the same type.
    let npy = Input::new(b"\x93NUMPY".to_vec(), "application/x-npy");
    let mut json = good_input();
    json.content_type = "Application/JSON; charset=utf-8".into();
    let reply = client.predict(Submission::new("tabular", vec![npy, json])).await.unwrap();
    let err = reply.outcomes[0].as_ref().expect_err("npy refused");
    assert_eq!(err.code, ErrorCode::UnsupportedContentType);
    assert_eq!(err.message, "item 0: content type `application/x-npy` is not one `tabular` accepts (application/json)");
    assert!(reply.outcomes[1].is_ok(), "{:?}", reply.outcomes[1]);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_model_and_version_fail_that_request_only() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let err = client.predict(Submission::new("no-such-net", vec![good_input()])).await.unwrap_err();
    match err {
        ClientError::Request { code, message } => {
            assert_eq!(code, ErrorCode::UnknownModel);
            assert!(message.contains("no-such-net") && message.contains("tabular"), "{message}");
        }
        other => panic!("expected a request error, got {other}"),
    }
    let err = client.predict(Submission::new("tabular", vec![good_input()]).version(9)).await.unwrap_err();
    assert!(matches!(&err, ClientError::Request { code: ErrorCode::UnknownModel, message } if message.contains("no version 9")), "{err}");
    let ok = client.predict(Submission::new("tabular", vec![good_input()]).version(1)).await.unwrap();
    assert_eq!(ok.summary.ok, 1);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_a_stream_fails_that_stream_only() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    send.write_all(&[0x7f, 1, 2, 3, 4, 5, 6, 7]).await.unwrap();
    let _ = send.finish();
    let bytes = recv.read_to_end(1 << 16).await.unwrap();
    let mut dec = tensorgate_client::protocol::FrameDecoder::new(Default::default());
    dec.feed(&bytes);
    match dec.decode().unwrap() {
        Some(tensorgate_client::protocol::Frame::RequestError(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("unknown frame kind 0x7f"), "{}", e.message);
        }
        other => panic!("expected RequestError, got {other:?}"),
    }
    let ok = client.predict(Submission::new("tabular", vec![good_input()])).await.unwrap();
    assert_eq!(ok.summary.ok, 1);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_fingerprint_is_refused_by_the_client() {
    let host = TestHost::start().await;
    let wrong = "00".repeat(32);
    let err = Client::connect(host.host.addr(), Trust::Fingerprint(wrong)).await.err().expect("connect must fail");
    assert!(err.to_string().contains("fingerprint mismatch"), "{err}");
    let err = Client::connect(host.host.addr(), Trust::Fingerprint("xyz".into())).await.err().expect("bad syntax");
    assert!(err.to_string().contains("not hex"), "{err}");
    // The host is unaffected.
    let client = host.client().await;
    assert_eq!(client.predict(Submission::new("tabular", vec![good_input()])).await.unwrap().summary.ok, 1);
    client.close().await;
    host.stop().await;
}

/// `tensorgate-host check` (what `plugin check` and `plugin build` run)
/// runs the `[warmup]` item and every file under `samples/`: a bad sample
/// fails the check (exit 1) even when a warm-up is set, naming its file.
#[test]
fn check_runs_the_warm_up_and_every_sample() {
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path().join("tabular");
    tensorgate_tests::copy_dir(&tensorgate_tests::repository().join("tabular/1"), &dir);
    std::fs::create_dir_all(dir.join("samples")).expect("samples");
    for f in ["jet-0.json", "jet-1.json", "bad-missing-key.json"] {
        std::fs::copy(root().join("plugins/tabular/samples").join(f), dir.join("samples").join(f)).expect("sample");
    }
    let manifest = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, format!("{text}\n[warmup]\nfile = \"samples/jet-0.json\"\n")).expect("manifest");
    let check = || {
        let bin = root().join("target/release/tensorgate-host");
        let out = std::process::Command::new(bin).arg("check").arg(&dir).env("RUST_LOG", "warn").output().expect("check runs");
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        (out.status.code(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, lines, err) = check();
    assert_eq!(code, Some(1), "{lines:?} {err}");
    let files: Vec<&str> = lines.iter().map(|l| l["file"].as_str().expect("file")).collect();
    assert_eq!(files, ["samples/jet-0.json", "samples/bad-missing-key.json", "samples/jet-1.json"], "the warm-up once, then each sample");
    assert_eq!(lines[1]["ok"], false);
    assert!(lines[1]["error"].as_str().expect("error").contains("missing key"), "{lines:?}");
    assert!(err.contains("checked, 3 sample(s), some failed"), "{err}");
    std::fs::remove_file(dir.join("samples/bad-missing-key.json")).expect("rm");
    let (code, lines, err) = check();
    assert_eq!((code, lines.len()), (Some(0), 2), "{lines:?} {err}");
}
