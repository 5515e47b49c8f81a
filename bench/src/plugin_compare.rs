//! Two plugins of the same application side by side (a Rust plugin and its
//! Python twin, issue 16): per-item preprocess and postprocess time through
//! the host's plugin pool on the same items, and what loading costs (compile
//! cold, from the compile cache, first instance). Both plugins' replies are
//! checked to agree (`.npz` arrays equal, JSON numbers within 1e-6). The
//! forward is not run: postprocess gets a constant tensor of the manifest's
//! first output shape, its batch dimension from the prepared input.
//!
//! Usage: plugin-compare BUNDLE_A BUNDLE_B ITEM... [--iters N] [--repeat R] [--group G]
//! `--repeat R`: the items R times over (one event); `--group G`: G items
//! per plugin call (contract 0.3's grouped calls; default 1, a call per item).
//! Items: `.json` (application/json), `.npz`, `.npy`; when bundle A is
//! `lartpc-sparse` an `.npy` plane becomes its above-threshold pixel list.
//! One "event" is all items given; medians over N events after a warm-up.

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_server::manifest::Manifest;
use tensorgate_runtime::plugin::{self as host, PluginEngine, PluginPool, Produced};
use tensorgate_backend as host_tensor;
use tensorgate_plugin::npy::{parse_npz, write_npz};
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::{Payload, Tensor};

fn sdk_err(e: tensorgate_plugin::PluginError) -> anyhow::Error {
    anyhow::anyhow!("[{}] {}", e.code, e.message)
}

/// A loaded bundle and what loading it cost.
struct Loaded {
    manifest: Manifest,
    pool: PluginPool,
    cold_ms: f64,
    cached_ms: f64,
    first_instance_ms: f64,
    wasm_bytes: u64,
    /// The first load came from the bundle's precompiled artefact.
    precompiled: bool,
}

fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let manifest = Manifest::load(dir)?;
    let wasm = dir.join(&manifest.plugin.file);
    let cache = tempfile::tempdir()?;
    let timed = |cache: PathBuf| -> anyhow::Result<(PluginPool, f64)> {
        let engine = PluginEngine::new(Some(cache))?;
        let t = Instant::now();
        let pool = engine.load(&manifest.name, &wasm, &manifest, Duration::from_secs(60), 1 << 30)?;
        Ok((pool, t.elapsed().as_secs_f64() * 1e3))
    };
    let (cold, cold_ms) = timed(cache.path().to_path_buf())?;
    // A bundle with a valid precompiled artefact (plugin.cwasm) loads from
    // it even with an empty cache: `compile_cold_ms` is then that load.
    let precompiled = cold.from_cache();
    drop(cold);
    let (pool, cached_ms) = timed(cache.path().to_path_buf())?;
    anyhow::ensure!(pool.from_cache(), "the second load of {} did not use the cache", wasm.display());
    let t = Instant::now();
    pool.warm(1)?;
    let first_instance_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Loaded { wasm_bytes: std::fs::metadata(&wasm)?.len(), manifest, pool, cold_ms, cached_ms, first_instance_ms, precompiled })
}

/// A constant output of the manifest's first output shape, batch `n`.
fn output_for(manifest: &Manifest, n: u64) -> anyhow::Result<host_tensor::Tensor> {
    let decl = manifest.outputs.first().ok_or_else(|| anyhow::anyhow!("{}: no [[outputs]]", manifest.name))?;
    let shape: Vec<u64> = decl.shape.iter().map(|&d| if d < 0 { n } else { d as u64 }).collect();
    let count: u64 = shape.iter().product();
    let data: Vec<u8> = std::iter::repeat((1.0f32 / 3.0).to_le_bytes()).take(count as usize).flatten().collect();
    Ok(host_tensor::Tensor { dtype: host_tensor::Dtype::F32, shape, data: data.into() })
}

fn items(app: &str, files: &[String]) -> anyhow::Result<Vec<host::Item>> {
    files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path)?;
            let (data, content_type) = if path.ends_with(".json") {
                (bytes, "application/json")
            } else if path.ends_with(".npz") {
                (bytes, "application/x-npz")
            } else if app == "lartpc-sparse" {
                let plane = Payload::from_bytes(bytes).npy().map_err(sdk_err)?;
                let (px, values) = Pixels::above(&plane, 10.0).map_err(sdk_err)?;
                let shape = Tensor::from_slice(&[2], &[px.height as i64, px.width as i64]).map_err(sdk_err)?;
                (write_npz(&[("pixels".into(), px.coords().map_err(sdk_err)?), ("values".into(), values), ("shape".into(), shape)]), "application/x-npz")
            } else {
                (bytes, "application/x-npy")
            };
            Ok(host::Item { data: Bytes::from(data), content_type: content_type.into(), metadata: vec![("event".into(), "1".into())] })
        })
        .collect()
}

/// One event through `b`: (pre, post) time and the replies; `group` items
/// per plugin call (1: a call per item).
fn event(b: &Loaded, items: &[host::Item], group: usize) -> anyhow::Result<(Duration, Duration, Vec<host::Output>)> {
    let (mut pre, mut post, mut replies) = (Duration::ZERO, Duration::ZERO, Vec::new());
    if group > 1 {
        for chunk in items.chunks(group) {
            let t = Instant::now();
            let prepared = b.pool.preprocess_batch(chunk).into_iter().collect::<Result<Vec<_>, _>>()?;
            pre += t.elapsed();
            let produced = prepared
                .into_iter()
                .map(|p| Ok(Produced { outputs: vec![output_for(&b.manifest, p.inputs[0].shape[0])?], kept: p.keep, context: p.context }))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let t = Instant::now();
            let outputs = b.pool.postprocess_batch(produced).into_iter().collect::<Result<Vec<_>, _>>()?;
            post += t.elapsed();
            replies.extend(outputs);
        }
        return Ok((pre, post, replies));
    }
    for item in items {
        let t = Instant::now();
        let prepared = b.pool.preprocess(item)?;
        pre += t.elapsed();
        let out = output_for(&b.manifest, prepared.inputs[0].shape[0])?;
        let t = Instant::now();
        replies.push(b.pool.postprocess(vec![out], prepared.keep, &prepared.context)?);
        post += t.elapsed();
    }
    Ok((pre, post, replies))
}

/// Checks that two replies say the same thing.
fn agree(a: &host::Output, b: &host::Output) -> anyhow::Result<()> {
    anyhow::ensure!(a.content_type == b.content_type, "content types {} vs {}", a.content_type, b.content_type);
    if a.content_type == "application/x-npz" {
        let (x, y) = (parse_npz(&a.data).map_err(sdk_err)?, parse_npz(&b.data).map_err(sdk_err)?);
        anyhow::ensure!(x.len() == y.len(), "{} vs {} arrays", x.len(), y.len());
        for ((n, t), (m, u)) in x.iter().zip(&y) {
            anyhow::ensure!(n == m && t.shape() == u.shape() && t.data() == u.data(), "array {n} differs");
        }
    } else {
        let (x, y): (serde_json::Value, serde_json::Value) = (serde_json::from_slice(&a.data)?, serde_json::from_slice(&b.data)?);
        fn close(x: &serde_json::Value, y: &serde_json::Value) -> bool {
            use serde_json::Value::*;
            match (x, y) {
                (Number(a), Number(b)) => (a.as_f64().unwrap_or(f64::NAN) - b.as_f64().unwrap_or(f64::NAN)).abs() <= 1e-6,
                (Array(a), Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| close(a, b)),
                (Object(a), Object(b)) => a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| close(v, w))),
                _ => x == y,
            }
        }
        anyhow::ensure!(close(&x, &y), "replies differ: {x} vs {y}");
    }
    Ok(())
}


fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let iters = util::take_iters(&mut args, 5)?;
    let mut take = |flag: &str| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == flag) {
            Some(i) => {
                let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{flag} needs a number"))?.parse()?;
                args.drain(i..i + 2);
                Ok(v)
            }
            None => Ok(1),
        }
    };
    let (repeat, group) = (take("--repeat")?, take("--group")?);
    let [a, b, files @ ..] = &args[..] else {
        anyhow::bail!("usage: plugin-compare BUNDLE_A BUNDLE_B ITEM... [--iters N] [--repeat R] [--group G]")
    };
    anyhow::ensure!(!files.is_empty(), "give at least one item file");
    let (a, b) = (load(Path::new(a))?, load(Path::new(b))?);
    let one = items(&a.manifest.name, files)?;
    let items: Vec<host::Item> = (0..repeat.max(1)).flat_map(|_| one.iter().cloned()).collect();
    let mut times = [(vec![], vec![]), (vec![], vec![])];
    for it in 0..iters + 1 {
        let (pa, qa, ra) = event(&a, &items, group)?;
        let (pb, qb, rb) = event(&b, &items, group)?;
        for (x, y) in ra.iter().zip(&rb) {
            agree(x, y)?;
        }
        if it == iters {
            // The plugins' own metadata of the last event (e.g. timings a plugin reports).
            let meta = |r: &[host::Output]| r.iter().map(|o| o.metadata.clone()).collect::<Vec<_>>();
            eprintln!("metadata a: {:?}\nmetadata b: {:?}", meta(&ra), meta(&rb));
        }
        if it > 0 {
            // The first pass warms the instances (memory growth, caches).
            times[0].0.push(pa);
            times[0].1.push(qa);
            times[1].0.push(pb);
            times[1].1.push(qb);
        }
    }
    let [(pa, qa), (pb, qb)] = times.map(|(p, q)| (util::median_ms(p), util::median_ms(q)));
    let per_item = |ms: f64| ms * 1e3 / items.len() as f64;
    let report = |l: &Loaded, pre: f64, post: f64| {
        serde_json::json!({
            "app": l.manifest.name, "wasm_bytes": l.wasm_bytes,
            "compile_cold_ms": l.cold_ms, "first_load_from_bundle_artefact": l.precompiled, "load_cached_ms": l.cached_ms, "first_instance_ms": l.first_instance_ms,
            "pre_ms_per_event": pre, "post_ms_per_event": post, "total_ms_per_event": pre + post,
            "us_per_item": per_item(pre + post),
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "items_per_event": items.len(), "items_per_call": group, "iters": iters,
            "a": report(&a, pa, qa), "b": report(&b, pb, qb),
            "ratio_b_over_a": (pb + qb) / (pa + qa),
        })
    );
    Ok(())
}
