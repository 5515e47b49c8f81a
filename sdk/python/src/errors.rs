//! Client errors as Python exceptions: the classes live in
//! `tensorgate.errors` (pure Python); this module only instantiates them.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tensorgate_client::{ClientError, ItemFailed, TargetsError};

/// Builds the Python exception (classes in `tensorgate.errors`) for a client error.
pub(crate) fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
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

/// An instance of the `tensorgate.errors` class `class`.
pub(crate) fn error_instance(py: Python<'_>, class: &str, message: &str, code: Option<&str>) -> PyErr {
    make_error(py, class, message, code, |_| Ok(()))
}

/// `tensorgate.errors.ItemError` for a failed item, with its index, retry
/// hint and the metadata the host gave back; `message` overrides the host's.
pub(crate) fn item_error(py: Python<'_>, f: &ItemFailed, message: Option<&str>) -> PyErr {
    let message = message.unwrap_or(&f.message);
    make_error(py, "ItemError", message, Some(&f.code.to_string()), |kwargs| {
        kwargs.set_item("index", f.index)?;
        kwargs.set_item("retry_after_ms", f.retry_after_ms)?;
        kwargs.set_item("metadata", f.metadata.clone())
    })
}

/// `tensorgate.errors.<class>(message, code=code, ...)`, the extra keyword
/// arguments set by `extra`; an error making it is raised instead.
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

/// [`item_error`] as a value (returned, not raised).
pub(crate) fn item_error_value<'py>(py: Python<'py>, f: &ItemFailed) -> PyResult<Bound<'py, PyAny>> {
    Ok(item_error(py, f, None).into_value(py).into_bound(py).into_any())
}

/// A refused address or trust setting as a Python `ValueError` (the rule is
/// the client library's; the remedy names this API's keyword arguments).
pub(crate) fn targets_error(e: TargetsError) -> PyErr {
    let message = match e {
        TargetsError::NoTrust => "give fingerprint= (printed by tensorgate-host) or ca= to trust the host".to_string(),
        TargetsError::FingerprintAndCa => "give fingerprint= or ca=, not both".to_string(),
        other => other.to_string(),
    };
    pyo3::exceptions::PyValueError::new_err(message)
}
