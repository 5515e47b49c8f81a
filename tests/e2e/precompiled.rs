//! A Python plugin's bundle carries its compiled code (`plugin.cwasm`,
//! written by `tensorgate plugin build`): a host that has never seen the
//! plugin (fresh state directory, empty compile cache) serves it within
//! seconds instead of compiling the 18 MB component; a stale, a foreign and
//! a corrupt artefact are each ignored with a log line naming why, and the
//! plugin is compiled and serves correct replies all the same; uploaded
//! through a gateway, the artefact reaches every worker and none compiles.
//!
//! The hosts are the real `tensorgate-host serve` binary, their log read
//! from their stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tensorgate_client::{Client, Input, Submission, Trust};
use tensorgate_runtime::plugin::precompiled::{self, HEADER_LEN};
use tensorgate_tests::cluster::{Engine, Proc};
use tensorgate_tests::{copy_dir, root};

/// From host start (fresh state directory) to the first reply, with the
/// artefact: measured 0.45–0.52 s here on the busy 2-core test machine
/// (0.53–0.96 s with the CLI as the client, bench/precompiled-start.sh):
/// the host's start, reading and hashing 35 MB of native code, the first
/// Python call. Compiling instead takes 12–28 s there, so 5 s separates
/// the two with room for a loaded machine (the target is 2 s).
const FRESH_START_BOUND: Duration = Duration::from_secs(5);

fn bin(name: &str) -> PathBuf {
    let bin = root().join("target/release").join(name);
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    bin
}

/// `tensorgate plugin build plugins/py-tabular --repository REPO`: the
/// bundle `REPO/py-tabular/1`, checked, with its artefact.
fn build_bundle(work: &Path) -> PathBuf {
    let repo = work.join("built");
    let out = Command::new(bin("tensorgate"))
        .args(["plugin", "build"])
        // Absolute and without `..`: componentize-py imports `plugin` from there.
        .arg(root().join("plugins/py-tabular").canonicalize().expect("plugins/py-tabular"))
        .arg("--repository")
        .arg(&repo)
        .arg("--target-dir")
        .arg(work.join("target"))
        .output()
        .expect("tensorgate runs");
    assert!(
        out.status.success(),
        "plugin build failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    repo.join("py-tabular/1")
}

/// A `tensorgate-host serve` over `repo` with a fresh state directory
/// (so an empty compile cache), logging at info to `state/host.log`.
struct Host {
    child: Child,
    state: tempfile::TempDir,
    addr: SocketAddr,
    fingerprint: String,
}

impl Host {
    async fn start(repo: &Path) -> Host {
        let state = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(state.path().join("host.log")).expect("log file");
        let child = Command::new(bin("tensorgate-host"))
            .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
            .arg("--repository")
            .arg(repo)
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "info")
            .env_remove("TENSORGATE_COMPILE_CACHE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("host starts");
        let listening = state.path().join("listening");
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&listening) {
                let fingerprint = std::fs::read_to_string(state.path().join("fingerprint")).expect("fingerprint");
                let addr = addr.trim().parse().expect("address");
                return Host { child, state, addr, fingerprint: fingerprint.trim().to_string() };
            }
            assert!(Instant::now() < deadline, "host did not start: {}", std::fs::read_to_string(state.path().join("host.log")).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr, Trust::Fingerprint(self.fingerprint.clone())).await.expect("client connects")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("host.log")).expect("host log")
    }

    /// Entries in the host's own compile cache (`STATE/compiled`).
    fn compiled(&self) -> usize {
        std::fs::read_dir(self.state.path().join("compiled")).map(|d| d.count()).unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

/// The reference cases through `app` (py-tabular's plugin): every score
/// within 1e-5 of PyTorch's.
async fn serves_correctly(client: &Client, app: &str) {
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    let items = cases.iter().map(|c| Input::json(serde_json::to_vec(&c["request"]).expect("json"))).collect();
    let reply = client.predict(Submission::new(app, items)).await.expect("request succeeds");
    assert_eq!((reply.summary.ok as usize, reply.summary.failed), (cases.len(), 0), "{app}: {:?}", reply.outcomes);
    for (case, outcome) in cases.iter().zip(&reply.outcomes) {
        let got: Value = serde_json::from_slice(&outcome.as_ref().expect("ok").payload).expect("JSON reply");
        for (label, want) in case["scores"].as_object().expect("scores") {
            let (g, w) = (got[label].as_f64().expect("score"), want.as_f64().expect("score"));
            assert!((g - w).abs() <= 1e-5, "{app} {label}: host {g} vs pytorch {w}");
        }
    }
}

/// A copy of `bundle` named `name` in `repo`, its artefact changed by `edit`.
fn variant(bundle: &Path, repo: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = repo.join(name).join("1");
    copy_dir(bundle, &dir);
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest");
    assert!(manifest.contains("name = \"py-tabular\""), "{manifest}");
    std::fs::write(dir.join("manifest.toml"), manifest.replacen("name = \"py-tabular\"", &format!("name = \"{name}\""), 1)).expect("manifest");
    edit(&dir);
    dir
}

/// The one log line about `app`'s artefact.
fn artefact_line(log: &str, app: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("/{app}/1/plugin.cwasm"))).collect();
    assert_eq!(lines.len(), 1, "one line about {app}'s artefact:\n{log}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_built_python_bundle_serves_a_fresh_host_without_compiling_and_bad_artefacts_are_recompiled() {
    let work = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let bundle = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || build_bundle(&work)
    })
    .await
    .expect("build");
    eprintln!("plugin build --repository (componentize-py, the check, the artefact): {:?}", t0.elapsed());
    let wasm = std::fs::read(bundle.join("plugin.wasm")).expect("plugin");
    let artefact = std::fs::read(bundle.join("plugin.cwasm")).expect("plugin build leaves plugin.cwasm in the bundle");
    assert_eq!(&artefact[..16], precompiled::MAGIC);
    assert_eq!(&artefact[20..52], &precompiled::sha256(&wasm)[..], "compiled from the bundle's plugin");
    eprintln!("plugin.wasm {} bytes, plugin.cwasm {} bytes", wasm.len(), artefact.len());

    // A fresh host: from start to the first reply without compiling.
    let repo = bundle.parent().and_then(Path::parent).expect("repository").to_path_buf();
    let t0 = Instant::now();
    let host = Host::start(&repo).await;
    let client = host.client().await;
    let reply = client
        .predict(Submission::new("py-tabular", vec![Input::json(std::fs::read(root().join("plugins/py-tabular/samples/jet-0.json")).expect("sample"))]))
        .await
        .expect("request");
    let first_reply = t0.elapsed();
    assert_eq!(reply.summary.ok, 1, "{:?}", reply.outcomes);
    eprintln!("fresh host, bundle with its artefact: first reply after {first_reply:?}");
    let log = host.log();
    assert!(artefact_line(&log, "py-tabular").contains("plugin loaded from the bundle's precompiled artefact"), "{log}");
    assert_eq!(host.compiled(), 0, "nothing compiled, so nothing in the host's compile cache");
    assert!(first_reply <= FRESH_START_BOUND, "first reply after {first_reply:?} > {FRESH_START_BOUND:?}");
    serves_correctly(&client, "py-tabular").await;
    client.close().await;
    host.stop();

    // Stale: the plugin was rebuilt (here: a custom section appended, a
    // valid component that differs) and the old artefact left beside it.
    // Foreign: another engine's (the recorded engine hash patched).
    // Corrupt: one byte of the native code flipped.
    let bad = work.path().join("bad");
    variant(&bundle, &bad, "py-stale", |dir| {
        let mut wasm = wasm.clone();
        let (name, payload) = (b"tensorgate-test", b"rebuilt");
        wasm.extend_from_slice(&[0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
        wasm.extend_from_slice(name);
        wasm.extend_from_slice(payload);
        std::fs::write(dir.join("plugin.wasm"), wasm).expect("write");
    });
    variant(&bundle, &bad, "py-foreign", |dir| {
        let mut a = artefact.clone();
        a[52] ^= 0xff;
        std::fs::write(dir.join("plugin.cwasm"), a).expect("write");
    });
    let corrupt = variant(&bundle, &bad, "py-corrupt", |dir| {
        let mut a = artefact.clone();
        let at = HEADER_LEN + (a.len() - HEADER_LEN) / 2;
        a[at] ^= 0x01;
        std::fs::write(dir.join("plugin.cwasm"), a).expect("write");
    });
    let corrupt_bytes = std::fs::read(corrupt.join("plugin.cwasm")).expect("read");
    let t0 = Instant::now();
    let host = Host::start(&bad).await;
    eprintln!("fresh host, three bad artefacts (two components compiled): started after {:?}", t0.elapsed());
    let log = host.log();
    for (app, why) in [("py-stale", "stale: compiled from another component"), ("py-foreign", "foreign: compiled by another engine"), ("py-corrupt", "corrupt: its bytes do not match")] {
        let line = artefact_line(&log, app);
        assert!(line.contains("WARN") && line.contains("ignoring the bundle's precompiled plugin") && line.contains(why), "{app}: {line}");
        eprintln!("{app}: {line}");
    }
    // Compiled through the host's own cache: the rebuilt component and the
    // original (once, for both the foreign and the corrupt bundle).
    assert_eq!(host.compiled(), 2, "{log}");
    let client = host.client().await;
    for app in ["py-stale", "py-foreign", "py-corrupt"] {
        serves_correctly(&client, app).await;
    }
    client.close().await;
    host.stop();
    assert_eq!(std::fs::read(corrupt.join("plugin.cwasm")).expect("read"), corrupt_bytes, "a serving host leaves the bundle as it is");

    // Through a gateway: the uploaded archive carries the artefact to every
    // worker (fresh state directories, empty repositories), and none compiles.
    let engine = Engine::start();
    let repos = [tempfile::tempdir().expect("repo"), tempfile::tempdir().expect("repo")];
    let workers: Vec<Proc> = repos.iter().map(|r| Proc::worker(&engine, r.path(), &[])).collect();
    let gateway = Proc::gateway(&engine, &[]);
    let client = gateway.client().await;
    let t0 = Instant::now();
    while client.status().await.expect("status").workers.iter().filter(|w| w.state == "serving").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the workers never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let reply = client.upload(&bundle, false).await.expect("fleet upload");
    eprintln!("upload through the gateway, ready on both workers after {:?}: {}", t0.elapsed(), reply.message);
    assert!(reply.message.contains("ready on 2 worker(s)"), "{}", reply.message);
    for (worker, repo) in workers.iter().zip(&repos) {
        assert_eq!(std::fs::read(repo.path().join("py-tabular/1/plugin.cwasm")).expect("the worker's copy has the artefact"), artefact);
        let compiled = std::fs::read_dir(worker.state.path().join("compiled")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(compiled, 0, "worker {} compiled the plugin", worker.announced);
    }
    serves_correctly(&client, "py-tabular").await;
    client.close().await;
}
