//! Management over QUIC against a real host: upload, models, fetch, delete,
//! reload; hot swaps under load that lose nothing; broken bundles that change
//! nothing; roles; crash safety; memory across load/unload cycles.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tensorgate_client::protocol::{ErrorCode, Role};
use tensorgate_client::{Client, ConnectOptions, Input, Submission, Trust};
use tensorgate_tests::{repository_with, repository_with_slow, root, tabular_bundle, Load, TestHost};

fn jet(i: usize) -> Input {
    Input::json(std::fs::read(root().join(format!("plugins/tabular/samples/jet-{i}.json"))).unwrap())
}

fn code(e: &tensorgate_client::ClientError) -> Option<ErrorCode> {
    e.code()
}

/// Files of a bundle directory, by relative path.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn unpack(archive: &[u8], dest: &Path) {
    let decoder = zstd::stream::read::Decoder::new(archive).unwrap();
    tar::Archive::new(decoder).unpack(dest).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_models_fetch_delete() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().unwrap();
    let bundle = tabular_bundle(work.path(), "tabular-v2", 2, |m| {
        *m = m.replacen("description = \"", "description = \"v2: ", 1);
    });

    let reply = client.upload(&bundle, false).await.unwrap();
    assert_eq!(reply.op, "upload");
    assert_eq!((reply.models[0].name.as_str(), reply.models[0].version), ("tabular", 2));
    assert!(reply.message.contains("serving"), "{}", reply.message);
    assert!(repo.path().join("tabular/2/model.pt").is_file(), "bundle renamed into place");

    // The newest version serves by default; the old one by name.
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    let r = client.predict(Submission::new("tabular", vec![jet(0)]).version(1)).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (1, 1));

    let models = client.models().await.unwrap();
    let v2 = models.iter().find(|m| m.name == "tabular" && m.version == 2).expect("v2 listed");
    let v1 = models.iter().find(|m| m.name == "tabular" && m.version == 1).expect("v1 listed");
    assert!(v2.default && !v1.default);
    assert_eq!(v2.state, "ready");
    assert!(v2.description.starts_with("v2: "), "{}", v2.description);
    assert_eq!((v2.requests, v2.items_ok), (1, 1));
    assert!(!v2.labels.is_empty() && !v2.inputs.is_empty());
    assert!(v2.load_us > 0 && v2.loaded_at_unix_s > 0 && v2.bundle_bytes > 0);

    // Fetch returns exactly the files uploaded.
    let archive = client.fetch("tabular", Some(2)).await.unwrap();
    let out = work.path().join("fetched");
    unpack(&archive, &out);
    assert_eq!(files(&out), files(&bundle));

    // Uploading the same version again is a conflict unless replacing.
    let e = client.upload(&bundle, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    client.upload(&bundle, true).await.unwrap();

    // Delete v2: v1 serves again, v2 is gone from disk and from the list.
    let reply = client.delete("tabular", Some(2)).await.unwrap();
    assert_eq!(reply.models.len(), 1);
    assert_eq!(reply.models[0].state, "deleted");
    assert!(!repo.path().join("tabular/2").exists());
    let r = client.predict(Submission::new("tabular", vec![jet(1)])).await.unwrap();
    assert_eq!(r.summary.version, 1);
    let e = client.delete("tabular", Some(9)).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");
    let e = client.fetch("nope", None).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");

    // A .tar.zst upload works like a directory.
    let bundle3 = tabular_bundle(work.path(), "tabular-v3", 3, |_| {});
    let archive = work.path().join("tabular-3.tar.zst");
    std::fs::write(&archive, tensorgate_client::pack_bundle(&bundle3).unwrap()).unwrap();
    client.upload(&archive, false).await.unwrap();
    let r = client.predict(Submission::new("tabular", vec![jet(2)])).await.unwrap();
    assert_eq!(r.summary.version, 3);

    // Delete every version of a model.
    let reply = client.delete("tabular", None).await.unwrap();
    assert_eq!(reply.models.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 3]);
    let e = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");
    assert!(!repo.path().join("tabular").exists());
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_promote_choose_the_default_and_survive_a_restart() {
    let repo = repository_with(|_, _| {});
    let work = tempfile::tempdir().unwrap();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let default_of = |models: &[tensorgate_client::protocol::ModelInfo]| -> Vec<u64> {
        models.iter().filter(|m| m.name == "tabular" && m.default).map(|m| m.version).collect()
    };
    // Nothing earlier than the only version: refused, nothing changed.
    let e = client.rollback("tabular").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("no version older than the default 1"), "{e}");
    for v in [2, 3] {
        client.upload(&tabular_bundle(work.path(), &format!("tabular-v{v}"), v, |_| {}), false).await.unwrap();
    }
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!(r.summary.version, 3);

    // v3 is bad: roll back to v2; v3 still answers when named.
    let reply = client.rollback("tabular").await.unwrap();
    assert!(reply.message.contains("version 3 rolled back, version 2 is the default"), "{}", reply.message);
    assert_eq!(default_of(&reply.models), vec![2]);
    let v3 = reply.models.iter().find(|m| m.version == 3).expect("v3 listed");
    assert_eq!(v3.rolled_back.as_deref(), Some("rolled back by hand"));
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    let r = client.predict(Submission::new("tabular", vec![jet(0)]).version(3)).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (3, 1));
    // Replacing the rolled-back version is not a new release: v2 stays the default.
    client.upload(&tabular_bundle(work.path(), "tabular-v3b", 3, |_| {}), true).await.unwrap();
    assert_eq!(default_of(&client.models().await.unwrap()), vec![2]);

    // The choice survives a restart.
    client.close().await;
    host.stop().await;
    assert!(repo.path().join(".defaults.json").is_file());
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let r = client.predict(Submission::new("tabular", vec![jet(1)])).await.unwrap();
    assert_eq!(r.summary.version, 2, "a restart does not bring the rolled-back version back");
    let models = client.models().await.unwrap();
    assert_eq!(default_of(&models), vec![2]);
    assert!(models.iter().any(|m| m.version == 3 && m.rolled_back.is_some()));
    let status = client.status().await.unwrap();
    let v = |n: u64| status.models.iter().find(|m| m.name == "tabular" && m.version == n).expect("in status");
    assert!(v(2).default && !v(3).default && v(3).rolled_back.as_deref() == Some("rolled back by hand"), "{:?}", status.models);

    // Promote: unknown versions and models are refused; v1 on purpose, then v3 again.
    let e = client.promote("tabular", 9).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");
    assert!(e.to_string().contains("no version 9 ready to promote (ready: 1, 2, 3)"), "{e}");
    let e = client.promote("nope", 1).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");
    client.promote("tabular", 1).await.unwrap();
    assert_eq!(client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.version, 1);
    let reply = client.promote("tabular", 3).await.unwrap();
    assert_eq!(default_of(&reply.models), vec![3]);
    assert!(reply.models.iter().all(|m| m.rolled_back.is_none()), "promoting clears the mark");

    // Roll back again, then a newer release takes over the default.
    client.rollback("tabular").await.unwrap();
    assert_eq!(client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.version, 2);
    client.upload(&tabular_bundle(work.path(), "tabular-v4", 4, |_| {}), false).await.unwrap();
    assert_eq!(client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.version, 4);
    // Deleting v4 and v2: the newest version not rolled back (v1) serves, not v3.
    client.delete("tabular", Some(4)).await.unwrap();
    client.delete("tabular", Some(2)).await.unwrap();
    assert_eq!(client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.version, 1);
    client.close().await;
    host.stop().await;
}

/// A manifest that does not match its model is refused at upload, naming the
/// author's file and field in one line (no staging path, no C++ backtrace),
/// and what served keeps serving; samples in the bundle are run at load.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_does_not_match_its_model_is_refused_before_it_serves() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().unwrap();
    let refused = |e: &tensorgate_client::ClientError, want: &[&str]| {
        let text = e.to_string();
        assert_eq!(code(e), Some(ErrorCode::LoadFailed), "{text}");
        for w in want {
            assert!(text.contains(w), "`{w}` not in: {text}");
        }
        assert!(!text.contains(".staging") && !text.contains("frame #"), "{text}");
        // One line, but for TOML's own pointer at the offending line.
        assert!(!text.contains('\n') || text.contains("TOML parse error"), "{text}");
    };
    let cases: [(&str, fn(&mut String), &[&str]); 9] = [
        // 3 labels for a model whose declared output has 4 columns.
        ("labels", |m| *m = m.replace(r#"labels = ["qcd", "top", "w", "z"]"#, r#"labels = ["qcd", "top", "w"]"#),
            &["manifest.toml: field `labels`: 3 label(s), but no declared output has 3 classes", "`scores` f32 [-1, 4]"]),
        // Declared inputs the model cannot take.
        ("inputs", |m| *m = m.replace("shape = [-1, 16]", "shape = [-1, 32]"),
            &["manifest.toml: the declared inputs do not fit the model", "`features` f32 [1, 32]", "Error"]),
        // Declared outputs the model does not produce.
        ("outputs", |m| *m = m.replace("shape = [-1, 4]", "shape = [-1, 5]").replace(r#""w", "z"]"#, r#""w", "z", "h"]"#),
            &["manifest.toml: the model's outputs for zeros shaped like the declared inputs do not match the declared outputs", "manifest declares f32 [-1, 5]"]),
        // A model file that is not there.
        ("model-file", |m| *m = m.replace(r#"file = "model.pt""#, r#"file = "modle.pt""#), &["modle.pt", "No such file"]),
        // A declared input too large to probe with zeros: refused by name, no allocation.
        ("huge-input", |m| *m = m.replace("shape = [-1, 16]", "shape = [-1, 1000000, 1000000]"),
            &["manifest.toml: input `features` declared [-1, 1000000, 1000000]: one item of it is over 1024 MiB"]),
        // More inputs than the model's forward takes (read from model.pt itself).
        ("input-count", |m| m.push_str("\n[[inputs]]\nname = \"extra\"\ndtype = \"f32\"\nshape = [-1, 2]\n"),
            &["manifest.toml: `[[inputs]]` declares 2 input(s) (features, extra), but model.pt's forward(x: Tensor) -> Tensor takes 1"]),
        // More outputs than it returns.
        ("output-count", |m| m.push_str("\n[[outputs]]\nname = \"extra\"\ndtype = \"f32\"\nshape = [-1, 2]\n"),
            &["manifest.toml: `[[outputs]]` declares 2 output(s) (scores, extra), but model.pt's forward returns 1 tensor(s): forward(x: Tensor) -> Tensor"]),
        // A typo in a field name.
        ("typo", |m| *m = m.replace("labels = [", "labelz = ["), &["manifest.toml", "unknown field `labelz`"]),
        // `[params]` the plugin's `configure` refuses: the load fails, not every item.
        ("params", |m| *m = m.replace("features = [", "features = 16\nunused = ["),
            &["plugin refused its manifest [manifest]: manifest parameter `params.features` = 16: invalid type: integer `16`, expected a sequence"]),
    ];
    for (name, edit, want) in cases {
        let bundle = tabular_bundle(work.path(), name, 2, edit);
        let e = client.upload(&bundle, false).await.expect_err(name);
        refused(&e, want);
    }
    // A sample under samples/ is run at load: a bad one refuses the bundle, a good one passes.
    let bundle = tabular_bundle(work.path(), "bad-sample", 2, |_| {});
    std::fs::create_dir(bundle.join("samples")).unwrap();
    std::fs::write(bundle.join("samples/jet.json"), br#"{"jet_pt": 1.0}"#).unwrap();
    let e = client.upload(&bundle, false).await.expect_err("bad sample");
    refused(&e, &["samples/jet.json: sample item: [plugin_error]", "malformed-json"]);
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (1, 1), "what served keeps serving");
    std::fs::copy(root().join("plugins/tabular/samples/jet-0.json"), bundle.join("samples/jet.json")).unwrap();
    client.upload(&bundle, false).await.expect("a good sample passes");
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    client.close().await;
    host.stop().await;
}

/// A new version on trial takes its share of the requests naming no
/// version. Under continuous load: a good one is promoted with 0 failed
/// requests; a bad one (a valid manifest whose plugin fails every real
/// item) is rolled back automatically, only its own items fail, and the
/// version before it keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_is_promoted_when_good_and_rolled_back_when_bad_under_load() {
    let repo = repository_with(|_, _| {});
    let terms = tensorgate_server::manifest::Rollout { canary_share: 0.5, canary_items: 60, max_failure_increase: 0.02 };
    let host = TestHost::start_with(repo.path().to_path_buf(), move |c| c.rollout = terms).await;
    let client = Arc::new(host.client().await);
    let load = [client.clone(), client.clone(), client.clone()];
    let run = tensorgate_tests::canary::canary_under_load(&load, [&client, &client], &client).await;
    if let Some(c) = &run.v2_trial {
        assert_eq!((c.share, c.items_needed), (0.5, 60), "the host's terms");
    }
    let v3 = run.models.iter().find(|m| m.version == 3).unwrap();
    assert!(v3.rolled_back.as_deref().is_some_and(|r| r.starts_with("canary: ")), "{:?}", v3.rolled_back);
    assert!(run.models.iter().any(|m| m.version == 2 && m.default), "v2 serves again as the default");
    assert_eq!((run.failed_on(1), run.failed_on(2)), (0, 0), "only the bad canary's items fail");
    assert!(run.on(2) > 60 && run.on(3) > 0, "v2 served {} requests, v3 {}", run.on(2), run.on(3));
    let failed = run.failed_on(3);
    assert!(failed >= 2, "rolled back after {failed} failed items: the trial allows 1");
    assert!(run.on(3) * 4 < run.seen.len(), "the bad canary got {} of {} requests before its rollback", run.on(3), run.seen.len());
    // After the rollback, nothing more goes to v3.
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));
    eprintln!(
        "[canary] v2 promoted {:?} after its upload; v3 rolled back {:?} after its upload, {failed} items failed on it, {} requests in all",
        run.promoted,
        run.rolled_back,
        run.seen.len()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_uploads_change_nothing() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().unwrap();

    // A model file that is not TorchScript.
    let bad_model = tabular_bundle(work.path(), "bad-model", 2, |_| {});
    std::fs::write(bad_model.join("model.pt"), b"not a model").unwrap();
    let e = client.upload(&bad_model, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::LoadFailed), "{e}");
    assert!(e.to_string().contains("model.pt"), "{e}");

    // A manifest with a bad field.
    let bad_manifest = tabular_bundle(work.path(), "bad-manifest", 2, |m| m.push_str("\n[model]\ninstances = 0\n"));
    let e = client.upload(&bad_manifest, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::LoadFailed), "{e}");

    // A warm-up item the plugin rejects.
    let bad_warmup = tabular_bundle(work.path(), "bad-warmup", 2, |m| {
        m.push_str("\n[warmup]\nfile = \"warmup.json\"\n");
    });
    std::fs::write(bad_warmup.join("warmup.json"), br#"{"not":"a jet"}"#).unwrap();
    let e = client.upload(&bad_warmup, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::LoadFailed), "{e}");
    assert!(e.to_string().contains("warm-up"), "{e}");

    // Not an archive; an archive escaping the bundle with `..`.
    let e = client.upload_archive(bytes::Bytes::from_static(b"garbage"), false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    let mut evil = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // Write the name bytes directly: the builder refuses `..` itself.
    header.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
    header.set_cksum();
    evil.append(&header, &b"evil"[..]).unwrap();
    let evil = zstd::bulk::compress(&evil.into_inner().unwrap(), 3).unwrap();
    let e = client.upload_archive(bytes::Bytes::from(evil), false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("leaves the bundle"), "{e}");

    // Nothing changed: v1 serves, no v2 on disk, staging is empty.
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (1, 1));
    assert!(!repo.path().join("tabular/2").exists());
    let staging = repo.path().join(".staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none(), "staging left behind");
    assert!(!repo.path().join("escape.txt").exists() && !repo.path().join(".staging/escape.txt").exists());

    // A good warm-up passes.
    let good = tabular_bundle(work.path(), "good-warmup", 2, |m| m.push_str("\n[warmup]\nfile = \"warmup.json\"\n"));
    std::fs::copy(root().join("plugins/tabular/samples/jet-0.json"), good.join("warmup.json")).unwrap();
    client.upload(&good, false).await.unwrap();
    let models = client.models().await.unwrap();
    let v2 = models.iter().find(|m| m.name == "tabular" && m.version == 2).unwrap();
    assert_eq!(v2.items_ok, 0, "the warm-up item is not counted as served");
    client.close().await;
    host.stop().await;
}

/// 50 version swaps while clients keep predicting: every item of every
/// request succeeds, on one version per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_lose_nothing() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let bundle = tabular_bundle(work.path(), "v2", 2, |_| {});
    let load = Load::start(&host, 3, "tabular", || (0..8).map(|i| jet(i % 3)).collect()).await;
    let admin = host.client().await;
    for i in 0..50 {
        // Alternate: replace v2 in place, then reload the repository after touching a file.
        if i % 2 == 0 {
            admin.upload(&bundle, true).await.unwrap();
        } else {
            let manifest = repo.path().join("tabular/2/manifest.toml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            std::fs::write(&manifest, format!("{text}\n# touch {i}\n")).unwrap();
            let reply = admin.reload(Some("tabular")).await.unwrap();
            assert_eq!(reply.models.len(), 1, "{}", reply.message);
        }
    }
    let (requests, items) = load.stop().await;
    assert!(requests >= 10, "load kept running ({requests} requests)");
    // A version replaced in place keeps its counters: the host counted
    // exactly the items the clients got back.
    let models = admin.models().await.unwrap();
    let served: u64 = models.iter().filter(|m| m.name == "tabular").map(|m| m.items_ok).sum();
    assert_eq!(served, items, "{models:?}");
    admin.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_waits_for_requests_in_flight() {
    let repo = repository_with_slow();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = Arc::new(host.client().await);
    let x = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![1, 256], 0.5f32.to_le_bytes().repeat(256)).unwrap();
    let sample = tensorgate_plugin::npy::write_npy(&x);
    let running = {
        let client = client.clone();
        let items: Vec<Input> = (0..4).map(|_| Input::new(sample.clone(), "application/x-npy")).collect();
        tokio::spawn(async move { client.predict(Submission::new("slow", items)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.delete("slow", None).await.unwrap();
    let reply = running.await.unwrap().expect("in-flight request completes");
    assert_eq!(reply.summary.ok, 4, "{:?}", reply.outcomes);
    let e = client.predict(Submission::new("slow", vec![Input::new(sample, "application/x-npy")])).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownModel), "{e}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_all_land() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let client = Arc::new(host.client().await);
    let mut tasks = Vec::new();
    for v in 2..=5u64 {
        let bundle = tabular_bundle(work.path(), &format!("v{v}"), v, |_| {});
        let client = client.clone();
        tasks.push(tokio::spawn(async move { client.upload(&bundle, false).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let versions: Vec<u64> = client.models().await.unwrap().iter().filter(|m| m.name == "tabular").map(|m| m.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    for v in 1..=5 {
        let r = client.predict(Submission::new("tabular", vec![jet(0)]).version(v)).await.unwrap();
        assert_eq!(r.summary.ok, 1);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_and_tokens() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| {
        c.front.access.add_token(Role::Admin, "admin-secret");
        c.front.access.add_token(Role::Predict, "user-secret");
    })
    .await;
    let connect = |token: Option<&str>| {
        let options = ConnectOptions {
            trust: Trust::Fingerprint(host.host.fingerprint().to_string()),
            identity: None,
            token: token.map(str::to_string),
        };
        Client::connect_with(host.host.addr(), options)
    };
    let work = tempfile::tempdir().unwrap();
    let bundle = tabular_bundle(work.path(), "v2", 2, |_| {});

    // No token: predict refused (predict tokens exist); admin refused even from loopback.
    let anon = connect(None).await.unwrap();
    let e = anon.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Forbidden), "{e}");
    let e = anon.models().await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Forbidden), "{e}");
    assert!(e.to_string().contains("needs the admin role"), "{e}");

    // Predict token: predict and status work, management is forbidden.
    let user = connect(Some("user-secret")).await.unwrap();
    assert_eq!(user.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.ok, 1);
    user.status().await.unwrap();
    let e = user.upload(&bundle, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Forbidden), "{e}");
    assert!(e.to_string().contains("grants only the predict role"), "{e}");
    assert!(!repo.path().join("tabular/2").exists());

    // Wrong token.
    let wrong = connect(Some("guess")).await.unwrap();
    let e = wrong.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Forbidden), "{e}");

    // Admin token: everything.
    let admin = connect(Some("admin-secret")).await.unwrap();
    admin.upload(&bundle, false).await.unwrap();
    assert_eq!(admin.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.version, 2);
    // The predict-role client keeps working after the change.
    assert_eq!(user.predict(Submission::new("tabular", vec![jet(1)])).await.unwrap().summary.version, 2);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_loads_new_bundles_and_keeps_serving_on_bad_ones() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| {
        c.watch = true;
        c.watch_debounce = Duration::from_millis(200);
    })
    .await;
    let client = host.client().await;
    let wait_for = |want: u64| {
        let client = &client;
        async move {
            for _ in 0..100 {
                let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
                if r.summary.version == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("version {want} never served");
        }
    };
    // Copy a new version in by hand (not through the host).
    tabular_bundle(&repo.path().join("tabular"), "2", 2, |_| {});
    wait_for(2).await;

    // A broken v3: v2 keeps serving, the failure shows in status.
    let v3 = tabular_bundle(&repo.path().join("tabular"), "3", 3, |_| {});
    std::fs::write(v3.join("model.pt"), b"truncated").unwrap();
    let mut failed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if client.status().await.unwrap().load_errors.iter().any(|f| f.model == "tabular" && f.version == Some(3)) {
            failed = true;
            break;
        }
    }
    assert!(failed, "the failed load of v3 is reported in status");
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!(r.summary.version, 2);

    // Fixing v3's file loads it.
    std::fs::copy(repo.path().join("tabular/1/model.pt"), v3.join("model.pt")).unwrap();
    wait_for(3).await;
    assert!(client.status().await.unwrap().load_errors.is_empty());
    // Removing it from disk stops serving it.
    std::fs::remove_dir_all(&v3).unwrap();
    wait_for(2).await;
    client.close().await;
    host.stop().await;
}

/// A host process killed with SIGKILL at any point of an upload restarts
/// with a consistent repository: the new version complete, or absent.
#[tokio::test(flavor = "multi_thread")]
async fn kill_during_upload_leaves_a_consistent_repository() {
    let bin = root().join("target/release/tensorgate-host");
    assert!(bin.exists(), "{} not built", bin.display());
    let repo = repository_with(|_, _| {});
    let work = tempfile::tempdir().unwrap();
    let bundle = tabular_bundle(work.path(), "v2", 2, |_| {});
    // 48 MiB of incompressible padding makes the upload take a while.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let pad: Vec<u8> = (0..48 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(bundle.join("pad.bin"), &pad).unwrap();
    let expected = files(&bundle);

    let start_host = |state: &Path| {
        let child = std::process::Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .arg("--repository")
            .arg(repo.path())
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let listening = state.join("listening");
        for _ in 0..300 {
            if let Ok(addr) = std::fs::read_to_string(&listening) {
                let fp = std::fs::read_to_string(state.join("fingerprint")).unwrap();
                return (child, addr.parse::<std::net::SocketAddr>().unwrap(), fp);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("host did not start");
    };
    for (round, delay_ms) in [20u64, 150, 400, 900].into_iter().enumerate() {
        let state = work.path().join(format!("state-{round}"));
        std::fs::create_dir_all(&state).unwrap();
        let (mut child, addr, fp) = start_host(&state);
        let client = Client::connect(addr, Trust::Fingerprint(fp)).await.unwrap();
        let upload = {
            let bundle = bundle.clone();
            tokio::spawn(async move { client.upload(&bundle, true).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        upload.abort(); // its connection would only notice at the idle timeout
        let _ = std::fs::remove_file(state.join("listening"));

        // Restart: the repository is consistent and v2, if present, is whole.
        let (mut child, addr, fp) = start_host(&state);
        let client = Client::connect(addr, Trust::Fingerprint(fp)).await.unwrap();
        let status = client.status().await.unwrap();
        assert!(status.load_errors.is_empty(), "round {round}: {:?}", status.load_errors);
        let v2 = repo.path().join("tabular/2");
        if v2.exists() {
            assert_eq!(files(&v2), expected, "round {round}: v2 present but not complete");
            let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
            assert_eq!(r.summary.version, 2);
        }
        eprintln!("round {round} (kill after {delay_ms} ms): v2 {}", if v2.exists() { "landed" } else { "absent" });
        assert!(!repo.path().join(".staging").exists() || std::fs::read_dir(repo.path().join(".staging")).unwrap().next().is_none());
        client.close().await;
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&v2).ok();
    }
}

/// Mutual TLS: client certificates checked against a CA; a listed
/// certificate grants admin, any other verified one predict; none, no connection.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_checked_against_a_ca() {
    let work = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tensorgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(work.path().join("ca.pem"), ca.pem()).unwrap();
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let (c, k) = (work.path().join(format!("{name}.pem")), work.path().join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (tensorgate_client::Identity { cert: c, key: k }, cert.der().to_vec())
    };
    let (ops, ops_der) = issue("ops");
    let (user, _) = issue("user");
    let repo = repository_with(|_, _| {});
    let ca_file = work.path().join("ca.pem");
    let host = TestHost::start_with(repo.path().to_path_buf(), move |c| {
        c.front.access.client_ca = Some(ca_file);
        c.front.access.client_cert_required = true;
        c.front.access.add_cert(Role::Admin, &ops_der);
        c.front.access.set_loopback_admin(false);
    })
    .await;
    let connect = |identity: Option<tensorgate_client::Identity>| {
        let options = ConnectOptions { trust: Trust::Fingerprint(host.host.fingerprint().to_string()), identity, token: None };
        Client::connect_with(host.host.addr(), options)
    };
    // No certificate: the handshake (or the first request) is refused.
    let refused = match connect(None).await {
        Err(_) => true,
        Ok(c) => c.status().await.is_err(),
    };
    assert!(refused, "a client without a certificate must not get in");

    let user = connect(Some(user)).await.unwrap();
    assert_eq!(user.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap().summary.ok, 1);
    let e = user.models().await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Forbidden), "{e}");

    let ops = connect(Some(ops)).await.unwrap();
    assert!(ops.models().await.unwrap().iter().any(|m| m.name == "tabular"));
    host.stop().await;
}

/// writing-a-plugin.md §8 as written: `tensorgate plugin build DIR
/// --repository REPO` puts version 2 into the served repository (a host
/// not watching it does not load it), then `upload REPO/NAME/2` uploads that
/// very folder: the host loads it where it is instead of answering that it
/// exists. A different bundle under an existing, unloaded version is still
/// refused, saying it is on disk but not loaded; a loaded one says it exists.
#[tokio::test(flavor = "multi_thread")]
async fn uploading_the_bundle_already_in_the_repository_folder_loads_it() {
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let listed = |models: &[tensorgate_client::protocol::ModelInfo], v: u64| models.iter().any(|m| m.name == "tabular" && m.version == v);
    // As `plugin build --repository` leaves it.
    let v2 = tabular_bundle(&repo.path().join("tabular"), "2", 2, |_| {});
    assert!(!listed(&client.models().await.unwrap(), 2), "not loaded: the host does not watch its folder");

    let reply = client.upload(&v2, false).await.expect("the folder's own bundle loads");
    assert!(reply.message.starts_with("tabular version 2 loaded in ") && reply.message.ends_with("serving as the default"), "{}", reply.message);
    assert!(reply.models[0].default && reply.models[0].canary.is_none(), "{:?}", reply.models[0]);
    let models = client.models().await.unwrap();
    assert!(models.iter().any(|m| m.name == "tabular" && m.version == 2 && m.default), "{models:?}");
    let r = client.predict(Submission::new("tabular", vec![jet(0)])).await.unwrap();
    assert_eq!((r.summary.version, r.summary.ok), (2, 1));

    // Loaded now: uploading it again is a conflict that says it exists.
    let e = client.upload(&v2, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Conflict));
    assert!(e.to_string().contains("tabular version 2 already exists"), "{e}");

    // Version 3 on disk, not loaded, and an upload of other files as version 3: refused, nothing changes.
    let on_disk = tabular_bundle(&repo.path().join("tabular"), "3", 3, |_| {});
    let before = files(&on_disk);
    let work = tempfile::tempdir().unwrap();
    let other = tabular_bundle(work.path(), "tabular-v3", 3, |m| *m = m.replacen("description = \"", "description = \"other: ", 1));
    let e = client.upload(&other, false).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Conflict));
    assert!(e.to_string().contains("already in the repository's folder but not loaded") && e.to_string().contains("tensorgate reload"), "{e}");
    assert_eq!(files(&on_disk), before, "the folder's bundle is untouched");
    assert!(!listed(&client.models().await.unwrap(), 3));
    client.close().await;
    host.stop().await;
}

/// An upload that starts a canary trial says so in its reply: the share of
/// requests it takes, the items it must answer, what happens next; and its
/// model entry is the trial's (not the default).
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_starts_a_trial_says_so_with_its_share() {
    let repo = repository_with(|_, _| {});
    let terms = tensorgate_server::manifest::Rollout { canary_share: 0.2, canary_items: 500, max_failure_increase: 0.02 };
    let host = TestHost::start_with(repo.path().to_path_buf(), move |c| c.rollout = terms).await;
    let client = host.client().await;
    let work = tempfile::tempdir().unwrap();
    let reply = client.upload(&tabular_bundle(work.path(), "tabular-v2", 2, |_| {}), false).await.unwrap();
    let m = &reply.message;
    assert!(m.starts_with("tabular version 2 loaded in "), "{m}");
    assert!(m.contains("on trial as a canary, not yet the default: it takes 20 % of the requests that name no version"), "{m}");
    assert!(m.contains("until it has answered 500 items, then it is promoted to the default"), "{m}");
    assert!(m.contains("rolled back automatically") && m.contains("tensorgate rollback tabular"), "{m}");
    let info = &reply.models[0];
    assert!(!info.default, "a canary is not the default");
    let c = info.canary.as_ref().expect("the trial");
    assert_eq!((c.share, c.items_needed), (0.2, 500));
    client.close().await;
    host.stop().await;
}
