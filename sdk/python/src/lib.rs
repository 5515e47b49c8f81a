//! `tensorgate._native`: the Python bindings over `tensorgate-client`.
//!
//! One protocol implementation: every byte on the wire is written and read by
//! the Rust client. A tokio runtime lives inside each `NativeClient`; calls
//! that wait (connect, status, the result of a request, the next streamed
//! item) release the GIL and poll for Ctrl-C every 100 ms. NumPy arrays are
//! read through their `__array_interface__` (the buffer protocol itself is
//! not in the 3.9 stable ABI) and results come back as NumPy arrays viewing
//! `bytearray`s (the buffer protocol, no further copy); splitting a batch
//! into items and joining the replies happen here, never in a per-item
//! Python loop.

mod npy;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};
use tensorgate_client::{ClientError, ConnectOptions, Event, Failover, Input, ItemFailed, ItemReply, Reply, Submission, Trust};

const POLL: Duration = Duration::from_millis(100);

/// Builds the Python exception (classes in `tensorgate.errors`) for a client error.
fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    let (class, code) = match &e {
        ClientError::Request { code, .. } => ("RequestError", Some(code.to_string())),
        ClientError::Protocol(_) | ClientError::Incomplete => ("ProtocolError", None),
        ClientError::Tls(_) | ClientError::Connect { .. } | ClientError::Connection(_) | ClientError::Unanswered { .. } => {
            ("ConnectionError", None)
        }
        #[allow(unreachable_patterns)]
        _ => ("TensorgateError", None),
    };
    let message = match &e {
        ClientError::Request { message, .. } => message.clone(),
        other => other.to_string(),
    };
    error_instance(py, class, &message, code.as_deref())
}

fn error_instance(py: Python<'_>, class: &str, message: &str, code: Option<&str>) -> PyErr {
    make_error(py, class, message, code, |_| Ok(()))
}

/// `tensorgate.errors.ItemError` for a failed item, with its index, retry
/// hint and the metadata the host gave back; `message` overrides the host's.
fn item_error(py: Python<'_>, f: &ItemFailed, message: Option<&str>) -> PyErr {
    let message = message.unwrap_or(&f.message);
    make_error(py, "ItemError", message, Some(&f.code.to_string()), |kwargs| {
        kwargs.set_item("index", f.index)?;
        kwargs.set_item("retry_after_ms", f.retry_after_ms)?;
        kwargs.set_item("metadata", f.metadata.clone())
    })
}

fn make_error(
    py: Python<'_>,
    class: &str,
    message: &str,
    code: Option<&str>,
    extra: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>,
) -> PyErr {
    let made = (|| -> PyResult<Bound<'_, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("code", code)?;
        extra(&kwargs)?;
        py.import("tensorgate.errors")?.getattr(class)?.call((message,), Some(&kwargs))
    })();
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

fn item_error_value<'py>(py: Python<'py>, f: &ItemFailed) -> PyResult<Bound<'py, PyAny>> {
    Ok(item_error(py, f, None).into_value(py).into_bound(py).into_any())
}

/// A one-shot slot a tokio task fills and a Python thread waits on.
struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: std::sync::Condvar,
}

impl<T> Slot<T> {
    fn new() -> Arc<Self> {
        Arc::new(Slot { value: Mutex::new(None), ready: std::sync::Condvar::new() })
    }

    fn put(&self, v: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.ready.notify_all();
    }

    /// Waits up to `d`; `Some` once filled (taking the value).
    fn take_timeout(&self, d: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self.ready.wait_timeout_while(guard, d, |v| v.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.take()
    }

    fn is_filled(&self) -> bool {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Waits for `slot` with the GIL released, checking for signals and `timeout`.
fn wait_slot<T: Send>(py: Python<'_>, slot: &Arc<Slot<T>>, timeout: Option<f64>) -> PyResult<T> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let step = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(POLL),
            None => POLL,
        };
        let s = slot.clone();
        if let Some(v) = py.detach(move || s.take_timeout(step)) {
            return Ok(v);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(pyo3::exceptions::PyTimeoutError::new_err("no reply within the timeout"));
        }
    }
}

/// A C-contiguous, native-endian view of a NumPy array.
struct ArrayView<'py> {
    _owner: Bound<'py, PyAny>,
    descr: String,
    shape: Vec<usize>,
    data: &'py [u8],
}

/// Reads `obj` (any object NumPy can make an array of) through `__array_interface__`.
fn array_view<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<ArrayView<'py>> {
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

fn is_array(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("__array_interface__").unwrap_or(false)
}

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

fn json_dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let s = py.import("json")?.call_method1("dumps", (obj,))?;
    Ok(s.extract::<String>()?.into_bytes())
}

static NDARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
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

fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    JSON_LOADS.import(py, "json", "loads")?.call1((text,))
}

/// A NumPy array viewing `len` bytes of `buf` from `offset` (no copy).
fn ndarray_view<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyByteArray>,
    descr: &str,
    shape: &[usize],
    offset: usize,
) -> PyResult<Bound<'py, PyAny>> {
    NDARRAY.import(py, "numpy", "ndarray")?.call1((PyTuple::new(py, shape)?, dtype(py, descr)?, buf, offset))
}

/// Whether replies of this content type become NumPy arrays.
fn is_numpy(content_type: &str) -> bool {
    matches!(content_type, "application/x-npz" | "application/x-npy")
}

/// A reply payload as a Python value, by its content type. Arrays view
/// `arena` (a copy of the payload starting at byte `at`) without copying.
fn decode_reply<'py>(
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
fn decode_all<'py>(py: Python<'py>, reply: &Reply, raw: bool) -> PyResult<(Bound<'py, PyList>, Option<usize>)> {
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
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    json_loads(py, &serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))?)
}

fn summary_dict<'py>(py: Python<'py>, s: &tensorgate_client::protocol::Summary) -> PyResult<Bound<'py, PyAny>> {
    json_loads(py, &serde_json::to_string(s).map_err(|e| PyValueError::new_err(e.to_string()))?)
}

/// How a request's items were made, and so how its replies are returned.
enum Mode {
    /// One Python value per item, in input order (`raw`: `(content_type, bytes)`).
    List { raw: bool },
    /// Rows of one batch split into items of `rows_per_item`; the replies'
    /// arrays are joined back into one array per output.
    Batched { rows: usize, rows_per_item: usize },
}

/// A request in flight. `result()` waits (GIL released) and returns its value.
#[pyclass(module = "tensorgate._native")]
struct Pending {
    slot: Arc<Slot<Result<Reply, ClientError>>>,
    mode: Mode,
}

#[pymethods]
impl Pending {
    /// True once the reply is complete (never blocks).
    fn done(&self) -> bool {
        self.slot.is_filled()
    }

    /// Waits for the reply. List mode: `(values, first_failed_index, summary,
    /// metadata)` with failed items as `ItemError` instances and each reply's
    /// metadata dict (None when it has none). Batched mode:
    /// `([(name, descr, shape, bytearray)], summary)`; raises the first item
    /// failure.
    #[pyo3(signature = (timeout=None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let reply = wait_slot(py, &self.slot, timeout)?.map_err(|e| client_error(py, e))?;
        let summary = summary_dict(py, &reply.summary)?;
        match self.mode {
            Mode::List { raw } => {
                let (values, first_failed) = decode_all(py, &reply, raw)?;
                // Reply metadata: None for items that carry none (the usual case, kept cheap).
                let metadata = PyList::empty(py);
                for outcome in &reply.outcomes {
                    match outcome {
                        Ok(r) if !r.metadata.is_empty() => metadata.append(r.metadata.clone())?,
                        _ => metadata.append(py.None())?,
                    }
                }
                Ok(PyTuple::new(
                    py,
                    [values.into_any(), first_failed.into_pyobject(py)?.into_any(), summary, metadata.into_any()],
                )?
                .into_any())
            }
            Mode::Batched { rows, rows_per_item } => {
                let outputs = join_batched(py, &reply, rows, rows_per_item)?;
                Ok(PyTuple::new(py, [outputs.into_any(), summary])?.into_any())
            }
        }
    }
}

/// Joins the `.npz` replies of a batched request into one array per output.
fn join_batched<'py>(py: Python<'py>, reply: &Reply, rows: usize, rows_per_item: usize) -> PyResult<Bound<'py, PyList>> {
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

/// Items of a streamed request, yielded as they complete.
#[pyclass(module = "tensorgate._native")]
struct Stream {
    rx: Mutex<Option<mpsc::Receiver<Result<Event, ClientError>>>>,
    summary: Mutex<Option<Py<PyAny>>>,
    raise_items: bool,
    with_metadata: bool,
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `(index, value)`; failed items raise `ItemError` or, with
    /// `errors="return"`, come as `(index, ItemError)`.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(None) };
        loop {
            let (back, got) = py.detach(move || {
                let got = rx.recv_timeout(POLL);
                (rx, got)
            });
            rx = back;
            match got {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Ok(Err(e)) => return Err(client_error(py, e)),
                Ok(Ok(Event::Summary(s))) => {
                    *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary_dict(py, &s)?.unbind());
                    return Ok(None);
                }
                Ok(Ok(Event::Item(outcome))) => {
                    *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
                    return match outcome {
                        Ok(r) => {
                            let mut parts = vec![r.index.into_pyobject(py)?.into_any(), decode_reply(py, &r, None)?];
                            if self.with_metadata {
                                parts.push(r.metadata.clone().into_pyobject(py)?.into_any());
                            }
                            Ok(Some(PyTuple::new(py, parts)?.into_any()))
                        }
                        Err(f) if self.raise_items => {
                            Err(item_error(py, &f, None))
                        }
                        Err(f) => {
                            let mut parts = vec![f.index.into_pyobject(py)?.into_any(), item_error_value(py, &f)?];
                            if self.with_metadata {
                                parts.push(f.metadata.clone().into_pyobject(py)?.into_any());
                            }
                            Ok(Some(PyTuple::new(py, parts)?.into_any()))
                        }
                    };
                }
            }
        }
    }

    /// The host's summary, once the stream is exhausted (else None).
    #[getter]
    fn summary(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.summary.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.clone_ref(py))
    }
}

/// A connection to one host (see `tensorgate.Client`).
#[pyclass(module = "tensorgate._native")]
struct NativeClient {
    rt: tokio::runtime::Runtime,
    /// One host, or several gateways failed over in turn.
    client: Option<Arc<Failover>>,
    targets: Vec<(SocketAddr, ConnectOptions)>,
    address: SocketAddr,
}

impl NativeClient {
    fn client(&self) -> PyResult<Arc<Failover>> {
        self.client.clone().ok_or_else(|| PyValueError::new_err("the client is closed"))
    }

    fn submission(model: &str, items: Vec<Input>, version: Option<u64>, compress: bool) -> Submission {
        let mut sub = Submission::new(model, items);
        if let Some(v) = version {
            sub = sub.version(v);
        }
        if !compress {
            sub = sub.uncompressed();
        }
        sub
    }

    fn spawn(&self, sub: Submission, mode: Mode) -> PyResult<Pending> {
        let client = self.client()?;
        let slot = Slot::new();
        let s = slot.clone();
        self.rt.spawn(async move { s.put(client.predict(sub).await) });
        Ok(Pending { slot, mode })
    }

    fn block_on<T: Send + 'static>(
        &self,
        py: Python<'_>,
        fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    ) -> PyResult<T> {
        let slot = Slot::new();
        let s = slot.clone();
        self.rt.spawn(async move { s.put(fut.await) });
        wait_slot(py, &slot, None)?.map_err(|e| client_error(py, e))
    }
}

/// The addresses of `address` (one, or several comma-separated), each with
/// its trust: one fingerprint for all or one per address.
fn targets(address: &str, fingerprint: Option<String>, ca: Option<PathBuf>, token: Option<String>) -> PyResult<Vec<(SocketAddr, ConnectOptions)>> {
    let addresses: Vec<&str> = address.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if addresses.is_empty() {
        return Err(PyValueError::new_err("no host address given"));
    }
    let fingerprints: Vec<String> = fingerprint.map(|f| f.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
    if fingerprints.len() > 1 && fingerprints.len() != addresses.len() {
        return Err(PyValueError::new_err(format!(
            "{} fingerprints for {} addresses: give one per address, or one for all",
            fingerprints.len(),
            addresses.len()
        )));
    }
    let mut out = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let trust = match (fingerprints.get(i).or(fingerprints.first()), &ca) {
            (Some(_), Some(_)) => return Err(PyValueError::new_err("give fingerprint or ca, not both")),
            (Some(fp), None) => Trust::Fingerprint(fp.clone()),
            (None, Some(ca)) => Trust::CaFile(ca.clone()),
            (None, None) => {
                return Err(PyValueError::new_err("give fingerprint= (printed by tensorgate-host) or ca= to trust the host"))
            }
        };
        let mut options = ConnectOptions::new(trust);
        options.token = token.clone();
        out.push((resolve(a)?, options));
    }
    Ok(out)
}

fn resolve(address: &str) -> PyResult<SocketAddr> {
    address
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("bad host address {address:?}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("host address {address:?} resolves to nothing")))
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (address, fingerprint=None, ca=None, threads=2, token=None))]
    fn new(
        py: Python<'_>,
        address: &str,
        fingerprint: Option<String>,
        ca: Option<PathBuf>,
        threads: usize,
        token: Option<String>,
    ) -> PyResult<Self> {
        let targets = targets(address, fingerprint, ca, token)?;
        let addr = targets[0].0;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("tensorgate-client")
            .enable_all()
            .build()
            .map_err(|e| PyValueError::new_err(format!("starting the client runtime: {e}")))?;
        let failover = Arc::new(Failover::new(targets.clone()).map_err(|e| PyValueError::new_err(e.to_string()))?);
        let mut me = NativeClient { rt, client: None, targets, address: addr };
        // Connect now, so that a bad address or certificate fails here.
        let f = failover.clone();
        me.block_on(py, async move { f.client().await.map(|_| ()) })?;
        me.client = Some(failover);
        Ok(me)
    }

    /// The host's address.
    #[getter]
    fn address(&self) -> String {
        self.address.to_string()
    }

    /// Sends `items` (a sequence) as one request; see `tensorgate.Client.predict`.
    #[pyo3(signature = (model, items, version=None, content_type=None, compress=true, raw=false, metadata=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        model: &str,
        items: &Bound<'_, PyAny>,
        version: Option<u64>,
        content_type: Option<&str>,
        compress: bool,
        raw: bool,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Pending> {
        let mut inputs = collect_inputs(py, items, content_type)?;
        apply_metadata(&mut inputs, metadata)?;
        self.spawn(Self::submission(model, inputs, version, compress), Mode::List { raw })
    }

    /// Splits one batch of arrays (`names[i]` -> `arrays[i]`, all with the
    /// same first dimension) into items of `rows_per_item` rows (`.npz`, or
    /// `.npy` for a single unnamed array) and sends them as one request.
    #[pyo3(signature = (model, names, arrays, rows_per_item=1, version=None, compress=true, metadata=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit_arrays(
        &self,
        py: Python<'_>,
        model: &str,
        names: Vec<Option<String>>,
        arrays: Vec<Bound<'_, PyAny>>,
        rows_per_item: usize,
        version: Option<u64>,
        compress: bool,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Pending> {
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
        if metadata.is_some_and(|m| !m.is_none() && m.cast::<PyDict>().is_err()) {
            return Err(PyTypeError::new_err("metadata of a batch is one dict, sent with every item"));
        }
        apply_metadata(&mut inputs, metadata)?;
        self.spawn(Self::submission(model, inputs, version, compress), Mode::Batched { rows, rows_per_item })
    }

    /// Sends `items` as one request and returns an iterator over replies in
    /// completion order.
    #[pyo3(signature = (model, items, version=None, content_type=None, compress=true, raise_items=true, metadata=None, with_metadata=false))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        model: &str,
        items: &Bound<'_, PyAny>,
        version: Option<u64>,
        content_type: Option<&str>,
        compress: bool,
        raise_items: bool,
        metadata: Option<&Bound<'_, PyAny>>,
        with_metadata: bool,
    ) -> PyResult<Stream> {
        let mut inputs = collect_inputs(py, items, content_type)?;
        apply_metadata(&mut inputs, metadata)?;
        let sub = Self::submission(model, inputs, version, compress);
        let client = self.client()?;
        let (tx, rx) = mpsc::channel();
        self.rt.spawn(async move {
            let events = tx.clone();
            if let Err(e) = client.predict_stream(sub, move |event| drop(events.send(Ok(event)))).await {
                let _ = tx.send(Err(e));
            }
        });
        Ok(Stream { rx: Mutex::new(Some(rx)), summary: Mutex::new(None), raise_items, with_metadata })
    }

    /// The host's status as a dict (version, uptime, models with counters).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let status = self.block_on(py, async move { client.status().await })?;
        to_python(py, &status)
    }

    /// Sets (or clears) the bearer token sent with every following request.
    #[pyo3(signature = (token))]
    fn set_token(&mut self, token: Option<String>) -> PyResult<()> {
        if self.client.is_none() {
            return Err(PyValueError::new_err("the client is closed"));
        }
        for (_, options) in &mut self.targets {
            options.token = token.clone();
        }
        // Requests in flight keep the old connection; new ones open another.
        let failover = Failover::new(self.targets.clone()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.client = Some(Arc::new(failover));
        Ok(())
    }

    /// Every application version on the host (list of dicts). Needs admin.
    fn models<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let models = self.block_on(py, async move { client.models().await })?;
        to_python(py, &models)
    }

    /// Uploads a bundle directory or `.tar.zst`; waits until it serves. Needs admin.
    #[pyo3(signature = (path, replace=false))]
    fn upload<'py>(&self, py: Python<'py>, path: PathBuf, replace: bool) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let reply = self.block_on(py, async move { client.upload(&path, replace).await })?;
        to_python(py, &reply)
    }

    /// A bundle as `.tar.zst` bytes (newest version unless `version`). Needs admin.
    #[pyo3(signature = (model, version=None))]
    fn fetch<'py>(&self, py: Python<'py>, model: String, version: Option<u64>) -> PyResult<Bound<'py, PyBytes>> {
        let client = self.client()?;
        let archive = self.block_on(py, async move { client.fetch(&model, version).await })?;
        Ok(PyBytes::new(py, &archive))
    }

    /// Removes one version of a model, or all of them. Needs admin.
    #[pyo3(signature = (model, version=None))]
    fn delete<'py>(&self, py: Python<'py>, model: String, version: Option<u64>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let reply = self.block_on(py, async move { client.delete(&model, version).await })?;
        to_python(py, &reply)
    }

    /// Makes the host re-read its repository (one model or all). Needs admin.
    #[pyo3(signature = (model=None))]
    fn reload<'py>(&self, py: Python<'py>, model: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let reply = self.block_on(py, async move { client.reload(model.as_deref()).await })?;
        to_python(py, &reply)
    }

    /// Makes `version` the default of `model`. Needs admin.
    fn promote<'py>(&self, py: Python<'py>, model: String, version: u64) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let reply = self.block_on(py, async move { client.promote(&model, version).await })?;
        to_python(py, &reply)
    }

    /// Rolls the default of `model` back to its previous version. Needs admin.
    fn rollback<'py>(&self, py: Python<'py>, model: String) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let reply = self.block_on(py, async move { client.rollback(&model).await })?;
        to_python(py, &reply)
    }

    /// Closes the connection (idempotent).
    fn close(&mut self, py: Python<'_>) {
        if let Some(client) = self.client.take() {
            let rt = &self.rt;
            py.detach(|| rt.block_on(client.close()));
        }
    }
}

/// A dict of metadata (values made strings with `str()`).
fn meta_map(d: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, String>> {
    let d = d.cast::<PyDict>().map_err(|_| PyTypeError::new_err("metadata must be a dict, or a list of dicts (one per item)"))?;
    d.iter().map(|(k, v)| Ok((k.str()?.to_cow()?.into_owned(), v.str()?.to_cow()?.into_owned()))).collect()
}

/// Applies `metadata` (one dict for every item, or one per item) to `inputs`.
fn apply_metadata(inputs: &mut [Input], metadata: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
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

fn collect_inputs(py: Python<'_>, items: &Bound<'_, PyAny>, content_type: Option<&str>) -> PyResult<Vec<Input>> {
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

/// The native half of the `tensorgate` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<Pending>()?;
    m.add_class::<Stream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
