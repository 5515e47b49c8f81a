//! The worker's advert: what it holds and how busy it is, every heartbeat
//! and on every change.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tensorgate_cluster::wire::{self, Advert, AppAdvert, WorkerState};

use crate::pull::AppLoop;
use crate::Shared;

/// Publishes this worker's advert.
pub(crate) async fn advertise(shared: &Shared, loops: &HashMap<(String, u64), AppLoop>, state: WorkerState) {
    let mut apps: Vec<AppAdvert> = loops
        .values()
        .map(|l| {
            let default = shared.repo.is_default(l.app.name(), l.app.version());
            let status = l.app.status();
            AppAdvert {
                info: l.app.info(default),
                capacity: l.capacity as u64,
                in_flight: l.held.load(Ordering::Relaxed) as u64,
                queued: status.queued,
                forwards: status.forwards,
                forward_rows: status.forward_rows,
                forward_us: status.forward_us,
            }
        })
        .collect();
    apps.sort_by(|a, b| (&a.info.name, a.info.version).cmp(&(&b.info.name, b.info.version)));
    let advert = Advert {
        id: shared.id.clone(),
        hostname: shared.hostname.clone(),
        state,
        device: shared.device.clone(),
        uptime_s: shared.started.elapsed().as_secs(),
        heartbeat_ms: shared.cluster.heartbeat.as_millis() as u64,
        apps,
        load_errors: shared.repo.failures(),
        converged: *shared.converged.borrow(),
    };
    if let Err(e) = shared.engine.client.publish(shared.engine.names.advert(), wire::json(&advert)).await {
        tracing::debug!("advert not sent: {e}");
    }
}
