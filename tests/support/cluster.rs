//! Real processes for the cluster tests: a `nats-server` with JetStream on
//! 127.0.0.1 (ephemeral port, store in a temp dir), and `tensorgate-host`
//! workers and gateways. Every process is killed when its handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tensorgate_client::{Client, Trust};

use crate::root;

/// The `nats-server` binary that `scripts/setup` installed.
pub fn nats_server() -> PathBuf {
    let bin = std::env::var_os("NATS_SERVER").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/tensorgate/bin/nats-server-2.15.1")
    });
    assert!(bin.exists(), "{} missing: run scripts/setup", bin.display());
    bin
}

/// Where the release binaries are: beside this test executable's folder
/// (`TARGET/release/deps/..`, so that a `CARGO_TARGET_DIR` is followed),
/// else `target/release`.
pub fn release_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|dir| dir.join("tensorgate-host").exists())
        .unwrap_or_else(|| root().join("target/release"))
}

/// The release `tensorgate-host` binary.
pub fn host_binary() -> PathBuf {
    let bin = release_dir().join("tensorgate-host");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// The release `tensorgate-gateway` binary.
pub fn gateway_binary() -> PathBuf {
    let bin = release_dir().join("tensorgate-gateway");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// Waits until `path` exists (a process announcing itself), or panics after `limit`.
pub fn wait_for_file(path: &Path, limit: Duration, what: &str, child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before it was ready");
        }
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JetStream engine on loopback.
pub struct Engine {
    child: Option<Child>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    conf: String,
}

impl Engine {
    /// Starts an engine on a free port (64 MB message limit, as a cluster
    /// carrying detector planes would set).
    pub fn start() -> Engine {
        Self::start_with(&[])
    }

    /// Starts an engine with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Engine {
        Self::start_conf(extra, "max_payload: 67108864\n")
    }

    /// Starts an engine with this configuration file text.
    pub fn start_conf(extra: &[&str], conf: &str) -> Engine {
        let dir = tempfile::tempdir().expect("engine dir");
        let port = free_port();
        let mut engine = Engine {
            child: None,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            conf: conf.to_string(),
        };
        engine.spawn();
        engine
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("engine.conf");
        std::fs::write(&conf, &self.conf).expect("engine conf");
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("-c")
            .arg(&conf)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "engine did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the engine (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the engine (SIGKILL) and starts it again on the same port and store.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One `tensorgate-host` process (worker or gateway).
pub struct Proc {
    child: Option<Child>,
    /// Its state directory.
    pub state: tempfile::TempDir,
    /// Worker id, or the gateway's address.
    pub announced: String,
}

impl Proc {
    /// The command that starts a worker serving `repo` on `engine`.
    pub fn worker_command(engine: &Engine, repo: &Path, state: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(host_binary());
        cmd.args(["worker", "--nats", &engine.url, "--threads", "1", "--heartbeat-ms", "200", "--redeliver-after-ms", "1000"])
            .arg("--repository")
            .arg(repo)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .env("RUST_LOG", "warn");
        cmd
    }

    /// A worker serving `repo`, pulling from `engine`, with `extra` arguments.
    pub fn worker(engine: &Engine, repo: &Path, extra: &[&str]) -> Proc {
        Self::worker_in(engine, repo, tempfile::tempdir().expect("worker state"), extra)
    }

    /// A worker keeping its state in `state` (a restart: another worker there before).
    pub fn worker_in(engine: &Engine, repo: &Path, state: tempfile::TempDir, extra: &[&str]) -> Proc {
        let _ = std::fs::remove_file(state.path().join("worker"));
        let mut child = Self::worker_command(engine, repo, state.path(), extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("worker starts");
        let id = wait_for_file(&state.path().join("worker"), Duration::from_secs(60), "worker", &mut child);
        Proc { child: Some(child), state, announced: id }
    }

    /// A gateway on 127.0.0.1:0 in front of `engine` (the slim
    /// `tensorgate-gateway` binary: it links neither libtorch nor wasmtime).
    pub fn gateway(engine: &Engine, extra: &[&str]) -> Proc {
        Self::gateway_with(engine, extra, Stdio::inherit(), "warn")
    }

    /// A gateway whose log (at `info`) goes to the file `log`.
    pub fn gateway_logging(engine: &Engine, extra: &[&str], log: &Path) -> Proc {
        let file = std::fs::File::create(log).expect("log file");
        Self::gateway_with(engine, extra, Stdio::from(file), "info")
    }

    fn gateway_with(engine: &Engine, extra: &[&str], stderr: Stdio, level: &str) -> Proc {
        let state = tempfile::tempdir().expect("gateway state");
        let mut child = Command::new(gateway_binary())
            .args(["--nats", &engine.url, "--listen", "127.0.0.1:0", "--heartbeat-ms", "200"])
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("gateway starts");
        let addr = wait_for_file(&state.path().join("listening"), Duration::from_secs(30), "gateway", &mut child);
        Proc { child: Some(child), state, announced: addr }
    }

    /// Its state directory, taken (for a restart in the same one).
    pub fn take_state(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.state, tempfile::tempdir().expect("temp dir"))
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.announced.parse().expect("gateway address")
    }

    /// How a client reaches and trusts this gateway.
    pub fn target(&self) -> (SocketAddr, tensorgate_client::ConnectOptions) {
        let fp = std::fs::read_to_string(self.state.path().join("fingerprint")).expect("fingerprint");
        (self.addr(), tensorgate_client::ConnectOptions::new(Trust::Fingerprint(fp)))
    }

    /// A client pinning this gateway's certificate.
    pub async fn client(&self) -> Client {
        let fp = std::fs::read_to_string(self.state.path().join("fingerprint")).expect("fingerprint");
        Client::connect(self.addr(), Trust::Fingerprint(fp)).await.expect("client connects to the gateway")
    }

    /// SIGKILL: no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit (up to `limit`); returns whether it exited cleanly.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A repository holding only the named applications of the standard one.
pub fn repository_of(apps: &[&str]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("repo dir");
    for app in apps {
        crate::copy_dir(&crate::repository().join(app), &repo.path().join(app));
    }
    repo
}
