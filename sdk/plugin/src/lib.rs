//! The tensorgate plugin SDK.
//!
//! A plugin implements [`Plugin`] for one type and exports it:
//! ```ignore
//! use tensorgate_plugin::prelude::*;
//! struct MyNet;
//! impl Plugin for MyNet {
//!     fn describe() -> PluginInfo { PluginInfo::new("my-net", "what it does") }
//!     fn preprocess(item: Item) -> Result<Prepared, PluginError> { ... }
//!     fn postprocess(outputs: Vec<Tensor>, context: Vec<u8>) -> Result<Output, PluginError> { ... }
//! }
//! export_plugin!(MyNet);
//! ```
//! The helpers here are the glue every plugin would otherwise repeat:
//! tensor views and conversion ([`tensor`]), JSON items and outputs, manifest
//! parameters, logging, NumPy files ([`npy`]), sparse pixel lists
//! ([`sparse`]), tiling and stitching ([`tiles`]), label mapping
//! ([`labels`]), padded records ([`records`]), image resizing and
//! normalisation ([`image`]), the preprocess-to-postprocess context
//! ([`context`]). The host gives each item's metadata back with its reply by
//! itself; [`Output::with_meta`] adds entries over it. Everything but the host
//! calls ([`log`], [`manifest()`]) also compiles and runs natively, so the
//! helpers are unit-tested and benchmarked outside wasm.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "application",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_application",
        default_bindings_module: "tensorgate_plugin::bindings",
    });
}

pub mod context;
pub mod image;
pub mod labels;
mod manifest;
pub mod npy;
pub mod records;
pub mod sparse;
pub mod tensor;
pub mod tiles;

use serde::{de::DeserializeOwned, Serialize};

pub use bindings::exports::tensorgate::plugin::plugin::Guest as Plugin;
pub use bindings::tensorgate::plugin::types::{
    Dtype, Item, LogLevel, Manifest, Output, PluginError, PluginInfo, Prepared, Tensor, TensorSpec,
};
pub use manifest::manifest;
/// JSON (serde_json), re-exported so plugins share the SDK's version.
pub use serde_json as json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        export_plugin, json, log, manifest, Dtype, Item, LogLevel, Manifest, Output, Plugin, PluginError,
        PluginInfo, Prepared, Tensor,
    };
}

/// Exports `$t` (which implements [`Plugin`]) as this component's plugin.
/// Every call first makes sure a panic's message reaches the host (see
/// [`install_panic_hook`]), so a trap is reported with the plugin's own words.
#[macro_export]
macro_rules! export_plugin {
    ($t:ident) => {
        #[doc(hidden)]
        pub struct __TensorgateExport;
        impl $crate::Plugin for __TensorgateExport {
            fn describe() -> $crate::PluginInfo {
                $crate::install_panic_hook();
                <$t as $crate::Plugin>::describe()
            }
            fn preprocess(item: $crate::Item) -> Result<$crate::Prepared, $crate::PluginError> {
                $crate::install_panic_hook();
                <$t as $crate::Plugin>::preprocess(item)
            }
            fn postprocess(
                outputs: Vec<$crate::Tensor>,
                context: Vec<u8>,
            ) -> Result<$crate::Output, $crate::PluginError> {
                $crate::install_panic_hook();
                <$t as $crate::Plugin>::postprocess(outputs, context)
            }
        }
        $crate::bindings::__export_application!(__TensorgateExport with_types_in $crate::bindings);
    };
}

/// Sends a panic's message and location to the host's log (at error level)
/// before the instance aborts; the host attaches it to the `plugin trapped`
/// error of the item. Installed once per instance by [`export_plugin!`].
pub fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &format!("panic: {info}"))));
    });
}

/// Writes a message to the host's log.
pub fn log(level: LogLevel, message: &str) {
    bindings::tensorgate::plugin::host::log(level, message);
}

impl PluginError {
    /// An error with a short machine-readable `code` and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        PluginError { code: code.to_string(), message: message.into() }
    }
}

impl PluginInfo {
    /// Info with the crate version filled in by the caller's `env!` if wanted.
    pub fn new(name: &str, description: &str) -> Self {
        PluginInfo {
            name: name.to_string(),
            version: String::new(),
            description: description.to_string(),
            accepts: Vec::new(),
        }
    }

    /// Sets the version string.
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Declares the content types `preprocess` accepts.
    pub fn accepts(mut self, types: &[&str]) -> Self {
        self.accepts = types.iter().map(|s| s.to_string()).collect();
        self
    }
}

impl Item {
    /// The value of metadata `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The metadata entries among `keys` that the item carries, in `keys`
    /// order: what a plugin whose manifest sets `echo_metadata = false`
    /// passes through to its reply by hand.
    pub fn keep_meta(&self, keys: &[&str]) -> Vec<(String, String)> {
        keys.iter().filter_map(|k| self.meta(k).map(|v| (k.to_string(), v.to_string()))).collect()
    }

    /// Parses the payload as JSON into `T`; the error names the problem and its position.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.data)
            .map_err(|e| PluginError::new("malformed-json", format!("item is not the expected JSON: {e}")))
    }
}

impl Prepared {
    /// Model inputs with no context.
    pub fn new(inputs: Vec<Tensor>) -> Self {
        Prepared { inputs, context: Vec::new() }
    }

    /// Attaches an opaque context handed back to `postprocess`.
    pub fn with_context(mut self, context: Vec<u8>) -> Self {
        self.context = context;
        self
    }
}

impl Output {
    /// A JSON reply.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, PluginError> {
        let data = serde_json::to_vec(value)
            .map_err(|e| PluginError::new("encode", format!("cannot encode reply as JSON: {e}")))?;
        Ok(Output { data, content_type: "application/json".into(), metadata: Vec::new() })
    }

    /// A raw-bytes reply of the given content type.
    pub fn bytes(data: Vec<u8>, content_type: &str) -> Self {
        Output { data, content_type: content_type.into(), metadata: Vec::new() }
    }

    /// Adds metadata entries (e.g. passed through from the item).
    pub fn with_metadata(mut self, meta: Vec<(String, String)>) -> Self {
        self.metadata.extend(meta);
        self
    }

    /// Adds one metadata entry.
    pub fn with_meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }
}
