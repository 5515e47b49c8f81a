//! Python values as items: bytes as they are, an array as `.npy`, a dict
//! of arrays as `.npz`, a str as UTF-8 text, anything else as JSON; and the
//! metadata sent with them.

use std::collections::BTreeMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};
use tensorgate_client::Input;

use crate::npy;
use crate::numpy::{array_view, is_array};

/// One Python object as one item: bytes as they are, an array as `.npy`, a
/// dict of arrays as `.npz`, a str as UTF-8 text, anything else as JSON.
fn to_input(py: Python<'_>, obj: &Bound<'_, PyAny>, content_type: Option<&str>) -> PyResult<Input> {
    let (payload, ct): (Vec<u8>, &str) = if let Ok(b) = obj.cast::<PyBytes>() {
        (b.as_bytes().to_vec(), "application/octet-stream")
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        (b.to_vec(), "application/octet-stream")
    } else if is_array(obj) {
        let a = array_view(py, obj)?;
        (npy::write_npy(&a.descr, &a.shape, a.data).map_err(PyValueError::new_err)?, "application/x-npy")
    } else if let Ok(s) = obj.cast::<PyString>() {
        (s.to_cow()?.as_bytes().to_vec(), "text/plain")
    } else if let Ok(d) = obj.cast::<PyDict>() {
        if !d.is_empty() && d.values().iter().all(|v| is_array(&v)) {
            let mut views = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                views.push((k.extract::<String>()?, array_view(py, &v)?));
            }
            let entries: Vec<(&str, &str, Vec<usize>, &[u8])> =
                views.iter().map(|(n, a)| (n.as_str(), a.descr.as_str(), a.shape.clone(), a.data)).collect();
            (npy::write_npz(&entries).map_err(PyValueError::new_err)?, "application/x-npz")
        } else {
            (json_dumps(py, obj)?, "application/json")
        }
    } else {
        (json_dumps(py, obj)?, "application/json")
    };
    Ok(Input::new(payload, content_type.unwrap_or(ct)))
}

/// `json.dumps(obj)` as UTF-8 bytes.
fn json_dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let s = py.import("json")?.call_method1("dumps", (obj,))?;
    Ok(s.extract::<String>()?.into_bytes())
}

/// A dict of metadata (values made strings with `str()`).
fn meta_map(d: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, String>> {
    let d = d.cast::<PyDict>().map_err(|_| PyTypeError::new_err("metadata must be a dict, or a list of dicts (one per item)"))?;
    d.iter().map(|(k, v)| Ok((k.str()?.to_cow()?.into_owned(), v.str()?.to_cow()?.into_owned()))).collect()
}

/// Applies `metadata` (one dict for every item, or one per item) to `inputs`.
pub(crate) fn apply_metadata(inputs: &mut [Input], metadata: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let Some(m) = metadata.filter(|m| !m.is_none()) else { return Ok(()) };
    if m.cast::<PyDict>().is_ok() {
        let map = meta_map(m)?;
        for input in inputs.iter_mut() {
            input.metadata.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        return Ok(());
    }
    let per_item = m.try_iter()?.map(|d| meta_map(&d?)).collect::<PyResult<Vec<_>>>()?;
    if per_item.len() != inputs.len() {
        return Err(PyValueError::new_err(format!("{} metadata dicts for {} items", per_item.len(), inputs.len())));
    }
    for (input, map) in inputs.iter_mut().zip(per_item) {
        input.metadata.extend(map);
    }
    Ok(())
}

/// The items of a sequence of Python values; a lone value (bytes, str,
/// array, dict) is refused, as it is not a sequence of items.
pub(crate) fn collect_inputs(py: Python<'_>, items: &Bound<'_, PyAny>, content_type: Option<&str>) -> PyResult<Vec<Input>> {
    if items.cast::<PyBytes>().is_ok() || items.cast::<PyString>().is_ok() || is_array(items) || items.cast::<PyDict>().is_ok() {
        return Err(PyTypeError::new_err(
            "items must be a sequence of items (bytes, arrays, dicts of arrays, JSON-able values); \
             pass a batch of arrays to predict() without wrapping it in a list to split it by rows",
        ));
    }
    let mut inputs = Vec::new();
    for item in items.try_iter()? {
        inputs.push(to_input(py, &item?, content_type)?);
    }
    if inputs.is_empty() {
        return Err(PyValueError::new_err("no items to send"));
    }
    Ok(inputs)
}
