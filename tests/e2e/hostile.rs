//! Hostile plugins: each misbehaviour fails its own item with a specific
//! error, the poisoned instance is replaced, the host stays up, and a healthy
//! model served at the same time is unaffected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Client, Input, Submission};
use tensorgate_tests::{repository_with_hostile, root, TestHost};

fn hostile(mode: &str) -> Input {
    Input::json(b"{}".to_vec()).with_meta("mode", mode)
}

/// Runs `item` on the hostile application while a healthy client keeps
/// predicting on `tabular`; returns the item's error (code, message) and
/// how long it took. Checks the healthy traffic and a follow-up `ok` item.
async fn contained(host: &TestHost, item: Input) -> (ErrorCode, String, Duration) {
    let healthy = host.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let jet = std::fs::read(root().join("plugins/tabular/samples/jet-0.json")).unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 3 {
                let r = healthy.predict(Submission::new("tabular", vec![Input::json(jet.clone()); 4])).await.unwrap();
                assert_eq!(r.summary.ok, 4, "the healthy model is unaffected");
                n += 1;
            }
            healthy.close().await;
            n
        })
    };
    let client = host.client().await;
    let start = Instant::now();
    let reply = client.predict(Submission::new("hostile", vec![item])).await.expect("the request itself completes");
    let took = start.elapsed();
    let failure = reply.outcomes[0].clone().expect_err("the hostile item fails");
    stop.store(true, Ordering::Relaxed);
    assert!(traffic.await.unwrap() >= 3);
    // The host is up and the plugin serves again from a fresh instance.
    let again = client.predict(Submission::new("hostile", vec![hostile("ok")])).await.unwrap();
    assert_eq!(again.summary.ok, 1, "{:?}", again.outcomes);
    client.close().await;
    (failure.code, failure.message, took)
}

async fn start() -> (TestHost, tempfile::TempDir) {
    let repo = repository_with_hostile();
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| {
        // Small enough for `huge-output` to cross it with a few MB.
        c.front.limits.max_frame_bytes = 4 << 20;
    })
    .await;
    assert!(host.host.repository().failures().is_empty(), "{:?}", host.host.repository().failures());
    (host, repo)
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_fails_the_item_with_the_plugins_message() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("trap")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    assert!(message.starts_with("plugin trapped: panic: panicked at"), "{message}");
    assert!(message.contains("hostile plugin: trap requested by item"), "{message}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_at_its_budget() {
    let (host, _repo) = start().await;
    let (code, message, took) = contained(&host, hostile("loop")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    assert!(message.starts_with("plugin timeout") && message.contains("200ms"), "{message}");
    eprintln!("looping plugin stopped after {took:?} (budget 200 ms)");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_hits_the_memory_limit() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("grow")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    assert!(message.starts_with("plugin memory limit") && message.contains("16777216"), "{message}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_tensors_are_rejected_before_the_model() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("bad-shape")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    assert!(message.contains("manifest declares f32 [-1, 16]"), "{message}");
    host.stop().await;
}

/// Contract 0.2: a handle kept past its call, tensors past the manifest's
/// caps and an operation outside its tensor each fail their item with a
/// message naming the problem; the host and the plugin's next item are fine.
#[tokio::test(flavor = "multi_thread")]
async fn host_tensors_are_bounded_and_checked() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("stale-handle")).await;
    assert_eq!(code, ErrorCode::PluginError);
    assert!(message.contains("is not live: handles last only for the call that made them"), "{message}");
    let (code, message, _) = contained(&host, hostile("many-tensors")).await;
    assert_eq!(code, ErrorCode::PluginError);
    assert!(message.contains("[tensor-cap]") && message.contains("holds 100 tensors, the cap ([plugin] max_tensors per item)"), "{message}");
    let (code, message, _) = contained(&host, hostile("big-tensor")).await;
    assert_eq!(code, ErrorCode::PluginError);
    assert!(message.contains("134217728 bytes") && message.contains("cap of 67108864 bytes ([plugin] max_tensor_mb per item)"), "{message}");
    let (code, message, _) = contained(&host, hostile("bad-index")).await;
    assert_eq!(code, ErrorCode::PluginError);
    assert!(message.contains("[op]: indices[1] = 99 is outside 0..16"), "{message}");
    host.stop().await;
}

/// A component built for contract 0.1 is refused at load, naming the
/// version it targets and the one the host speaks; nothing else is affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_for_contract_0_1_is_refused_at_load() {
    let repo = repository_with_hostile();
    let dir = repo.path().join("old/1");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(root().join("tests/plugins/hostile/manifest.toml")).unwrap();
    std::fs::write(dir.join("manifest.toml"), manifest.replace("name = \"hostile\"", "name = \"old\"")).unwrap();
    std::fs::copy(repo.path().join("hostile/1/model.pt"), dir.join("model.pt")).unwrap();
    std::fs::copy(root().join("tests/plugins/contract-0.1/hostile.wasm"), dir.join("plugin.wasm")).unwrap();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let failures = host.host.repository().failures();
    let message = &failures.iter().find(|f| f.model == "old").expect("old/1 failed to load").error;
    assert!(
        message.contains("is built for tensorgate:plugin@0.1.0, but this host speaks tensorgate:plugin@0.3.0"),
        "{message}"
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    let client = host.client().await;
    let ok = client.predict(Submission::new("hostile", vec![hostile("ok")])).await.unwrap();
    assert_eq!(ok.summary.ok, 1);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_output_is_refused() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("huge-output").with_meta("bytes", "8000000")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    // Data, content type and metadata: the item's own (`mode`, `bytes`: 27 bytes) echoed too.
    assert!(message.contains("plugin output of 8000051 bytes exceeds the limit"), "{message}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_in_postprocess_fails_only_that_item() {
    let (host, _repo) = start().await;
    let (code, message, _) = contained(&host, hostile("panic-post")).await;
    assert_eq!(code, ErrorCode::PluginFailed);
    assert!(message.contains("hostile plugin: panic in postprocess"), "{message}");
    // Its siblings in the same request succeed.
    let client = host.client().await;
    let items = vec![hostile("ok"), hostile("panic-post"), hostile("ok")];
    let reply = client.predict(Submission::new("hostile", items)).await.unwrap();
    assert_eq!((reply.summary.ok, reply.summary.failed), (2, 1));
    assert!(reply.outcomes[1].is_err());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_flood_is_capped() {
    let (host, _repo) = start().await;
    let client: Client = host.client().await;
    let start = Instant::now();
    let reply = client.predict(Submission::new("hostile", vec![hostile("log-spam")])).await.unwrap();
    // 100,000 messages: the first 64 are logged, the rest counted and dropped.
    assert_eq!(reply.summary.ok, 1, "{:?}", reply.outcomes);
    eprintln!("100k log calls took {:?}", start.elapsed());
    let app = host.host.repository().resolve("hostile", None).unwrap();
    let logs = app.plugin.logs();
    let (logged, dropped) = (logs.logged.load(Ordering::Relaxed), logs.suppressed.load(Ordering::Relaxed));
    // The warm-up and describe calls log nothing; the spam call logs 100,000.
    assert_eq!(logged, tensorgate_runtime::plugin::MAX_LOGS_PER_CALL as u64, "logged {logged}");
    assert_eq!(dropped, 100_000 - logged, "dropped {dropped}");
    client.close().await;
    host.stop().await;
}

/// A copy of the hostile bundle as application `name` (version 1) in
/// `repo/name/1`, with `labels` and `extra` manifest text (tables) added.
fn labelled_bundle(repo: &std::path::Path, name: &str, labels: &[&str], extra: &str) -> std::path::PathBuf {
    let dir = repo.join(name).join("1");
    tensorgate_tests::copy_dir(&repo.join("hostile/1"), &dir);
    let manifest = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen("name = \"hostile\"", &format!("name = \"{name}\""), 1);
    let list: Vec<String> = labels.iter().map(|l| format!("\"{l}\"")).collect();
    let text = text.replacen("\n[model]", &format!("\nlabels = [{}]\n\n[model]", list.join(", ")), 1);
    std::fs::write(&manifest, format!("{text}\n{extra}")).unwrap();
    dir
}

/// Reply keys the manifest does not declare fail the item (plugin_failed,
/// naming the key and the plugin) when served, and fail `tensorgate-host
/// check` (what `tensorgate plugin check` runs) and an upload whose warm-up
/// item gets such a reply; keys declared under `[reply] keys` pass.
#[tokio::test(flavor = "multi_thread")]
async fn undeclared_reply_keys_are_refused_at_check_and_at_serve() {
    let repo = repository_with_hostile();
    // The plugin replies {"quark", "glu", "n_particles"} in mode `reply-keys`.
    labelled_bundle(repo.path(), "qg", &["quark", "gluon", "w", "z"], "");
    labelled_bundle(repo.path(), "qg-declared", &["quark", "glu", "w", "z"], "[reply]\nkeys = [\"n_particles\"]\n");
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    assert!(host.host.repository().failures().is_empty(), "{:?}", host.host.repository().failures());
    let client = host.client().await;

    // Served: the item fails alone, naming the key and the plugin; its siblings (JSON lists) pass.
    let items = vec![hostile("ok"), hostile("reply-keys"), hostile("ok")];
    let reply = client.predict(Submission::new("qg", items)).await.unwrap();
    assert_eq!((reply.summary.ok, reply.summary.failed), (2, 1), "{:?}", reply.outcomes);
    let failure = reply.outcomes[1].clone().expect_err("the undeclared key fails the item");
    assert_eq!(failure.code, ErrorCode::PluginFailed);
    assert!(
        failure.message.starts_with("plugin `qg` replied with key `glu`, which the manifest does not declare (labels: quark, gluon, w, z;"),
        "{}",
        failure.message
    );
    // Declared: the label and the extra key pass.
    let reply = client.predict(Submission::new("qg-declared", vec![hostile("reply-keys")])).await.unwrap();
    let ok = reply.outcomes[0].clone().expect("declared keys pass");
    let body: serde_json::Value = serde_json::from_slice(&ok.payload).unwrap();
    assert_eq!(body["n_particles"], 0, "{body}");

    // Checked: a warm-up item that gets the reply fails `tensorgate-host check`, naming the key ...
    let warmup = "[warmup]\nfile = \"samples/item.json\"\nmetadata = { mode = \"reply-keys\" }\n";
    let work = tempfile::tempdir().unwrap();
    let check = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir.join("samples")).unwrap();
        std::fs::write(dir.join("samples/item.json"), "{}").unwrap();
        let bin = root().join("target/release/tensorgate-host");
        assert!(bin.exists(), "{} not built", bin.display());
        let out = std::process::Command::new(bin).arg("check").arg(dir).env("RUST_LOG", "warn").output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    std::fs::create_dir_all(work.path().join("hostile")).unwrap();
    tensorgate_tests::copy_dir(&repo.path().join("hostile/1"), &work.path().join("hostile/1"));
    let bad = labelled_bundle(work.path(), "qg-warm", &["quark", "gluon", "w", "z"], warmup);
    let (code, out) = check(&bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("plugin `qg-warm` replied with key `glu`, which the manifest does not declare"), "{out}");
    // ... and its upload ...
    let e = client.upload(&bad, false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LoadFailed), "{e}");
    assert!(e.to_string().contains("replied with key `glu`"), "{e}");
    // ... while the declared keys pass both.
    let good = labelled_bundle(work.path(), "qg-warm-declared", &["quark", "glu", "w", "z"], &format!("[reply]\nkeys = [\"n_particles\"]\n{warmup}"));
    let (code, out) = check(&good);
    assert_eq!(code, Some(0), "{out}");
    client.close().await;
    host.stop().await;
}
