//! `tensorgate plugin new|build|check`: scaffold a plugin from a template
//! and build it into a component — a Rust crate for wasm32 with the right
//! toolchain (Debian's rustc-web with build-std), or a Python plugin with
//! componentize-py (`python.rs`); see docs/writing-a-plugin.md — optionally
//! installing it as a bundle `REPO/NAME/VERSION/{manifest.toml, model.pt,
//! plugin.wasm}`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// `tensorgate plugin ...`
#[derive(Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin DIR/NAME from the template (a JSON-features-in,
    /// {label: score}-out plugin that builds and serves as is): a Rust crate,
    /// or with `--lang python` a folder with `plugin.py`.
    New {
        /// Application and crate name ([A-Za-z0-9_-]).
        name: String,
        /// Folder to create the plugin in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The plugin's language.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// The tensorgate plugin SDK: sdk/plugin (Rust) or sdk/python-plugin
        /// (Python) of a tensorgate checkout; default: this checkout's.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR if needed, then check it as a host
    /// would before serving it (the manifest against the model and plugin)
    /// and run each sample (`samples/`, or the `[warmup]` item) through
    /// plugin and model, printing each output or error. Needs no host.
    Check {
        /// The plugin crate (or Python plugin folder).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Target directory (default: DIR/target).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Python plugins: the Python SDK (default: $TENSORGATE_PYTHON_SDK, else this checkout's sdk/python-plugin).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR into a component (a Rust crate for wasm32, or
    /// a Python plugin with componentize-py, skipped when its sources are
    /// unchanged) and, with
    /// --repository, check the bundle (as `plugin check`) and install it:
    /// the manifest, the model file it names, the plugin, `samples/` and
    /// the `[warmup]` file.
    Build {
        /// The plugin crate.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Model repository to install the bundle into (REPO/NAME/VERSION/).
        #[arg(long)]
        repository: Option<PathBuf>,
        /// Target directory (default: DIR/target); share one to reuse the wasm32 std build.
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Python plugins: the Python SDK (default: $TENSORGATE_PYTHON_SDK, else this checkout's sdk/python-plugin).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// The language of a new plugin.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Lang {
    /// A Rust crate built for wasm32 (sdk/plugin).
    Rust,
    /// A `plugin.py` built by componentize-py (sdk/python-plugin).
    Python,
}

/// Runs a `plugin` subcommand (no host connection needed).
pub fn main(args: &PluginArgs) -> ExitCode {
    let result = match &args.command {
        PluginCommand::New { name, dir, lang, sdk } => new(name, dir, *lang, sdk.as_deref()),
        PluginCommand::Build { dir, repository, target_dir, sdk } => build(dir, repository.as_deref(), target_dir.as_deref(), sdk.as_deref()),
        PluginCommand::Check { dir, target_dir, sdk } => check(dir, target_dir.as_deref(), sdk.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
tensorgate-plugin = { path = "{sdk}" }
serde = { version = "1", default-features = false, features = ["derive", "std"] }

[profile.release]
lto = true
codegen-units = 1
panic = "abort"
strip = true
opt-level = 3

# A workspace of its own: guests build with a different cargo than the host.
[workspace]
"#;

const CARGO_CONFIG: &str = r#"# Built by `tensorgate plugin build` (Debian rustc-web, -Zbuild-std for wasm32).
[build]
target = "wasm32-unknown-unknown"

[target.wasm32-unknown-unknown]
linker = "/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"
rustflags = ["-C", "link-arg=--wasm-ld-path=/usr/bin/wasm-ld-22"]

[unstable]
build-std = ["std", "panic_abort"]
"#;

pub(crate) const MANIFEST: &str = r#"# The application's manifest: see docs/manifest.md for every field.
name = "{name}"
version = 1
description = "{name}: JSON features in, {label: score} out"
# One label per model output column, in order.
labels = ["class_0", "class_1"]

[model]
file = "model.pt"
device = "auto"

[plugin]
file = "plugin.wasm"
timeout_ms = 1000
memory_mb = 64

[[inputs]]
name = "features"
dtype = "f32"
shape = [-1, 2]     # the model's input width

[params]

# Run through plugin and model before a version serves (a mismatch fails the
# upload, not every item); keep it a real item for your network.
[warmup]
file = "samples/example.json"
"#;

pub(crate) const SAMPLE: &str = r#"{"features": [0.5, -0.5]}
"#;

const LIB_RS: &str = r#"//! {name}: `{"features": [f32, ...]}` in, `{label: score}` out.
//! Edit `preprocess` and `postprocess` for your network; the SDK
//! (tensorgate_plugin) has helpers for NumPy files, images, sparse pixels,
//! tiling and stitching, labels and metadata.

use serde::Deserialize;
use tensorgate_plugin::prelude::*;

struct App {
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    features: Vec<f32>,
}

impl Plugin for App {
    fn describe() -> PluginInfo {
        PluginInfo::new("{name}", "JSON features in, {label: score} out")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/json"])
    }

    /// Reads the manifest once per instance: bad `[params]` fail the load here.
    fn configure(manifest: &Manifest) -> Result<Self, PluginError> {
        Ok(App { labels: manifest.labels.clone() })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let req: Request = item.json()?;
        let n = req.features.len() as u64;
        Ok(Prepared::new(vec![Tensor::from_f32(&[1, n], &req.features)?]))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let scores = out.tensor(0)?.to_f32()?;
        Output::json(&tensorgate_plugin::labels::scores_map(&self.labels, &scores)?)
    }
}

export_plugin!(App);
"#;

fn fill(template: &str, name: &str, sdk: &str) -> String {
    template.replace("{name}", name).replace("{sdk}", sdk)
}

fn new(name: &str, dir: &Path, lang: Lang, sdk: Option<&Path>) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("plugin name `{name}` must be non-empty [A-Za-z0-9_-]");
    }
    if let Lang::Python = lang {
        let sdk = crate::python::sdk_dir(sdk)?;
        let root = dir.join(name);
        if root.exists() {
            bail!("{} already exists", root.display());
        }
        crate::python::new(name, &root)?;
        let with_sdk = if sdk == Path::new(crate::python::DEFAULT_SDK).canonicalize().unwrap_or_default() {
            String::new()
        } else {
            format!(" --sdk {}", sdk.display())
        };
        println!("created {}: put your TorchScript model at {}/model.pt, edit manifest.toml, plugin.py and samples/,", root.display(), root.display());
        println!("then: tensorgate plugin check {}{with_sdk} (runs the samples), tensorgate plugin build {}{with_sdk} --repository REPO", root.display(), root.display());
        return Ok(());
    }
    let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin")));
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("plugin SDK not found at {} (give --sdk PATH/sdk/plugin)", sdk.display()))?;
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} is not the plugin SDK (no Cargo.toml); give --sdk PATH/sdk/plugin", sdk.display());
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk_text = sdk.to_str().context("SDK path is not UTF-8")?;
    let files = [
        ("Cargo.toml", fill(CARGO_TOML, name, sdk_text)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        ("manifest.toml", fill(MANIFEST, name, sdk_text)),
        ("src/lib.rs", fill(LIB_RS, name, sdk_text)),
        ("samples/example.json", SAMPLE.to_string()),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("has a parent")).with_context(|| format!("creating {}", root.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // Start from the SDK's pinned dependency versions (known to build with rustc-web).
    if sdk.join("Cargo.lock").exists() {
        std::fs::copy(sdk.join("Cargo.lock"), root.join("Cargo.lock")).context("copying the SDK's Cargo.lock")?;
    }
    println!("created {}: put your TorchScript model at {}/model.pt, edit manifest.toml, src/lib.rs and samples/,", root.display(), root.display());
    println!("then: tensorgate plugin check {} (runs the samples), tensorgate plugin build {} --repository REPO", root.display(), root.display());
    Ok(())
}

/// Value of a top-level `key = value` line (before any table) of a TOML file.
fn toml_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.split('#').next().unwrap_or("").trim().trim_matches('"').to_string())
}

/// Builds the plugin in `dir` (a Rust crate for wasm32, or a Python
/// plugin); returns the component.
fn compile(dir: &Path, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    if crate::python::is_python(dir) {
        return crate::python::compile(dir, sdk, target_dir);
    }
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml"))
        .with_context(|| format!("{} is not a plugin (no Cargo.toml, no plugin.py)", dir.display()))?;
    let package = cargo_toml.split("[package]").nth(1).context("Cargo.toml has no [package]")?;
    let crate_name = toml_value(package, "name").context("Cargo.toml [package] has no name")?;
    for tool in ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: install Debian's rustc-web toolchain (scripts/setup does)");
        }
    }
    // The rustup proxies usually come first on PATH: name Debian's tools, and
    // drop settings an outer cargo may have exported.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(dir).args(["build", "--release"]);
    for var in ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    cmd.env("PATH", path).env("RUSTC", "/usr/bin/rustc").env("RUSTDOC", "/usr/bin/rustdoc").env("RUSTC_BOOTSTRAP", "1");
    let target = match target_dir {
        Some(t) => {
            // cargo runs in DIR: make a relative target directory absolute first.
            let t = std::path::absolute(t).with_context(|| format!("target directory {}", t.display()))?;
            cmd.arg("--target-dir").arg(&t);
            t
        }
        None => dir.join("target"),
    };
    let status = cmd.status().context("running /usr/bin/cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let wasm = target.join("wasm32-unknown-unknown/release").join(format!("{}.wasm", crate_name.replace('-', "_")));
    let size = std::fs::metadata(&wasm).with_context(|| format!("{} was not built", wasm.display()))?.len();
    println!("built {} ({size} bytes)", wasm.display());
    Ok(wasm)
}

/// Builds the crate in `dir`; with a repository, assembles its bundle,
/// checks it, and only then moves it into `REPO/NAME/VERSION`.
fn build(dir: &Path, repository: Option<&Path>, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<()> {
    let wasm = compile(dir, target_dir, sdk)?;
    let Some(repo) = repository else { return Ok(()) };
    let bundle = Bundle::read(dir)?;
    let staged = repo.join(format!(".build-{}-{}", bundle.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    bundle.assemble(dir, &wasm, &staged)?;
    if let Err(e) = run_check(&staged) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.context("not installed"));
    }
    let dest: PathBuf = repo.join(&bundle.name).join(&bundle.version);
    std::fs::create_dir_all(repo.join(&bundle.name)).with_context(|| format!("creating {}", repo.join(&bundle.name).display()))?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staged, &dest).with_context(|| format!("moving the bundle to {}", dest.display()))?;
    println!("installed {}", dest.display());
    Ok(())
}

/// `plugin check`: build, assemble the bundle in the target directory, check it.
fn check(dir: &Path, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<()> {
    let wasm = compile(dir, target_dir, sdk)?;
    let bundle = Bundle::read(dir)?;
    let staged = target_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.join("target")).join("check-bundle");
    let _ = std::fs::remove_dir_all(&staged);
    bundle.assemble(dir, &wasm, &staged)?;
    run_check(&staged)
}

/// What a plugin crate's manifest says its bundle holds.
struct Bundle {
    name: String,
    version: String,
    /// `[model] file` (default `model.pt`), `[plugin] file` (default `plugin.wasm`), `[warmup] file`.
    model: String,
    plugin: String,
    warmup: Option<String>,
}

impl Bundle {
    fn read(dir: &Path) -> anyhow::Result<Bundle> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let t: toml::Table = text.parse().with_context(|| format!("{}", path.display()))?;
        let text_of = |section: &str, key: &str| t.get(section).and_then(|s| s.get(key)).and_then(|v| v.as_str()).map(str::to_string);
        let name = t.get("name").and_then(|v| v.as_str()).with_context(|| format!("{}: no `name`", path.display()))?.to_string();
        let version = t.get("version").and_then(|v| v.as_integer()).with_context(|| format!("{}: no `version`", path.display()))?;
        Ok(Bundle {
            name,
            version: version.to_string(),
            model: text_of("model", "file").unwrap_or_else(|| "model.pt".into()),
            plugin: text_of("plugin", "file").unwrap_or_else(|| "plugin.wasm".into()),
            warmup: text_of("warmup", "file"),
        })
    }

    /// Copies the bundle's files from the crate `dir` (and the built `wasm`) into `dest`.
    fn assemble(&self, dir: &Path, wasm: &Path, dest: &Path) -> anyhow::Result<()> {
        let model = dir.join(&self.model);
        if !model.exists() {
            bail!("{} is missing (the manifest's [model] file): export your TorchScript model there (torch.jit.script(m).save(...))", model.display());
        }
        let mut files = vec![(dir.join("manifest.toml"), dest.join("manifest.toml")), (model, dest.join(&self.model)), (wasm.to_path_buf(), dest.join(&self.plugin))];
        if let Some(w) = &self.warmup {
            let from = dir.join(w);
            if !from.is_file() {
                bail!("{} is missing (the manifest's [warmup] file)", from.display());
            }
            files.push((from, dest.join(w)));
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("samples")) {
            for e in entries.flatten().filter(|e| e.path().is_file()) {
                files.push((e.path(), dest.join("samples").join(e.file_name())));
            }
        }
        for (from, to) in files {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

/// Runs `tensorgate-host --check BUNDLE` (found beside this binary),
/// passing its output through; an error if the bundle fails.
pub(crate) fn run_check(bundle: &Path) -> anyhow::Result<()> {
    let host = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("tensorgate-host")))
        .filter(|p| p.is_file())
        .context("tensorgate-host is not beside this tensorgate binary: it runs the check")?;
    let mut cmd = Command::new(&host);
    // Compiled plugins are cached across checks (a Python component takes
    // seconds to compile), unless the caller chose a cache.
    if std::env::var_os("TENSORGATE_COMPILE_CACHE").is_none() {
        let cache = std::env::var_os("TENSORGATE_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorgate")));
        if let Some(c) = cache {
            cmd.env("TENSORGATE_COMPILE_CACHE", c.join("compiled-plugins"));
        }
    }
    let status = cmd.arg("--check").arg(bundle).status().with_context(|| format!("running {}", host.display()))?;
    if !status.success() {
        bail!("the bundle failed its check (above)");
    }
    Ok(())
}
