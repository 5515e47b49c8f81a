//! The model file's own signature (read by its backend without running
//! it) checked against the manifest's `[[inputs]]` and `[[outputs]]`
//! before anything serves. When the file does not state its signature the
//! check is skipped (logged at debug) and the dynamic checks still run.

use std::path::Path;

use tensorgate_backend::{Backend, Signature};

use super::LoadError;
use tensorgate_server::manifest::Manifest;

/// The manifest's declared inputs and outputs against the model's entry
/// point, when the model file carries its signature: the argument count
/// (arguments that may be left out may be), each argument's type (the host
/// passes one tensor per declared input), the order (the same names in
/// another order), and the number of tensors returned.
pub fn check(manifest: &Manifest, backend: &dyn Backend, model: &Path) -> Result<(), LoadError> {
    if manifest.inputs.is_empty() && manifest.outputs.is_empty() {
        return Ok(());
    }
    let Some(sig) = backend.signature(model) else {
        tracing::debug!(model = %model.display(), "no signature in the model file; checked by running it");
        return Ok(());
    };
    compare(manifest, &sig).map_err(|message| LoadError::Check { file: "manifest.toml".into(), message })
}

/// What does not match between the manifest and `sig`, if anything.
fn compare(manifest: &Manifest, sig: &Signature) -> Result<(), String> {
    let file = &manifest.model.file;
    let declared: Vec<&str> = manifest.inputs.iter().map(|i| i.name.as_str()).collect();
    if !declared.is_empty() {
        let required = sig.inputs.iter().filter(|a| !a.optional).count();
        let (n, total) = (declared.len(), sig.inputs.len());
        if n < required || n > total {
            let takes = match required == total {
                true => format!("{total}"),
                false => format!("{required} to {total}"),
            };
            return Err(format!(
                "`[[inputs]]` declares {n} input(s) ({}), but {file}'s {} takes {takes}",
                declared.join(", "),
                sig.display
            ));
        }
        if let Some(a) = sig.inputs.iter().take(n).find(|a| !a.tensor) {
            return Err(format!(
                "{file}'s forward argument `{}` is a `{}`, but the host passes one tensor per declared input ({})",
                a.name, a.ty, sig.display
            ));
        }
        let names: Vec<&str> = sig.inputs.iter().take(n).map(|a| a.name.as_str()).collect();
        let (mut a, mut b) = (names.clone(), declared.clone());
        a.sort_unstable();
        b.sort_unstable();
        if names != declared && a == b {
            return Err(format!(
                "`[[inputs]]` are in the order {}, but {file}'s forward takes them as {}: declare them in forward-argument order",
                declared.join(", "),
                names.join(", ")
            ));
        }
    }
    if let (false, Some(count)) = (manifest.outputs.is_empty(), sig.outputs) {
        if count != manifest.outputs.len() {
            let outputs: Vec<&str> = manifest.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(format!(
                "`[[outputs]]` declares {} output(s) ({}), but {file}'s forward returns {count} tensor(s): {}",
                outputs.len(),
                outputs.join(", "),
                sig.display
            ));
        }
    }
    Ok(())
}
