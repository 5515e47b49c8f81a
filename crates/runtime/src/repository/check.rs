//! Checks a version must pass before it can serve, so that a manifest that
//! does not match its plugin or model fails the load (naming the author's
//! file and field) instead of every item:
//!
//! - static: the manifest's `labels` against the class dimension of its
//!   declared outputs; its declared inputs and outputs against the model's
//!   `forward` signature ([`super::signature`]);
//! - dynamic, the first that applies: the manifest's `[warmup]` item; else
//!   each file under the bundle's `samples/` (at most [`MAX_SAMPLES`]),
//!   through plugin, model and plugin; else a synthetic input (zeros shaped
//!   like the declared inputs: batch 1, other dynamic dimensions
//!   [`SYNTHETIC_DIM`]) through the model alone, its outputs checked against
//!   the declared outputs.

use std::path::Path;

use super::error::LoadError;
use crate::application::Application;
use tensorgate_server::manifest::{check_tensors, Manifest};
use tensorgate_backend::Tensor;

/// Sample files run at load at most.
pub const MAX_SAMPLES: usize = 16;
/// Size given to a dynamic dimension other than the batch in a synthetic input.
pub const SYNTHETIC_DIM: u64 = 64;
/// Largest synthetic input tensor (one item), so that a manifest declaring a
/// huge shape fails the load with its name instead of exhausting memory.
pub const SYNTHETIC_MAX_BYTES: u64 = 1 << 30;

/// The static checks: `labels` against the declared outputs. With labels
/// and outputs declared, some output must have a fixed dimension past the
/// batch one with as many classes as there are labels (the last one for a
/// classifier, the second for a segmentation map), unless an output has a
/// dynamic one there (the dynamic check runs those).
pub fn labels(manifest: &Manifest) -> Result<(), LoadError> {
    let n = manifest.labels.len() as i64;
    if n == 0 || manifest.outputs.is_empty() {
        return Ok(());
    }
    let class_dims = |o: &tensorgate_server::manifest::TensorDecl| o.shape.iter().skip(1).copied().collect::<Vec<i64>>();
    let fits = manifest.outputs.iter().any(|o| class_dims(o).iter().any(|&d| d == n || d < 0));
    if fits {
        return Ok(());
    }
    let outputs: Vec<String> = manifest.outputs.iter().map(|o| format!("`{}` {} {:?}", o.name, o.dtype, o.shape)).collect();
    Err(LoadError::Check {
        file: "manifest.toml".into(),
        message: format!("field `labels`: {n} label(s), but no declared output has {n} classes (outputs: {})", outputs.join(", ")),
    })
}

/// The dynamic check (see the module docs). `dir` holds the bundle's files.
pub fn run(app: &Application, dir: &Path) -> Result<(), LoadError> {
    let manifest = &app.manifest;
    if let Some(w) = &manifest.warmup {
        let fail = |message: String| LoadError::Warmup { file: w.file.clone(), message };
        let data = std::fs::read(dir.join(&w.file)).map_err(|e| fail(e.to_string()))?;
        return crate::pipeline::warm_up(app, data, &w.content_type, &w.metadata)
            .map_err(|f| fail(format!("[{}] {}", f.code, f.message)));
    }
    let samples = samples(dir);
    if !samples.is_empty() {
        for path in samples {
            let file = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            let fail = |message: String| LoadError::Check { file: file.clone(), message: format!("sample item: {message}") };
            let data = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
            let content_type = tensorgate_client::content_type_for(&path);
            crate::pipeline::warm_up(app, data, content_type, &Default::default())
                .map_err(|f| fail(format!("[{}] {}", f.code, f.message)))?;
        }
        return Ok(());
    }
    synthetic(app)
}

/// Up to [`MAX_SAMPLES`] files directly under `dir/samples`, sorted.
pub fn samples(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("samples"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.truncate(MAX_SAMPLES);
    files
}

/// Zeros shaped like the declared inputs through the model alone.
fn synthetic(app: &Application) -> Result<(), LoadError> {
    let manifest = &app.manifest;
    if manifest.inputs.is_empty() {
        return Ok(());
    }
    let inputs: Vec<Tensor> = manifest
        .inputs
        .iter()
        .map(|d| {
            let shape: Vec<u64> =
                d.shape.iter().enumerate().map(|(i, &s)| if s >= 0 { s as u64 } else if i == 0 { 1 } else { SYNTHETIC_DIM }).collect();
            let bytes = shape.iter().try_fold(d.dtype.size(), |acc, &n| acc.checked_mul(n)).filter(|&b| b <= SYNTHETIC_MAX_BYTES);
            let bytes = bytes.ok_or_else(|| LoadError::Check {
                file: "manifest.toml".into(),
                message: format!(
                    "input `{}` declared {:?}: one item of it is over {} MiB (add a `[warmup]` item or `samples/` to check it instead)",
                    d.name,
                    d.shape,
                    SYNTHETIC_MAX_BYTES >> 20
                ),
            })?;
            Ok(Tensor { dtype: d.dtype, shape, data: vec![0; bytes as usize].into() })
        })
        .collect::<Result<_, LoadError>>()?;
    let described: Vec<String> = inputs.iter().zip(&manifest.inputs).map(|(t, d)| format!("`{}` {} {:?}", d.name, t.dtype, t.shape)).collect();
    let fail = |message: String| LoadError::Check {
        file: "manifest.toml".into(),
        message: format!(
            "the declared inputs do not fit the model: zeros shaped like them ({}) through the model: {message} \
             (add a `[warmup]` item or `samples/` if zeros are not a valid input)",
            described.join(", ")
        ),
    };
    let forward = pollster::block_on(app.model.forward(inputs, None, false)).map_err(|e| fail(e.to_string()))?;
    check_tensors(&manifest.outputs, &forward.outputs).map_err(|e| LoadError::Check {
        file: "manifest.toml".into(),
        message: format!("the model's outputs for zeros shaped like the declared inputs do not match the declared outputs: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        let text = format!(
            "name = \"m\"\nversion = 1\n{extra}\n[[outputs]]\nname = \"logits\"\ndtype = \"f32\"\nshape = [-1, 2]\n"
        );
        Manifest::parse(&text, "manifest.toml").unwrap()
    }

    #[test]
    fn labels_must_match_a_declared_class_dimension() {
        assert!(labels(&manifest("labels = [\"b\", \"s\"]")).is_ok());
        assert!(labels(&manifest("")).is_ok(), "no labels: nothing to check");
        let e = labels(&manifest("labels = [\"b\", \"s\", \"x\"]")).unwrap_err().to_string();
        assert_eq!(
            e,
            "manifest.toml: field `labels`: 3 label(s), but no declared output has 3 classes (outputs: `logits` f32 [-1, 2])"
        );
    }
}
