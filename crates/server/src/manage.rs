//! The one management interface every front end serves `status` and the
//! management requests from: implemented by a host's local repository
//! (`tensorgate-runtime`) and by a cluster's fleet (`tensorgate-gateway`).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tensorgate_protocol::{AdminReply, LoadFailure, ModelStatus, RequestHeader, WorkerStatus};

use crate::request::Reject;

/// The state of a version as `models` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Loaded and serving.
    Ready,
    /// On disk but failed to load (the error says why).
    Failed,
    /// Removed by a `delete`.
    Deleted,
}

impl ModelState {
    /// The name on the wire (`ModelInfo.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
            ModelState::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boxed future that borrows its receiver.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `status` shows beside the front end's own counters.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// `host` or `gateway`.
    pub role: &'static str,
    /// Every version served, with its counters (a fleet's: summed over its workers).
    pub models: Vec<ModelStatus>,
    /// A fleet's live workers (none on a host).
    pub workers: Vec<WorkerStatus>,
    /// Bundles that failed to load.
    pub load_errors: Vec<LoadFailure>,
}

/// A management request's answer.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    /// The reply (its `op` and `elapsed_us` are the front end's to fill in).
    pub reply: AdminReply,
    /// For `fetch`: the bundle archive.
    pub archive: Option<Bytes>,
}

/// Status and management of what a front end serves.
pub trait Management: Send + Sync {
    /// What is served now.
    fn status(&self) -> BoxFuture<'_, Status>;

    /// `models`, `upload`, `fetch`, `delete`, `reload`, `promote` or
    /// `rollback` (the caller has checked the role); `upload` holds an
    /// upload's archive chunks in order.
    fn manage(&self, header: RequestHeader, upload: Vec<Bytes>) -> BoxFuture<'_, Result<Managed, Reject>>;
}
