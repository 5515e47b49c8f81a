//! The tensorgate plugin SDK (plugin contract `tensorgate:plugin@0.3.0`).
//!
//! A plugin implements [`Plugin`] for one type and exports it:
//! ```ignore
//! use tensorgate_plugin::prelude::*;
//! struct MyNet { threshold: f32 }
//! impl Plugin for MyNet {
//!     fn describe() -> PluginInfo { PluginInfo::new("my-net", "what it does") }
//!     fn configure(m: &Manifest) -> Result<Self, PluginError> { Ok(MyNet { threshold: m.param_as("threshold")? }) }
//!     fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> { ... }
//!     fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> { ... }
//! }
//! export_plugin!(MyNet);
//! ```
//! Tensors live in the host ([`Tensor`]); the item's bytes too
//! ([`Payload`]). A plugin reads what its logic needs, and asks the host for
//! bulk work ([`ops`]). The helpers here are the glue every plugin would
//! otherwise repeat: tensors ([`tensor`]), JSON items and outputs, manifest
//! parameters, logging, NumPy files ([`npy`]), sparse pixel lists
//! ([`sparse`]), tiling and stitching ([`tiles`]), label mapping
//! ([`labels`]), padded records ([`records`]), image resizing and
//! normalisation ([`image`]), the preprocess-to-postprocess context
//! ([`context`]). The host gives each item's metadata back with its reply by
//! itself; [`Output::with_meta`] adds entries over it. Everything also
//! compiles and runs natively (the host operations then run in place, with
//! the host's semantics), so plugins and helpers are unit-tested and
//! benchmarked outside wasm.

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
mod export;
pub mod image;
pub mod labels;
mod manifest;
pub mod npy;
pub mod ops;
mod payload;
pub mod records;
pub mod sparse;
pub mod tensor;
pub mod tiles;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use bindings::tensorgate::plugin::types::{Dtype, LogLevel, Manifest, PluginError, PluginInfo, TensorSpec};
#[doc(hidden)]
pub use export::{__configure, __describe, __postprocess, __preprocess};
pub use manifest::manifest;
pub use payload::Payload;
/// JSON (serde_json), re-exported so plugins share the SDK's version.
pub use serde_json as json;
pub use tensor::Tensor;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        export_plugin, json, log, manifest, parse_json, Dtype, Item, JsonStr, LogLevel, Manifest, Output, Outputs,
        Payload, Plugin, PluginError, PluginInfo, Prepared, Tensor,
    };
}

/// One network's pre- and post-processing. The host makes one value per
/// plugin instance with [`Plugin::configure`] and calls the rest on it.
pub trait Plugin: Sized + 'static {
    /// Describes the plugin; called once when the application loads.
    fn describe() -> PluginInfo;
    /// Reads the manifest (its `[params]` above all) once per instance,
    /// before any item: an error fails the version's load, not its items.
    fn configure(manifest: &Manifest) -> Result<Self, PluginError>;
    /// Turns one client item into model input tensors.
    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError>;
    /// Turns the model's outputs for one item into its reply.
    fn postprocess(&self, outputs: Outputs) -> Result<Output, PluginError>;
    /// Turns a group of items (those the host had waiting for this plugin)
    /// into model inputs: one result per item, in order; an error fails its
    /// own item. The default calls [`Plugin::preprocess`] on each; override
    /// it for code that handles the group at once (one host operation for
    /// all its items, say).
    fn preprocess_batch(&self, items: Vec<Item>) -> Vec<Result<Prepared, PluginError>> {
        items.into_iter().map(|item| self.preprocess(item)).collect()
    }
    /// Turns the model's outputs for a group of items into their replies:
    /// one result per item, in order. The default calls
    /// [`Plugin::postprocess`] on each.
    fn postprocess_batch(&self, outputs: Vec<Outputs>) -> Vec<Result<Output, PluginError>> {
        outputs.into_iter().map(|o| self.postprocess(o)).collect()
    }
}

/// Exports `$t` (which implements [`Plugin`]) as this component's plugin.
/// Every call first makes sure a panic's message reaches the host (see
/// [`install_panic_hook`]), so a trap is reported with the plugin's own words.
#[macro_export]
macro_rules! export_plugin {
    ($t:ident) => {
        #[doc(hidden)]
        pub struct __TensorgateExport;
        impl $crate::bindings::exports::tensorgate::plugin::plugin::Guest for __TensorgateExport {
            fn describe() -> $crate::PluginInfo {
                $crate::__describe::<$t>()
            }
            fn configure(manifest: $crate::Manifest) -> Result<(), $crate::PluginError> {
                $crate::__configure::<$t>(manifest)
            }
            fn preprocess(
                items: Vec<$crate::bindings::tensorgate::plugin::types::Item>,
            ) -> Vec<Result<$crate::bindings::tensorgate::plugin::types::Prepared, $crate::PluginError>> {
                $crate::__preprocess::<$t>(items)
            }
            fn postprocess(
                items: Vec<$crate::bindings::tensorgate::plugin::types::Produced>,
            ) -> Vec<Result<$crate::bindings::tensorgate::plugin::types::Output, $crate::PluginError>> {
                $crate::__postprocess::<$t>(items)
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

/// Writes a message to the host's log (natively: to stderr).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::tensorgate::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// One item as the client sent it; its bytes stay in the host ([`Payload`]).
#[derive(Debug)]
pub struct Item {
    /// The item's bytes.
    pub payload: Payload,
    /// Its content type, e.g. `application/x-npy`.
    pub content_type: String,
    /// Its metadata.
    pub metadata: Vec<(String, String)>,
}

/// What `preprocess` hands to the model.
#[derive(Debug)]
pub struct Prepared {
    /// One tensor per model input, all with the same leading batch dimension.
    pub inputs: Vec<Tensor>,
    /// Tensors handed back to `postprocess` as they are ([`Outputs::kept`]).
    pub keep: Vec<Tensor>,
    /// Opaque bytes handed back to `postprocess` ([`context`]).
    pub context: Vec<u8>,
}

/// What `postprocess` gets for one item.
#[derive(Debug)]
pub struct Outputs {
    /// The model's outputs, flattened in order.
    pub tensors: Vec<Tensor>,
    /// The tensors `preprocess` kept ([`Prepared::keep`]).
    pub kept: Vec<Tensor>,
    /// The context `preprocess` gave.
    pub context: Vec<u8>,
}

/// The body of a reply.
#[derive(Debug)]
pub enum Body {
    /// Bytes the plugin wrote.
    Bytes(Vec<u8>),
    /// Named tensors the host writes as an uncompressed `.npz`.
    Npz(Vec<(String, Tensor)>),
}

/// The reply for one item.
#[derive(Debug)]
pub struct Output {
    /// The reply's body.
    pub body: Body,
    /// Its content type (`application/x-npz` for an npz body when empty).
    pub content_type: String,
    /// Metadata entries, over the item's own (which the host echoes).
    pub metadata: Vec<(String, String)>,
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
    /// An item of `data` (native builds: tests, benchmarks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(data: Vec<u8>, content_type: &str) -> Item {
        Item { payload: Payload::from_bytes(data), content_type: content_type.to_string(), metadata: Vec::new() }
    }

    /// Adds a metadata entry (native builds).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_meta(mut self, key: &str, value: &str) -> Item {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

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
        parse_json(&self.payload.bytes()?)
    }
}

/// Parses JSON `bytes` into `T`, which may borrow from them (`&str`,
/// [`JsonStr`]): for a hot path, read the payload once with
/// `item.payload.bytes()` and parse that without copying its strings. The
/// error (code `malformed-json`) names the problem and its position.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PluginError> {
    serde_json::from_slice(bytes).map_err(|e| PluginError::new("malformed-json", format!("item is not the expected JSON: {e}")))
}

/// A JSON string borrowed from the parsed bytes when it holds no escapes
/// (no allocation), owned otherwise. serde's `#[serde(borrow)]` cannot
/// borrow the strings inside a list (`Vec<Cow<str>>` always copies); a
/// `Vec<JsonStr>` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStr<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for JsonStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = JsonStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

impl Prepared {
    /// Model inputs with no context.
    pub fn new(inputs: Vec<Tensor>) -> Self {
        Prepared { inputs, keep: Vec::new(), context: Vec::new() }
    }

    /// Attaches an opaque context handed back to `postprocess`.
    pub fn with_context(mut self, context: Vec<u8>) -> Self {
        self.context = context;
        self
    }

    /// Keeps tensors for `postprocess` (they stay in the host meanwhile).
    pub fn keep(mut self, tensors: Vec<Tensor>) -> Self {
        self.keep.extend(tensors);
        self
    }
}

impl Outputs {
    /// Model output `i`, or an error naming how many there are.
    pub fn tensor(&self, i: usize) -> Result<&Tensor, PluginError> {
        self.tensors.get(i).ok_or_else(|| {
            PluginError::new("no-output", format!("model returned {} tensor(s), no output {i}", self.tensors.len()))
        })
    }

    /// Takes kept tensor `i` (e.g. into the reply); an error if there is none.
    pub fn take_kept(&mut self, i: usize) -> Result<Tensor, PluginError> {
        if i >= self.kept.len() {
            return Err(PluginError::new("context", format!("preprocess kept {} tensor(s), no tensor {i}", self.kept.len())));
        }
        Ok(self.kept.remove(i))
    }
}

impl Output {
    /// A JSON reply.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, PluginError> {
        let data = serde_json::to_vec(value)
            .map_err(|e| PluginError::new("encode", format!("cannot encode reply as JSON: {e}")))?;
        Ok(Output { body: Body::Bytes(data), content_type: "application/json".into(), metadata: Vec::new() })
    }

    /// A raw-bytes reply of the given content type.
    pub fn bytes(data: Vec<u8>, content_type: &str) -> Self {
        Output { body: Body::Bytes(data), content_type: content_type.into(), metadata: Vec::new() }
    }

    /// A `.npz` reply of named tensors, written by the host (the tensors'
    /// data never enters the plugin).
    pub fn npz(entries: Vec<(String, Tensor)>) -> Self {
        Output { body: Body::Npz(entries), content_type: "application/x-npz".into(), metadata: Vec::new() }
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

    /// The reply's bytes as the host sends them (natively: an npz body is
    /// written here, as the host writes it).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Bytes(b) => b.clone(),
            Body::Npz(entries) => npy::write_npz(entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_borrowed_unless_escaped_and_errors_name_the_problem() {
        #[derive(Deserialize)]
        struct Keys<'a> {
            #[serde(borrow)]
            keys: Vec<JsonStr<'a>>,
        }
        let bytes = br#"{"keys": ["jet_pt", "jet\u005feta", "a\"b"]}"#;
        let k: Keys = parse_json(bytes).unwrap();
        let got: Vec<&str> = k.keys.iter().map(|s| &**s).collect();
        assert_eq!(got, ["jet_pt", "jet_eta", "a\"b"]);
        assert!(matches!(k.keys[0].0, std::borrow::Cow::Borrowed(_)), "no escape: borrowed");
        assert!(matches!(k.keys[1].0, std::borrow::Cow::Owned(_)), "escaped: owned");
        let e = parse_json::<Keys>(br#"{"keys": [1]}"#).err().unwrap();
        assert_eq!(e.code, "malformed-json");
        assert!(e.message.contains("expected a string") && e.message.contains("column"), "{}", e.message);
    }
}
