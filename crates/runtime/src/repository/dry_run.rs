//! A bundle checked as a host would check it before serving, and its
//! samples run, with nothing installed: `tensorgate-host check DIR`, which
//! `tensorgate plugin check` and `plugin build` call.

use std::path::Path;

use super::error::LoadError;
use tensorgate_server::manifest::Manifest;

/// One sample's outcome in [`bundle`]: its file and the plugin's output or the item's failure.
pub type Checked = (String, Result<crate::plugin::Output, tensorgate_server::request::ItemFailure>);

/// Checks the bundle in `dir` as a host would before serving it (every
/// check above), then runs its `[warmup]` item and each file under
/// `samples/` (at most `check::MAX_SAMPLES`) and returns what each gave. Errors name the
/// bundle's own files. Nothing is installed. With `precompile`, the
/// plugin's precompiled artefact is written into the bundle (beside the
/// plugin, `plugin.cwasm`; kept when it is valid already), so that hosts
/// load it without compiling (crate::plugin::precompiled).
pub fn bundle(dir: &Path, config: &crate::config::HostConfig, precompile: bool) -> Result<Vec<Checked>, LoadError> {
    let manifest = Manifest::load(dir).map_err(|e| super::build::in_bundle(e.into(), dir))?;
    // Where it would live in a repository (only the names matter here).
    let home = dir.join(".check").join(&manifest.name).join(manifest.version.to_string());
    // Cached only where the config names a cache (`--check` with
    // TENSORGATE_COMPILE_CACHE set, as `tensorgate plugin build` does).
    let engine = crate::plugin::PluginEngine::new(config.compile_cache.clone())?.writing_artefacts(precompile);
    let app = super::build::prepare(dir, &home, &engine, config)?;
    // The warm-up item (with its metadata), then every file under samples/
    // (the warm-up's own file once).
    let mut items: Vec<(String, String, std::collections::BTreeMap<String, String>)> = Vec::new();
    if let Some(w) = &app.manifest.warmup {
        items.push((w.file.clone(), w.content_type.clone(), w.metadata.clone()));
    }
    for path in super::check::samples(dir) {
        let file = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        if items.iter().any(|(f, _, _)| Path::new(f) == Path::new(&file)) {
            continue;
        }
        items.push((file, tensorgate_client::content_type_for(&path).to_string(), Default::default()));
    }
    let mut out = Vec::new();
    for (file, content_type, metadata) in items {
        let data = std::fs::read(dir.join(&file)).map_err(|e| LoadError::Check { file: file.clone(), message: e.to_string() })?;
        out.push((file, crate::pipeline::run_sample(&app, data, &content_type, &metadata)));
    }
    Ok(out)
}

