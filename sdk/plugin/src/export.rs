//! The glue [`crate::export_plugin!`] expands to: the plugin value made by
//! `configure` (one per instance), and the conversions between the WIT
//! records and the SDK's types on each call.

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::tensorgate::plugin::types as wit;
use crate::{install_panic_hook, Manifest, Plugin, PluginError, PluginInfo};

thread_local! {
    /// The configured plugin of this instance (a wasm instance is one thread).
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// `describe`.
pub fn __describe<T: Plugin>() -> PluginInfo {
    install_panic_hook();
    T::describe()
}

/// `configure`: makes this instance's plugin value from the manifest.
pub fn __configure<T: Plugin>(manifest: Manifest) -> Result<(), PluginError> {
    install_panic_hook();
    let plugin = T::configure(&manifest)?;
    crate::manifest::set(manifest);
    PLUGIN.with(|p| *p.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

fn with_plugin<T: Plugin, R>(f: impl FnOnce(&T) -> Result<R, PluginError>) -> Result<R, PluginError> {
    install_panic_hook();
    PLUGIN.with(|p| match p.borrow().as_ref().and_then(|b| b.downcast_ref::<T>()) {
        Some(plugin) => f(plugin),
        None => Err(PluginError::new("not-configured", "the host called the plugin before `configure`")),
    })
}

/// `preprocess`.
#[cfg(target_arch = "wasm32")]
pub fn __preprocess<T: Plugin>(item: wit::Item) -> Result<wit::Prepared, PluginError> {
    let item = crate::Item { payload: crate::Payload::from_handle(item.payload), content_type: item.content_type, metadata: item.metadata };
    let p = with_plugin::<T, _>(|plugin| plugin.preprocess(item))?;
    Ok(wit::Prepared {
        inputs: p.inputs.into_iter().map(crate::Tensor::into_handle).collect(),
        keep: p.keep.into_iter().map(crate::Tensor::into_handle).collect(),
        context: p.context,
    })
}

/// `postprocess`.
#[cfg(target_arch = "wasm32")]
pub fn __postprocess<T: Plugin>(outputs: Vec<wit::Tensor>, kept: Vec<wit::Tensor>, context: Vec<u8>) -> Result<wit::Output, PluginError> {
    let outputs = crate::Outputs {
        tensors: outputs.into_iter().map(crate::Tensor::from_handle).collect(),
        kept: kept.into_iter().map(crate::Tensor::from_handle).collect(),
        context,
    };
    let o = with_plugin::<T, _>(|plugin| plugin.postprocess(outputs))?;
    let body = match o.body {
        crate::Body::Bytes(b) => wit::Body::Bytes(b),
        crate::Body::Npz(entries) => wit::Body::Npz(entries.into_iter().map(|(n, t)| (n, t.into_handle())).collect()),
    };
    Ok(wit::Output { body, content_type: o.content_type, metadata: o.metadata })
}

/// `preprocess` (natively the exports are never called: call the plugin's methods).
#[cfg(not(target_arch = "wasm32"))]
pub fn __preprocess<T: Plugin>(_item: wit::Item) -> Result<wit::Prepared, PluginError> {
    with_plugin::<T, _>(|_| Err(PluginError::new("native", "plugin exports run only in a wasm component")))
}

/// `postprocess` (natively the exports are never called).
#[cfg(not(target_arch = "wasm32"))]
pub fn __postprocess<T: Plugin>(_o: Vec<wit::Tensor>, _k: Vec<wit::Tensor>, _c: Vec<u8>) -> Result<wit::Output, PluginError> {
    with_plugin::<T, _>(|_| Err(PluginError::new("native", "plugin exports run only in a wasm component")))
}
