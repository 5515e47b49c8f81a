//! `Stream`: a request's items yielded to Python as they complete.

use std::sync::mpsc;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tensorgate_client::{ClientError, Event};

use crate::errors::{client_error, item_error, item_error_value};
use crate::replies::{decode_reply, summary_dict};
use crate::wait::recv_polling;

/// Items of a streamed request, yielded as they complete.
#[pyclass(module = "tensorgate._native")]
pub(crate) struct Stream {
    /// The events of the request (taken while waiting; `None` once done).
    pub(crate) rx: Mutex<Option<mpsc::Receiver<Result<Event, ClientError>>>>,
    /// The host's summary as a dict, once the stream is exhausted.
    pub(crate) summary: Mutex<Option<Py<PyAny>>>,
    /// Failed items raise (else they are yielded as `ItemError` values).
    pub(crate) raise_items: bool,
    /// Yield `(index, value, metadata)` instead of `(index, value)`.
    pub(crate) with_metadata: bool,
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
            let (back, got) = recv_polling(py, rx);
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
