//! The bundle's manifest: given to `configure`, kept for [`manifest()`].

use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::{Manifest, PluginError};

static MANIFEST: OnceLock<Manifest> = OnceLock::new();

/// Keeps the manifest `configure` got (the first one wins).
pub(crate) fn set(m: Manifest) {
    let _ = MANIFEST.set(m);
}

/// The bundle's manifest, as `configure` got it (empty before).
pub fn manifest() -> &'static Manifest {
    static EMPTY: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get().unwrap_or_else(|| {
        EMPTY.get_or_init(|| Manifest {
            name: String::new(),
            version: 0,
            description: String::new(),
            labels: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
        })
    })
}

impl Manifest {
    /// A manifest with `params` only (native builds: tests, benchmarks),
    /// values as the host gives them (strings as they are, others as JSON).
    pub fn with_params(name: &str, labels: &[&str], params: &[(&str, &str)]) -> Manifest {
        Manifest {
            name: name.to_string(),
            version: 1,
            description: String::new(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// The raw text of parameter `key` (strings as written, other values as JSON).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Parameter `key`, which must be present.
    pub fn require(&self, key: &str) -> Result<&str, PluginError> {
        self.param(key).ok_or_else(|| {
            PluginError::new("manifest", format!("manifest has no parameter `params.{key}`"))
        })
    }

    /// Parameter `key` parsed from JSON (numbers, arrays, tables) into `T`.
    pub fn param_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, PluginError> {
        let raw = self.require(key)?;
        serde_json::from_str(raw).map_err(|e| {
            PluginError::new("manifest", format!("manifest parameter `params.{key}` = {raw}: {e}"))
        })
    }
}
