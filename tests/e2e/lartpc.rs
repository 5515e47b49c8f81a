//! LArTPC segmentation applications against PyTorch: `lartpc-dense` (a wire
//! plane in, stitched sparse scores out) and `lartpc-sparse` (a pixel list in,
//! scores for exactly those pixels out). The reference is the same
//! threshold -> tile -> skip empty -> forward -> stitch pipeline written in
//! Python (scripts/make_models.py, `dense_reference`) on the same plane.
//!
//! Tolerance: 1e-4 absolute on softmax scores (batched vs single-tile
//! convolutions in libtorch differ by float rounding, ~1e-6 seen).

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::{parse_npz, write_npy, write_npz};
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::Tensor;
use tensorgate_tests::{root, sparse_npz, TestHost};

const TOLERANCE: f32 = 1e-4;

/// The sample's pixels and their values.
fn sample() -> (Pixels, Tensor) {
    let bytes = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).expect("sample");
    Pixels::from_npz(parse_npz(&bytes).expect("npz")).expect("sparse sample")
}

/// The sample as a dense plane.
fn dense(s: &(Pixels, Tensor)) -> Vec<f32> {
    s.0.to_dense(&s.1).expect("dense").to_f32().expect("f32")
}

fn reference() -> (Vec<i32>, Vec<f32>) {
    let r = parse_npz(&std::fs::read(root().join("plugins/lartpc-dense/reference.npz")).expect("reference")).expect("npz");
    let get = |n: &str| r.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone()).expect(n);
    (get("pixels").view::<i32>().unwrap().into_owned(), get("scores").view::<f32>().unwrap().into_owned())
}

fn plane_npy(h: usize, w: usize, values: &[f32]) -> Vec<u8> {
    write_npy(&Tensor::from_slice(&[h as u64, w as u64], values).unwrap())
}

fn arrays(payload: &[u8]) -> Vec<(String, Tensor)> {
    parse_npz(payload).expect("reply is an npz")
}

fn get<'a>(a: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &a.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("reply has no `{name}`")).1
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread")]
async fn dense_plane_matches_pytorch_stitching() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let s = sample();
    let dense = dense(&s);
    let (want_pixels, want_scores) = reference();
    let input = Input::new(plane_npy(s.0.height, s.0.width, &dense), "application/x-npy")
        .with_meta("run", "5328")
        .with_meta("subrun", "12")
        .with_meta("event", "604")
        .with_meta("plane", "2")
        .with_meta("unrelated", "echoed");
    let reply = client.predict(Submission::new("lartpc-dense", vec![input])).await.unwrap();
    let out = reply.outcomes[0].as_ref().expect("item ok");
    assert_eq!(out.content_type, "application/x-npz");
    // The host gives the item's metadata back; the plugin adds its counts.
    for (k, v) in [("run", "5328"), ("subrun", "12"), ("event", "604"), ("plane", "2"), ("unrelated", "echoed"), ("tiles", "6"), ("tiles_run", "6")] {
        assert_eq!(out.metadata.get(k).map(String::as_str), Some(v), "metadata {k}: {:?}", out.metadata);
    }
    assert_eq!(out.metadata.len(), 7, "{:?}", out.metadata);
    let a = arrays(&out.payload);
    let pixels = get(&a, "pixels").view::<i32>().unwrap().into_owned();
    assert_eq!(pixels, want_pixels, "the above-threshold pixels, row-major");
    assert!(pixels.len() > 1000 && pixels.len() < s.0.len(), "threshold drops the noise: {} of {}", pixels.len() / 2, s.0.len());
    let values = get(&a, "values").view::<f32>().unwrap().into_owned();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, dense[pixels[2 * i] as usize * s.0.width + pixels[2 * i + 1] as usize]);
        assert!(*v > 10.0);
    }
    let scores = get(&a, "scores");
    assert_eq!(scores.shape(), vec![(pixels.len() / 2) as u64, 3]);
    let d = max_diff(&scores.view::<f32>().unwrap(), &want_scores);
    eprintln!("lartpc-dense: {} pixels, max |host - pytorch| = {d:e}", pixels.len() / 2);
    assert!(d <= TOLERANCE, "max score difference {d} > {TOLERANCE}");
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_plane_runs_only_non_empty_tiles() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let (h, w) = (3456usize, 1008usize);
    // A short track near the top-left corner and noise below threshold everywhere else.
    let mut plane = vec![0f32; h * w];
    for i in 0..100 {
        plane[(20 + i) * w + 30 + i / 2] = 40.0;
    }
    for i in (0..h * w).step_by(97) {
        plane[i] += 3.0;
    }
    let empty = vec![0f32; h * w];
    let items = vec![
        Input::new(plane_npy(h, w, &plane), "application/x-npy"),
        Input::new(plane_npy(h, w, &empty), "application/x-npy"),
    ];
    let reply = client.predict(Submission::new("lartpc-dense", items)).await.unwrap();
    let track = reply.outcomes[0].as_ref().expect("track plane ok");
    assert_eq!((track.metadata["tiles"].as_str(), track.metadata["tiles_run"].as_str()), ("24", "1"));
    let a = arrays(&track.payload);
    assert_eq!(get(&a, "pixels").shape(), vec![100, 2]);
    let scores = get(&a, "scores").view::<f32>().unwrap().into_owned();
    for p in scores.chunks(3) {
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "scores are a softmax: {p:?}");
    }
    let none = reply.outcomes[1].as_ref().expect("empty plane ok");
    assert_eq!(none.metadata["tiles_run"], "1", "an empty plane still runs one tile");
    assert_eq!(get(&arrays(&none.payload), "scores").shape(), vec![0, 3]);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dense_bad_inputs_are_clear_item_errors() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let cube = write_npy(&Tensor::from_slice(&[2, 2, 2], &[0f32; 8]).unwrap());
    let ints = write_npy(&Tensor::from_slice(&[2, 2], &[0i64; 4]).unwrap());
    let items = vec![
        Input::new(cube, "application/x-npy"),
        Input::new(ints, "application/x-npy"),
        Input::new(b"not numpy".to_vec(), "application/x-npy"),
    ];
    let reply = client.predict(Submission::new("lartpc-dense", items)).await.unwrap();
    let msg = |i: usize| {
        let e = reply.outcomes[i].as_ref().expect_err("fails");
        assert_eq!(e.code, ErrorCode::PluginError);
        e.message.clone()
    };
    assert!(msg(0).contains("expected a 2-d plane [rows, cols], got shape [2, 2, 2]"), "{}", msg(0));
    assert!(msg(1).contains("expected an f32 plane, got i64 of shape [2, 2]"), "{}", msg(1));
    assert!(msg(2).contains("bad magic"), "{}", msg(2));
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sparse_pixels_scored_in_input_order() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let sample = tensorgate_tests::scrambled_sample_pixels();
    let input = Input::new(sample.npz, "application/x-npz").with_meta("event", "604");
    let reply = client.predict(Submission::new("lartpc-sparse", vec![input])).await.unwrap();
    let out = reply.outcomes[0].as_ref().expect("item ok");
    assert_eq!((out.metadata["event"].as_str(), out.metadata["tiles_run"].as_str()), ("604", "6"));
    let scores = get(&arrays(&out.payload), "scores").clone();
    let (n, want) = (sample.n, sample.want);
    assert_eq!(scores.shape(), vec![n as u64, 3]);
    let got = scores.view::<f32>().unwrap();
    let d = max_diff(&got, &want);
    eprintln!("lartpc-sparse: {n} pixels, max |host - pytorch| = {d:e}");
    assert!(d <= TOLERANCE, "max score difference {d} > {TOLERANCE}");
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sparse_bad_lists_are_clear_item_errors() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let outside = Pixels { height: 10, width: 10, rows: vec![1, 10], cols: vec![1, 2] };
    let twice = Pixels { height: 10, width: 10, rows: vec![1, 3, 1], cols: vec![1, 2, 1] };
    let no_shape = write_npz(&[("pixels".into(), twice.coords().unwrap()), ("values".into(), Tensor::from_slice(&[3], &[5.0f32; 3]).unwrap())]);
    let items = vec![
        Input::new(sparse_npz(&outside, &[5.0, 5.0]), "application/x-npz"),
        Input::new(sparse_npz(&twice, &[5.0; 3]), "application/x-npz"),
        Input::new(no_shape, "application/x-npz"),
    ];
    let reply = client.predict(Submission::new("lartpc-sparse", items)).await.unwrap();
    let msg = |i: usize| reply.outcomes[i].as_ref().expect_err("fails").message.clone();
    assert!(msg(0).contains("pixel 1 at (10, 2) is outside the 10x10 image"), "{}", msg(0));
    assert!(msg(1).contains("pixel 2 at (1, 1) is listed twice"), "{}", msg(1));
    assert!(msg(2).contains("no array named `shape`"), "{}", msg(2));
    client.close().await;
    host.stop().await;
}

/// The CLI's `--meta` reaches the plugin and the reply's metadata comes back
/// in the JSON line (what the demo shows).
#[tokio::test(flavor = "multi_thread")]
async fn cli_meta_passes_through() {
    let host = TestHost::start().await;
    let bin = root().join("target/release/tensorgate");
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    let mut cmd = std::process::Command::new(bin);
    cmd.env("TENSORGATE_HOST", host.host.addr().to_string())
        .env("TENSORGATE_FINGERPRINT", host.host.fingerprint())
        .env_remove("TENSORGATE_CA")
        .args(["submit", "--model", "lartpc-sparse", "--quiet", "--meta", "run=7", "--meta", "event=42"])
        .arg(root().join("plugins/lartpc-dense/samples/plane-crop.npz"));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["metadata"]["run"], "7", "{line}");
    assert_eq!(line["metadata"]["event"], "42", "{line}");
    assert_eq!(line["metadata"]["tiles_run"], "6", "{line}");
    let file = root().join("plugins/lartpc-dense/samples/plane-crop.npz");
    assert_eq!(line["metadata"]["filename"], file.display().to_string(), "the CLI's own entry comes back too: {line}");
    host.stop().await;
}

/// A bundle whose manifest sets `[plugin] echo_metadata = false` replies
/// with the plugin's entries only; a failed item carries the metadata it
/// was sent with whatever failed it (plugin, content type, deadline).
#[tokio::test(flavor = "multi_thread")]
async fn metadata_echo_can_be_turned_off_and_failures_carry_theirs() {
    let repo = tensorgate_tests::repository_with(|app, text| {
        if app == "lartpc-sparse" {
            *text = text.replacen("[plugin]\n", "[plugin]\necho_metadata = false\n", 1);
        }
    });
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let crop = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).expect("sample");
    let items = vec![
        Input::new(crop.clone(), "application/x-npz").with_meta("event", "1"),
        Input::new(b"not an npz".to_vec(), "application/x-npz").with_meta("event", "2").with_meta("run", "9"),
        Input::new(crop, "application/json").with_meta("event", "3"),
    ];
    let reply = client.predict(Submission::new("lartpc-sparse", items)).await.unwrap();
    let ok = reply.outcomes[0].as_ref().expect("item 0 ok");
    let keys: Vec<&str> = ok.metadata.keys().map(String::as_str).collect();
    assert_eq!(keys, ["tiles", "tiles_run"], "only the plugin's entries: {:?}", ok.metadata);
    let bad = reply.outcomes[1].as_ref().expect_err("item 1 fails");
    assert_eq!(bad.code, ErrorCode::PluginError, "{}", bad.message);
    assert_eq!((bad.metadata["event"].as_str(), bad.metadata["run"].as_str()), ("2", "9"));
    let wrong_type = reply.outcomes[2].as_ref().expect_err("item 2 fails");
    assert_eq!(wrong_type.code, ErrorCode::UnsupportedContentType, "{}", wrong_type.message);
    assert_eq!(wrong_type.metadata["event"], "3");
    // A deadline failure comes from the request machine, not the plugin.
    let crop = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).expect("sample");
    let mut slow = Submission::new("lartpc-sparse", vec![Input::new(crop, "application/x-npz").with_meta("event", "4")]);
    slow.header.deadline_ms = Some(1);
    let reply = client.predict(slow).await.unwrap();
    let late = reply.outcomes[0].as_ref().expect_err("past its deadline");
    assert_eq!(late.code, ErrorCode::DeadlineExceeded, "{}", late.message);
    assert_eq!(late.metadata["event"], "4");
    client.close().await;
    host.stop().await;
}
