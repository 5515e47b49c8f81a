//! Building an application version from a bundle directory: manifest,
//! plugin (compiled, instantiated, `describe()`d), model, and the checks
//! before it can serve ([`super::check`]: labels against outputs; the
//! warm-up item, the samples, or a synthetic input through the model).
//! Nothing is visible to clients until this returns.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::application::{Application, Counters, Stamp};
use crate::config::HostConfig;
use crate::executor::ModelExecutor;
use crate::plugin::PluginEngine;
use tensorgate_server::manifest::Manifest;

pub use super::error::LoadError;

/// Loads the bundle in `dir`, which must sit at `REPO/NAME/VERSION`.
pub fn load(dir: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Arc<Application>, LoadError> {
    prepare(dir, dir, engine, config)
}

/// Like [`load`], for a bundle read from `dir` that will live at `home`
/// (`REPO/NAME/VERSION`): an upload is prepared in staging and renamed into
/// place only once it is ready.
pub fn prepare(dir: &Path, home: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Arc<Application>, LoadError> {
    build(dir, home, engine, config).map_err(|e| match dir == home {
        true => e,
        false => in_bundle(e, dir),
    })
}

/// `e` with the paths under `dir` (a staging directory) made relative to
/// the bundle, as its author knows them.
pub fn in_bundle(e: LoadError, dir: &Path) -> LoadError {
    let text = e.to_string();
    let prefix = dir.display().to_string();
    LoadError::InBundle(text.replace(&format!("{prefix}/"), "").replace(&prefix, "the bundle"))
}

fn build(dir: &Path, home: &Path, engine: &PluginEngine, config: &HostConfig) -> Result<Arc<Application>, LoadError> {
    let start = Instant::now();
    let stamp = Stamp::of(dir);
    let manifest = Manifest::load(dir)?;
    super::check::labels(&manifest)?;
    let backend = crate::backends::for_model(&manifest)?;
    super::signature::check(&manifest, backend.as_ref(), &dir.join(&manifest.model.file))?;
    let layout = |message: String| LoadError::Layout { dir: home.display().to_string(), message };
    let dir_version = home.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
    if dir_version != Some(manifest.version) {
        return Err(layout(format!("manifest version {} does not match the directory name", manifest.version)));
    }
    let dir_name = home.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
    if dir_name != Some(manifest.name.as_str()) {
        return Err(layout(format!("manifest name `{}` does not match the directory name", manifest.name)));
    }
    let timeout = manifest.plugin.timeout_ms.map(Duration::from_millis).unwrap_or(config.plugin_call_timeout);
    let memory = manifest
        .plugin
        .memory_mb
        .map(|mb| (mb as usize).saturating_mul(1 << 20))
        .unwrap_or(config.plugin_memory_limit);
    let plugin = engine.load(&manifest.name, &dir.join(&manifest.plugin.file), &manifest, timeout, memory)?;
    let info = plugin.describe()?;
    let device = backend.resolve(manifest.model.device.unwrap_or(config.device))?;
    let model = ModelExecutor::load(
        &manifest.name,
        &dir.join(&manifest.model.file),
        backend,
        device,
        manifest.model.batch_policy(),
        manifest.model.instances,
        if manifest.model.threads > 0 { manifest.model.threads } else { config.intra_op_threads },
    )?;
    let mut app = Application {
        manifest,
        info,
        plugin,
        model,
        dir: home.to_path_buf(),
        load_time: Duration::ZERO,
        loaded_at: SystemTime::now(),
        stamp,
        // Room for the frame's own fields (head length, index, compression).
        max_output_bytes: config.front.limits.max_frame_bytes.saturating_sub(256),
        counters: Arc::new(Counters::default()),
    };
    super::check::run(&app, dir)?;
    app.model.stats().reset();
    app.load_time = start.elapsed();
    app.loaded_at = SystemTime::now();
    Ok(Arc::new(app))
}
