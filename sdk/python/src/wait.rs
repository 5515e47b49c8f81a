//! Waiting for the client's tokio tasks from Python threads: with the GIL
//! released, waking every [`POLL`] to let Ctrl-C (signals) through.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How often a wait wakes to check for signals.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// A one-shot slot a tokio task fills and a Python thread waits on.
pub(crate) struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: std::sync::Condvar,
}

impl<T> Slot<T> {
    /// An empty slot.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot { value: Mutex::new(None), ready: std::sync::Condvar::new() })
    }

    /// Fills the slot and wakes its waiters.
    pub(crate) fn put(&self, v: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.ready.notify_all();
    }

    /// Waits up to `d`; `Some` once filled (taking the value).
    pub(crate) fn take_timeout(&self, d: Duration) -> Option<T> {
        let guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self.ready.wait_timeout_while(guard, d, |v| v.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.take()
    }

    /// Whether the slot holds a value (never blocks).
    pub(crate) fn is_filled(&self) -> bool {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Waits for `slot` with the GIL released, checking for signals and `timeout`.
pub(crate) fn wait_slot<T: Send>(py: Python<'_>, slot: &Arc<Slot<T>>, timeout: Option<f64>) -> PyResult<T> {
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

/// Waits up to [`POLL`] for the next message of `rx` with the GIL released;
/// gives the receiver back with what came (the caller checks for signals
/// on a timeout).
pub(crate) fn recv_polling<T: Send>(py: Python<'_>, rx: mpsc::Receiver<T>) -> (mpsc::Receiver<T>, Result<T, mpsc::RecvTimeoutError>) {
    py.detach(move || {
        let got = rx.recv_timeout(POLL);
        (rx, got)
    })
}
