//! Python plugins for `tensorgate plugin build|check`: a folder with
//! `plugin.py` (using the `tensorgate_plugin` guest SDK, sdk/python-plugin)
//! is compiled to a component by componentize-py against the same WIT world
//! as Rust plugins. A build whose inputs (the plugin's and the SDK's `.py`
//! files, the WIT contract, the componentize-py version) are unchanged is
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The plugin contract, built into this binary: the component is built
/// against exactly the contract this tensorgate speaks.
const WIT: &str = include_str!("../../../../wit/tensorgate.wit");

/// The module componentize-py compiles (`plugin.py` in the plugin folder).
const MODULE: &str = "plugin";

/// The guest SDK in this tensorgate checkout.
pub(super) const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../python-plugin");

/// Whether `dir` holds a Python plugin (`plugin.py`, no `Cargo.toml`).
pub(super) fn is_python(dir: &Path) -> bool {
    dir.join("plugin.py").is_file() && !dir.join("Cargo.toml").exists()
}

/// The Python SDK to build against: `sdk`, else `$TENSORGATE_PYTHON_SDK`,
/// else this checkout's sdk/python-plugin.
pub(super) fn sdk_dir(sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match sdk {
        Some(s) => s.to_path_buf(),
        None => std::env::var_os("TENSORGATE_PYTHON_SDK").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SDK)),
    };
    let dir = dir.canonicalize().with_context(|| format!("Python plugin SDK not found at {} (give --sdk PATH/sdk/python-plugin)", dir.display()))?;
    if !dir.join("tensorgate_plugin/__init__.py").is_file() {
        bail!("{} is not the Python plugin SDK (no tensorgate_plugin/__init__.py); give --sdk PATH/sdk/python-plugin", dir.display());
    }
    Ok(dir)
}

/// componentize-py: `$TENSORGATE_COMPONENTIZE_PY`, else the one
/// scripts/setup installs in the cache's venv, else `componentize-py` on PATH.
fn componentize_py() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TENSORGATE_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = crate::install::cache_dir().map(|c| c.join("venv/bin/componentize-py")).filter(|p| p.is_file()) {
        return Ok(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("componentize-py"))
        .find(|p| p.is_file());
    on_path.context("componentize-py not found: run scripts/setup (it installs componentize-py 0.25.1 into ~/.cache/tensorgate/venv), or set TENSORGATE_COMPONENTIZE_PY")
}

/// The `.py` files under `dir` (not under `target/` or `__pycache__/`), sorted.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | "__pycache__" | "tests" | ".git") {
                sources(&path, out)?;
            }
        } else if name.ends_with(".py") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Builds the Python plugin in `dir` into `TARGET/python/plugin.wasm`
/// (TARGET: `target_dir`, default `DIR/target`), unless its inputs are
/// unchanged since the last build; returns the component.
pub(super) fn compile(dir: &Path, sdk: Option<&Path>, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let sdk = sdk_dir(sdk)?;
    let tool = componentize_py()?;
    let version = Command::new(&tool)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !version.status.success() {
        bail!("{} --version failed: {}", tool.display(), String::from_utf8_lossy(&version.stderr).trim());
    }
    let target = target_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.join("target"));
    let out_dir = std::path::absolute(target.join("python")).context("target directory")?;
    std::fs::create_dir_all(out_dir.join("wit")).with_context(|| format!("creating {}", out_dir.display()))?;
    let wasm = out_dir.join("plugin.wasm");
    let stamp = out_dir.join("plugin.wasm.inputs");

    let mut files = Vec::new();
    sources(dir, &mut files)?;
    let mut sdk_files = Vec::new();
    sources(&sdk, &mut sdk_files)?;
    let mut hash = Sha256::new();
    hash.update(WIT);
    hash.update(&version.stdout);
    for (base, f) in files.iter().map(|f| (dir, f)).chain(sdk_files.iter().map(|f| (sdk.as_path(), f))) {
        hash.update(f.strip_prefix(base).unwrap_or(f).to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let key = hex::encode(hash.finalize());
    if wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key) {
        let size = std::fs::metadata(&wasm)?.len();
        println!("{} is up to date ({size} bytes; sources unchanged)", wasm.display());
        return Ok(wasm);
    }

    std::fs::write(out_dir.join("wit/tensorgate.wit"), WIT).context("writing the WIT contract")?;
    let _ = std::fs::remove_file(&stamp);
    let start = std::time::Instant::now();
    let status = Command::new(&tool)
        .current_dir(dir)
        .arg("-d")
        .arg(out_dir.join("wit"))
        .args(["-w", "application", "componentize", MODULE, "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(&wasm)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-py failed ({status}) building {}/plugin.py", dir.display());
    }
    std::fs::write(&stamp, format!("{key}\n")).context("writing the build stamp")?;
    let size = std::fs::metadata(&wasm).with_context(|| format!("{} was not built", wasm.display()))?.len();
    println!("built {} ({size} bytes, {:.1} s)", wasm.display(), start.elapsed().as_secs_f64());
    Ok(wasm)
}
