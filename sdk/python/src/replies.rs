//! Replies as Python values: each payload by its content type (JSON,
//! text, bytes, NumPy arrays viewing one shared `bytearray`), all replies
//! of a request in input order, or the `.npz` replies of a batched request
//! joined back into one array per output.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};
use tensorgate_client::{ItemReply, Reply};

use crate::errors::{error_instance, item_error, item_error_value};
use crate::npy;
use crate::numpy::{is_numpy, ndarray_view};

static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `json.loads(text)`.
fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    JSON_LOADS.import(py, "json", "loads")?.call1((text,))
}

/// How a request's items were made, and so how its replies are returned.
pub(crate) enum Mode {
    /// One Python value per item, in input order (`raw`: `(content_type, bytes)`).
    List { raw: bool },
    /// Rows of one batch split into items of `rows_per_item`; the replies'
    /// arrays are joined back into one array per output.
    Batched { rows: usize, rows_per_item: usize },
}

/// A reply payload as a Python value, by its content type. Arrays view
/// `arena` (a copy of the payload starting at byte `at`) without copying.
pub(crate) fn decode_reply<'py>(
    py: Python<'py>,
    r: &ItemReply,
    arena: Option<(&Bound<'py, PyByteArray>, usize)>,
) -> PyResult<Bound<'py, PyAny>> {
    let bad = |e: String| error_instance(py, "ProtocolError", &format!("item {}: {e}", r.index), None);
    let own;
    let (buf, at) = match arena {
        Some(a) => a,
        None => {
            own = PyByteArray::new(py, &r.payload);
            (&own, 0)
        }
    };
    let offset = |data: &[u8]| at + (data.as_ptr() as usize - r.payload.as_ptr() as usize);
    match r.content_type.as_str() {
        "application/x-npz" => {
            let d = PyDict::new(py);
            for a in npy::parse_npz(&r.payload).map_err(bad)? {
                d.set_item(&a.name, ndarray_view(py, buf, &a.descr, &a.shape, offset(a.data))?)?;
            }
            Ok(d.into_any())
        }
        "application/x-npy" => {
            let a = npy::parse_npy("", &r.payload).map_err(bad)?;
            ndarray_view(py, buf, &a.descr, &a.shape, offset(a.data))
        }
        ct if ct.contains("json") => json_loads(py, &String::from_utf8_lossy(&r.payload)),
        ct if ct.starts_with("text/") => Ok(PyString::new(py, &String::from_utf8_lossy(&r.payload)).into_any()),
        _ => Ok(PyBytes::new(py, &r.payload).into_any()),
    }
}

/// All replies' values in input order, failed items as `ItemError`s; the
/// arrays of all replies share one `bytearray` (one copy, one allocation).
pub(crate) fn decode_all<'py>(py: Python<'py>, reply: &Reply, raw: bool) -> PyResult<(Bound<'py, PyList>, Option<usize>)> {
    let mut starts = Vec::with_capacity(reply.outcomes.len());
    let mut total = 0usize;
    for outcome in &reply.outcomes {
        starts.push(total);
        if let Ok(r) = outcome {
            if !raw && is_numpy(&r.content_type) {
                total += r.payload.len();
            }
        }
    }
    let arena = PyByteArray::new_with(py, total, |dst: &mut [u8]| {
        for (outcome, &at) in reply.outcomes.iter().zip(&starts) {
            if let Ok(r) = outcome {
                if !raw && is_numpy(&r.content_type) {
                    dst[at..at + r.payload.len()].copy_from_slice(&r.payload);
                }
            }
        }
        Ok(())
    })?;
    let mut values = Vec::with_capacity(reply.outcomes.len());
    let mut first_failed = None;
    for (i, (outcome, &at)) in reply.outcomes.iter().zip(&starts).enumerate() {
        values.push(match outcome {
            Ok(r) if raw => (r.content_type.as_str(), PyBytes::new(py, &r.payload)).into_pyobject(py)?.into_any(),
            Ok(r) if is_numpy(&r.content_type) => decode_reply(py, r, Some((&arena, at)))?,
            Ok(r) => decode_reply(py, r, None)?,
            Err(f) => {
                first_failed.get_or_insert(i);
                item_error_value(py, f)?
            }
        });
    }
    Ok((PyList::new(py, values)?, first_failed))
}

/// A serde value as plain Python values (through JSON).
pub(crate) fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    json_loads(py, &serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))?)
}

/// The host's summary as a dict.
pub(crate) fn summary_dict<'py>(py: Python<'py>, s: &tensorgate_client::protocol::Summary) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, s)
}

/// Joins the `.npz` replies of a batched request into one array per output.
pub(crate) fn join_batched<'py>(py: Python<'py>, reply: &Reply, rows: usize, rows_per_item: usize) -> PyResult<Bound<'py, PyList>> {
    let mut parsed = Vec::with_capacity(reply.outcomes.len());
    for outcome in &reply.outcomes {
        match outcome {
            Err(f) => {
                let first = f.index as usize * rows_per_item;
                let last = (first + rows_per_item).min(rows);
                let message = format!("rows {first}..{last}: {}", f.message);
                return Err(item_error(py, f, Some(&message)));
            }
            Ok(r) => {
                let bad = |e: String| error_instance(py, "ProtocolError", &format!("item {}: {e}", r.index), None);
                let arrays = match r.content_type.as_str() {
                    "application/x-npz" => npy::parse_npz(&r.payload).map_err(bad)?,
                    "application/x-npy" => vec![npy::parse_npy("output_0", &r.payload).map_err(bad)?],
                    other => {
                        return Err(PyTypeError::new_err(format!(
                            "batched arrays need .npz or .npy replies; the model answered {other} (pass a list of items instead)"
                        )))
                    }
                };
                parsed.push(arrays);
            }
        }
    }
    let out = PyList::empty(py);
    let Some(first) = parsed.first() else { return Ok(out) };
    for (k, head) in first.iter().enumerate() {
        let mut total_rows = 0usize;
        let mut total_bytes = 0usize;
        for (i, arrays) in parsed.iter().enumerate() {
            let a = arrays.get(k).filter(|a| a.name == head.name && a.descr == head.descr && a.shape.get(1..) == head.shape.get(1..));
            let Some(a) = a else {
                return Err(error_instance(py, "ProtocolError", &format!("item {i}: output `{}` differs in name, dtype or shape from item 0", head.name), None));
            };
            total_rows += a.shape.first().copied().unwrap_or(1);
            total_bytes += a.data.len();
        }
        let buf = PyByteArray::new_with(py, total_bytes, |dst: &mut [u8]| {
            let mut at = 0;
            for arrays in &parsed {
                let d = arrays[k].data;
                dst[at..at + d.len()].copy_from_slice(d);
                at += d.len();
            }
            Ok(())
        })?;
        let mut shape = head.shape.clone();
        if shape.is_empty() {
            shape.push(total_rows);
        } else {
            shape[0] = total_rows;
        }
        out.append((head.name.as_str(), head.descr.as_str(), PyTuple::new(py, &shape)?, buf))?;
    }
    Ok(out)
}
