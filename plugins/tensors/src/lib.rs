//! Generic application: serve any TorchScript model with no plugin code.
//!
//! In: one `.npy` (`application/x-npy`, the model's single input) or an
//! uncompressed `.npz` (`application/x-npz`, one array per input, matched to
//! the manifest's `[[inputs]]` by name; with no declared inputs, archive
//! order). Arrays must already carry the batch dimension.
//! Out: an `.npz` with one array per model output, named by the manifest's
//! `[[outputs]]` (else `output_0`, `output_1`, ...).

use tensorgate_plugin::npy::{parse_npy, parse_npz, write_npz};
use tensorgate_plugin::prelude::*;

struct Tensors;

impl Plugin for Tensors {
    fn describe() -> PluginInfo {
        PluginInfo::new("tensors", "NumPy .npy/.npz in, .npz out, for any TorchScript model")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npy", "application/x-npz"])
    }

    fn preprocess(item: Item) -> Result<Prepared, PluginError> {
        let declared = &manifest().inputs;
        let inputs = match item.content_type.as_str() {
            "application/x-npz" => {
                let mut arrays = parse_npz(&item.data)?;
                if declared.is_empty() {
                    arrays.into_iter().map(|(_, t)| t).collect()
                } else {
                    declared
                        .iter()
                        .map(|spec| {
                            let at = arrays.iter().position(|(n, _)| *n == spec.name).ok_or_else(|| {
                                PluginError::new("missing-input", format!("npz has no array named `{}`", spec.name))
                            })?;
                            Ok(arrays.swap_remove(at).1)
                        })
                        .collect::<Result<Vec<_>, PluginError>>()?
                }
            }
            _ => vec![parse_npy(&item.data)?],
        };
        Ok(Prepared::new(inputs))
    }

    fn postprocess(outputs: Vec<Tensor>, _context: Vec<u8>) -> Result<Output, PluginError> {
        let names = &manifest().outputs;
        let named: Vec<(String, Tensor)> = outputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| (names.get(i).map(|s| s.name.clone()).unwrap_or_else(|| format!("output_{i}")), t))
            .collect();
        Ok(Output::bytes(write_npz(&named), "application/x-npz"))
    }
}

export_plugin!(Tensors);
