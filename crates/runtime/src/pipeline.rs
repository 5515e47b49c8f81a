//! The path of one item through an application:
//! preprocess (plugin) → forward (model executor) → postprocess (plugin).
//!
//! Deadlines are not checked here: the request machine owns them and
//! cancels an item by dropping its future, which also withdraws it from the
//! model's queue.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_protocol::{ErrorCode, ItemHead, Timings};

use crate::application::Application;
use crate::executor::ModelError;
use tensorgate_server::manifest::{check_tensors, TensorDecl};
use tensorgate_server::metrics;
use crate::plugin::{CallError, Item, Output, Produced};
use tensorgate_server::request::ItemFailure;
use tensorgate_backend::Tensor;

/// A model's error as the item's failure (`busy` with a retry hint when
/// its queue is full).
pub fn model_failure(e: ModelError) -> ItemFailure {
    {
        match e {
            ModelError::Busy { retry_after, .. } => ItemFailure {
                code: ErrorCode::Busy,
                message: e.to_string(),
                retry_after_ms: Some(retry_after.as_millis().max(1) as u64),
            },
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
/// time went. Counts the item and records its metrics. `alone`: the item is a
/// lone item of the only request open on the host, so a short forward may
/// run on this thread ([`crate::executor::ModelExecutor::forward`]).
pub async fn process_item(
    app: &Application,
    head: ItemHead,
    payload: Bytes,
    timings: &mut Timings,
    alone: bool,
) -> Result<Output, ItemFailure> {
    *timings = Timings::default();
    let start = Instant::now();
    let result = run(app, head, payload, timings, alone).await;
    let counter = if result.is_ok() { &app.counters.items_ok } else { &app.counters.items_failed };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Err(f) = &result {
        crate::application::ITEM_FAILED.ring();
        FAILURES_LOGGED.log(app, f);
    }
    let status = match &result {
        Ok(_) => std::borrow::Cow::Borrowed("ok"),
        Err(f) => std::borrow::Cow::Owned(f.code.to_string()),
    };
    metrics::item(&app.counters.metrics, app.name(), &status, timings, start.elapsed(), || app.plugin.idle_instances());
    result
}

async fn run(app: &Application, head: ItemHead, payload: Bytes, timings: &mut Timings, alone: bool) -> Result<Output, ItemFailure> {
    accepted(app, head.index, &head.content_type)?;
    let echoed = match app.manifest.plugin.echo_metadata && !head.metadata.is_empty() {
        true => Some(head.metadata.clone()),
        false => None,
    };
    let item = Item {
        // Stays in the host: the plugin reads what it needs through its handle.
        data: payload,
        content_type: head.content_type,
        metadata: head.metadata.into_iter().collect(),
    };
    let arrived = Instant::now();
    let coming = app.model.coming();
    // In one call with the items waiting for this version, if any.
    let (prepared, share) = app.plugin.preprocess_grouped(item, |call, bytes| call_plugin(app, bytes, call)).await;
    let prepared = prepared?;
    timings.preprocess_us = micros(share);
    check_inputs(&app.manifest.inputs, &prepared.inputs)
        .map_err(|m| ItemFailure::new(ErrorCode::PluginFailed, format!("plugin returned invalid model inputs: {m}")))?;

    let forward = app.model.forward(prepared.inputs, Some(coming), alone).await.map_err(model_failure)?;
    timings.forward_us = micros(forward.run_time);
    let outputs = forward.outputs;
    check_tensors(&app.manifest.outputs, &outputs)
        .map_err(|m| ItemFailure::new(ErrorCode::ModelError, format!("model output does not match the manifest: {m}")))?;

    let produced = Produced { outputs, kept: prepared.keep, context: prepared.context };
    let (output, share) = app.plugin.postprocess_grouped(produced, |call, bytes| call_plugin(app, bytes, call)).await;
    let mut output = output?;
    timings.postprocess_us = micros(share);
    crate::reply::check_keys(app.name(), &app.manifest, &output.content_type, &output.data)?;
    if let Some(mut metadata) = echoed {
        // The item's entries first, the plugin's over them.
        metadata.extend(std::mem::take(&mut output.metadata));
        output.metadata = metadata.into_iter().collect();
    }
    let size = output.data.len()
        + output.content_type.len()
        + output.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if size as u64 > app.max_output_bytes {
        return Err(ItemFailure::new(
            ErrorCode::PluginFailed,
            format!(
                "plugin output of {size} bytes exceeds the limit of {} bytes (max_frame_bytes less 256)",
                app.max_output_bytes
            ),
        ));
    }
    let busy = timings.preprocess_us + timings.forward_us + timings.postprocess_us;
    timings.queue_us = micros(arrived.elapsed()).saturating_sub(busy);
    Ok(output)
}

/// Runs one item from a bundle's `[warmup]` through `app` end to end, on
/// this thread (a blocking one, before the version is visible): the item
/// path awaits only the executor's reply channel, which needs no runtime.
pub fn warm_up(
    app: &Application,
    data: Vec<u8>,
    content_type: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), ItemFailure> {
    run_sample(app, data, content_type, metadata).map(drop)
}

/// Runs one item from a file through `app` off the request path (not
/// counted) and returns the plugin's output.
pub fn run_sample(
    app: &Application,
    data: Vec<u8>,
    content_type: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<Output, ItemFailure> {
    let head = ItemHead {
        index: 0,
        content_type: content_type.to_string(),
        metadata: metadata.clone(),
        compression: tensorgate_protocol::Compression::None,
    };
    pollster::block_on(run(app, head, Bytes::from(data), &mut Timings::default(), false))
}

/// Item failures logged per second at most; the rest are counted and the
/// count is given with the next line logged.
pub const FAILURE_LOG_PER_S: u32 = 10;

static FAILURES_LOGGED: FailureLog = FailureLog { window: std::sync::Mutex::new(None) };

/// Logs item failures (model, version, code, message), at most
/// [`FAILURE_LOG_PER_S`] a second.
struct FailureLog {
    /// Start of the current second, lines logged in it, failures not logged since the last line.
    window: std::sync::Mutex<Option<(Instant, u32, u64)>>,
}

impl FailureLog {
    fn log(&self, app: &Application, f: &ItemFailure) {
        let suppressed = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (start, logged, skipped) = w.get_or_insert((now, 0, 0));
            if now.duration_since(*start) >= Duration::from_secs(1) {
                (*start, *logged) = (now, 0);
            }
            if *logged >= FAILURE_LOG_PER_S {
                *skipped += 1;
                return;
            }
            *logged += 1;
            std::mem::take(skipped)
        };
        tracing::warn!(app = app.name(), version = app.version(), code = %f.code, not_logged_before = suppressed, "item failed: {}", f.message);
    }
}

/// Whether the plugin accepts items of `content_type` (compared without
/// parameters such as `; charset=utf-8`, case-insensitively). A plugin that
/// declares no types accepts any, and so does an item that states none.
fn accepted(app: &Application, index: u32, content_type: &str) -> Result<(), ItemFailure> {
    let accepts = &app.info.accepts;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if accepts.is_empty() || essence.is_empty() || accepts.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
        return Ok(());
    }
    Err(ItemFailure::new(
        ErrorCode::UnsupportedContentType,
        format!("item {index}: content type `{essence}` is not one `{}` accepts ({})", app.name(), accepts.join(", ")),
    ))
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Runs a synchronous plugin call. Calls expected to be short (the plugin's
/// recent average per item is under [`INLINE_CALL_MAX`] and the data is small) run
/// right here on the async worker: a hand-off costs more than the call. Others
/// run under `block_in_place`, which moves this worker's other tasks away
/// first, so a slow plugin never stalls unrelated requests (off a runtime,
/// as during warm-up, `block_in_place` just runs the call). A plugin that
/// imports WASI never runs inline: wasmtime-wasi's stream calls block on
/// the runtime, which an async worker may not do.
fn call_plugin<R>(app: &Application, bytes: usize, f: impl FnOnce() -> R) -> R {
    if bytes <= INLINE_BYTES_MAX && app.plugin.average_call() <= INLINE_CALL_MAX && !app.plugin.uses_wasi() {
        f()
    } else {
        tokio::task::block_in_place(f)
    }
}

/// Plugin calls whose recent average is at most this run inline.
pub const INLINE_CALL_MAX: Duration = Duration::from_micros(100);
/// ... and only when the item or outputs are at most this large.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// What a plugin's model inputs must satisfy: at least one tensor; each
/// with bytes matching its shape and dtype and at least one dimension; one
/// batch size >= 1 for all; and the manifest's declared inputs
/// ([`check_tensors`], the same check the model's outputs get).
pub fn check_inputs(declared: &[TensorDecl], inputs: &[Tensor]) -> Result<(), String> {
    if inputs.is_empty() {
        return Err("no tensors".into());
    }
    let batch = inputs[0].shape.first().copied();
    for (i, t) in inputs.iter().enumerate() {
        t.validate().map_err(|e| format!("input {i}: {e}"))?;
        if t.shape.is_empty() || t.shape.first().copied() != batch || batch == Some(0) {
            return Err(format!("input {i} has shape {:?}; all inputs need the same batch size >= 1", t.shape));
        }
    }
    check_tensors(declared, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorgate_backend::Dtype;

    fn t(shape: &[u64]) -> Tensor {
        let n: u64 = shape.iter().product();
        Tensor { dtype: Dtype::F32, shape: shape.to_vec(), data: vec![0; n as usize * 4].into() }
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
        let mut short = t(&[2, 3]);
        short.data = vec![0; 23].into();
        assert!(check_inputs(&[], &[short]).unwrap_err().contains("needs 24 bytes, has 23"));
    }

    #[test]
    fn declared_inputs_use_the_manifest_check() {
        let m = tensorgate_server::manifest::Manifest::parse("name='a'\nversion=1\n[[inputs]]\nname='x'\ndtype='f32'\nshape=[-1,3]\n", "m").unwrap();
        assert!(check_inputs(&m.inputs, &[t(&[5, 3])]).is_ok());
        let e = check_inputs(&m.inputs, &[t(&[5, 4])]).unwrap_err();
        assert_eq!(e, "`x` is f32 [5, 4], manifest declares f32 [-1, 3]");
    }
}
