//! Soak: many clients, mixed models, random cancellations and deadlines,
//! hostile items mixed in, and version swaps during the run. Every submitted
//! item is accounted for exactly once — a result, a specific error, or the
//! client's own cancellation — and memory and file descriptors come back.
//!
//! CI runs 30 s. The long run (issue target: ≥ 1,000,000 items):
//! `TENSORGATE_SOAK_SECS=600 cargo test --release -p tensorgate-tests --test soak -- --nocapture`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Event, Input, Submission};
use tensorgate_tests::{repository_with_hostile, root, rss_bytes, tabular_bundle, TestHost};

#[derive(Default)]
struct Tally {
    submitted: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    cancelled: u64,
    lost: u64,
    duplicated: u64,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// A cheap deterministic generator per client.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_accounts_for_every_item() {
    let secs: u64 = std::env::var("TENSORGATE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let clients: u64 = std::env::var("TENSORGATE_SOAK_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let repo = repository_with_hostile();
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| c.front.max_items_in_flight = 256).await;
    assert!(host.host.repository().failures().is_empty(), "{:?}", host.host.repository().failures());

    let jets: Vec<Vec<u8>> =
        (0..3).map(|i| std::fs::read(root().join(format!("plugins/tabular/samples/jet-{i}.json"))).unwrap()).collect();
    let npz = std::fs::read(root().join("plugins/tensors/bundles/multi-io/sample.npz")).unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let fds_start = open_fds();
    let rss_start = rss_bytes();


    // Version swaps during the run: replace tabular v2 in place, and now and
    // then delete it and upload it again.
    let work = tempfile::tempdir().unwrap();
    let bundle = bytes::Bytes::from(tensorgate_client::pack_bundle(&tabular_bundle(work.path(), "v2", 2, |_| {})).unwrap());
    let swapper = {
        let (client, stop, swaps) = (host.client().await, stop.clone(), swaps.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if i % 5 == 4 {
                    client.delete("tabular", Some(2)).await.unwrap();
                    client.upload_archive(bundle.clone(), false).await.unwrap();
                } else {
                    client.upload_archive(bundle.clone(), true).await.unwrap();
                }
                swaps.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            client.close().await;
        })
    };

    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = host.client().await;
        let (tally, stop, jets, npz) = (tally.clone(), stop.clone(), jets.clone(), npz.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
            while !stop.load(Ordering::Relaxed) {
                let n = 1 + rng.below(32) as usize;
                let (model, items): (&str, Vec<Input>) = match rng.below(10) {
                    0..=5 => ("tabular", (0..n).map(|_| Input::json(jets[rng.below(3) as usize].clone())).collect()),
                    6..=7 => ("multi-io", (0..n).map(|_| Input::new(npz.clone(), "application/x-npz")).collect()),
                    _ => {
                        let items = (0..n)
                            .map(|_| {
                                let mode = match rng.below(20) {
                                    0..=1 => "trap",
                                    2 => "bad-shape",
                                    3 => "panic-post",
                                    _ => "ok",
                                };
                                Input::json(b"{}".to_vec()).with_meta("mode", mode)
                            })
                            .collect();
                        ("hostile", items)
                    }
                };
                let mut sub = Submission::new(model, items);
                if rng.below(50) == 0 {
                    sub.header.deadline_ms = Some(1);
                }
                let cancel = rng.below(25) == 0;
                let mut seen = vec![0u32; n];
                let mut outcomes: Vec<Result<(), ErrorCode>> = Vec::new();
                let run = client.predict_stream(sub, |e| {
                    if let Event::Item(r) = e {
                        let index = match &r {
                            Ok(x) => x.index,
                            Err(f) => f.index,
                        } as usize;
                        if let Some(s) = seen.get_mut(index) {
                            *s += 1;
                        }
                        outcomes.push(r.map(drop).map_err(|f| f.code));
                    }
                });
                let finished = if cancel {
                    // Drop the request after a random moment: the host cancels the rest.
                    tokio::time::timeout(Duration::from_micros(rng.below(3000)), run).await.ok()
                } else {
                    Some(run.await)
                };
                let mut t = tally.lock().unwrap();
                t.submitted += n as u64;
                match finished {
                    Some(Ok(_summary)) => {
                        for o in &outcomes {
                            match o {
                                Ok(()) => t.ok += 1,
                                Err(code) => *t.errors.entry(code.to_string()).or_default() += 1,
                            }
                        }
                        t.lost += seen.iter().filter(|s| **s == 0).count() as u64;
                        t.duplicated += seen.iter().filter(|s| **s > 1).count() as u64;
                    }
                    Some(Err(e)) => panic!("request failed as a whole: {e}"),
                    None => {
                        // Cancelled by the client: what arrived counts, the rest is cancelled.
                        for o in &outcomes {
                            match o {
                                Ok(()) => t.ok += 1,
                                Err(code) => *t.errors.entry(code.to_string()).or_default() += 1,
                            }
                        }
                        t.duplicated += seen.iter().filter(|s| **s > 1).count() as u64;
                        t.cancelled += seen.iter().filter(|s| **s == 0).count() as u64;
                    }
                }
            }
            client.close().await;
        }));
    }

    // The first quarter is warm-up (pools, buffers and allocator arenas
    // reach their working size); RSS after it is the baseline.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs as f64 / 4.0)).await;
    let rss_warm = rss_bytes();
    tokio::time::sleep(Duration::from_secs_f64(secs as f64 / 4.0)).await;
    let (rss_mid, fds_mid) = (rss_bytes(), open_fds());
    tokio::time::sleep(Duration::from_secs_f64(secs as f64 / 2.0)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    swapper.await.unwrap();
    let elapsed = started.elapsed();
    // Let cancelled work drain and closed connections be reaped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_end, fds_end) = (rss_bytes(), open_fds());
    let status = host.client().await.status().await.unwrap();

    let t = tally.lock().unwrap();
    let accounted = t.ok + t.errors.values().sum::<u64>() + t.cancelled;
    eprintln!(
        "soak {:.0} s, {clients} clients: submitted {} ({:.0} items/s), ok {}, errors {:?}, cancelled by clients {}, \
         lost {}, duplicated {}; swaps {}; host cancelled {} items\n\
         RSS start {:.1} MB, after warm-up {:.1} MB, middle {:.1} MB, end {:.1} MB; open fds start {fds_start}, middle {fds_mid}, end {fds_end}",
        elapsed.as_secs_f64(),
        t.submitted,
        t.submitted as f64 / elapsed.as_secs_f64(),
        t.ok,
        t.errors,
        t.cancelled,
        t.lost,
        t.duplicated,
        swaps.load(Ordering::Relaxed),
        status.items_cancelled,
        rss_start as f64 / 1e6,
        rss_warm as f64 / 1e6,
        rss_mid as f64 / 1e6,
        rss_end as f64 / 1e6,
    );
    assert_eq!(t.lost, 0, "items lost");
    assert_eq!(t.duplicated, 0, "items answered twice");
    assert_eq!(accounted, t.submitted, "every item accounted for exactly once");
    assert!(t.ok > 0 && swaps.load(Ordering::Relaxed) > 0);
    for code in t.errors.keys() {
        assert!(["plugin_failed", "deadline_exceeded"].contains(&code.as_str()), "unexpected error kind {code}");
    }
    assert!(fds_end <= fds_start + 8, "file descriptors leaked: {fds_start} -> {fds_end}");
    assert!((rss_end as f64) < rss_warm as f64 * 1.3, "RSS grew from {rss_warm} to {rss_end}");
    drop(t);
    host.stop().await;
}
