//! Plugin contract 0.3: the host hands a plugin the items it has waiting
//! in one call. A grouped call must give every item exactly the reply a
//! call of its own gives (Rust and Python plugins, tabular and the sparse
//! LArTPC app), and an item that fails or kills the call fails alone.
//!
//! The forward pass is replaced by a function of each item's own input, so
//! that an item given another item's rows, or replies out of order, show.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tensorgate_backend::{Dtype, Tensor};
use tensorgate_runtime::plugin::{CallError, Item, PluginEngine, PluginPool, Produced};
use tensorgate_server::manifest::Manifest;
use tensorgate_tests::{built_plugin, repository, root, scrambled_sample_pixels, sparse_npz};

fn py_repository() -> PathBuf {
    std::env::var_os("TENSORGATE_PY_REPO").map(PathBuf::from).unwrap_or_else(|| root().join("target/repository-python"))
}

/// The plugin of bundle `dir`, with a compile cache shared with the other
/// Python tests (a Python component takes seconds to compile).
fn pool(dir: &Path, timeout: Duration) -> PluginPool {
    let manifest = Manifest::load(dir).expect("manifest");
    let engine = PluginEngine::new(Some(root().join("target/compile-cache-python"))).expect("engine");
    engine.load(&manifest.name, &dir.join(&manifest.plugin.file), &manifest, timeout, 1 << 30).expect("plugin loads")
}

fn item(data: Vec<u8>, content_type: &str, metadata: &[(&str, &str)]) -> Item {
    Item {
        data: Bytes::from(data),
        content_type: content_type.into(),
        metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// The tabular items: every case of the PyTorch reference, and bad ones.
fn tabular_items() -> Vec<Item> {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("plugins/tabular/reference.json")).expect("reference")).expect("JSON");
    let mut items: Vec<Item> = reference["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| item(serde_json::to_vec(&c["request"]).expect("JSON"), "application/json", &[]))
        .collect();
    items.insert(2, item(br#"{"values": [1.0]}"#.to_vec(), "application/json", &[]));
    items.insert(4, item(br#"{"keys": ["jet_pt"], "values": [1.0]}"#.to_vec(), "application/json", &[]));
    items.push(item(b"{\"keys\": [".to_vec(), "application/json", &[]));
    items
}

/// The sparse LArTPC items: the scrambled sample plane, slices of it, one
/// with no pixel and one with a pixel listed twice.
fn lartpc_items() -> Vec<Item> {
    use tensorgate_plugin::sparse::Pixels;
    let sample = scrambled_sample_pixels();
    let npz = |p: &Pixels, v: &[f32]| item(sparse_npz(p, v), "application/x-npz", &[("event", "7")]);
    let (pixels, values) = {
        let entries = tensorgate_plugin::npy::parse_npz(&sample.npz).expect("npz");
        let (p, v) = Pixels::from_npz(entries).expect("sparse");
        (p, v.to_f32().expect("f32"))
    };
    let part = |from: usize, to: usize| {
        let p = Pixels { height: pixels.height, width: pixels.width, rows: pixels.rows[from..to].to_vec(), cols: pixels.cols[from..to].to_vec() };
        npz(&p, &values[from..to])
    };
    let twice = Pixels { height: 10, width: 10, rows: vec![1, 3, 1], cols: vec![1, 2, 1] };
    let none = Pixels { height: 600, width: 700, rows: vec![], cols: vec![] };
    vec![
        item(sample.npz.clone(), "application/x-npz", &[]),
        part(0, 500),
        npz(&twice, &[5.0; 3]),
        part(500, 4000),
        npz(&none, &[]),
        part(100, 101),
    ]
}

/// The stand-in model: for an `[n, f]` input, `[n, 4]` with out[i, k] =
/// sum of row i times (k + 1); for tiles `[m, 1, t, t]`, `[m, 3, t, t]`
/// with channel c = input * (c + 1) + position.
fn forward(inputs: &[Tensor]) -> Vec<Tensor> {
    let x = &inputs[0];
    let v: Vec<f32> = x.data.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect();
    let (shape, out): (Vec<u64>, Vec<f32>) = if x.shape.len() == 2 {
        let (n, f) = (x.shape[0] as usize, x.shape[1] as usize);
        let out = (0..n).flat_map(|i| {
            let s: f32 = v[i * f..(i + 1) * f].iter().sum();
            (0..4).map(move |k| s * (k + 1) as f32)
        });
        (vec![n as u64, 4], out.collect())
    } else {
        let (m, t2) = (x.shape[0] as usize, (x.shape[2] * x.shape[3]) as usize);
        let out = (0..m).flat_map(|i| {
            let v = &v;
            (0..3).flat_map(move |c| (0..t2).map(move |p| v[i * t2 + p] * (c + 1) as f32 + p as f32))
        });
        (vec![m as u64, 3, x.shape[2], x.shape[3]], out.collect())
    };
    let data: Vec<u8> = out.iter().flat_map(|f| f.to_le_bytes()).collect();
    vec![Tensor { dtype: Dtype::F32, shape, data: data.into() }]
}

/// Each item through preprocess, the stand-in model and postprocess: one
/// call per item, or the whole list in one call each way.
fn replies(pool: &PluginPool, items: &[Item], grouped: bool) -> Vec<Result<(Vec<u8>, String, Vec<(String, String)>), String>> {
    let prepared = if grouped { pool.preprocess_batch(items) } else { items.iter().map(|i| pool.preprocess(i)).collect() };
    let mut produced = Vec::new();
    let mut slots = Vec::new();
    for p in &prepared {
        match p {
            Ok(p) => {
                slots.push(Ok(produced.len()));
                produced.push(Produced { outputs: forward(&p.inputs), kept: p.keep.clone(), context: p.context.clone() });
            }
            Err(e) => slots.push(Err(e.to_string())),
        }
    }
    let outputs = if grouped {
        pool.postprocess_batch(produced)
    } else {
        produced.into_iter().map(|p| pool.postprocess(p.outputs, p.kept, &p.context)).collect()
    };
    let mut outputs: Vec<Option<Result<_, CallError>>> = outputs.into_iter().map(Some).collect();
    slots
        .into_iter()
        .map(|s| {
            let i = s?;
            let o = outputs[i].take().expect("one output per prepared item").map_err(|e| e.to_string())?;
            Ok((o.data, o.content_type, o.metadata))
        })
        .collect()
}

fn same_replies(dir: PathBuf, items: Vec<Item>, want_failed: usize) {
    let pool = pool(&dir, Duration::from_secs(30));
    let alone = replies(&pool, &items, false);
    let grouped = replies(&pool, &items, true);
    assert_eq!(alone.len(), items.len());
    let failed = alone.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, want_failed, "{}: {alone:?}", dir.display());
    for (i, (a, g)) in alone.iter().zip(&grouped).enumerate() {
        assert_eq!(a, g, "{} item {i}: a grouped call gave another reply than a call of its own", dir.display());
    }
}

#[test]
fn grouped_and_per_item_calls_give_identical_replies_rust_tabular() {
    same_replies(repository().join("tabular/1"), tabular_items(), 3);
}

#[test]
fn grouped_and_per_item_calls_give_identical_replies_python_tabular() {
    same_replies(py_repository().join("py-tabular/1"), tabular_items(), 3);
}

#[test]
fn grouped_and_per_item_calls_give_identical_replies_rust_lartpc_sparse() {
    same_replies(repository().join("lartpc-sparse/1"), lartpc_items(), 1);
}

#[test]
fn grouped_and_per_item_calls_give_identical_replies_python_lartpc_sparse() {
    same_replies(py_repository().join("py-lartpc-sparse/1"), lartpc_items(), 1);
}

/// The Python LArTPC plugin (the host's `tile-pixels` and `untile-pixels`)
/// and the Rust one (the SDK's tiling) give the same replies byte for byte.
#[test]
fn python_and_rust_lartpc_sparse_agree_byte_for_byte() {
    let items = lartpc_items();
    let rust = replies(&pool(&repository().join("lartpc-sparse/1"), Duration::from_secs(30)), &items, true);
    let python = replies(&pool(&py_repository().join("py-lartpc-sparse/1"), Duration::from_secs(30)), &items, true);
    for (i, (r, p)) in rust.iter().zip(&python).enumerate() {
        match (r, p) {
            (Ok(r), Ok(p)) => assert_eq!(r, p, "item {i}"),
            (Err(r), Err(p)) => assert!(r.contains("listed twice") && p.contains("listed twice"), "item {i}: {r} / {p}"),
            _ => panic!("item {i}: Rust {r:?}, Python {p:?}"),
        }
    }
}

fn hostile(mode: &str) -> Item {
    item(Vec::new(), "application/octet-stream", &[("mode", mode)])
}

/// A group with an item that traps, one that loops past its budget and
/// one the plugin refuses: each fails alone, with its own error; the
/// others get their replies.
#[test]
fn a_bad_item_in_a_grouped_call_fails_alone_rust() {
    let repo = tempfile::tempdir().expect("dir");
    let dir = repo.path().join("hostile/1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(root().join("tests/plugins/hostile/manifest.toml"), dir.join("manifest.toml")).expect("manifest");
    std::fs::copy(repository().join("tabular/1/model.pt"), dir.join("model.pt")).expect("model");
    std::fs::copy(built_plugin("hostile_plugin"), dir.join("plugin.wasm")).expect("plugin");
    let pool = pool(&dir, Duration::from_millis(200));
    let items: Vec<Item> = ["ok", "trap", "ok", "bad-index", "loop", "ok"].iter().map(|m| hostile(m)).collect();
    let results = pool.preprocess_batch(&items);
    let said: Vec<String> = results.iter().map(|r| r.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())).collect();
    assert_eq!(said[0], "ok");
    assert!(said[1].contains("trap requested by item"), "{said:?}");
    assert_eq!(said[2], "ok");
    assert!(said[3].contains("[op]") && said[3].contains("outside 0..16"), "{said:?}");
    assert!(said[4].starts_with("plugin timeout"), "{said:?}");
    assert_eq!(said[5], "ok");
    // Postprocess: the item whose postprocess panics fails alone too.
    let mut produced = Vec::new();
    for mode in ["ok", "panic-post", "ok"] {
        let p = pool.preprocess(&hostile(mode)).expect("preprocess");
        produced.push(Produced { outputs: forward(&p.inputs), kept: p.keep, context: p.context });
    }
    let out = pool.postprocess_batch(produced);
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(out[1].as_ref().unwrap_err().to_string().contains("panic in postprocess"), "{out:?}");
}

/// The same for a Python plugin: an exception fails its item inside the
/// call (the SDK's loop catches it); an endless loop kills the call, and
/// the host runs the others again one by one.
#[test]
fn a_bad_item_in_a_grouped_call_fails_alone_python() {
    let pool = pool(&py_repository().join("hostile-py/1"), Duration::from_millis(500));
    let json = |mode: &str| item(format!("{{\"mode\": \"{mode}\"}}").into_bytes(), "application/json", &[]);
    let items: Vec<Item> = ["ok", "raise", "ok", "plugin-error", "bad-return", "ok"].iter().map(|m| json(m)).collect();
    let said: Vec<String> = pool
        .preprocess_batch(&items)
        .iter()
        .map(|r| r.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()))
        .collect();
    assert_eq!([&said[0], &said[2], &said[5]], ["ok", "ok", "ok"], "{said:?}");
    assert!(said[1].contains("ZeroDivisionError"), "{said:?}");
    assert!(said[3].contains("[hostile]"), "{said:?}");
    assert!(said[4].contains("bad-return"), "{said:?}");
    let items: Vec<Item> = ["ok", "loop", "ok"].iter().map(|m| json(m)).collect();
    let said: Vec<String> = pool
        .preprocess_batch(&items)
        .iter()
        .map(|r| r.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()))
        .collect();
    assert_eq!([&said[0], &said[2]], ["ok", "ok"], "{said:?}");
    assert!(said[1].starts_with("plugin timeout"), "{said:?}");
}
