//! Per-version item outcomes kept in the process whether or not the
//! Prometheus exporter runs: failures by error code and a fixed-bucket
//! histogram of item latency (the buckets of `tensorgate_item_seconds`),
//! read by `status` for the status page. The fronts record the items their
//! runner answers, so a gateway's figures are the fleet's as the gateway saw
//! its requests, and a host's its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tensorgate_protocol::ModelStatus;

use crate::request::ItemFuture;

/// Upper bounds of the latency buckets (µs); a last bucket takes the rest.
pub const BOUNDS_US: [u64; 17] = [
    20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000,
];

/// One version's items as this process answered them.
#[derive(Debug, Default)]
pub struct VersionStats {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    failures: Mutex<BTreeMap<String, u64>>,
}

impl VersionStats {
    /// Records one answered item: its latency and, if it failed, its code.
    pub fn record(&self, elapsed: Duration, failure: Option<&str>) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let at = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        if let Some(code) = failure {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            *failures.entry(code.to_string()).or_default() += 1;
        }
    }

    /// Failures so far by error code.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `q` quantile of the latency (µs, rounded up), interpolated
    /// linearly inside its bucket as Prometheus' `histogram_quantile` does;
    /// the highest finite bound when it falls past it; 0 with no items.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        quantile(&counts, q)
    }
}

fn quantile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = BOUNDS_US.get(i) else {
                return BOUNDS_US[BOUNDS_US.len() - 1];
            };
            let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return ((lower as f64 + (upper - lower) as f64 * within).ceil() as u64).max(1);
        }
        below += n;
    }
    BOUNDS_US[BOUNDS_US.len() - 1]
}

type Registry = Mutex<HashMap<(String, u64), Arc<VersionStats>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The stats of `model` version `version` (looked up once per request).
pub fn of(model: &str, version: u64) -> Arc<VersionStats> {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.entry((model.to_string(), version)).or_default().clone()
}

/// `item`, recording its latency and outcome in `stats` when it finishes
/// (an item cancelled before it finished is not counted).
pub fn timed(stats: Arc<VersionStats>, item: ItemFuture) -> ItemFuture {
    let start = Instant::now();
    Box::pin(async move {
        let done = item.await;
        let code = done.result.as_ref().err().map(|f| f.code.to_string());
        stats.record(start.elapsed(), code.as_deref());
        done
    })
}

/// Fills each entry's failures and latency percentiles from this process's records.
pub fn annotate(models: &mut [ModelStatus]) {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    for m in models {
        if let Some(s) = map.get(&(m.name.clone(), m.version)) {
            m.failures = s.failures();
            m.latency_p50_us = s.quantile_us(0.5);
            m.latency_p90_us = s.quantile_us(0.9);
            m.latency_p99_us = s.quantile_us(0.99);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        let s = VersionStats::default();
        assert_eq!(s.quantile_us(0.5), 0, "no items, no latency");
        // 10 items in (200, 500] µs: the median halfway, p90 at nine tenths.
        for _ in 0..10 {
            s.record(Duration::from_micros(300), None);
        }
        assert_eq!((s.quantile_us(0.5), s.quantile_us(0.9)), (350, 470));
        // One slow failure past the last bound: p99 reads the highest bound.
        s.record(Duration::from_secs(9), Some("model_error"));
        s.record(Duration::from_micros(300), Some("model_error"));
        s.record(Duration::from_micros(10), Some("bad_input"));
        assert_eq!(s.quantile_us(0.99), 5_000_000);
        let f = s.failures();
        assert_eq!((f.get("model_error"), f.get("bad_input"), f.len()), (Some(&2), Some(&1), 2));
        let (p50, p90, p99) = (s.quantile_us(0.5), s.quantile_us(0.9), s.quantile_us(0.99));
        assert!(0 < p50 && p50 <= p90 && p90 <= p99, "{p50} {p90} {p99}");
    }

    #[test]
    fn annotate_fills_only_the_versions_recorded() {
        of("annotate-test", 3).record(Duration::from_millis(3), Some("busy"));
        let mut models = vec![
            ModelStatus { name: "annotate-test".into(), version: 3, ..Default::default() },
            ModelStatus { name: "annotate-test".into(), version: 4, ..Default::default() },
        ];
        annotate(&mut models);
        assert_eq!(models[0].failures.get("busy"), Some(&1));
        assert!(models[0].latency_p50_us > 2_000 && models[0].latency_p99_us <= 5_000, "{:?}", models[0]);
        assert_eq!(models[1], ModelStatus { name: "annotate-test".into(), version: 4, ..Default::default() });
    }
}
