//! The `tensorgate` command line against a real host: directories and globs,
//! JSON lines, output files, exit codes, `models` and `status`.

use std::process::Command;

use tensorgate_tests::{root, TestHost};

fn cli(host: &TestHost) -> Command {
    let bin = root().join("target/release/tensorgate");
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    let mut cmd = Command::new(bin);
    cmd.env("TENSORGATE_HOST", host.host.addr().to_string())
        .env("TENSORGATE_FINGERPRINT", host.host.fingerprint())
        .env_remove("TENSORGATE_CA");
    cmd
}

/// Runs the command off the async runtime and returns its output.
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("tensorgate runs")).await.expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_status_and_models() {
    let host = TestHost::start().await;
    let samples = root().join("plugins/tabular/samples");
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    std::fs::create_dir(&good).unwrap();
    for i in 0..3 {
        std::fs::copy(samples.join(format!("jet-{i}.json")), good.join(format!("jet-{i}.json"))).unwrap();
    }

    // A directory: one JSON line per file, exit 0.
    let out = output({
        let mut c = cli(&host);
        c.args(["submit", "--model", "tabular", "--quiet"]).arg(&good);
        c
    })
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["ok"] == true && l["result"]["qcd"].is_number()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 ok, 0 failed"));

    // A glob plus a bad file, two requests in flight, results to files: exit 1.
    let outdir = work.path().join("out");
    let out = output({
        let mut c = cli(&host);
        c.args(["submit", "--model", "tabular", "--quiet", "--concurrency", "2", "--compress", "off", "--output-dir"])
            .arg(&outdir)
            .arg(format!("{}/jet-*.json", samples.display()))
            .arg(samples.join("bad-missing-key.json"));
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 ok, 1 failed"));
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(outdir.join("jet-1.json")).unwrap()).unwrap();
    assert!(written["top"].is_number());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("missing key `jet_pt`"), "{stdout}");

    // models and status.
    let out = output({
        let mut c = cli(&host);
        c.arg("models");
        c
    })
    .await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("tabular")), "{table}");
    let out = output({
        let mut c = cli(&host);
        c.arg("status");
        c
    })
    .await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["models"].as_array().unwrap().iter().any(|m| m["name"] == "tabular" && m["items_ok"] == 6));

    // bench: paced by --rate for --duration; failures counted by kind.
    let out = output({
        let mut c = cli(&host);
        c.args(["bench", "--model", "tabular", "--duration", "1", "--rate", "100", "--concurrency", "2", "--warmup", "0", "--json"])
            .arg("--file")
            .arg(samples.join("jet-0.json"));
        c
    })
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let rate = report["requests_per_s"].as_f64().unwrap();
    assert!(rate > 50.0 && rate < 150.0, "paced at 100/s, got {rate}");
    assert_eq!(report["errors"], 0);
    let out = output({
        let mut c = cli(&host);
        c.args(["bench", "--model", "tabular", "--requests", "20", "--warmup", "0", "--json", "--file"])
            .arg(samples.join("bad-missing-key.json"));
        c
    })
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    assert_eq!(report["errors_by_kind"]["plugin_error"], 20, "{report}");

    // No trust given: a clear error, exit 2.
    let out = output({
        let mut c = cli(&host);
        c.env_remove("TENSORGATE_FINGERPRINT").arg("status");
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fingerprint"));
    host.stop().await;
}
