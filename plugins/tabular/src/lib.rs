//! Tabular application (the TFaaS `/json` case): the client sends
//! `{"keys": [...], "values": [...]}`; the values are ordered by the feature
//! names in the manifest's `params.features` into one f32 row; the model's
//! scores come back as `{label: score}` using the manifest's labels.

use std::cell::RefCell;

use serde::Deserialize;
use tensorgate_plugin::labels;
use tensorgate_plugin::prelude::*;

struct Tabular {
    features: Vec<String>,
    labels: Vec<String>,
    /// The slot of each key position in the previous item: a client sends
    /// one key order for all its items, so each key is tried there first
    /// (one comparison instead of a search through the features).
    last: RefCell<Vec<usize>>,
}

/// The slot of a key that is not a feature.
const UNKNOWN: usize = usize::MAX;

/// The item; its keys borrowed from the payload (no copy per key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    keys: Vec<JsonStr<'a>>,
    values: Vec<f32>,
}

impl Tabular {
    /// Where `key` goes in the row: tried at `hint` first (where the key at
    /// this position went last time, else the manifest's order), then searched.
    fn slot(&self, key: &str, hint: usize) -> Option<usize> {
        match self.features.get(hint) {
            Some(f) if f == key => Some(hint),
            _ => self.features.iter().position(|f| f == key),
        }
    }
}

impl Plugin for Tabular {
    fn describe() -> PluginInfo {
        PluginInfo::new("tabular", "JSON keys/values -> f32 features -> {label: score}")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/json"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        Ok(Tabular { features: m.param_as("features")?, labels: m.labels.clone(), last: RefCell::new(Vec::new()) })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let features = &self.features;
        let bytes = item.payload.bytes()?;
        let req: Request = parse_json(&bytes)?;
        if req.keys.len() != req.values.len() {
            return Err(PluginError::new(
                "length-mismatch",
                format!("{} keys but {} values", req.keys.len(), req.values.len()),
            ));
        }
        // Each key's slot, written over the previous item's (`UNKNOWN`: not a feature).
        let mut slots = self.last.borrow_mut();
        slots.resize(req.keys.len(), UNKNOWN);
        let mut row = vec![0f32; features.len()];
        let mut set = vec![false; features.len()];
        let mut duplicate = false;
        for (i, (key, &value)) in req.keys.iter().zip(&req.values).enumerate() {
            let hint = if slots[i] == UNKNOWN { i } else { slots[i] };
            slots[i] = self.slot(key, hint).unwrap_or(UNKNOWN);
            if let Some(s) = set.get_mut(slots[i]) {
                duplicate |= std::mem::replace(s, true);
                row[slots[i]] = value;
            }
        }
        let unknown = slots.iter().position(|&s| s == UNKNOWN);
        drop(slots);
        // A repeated unknown key is a duplicate too (searched for only when one is there).
        if duplicate || unknown.is_some() {
            if let Some(j) = (1..req.keys.len()).find(|&j| req.keys[..j].contains(&req.keys[j])) {
                let key = &*req.keys[j];
                return Err(PluginError::new("duplicate-key", format!("key `{key}` appears more than once")));
            }
        }
        if let Some(at) = unknown {
            let unknown = &*req.keys[at];
            return Err(PluginError::new("unknown-key", format!("unknown key `{unknown}`; expected {features:?}")));
        }
        if let Some(missing) = set.iter().position(|s| !s) {
            return Err(PluginError::new("missing-key", format!("missing key `{}`", features[missing])));
        }
        Ok(Prepared::new(vec![Tensor::from_f32(&[1, row.len() as u64], &row)?]))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let scores = out.tensor(0)?.to_f32()?;
        labels::scores_json(&self.labels, &scores).map_err(|_| {
            PluginError::new(
                "labels",
                format!(
                    "plugin `tabular` labels the model's first output: {} scores per item, but the manifest lists {} labels",
                    scores.len(),
                    self.labels.len()
                ),
            )
        })
    }
}

export_plugin!(Tabular);
