//! The local item runner: routes a predict request through the repository
//! and runs its items through the pipeline on this host.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tensorgate_protocol::{Compression, ErrorCode, Item, ItemHead, PredictHeader, Timings};
use tracing::Instrument;

use crate::application::Application;
use crate::pipeline::process_item;
use crate::repository::Repository;
use tensorgate_server::request::{decompressed_payload, ItemDone, ItemFuture, ItemOutput, ItemRunner, Reject, Routed};

/// Runs items on this host's repository.
#[derive(Clone)]
pub struct LocalRunner {
    /// Where requests are routed.
    pub repo: Arc<Repository>,
    /// Largest decompressed item (bytes).
    pub max_item_bytes: u64,
}

impl ItemRunner for LocalRunner {
    type Session = Arc<Application>;

    fn route(&self, h: &PredictHeader) -> Result<(Routed, Arc<Application>), Reject> {
        let app = self.repo.resolve(&h.model, h.version).map_err(|e| Reject::new(ErrorCode::UnknownModel, e.to_string()))?;
        app.counters.requests.fetch_add(1, Ordering::Relaxed);
        Ok((Routed { model: app.name().to_string(), version: app.version() }, app))
    }

    fn run(&self, app: &Arc<Application>, item: Item, alone: bool) -> ItemFuture {
        let app = app.clone();
        let max = self.max_item_bytes;
        let index = item.head.index;
        Box::pin(
            async move {
                let mut timings = Timings::default();
                let payload = match decompressed_payload(&item, max) {
                    Ok(p) => p,
                    Err(failure) => return ItemDone { result: Err(failure), timings },
                };
                drop(item.payload);
                let head = ItemHead { compression: Compression::None, ..item.head };
                let result = process_item(&app, head, payload, &mut timings, alone).await.map(|out| ItemOutput {
                    payload: out.data.into(),
                    content_type: out.content_type,
                    metadata: out.metadata.into_iter().collect(),
                });
                ItemDone { result, timings }
            }
            .instrument(tracing::debug_span!("item", index)),
        )
    }
}
