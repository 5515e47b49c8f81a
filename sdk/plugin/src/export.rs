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

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn with_plugin<T: Plugin, R>(f: impl FnOnce(&T) -> Result<R, PluginError>) -> Result<R, PluginError> {
    install_panic_hook();
    PLUGIN.with(|p| match p.borrow().as_ref().and_then(|b| b.downcast_ref::<T>()) {
        Some(plugin) => f(plugin),
        None => Err(PluginError::new("not-configured", "the host called the plugin before `configure`")),
    })
}

/// `preprocess` of a group of items: [`Plugin::preprocess_batch`].
#[cfg(target_arch = "wasm32")]
pub fn __preprocess<T: Plugin>(items: Vec<wit::Item>) -> Vec<Result<wit::Prepared, PluginError>> {
    let n = items.len();
    let items: Vec<crate::Item> = items
        .into_iter()
        .map(|item| crate::Item { payload: crate::Payload::from_handle(item.payload), content_type: item.content_type, metadata: item.metadata })
        .collect();
    let results = match with_plugin::<T, _>(|plugin| Ok(plugin.preprocess_batch(items))) {
        Ok(results) => results,
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    };
    results
        .into_iter()
        .map(|r| {
            r.map(|p| wit::Prepared {
                inputs: p.inputs.into_iter().map(crate::Tensor::into_handle).collect(),
                keep: p.keep.into_iter().map(crate::Tensor::into_handle).collect(),
                context: p.context,
            })
        })
        .collect()
}

/// `postprocess` of a group of items: [`Plugin::postprocess_batch`].
#[cfg(target_arch = "wasm32")]
pub fn __postprocess<T: Plugin>(items: Vec<wit::Produced>) -> Vec<Result<wit::Output, PluginError>> {
    let n = items.len();
    let items: Vec<crate::Outputs> = items
        .into_iter()
        .map(|p| crate::Outputs {
            tensors: p.outputs.into_iter().map(crate::Tensor::from_handle).collect(),
            kept: p.kept.into_iter().map(crate::Tensor::from_handle).collect(),
            context: p.context,
        })
        .collect();
    let results = match with_plugin::<T, _>(|plugin| Ok(plugin.postprocess_batch(items))) {
        Ok(results) => results,
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    };
    results
        .into_iter()
        .map(|r| {
            r.map(|o| {
                let body = match o.body {
                    crate::Body::Bytes(b) => wit::Body::Bytes(b),
                    crate::Body::Npz(entries) => wit::Body::Npz(entries.into_iter().map(|(n, t)| (n, t.into_handle())).collect()),
                };
                wit::Output { body, content_type: o.content_type, metadata: o.metadata }
            })
        })
        .collect()
}

/// `preprocess` (natively the exports are never called: call the plugin's methods).
#[cfg(not(target_arch = "wasm32"))]
pub fn __preprocess<T: Plugin>(items: Vec<wit::Item>) -> Vec<Result<wit::Prepared, PluginError>> {
    items.iter().map(|_| Err(PluginError::new("native", "plugin exports run only in a wasm component"))).collect()
}

/// `postprocess` (natively the exports are never called).
#[cfg(not(target_arch = "wasm32"))]
pub fn __postprocess<T: Plugin>(items: Vec<wit::Produced>) -> Vec<Result<wit::Output, PluginError>> {
    items.iter().map(|_| Err(PluginError::new("native", "plugin exports run only in a wasm component"))).collect()
}
