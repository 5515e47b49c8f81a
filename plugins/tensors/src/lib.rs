//! Generic application: serve any TorchScript model with no plugin code.
//!
//! In: one `.npy` (`application/x-npy`, the model's single input) or an
//! uncompressed `.npz` (`application/x-npz`, one array per input, matched to
//! the manifest's `[[inputs]]` by name; with no declared inputs, archive
//! order). Arrays must already carry the batch dimension.
//! Out: an `.npz` with one array per model output, named by the manifest's
//! `[[outputs]]` (else `output_0`, `output_1`, ...).
//! The arrays never enter the plugin: the host parses the item into
//! tensors, hands them to the model, and writes the outputs as the reply.

use tensorgate_plugin::prelude::*;

struct Tensors {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Plugin for Tensors {
    fn describe() -> PluginInfo {
        PluginInfo::new("tensors", "NumPy .npy/.npz in, .npz out, for any TorchScript model")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npy", "application/x-npz"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        let names = |specs: &[tensorgate_plugin::TensorSpec]| specs.iter().map(|s| s.name.clone()).collect();
        Ok(Tensors { inputs: names(&m.inputs), outputs: names(&m.outputs) })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let declared = &self.inputs;
        let inputs = match item.content_type.as_str() {
            "application/x-npz" => {
                let mut arrays = item.payload.npz()?;
                if declared.is_empty() {
                    arrays.into_iter().map(|(_, t)| t).collect()
                } else {
                    declared
                        .iter()
                        .map(|name| {
                            let at = arrays.iter().position(|(n, _)| n == name).ok_or_else(|| {
                                PluginError::new("missing-input", format!("npz has no array named `{name}`"))
                            })?;
                            Ok(arrays.swap_remove(at).1)
                        })
                        .collect::<Result<Vec<_>, PluginError>>()?
                }
            }
            _ => vec![item.payload.npy()?],
        };
        Ok(Prepared::new(inputs))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let names = &self.outputs;
        let named: Vec<(String, Tensor)> = out
            .tensors
            .into_iter()
            .enumerate()
            .map(|(i, t)| (names.get(i).cloned().unwrap_or_else(|| format!("output_{i}")), t))
            .collect();
        Ok(Output::npz(named))
    }
}

export_plugin!(Tensors);
