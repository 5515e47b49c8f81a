//! The path of one item through an application:
//! preprocess (plugin) → forward (model executor) → postprocess (plugin).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tensorgate_protocol::{ErrorCode, ItemHead, Timings};

use crate::executor::ModelError;
use crate::metrics;
use crate::plugin::{CallError, Item, Output, Tensor};
use crate::repository::Application;
use crate::tensor;

/// Why an item failed, as sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message naming what was wrong.
    pub message: String,
    /// For `busy`: suggested wait before retrying (milliseconds).
    pub retry_after_ms: Option<u64>,
}

impl ItemFailure {
    /// A failure with no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ItemFailure { code, message: message.into(), retry_after_ms: None }
    }

    fn deadline(stage: &str) -> Self {
        ItemFailure::new(ErrorCode::DeadlineExceeded, format!("deadline passed before {stage}; item dropped"))
    }
}

impl From<ModelError> for ItemFailure {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Busy { retry_after, .. } => ItemFailure {
                code: ErrorCode::Busy,
                message: e.to_string(),
                retry_after_ms: Some(retry_after.as_millis().max(1) as u64),
            },
            ModelError::DeadlineExceeded => ItemFailure::deadline("the forward pass"),
            other => ItemFailure::new(ErrorCode::ModelError, other.to_string()),
        }
    }
}

impl From<CallError> for ItemFailure {
    fn from(e: CallError) -> Self {
        let code = match e {
            CallError::Plugin(_) => ErrorCode::PluginError,
            _ => ErrorCode::PluginFailed,
        };
        ItemFailure::new(code, e.to_string())
    }
}

/// Runs one item through `app`; `timings` (fresh per item) records where
/// time went. An item whose `deadline` has passed is dropped before
/// preprocess and before the forward pass.
pub async fn process_item(
    app: &Arc<Application>,
    head: ItemHead,
    payload: Bytes,
    deadline: Option<Instant>,
    timings: &mut Timings,
) -> Result<Output, ItemFailure> {
    *timings = Timings::default();
    let start = Instant::now();
    let result = run(app, head, payload, deadline, timings).await;
    let counter = if result.is_ok() { &app.counters.items_ok } else { &app.counters.items_failed };
    counter.fetch_add(1, Ordering::Relaxed);
    let status = match &result {
        Ok(_) => "ok".to_string(),
        Err(f) => f.code.to_string(),
    };
    metrics::item(app.name(), &status, timings, start.elapsed());
    metrics::plugin_instances(app.name(), app.plugin.idle_instances());
    result
}

async fn run(
    app: &Application,
    head: ItemHead,
    payload: Bytes,
    deadline: Option<Instant>,
    timings: &mut Timings,
) -> Result<Output, ItemFailure> {
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    if expired() {
        return Err(ItemFailure::deadline("preprocess"));
    }
    let item = Item {
        // Free when the payload is uniquely owned (e.g. just decompressed).
        data: Vec::from(payload),
        content_type: head.content_type,
        metadata: head.metadata.into_iter().collect(),
    };
    let queued = Instant::now();
    let t = Instant::now();
    let prepared = call_plugin(app, item.data.len(), || app.plugin.preprocess(&item))?;
    timings.preprocess_us = micros(t.elapsed());
    validate_inputs(app, &prepared.inputs)?;

    if expired() {
        return Err(ItemFailure::deadline("the forward pass"));
    }
    let forward = app.model.forward(prepared.inputs, deadline).await?;
    timings.forward_us = micros(forward.run_time);
    let outputs = forward.outputs;
    validate_outputs(app, &outputs)?;

    let context = prepared.context;
    let bytes = outputs.iter().map(|t| t.data.len()).sum::<usize>() + context.len();
    let t = Instant::now();
    let output = call_plugin(app, bytes, || app.plugin.postprocess(&outputs, &context))?;
    timings.postprocess_us = micros(t.elapsed());
    let size = output.data.len() + output.content_type.len() + output.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if size as u64 > app.max_output_bytes {
        return Err(ItemFailure::new(
            ErrorCode::PluginFailed,
            format!("plugin output of {size} bytes exceeds the limit of {} bytes (max_frame_bytes less 256)", app.max_output_bytes),
        ));
    }
    let busy = timings.preprocess_us + timings.forward_us + timings.postprocess_us;
    timings.queue_us = micros(queued.elapsed()).saturating_sub(busy);
    Ok(output)
}

/// Runs one item from a bundle's `[warmup]` through `app` end to end,
/// synchronously (on a blocking thread, before the version is visible).
pub fn warm_up(
    app: &Application,
    data: Vec<u8>,
    content_type: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), ItemFailure> {
    let head = ItemHead {
        index: 0,
        content_type: content_type.to_string(),
        metadata: metadata.clone(),
        compression: tensorgate_protocol::Compression::None,
    };
    block_on(run(app, head, Bytes::from(data), None, &mut Timings::default())).map(drop)
}

/// Drives `fut` to completion on this thread (the item path awaits only the
/// executor's reply channel, which needs no runtime).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

/// Runs a synchronous plugin call. Calls expected to be short (the plugin's
/// recent average is under [`INLINE_CALL_MAX`] and the data is small) run
/// right here on the async worker: a hand-off costs more than the call. Others
/// run under `block_in_place`, which moves this worker's other tasks away
/// first, so a slow plugin never stalls unrelated requests.
fn call_plugin<R>(app: &Application, bytes: usize, f: impl FnOnce() -> R) -> R {
    if bytes <= INLINE_BYTES_MAX && app.plugin.average_call() <= INLINE_CALL_MAX {
        f()
    } else {
        tokio::task::block_in_place(f)
    }
}

/// Plugin calls whose recent average is at most this run inline.
pub const INLINE_CALL_MAX: std::time::Duration = std::time::Duration::from_micros(100);
/// ... and only when the item or outputs are at most this large.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// Checks the model's outputs against the manifest's declared outputs (when
/// it declares them) before the plugin sees them.
pub fn validate_outputs(app: &Application, outputs: &[Tensor]) -> Result<(), ItemFailure> {
    let declared = &app.manifest.outputs;
    if declared.is_empty() {
        return Ok(());
    }
    let bad = |m: String| ItemFailure::new(ErrorCode::ModelError, format!("model output does not match the manifest: {m}"));
    if declared.len() != outputs.len() {
        return Err(bad(format!("{} tensors, manifest declares {}", outputs.len(), declared.len())));
    }
    for (decl, t) in declared.iter().zip(outputs) {
        let want: crate::plugin::Dtype = decl.dtype.into();
        let shape_ok = decl.shape.len() == t.shape.len()
            && decl.shape.iter().zip(&t.shape).all(|(&d, &s)| d == -1 || d as u64 == s);
        if want != t.dtype || !shape_ok {
            return Err(bad(format!(
                "output `{}` is {:?} {:?}, manifest declares {:?} {:?}",
                decl.name, t.dtype, t.shape, decl.dtype, decl.shape
            )));
        }
    }
    Ok(())
}

/// Checks the plugin's tensors against their bytes and the manifest's inputs.
pub fn validate_inputs(app: &Application, inputs: &[Tensor]) -> Result<(), ItemFailure> {
    check_inputs(&app.manifest.inputs, inputs)
        .map_err(|m| ItemFailure::new(ErrorCode::PluginFailed, format!("plugin returned invalid model inputs: {m}")))
}

/// What [`validate_inputs`] checks, on the declared inputs alone: at least
/// one tensor; each with bytes matching its shape and dtype and at least one
/// dimension; one batch size >= 1 for all; dtype and shape as declared.
pub fn check_inputs(declared: &[crate::repository::TensorDecl], inputs: &[Tensor]) -> Result<(), String> {
    if inputs.is_empty() {
        return Err("no tensors".into());
    }
    if !declared.is_empty() && declared.len() != inputs.len() {
        return Err(format!("{} tensors, manifest declares {}", inputs.len(), declared.len()));
    }
    let batch = inputs[0].shape.first().copied();
    for (i, t) in inputs.iter().enumerate() {
        tensor::validate(t).map_err(|e| format!("input {i}: {e}"))?;
        if t.shape.is_empty() || t.shape.first().copied() != batch || batch == Some(0) {
            return Err(format!("input {i} has shape {:?}; all inputs need the same batch size >= 1", t.shape));
        }
        if let Some(decl) = declared.get(i) {
            let want: crate::plugin::Dtype = decl.dtype.into();
            let shape_ok = decl.shape.len() == t.shape.len()
                && decl.shape.iter().zip(&t.shape).all(|(&d, &s)| d == -1 || d as u64 == s);
            if want != t.dtype || !shape_ok {
                return Err(format!(
                    "input `{}` is {:?} {:?}, manifest declares {:?} {:?}",
                    decl.name, t.dtype, t.shape, decl.dtype, decl.shape
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Dtype;

    fn t(shape: &[u64]) -> Tensor {
        let n: u64 = shape.iter().product();
        Tensor { dtype: Dtype::F32, shape: shape.to_vec(), data: vec![0; n as usize * 4] }
    }

    #[test]
    fn inputs_need_a_batch_dimension() {
        assert!(check_inputs(&[], &[t(&[2, 3]), t(&[2])]).is_ok());
        // A 0-dimensional input used to pass and then panic the batcher.
        let e = check_inputs(&[], &[t(&[])]).unwrap_err();
        assert!(e.contains("batch size >= 1"), "{e}");
        assert!(check_inputs(&[], &[t(&[0, 3])]).is_err());
        assert!(check_inputs(&[], &[t(&[2, 3]), t(&[3, 3])]).is_err());
        assert!(check_inputs(&[], &[]).is_err());
    }
}
