//! Tabular application (the TFaaS `/json` case): the client sends
//! `{"keys": [...], "values": [...]}`; the values are ordered by the feature
//! names in the manifest's `params.features` into one f32 row; the model's
//! scores come back as `{label: score}` using the manifest's labels.

use std::collections::HashMap;

use serde::Deserialize;
use tensorgate_plugin::prelude::*;

struct Tabular {
    features: Vec<String>,
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    keys: Vec<String>,
    values: Vec<f32>,
}

impl Plugin for Tabular {
    fn describe() -> PluginInfo {
        PluginInfo::new("tabular", "JSON keys/values -> f32 features -> {label: score}")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/json"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        Ok(Tabular { features: m.param_as("features")?, labels: m.labels.clone() })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let features = &self.features;
        let req: Request = item.json()?;
        if req.keys.len() != req.values.len() {
            return Err(PluginError::new(
                "length-mismatch",
                format!("{} keys but {} values", req.keys.len(), req.values.len()),
            ));
        }
        let given: HashMap<&str, f32> = req.keys.iter().map(String::as_str).zip(req.values).collect();
        if given.len() != req.keys.len() {
            return Err(PluginError::new("duplicate-key", "a key appears more than once"));
        }
        if let Some(unknown) = req.keys.iter().find(|k| !features.contains(k)) {
            return Err(PluginError::new("unknown-key", format!("unknown key `{unknown}`; expected {features:?}")));
        }
        let row = features
            .iter()
            .map(|f| given.get(f.as_str()).copied().ok_or_else(|| {
                PluginError::new("missing-key", format!("missing key `{f}`"))
            }))
            .collect::<Result<Vec<f32>, _>>()?;
        Ok(Prepared::new(vec![Tensor::from_f32(&[1, row.len() as u64], &row)?]))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let labels = &self.labels;
        let scores = out.tensor(0)?.to_f32()?;
        if scores.len() != labels.len() {
            return Err(PluginError::new(
                "labels",
                format!("model returned {} scores for {} labels", scores.len(), labels.len()),
            ));
        }
        let reply: json::Map<String, json::Value> =
            labels.iter().cloned().zip(scores.into_iter().map(json::Value::from)).collect();
        Output::json(&reply)
    }
}

export_plugin!(Tabular);
