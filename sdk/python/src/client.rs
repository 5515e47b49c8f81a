//! `NativeClient`: the connection (one host, or several gateways failed
//! over in turn) with its own tokio runtime; every call that waits
//! releases the GIL.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tensorgate_client::{trust_per_address, ClientError, ConnectOptions, Failover, Input, Submission};

use crate::errors::{client_error, targets_error};
use crate::items::{apply_metadata, collect_inputs};
use crate::numpy::split_batch;
use crate::pending::Pending;
use crate::replies::{to_python, Mode};
use crate::stream::Stream;
use crate::wait::{wait_slot, Slot};

/// A connection to one host (see `tensorgate.Client`).
#[pyclass(module = "tensorgate._native")]
pub(crate) struct NativeClient {
    rt: tokio::runtime::Runtime,
    /// One host, or several gateways failed over in turn.
    client: Option<Arc<Failover>>,
    targets: Vec<(SocketAddr, ConnectOptions)>,
    address: SocketAddr,
}

impl NativeClient {
    /// The client, unless closed.
    fn client(&self) -> PyResult<Arc<Failover>> {
        self.client.clone().ok_or_else(|| PyValueError::new_err("the client is closed"))
    }

    /// A predict request as the keyword arguments say.
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

    /// Sends `sub` on the client's runtime; its reply is returned as `mode` says.
    fn spawn(&self, sub: Submission, mode: Mode) -> PyResult<Pending> {
        let client = self.client()?;
        let slot = Slot::new();
        let s = slot.clone();
        self.rt.spawn(async move { s.put(client.predict(sub).await) });
        Ok(Pending { slot, mode })
    }

    /// Runs `fut` on the client's runtime, waiting with the GIL released.
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
/// its trust by the client library's rule ([`trust_per_address`]: one
/// fingerprint for all or one per address, or a CA file) and the token.
fn targets(address: &str, fingerprint: Option<String>, ca: Option<PathBuf>, token: Option<String>) -> PyResult<Vec<(SocketAddr, ConnectOptions)>> {
    let addresses = address.split(',').map(str::trim).filter(|a| !a.is_empty()).map(resolve).collect::<PyResult<Vec<_>>>()?;
    let trust = trust_per_address(&addresses, fingerprint.as_deref(), ca.as_deref()).map_err(targets_error)?;
    Ok(addresses
        .into_iter()
        .zip(trust)
        .map(|(addr, trust)| {
            let mut options = ConnectOptions::new(trust);
            options.token = token.clone();
            (addr, options)
        })
        .collect())
}

/// One address (`host:port`, a name resolved here) as a socket address.
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
        let (mut inputs, rows) = split_batch(py, &names, &arrays, rows_per_item)?;
        if metadata.is_some_and(|m| !m.is_none() && m.cast::<PyDict>().is_err()) {
            return Err(PyTypeError::new_err("metadata of a batch is one dict, sent with every item"));
        }
        apply_metadata(&mut inputs, metadata)?;
        self.spawn(Self::submission(model, inputs, version, compress), Mode::Batched { rows, rows_per_item: rows_per_item.max(1) })
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
