//! Python plugins end to end (componentize-py components on the
//! `tensorgate_plugin` SDK, assembled by scripts/build-python-plugins): the
//! two examples against PyTorch, the sandbox probed from inside, the hostile
//! cases contained, a hot reload under load, the compile cache, and
//! `tensorgate plugin new --lang python` through to a served bundle.
//!
//! Tolerances as for the Rust twins (tests/e2e/tabular.rs, lartpc.rs): the
//! same model runs in the same libtorch; only the plugin's language differs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Input, ItemFailed, Submission};
use tensorgate_plugin::npy::parse_npz;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_tests::{copy_dir, root, sparse_npz, Load, TestHost};

/// The Python plugins' repository (`$TENSORGATE_PY_REPO`, else target/repository-python).
fn py_repository() -> PathBuf {
    let repo = std::env::var_os("TENSORGATE_PY_REPO").map(PathBuf::from).unwrap_or_else(|| root().join("target/repository-python"));
    for app in ["py-tabular", "py-lartpc-sparse", "hostile-py", "sandbox-py"] {
        assert!(
            repo.join(app).join("1/plugin.wasm").exists(),
            "{} has no {app}/1/plugin.wasm: run scripts/setup (or scripts/build-python-plugins)",
            repo.display()
        );
    }
    repo
}

/// A host over `repo` whose compiled plugins are cached where every test
/// of this file finds them (a Python component takes seconds to compile).
async fn py_host(repo: PathBuf) -> TestHost {
    let host = TestHost::start_with(repo, |c| {
        c.compile_cache = Some(root().join("target/compile-cache-python"));
        // Small enough for `huge-output` (64 MiB) to cross it.
        c.front.limits.max_frame_bytes = 16 << 20;
    })
    .await;
    let failures = host.host.repository().failures();
    assert!(failures.is_empty(), "Python bundles failed to load: {failures:#?}");
    host
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

fn jet(i: usize) -> Input {
    Input::json(std::fs::read(root().join(format!("plugins/py-tabular/samples/jet-{}.json", i % 3))).expect("sample"))
}

fn json_item(v: Value) -> Input {
    Input::json(serde_json::to_vec(&v).expect("json"))
}

fn failed(outcome: &Result<tensorgate_client::ItemReply, ItemFailed>) -> (ErrorCode, String) {
    let e = outcome.as_ref().expect_err("the item fails");
    (e.code, e.message.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn py_tabular_matches_pytorch_and_names_bad_input() {
    let host = py_host(py_repository()).await;
    let client = host.client().await;
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    let items = cases.iter().map(|c| json_item(c["request"].clone())).collect();
    let reply = client.predict(Submission::new("py-tabular", items)).await.expect("request succeeds");
    assert_eq!((reply.summary.ok as usize, reply.summary.failed), (cases.len(), 0), "{:?}", reply.outcomes);
    for (i, (case, outcome)) in cases.iter().zip(&reply.outcomes).enumerate() {
        let out = outcome.as_ref().expect("item ok");
        assert_eq!(out.content_type, "application/json");
        let got: serde_json::Map<String, Value> = serde_json::from_slice(&out.payload).expect("JSON reply");
        let want = case["scores"].as_object().expect("scores");
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "labels in manifest order");
        for (label, w) in want {
            let (g, w) = (got[label].as_f64().expect("a number"), w.as_f64().expect("a number"));
            assert!((g - w).abs() <= 1e-5, "case {i} label {label}: host {g} vs pytorch {w}");
        }
    }
    // Bad items fail alone, each with the plugin's code and message.
    let features: Vec<String> = serde_json::from_value(reference["features"].clone()).expect("features");
    let mut keys = features.clone();
    keys[3] = "jet_charm".into();
    let bad = vec![
        json_item(serde_json::json!({ "values": [1.0] })),
        json_item(serde_json::json!({ "keys": features[..15], "values": vec![0.5; 15] })),
        json_item(serde_json::json!({ "keys": keys, "values": vec![0.5; 16] })),
        Input::json(b"{\"keys\": [".to_vec()),
        jet(0),
    ];
    let reply = client.predict(Submission::new("py-tabular", bad)).await.expect("request succeeds");
    assert_eq!((reply.summary.ok, reply.summary.failed), (1, 4), "{:?}", reply.outcomes);
    let expect = [
        ("malformed-json", "want {\"keys\": [...], \"values\": [...]}"),
        ("missing-key", "missing key `jet_axis2`"),
        ("unknown-key", "unknown key `jet_charm`"),
        ("", "JSON"),
    ];
    for (i, (code, text)) in expect.iter().enumerate() {
        let (c, message) = failed(&reply.outcomes[i]);
        eprintln!("py-tabular bad item {i}: [{c}] {message}");
        assert_eq!(c, ErrorCode::PluginError, "item {i}: {message}");
        assert!(message.contains(code) && message.contains(text), "item {i}: {message}");
    }
    client.close().await;
    host.stop().await;
}

/// The sample plane's lit pixels, scrambled, through py-lartpc-sparse; the
/// scores match the PyTorch pipeline's (plugins/lartpc-dense/reference.npz)
/// pixel for pixel, in input order.
#[tokio::test(flavor = "multi_thread")]
async fn py_lartpc_sparse_matches_pytorch() {
    let host = py_host(py_repository()).await;
    let client = host.client().await;
    let sample = tensorgate_tests::scrambled_sample_pixels();
    let twice = Pixels { height: 10, width: 10, rows: vec![1, 3, 1], cols: vec![1, 2, 1] };
    let items = vec![
        Input::new(sample.npz, "application/x-npz").with_meta("event", "604"),
        Input::new(sparse_npz(&twice, &[5.0; 3]), "application/x-npz"),
    ];
    let reply = client.predict(Submission::new("py-lartpc-sparse", items)).await.expect("request succeeds");
    let out = reply.outcomes[0].as_ref().expect("item ok");
    assert_eq!((out.metadata["event"].as_str(), out.metadata["tiles_run"].as_str()), ("604", "6"), "{:?}", out.metadata);
    let arrays = parse_npz(&out.payload).expect("reply is an npz");
    let scores = &arrays.iter().find(|(k, _)| k == "scores").expect("scores").1;
    let (n, want) = (sample.n, sample.want);
    assert_eq!(scores.shape(), vec![n as u64, 3]);
    let got = scores.view::<f32>().expect("f32 scores");
    let d = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    eprintln!("py-lartpc-sparse: {n} pixels, max |host - pytorch| = {d:e}");
    assert!(d <= 1e-4, "max score difference {d} > 1e-4");
    let (code, message) = failed(&reply.outcomes[1]);
    assert_eq!(code, ErrorCode::PluginError, "{message}");
    assert!(message.contains("pixel 2 at (1, 1) is listed twice"), "{message}");
    client.close().await;
    host.stop().await;
}

/// What the Python runtime can reach from inside the sandbox: a clock, a
/// random source and stdout/stderr (to the host's log); no file, no
/// directory, no environment, no socket, no name lookup, no sleeping.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_sandbox_grants_only_clocks_and_randomness() {
    let host = py_host(py_repository()).await;
    let client = host.client().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let marker = std::path::Path::new("/tmp/tensorgate-sandbox-probe");
    let _ = std::fs::remove_file(marker);
    let probes = [
        serde_json::json!({ "probe": "file", "path": "/etc/passwd" }),
        serde_json::json!({ "probe": "file", "path": root().join("Cargo.toml") }),
        serde_json::json!({ "probe": "listdir", "path": "/" }),
        serde_json::json!({ "probe": "write-file" }),
        serde_json::json!({ "probe": "env" }),
        serde_json::json!({ "probe": "connect", "port": port }),
        serde_json::json!({ "probe": "dns" }),
        serde_json::json!({ "probe": "clock" }),
        serde_json::json!({ "probe": "random" }),
        serde_json::json!({ "probe": "print" }),
    ];
    let items = probes.iter().map(|p| json_item(p.clone())).collect();
    let reply = client.predict(Submission::new("sandbox-py", items)).await.expect("request succeeds");
    let mut answers = Vec::new();
    for (probe, outcome) in probes.iter().zip(&reply.outcomes) {
        let out = outcome.as_ref().unwrap_or_else(|e| panic!("probe {probe}: {e}"));
        let answer: Value = serde_json::from_slice(&out.payload).expect("probe reply");
        eprintln!("sandbox probe {probe}: {answer}");
        assert_eq!(answer["probe"], probe["probe"]);
        answers.push(answer);
    }
    for i in [0, 1, 2, 3, 5, 6] {
        assert_eq!(answers[i]["ok"], false, "probe {} must fail: {}", probes[i], answers[i]);
    }
    assert!(!marker.exists(), "the plugin wrote a file on the host");
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "the plugin reached a socket on the host");
    let env = &answers[4];
    assert_eq!(env["ok"], true, "{env}");
    assert_eq!(env["result"]["environ"], serde_json::json!({}), "no environment variables: {env}");
    let clock = &answers[7];
    assert_eq!(clock["ok"], true, "{clock}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let t = clock["result"]["time"].as_f64().expect("time");
    assert!((t - now).abs() < 60.0, "wall clock {t} vs host {now}");
    assert_eq!((answers[8]["ok"].as_bool(), answers[8]["result"].as_u64()), (Some(true), Some(16)), "{}", answers[8]);
    assert_eq!(answers[9]["ok"], true, "printing is allowed: {}", answers[9]);

    // Sleeping would hold an instance without using its budget: refused.
    // Exiting the process ends only the instance.
    let items = vec![json_item(serde_json::json!({ "probe": "sleep", "seconds": 0.5 })), json_item(serde_json::json!({ "probe": "exit" }))];
    let reply = client.predict(Submission::new("sandbox-py", items)).await.expect("request succeeds");
    let sleep = reply.outcomes[0].as_ref().map(|o| String::from_utf8_lossy(&o.payload).into_owned()).unwrap_or_else(|e| e.message.clone());
    eprintln!("sandbox probe sleep: {sleep}");
    assert!(sleep.contains("plugins may not sleep or wait"), "{sleep}");
    let (code, message) = failed(&reply.outcomes[1]);
    eprintln!("sandbox probe exit: [{code}] {message}");
    assert_eq!(code, ErrorCode::PluginFailed, "{message}");
    let again = client.predict(Submission::new("sandbox-py", vec![json_item(serde_json::json!({ "probe": "random" }))])).await.unwrap();
    assert_eq!(again.summary.ok, 1, "a fresh instance serves after the exit: {:?}", again.outcomes);
    client.close().await;
    host.stop().await;
}

fn hostile(mode: &str) -> Input {
    json_item(serde_json::json!({ "mode": mode }))
}

/// Every misbehaviour of hostile-py fails only its own item, with a
/// message naming it, while py-tabular keeps serving on the same host and
/// hostile-py serves again afterwards. Python exceptions (including
/// `MemoryError` at the manifest's memory cap and `SystemExit`) are the
/// plugin's item errors; a loop or invalid tensors fail the call itself.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_python_plugins_are_contained() {
    let host = py_host(py_repository()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = host.client().await;
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) || n < 3 {
                let r = healthy.predict(Submission::new("py-tabular", (0..4).map(jet).collect())).await.expect("healthy request");
                assert_eq!(r.summary.ok, 4, "the healthy plugin is unaffected: {:?}", r.outcomes);
                n += 1;
            }
            healthy.close().await;
            n
        })
    };
    let client = host.client().await;
    let cases: &[(&str, ErrorCode, &[&str])] = &[
        ("raise", ErrorCode::PluginError, &["ZeroDivisionError", "division by zero"]),
        ("raise-post", ErrorCode::PluginError, &["KeyError", "no such key"]),
        ("plugin-error", ErrorCode::PluginError, &["hostile", "error requested by item"]),
        ("recurse", ErrorCode::PluginError, &["RecursionError"]),
        ("bad-return", ErrorCode::PluginError, &["Prepared"]),
        ("bad-shape", ErrorCode::PluginFailed, &["manifest declares f32 [-1, 16]"]),
        ("loop", ErrorCode::PluginFailed, &["plugin timeout", "budget of 2s"]),
        ("grow", ErrorCode::PluginError, &["[memory]", "MemoryError: the plugin ran out of memory"]),
        ("exit", ErrorCode::PluginError, &["SystemExit: 3"]),
    ];
    for (mode, want_code, fragments) in cases {
        let start = Instant::now();
        let reply = client.predict(Submission::new("hostile-py", vec![hostile(mode), hostile("ok")])).await.expect("the request completes");
        let took = start.elapsed();
        let (code, message) = failed(&reply.outcomes[0]);
        eprintln!("hostile-py {mode}: [{code}] {message} ({took:?})");
        assert_eq!(code, *want_code, "{mode}: {message}");
        for f in *fragments {
            assert!(message.contains(f), "{mode}: {message} lacks {f:?}");
        }
        if *mode == "loop" {
            assert!(took >= Duration::from_millis(2000) && took < Duration::from_secs(10), "{took:?}");
        }
        assert!(reply.outcomes[1].is_ok(), "{mode}: the item beside it is served: {:?}", reply.outcomes[1]);
        let again = client.predict(Submission::new("hostile-py", vec![hostile("ok")])).await.expect("request");
        assert_eq!(again.summary.ok, 1, "{mode}: hostile-py serves again: {:?}", again.outcomes);
    }
    // Noise is bounded, not fatal; an oversized reply is refused by name.
    let reply = client
        .predict(Submission::new("hostile-py", vec![hostile("log-spam"), hostile("print"), json_item(serde_json::json!({ "mode": "huge-output", "bytes": 64 << 20 }))]))
        .await
        .expect("request");
    assert!(reply.outcomes[0].is_ok() && reply.outcomes[1].is_ok(), "{:?}", &reply.outcomes[..2]);
    let (code, message) = failed(&reply.outcomes[2]);
    eprintln!("hostile-py huge-output: [{code}] {message}");
    assert!(message.contains("bytes"), "{message}");
    stop.store(true, Ordering::Relaxed);
    assert!(traffic.await.expect("traffic task") >= 3);
    client.close().await;
    host.stop().await;
}

/// py-tabular replaced 20 times (uploads of version 2 and touched-manifest
/// reloads) while three clients keep predicting: no request or item fails,
/// and the host counted exactly the items the clients got back; then a
/// rollback to version 1 and a promotion of version 2.
#[tokio::test(flavor = "multi_thread")]
async fn reloading_a_python_plugin_under_load_loses_nothing() {
    let repo = tempfile::tempdir().expect("temp dir");
    copy_dir(&py_repository().join("py-tabular"), &repo.path().join("py-tabular"));
    let host = py_host(repo.path().to_path_buf()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let bundle = work.path().join("v2");
    copy_dir(&repo.path().join("py-tabular/1"), &bundle);
    let manifest = std::fs::read_to_string(bundle.join("manifest.toml")).expect("manifest");
    std::fs::write(bundle.join("manifest.toml"), manifest.replacen("version = 1", "version = 2", 1)).expect("write");
    let load = Load::start(&host, 3, "py-tabular", || (0..8).map(jet).collect()).await;
    let admin = host.client().await;
    for i in 0..20 {
        if i % 2 == 0 {
            admin.upload(&bundle, true).await.expect("upload");
        } else {
            let manifest = repo.path().join("py-tabular/2/manifest.toml");
            let text = std::fs::read_to_string(&manifest).expect("manifest");
            std::fs::write(&manifest, format!("{text}\n# touch {i}\n")).expect("touch");
            let reply = admin.reload(Some("py-tabular")).await.expect("reload");
            assert_eq!(reply.models.len(), 1, "{}", reply.message);
        }
    }
    let (requests, items) = load.stop().await;
    assert!(requests >= 10, "load kept running ({requests} requests)");
    let models = admin.models().await.expect("models");
    let served: u64 = models.iter().filter(|m| m.name == "py-tabular").map(|m| m.items_ok).sum();
    assert_eq!(served, items, "{models:?}");
    assert!(models.iter().any(|m| m.name == "py-tabular" && m.version == 2 && m.items_ok > 0), "version 2 served: {models:?}");
    // Rollback and promote choose the default as for a Rust plugin.
    admin.rollback("py-tabular").await.expect("rollback");
    let reply = admin.predict(Submission::new("py-tabular", vec![jet(0)])).await.expect("request");
    assert_eq!((reply.summary.ok, reply.summary.version), (1, 1), "rolled back to version 1");
    admin.promote("py-tabular", 2).await.expect("promote");
    let reply = admin.predict(Submission::new("py-tabular", vec![jet(0)])).await.expect("request");
    assert_eq!((reply.summary.ok, reply.summary.version), (1, 2), "version 2 promoted");
    admin.close().await;
    host.stop().await;
}

/// A second host over the same compile cache loads every Python plugin
/// from it, without compiling.
#[tokio::test(flavor = "multi_thread")]
async fn python_plugins_load_from_the_compile_cache() {
    let cache = tempfile::tempdir().expect("temp dir");
    let start = |cache: PathBuf| TestHost::start_with(py_repository(), move |c| c.compile_cache = Some(cache));
    let t0 = Instant::now();
    let first = start(cache.path().to_path_buf()).await;
    let cold = t0.elapsed();
    assert!(first.host.repository().all().iter().all(|a| !a.plugin.from_cache()), "nothing cached before the first start");
    first.stop().await;
    let t0 = Instant::now();
    let second = start(cache.path().to_path_buf()).await;
    let warm = t0.elapsed();
    let apps = second.host.repository().all();
    assert_eq!(apps.len(), 4);
    assert!(apps.iter().all(|a| a.plugin.from_cache()), "every Python plugin from the cache");
    eprintln!("4 Python plugins: host start {cold:?} compiling, {warm:?} from the cache");
    let client = second.client().await;
    let reply = client.predict(Submission::new("py-tabular", vec![jet(0)])).await.expect("request");
    assert_eq!(reply.summary.ok, 1);
    client.close().await;
    second.stop().await;
}

fn tensorgate() -> std::process::Command {
    let bin = root().join("target/release/tensorgate");
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    std::process::Command::new(bin)
}

async fn run(mut cmd: std::process::Command) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.expect("join");
    assert!(out.status.success(), "{:?}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// docs/writing-a-plugin.md's Python path: `plugin new --lang python`, the
/// tabular model, manifest edits, `plugin check`, `plugin build
/// --repository`, a host serving it; scores match PyTorch's within 1e-5.
#[tokio::test(flavor = "multi_thread")]
async fn python_plugin_from_template_serves_a_model() {
    let work = tempfile::tempdir().expect("temp dir");
    let mut new = tensorgate();
    new.args(["plugin", "new", "my-py-net", "--lang", "python", "--dir"]).arg(work.path());
    run(new).await;
    let dir = work.path().join("my-py-net");
    for f in ["plugin.py", "manifest.toml", "samples/example.json"] {
        assert!(dir.join(f).is_file(), "template has {f}");
    }
    assert!(!dir.join("Cargo.toml").exists(), "a Python plugin has no Cargo.toml");
    std::fs::copy(root().join("plugins/tabular/model.pt"), dir.join("model.pt")).expect("model");
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest");
    let manifest = manifest
        .replace(r#"labels = ["class_0", "class_1"]"#, r#"labels = ["qcd", "top", "w", "z"]"#)
        .replace("shape = [-1, 2]", "shape = [-1, 16]");
    assert!(manifest.contains("[-1, 16]") && manifest.contains(r#""qcd""#), "template manifest changed: {manifest}");
    std::fs::write(dir.join("manifest.toml"), manifest).expect("write");
    std::fs::write(dir.join("samples/example.json"), serde_json::json!({ "features": vec![0.5f32; 16] }).to_string()).expect("sample");
    let target = work.path().join("target");
    let t0 = Instant::now();
    let mut build = tensorgate();
    build.args(["plugin", "build"]).arg(&dir).arg("--repository").arg(work.path().join("repo")).arg("--target-dir").arg(&target);
    run(build).await;
    eprintln!("plugin build --lang python (componentize-py, then the check): {:?}", t0.elapsed());
    let wasm = std::fs::read(work.path().join("repo/my-py-net/1/plugin.wasm")).expect("installed");
    assert_eq!(&wasm[..8], b"\0asm\x0d\0\x01\0", "a component");
    // A second build with nothing changed does not run componentize-py again.
    let mut again = tensorgate();
    again.args(["plugin", "build"]).arg(&dir).arg("--target-dir").arg(&target);
    let out = run(again).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"), "{}", String::from_utf8_lossy(&out.stdout));
    // A sample the plugin cannot take fails `plugin check`.
    std::fs::write(dir.join("samples/example.json"), r#"{"features": [1.0, 2.0]}"#).expect("sample");
    let mut check = tensorgate();
    check.args(["plugin", "check"]).arg(&dir).arg("--target-dir").arg(&target);
    let out = tokio::task::spawn_blocking(move || check.output().expect("runs")).await.expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.code() == Some(1) && stdout.contains("\"ok\":false"), "exit 1 for a failed check: {:?} {stdout}", out.status);

    let host = TestHost::start_with(work.path().join("repo"), |c| c.compile_cache = Some(root().join("target/compile-cache-python"))).await;
    assert!(host.host.repository().failures().is_empty(), "{:#?}", host.host.repository().failures());
    let reference = reference();
    let features: Vec<String> = serde_json::from_value(reference["features"].clone()).expect("features");
    let client = host.client().await;
    let cases = reference["cases"].as_array().expect("cases");
    let items = cases
        .iter()
        .map(|case| {
            let (keys, values) = (case["request"]["keys"].as_array().unwrap(), case["request"]["values"].as_array().unwrap());
            let ordered: Vec<f64> = features.iter().map(|f| values[keys.iter().position(|k| k == f.as_str()).unwrap()].as_f64().unwrap()).collect();
            json_item(serde_json::json!({ "features": ordered }))
        })
        .collect();
    let reply = client.predict(Submission::new("my-py-net", items)).await.expect("request");
    assert_eq!(reply.summary.ok as usize, cases.len(), "{:?}", reply.outcomes);
    for (case, outcome) in cases.iter().zip(&reply.outcomes) {
        let got: Value = serde_json::from_slice(&outcome.as_ref().unwrap().payload).expect("JSON");
        for label in ["qcd", "top", "w", "z"] {
            let (g, w) = (got[label].as_f64().expect("score"), case["scores"][label].as_f64().expect("score"));
            assert!((g - w).abs() <= 1e-5, "{label}: host {g} vs pytorch {w}");
        }
    }
    client.close().await;
    host.stop().await;
}
