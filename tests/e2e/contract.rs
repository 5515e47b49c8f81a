//! Plugin contract 0.2 and on: the plugins run as wasm components through the
//! host's plugin pool, with the host's tensors and operations, give
//! byte-for-byte the replies the same SDK code gives compiled natively (the
//! SDK's own implementation of every host operation). The forward pass is
//! replaced by a score tensor that encodes each element's position, so that
//! a stitching or gathering mistake on either side shows.

use std::time::Duration;

use bytes::Bytes;
use tensorgate_server::manifest::Manifest;
use tensorgate_runtime::plugin::{Item, PluginEngine, PluginPool};
use tensorgate_backend::{Dtype as HostDtype, Tensor as HostTensor};
use tensorgate_plugin::npy::{parse_npz, write_npy, write_npz};
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;
use tensorgate_plugin::{Output, Payload, Tensor};
use tensorgate_tests::{repository, root};

fn pool(app: &str) -> (PluginPool, Manifest) {
    let dir = repository().join(app).join("1");
    let manifest = Manifest::load(&dir).expect("manifest");
    let engine = PluginEngine::new(None).expect("engine");
    let pool = engine.load(app, &dir.join(&manifest.plugin.file), &manifest, Duration::from_secs(30), 1 << 30).expect("plugin");
    (pool, manifest)
}

fn param<T: serde::de::DeserializeOwned>(m: &Manifest, key: &str) -> T {
    let raw = m.params_as_text().into_iter().find(|(k, _)| k == key).expect(key).1;
    serde_json::from_str(&raw).expect(key)
}

/// Scores `[n, 3, t, t]` whose every element is its own flat index.
fn positional_scores(n: u64, t: u64) -> (HostTensor, Tensor) {
    let values: Vec<f32> = (0..n * 3 * t * t).map(|i| i as f32).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![n, 3, t, t];
    let native = Tensor::from_parts(tensorgate_plugin::Dtype::F32, shape.clone(), bytes.clone()).unwrap();
    (HostTensor { dtype: HostDtype::F32, shape, data: bytes.into() }, native)
}

/// The sample plane (a crop of a wire plane) as `.npy`.
fn plane() -> Vec<u8> {
    let bytes = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).expect("sample");
    let (pixels, values) = Pixels::from_npz(parse_npz(&bytes).unwrap()).unwrap();
    write_npy(&pixels.to_dense(&values).unwrap())
}

#[test]
fn lartpc_dense_in_wasm_matches_the_native_sdk_byte_for_byte() {
    let (pool, manifest) = pool("lartpc-dense");
    let (threshold, tile, overlap): (f32, usize, usize) = (param(&manifest, "threshold"), param(&manifest, "tile"), param(&manifest, "overlap"));
    let data = plane();
    let item = Item { data: Bytes::from(data.clone()), content_type: "application/x-npy".into(), metadata: vec![] };
    let prepared = pool.preprocess(&item).expect("wasm preprocess");

    let (pixels, values) = Pixels::above(&Payload::from_bytes(data).npy().unwrap(), threshold).unwrap();
    let tiled = TiledPixels::new(pixels, tile, overlap).unwrap();
    let input = tiled.input_from_plane(&tiled.pixels.to_dense(&values).unwrap()).unwrap();
    assert_eq!(prepared.inputs[0].shape, input.shape(), "same tiles run");
    assert!(prepared.inputs[0].data == *input.data(), "same tile batch");
    assert!(prepared.keep[0].data == *values.data(), "same kept values");
    assert_eq!(prepared.context, tiled.context());

    let (host_scores, native_scores) = positional_scores(tiled.tiles.len() as u64, tile as u64);
    let reply = pool.postprocess(vec![host_scores], prepared.keep, &prepared.context).expect("wasm postprocess");
    let scores = tiled.gather(&native_scores).unwrap();
    let native = Output::npz(vec![("pixels".into(), tiled.pixels.coords().unwrap()), ("values".into(), values), ("scores".into(), scores)]);
    assert_eq!(reply.content_type, "application/x-npz");
    assert!(reply.data == native.to_bytes(), "replies differ");
    let arrays = parse_npz(&reply.data).unwrap();
    assert!(arrays[2].1.shape()[0] > 100, "a real number of lit pixels: {:?}", arrays[2].1.shape());
    eprintln!("lartpc-dense: {} pixels, {} tiles, {} bytes crossed", tiled.pixels.len(), tiled.tiles.len(), pool.crossed_bytes());
}

#[test]
fn lartpc_sparse_in_wasm_matches_the_native_sdk_byte_for_byte() {
    let (pool, manifest) = pool("lartpc-sparse");
    let (tile, overlap): (usize, usize) = (param(&manifest, "tile"), param(&manifest, "overlap"));
    let data = std::fs::read(root().join("plugins/lartpc-dense/samples/plane-crop.npz")).unwrap();
    // Scramble the pixel order: scores must come back in the input's order.
    let (pixels, values) = Pixels::from_npz(parse_npz(&data).unwrap()).unwrap();
    let n = pixels.len();
    let order: Vec<usize> = (0..n).map(|i| (i * 7919 + 13) % n).collect();
    let v = values.to_f32().unwrap();
    let shuffled = Pixels::new(pixels.height, pixels.width, order.iter().map(|&i| pixels.rows[i]).collect(), order.iter().map(|&i| pixels.cols[i]).collect()).unwrap();
    let vals: Vec<f32> = order.iter().map(|&i| v[i]).collect();
    let npz = write_npz(&[
        ("pixels".into(), shuffled.coords().unwrap()),
        ("values".into(), Tensor::from_slice(&[n as u64], &vals).unwrap()),
        ("shape".into(), Tensor::from_slice(&[2], &[pixels.height as i64, pixels.width as i64]).unwrap()),
    ]);
    let item = Item { data: Bytes::from(npz.clone()), content_type: "application/x-npz".into(), metadata: vec![] };
    let prepared = pool.preprocess(&item).expect("wasm preprocess");
    let (pixels, values) = Pixels::from_npz(Payload::from_bytes(npz).npz().unwrap()).unwrap();
    let tiled = TiledPixels::new(pixels, tile, overlap).unwrap();
    assert!(prepared.inputs[0].data == *tiled.input(&values).unwrap().data(), "same tile batch");
    let (host_scores, native_scores) = positional_scores(tiled.tiles.len() as u64, tile as u64);
    let reply = pool.postprocess(vec![host_scores], prepared.keep, &prepared.context).expect("wasm postprocess");
    let native = Output::npz(vec![("scores".into(), tiled.gather(&native_scores).unwrap())]);
    assert!(reply.data == native.to_bytes(), "replies differ");
}
