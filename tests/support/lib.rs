//! Shared helpers for the end-to-end tests: a real host on 127.0.0.1 with an
//! ephemeral port, serving the repository that `scripts/setup` assembled.

use std::path::PathBuf;

use tensorgate_client::{Client, Trust};
use tensorgate_runtime::{Host, HostConfig, RunningHost};

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository built by `scripts/build-plugins` (or `$TENSORGATE_REPO`).
pub fn repository() -> PathBuf {
    let repo = std::env::var_os("TENSORGATE_REPO").map(PathBuf::from).unwrap_or_else(|| root().join("target/repository"));
    assert!(
        repo.join("tabular/1/plugin.wasm").exists(),
        "{} has no built plugins: run scripts/setup (or scripts/build-plugins) first",
        repo.display()
    );
    repo
}

/// A host serving on loopback; stops when dropped via [`TestHost::stop`].
pub struct TestHost {
    /// The serving host.
    pub host: RunningHost,
    _state: tempfile::TempDir,
}

impl TestHost {
    /// Starts a host on 127.0.0.1:0 over `repo`, with `tweak` applied to its config.
    pub async fn start_with(repo: PathBuf, tweak: impl FnOnce(&mut HostConfig) + Send + 'static) -> TestHost {
        let state = tempfile::tempdir().expect("temp dir");
        let mut config = HostConfig::new(repo, state.path());
        config.front.listen = "127.0.0.1:0".parse().expect("addr");
        config.intra_op_threads = 1;
        tweak(&mut config);
        let host = tokio::task::spawn_blocking(move || Host::load(config))
            .await
            .expect("load task")
            .expect("host loads");
        TestHost { host: host.serve().expect("host serves"), _state: state }
    }

    /// Starts a host over the standard repository, every bundle of which must load.
    pub async fn start() -> TestHost {
        let host = Self::start_with(repository(), |_| {}).await;
        let failures = host.host.repository().failures();
        assert!(failures.is_empty(), "bundles failed to load: {failures:#?}");
        host
    }

    /// A client that pins this host's certificate.
    pub async fn client(&self) -> Client {
        Client::connect(self.host.addr(), Trust::Fingerprint(self.host.fingerprint().to_string()))
            .await
            .expect("client connects")
    }

    /// Shuts the host down.
    pub async fn stop(self) {
        self.host.shutdown().await;
    }
}

/// A copy of the standard repository in a temporary directory, with
/// `edit(app_name, manifest_text)` applied to each manifest.
pub fn repository_with(edit: impl Fn(&str, &mut String)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temp dir");
    let src = repository();
    for app in std::fs::read_dir(&src).expect("repository") {
        let app = app.expect("entry").path();
        let name = app.file_name().expect("name").to_string_lossy().into_owned();
        for version in std::fs::read_dir(&app).expect("app dir") {
            let version = version.expect("entry").path();
            let dest = copy.path().join(&name).join(version.file_name().expect("version"));
            copy_dir(&version, &dest);
            let manifest = dest.join("manifest.toml");
            let mut text = std::fs::read_to_string(&manifest).expect("manifest");
            edit(&name, &mut text);
            std::fs::write(&manifest, text).expect("write manifest");
        }
    }
    copy
}

/// Copies the directory tree `src` to `dest`.
pub fn copy_dir(src: &std::path::Path, dest: &std::path::Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = dest.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A stand-alone copy of the built `tabular` bundle as version `version`,
/// with `edit` applied to its manifest, in `parent/NAME` (returned).
pub fn tabular_bundle(parent: &std::path::Path, dir_name: &str, version: u64, edit: impl Fn(&mut String)) -> PathBuf {
    let dest = parent.join(dir_name);
    copy_dir(&repository().join("tabular/1"), &dest);
    let manifest = dest.join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text = text.replacen("version = 1", &format!("version = {version}"), 1);
    edit(&mut text);
    std::fs::write(&manifest, text).expect("write manifest");
    dest
}

/// Resident set size of this process, in bytes (Linux). Panics when it
/// cannot be read, so that a memory test can never pass on a zero.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm readable (memory tests need it)");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm has a resident field");
    assert!(pages > 0, "resident set size read as 0 pages: {statm}");
    pages * 4096
}

/// The standard repository plus the test-only `slow` application
/// (`tests/apps/slow`: a deliberately slow model behind the generic tensors plugin).
pub fn repository_with_slow() -> tempfile::TempDir {
    let repo = repository_with(|_, _| {});
    let dir = repo.path().join("slow/1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["manifest.toml", "model.pt"] {
        std::fs::copy(root().join("tests/apps/slow").join(f), dir.join(f)).expect("copy slow app");
    }
    std::fs::copy(repo.path().join("multi-io/1/plugin.wasm"), dir.join("plugin.wasm")).expect("copy tensors plugin");
    repo
}

/// The built wasm component of guest crate `crate_name` (e.g. `hostile_plugin`).
pub fn built_plugin(crate_name: &str) -> PathBuf {
    let wasm = root().join("target/plugins/wasm32-unknown-unknown/release").join(format!("{crate_name}.wasm"));
    assert!(wasm.exists(), "{} not built: run scripts/build-plugins", wasm.display());
    wasm
}

/// The standard repository plus the test-only `hostile` application
/// (`tests/plugins/hostile`: a plugin that misbehaves on request, in front of
/// the tabular model).
pub fn repository_with_hostile() -> tempfile::TempDir {
    let repo = repository_with(|_, _| {});
    let dir = repo.path().join("hostile/1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(root().join("tests/plugins/hostile/manifest.toml"), dir.join("manifest.toml")).expect("manifest");
    std::fs::copy(repo.path().join("tabular/1/model.pt"), dir.join("model.pt")).expect("model");
    std::fs::copy(built_plugin("hostile_plugin"), dir.join("plugin.wasm")).expect("plugin");
    repo
}
pub mod canary;
pub mod cluster;

/// The sparse `.npz` layout (`pixels`, `values`, `shape`) of `p` and `values`.
pub fn sparse_npz(p: &tensorgate_plugin::sparse::Pixels, values: &[f32]) -> Vec<u8> {
    use tensorgate_plugin::Tensor;
    tensorgate_plugin::npy::write_npz(&[
        ("pixels".into(), p.coords().expect("coords")),
        ("values".into(), Tensor::from_slice(&[values.len() as u64], values).expect("values")),
        ("shape".into(), Tensor::from_slice(&[2], &[p.height as i64, p.width as i64]).expect("shape")),
    ])
}

/// The LArTPC sample plane's pixels above the threshold of 10, in a
/// scrambled order, as a sparse `.npz`, with the PyTorch pipeline's scores
/// for them in that order (plugins/lartpc-dense/reference.npz, 3 per pixel).
pub struct ScrambledPixels {
    /// The item: `sparse_npz` of the scrambled pixels.
    pub npz: Vec<u8>,
    /// How many pixels.
    pub n: usize,
    /// The reference scores, row i for scrambled pixel i.
    pub want: Vec<f32>,
}

/// See [`ScrambledPixels`].
pub fn scrambled_sample_pixels() -> ScrambledPixels {
    use tensorgate_plugin::npy::parse_npz;
    use tensorgate_plugin::sparse::Pixels;
    use tensorgate_plugin::Tensor;
    let bytes = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).expect("sample");
    let (pixels, values) = Pixels::from_npz(parse_npz(&bytes).expect("npz")).expect("sparse sample");
    let dense = pixels.to_dense(&values).expect("dense").to_f32().expect("f32");
    let plane = Tensor::from_slice(&[pixels.height as u64, pixels.width as u64], &dense).expect("plane");
    let r = parse_npz(&std::fs::read(root().join("plugins/lartpc-dense/reference.npz")).expect("reference")).expect("npz");
    let get = |n: &str| r.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone()).expect(n);
    let (want_pixels, want_scores) = (get("pixels").view::<i32>().expect("i32").into_owned(), get("scores").view::<f32>().expect("f32").into_owned());
    let (above, above_values) = Pixels::above(&plane, 10.0).expect("above");
    let above_values = above_values.to_f32().expect("f32");
    let n = above.len();
    let order: Vec<usize> = (0..n).map(|i| (i * 7919 + 13) % n).collect();
    assert_eq!(order.iter().collect::<std::collections::HashSet<_>>().len(), n, "a permutation");
    let pick = |v: &[u32]| order.iter().map(|&i| v[i]).collect::<Vec<u32>>();
    let shuffled = Pixels::new(pixels.height, pixels.width, pick(&above.rows), pick(&above.cols)).expect("pixels");
    let values: Vec<f32> = order.iter().map(|&i| above_values[i]).collect();
    let mut want = Vec::with_capacity(3 * n);
    for &i in &order {
        // Reference rows are in row-major pixel order, as `above` is.
        assert_eq!((want_pixels[2 * i] as u32, want_pixels[2 * i + 1] as u32), (above.rows[i], above.cols[i]));
        want.extend_from_slice(&want_scores[3 * i..3 * i + 3]);
    }
    ScrambledPixels { npz: sparse_npz(&shuffled, &values), n, want }
}

/// Clients that keep predicting on a host until stopped; every request and
/// every item of it must succeed (a failure panics its task, and `stop`
/// reports it).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    items: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    /// `clients` connections, each submitting `make()` to `app` in a loop.
    pub async fn start(host: &TestHost, clients: usize, app: &'static str, make: fn() -> Vec<tensorgate_client::Input>) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let items = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = host.client().await;
            let (stop, items) = (stop.clone(), items.clone());
            tasks.push(tokio::spawn(async move {
                let mut requests = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch = make();
                    let n = batch.len() as u64;
                    let reply = client.predict(tensorgate_client::Submission::new(app, batch)).await.expect("request succeeds under load");
                    assert_eq!(reply.summary.ok as u64, n, "every item ok: {:?}", reply.outcomes.iter().find(|o| o.is_err()));
                    items.fetch_add(n, Ordering::Relaxed);
                    requests += 1;
                }
                client.close().await;
                requests
            }));
        }
        Load { stop, items, tasks }
    }

    /// Stops the clients; returns (requests, items) they got back whole.
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut requests = 0;
        for task in self.tasks {
            requests += task.await.expect("a load client failed");
        }
        (requests, self.items.load(std::sync::atomic::Ordering::Relaxed))
    }
}
