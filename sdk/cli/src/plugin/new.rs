//! `tensorgate plugin new NAME`: a plugin that builds and serves as is
//! (JSON features in, `{label: score}` out), from the templates in
//! `templates/`: a Rust crate against sdk/plugin, or a `plugin.py` against
//! sdk/python-plugin. Both share the manifest and the sample.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::python;

/// The language of a new plugin.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum Lang {
    /// A Rust crate built for wasm32 (sdk/plugin).
    Rust,
    /// A `plugin.py` built by componentize-py (sdk/python-plugin).
    Python,
}

/// The application's manifest (either language: a Python plugin's bundle
/// is the same; py-tabular runs in 16 MiB of linear memory, under its 64 MiB cap).
const MANIFEST: &str = include_str!("templates/manifest.toml.tmpl");
/// The sample item the manifest's `[warmup]` names.
const SAMPLE: &str = include_str!("templates/example.json");
const CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.tmpl");
/// Built by `tensorgate plugin build` (Debian rustc-web, -Zbuild-std for wasm32).
const CARGO_CONFIG: &str = include_str!("templates/rust/cargo-config.toml.tmpl");
const LIB_RS: &str = include_str!("templates/rust/lib.rs.tmpl");
const PLUGIN_PY: &str = include_str!("templates/python/plugin.py.tmpl");

/// A template with `{name}` and `{sdk}` filled in.
fn fill(template: &str, name: &str, sdk: &str) -> String {
    template.replace("{name}", name).replace("{sdk}", sdk)
}

/// Creates the plugin `dir/name` in `lang` against `sdk` (default: this
/// checkout's), and says what to do next.
pub(super) fn new(name: &str, dir: &Path, lang: Lang, sdk: Option<&Path>) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("plugin name `{name}` must be non-empty [A-Za-z0-9_-]");
    }
    let root = dir.join(name);
    let (sdk, edit, with_sdk) = match lang {
        Lang::Python => {
            let sdk = python::sdk_dir(sdk)?;
            let with_sdk = if sdk == Path::new(python::DEFAULT_SDK).canonicalize().unwrap_or_default() {
                String::new()
            } else {
                format!(" --sdk {}", sdk.display())
            };
            (sdk, "plugin.py", with_sdk)
        }
        Lang::Rust => (rust_sdk(sdk)?, "src/lib.rs", String::new()),
    };
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk_text = sdk.to_str().context("SDK path is not UTF-8")?;
    let mut files = vec![("manifest.toml", fill(MANIFEST, name, sdk_text)), ("samples/example.json", SAMPLE.to_string())];
    match lang {
        Lang::Python => files.push(("plugin.py", fill(PLUGIN_PY, name, sdk_text))),
        Lang::Rust => files.extend([
            ("Cargo.toml", fill(CARGO_TOML, name, sdk_text)),
            (".cargo/config.toml", CARGO_CONFIG.to_string()),
            ("src/lib.rs", fill(LIB_RS, name, sdk_text)),
        ]),
    }
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // Start from the SDK's pinned dependency versions (known to build with rustc-web).
    if matches!(lang, Lang::Rust) && sdk.join("Cargo.lock").exists() {
        std::fs::copy(sdk.join("Cargo.lock"), root.join("Cargo.lock")).context("copying the SDK's Cargo.lock")?;
    }
    let root = root.display();
    println!("created {root}: put your TorchScript model at {root}/model.pt, edit manifest.toml, {edit} and samples/,");
    println!("then: tensorgate plugin check {root}{with_sdk} (runs the samples), tensorgate plugin build {root}{with_sdk} --repository REPO");
    Ok(())
}

/// The Rust plugin SDK: `sdk`, else this checkout's sdk/plugin.
fn rust_sdk(sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin")));
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("plugin SDK not found at {} (give --sdk PATH/sdk/plugin)", sdk.display()))?;
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} is not the plugin SDK (no Cargo.toml); give --sdk PATH/sdk/plugin", sdk.display());
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_of_the_templates_is_filled() {
        for template in [MANIFEST, SAMPLE, CARGO_TOML, CARGO_CONFIG, LIB_RS, PLUGIN_PY] {
            let filled = fill(template, "my-net", "/sdk");
            assert!(!filled.contains("{name}") && !filled.contains("{sdk}"), "{filled}");
        }
        assert!(fill(CARGO_TOML, "my-net", "/sdk").contains("tensorgate-plugin = { path = \"/sdk\" }"));
        assert!(fill(MANIFEST, "my-net", "/sdk").contains("name = \"my-net\""));
        // The manifest's warm-up item is the sample the template writes.
        assert!(MANIFEST.contains("file = \"samples/example.json\""));
    }
}
