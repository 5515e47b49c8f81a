//! `tensorgate bench`: a closed-loop load generator over one connection.
//! Like `submit`, it exits 1 when any request or item failed (the report
//! is printed either way).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use tensorgate_client::{Client, Input, Submission};
use tensorgate_client::protocol::Timings;

/// Options of `tensorgate bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Application (model) name.
    #[arg(long)]
    model: String,
    /// Payload file(s): each request carries one item per file (times --items).
    #[arg(long, required = true)]
    file: Vec<PathBuf>,
    /// Requests to time (after warm-up); ignored with --duration.
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Time this many seconds instead of a request count.
    #[arg(long)]
    duration: Option<f64>,
    /// Target request rate over all workers (requests/s); unpaced when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Untimed warm-up requests.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Concurrent requests in flight (streams on one connection).
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Copies of the file set per request.
    #[arg(long, default_value_t = 1)]
    items: usize,
    /// Send and receive raw bytes (no zstd).
    #[arg(long)]
    no_compress: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Worker {
    hist: Histogram<u64>,
    errors: u64,
    /// Failed items and requests by error code.
    kinds: std::collections::BTreeMap<String, u64>,
    server: Timings,
}

/// Runs the benchmark and prints its report; exit code 1 if any request
/// or item failed.
pub async fn run(client: Arc<Client>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut inputs = Vec::new();
    for f in &args.file {
        let data = bytes::Bytes::from(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
        inputs.push(Input::new(data, tensorgate_client::content_type_for(f)));
    }
    let raw_bytes: usize = inputs.iter().map(|i| i.payload.len()).sum::<usize>() * args.items;
    let make = |n: usize| {
        let items = (0..n).flat_map(|_| inputs.iter().cloned()).collect();
        let sub = Submission::new(&args.model, items);
        if args.no_compress { sub.uncompressed() } else { sub }
    };
    for _ in 0..args.warmup {
        client.predict(make(args.items)).await?;
    }
    let workers = args.concurrency.max(1);
    let per_worker = args.requests.div_ceil(workers);
    let start = Instant::now();
    let until = args.duration.map(|s| start + Duration::from_secs_f64(s.max(0.001)));
    // With --rate, each worker sends on its own schedule of rate/workers per second.
    let period = args.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(workers as f64 / r));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        let sub = make(args.items);
        handles.push(tokio::spawn(async move {
            let mut w = Worker {
                hist: Histogram::new(3)?,
                errors: 0,
                kinds: Default::default(),
                server: Timings::default(),
            };
            let mut ticker = period.map(|p| {
                let mut i = tokio::time::interval(p);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            let mut sent = 0u64;
            loop {
                match until {
                    Some(deadline) if Instant::now() >= deadline => break,
                    None if sent >= per_worker => break,
                    _ => {}
                }
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                sent += 1;
                let t = Instant::now();
                match client.predict(sub.clone()).await {
                    Ok(reply) => {
                        w.hist.record(t.elapsed().as_nanos() as u64)?;
                        w.errors += reply.summary.failed as u64;
                        for failed in reply.outcomes.iter().filter_map(|o| o.as_ref().err()) {
                            *w.kinds.entry(failed.code.to_string()).or_default() += 1;
                        }
                        let s = reply.summary.timings;
                        w.server.queue_us += s.queue_us;
                        w.server.preprocess_us += s.preprocess_us;
                        w.server.forward_us += s.forward_us;
                        w.server.postprocess_us += s.postprocess_us;
                    }
                    Err(e) => {
                        w.errors += 1;
                        let kind = e.code().map(|c| c.to_string()).unwrap_or_else(|| "connection".into());
                        *w.kinds.entry(kind).or_default() += 1;
                    }
                }
            }
            anyhow::Ok(w)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut errors, mut server) = (0, Timings::default());
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    for h in handles {
        let w = h.await??;
        hist.add(&w.hist)?;
        errors += w.errors;
        for (k, v) in w.kinds {
            *kinds.entry(k).or_default() += v;
        }
        server.queue_us += w.server.queue_us;
        server.preprocess_us += w.server.preprocess_us;
        server.forward_us += w.server.forward_us;
        server.postprocess_us += w.server.postprocess_us;
    }
    let elapsed = start.elapsed();
    let n = hist.len().max(1);
    let us = |q: f64| Duration::from_nanos(hist.value_at_quantile(q)).as_secs_f64() * 1e6;
    let items_per_request = args.items * inputs.len();
    let items_per_s = (hist.len() * items_per_request as u64) as f64 / elapsed.as_secs_f64();
    let report = serde_json::json!({
        "model": args.model,
        "requests": hist.len(),
        "items_per_request": items_per_request,
        "compress": !args.no_compress,
        "raw_mb_per_s": (hist.len() as f64 * raw_bytes as f64) / elapsed.as_secs_f64() / 1e6,
        "concurrency": args.concurrency,
        "errors": errors,
        "errors_by_kind": kinds,
        "target_rate": args.rate,
        "seconds": elapsed.as_secs_f64(),
        "requests_per_s": hist.len() as f64 / elapsed.as_secs_f64(),
        "items_per_s": items_per_s,
        "latency_us": { "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "max": hist.max() as f64 / 1e3 },
        "server_us_per_item": stage_means(&server, n * items_per_request as u64),
        "wall_us_per_item": 1e6 / items_per_s.max(1e-9),
        "notes": { "server_us_per_item": STAGE_NOTE },
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(exit_code(errors))
}

/// What `server_us_per_item` means, in the report itself.
pub const STAGE_NOTE: &str = "mean time one item spent in each stage on the host (its latency, split), \
not host time per item: items run concurrently (--concurrency, several items per request, model batches), \
so the stages add up to more than wall_us_per_item (1 / items_per_s); forward is the whole batch's run, \
counted for each item in it";

/// Each stage's mean time per item (µs) over `items` answered items, from
/// the requests' summed timings (a summary sums its items' timings).
fn stage_means(server: &Timings, items: u64) -> serde_json::Value {
    let mean = |v: u64| v as f64 / items.max(1) as f64;
    serde_json::json!({
        "queue": mean(server.queue_us), "preprocess": mean(server.preprocess_us),
        "forward": mean(server.forward_us), "postprocess": mean(server.postprocess_us),
    })
}

/// Failed requests and items fail the run, as they fail `submit`.
fn exit_code(errors: u64) -> ExitCode {
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_figures_are_means_per_item() {
        // Two requests of 4 items each: the summaries' sums over 8 items.
        let sums = Timings { queue_us: 800, preprocess_us: 80, forward_us: 1600, postprocess_us: 40 };
        let m = stage_means(&sums, 8);
        assert_eq!(m, serde_json::json!({ "queue": 100.0, "preprocess": 10.0, "forward": 200.0, "postprocess": 5.0 }));
        assert_eq!(stage_means(&Timings::default(), 0)["queue"], 0.0, "no items: zeros, not NaN");
        assert!(STAGE_NOTE.contains("not host time per item"));
    }
}
