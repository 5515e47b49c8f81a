//! The model file's own signature (read by its backend without running
//! it) checked against the manifest's `[[inputs]]` and `[[outputs]]`
//! before anything serves. When the file does not state its signature the
//! check is skipped (logged at debug) and the dynamic checks still run.
//! Formats that bind tensors by name and type them (ONNX) are also checked
//! name by name, with each tensor's element type and rank.

use std::path::Path;

use tensorgate_backend::{Argument, Backend, Signature};
use tensorgate_server::manifest::TensorDecl;

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
    if sig.by_name {
        by_name(manifest, sig)?;
    }
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

/// For a file that binds its tensors by name: each declared input and
/// output is the file's own, in the file's order, with the file's element
/// type and rank.
fn by_name(manifest: &Manifest, sig: &Signature) -> Result<(), String> {
    let file = &manifest.model.file;
    for (side, declared, actual) in [("inputs", &manifest.inputs, &sig.inputs), ("outputs", &manifest.outputs, &sig.returns)] {
        if declared.is_empty() {
            continue;
        }
        let theirs: Vec<&str> = actual.iter().map(|a| a.name.as_str()).collect();
        for (i, d) in declared.iter().enumerate() {
            let Some(at) = actual.iter().position(|a| a.name == d.name) else {
                return Err(format!(
                    "`[[{side}]]` declares `{}`, but {file} has no {} of that name (its {side}: {})",
                    d.name,
                    &side[..side.len() - 1],
                    theirs.join(", ")
                ));
            };
            if at != i {
                let ours: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                return Err(format!(
                    "`[[{side}]]` are in the order {}, but {file} has them as {}: declare them in the file's order",
                    ours.join(", "),
                    theirs.join(", ")
                ));
            }
            typed(side, d, &actual[at], file)?;
        }
        if side == "inputs" && declared.len() < actual.len() {
            let missing: Vec<&str> = theirs[declared.len()..].to_vec();
            return Err(format!("`[[inputs]]` leaves out {}, which {file} needs ({})", missing.join(", "), sig.display));
        }
    }
    Ok(())
}

/// A declared tensor against the file's: element type and rank.
fn typed(side: &str, d: &TensorDecl, a: &Argument, file: &str) -> Result<(), String> {
    let head = format!("`[[{side}]]` `{}` is {} {:?}, but {file} has it as {}", d.name, d.dtype, d.shape, a.ty);
    if !a.tensor {
        return Err(format!("{head}, an element type the host does not carry (f32, f64, i64, i32, u8, bool)"));
    }
    if a.dtype.is_some_and(|t| t != d.dtype) {
        return Err(format!("{head}: the element types differ"));
    }
    if a.rank.is_some_and(|r| r != d.shape.len()) {
        return Err(format!("{head}: the ranks differ"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorgate_backend::Dtype;

    fn arg(name: &str, dtype: Dtype, rank: usize) -> Argument {
        Argument { name: name.into(), ty: format!("{dtype}[{rank}]"), optional: false, tensor: true, dtype: Some(dtype), rank: Some(rank) }
    }

    fn onnx(inputs: Vec<Argument>, returns: Vec<Argument>) -> Signature {
        Signature { display: "graph(...)".into(), outputs: Some(returns.len()), inputs, returns, by_name: true }
    }

    fn manifest(body: &str) -> Manifest {
        Manifest::parse(&format!("name='a'\nversion=1\n[model]\nfile='m.onnx'\n{body}"), "m").expect("manifest")
    }

    const XY: &str = "[[inputs]]\nname='x'\ndtype='f32'\nshape=[-1,4]\n[[inputs]]\nname='y'\ndtype='i64'\nshape=[-1]\n[[outputs]]\nname='p'\ndtype='f32'\nshape=[-1,2]\n";

    #[test]
    fn onnx_tensors_are_checked_by_name_type_and_rank() {
        let good = onnx(vec![arg("x", Dtype::F32, 2), arg("y", Dtype::I64, 1)], vec![arg("p", Dtype::F32, 2)]);
        compare(&manifest(XY), &good).expect("matches");
        let e = compare(&manifest(&XY.replace("name='y'", "name='z'")), &good).unwrap_err();
        assert!(e.contains("`[[inputs]]` declares `z`, but m.onnx has no input of that name (its inputs: x, y)"), "{e}");
        let e = compare(&manifest(&XY.replace("dtype='i64'", "dtype='i32'")), &good).unwrap_err();
        assert!(e.contains("`y` is i32 [-1], but m.onnx has it as i64[1]: the element types differ"), "{e}");
        let e = compare(&manifest(&XY.replace("shape=[-1,2]", "shape=[-1,2,1]")), &good).unwrap_err();
        assert!(e.contains("`[[outputs]]` `p`") && e.contains("the ranks differ"), "{e}");
        let swapped = onnx(vec![arg("y", Dtype::I64, 1), arg("x", Dtype::F32, 2)], vec![arg("p", Dtype::F32, 2)]);
        let e = compare(&manifest(XY), &swapped).unwrap_err();
        assert!(e.contains("in the order x, y, but m.onnx has them as y, x"), "{e}");
        let e = compare(&manifest(&XY.replace("name='p'", "name='q'")), &good).unwrap_err();
        assert!(e.contains("has no output of that name (its outputs: p)"), "{e}");
    }
}
