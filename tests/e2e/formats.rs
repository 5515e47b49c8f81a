//! Models beyond TorchScript: ONNX models (plugins/tensors/bundles/*-onnx)
//! run by ONNX Runtime, and AOTInductor packages (*-aoti, `.pt2`) run by
//! libtorch's AOTIModelPackageLoader, both made by scripts/make_models.py
//! from the shipped models' weights, through the same host: each against its
//! framework's own Python outputs on the same inputs (1e-5), batched across
//! requests, bad files refused at load with one line naming the author's
//! file while version 1 keeps serving, `tensorgate import triton` of an
//! `onnxruntime_onnx` model, and a cluster worker serving an ONNX version.
//!
//! ONNX Runtime is loaded from `ORT_DYLIB_PATH` (scripts/env.sh), else from
//! where scripts/setup puts it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Client, ClientError, Input, Submission};
use tensorgate_plugin::npy::{parse_npy, parse_npz, write_npy, write_npz};
use tensorgate_plugin::Tensor;
use tensorgate_tests::cluster::{release_dir, repository_of, Engine, Proc};
use tensorgate_tests::{copy_dir, repository, root, TestHost};

const TOLERANCE: f32 = 1e-5;

fn bundle(name: &str) -> PathBuf {
    root().join("plugins/tensors/bundles").join(name)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.view::<f32>().expect("f32").into_owned()
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "as many values as the reference");
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// The one array of an `.npz` reply.
fn only_array(payload: &[u8]) -> Tensor {
    let arrays = parse_npz(payload).expect("npz reply");
    assert_eq!(arrays.len(), 1, "one output");
    arrays[0].1.clone()
}

/// Rows `[at, at + n)` of a `[N, ...]` f32 tensor.
fn rows(t: &Tensor, at: usize, n: usize) -> Tensor {
    let values = f32s(t);
    let per = values.len() / t.shape()[0] as usize;
    let mut shape = t.shape().to_vec();
    shape[0] = n as u64;
    Tensor::from_slice(&shape, &values[at * per..(at + n) * per]).expect("rows")
}

fn code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

async fn models_status(client: &Client, name: &str) -> (u64, u64) {
    let m = client.status().await.expect("status").models.into_iter().find(|m| m.name == name).expect("model in status");
    (m.forwards, m.forward_rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_onnx_model_answers_as_onnxruntime_does() {
    let host = TestHost::start().await;
    let client = host.client().await;
    answers_as_reference(&client, "onnx").await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_aoti_package_answers_as_it_does_in_python() {
    let host = TestHost::start().await;
    let client = host.client().await;
    answers_as_reference(&client, "aoti").await;
    client.close().await;
    host.stop().await;
}

/// The three models of one format (`NAME-{format}`) against their
/// references, and the U-Net on another tile size.
async fn answers_as_reference(client: &Client, format: &str) {
    // Tabular MLP and U-Net: one .npy in, the reference .npy's values out.
    for name in [format!("tabular-{format}"), format!("unet-{format}")] {
        let name = name.as_str();
        let sample = std::fs::read(bundle(name).join("sample.npy")).expect("sample");
        let want = parse_npy(&std::fs::read(bundle(name).join("reference.npy")).expect("reference")).expect("npy");
        let reply = client.predict(Submission::new(name, vec![Input::new(sample, "application/x-npy")])).await.expect("predict");
        assert_eq!(reply.summary.ok, 1, "{name}: {:?}", reply.outcomes);
        let got = only_array(&reply.outcomes[0].as_ref().expect("item ok").payload);
        assert_eq!(got.shape(), want.shape(), "{name}");
        let diff = max_diff(&f32s(&got), &f32s(&want));
        eprintln!("{name}: max |host - Python reference| = {diff:e}");
        assert!(diff <= TOLERANCE, "{name}: {diff}");
    }

    // The tagger: three inputs by name in one .npz.
    let name = format!("particlenet-{format}");
    let dir = bundle(&name);
    let sample = std::fs::read(dir.join("sample.npz")).expect("sample");
    let want = parse_npz(&std::fs::read(dir.join("reference.npz")).expect("reference")).expect("npz");
    let reply = client.predict(Submission::new(&name, vec![Input::new(sample, "application/x-npz")])).await.expect("predict");
    let got = only_array(&reply.outcomes[0].as_ref().expect("item ok").payload);
    assert_eq!(got.shape(), [3, 3]);
    let diff = max_diff(&f32s(&got), &f32s(&want[0].1));
    eprintln!("{name}: max |host - Python reference| = {diff:e}");
    assert!(diff <= TOLERANCE, "{name}: {diff}");

    // The U-Net's declared shapes are dynamic (any tile size, multiples of 4).
    let name = format!("unet-{format}");
    let sample = parse_npy(&std::fs::read(bundle(&name).join("sample.npy")).expect("sample")).expect("npy");
    let small = rows(&sample, 0, 1);
    let values = f32s(&small);
    let crop: Vec<f32> = (0..64).flat_map(|r| values[r * 128..r * 128 + 64].to_vec()).collect();
    let crop = Tensor::from_slice(&[1, 1, 64, 64], &crop).expect("crop");
    let reply = client.predict(Submission::new(&name, vec![Input::new(write_npy(&crop), "application/x-npy")])).await.expect("predict");
    assert_eq!(only_array(&reply.outcomes[0].as_ref().expect("a 64x64 tile").payload).shape(), [1, 3, 64, 64]);
}

#[tokio::test(flavor = "multi_thread")]
async fn items_are_batched_across_concurrent_requests_in_each_format() {
    let host = TestHost::start().await;
    let client = std::sync::Arc::new(host.client().await);
    for format in ["onnx", "aoti"] {
        batched(&client, format).await;
    }
    host.stop().await;
}

async fn batched(client: &std::sync::Arc<Client>, format: &str) {
    let tabular = format!("tabular-{format}");
    let x = parse_npy(&std::fs::read(bundle(&tabular).join("sample.npy")).expect("sample")).expect("npy");
    let want = f32s(&parse_npy(&std::fs::read(bundle(&tabular).join("reference.npy")).expect("reference")).expect("npy"));
    let item = |i: usize| Input::new(write_npy(&rows(&x, i % 16, 1)), "application/x-npy");
    let (forwards_before, rows_before) = models_status(client, &tabular).await;
    // Four requests of 64 one-row items at once.
    let mut tasks = Vec::new();
    for r in 0..4 {
        let client = client.clone();
        let inputs: Vec<Input> = (0..64).map(|i| item(r * 64 + i)).collect();
        let tabular = tabular.clone();
        tasks.push(tokio::spawn(async move { client.predict(Submission::new(&tabular, inputs)).await.expect("predict") }));
    }
    for (r, task) in tasks.into_iter().enumerate() {
        let reply = task.await.expect("task");
        for (i, outcome) in reply.outcomes.iter().enumerate() {
            let got = f32s(&only_array(&outcome.as_ref().expect("item ok").payload));
            let k = (r * 64 + i) % 16;
            let diff = max_diff(&got, &want[4 * k..4 * k + 4]);
            assert!(diff <= TOLERANCE, "item {} (row {k}): {got:?} vs {:?}", r * 64 + i, &want[4 * k..4 * k + 4]);
        }
    }
    let (forwards, forward_rows) = models_status(client, &tabular).await;
    let (forwards, forward_rows) = (forwards - forwards_before, forward_rows - rows_before);
    assert_eq!(forward_rows, 256);
    assert!(forwards < forward_rows, "{tabular}: no batching happened: {forwards} forwards for {forward_rows} rows");
    eprintln!("{tabular}: mean batch {:.1} rows", forward_rows as f64 / forwards as f64);

    // The tagger's three inputs batch too: three one-jet items in one request.
    let particlenet = format!("particlenet-{format}");
    let dir = bundle(&particlenet);
    let sample = parse_npz(&std::fs::read(dir.join("sample.npz")).expect("sample")).expect("npz");
    let want = f32s(&parse_npz(&std::fs::read(dir.join("reference.npz")).expect("reference")).expect("npz")[0].1);
    let singles: Vec<Input> = (0..3)
        .map(|i| {
            let jet: Vec<(String, Tensor)> = sample.iter().map(|(n, t)| (n.clone(), rows(t, i, 1))).collect();
            Input::new(write_npz(&jet), "application/x-npz")
        })
        .collect();
    let reply = client.predict(Submission::new(&particlenet, singles)).await.expect("predict");
    for (i, outcome) in reply.outcomes.iter().enumerate() {
        let got = f32s(&only_array(&outcome.as_ref().expect("item ok").payload));
        assert!(max_diff(&got, &want[3 * i..3 * i + 3]) <= TOLERANCE, "{particlenet} jet {i}: {got:?}");
    }
}

/// A stand-alone copy of the built `tabular-onnx` bundle as `version`, with
/// `edit` applied to its manifest and `model` to its model file's bytes.
fn onnx_bundle(parent: &Path, dir: &str, version: u64, edit: impl Fn(&mut String), model: impl Fn(&mut Vec<u8>)) -> PathBuf {
    built_bundle("tabular-onnx", "model.onnx", parent, dir, version, edit, model)
}

/// A stand-alone copy of the built bundle `app` as `version`, with `edit`
/// applied to its manifest and `model` to the bytes of its model `file`.
fn built_bundle(app: &str, file: &str, parent: &Path, dir: &str, version: u64, edit: impl Fn(&mut String), model: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let dest = parent.join(dir);
    copy_dir(&repository().join(app).join("1"), &dest);
    let manifest = dest.join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest").replacen("version = 1", &format!("version = {version}"), 1);
    edit(&mut text);
    std::fs::write(&manifest, text).expect("write manifest");
    let mut bytes = std::fs::read(dest.join(file)).expect("model");
    model(&mut bytes);
    std::fs::write(dest.join(file), bytes).expect("write model");
    dest
}

/// `needle` replaced by `with` (the same length) everywhere in `bytes`.
fn patch(bytes: &mut [u8], needle: &[u8], with: &[u8]) -> usize {
    assert_eq!(needle.len(), with.len());
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i..i + needle.len()].copy_from_slice(with);
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_onnx_files_are_refused_at_load_and_version_1_keeps_serving() {
    let repo = repository_of(&["tabular-onnx"]);
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().expect("temp dir");
    let x = parse_npy(&std::fs::read(bundle("tabular-onnx").join("sample.npy")).expect("sample")).expect("npy");
    let one = || Input::new(write_npy(&rows(&x, 0, 1)), "application/x-npy");
    type Edit = fn(&mut String);
    type Model = fn(&mut Vec<u8>);
    let cases: [(&str, Edit, Model, &[&str]); 6] = [
        ("corrupt", |_| {}, |b| *b = b"\x08\x07garbage, not a protobuf".to_vec(), &["loading ONNX model model.onnx:", "Protobuf parsing failed"]),
        ("truncated", |_| {}, |b| b.truncate(b.len() / 2), &["loading ONNX model model.onnx:"]),
        (
            "unknown-operator",
            |_| {},
            |b| assert!(patch(b, b"Relu", b"Rulu") > 0, "the MLP has Relu nodes"),
            &["loading ONNX model model.onnx:", "Rulu"],
        ),
        (
            "dtype",
            |m| *m = m.replace("name = \"x\"\ndtype = \"f32\"", "name = \"x\"\ndtype = \"f64\""),
            |_| {},
            &["manifest.toml: `[[inputs]]` `x` is f64 [-1, 16], but model.onnx has it as f32[?, 16]: the element types differ"],
        ),
        (
            "rank",
            |m| *m = m.replace("shape = [-1, 4]", "shape = [-1, 4, 1]"),
            |_| {},
            &["manifest.toml: `[[outputs]]` `scores` is f32 [-1, 4, 1], but model.onnx has it as f32[?, 4]: the ranks differ"],
        ),
        (
            "name",
            |m| *m = m.replace("name = \"x\"", "name = \"features\""),
            |_| {},
            &["manifest.toml: `[[inputs]]` declares `features`, but model.onnx has no input of that name (its inputs: x)"],
        ),
    ];
    for (what, edit, model, want) in cases {
        let dir = onnx_bundle(work.path(), what, 2, edit, model);
        let e = client.upload(&dir, false).await.expect_err(what);
        let text = e.to_string();
        eprintln!("{what}: {text}");
        assert_eq!(code(&e), Some(ErrorCode::LoadFailed), "{what}: {text}");
        for w in want {
            assert!(text.contains(w), "{what}: `{w}` not in: {text}");
        }
        assert!(!text.contains('\n') && !text.contains(".staging"), "{what}: one line naming the author's file: {text}");
        let r = client.predict(Submission::new("tabular-onnx", vec![one()])).await.expect("predict");
        assert_eq!((r.summary.version, r.summary.ok), (1, 1), "{what}: version 1 keeps serving");
    }
    // A good version 2 then loads and becomes the default (the same path
    // as for TorchScript: staged, checked, swapped in).
    let good = onnx_bundle(work.path(), "good", 2, |_| {}, |_| {});
    client.upload(&good, false).await.expect("a good ONNX version loads");
    let r = client.predict(Submission::new("tabular-onnx", vec![one()])).await.expect("predict");
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_aoti_packages_are_refused_at_load_and_version_1_keeps_serving() {
    let repo = repository_of(&["tabular-aoti"]);
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().expect("temp dir");
    let x = parse_npy(&std::fs::read(bundle("tabular-aoti").join("sample.npy")).expect("sample")).expect("npy");
    let one = || Input::new(write_npy(&rows(&x, 0, 1)), "application/x-npy");
    type Model = fn(&mut Vec<u8>);
    let cases: [(&str, Model, &[&str]); 4] = [
        ("corrupt", |b| *b = b"PK\x03\x04 not really a zip".to_vec(), &["loading AOTInductor model model.pt2:"]),
        // The package relabelled as compiled for CUDA (scripts/make_models.py, `aoti_cuda_stub`).
        (
            "cuda-package",
            |b| *b = std::fs::read(root().join("tests/apps/aoti-cuda/model.pt2")).expect("fixture"),
            &["loading AOTInductor model model.pt2: Unsupported device key found: cuda"],
        ),
        ("truncated", |b| b.truncate(b.len() / 2), &["loading AOTInductor model model.pt2:"]),
        ("empty", |b| b.clear(), &["loading AOTInductor model model.pt2:"]),
    ];
    for (what, model, want) in cases {
        let dir = built_bundle("tabular-aoti", "model.pt2", work.path(), what, 2, |_| {}, model);
        let e = client.upload(&dir, false).await.expect_err(what);
        let text = e.to_string();
        eprintln!("{what}: {text}");
        assert_eq!(code(&e), Some(ErrorCode::LoadFailed), "{what}: {text}");
        for w in want {
            assert!(text.contains(w), "{what}: `{w}` not in: {text}");
        }
        assert!(!text.contains('\n') && !text.contains(".staging"), "{what}: one line naming the author's file: {text}");
        let r = client.predict(Submission::new("tabular-aoti", vec![one()])).await.expect("predict");
        assert_eq!((r.summary.version, r.summary.ok), (1, 1), "{what}: version 1 keeps serving");
    }
    // Outputs the manifest does not declare: found by running the model at load.
    let dir = built_bundle("tabular-aoti", "model.pt2", work.path(), "outputs", 2, |m| {
        *m = m.replace("shape = [-1, 4]", "shape = [-1, 5]").replace("labels = [\"qcd\", \"top\", \"w\", \"z\"]\n", "")
    }, |_| {});
    let e = client.upload(&dir, false).await.expect_err("outputs");
    assert!(e.to_string().contains("do not match the declared outputs"), "{e}");
    let good = built_bundle("tabular-aoti", "model.pt2", work.path(), "good", 2, |_| {}, |_| {});
    client.upload(&good, false).await.expect("a good package loads");
    let r = client.predict(Submission::new("tabular-aoti", vec![one()])).await.expect("predict");
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    client.close().await;
    host.stop().await;
}

/// An AOTInductor package is unpacked to load and the copy removed at once:
/// neither a refused package nor a host killed while serving one leaves
/// anything in the temporary directory (libtorch's own unpacking, into
/// `$TMPDIR/aotinductor_*`, was removed only when a loader was destroyed:
/// every bad upload and every host restart left a copy of the model).
#[tokio::test(flavor = "multi_thread")]
async fn aoti_packages_leave_nothing_in_the_temporary_directory() {
    let repo = repository_of(&["tabular-aoti"]);
    built_bundle("tabular-aoti", "model.pt2", &repo.path().join("broken-aoti"), "1", 1, |m| {
        *m = m.replacen("name = \"tabular-aoti\"", "name = \"broken-aoti\"", 1)
    }, |b| b.truncate(b.len() / 2));
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tempfile::tempdir().expect("state dir");
    let mut child = Command::new(tensorgate_tests::cluster::host_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1", "--repository"])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("host starts");
    /// Kills the host however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let addr = tensorgate_tests::cluster::wait_for_file(&state.path().join("listening"), Duration::from_secs(60), "host", &mut child);
    let host = Killed(child);
    let fp = std::fs::read_to_string(state.path().join("fingerprint")).expect("fingerprint");
    let client = Client::connect(addr.parse().expect("address"), tensorgate_client::Trust::Fingerprint(fp)).await.expect("connects");
    let x = parse_npy(&std::fs::read(bundle("tabular-aoti").join("sample.npy")).expect("sample")).expect("npy");
    let r = client.predict(Submission::new("tabular-aoti", vec![Input::new(write_npy(&rows(&x, 0, 1)), "application/x-npy")])).await.expect("predict");
    assert_eq!(r.summary.ok, 1, "the good package serves");
    let status = client.status().await.expect("status");
    assert!(!status.models.iter().any(|m| m.name == "broken-aoti"), "the truncated package is not served");
    let refused = status.load_errors.iter().find(|f| f.model == "broken-aoti").expect("the truncated package was tried and refused");
    assert!(refused.error.contains("loading AOTInductor model") && refused.error.contains("model.pt2: not an AOTInductor package"), "{}", refused.error);
    client.close().await;
    drop(host); // SIGKILL: no destructor runs in the host
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("temp dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("aotinductor_") || n.starts_with("tensorgate-aoti-"))
        .collect();
    assert!(left.is_empty(), "left in TMPDIR by the AOTInductor loads: {left:?}");
}

/// Hot reload, a canary trial and a rollback sit above the backend: an ONNX
/// model goes through them as a TorchScript one does.
#[tokio::test(flavor = "multi_thread")]
async fn an_onnx_model_is_hot_reloaded_tried_as_a_canary_and_rolled_back() {
    let repo = repository_of(&["tabular-onnx"]);
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let x = parse_npy(&std::fs::read(bundle("tabular-onnx").join("sample.npy")).expect("sample")).expect("npy");
    let want = f32s(&parse_npy(&std::fs::read(bundle("tabular-onnx").join("reference.npy")).expect("reference")).expect("npy"));
    let one = |i: usize| Input::new(write_npy(&rows(&x, i % 16, 1)), "application/x-npy");
    let served = |reply: &tensorgate_client::Reply, i: usize| {
        let got = f32s(&only_array(&reply.outcomes[0].as_ref().expect("item ok").payload));
        assert!(max_diff(&got, &want[4 * (i % 16)..4 * (i % 16) + 4]) <= TOLERANCE, "row {i}: {got:?}");
        reply.summary.version
    };

    // Hot reload: version 2 written into the repository, then `reload`.
    let work = tempfile::tempdir().expect("temp dir");
    let v2 = onnx_bundle(work.path(), "v2", 2, |_| {}, |_| {});
    copy_dir(&v2, &repo.path().join("tabular-onnx/2"));
    client.reload(Some("tabular-onnx")).await.expect("reload");
    let r = client.predict(Submission::new("tabular-onnx", vec![one(0)])).await.expect("predict");
    assert_eq!(served(&r, 0), 2, "the reloaded version serves");

    // A canary: version 3 takes about half of the requests naming no version.
    let v3 = onnx_bundle(work.path(), "v3", 3, |m| m.push_str("\n[rollout]\ncanary_share = 0.5\ncanary_items = 100000\n"), |_| {});
    client.upload(&v3, false).await.expect("upload v3 on trial");
    let mut by_version = std::collections::BTreeMap::new();
    for i in 0..60 {
        let r = client.predict(Submission::new("tabular-onnx", vec![one(i)])).await.expect("predict");
        *by_version.entry(served(&r, i)).or_insert(0) += 1;
    }
    eprintln!("requests by version while v3 is on trial: {by_version:?}");
    assert!(by_version.get(&2).is_some_and(|&n| n > 0) && by_version.get(&3).is_some_and(|&n| n > 0), "{by_version:?}");

    // Rolled back: version 2 takes every request again.
    client.rollback("tabular-onnx").await.expect("rollback");
    for i in 0..20 {
        let r = client.predict(Submission::new("tabular-onnx", vec![one(i)])).await.expect("predict");
        assert_eq!(served(&r, i), 2, "after the rollback");
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triton_onnx_model_imports_and_answers_as_onnxruntime() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("models/particlenet-onnx");
    copy_dir(&root().join("tests/triton/particlenet-onnx"), &dir);
    let repo = work.path().join("repo");
    let cli = release_dir().join("tensorgate");
    assert!(cli.exists(), "{} not built", cli.display());
    let plugin = root().join("target/plugins/wasm32-unknown-unknown/release/tensors_plugin.wasm");
    let mut cmd = Command::new(cli);
    cmd.args(["import", "triton"]).arg(&dir).arg("--repository").arg(&repo).arg("--plugin").arg(&plugin);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.expect("join");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    let manifest: toml::Table = std::fs::read_to_string(repo.join("particlenet-onnx/1/manifest.toml")).expect("manifest").parse().expect("toml");
    let model = &manifest["model"];
    assert_eq!((model["file"].as_str(), model["format"].as_str()), (Some("model.onnx"), Some("onnx")));
    assert_eq!((model["max_batch"].as_integer(), model["instances"].as_integer()), (Some(32), Some(2)));
    assert!(repo.join("particlenet-onnx/1/model.onnx").is_file());

    let host = TestHost::start_with(repo.clone(), |_| {}).await;
    let client = host.client().await;
    let sample = std::fs::read(root().join("tests/triton/particlenet-onnx/sample.npz")).expect("sample");
    let want = parse_npz(&std::fs::read(root().join("tests/triton/particlenet-onnx/reference.npz")).expect("reference")).expect("npz");
    let reply = client.predict(Submission::new("particlenet-onnx", vec![Input::new(sample, "application/x-npz")])).await.expect("predict");
    let got = only_array(&reply.outcomes[0].as_ref().expect("item ok").payload);
    let diff = max_diff(&f32s(&got), &f32s(&want[0].1));
    eprintln!("particlenet-onnx via tensorgate import triton: max |host - onnxruntime| = {diff:e}");
    assert!(diff <= TOLERANCE);
    client.close().await;
    host.stop().await;

    // A config whose inputs do not match the ONNX graph fails the import by name.
    let bad = work.path().join("models-bad/particlenet-onnx");
    copy_dir(&root().join("tests/triton/particlenet-onnx"), &bad);
    let config = std::fs::read_to_string(bad.join("config.pbtxt")).expect("config").replacen("name: \"mask\"", "name: \"weights\"", 1);
    std::fs::write(bad.join("config.pbtxt"), config).expect("write");
    let repo2 = work.path().join("repo2");
    let mut cmd = Command::new(release_dir().join("tensorgate"));
    cmd.args(["import", "triton"]).arg(&bad).arg("--repository").arg(&repo2).arg("--plugin").arg(&plugin);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.expect("join");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("declares `weights`, but model.onnx has no input of that name (its inputs: points, features, mask)"), "{said}");
    assert!(!repo2.join("particlenet-onnx").exists(), "nothing installed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_worker_serves_an_onnx_version() {
    let engine = Engine::start();
    let repo = repository_of(&["tabular-onnx", "particlenet-onnx"]);
    let _worker = Proc::worker(&engine, repo.path(), &[]);
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    let start = Instant::now();
    loop {
        let status = client.status().await.expect("gateway status");
        if status.models.iter().any(|m| m.name == "tabular-onnx" && m.workers == 1) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no worker serves tabular-onnx: {:?}", status.models);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let x = parse_npy(&std::fs::read(bundle("tabular-onnx").join("sample.npy")).expect("sample")).expect("npy");
    let want = f32s(&parse_npy(&std::fs::read(bundle("tabular-onnx").join("reference.npy")).expect("reference")).expect("npy"));
    let inputs: Vec<Input> = (0..16).map(|i| Input::new(write_npy(&rows(&x, i, 1)), "application/x-npy")).collect();
    let reply = client.predict(Submission::new("tabular-onnx", inputs)).await.expect("predict through the gateway");
    assert_eq!(reply.summary.ok, 16);
    for (i, outcome) in reply.outcomes.iter().enumerate() {
        let got = f32s(&only_array(&outcome.as_ref().expect("item ok").payload));
        assert!(max_diff(&got, &want[4 * i..4 * i + 4]) <= TOLERANCE, "item {i}: {got:?}");
    }
    let dir = bundle("particlenet-onnx");
    let sample = std::fs::read(dir.join("sample.npz")).expect("sample");
    let want = parse_npz(&std::fs::read(dir.join("reference.npz")).expect("reference")).expect("npz");
    let reply = client.predict(Submission::new("particlenet-onnx", vec![Input::new(sample, "application/x-npz")])).await.expect("predict");
    let got = only_array(&reply.outcomes[0].as_ref().expect("item ok").payload);
    assert!(max_diff(&f32s(&got), &f32s(&want[0].1)) <= TOLERANCE);
}
