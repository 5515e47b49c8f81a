//! WASM plugin pre/post-processing vs the same SDK code compiled natively,
//! per event, for `lartpc-dense` (planes as `.npy`) or `lartpc-sparse`
//! (the same planes as pixel lists). The forward pass is not run: the
//! postprocess input is a constant score tensor of the shape the model
//! returns (its values do not change the work). The WASM timings include
//! the copies across the component boundary (item in, tiles out, scores in,
//! reply out); the native ones read and write the same buffers in place.
//! Both outputs are checked to be byte-identical. `boundary_copies` is one
//! memcpy of each buffer that crosses into warm memory (a lower bound of
//! what the canonical ABI must move), to separate copying from compute.
//!
//! Usage: plugin-overhead BUNDLE_DIR PLANE.npy... [--iters N]
//! (planes from `scripts/make_models.py --event DIR`; one event = all planes given)
//! For the `image` application the inputs are PNG files (one event = all
//! images given): PNG decode, resize, normalise; top-k JSON.

use std::time::{Duration, Instant};

use tensorgate_host::manifest::Manifest;
use tensorgate_host::plugin::{self as host, PluginEngine};
use tensorgate_host::tensor as host_tensor;
use tensorgate_plugin::context::{Reader, Writer};
use tensorgate_plugin::npy::{view_npy, write_npz};
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;
use tensorgate_plugin::{Dtype, PluginError, Tensor};


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
    let bad = |e: png::DecodingError| PluginError::new("bad-png", format!("cannot decode PNG: {e}"));
    let mut decoder = png::Decoder::new(data);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = (reader.info().width as usize, reader.info().height as usize);
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let img = tensorgate_plugin::image::Image { height, width, channels: frame.color_type.samples(), data: &buf[..frame.buffer_size()] };
    tensorgate_plugin::image::to_tensor(&img, size[0], size[1], mean, std)
}

/// The image plugin's postprocess, natively.
fn image_post(scores: &Tensor, labels: &[String], k: usize) -> Result<Vec<u8>, PluginError> {
    let top = tensorgate_plugin::labels::top_k(labels, &scores.view::<f32>()?, k)?;
    let top: Vec<_> = top.into_iter().map(|(label, score)| serde_json::json!({ "label": label, "score": score })).collect();
    Ok(serde_json::to_vec(&serde_json::json!({ "top_k": top })).expect("json"))
}

/// The plugins' preprocess, natively: plane (or pixel list) -> tiles + context.
fn native_pre(app: &str, item: &host::Item, p: &Params) -> Result<(Tensor, Vec<u8>), PluginError> {
    if app == "image" {
        return Ok((image_pre(&item.data, p.size, p.mean, p.std)?, Vec::new()));
    }
    let pixels = if app == "lartpc-sparse" {
        Pixels::from_npz(&tensorgate_plugin::npy::parse_npz(&item.data)?)?
    } else {
        let plane = view_npy(&item.data)?;
        Pixels::above(&plane.view::<f32>()?, plane.shape[1] as usize, p.threshold)
    };
    let tiled = TiledPixels::new(pixels, p.tile, p.overlap)?;
    // The item's metadata reaches the reply through the host, not the context.
    let mut ctx = Writer::new();
    tiled.encode(&mut ctx);
    Ok((tiled.input(), ctx.finish()))
}

/// The plugins' postprocess, natively: scores + context -> reply bytes.
fn native_post(app: &str, scores: &Tensor, context: &[u8], labels: &[String], p: &Params) -> Result<Vec<u8>, PluginError> {
    if app == "image" {
        return image_post(scores, labels, p.top_k);
    }
    let mut ctx = Reader::new(context);
    let tiled = TiledPixels::decode(&mut ctx)?;
    let s = tiled.gather(scores)?;
    tensorgate_plugin::labels::check(labels, s.shape[1] as usize)?;
    Ok(if app == "lartpc-sparse" {
        write_npz(&[("scores".into(), s)])
    } else {
        write_npz(&[("pixels".into(), tiled.pixels.coords()), ("values".into(), tiled.pixels.values_tensor()), ("scores".into(), s)])
    })
}

fn constant_scores(n: u64, tile: u64) -> (host_tensor::Tensor, Tensor) {
    let data: Vec<u8> = std::iter::repeat((1.0f32 / 3.0).to_le_bytes()).take((n * 3 * tile * tile) as usize).flatten().collect();
    let shape = vec![n, 3, tile, tile];
    (host_tensor::Tensor { dtype: host_tensor::Dtype::F32, shape: shape.clone(), data: data.clone() }, Tensor { dtype: Dtype::F32, shape, data })
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let iters = match args.iter().position(|a| a == "--iters") {
        Some(i) => {
            let n = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--iters N"))?.parse()?;
            args.drain(i..i + 2);
            n
        }
        None => 5usize,
    };
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
                let v = view_npy(&bytes).map_err(sdk_err)?;
                let px = Pixels::above(&v.view::<f32>().map_err(sdk_err)?, v.shape[1] as usize, p.threshold);
                let shape = Tensor::from_slice(&[2], &[px.height as i64, px.width as i64]);
                (write_npz(&[("pixels".into(), px.coords()), ("values".into(), px.values_tensor()), ("shape".into(), shape)]), "application/x-npz")
            } else {
                (bytes, "application/x-npy")
            };
            let metadata = vec![("run".into(), "1".into()), ("event".into(), "1".into()), ("plane".into(), i.to_string())];
            Ok(host::Item { data, content_type: content_type.into(), metadata })
        })
        .collect::<anyhow::Result<_>>()?;

    let (mut wasm_pre, mut wasm_post, mut nat_pre, mut nat_post, mut copies) = (vec![], vec![], vec![], vec![], vec![]);
    let mut tiles = 0;
    let mut scratch: Vec<u8> = Vec::new();
    for it in 0..iters + 1 {
        let (mut wp, mut wq, mut np, mut nq, mut cp) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        tiles = 0;
        for item in &items {
            let t = Instant::now();
            let prepared = pool.preprocess(item)?;
            wp += t.elapsed();
            let t = Instant::now();
            let (native_input, native_ctx) = native_pre(&app, item, &p).map_err(sdk_err)?;
            np += t.elapsed();
            anyhow::ensure!(prepared.inputs[0].data == native_input.data && prepared.context == native_ctx, "wasm and native preprocess differ");
            let n = prepared.inputs[0].shape[0];
            tiles += n;
            let (hs, ns) = if app == "image" {
                let probs = Tensor::from_slice(&[1, labels.len() as u64], &vec![1.0f32 / labels.len() as f32; labels.len()]);
                (host_tensor::Tensor { dtype: host_tensor::Dtype::F32, shape: probs.shape.clone(), data: probs.data.clone() }, probs)
            } else {
                constant_scores(n, p.tile as u64)
            };
            let outputs = vec![hs];
            // The host moves the outputs into the call; the copy for the memcpy baseline is made first.
            let scores_bytes = outputs[0].data.clone();
            let t = Instant::now();
            let reply = pool.postprocess(outputs, &prepared.context)?;
            wq += t.elapsed();
            let t = Instant::now();
            let native_reply = native_post(&app, &ns, &native_ctx, &labels, &p).map_err(sdk_err)?;
            nq += t.elapsed();
            anyhow::ensure!(reply.data == native_reply, "wasm and native postprocess differ");
            // What crossing the boundary costs at least: one memcpy of each buffer
            // (item in, tiles out, scores in, reply out) into warm, reused memory.
            let bufs = [&item.data, &prepared.inputs[0].data, &scores_bytes, &reply.data];
            scratch.resize(bufs.iter().map(|b| b.len()).max().unwrap_or(0), 0);
            let t = Instant::now();
            for buf in bufs {
                scratch[..buf.len()].copy_from_slice(buf);
                std::hint::black_box(&scratch);
            }
            cp += t.elapsed();
        }
        if it > 0 {
            // The first pass warms the instance (memory growth) and caches.
            wasm_pre.push(wp);
            wasm_post.push(wq);
            nat_pre.push(np);
            nat_post.push(nq);
            copies.push(cp);
        }
    }
    let (wp, wq, np, nq, cp) = (median(wasm_pre), median(wasm_post), median(nat_pre), median(nat_post), median(copies));
    println!(
        "{}",
        serde_json::json!({
            "app": app, "planes": planes.len(), "tiles_run": tiles, "iters": iters,
            "per_event_ms": {
                "wasm_pre": wp, "native_pre": np, "pre_ratio": wp / np,
                "wasm_post": wq, "native_post": nq, "post_ratio": wq / nq,
                "wasm_total": wp + wq, "native_total": np + nq, "total_ratio": (wp + wq) / (np + nq),
                "boundary_copies": cp, "total_ratio_less_copies": (wp + wq - cp) / (np + nq),
            }
        })
    );
    Ok(())
}
