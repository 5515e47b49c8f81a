//! WASM plugin pre/post-processing vs the same SDK code compiled natively,
//! per event, for `lartpc-dense` (planes as `.npy`) or `lartpc-sparse`
//! (the same planes as pixel lists). The forward pass is not run: the
//! postprocess input is a constant score tensor of the shape the model
//! returns (its values do not change the work). Both sides run the same
//! host operations (contract 0.2: tensors stay in the host; natively the
//! SDK runs the operations in place): the ratio is what the component
//! boundary and wasm compute add. Both outputs are checked to be
//! byte-identical. `crossed_mb` is what crossed the component boundary per
//! event (lists of bytes both ways: payload and tensor reads, tensor
//! writes, contexts, reply bytes; tensors passed by handle do not count).
//!
//! Usage: plugin-overhead BUNDLE_DIR PLANE.npy... [--iters N]
//! (planes from `scripts/make_models.py --event DIR`; one event = all planes given)
//! For the `image` application the inputs are PNG files (one event = all
//! images given): PNG decode, resize, normalise; top-k JSON.

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_server::manifest::Manifest;
use tensorgate_runtime::plugin::{self as host, PluginEngine};
use tensorgate_backend as host_tensor;
use tensorgate_plugin::context::Reader;
use tensorgate_plugin::npy::write_npz;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;
use tensorgate_plugin::{Dtype, Output, Payload, PluginError, Tensor};

struct Params {
    threshold: f32,
    tile: usize,
    overlap: usize,
    size: [usize; 2],
    mean: [f32; 3],
    std: [f32; 3],
    top_k: usize,
}

fn sdk_err(e: PluginError) -> anyhow::Error {
    anyhow::anyhow!("[{}] {}", e.code, e.message)
}

/// The image plugin's preprocess, natively.
fn image_pre(data: &[u8], size: [usize; 2], mean: [f32; 3], std: [f32; 3]) -> Result<Tensor, PluginError> {
    let img = tensorgate_plugin::image::decode_png(data, u64::MAX)?;
    tensorgate_plugin::image::to_tensor(&img.image(), size[0], size[1], mean, std)
}

/// The image plugin's postprocess, natively.
fn image_post(scores: &Tensor, labels: &[String], k: usize) -> Result<Vec<u8>, PluginError> {
    let top = tensorgate_plugin::labels::top_k(labels, &scores.view::<f32>()?, k)?;
    let top: Vec<_> = top.into_iter().map(|(label, score)| serde_json::json!({ "label": label, "score": score })).collect();
    Ok(serde_json::to_vec(&serde_json::json!({ "top_k": top })).expect("json"))
}

/// The plugins' preprocess, natively: plane (or pixel list) -> tiles, kept tensors, context.
fn native_pre(app: &str, payload: &Payload, p: &Params) -> Result<(Tensor, Vec<Tensor>, Vec<u8>), PluginError> {
    if app == "image" {
        return Ok((image_pre(&payload.bytes()?, p.size, p.mean, p.std)?, Vec::new(), Vec::new()));
    }
    let (pixels, values) = if app == "lartpc-sparse" {
        Pixels::from_npz(payload.npz()?)?
    } else {
        Pixels::above(&payload.npy()?, p.threshold)?
    };
    let tiled = TiledPixels::new(pixels, p.tile, p.overlap)?;
    let input = if app == "lartpc-sparse" { tiled.input(&values)? } else { tiled.input_from_plane(&tiled.pixels.to_dense(&values)?)? };
    let kept = if app == "lartpc-sparse" { Vec::new() } else { vec![values] };
    Ok((input, kept, tiled.context()))
}

/// The plugins' postprocess, natively: scores + kept + context -> reply bytes
/// (the scores are dropped here, as the host frees the outputs after the call).
fn native_post(app: &str, scores: Tensor, mut kept: Vec<Tensor>, context: &[u8], labels: &[String], p: &Params) -> Result<Vec<u8>, PluginError> {
    if app == "image" {
        return image_post(&scores, labels, p.top_k);
    }
    let tiled = TiledPixels::decode(&mut Reader::new(context))?;
    let s = tiled.gather(&scores)?;
    drop(scores);
    tensorgate_plugin::labels::check(labels, s.shape()[1] as usize)?;
    Ok(if app == "lartpc-sparse" {
        Output::npz(vec![("scores".into(), s)]).to_bytes()
    } else {
        let values = kept.pop().ok_or_else(|| PluginError::new("context", "no kept values"))?;
        Output::npz(vec![("pixels".into(), tiled.pixels.coords()?), ("values".into(), values), ("scores".into(), s)]).to_bytes()
    })
}

/// The same tensor for the host and for the native SDK.
fn both(dtype: host_tensor::Dtype, shape: Vec<u64>, data: Vec<u8>) -> anyhow::Result<(host_tensor::Tensor, Tensor)> {
    let d = match dtype {
        host_tensor::Dtype::F32 => Dtype::F32,
        other => anyhow::bail!("unexpected dtype {other}"),
    };
    let native = Tensor::from_parts(d, shape.clone(), data.clone()).map_err(sdk_err)?;
    Ok((host_tensor::Tensor { dtype, shape, data: data.into() }, native))
}

fn constant_scores(n: u64, tile: u64) -> anyhow::Result<(host_tensor::Tensor, Tensor)> {
    let data: Vec<u8> = std::iter::repeat((1.0f32 / 3.0).to_le_bytes()).take((n * 3 * tile * tile) as usize).flatten().collect();
    both(host_tensor::Dtype::F32, vec![n, 3, tile, tile], data)
}

fn host_of(t: &Tensor) -> host_tensor::Tensor {
    host_tensor::Tensor { dtype: host_tensor::Dtype::F32, shape: t.shape().to_vec(), data: t.data().to_vec().into() }
}


fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let iters = util::take_iters(&mut args, 5)?;
    let [bundle, planes @ ..] = &args[..] else { anyhow::bail!("usage: plugin-overhead BUNDLE_DIR PLANE.npy... [--iters N]") };
    anyhow::ensure!(!planes.is_empty(), "give at least one plane .npy");
    let dir = std::path::PathBuf::from(bundle);
    let manifest = Manifest::load(&dir)?;
    let app = manifest.name.clone();
    let params = manifest.params_as_text();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    fn json<T: serde::de::DeserializeOwned>(raw: Option<String>, default: &str) -> anyhow::Result<T> {
        Ok(serde_json::from_str(raw.as_deref().unwrap_or(default))?)
    }
    let p = Params {
        threshold: json(param("threshold"), "10.0")?,
        tile: json(param("tile"), "512")?,
        overlap: json(param("overlap"), "64")?,
        size: json(param("size"), "[32, 32]")?,
        mean: json(param("mean"), "[0, 0, 0]")?,
        std: json(param("std"), "[1, 1, 1]")?,
        top_k: json(param("top_k"), "3")?,
    };
    let labels = manifest.labels.clone();
    let engine = PluginEngine::new(None)?;
    let pool = engine.load(&app, &dir.join(&manifest.plugin.file), &manifest, Duration::from_secs(60), 1 << 30)?;

    // Items: the planes as .npy (dense) or, for lartpc-sparse, their above-threshold pixels as .npz.
    let items: Vec<host::Item> = planes
        .iter()
        .enumerate()
        .map(|(i, path)| -> anyhow::Result<host::Item> {
            let bytes = std::fs::read(path)?;
            let (data, content_type) = if app == "image" {
                (bytes, "image/png")
            } else if app == "lartpc-sparse" {
                let plane = Payload::from_bytes(bytes).npy().map_err(sdk_err)?;
                let (px, values) = Pixels::above(&plane, p.threshold).map_err(sdk_err)?;
                let shape = Tensor::from_slice(&[2], &[px.height as i64, px.width as i64]).map_err(sdk_err)?;
                (write_npz(&[("pixels".into(), px.coords().map_err(sdk_err)?), ("values".into(), values), ("shape".into(), shape)]), "application/x-npz")
            } else {
                (bytes, "application/x-npy")
            };
            let metadata = vec![("run".into(), "1".into()), ("event".into(), "1".into()), ("plane".into(), i.to_string())];
            Ok(host::Item { data: Bytes::from(data), content_type: content_type.into(), metadata })
        })
        .collect::<anyhow::Result<_>>()?;

    // The native side's payloads, made once (the host's are the items' own bytes).
    let payloads: Vec<Payload> = items.iter().map(|i| Payload::from_bytes(i.data.to_vec())).collect();
    let (mut wasm_pre, mut wasm_post, mut nat_pre, mut nat_post, mut crossed) = (vec![], vec![], vec![], vec![], vec![]);
    let mut tiles = 0;
    for it in 0..iters + 1 {
        let (mut wp, mut wq, mut np, mut nq) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        tiles = 0;
        let crossed_before = pool.crossed_bytes();
        for (item, payload) in items.iter().zip(&payloads) {
            let t = Instant::now();
            let prepared = pool.preprocess(item)?;
            wp += t.elapsed();
            let t = Instant::now();
            let (native_input, native_kept, native_ctx) = native_pre(&app, payload, &p).map_err(sdk_err)?;
            np += t.elapsed();
            anyhow::ensure!(prepared.inputs[0].data == *native_input.data() && prepared.context == native_ctx, "wasm and native preprocess differ");
            let n = prepared.inputs[0].shape[0];
            tiles += n;
            let (hs, ns) = if app == "image" {
                let probs = vec![1.0f32 / labels.len() as f32; labels.len()];
                both(host_tensor::Dtype::F32, vec![1, labels.len() as u64], probs.iter().flat_map(|v| v.to_le_bytes()).collect())?
            } else {
                constant_scores(n, p.tile as u64)?
            };
            anyhow::ensure!(prepared.keep.iter().zip(&native_kept).all(|(h, n)| *h == host_of(n)), "kept tensors differ");
            let t = Instant::now();
            let reply = pool.postprocess(vec![hs], prepared.keep, &prepared.context)?;
            wq += t.elapsed();
            let t = Instant::now();
            let native_reply = native_post(&app, ns, native_kept, &native_ctx, &labels, &p).map_err(sdk_err)?;
            nq += t.elapsed();
            anyhow::ensure!(reply.data == native_reply, "wasm and native postprocess differ");
        }
        if it > 0 {
            // The first pass warms the instance (memory growth) and caches.
            wasm_pre.push(wp);
            wasm_post.push(wq);
            nat_pre.push(np);
            nat_post.push(nq);
            crossed.push(pool.crossed_bytes() - crossed_before);
        }
    }
    let crossed_mb = crossed.iter().max().copied().unwrap_or(0) as f64 / 1e6;
    let (wp, wq, np, nq) = (util::median_ms(wasm_pre), util::median_ms(wasm_post), util::median_ms(nat_pre), util::median_ms(nat_post));
    println!(
        "{}",
        serde_json::json!({
            "app": app, "planes": planes.len(), "tiles_run": tiles, "iters": iters,
            "crossed_mb_per_event": crossed_mb,
            "per_event_ms": {
                "wasm_pre": wp, "native_pre": np, "pre_ratio": wp / np,
                "wasm_post": wq, "native_post": nq, "post_ratio": wq / nq,
                "wasm_total": wp + wq, "native_total": np + nq, "total_ratio": (wp + wq) / (np + nq),
            }
        })
    );
    Ok(())
}
