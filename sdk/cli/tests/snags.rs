//! Operator snags of the `tensorgate` command line (issue 30), against the
//! client library's fake host (sdk/client/tests/fake, no libtorch): `bench`
//! fails when requests or items failed, and `submit` whose only host dies
//! says the connection was lost and names only the items left unanswered.

#[allow(dead_code)] // shared with the client's tests; this file uses part of it
#[path = "../../client/tests/fake/mod.rs"]
mod fake;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use fake::{start_host, Relay};

/// The `tensorgate` binary of this build, pointed at `addr`.
fn tensorgate(addr: std::net::SocketAddr, fingerprint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tensorgate"));
    cmd.env("TENSORGATE_HOST", addr.to_string()).env("TENSORGATE_FINGERPRINT", fingerprint).env_remove("TENSORGATE_CA");
    cmd
}

/// A child process killed (and reaped) when the test ends, also on a panic.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next line `tensorgate` printed, as JSON.
async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.recv()).await.expect("a line in time").expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Runs `cmd` off the async runtime (the fake host lives on it).
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("tensorgate runs")).await.expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_exits_1_when_requests_or_items_failed() {
    let (addr, fingerprint) = start_host().await;
    let work = tempfile::tempdir().expect("temp dir");
    let (good, bad) = (work.path().join("good.bin"), work.path().join("bad.bin"));
    std::fs::write(&good, b"x").unwrap();
    std::fs::write(&bad, b"fail").unwrap();
    let bench = |model: &str, file: &std::path::Path| {
        let mut c = tensorgate(addr, &fingerprint);
        c.args(["bench", "--json", "--warmup", "0", "--requests", "2", "--model", model, "--file"]).arg(file);
        c
    };
    let report = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    // Every request answered, every item ok: exit 0.
    let out = output(bench("echo", &good)).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((report(&out)["requests"].as_u64(), report(&out)["errors"].as_u64()), (Some(2), Some(0)));
    // Both requests rejected (the snag: `"requests":0,"errors":2` and exit 0).
    let out = output(bench("missing", &good)).await;
    assert_eq!((report(&out)["requests"].as_u64(), report(&out)["errors"].as_u64()), (Some(0), Some(2)));
    assert_eq!(out.status.code(), Some(1), "failed requests fail the run");
    // Requests answered, but their items failed.
    let out = output(bench("echo", &bad)).await;
    assert_eq!(report(&out)["errors_by_kind"]["plugin_error"].as_u64(), Some(2));
    assert_eq!(out.status.code(), Some(1), "failed items fail the run, as in submit");
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_whose_only_host_dies_says_the_connection_was_lost_for_the_unanswered_items_only() {
    let (host, fingerprint) = start_host().await;
    let relay = Relay::start(host).await;
    let work = tempfile::tempdir().expect("temp dir");
    // Items 0 and 2 are answered at once; the fake host holds 1 and 3.
    let mut files = Vec::new();
    for (i, payload) in ["a", "hang", "c", "hang"].iter().enumerate() {
        let f = work.path().join(format!("item-{i}.bin"));
        std::fs::write(&f, payload).unwrap();
        files.push(f);
    }
    let mut cmd = tensorgate(relay.addr, &fingerprint);
    cmd.args(["submit", "--quiet", "--model", "echo"]).args(&files).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Running(cmd.spawn().expect("tensorgate runs"));
    let stdout = child.0.stdout.take().expect("stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The two answered items are printed; then the host "dies".
    let answered = [next_line(&mut lines).await, next_line(&mut lines).await];
    assert!(answered.iter().all(|l| l["ok"] == true), "{answered:?}");
    let mut indices: Vec<u64> = answered.iter().filter_map(|l| l["index"].as_u64()).collect();
    indices.sort();
    assert_eq!(indices, [0, 2]);
    relay.cut();
    // The failure line: only the items never answered, and the loss as the reason.
    let failure = next_line(&mut lines).await;
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        let _ = child.0.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
        (child.0.wait().expect("exits").code(), stderr)
    })
    .await
    .expect("join");
    assert_eq!(failure["ok"], false, "{failure}");
    assert_eq!(failure["items"], serde_json::json!([1, 3]), "names the unanswered items only: {failure}");
    assert_eq!(failure["code"], "connection", "{failure}");
    let error = failure["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("connection to {} lost", relay.addr)), "{failure}");
    assert!(!error.contains("connecting to"), "the loss, not the failed reconnection: {failure}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("2 ok, 2 failed"), "{stderr}");
}
