//! docs/writing-a-plugin.md, step by step: `tensorgate plugin new`, a model,
//! manifest edits, `tensorgate plugin build --repository`, a host serving the
//! new bundle, `tensorgate submit`; the reply matches PyTorch's scores for
//! the same model (plugins/tabular/reference.json) within 1e-5; then step 8:
//! a version 2 uploaded to the running host, rolled back and promoted.

use std::process::Command;

use tensorgate_tests::{root, TestHost};

fn tensorgate() -> Command {
    let bin = root().join("target/release/tensorgate");
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    Command::new(bin)
}

async fn run(mut cmd: Command) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.expect("join");
    assert!(out.status.success(), "{:?}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn new_plugin_from_template_serves_a_model() {
    let work = tempfile::tempdir().unwrap();
    // Step 2: scaffold, and bring "your" model (the tabular MLP: [N, 16] -> [N, 4]).
    let mut new = tensorgate();
    new.args(["plugin", "new", "my-net", "--dir"]).arg(work.path());
    run(new).await;
    let crate_dir = work.path().join("my-net");
    for f in ["Cargo.toml", ".cargo/config.toml", "manifest.toml", "src/lib.rs"] {
        assert!(crate_dir.join(f).exists(), "template has {f}");
    }
    std::fs::copy(root().join("plugins/tabular/model.pt"), crate_dir.join("model.pt")).unwrap();
    // Step 3: labels and input shape.
    let manifest = std::fs::read_to_string(crate_dir.join("manifest.toml")).unwrap();
    let manifest = manifest
        .replace(r#"labels = ["class_0", "class_1"]"#, r#"labels = ["qcd", "top", "w", "z"]"#)
        .replace("shape = [-1, 2]", "shape = [-1, 16]");
    assert!(manifest.contains("[-1, 16]") && manifest.contains(r#""qcd""#), "template manifest changed: {manifest}");
    std::fs::write(crate_dir.join("manifest.toml"), manifest).unwrap();
    // ... and a sample for the new input width (the template's [warmup] runs it).
    let ordered_sample = serde_json::json!({ "features": vec![0.5f32; 16] }).to_string();
    std::fs::write(crate_dir.join("samples/example.json"), &ordered_sample).unwrap();
    // Step 5: build and install (sharing the wasm32 std build of scripts/build-plugins).
    let repo = work.path().join("repo");
    let mut build = tensorgate();
    build.args(["plugin", "build"]).arg(&crate_dir).arg("--repository").arg(&repo);
    build.arg("--target-dir").arg(root().join("target/plugins"));
    run(build).await;
    let wasm = std::fs::read(repo.join("my-net/1/plugin.wasm")).unwrap();
    assert_eq!(&wasm[..8], b"\0asm\x0d\0\x01\0", "a component");
    assert!(repo.join("my-net/1/samples/example.json").is_file(), "the whole bundle is installed");
    // `plugin check`: the sample through plugin and model, its output printed.
    let mut check = tensorgate();
    check.args(["plugin", "check"]).arg(&crate_dir).arg("--target-dir").arg(root().join("target/plugins"));
    let out = run(check).await;
    let line: serde_json::Value = out
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .find(|v| v.get("file").is_some())
        .expect("a JSON line per sample");
    assert_eq!((line["file"].as_str(), line["ok"].as_bool()), (Some("samples/example.json"), Some(true)), "{line}");
    assert!(line["result"]["qcd"].is_number(), "{line}");
    // A sample the plugin cannot take fails the check, and `plugin build` installs nothing.
    std::fs::write(crate_dir.join("samples/example.json"), r#"{"features": [1.0, 2.0]}"#).unwrap();
    let mut check = tensorgate();
    check.args(["plugin", "check"]).arg(&crate_dir).arg("--target-dir").arg(root().join("target/plugins"));
    let out = tokio::task::spawn_blocking(move || check.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("samples/example.json") && stdout.contains("\"ok\":false"), "{stdout}");
    let mut rebuild = tensorgate();
    rebuild.args(["plugin", "build"]).arg(&crate_dir).arg("--repository").arg(work.path().join("repo2"));
    rebuild.arg("--target-dir").arg(root().join("target/plugins"));
    let out = tokio::task::spawn_blocking(move || rebuild.output().unwrap()).await.unwrap();
    assert!(!out.status.success() && !work.path().join("repo2/my-net/1").exists(), "a bundle failing its check is not installed");
    std::fs::write(crate_dir.join("samples/example.json"), &ordered_sample).unwrap();

    // Step 6: a host serving the new repository.
    let host = TestHost::start_with(repo, |_| {}).await;
    assert!(host.host.repository().failures().is_empty(), "{:#?}", host.host.repository().failures());
    // Step 7: submit with the CLI; compare with PyTorch.
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("plugins/tabular/reference.json")).unwrap()).unwrap();
    let features: Vec<String> = serde_json::from_value(reference["features"].clone()).unwrap();
    let case = &reference["cases"][0];
    let (keys, values) = (case["request"]["keys"].as_array().unwrap(), case["request"]["values"].as_array().unwrap());
    let ordered: Vec<f64> = features
        .iter()
        .map(|f| values[keys.iter().position(|k| k == f.as_str()).unwrap()].as_f64().unwrap())
        .collect();
    let input = work.path().join("x.json");
    std::fs::write(&input, serde_json::json!({ "features": ordered }).to_string()).unwrap();
    let mut submit = tensorgate();
    submit
        .env("TENSORGATE_HOST", host.host.addr().to_string())
        .env("TENSORGATE_FINGERPRINT", host.host.fingerprint())
        .env_remove("TENSORGATE_CA")
        .args(["submit", "--model", "my-net", "--quiet"])
        .arg(&input);
    let out = run(submit).await;
    let line: serde_json::Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["ok"], true, "{line}");
    for label in ["qcd", "top", "w", "z"] {
        let (got, want) = (line["result"][label].as_f64().unwrap(), case["scores"][label].as_f64().unwrap());
        assert!((got - want).abs() <= 1e-5, "{label}: host {got} vs pytorch {want}");
    }
    // Step 8: version 2 to the running host; rollback, promote.
    let cli = |args: &[&str]| {
        let mut c = tensorgate();
        c.env("TENSORGATE_HOST", host.host.addr().to_string())
            .env("TENSORGATE_FINGERPRINT", host.host.fingerprint())
            .env_remove("TENSORGATE_CA")
            .args(args);
        c
    };
    let v2 = work.path().join("my-net-v2");
    tensorgate_tests::copy_dir(&work.path().join("repo/my-net/1"), &v2);
    let text = std::fs::read_to_string(v2.join("manifest.toml")).unwrap().replacen("version = 1", "version = 2", 1);
    std::fs::write(v2.join("manifest.toml"), text).unwrap();
    let out = run(cli(&["upload", v2.to_str().unwrap()])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("my-net version 2 loaded"), "{}", String::from_utf8_lossy(&out.stdout));
    let default = |models: &[u8]| -> Vec<u64> {
        let models: Vec<serde_json::Value> = serde_json::from_slice(models).unwrap();
        models.iter().filter(|m| m["default"] == true).map(|m| m["version"].as_u64().unwrap()).collect()
    };
    assert_eq!(default(&run(cli(&["models", "--json"])).await.stdout), vec![2]);
    let out = run(cli(&["rollback", "my-net"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2 rolled back, version 1 is the default"));
    assert_eq!(default(&run(cli(&["models", "--json"])).await.stdout), vec![1]);
    run(cli(&["promote", "my-net", "2"])).await;
    assert_eq!(default(&run(cli(&["models", "--json"])).await.stdout), vec![2]);
    host.stop().await;
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_folders() {
    let work = tempfile::tempdir().unwrap();
    let out = tensorgate().args(["plugin", "new", "bad/name", "--dir"]).arg(work.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be non-empty [A-Za-z0-9_-]"));
    std::fs::create_dir(work.path().join("taken")).unwrap();
    let out = tensorgate().args(["plugin", "new", "taken", "--dir"]).arg(work.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tensorgate().args(["plugin", "build"]).arg(work.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a plugin (no Cargo.toml, no plugin.py)"));
}
