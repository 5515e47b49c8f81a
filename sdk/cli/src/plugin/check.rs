//! `plugin check`: build the plugin, assemble its bundle in the target
//! directory, and check it as a host would (running its samples), without
//! installing anything.

use std::path::Path;

use super::build::compile;
use super::bundle::Bundle;

/// Builds the plugin in `dir`, assembles the bundle in
/// `TARGET/check-bundle` and checks it.
pub(super) fn check(dir: &Path, target_dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<()> {
    let wasm = compile(dir, target_dir, sdk)?;
    let bundle = Bundle::read(dir)?;
    let staged = target_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.join("target")).join("check-bundle");
    let _ = std::fs::remove_dir_all(&staged);
    bundle.assemble(dir, &wasm, &staged)?;
    crate::install::check(&staged)
}
