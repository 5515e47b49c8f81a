//! Generic application configured by a feature spec (docs/training.md):
//! the client sends raw branch values and the plugin runs the spec's
//! transforms (expressions, sorting, padding, masks, the fitted
//! standardisation) with `tensorgate-features`, the same code
//! `python -m tensorgate train` ran on the training data.
//!
//! Configuration: `params.spec`, the compiled spec as JSON (written by
//! `python -m tensorgate train` into the bundle's manifest).
//! In: `application/json`, one event `{"MET_pt": 31.2, "Jet_pt": [40.1, 22.0], ...}`
//! or a list of events; or `application/x-npz`, one array per flat branch
//! (`[N]`, any numeric dtype) and, per jagged branch `B`, `B` (the values
//! of all events, concatenated) with `B.counts` (`[N]`, the number per event).
//! Out: an `.npz` with one array per model output (named by the manifest's
//! `[[outputs]]`), one row per event; for JSON in, JSON out:
//! `{"output": [[row of event 0], ...]}`.

use tensorgate_features::{columns_from_json, Columns, Data, Features};
use tensorgate_plugin::prelude::*;
use tensorgate_plugin::Dtype;

struct FeaturesPlugin {
    features: Features,
    branches: Vec<String>,
    outputs: Vec<String>,
}

fn bad(code: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::new(code, e.to_string())
}

/// A tensor's elements as f64, whatever its numeric dtype.
fn to_f64(name: &str, t: &Tensor) -> Result<Vec<f64>, PluginError> {
    let b = t.bytes()?;
    let le8 = |c: &[u8]| <[u8; 8]>::try_from(c).unwrap_or_default();
    let le4 = |c: &[u8]| <[u8; 4]>::try_from(c).unwrap_or_default();
    Ok(match t.dtype() {
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(le8(c))).collect(),
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(le4(c)) as f64).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(le8(c)) as f64).collect(),
        Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(le4(c)) as f64).collect(),
        Dtype::U8 | Dtype::Boolean => b.iter().map(|&x| x as f64).collect(),
    })
    .and_then(|v: Vec<f64>| {
        if t.shape().len() == 1 {
            Ok(v)
        } else {
            Err(bad("bad-input", format!("array `{name}` has shape {:?}: give one value per event (or per element)", t.shape())))
        }
    })
}

impl FeaturesPlugin {
    fn columns_from_npz(&self, arrays: Vec<(String, Tensor)>) -> Result<Columns, PluginError> {
        let find = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let mut events = None;
        let mut staged = Vec::new();
        for b in &self.branches {
            let t = find(b).ok_or_else(|| bad("missing-input", format!("npz has no array named `{b}`")))?;
            let values = to_f64(b, t)?;
            let counts = match find(&format!("{b}.counts")) {
                Some(c) => Some(to_f64(&format!("{b}.counts"), c)?.into_iter().map(|x| x as u64).collect::<Vec<u64>>()),
                None => None,
            };
            let n = counts.as_ref().map_or(values.len(), Vec::len);
            if *events.get_or_insert(n) != n {
                return Err(bad("bad-input", format!("`{b}` has {n} events, other arrays {}", events.unwrap_or(0))));
            }
            staged.push((b, values, counts));
        }
        let mut cols = Columns::new(events.unwrap_or(0));
        for (b, values, counts) in staged {
            match counts {
                Some(c) => cols.insert_jagged(b, &c, values),
                None => cols.insert_flat(b, values),
            }
            .map_err(|e| bad("bad-input", e))?;
        }
        Ok(cols)
    }
}

impl Plugin for FeaturesPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new("features", "Raw branch values in, a feature spec's transforms, model outputs out")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/json", "application/x-npz"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        let json = m.require("spec")?;
        let features = Features::from_json(json, "params.spec").map_err(|e| bad("manifest", e))?;
        // Only what the model's inputs need: selection, weights, labels and observers are the client's.
        let branches = features.input_branches();
        let outputs = m.outputs.iter().map(|s| s.name.clone()).collect();
        Ok(FeaturesPlugin { features, branches, outputs })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let json = item.content_type == "application/json";
        let cols = if json {
            let bytes = item.payload.bytes()?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| bad("bad-input", format!("not JSON: {e}")))?;
            columns_from_json(&value, &self.branches).map_err(|e| bad("bad-input", e))?
        } else {
            self.columns_from_npz(item.payload.npz()?)?
        };
        if cols.events() == 0 {
            return Err(bad("bad-input", "no events"));
        }
        let tensors = self.features.transform(&cols, None).map_err(|e| bad("bad-input", e))?;
        let inputs = tensors
            .into_iter()
            .map(|t| {
                let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                match t.data {
                    Data::F32(v) => Tensor::from_f32(&shape, &v),
                    Data::Bool(v) => {
                        let bytes: Vec<u8> = v.into_iter().map(u8::from).collect();
                        Tensor::from_bytes(Dtype::Boolean, &shape, &bytes)
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared::new(inputs).with_context(vec![u8::from(json)]))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let named: Vec<(String, Tensor)> = out
            .tensors
            .into_iter()
            .enumerate()
            .map(|(i, t)| (self.outputs.get(i).cloned().unwrap_or_else(|| format!("output_{i}")), t))
            .collect();
        if out.context.first() != Some(&1) {
            return Ok(Output::npz(named));
        }
        let mut reply = serde_json::Map::new();
        for (name, t) in named {
            let values = t.to_f32()?;
            let rows = t.shape().first().copied().unwrap_or(1).max(1) as usize;
            let per = values.len() / rows;
            let list: Vec<serde_json::Value> = values.chunks(per.max(1)).map(|r| serde_json::json!(r)).collect();
            reply.insert(name, serde_json::Value::Array(list));
        }
        Output::json(&serde_json::Value::Object(reply))
    }
}

export_plugin!(FeaturesPlugin);
