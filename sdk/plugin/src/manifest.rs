//! Access to the bundle's manifest, fetched from the host once per instance.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::{bindings, Manifest, PluginError};

/// The bundle's manifest (fetched from the host on first use, then cached).
pub fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(bindings::tensorgate::plugin::host::get_manifest)
}

impl Manifest {
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
