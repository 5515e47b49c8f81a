//! The seam between the request machine's pump and whatever runs items:
//! the local pipeline today (`server/local.rs`), a remote worker pool in
//! cluster mode.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tensorgate_protocol::{Item, PredictHeader};

use super::{ItemDone, ItemFailure, Reject};

/// Where a predict request was routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The application's name.
    pub model: String,
    /// The version that serves the request.
    pub version: u64,
}

/// One item running; dropping it cancels the item.
pub type ItemFuture = Pin<Box<dyn Future<Output = ItemDone> + Send + 'static>>;

/// Runs the items of predict requests.
pub trait ItemRunner: Send + Sync {
    /// What runs one routed request's items.
    type Session: Send + 'static;

    /// Routes a predict request, or says why it cannot be served.
    fn route(&self, header: &PredictHeader) -> Result<(Routed, Self::Session), Reject>;

    /// Starts one item of a routed request. The future is polled to
    /// completion, or dropped when the item is cancelled (its request's
    /// deadline passed, the client went away, the request failed). `alone`:
    /// the item is the only one running on this host (one item, in the only
    /// busy request), so there is nothing to batch it with.
    fn run(&self, session: &Self::Session, item: Item, alone: bool) -> ItemFuture;

    /// Called once the items of one burst (those decoded together) have
    /// been started, so that a runner sending items elsewhere sends them
    /// together. The default does nothing.
    fn flush(&self, _session: &Self::Session) {}
}

/// An item's payload as the client meant it: decompressed, within
/// `max_item_bytes`; a failure names the item and the limit.
pub fn decompressed_payload(item: &Item, max_item_bytes: u64) -> Result<Bytes, ItemFailure> {
    item.decompressed(max_item_bytes).map_err(|e| ItemFailure::new(e.code(), e.to_string()))
}
