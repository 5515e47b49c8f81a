//! Building a plugin into a component (a Rust crate for wasm32 with
//! Debian's rustc-web and build-std, or a Python plugin with
//! componentize-py), and `plugin build`: build, then with a repository
//! check and install the bundle through the one install flow.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::bundle::Bundle;
use super::python;

/// `plugin build`: builds the plugin in `dir`; with a repository, stages its
/// bundle there, checks it, and only then installs it as `REPO/NAME/VERSION`.
pub(super) fn build(dir: &Path, repository: Option<&Path>, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<()> {
    let wasm = compile(dir, target_dir, sdk)?;
    let Some(repo) = repository else { return Ok(()) };
    let bundle = Bundle::read(dir)?;
    crate::install::install(repo, &bundle.name, bundle.version, |staged| bundle.assemble(dir, &wasm, staged))?;
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
pub(super) fn compile(dir: &Path, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    if python::is_python(dir) {
        return python::compile(dir, sdk, target_dir);
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
