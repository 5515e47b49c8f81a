//! What a plugin's manifest says its bundle holds, and assembling those
//! files (with the built component) into a bundle folder.

use std::path::Path;

use anyhow::{bail, Context};

/// What a plugin crate's manifest says its bundle holds.
pub(super) struct Bundle {
    /// Application name.
    pub(super) name: String,
    /// Version.
    pub(super) version: u64,
    /// `[model] file` (default `model.pt`), `[plugin] file` (default `plugin.wasm`), `[warmup] file`.
    model: String,
    plugin: String,
    warmup: Option<String>,
}

impl Bundle {
    /// Reads `dir/manifest.toml`.
    pub(super) fn read(dir: &Path) -> anyhow::Result<Bundle> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let t: toml::Table = text.parse().with_context(|| format!("{}", path.display()))?;
        let text_of = |section: &str, key: &str| t.get(section).and_then(|s| s.get(key)).and_then(|v| v.as_str()).map(str::to_string);
        let name = t.get("name").and_then(|v| v.as_str()).with_context(|| format!("{}: no `name`", path.display()))?.to_string();
        let version = t.get("version").and_then(|v| v.as_integer()).with_context(|| format!("{}: no `version`", path.display()))?;
        let version = u64::try_from(version).with_context(|| format!("{}: `version` {version} is negative", path.display()))?;
        Ok(Bundle {
            name,
            version,
            model: text_of("model", "file").unwrap_or_else(|| "model.pt".into()),
            plugin: text_of("plugin", "file").unwrap_or_else(|| "plugin.wasm".into()),
            warmup: text_of("warmup", "file"),
        })
    }

    /// Copies the bundle's files from the crate `dir` (and the built `wasm`) into `dest`.
    pub(super) fn assemble(&self, dir: &Path, wasm: &Path, dest: &Path) -> anyhow::Result<()> {
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
