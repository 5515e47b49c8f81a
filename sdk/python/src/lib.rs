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
//!
//! Modules, bottom-up (none imports one above it):
//! - `npy`: `.npy`/`.npz` reading and writing (over `tensorgate-npy`);
//! - `errors`: client errors as `tensorgate.errors` exceptions;
//! - `wait`: waiting for the runtime with the GIL released;
//! - `numpy`: arrays in through `__array_interface__`, arrays out as views,
//!   a batch split into items;
//! - `items`: Python values (and metadata) as items;
//! - `replies`: replies as Python values, in input order or joined back
//!   into one array per output;
//! - the Python classes: `pending` (`Pending`), `stream` (`Stream`),
//!   `client` (`NativeClient`), `features` (`FeatureSpec`: the feature
//!   spec's transforms, `tensorgate-features`); `images` (`image_tensor`: the
//!   image plugin's PNG preprocessing, for training).

mod client;
mod errors;
mod features;
mod images;
mod items;
mod npy;
mod numpy;
mod pending;
mod replies;
mod stream;
mod wait;

use pyo3::prelude::*;

/// The native half of the `tensorgate` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::NativeClient>()?;
    m.add_class::<pending::Pending>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<features::FeatureSpec>()?;
    m.add_function(wrap_pyfunction!(images::image_tensor, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
