//! Prometheus metrics: per-model item and request counts by status, the time
//! split of every item (queue, preprocess, forward, postprocess, end to end),
//! batch sizes, queue depth and plugin instances, served over HTTP on their
//! own port (`--metrics-listen`; off unless configured).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tensorgate_protocol::Timings;

/// Metric names, in one place.
pub mod names {
    /// Counter: items answered, labels `model`, `status` (`ok` or an error code).
    pub const ITEMS: &str = "tensorgate_items_total";
    /// Counter: requests finished, labels `model`, `status`, `protocol` (`quic`, `http`, `grpc`).
    pub const REQUESTS: &str = "tensorgate_requests_total";
    /// Histograms (seconds), label `model`.
    pub const QUEUE: &str = "tensorgate_queue_seconds";
    /// Time in `preprocess`.
    pub const PREPROCESS: &str = "tensorgate_preprocess_seconds";
    /// Time in the forward pass.
    pub const FORWARD: &str = "tensorgate_forward_seconds";
    /// Time in `postprocess`.
    pub const POSTPROCESS: &str = "tensorgate_postprocess_seconds";
    /// Item end to end inside the host.
    pub const ITEM: &str = "tensorgate_item_seconds";
    /// Histogram: rows per forward pass, label `model`.
    pub const BATCH_ROWS: &str = "tensorgate_batch_rows";
    /// Gauge: items waiting for the model, label `model`.
    pub const QUEUE_DEPTH: &str = "tensorgate_queue_depth";
    /// Gauge: idle plugin instances, label `model`.
    pub const PLUGIN_INSTANCES: &str = "tensorgate_plugin_instances";
    /// Counter: versions rolled back automatically, labels `model`, `cause` (`canary`).
    pub const ROLLBACKS: &str = "tensorgate_rollbacks_total";
    /// Counter: versions promoted after their trial, label `model`.
    pub const PROMOTIONS: &str = "tensorgate_promotions_total";
    /// Gauge (gateway): messages queued in the engine for a version and not
    /// yet pulled by a worker (a message holds up to 64 items), labels `model`, `version`.
    pub const CLUSTER_QUEUED: &str = "tensorgate_cluster_queued_messages";
    /// Gauge (gateway): live workers serving a model, label `model`.
    pub const CLUSTER_WORKERS: &str = "tensorgate_cluster_workers";
    /// Counter (gateway): fleet changes seen, label `event` (`joined`, `left`, `dropped`, `restarted`).
    pub const CLUSTER_WORKER_EVENTS: &str = "tensorgate_cluster_worker_events_total";
    /// Counter (worker): messages pulled that the engine had delivered before, label `model`.
    pub const CLUSTER_REDELIVERIES: &str = "tensorgate_cluster_redeliveries_total";
    /// Counter (worker): items dropped unrun, label `reason`.
    pub const CLUSTER_DROPPED: &str = "tensorgate_cluster_items_dropped_total";
}

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Building or binding the exporter failed.
    #[error("metrics exporter on {addr}: {reason}")]
    Install {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// A recorder is already installed in this process on another address.
    #[error("metrics exporter already running on {0}")]
    AlreadyInstalled(SocketAddr),
}

static INSTALLED: OnceLock<SocketAddr> = OnceLock::new();

/// Installs the Prometheus recorder and its HTTP listener on `addr` (once per
/// process). Must run inside a tokio runtime.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    if let Some(existing) = INSTALLED.get() {
        return if *existing == addr { Ok(()) } else { Err(MetricsError::AlreadyInstalled(*existing)) };
    }
    let buckets = [
        20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ];
    let rows = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let err = |reason: String| MetricsError::Install { addr, reason };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&buckets)
        .map_err(|e| err(e.to_string()))?
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(names::BATCH_ROWS.into()), &rows)
        .map_err(|e| err(e.to_string()))?
        .install()
        .map_err(|e| err(e.to_string()))?;
    let _ = INSTALLED.set(addr);
    Ok(())
}

/// Whether the exporter runs in this process (metrics that cost an engine
/// round trip are gathered only then).
pub fn installed() -> bool {
    INSTALLED.get().is_some()
}

/// One model's per-item metrics, registered once: looking a metric up by
/// its labels (allocated strings, a hash, a lock) costs more than recording
/// it, and every item records seven.
pub struct ItemMetrics {
    ok: metrics::Counter,
    item: metrics::Histogram,
    queue: metrics::Histogram,
    preprocess: metrics::Histogram,
    forward: metrics::Histogram,
    postprocess: metrics::Histogram,
    instances: metrics::Gauge,
}

impl std::fmt::Debug for ItemMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ItemMetrics")
    }
}

impl ItemMetrics {
    fn new(model: &str) -> Self {
        let label = || ("model", model.to_string());
        let histogram = |name: &'static str| metrics::histogram!(name, &[label()]);
        ItemMetrics {
            ok: metrics::counter!(names::ITEMS, &[label(), ("status", "ok".to_string())]),
            item: histogram(names::ITEM),
            queue: histogram(names::QUEUE),
            preprocess: histogram(names::PREPROCESS),
            forward: histogram(names::FORWARD),
            postprocess: histogram(names::POSTPROCESS),
            instances: metrics::gauge!(names::PLUGIN_INSTANCES, &[label()]),
        }
    }
}

/// Records one finished item (stage times only when it succeeded) and the
/// plugin's idle instances, through `cell`'s handles (registered on the
/// first item after the exporter is installed; before it, nothing records).
pub fn item(cell: &OnceLock<ItemMetrics>, model: &str, status: &str, t: &Timings, total: Duration, idle_instances: impl FnOnce() -> usize) {
    if INSTALLED.get().is_none() {
        return;
    }
    let m = cell.get_or_init(|| ItemMetrics::new(model));
    m.item.record(total.as_secs_f64());
    m.instances.set(idle_instances() as f64);
    if status != "ok" {
        metrics::counter!(names::ITEMS, "model" => model.to_string(), "status" => status.to_string()).increment(1);
        return;
    }
    m.ok.increment(1);
    let secs = |us: u64| us as f64 / 1e6;
    m.queue.record(secs(t.queue_us));
    m.preprocess.record(secs(t.preprocess_us));
    m.forward.record(secs(t.forward_us));
    m.postprocess.record(secs(t.postprocess_us));
}

/// Logs and counts a canary trial's verdict; `scope` is "" on a host and
/// " fleet-wide" on the gateway that reached it.
pub fn trial_ended(model: &str, version: u64, promoted: bool, why: &str, scope: &str) {
    if promoted {
        tracing::info!(app = %model, version, "promoted{scope}: {why}");
        metrics::counter!(names::PROMOTIONS, "model" => model.to_string()).increment(1);
    } else {
        tracing::warn!(app = %model, version, "rolled back{scope} automatically: {why}");
        metrics::counter!(names::ROLLBACKS, "model" => model.to_string(), "cause" => "canary").increment(1);
    }
}

/// Records one finished request of the QUIC protocol.
pub fn request(model: &str, status: &str) {
    request_via(model, status, "quic");
}

/// Records one finished request of `protocol` (`quic`, `http`, `grpc`).
pub fn request_via(model: &str, status: &str, protocol: &'static str) {
    metrics::counter!(names::REQUESTS, "model" => model.to_string(), "status" => status.to_string(), "protocol" => protocol)
        .increment(1);
}

/// Records one forward pass of `rows` rows and the queue left behind it.
pub fn forward(model: &str, rows: usize, queued: usize) {
    metrics::histogram!(names::BATCH_ROWS, "model" => model.to_string()).record(rows as f64);
    metrics::gauge!(names::QUEUE_DEPTH, "model" => model.to_string()).set(queued as f64);
}

