//! NumPy conversion without a NumPy build dependency: arrays are read
//! through `__array_interface__` (the buffer protocol itself is not in the
//! 3.9 stable ABI), a batch is split into `.npy`/`.npz` items here, never in
//! a per-item Python loop, and reply arrays are `numpy.ndarray`s viewing a
//! `bytearray` (no further copy).

use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyTuple};
use tensorgate_client::Input;

use crate::npy;

/// A C-contiguous, native-endian view of a NumPy array.
pub(crate) struct ArrayView<'py> {
    _owner: Bound<'py, PyAny>,
    /// NumPy type string, e.g. `<f4`.
    pub(crate) descr: String,
    /// Shape.
    pub(crate) shape: Vec<usize>,
    /// The elements' bytes.
    pub(crate) data: &'py [u8],
}

/// Reads `obj` (any object NumPy can make an array of) through `__array_interface__`.
pub(crate) fn array_view<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<ArrayView<'py>> {
    let np = py.import("numpy")?;
    let mut arr = np.call_method1("ascontiguousarray", (obj,))?;
    let dtype = arr.getattr("dtype")?;
    if dtype.getattr("byteorder")?.extract::<String>()? == ">" {
        arr = arr.call_method1("astype", (dtype.call_method1("newbyteorder", ("<",))?,))?;
    }
    let iface = arr.getattr("__array_interface__")?;
    let descr: String = iface.get_item("typestr")?.extract()?;
    let shape: Vec<usize> = iface.get_item("shape")?.extract()?;
    if !iface.get_item("strides")?.is_none() {
        return Err(PyValueError::new_err("array is not C-contiguous"));
    }
    let (ptr, _readonly): (usize, bool) = iface.get_item("data")?.extract()?;
    let nbytes = npy::nbytes(&descr, &shape).map_err(PyTypeError::new_err)?;
    let data: &'py [u8] = if nbytes == 0 {
        &[]
    } else {
        // SAFETY: NumPy guarantees `nbytes` readable bytes at `ptr` for a
        // C-contiguous array; `_owner` keeps the array alive for 'py and we
        // only read while holding the GIL.
        unsafe { std::slice::from_raw_parts(ptr as *const u8, nbytes) }
    };
    Ok(ArrayView { _owner: arr, descr, shape, data })
}

/// Whether `obj` is array-like (has `__array_interface__`).
pub(crate) fn is_array(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("__array_interface__").unwrap_or(false)
}


static NDARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NP_DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DTYPES: Mutex<Vec<(String, Py<PyAny>)>> = Mutex::new(Vec::new());

/// `numpy.dtype(descr)`, made once per descr.
fn dtype<'py>(py: Python<'py>, descr: &str) -> PyResult<Bound<'py, PyAny>> {
    if let Some((_, d)) = DTYPES.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| k == descr) {
        return Ok(d.bind(py).clone());
    }
    let d = NP_DTYPE.import(py, "numpy", "dtype")?.call1((descr,))?;
    DTYPES.lock().unwrap_or_else(|p| p.into_inner()).push((descr.to_string(), d.clone().unbind()));
    Ok(d)
}

/// A NumPy array viewing `len` bytes of `buf` from `offset` (no copy).
pub(crate) fn ndarray_view<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyByteArray>,
    descr: &str,
    shape: &[usize],
    offset: usize,
) -> PyResult<Bound<'py, PyAny>> {
    NDARRAY.import(py, "numpy", "ndarray")?.call1((PyTuple::new(py, shape)?, dtype(py, descr)?, buf, offset))
}

/// Whether replies of this content type become NumPy arrays.
pub(crate) fn is_numpy(content_type: &str) -> bool {
    matches!(content_type, "application/x-npz" | "application/x-npy")
}

/// Splits one batch of arrays (`names[i]` -> `arrays[i]`, all with the
/// same first dimension) into items of `rows_per_item` rows: `.npz`, or
/// `.npy` for a single unnamed array. Returns the items and the batch's rows.
pub(crate) fn split_batch(
    py: Python<'_>,
    names: &[Option<String>],
    arrays: &[Bound<'_, PyAny>],
    rows_per_item: usize,
) -> PyResult<(Vec<Input>, usize)> {
    if names.len() != arrays.len() || arrays.is_empty() {
        return Err(PyValueError::new_err("give one name per array, and at least one array"));
    }
    if names.len() > 1 && names.iter().any(Option::is_none) {
        return Err(PyValueError::new_err("several arrays need a name each"));
    }
    let views = arrays.iter().map(|a| array_view(py, a)).collect::<PyResult<Vec<_>>>()?;
    let rows = match views[0].shape.first() {
        Some(&n) => n,
        None => return Err(PyValueError::new_err("arrays need a leading batch dimension")),
    };
    if rows == 0 {
        return Err(PyValueError::new_err("the batch has no rows"));
    }
    for (n, v) in names.iter().zip(&views) {
        if v.shape.first() != Some(&rows) {
            return Err(PyValueError::new_err(format!(
                "array {} has {:?} rows, the first array {rows}: all inputs share the batch dimension",
                n.as_deref().unwrap_or("0"),
                v.shape.first()
            )));
        }
    }
    let rows_per_item = rows_per_item.max(1);
    let row_bytes: Vec<usize> = views.iter().map(|v| v.data.len() / rows).collect();
    // Headers depend only on the row count: the full items share one
    // writer, the last (shorter) item gets its own.
    let writer = |n: usize| {
        let meta: Vec<(&str, &str, Vec<usize>)> = names
            .iter()
            .zip(&views)
            .map(|(name, v)| {
                let mut shape = v.shape.clone();
                shape[0] = n;
                (name.as_deref().unwrap_or(""), v.descr.as_str(), shape)
            })
            .collect();
        npy::NpzWriter::new(&meta).map_err(PyValueError::new_err)
    };
    let full_rows = rows_per_item.min(rows);
    let full = writer(full_rows)?;
    let single = names[0].is_none();
    let mut inputs = Vec::with_capacity(rows.div_ceil(rows_per_item));
    let mut data: Vec<&[u8]> = Vec::with_capacity(views.len());
    let mut first = 0;
    while first < rows {
        let last = (first + rows_per_item).min(rows);
        let input = if single {
            let v = &views[0];
            let mut shape = v.shape.clone();
            shape[0] = last - first;
            let npy = npy::write_npy(&v.descr, &shape, &v.data[first * row_bytes[0]..last * row_bytes[0]]).map_err(PyValueError::new_err)?;
            Input::new(npy, "application/x-npy")
        } else {
            data.clear();
            data.extend(views.iter().zip(&row_bytes).map(|(v, &rb)| &v.data[first * rb..last * rb]));
            let payload = if last - first == full_rows { full.write(&data) } else { writer(last - first)?.write(&data) };
            let payload = payload.map_err(PyValueError::new_err)?;
            Input::new(payload, "application/x-npz")
        };
        inputs.push(input);
        first = last;
    }
    Ok((inputs, rows))
}
