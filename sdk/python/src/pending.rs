//! `Pending`: a request in flight, whose reply a Python thread waits for.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tensorgate_client::{ClientError, Reply};

use crate::errors::client_error;
use crate::replies::{decode_all, join_batched, summary_dict, Mode};
use crate::wait::{wait_slot, Slot};

/// A request in flight. `result()` waits (GIL released) and returns its value.
#[pyclass(module = "tensorgate._native")]
pub(crate) struct Pending {
    /// Filled with the reply by the client's task.
    pub(crate) slot: Arc<Slot<Result<Reply, ClientError>>>,
    /// How the reply is returned.
    pub(crate) mode: Mode,
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
