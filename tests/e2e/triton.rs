//! `tensorgate import triton`: a Triton model directory
//! (tests/triton/particlenet: config.pbtxt, labels.txt, 1/model.pt, a
//! three-input ParticleNet-style tagger from scripts/make_models.py)
//! becomes a bundle served by the generic tensors plugin, and answers as
//! PyTorch does on the same jets (reference.npz, within 1e-5). What cannot
//! be mapped, or does not match the model, fails the import by name and
//! installs nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::{parse_npz, write_npz};
use tensorgate_plugin::Tensor;
use tensorgate_tests::{copy_dir, root, TestHost};

const TOLERANCE: f32 = 1e-5;

fn model_dir(parent: &Path, edit: impl Fn(&mut String)) -> PathBuf {
    let dir = parent.join("models/particlenet");
    copy_dir(&root().join("tests/triton/particlenet"), &dir);
    let mut config = std::fs::read_to_string(dir.join("config.pbtxt")).expect("config");
    edit(&mut config);
    std::fs::write(dir.join("config.pbtxt"), config).expect("write config");
    dir
}

async fn import(dir: &Path, repo: &Path) -> Output {
    let bin = root().join("target/release/tensorgate");
    assert!(bin.exists(), "{} not built (cargo test --release builds it)", bin.display());
    let mut cmd = Command::new(bin);
    cmd.args(["import", "triton"]).arg(dir).arg("--repository").arg(repo).env_remove("TENSORGATE_TENSORS_PLUGIN");
    tokio::task::spawn_blocking(move || cmd.output().expect("runs")).await.expect("join")
}

fn arrays(path: &Path) -> Vec<(String, Tensor)> {
    parse_npz(&std::fs::read(path).expect("npz")).expect("parses")
}

fn get<'a>(a: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &a.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no array `{name}`")).1
}

/// Row `i` of a `[N, ...]` f32 tensor, as a `[1, ...]` tensor.
fn row(t: &Tensor, i: usize) -> Tensor {
    let values = t.view::<f32>().expect("f32");
    let per = values.len() / t.shape()[0] as usize;
    let mut shape = t.shape().to_vec();
    shape[0] = 1;
    Tensor::from_slice(&shape, &values[i * per..(i + 1) * per]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triton_model_imports_and_answers_as_pytorch() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = model_dir(work.path(), |_| {});
    let repo = work.path().join("repo");
    let out = import(&dir, &repo).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    for hint in ["`dynamic_batching.preferred_batch_size`", "`parameters`"] {
        assert!(stderr.contains(&format!("{hint}: not carried over")), "{hint} is named: {stderr}");
    }
    // The mapping, field by field.
    let manifest: toml::Table = std::fs::read_to_string(repo.join("particlenet/1/manifest.toml")).expect("manifest").parse().expect("toml");
    let labels: Vec<&str> = manifest["labels"].as_array().expect("labels").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(labels, ["qcd", "top", "w"], "from label_filename");
    let model = &manifest["model"];
    assert_eq!(
        (model["max_batch"].as_integer(), model["max_delay_us"].as_integer(), model["batching"].as_bool()),
        (Some(32), Some(100), Some(true))
    );
    assert_eq!((model["instances"].as_integer(), model["device"].as_str()), (Some(2), Some("cpu")));
    let inputs: Vec<(String, Vec<i64>)> = manifest["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["shape"].as_array().unwrap().iter().map(|d| d.as_integer().unwrap()).collect()))
        .collect();
    let want: Vec<(String, Vec<i64>)> = vec![("points".into(), vec![-1, 2, -1]), ("features".into(), vec![-1, 4, -1]), ("mask".into(), vec![-1, 1, -1])];
    assert_eq!(inputs, want, "the batch dimension max_batch_size implies comes first");
    assert!(repo.join("particlenet/1/plugin.wasm").is_file() && repo.join("particlenet/1/model.pt").is_file());

    // Served: three jets in one item, then one jet per item (batched by the host).
    let host = TestHost::start_with(repo.clone(), |_| {}).await;
    let client = host.client().await;
    let sample = arrays(&root().join("tests/triton/particlenet/sample.npz"));
    let want = get(&arrays(&root().join("tests/triton/particlenet/reference.npz")), "scores").view::<f32>().unwrap().into_owned();
    let whole = Input::new(write_npz(&sample), "application/x-npz");
    let reply = client.predict(Submission::new("particlenet", vec![whole])).await.expect("predict");
    let out = reply.outcomes[0].as_ref().expect("item ok");
    let scores = get(&parse_npz(&out.payload).expect("npz reply"), "scores").clone();
    assert_eq!(scores.shape(), [3, 3]);
    let got = scores.view::<f32>().unwrap().into_owned();
    let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
    eprintln!("particlenet via tensorgate import triton: max |host - pytorch| = {diff:e}");
    assert!(diff <= TOLERANCE, "{got:?} vs {want:?}");
    let singles: Vec<Input> = (0..3)
        .map(|i| {
            let jet: Vec<(String, Tensor)> = sample.iter().map(|(n, t)| (n.clone(), row(t, i))).collect();
            Input::new(write_npz(&jet), "application/x-npz")
        })
        .collect();
    let reply = client.predict(Submission::new("particlenet", singles)).await.expect("predict");
    for (i, outcome) in reply.outcomes.iter().enumerate() {
        let out = outcome.as_ref().expect("item ok");
        let s = get(&parse_npz(&out.payload).expect("npz"), "scores").view::<f32>().unwrap().into_owned();
        let d = s.iter().zip(&want[3 * i..3 * i + 3]).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
        assert!(d <= TOLERANCE, "jet {i}: {s:?} vs {:?}", &want[3 * i..3 * i + 3]);
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_imported_is_named_and_nothing_is_installed() {
    let cases: Vec<(&str, Box<dyn Fn(&mut String)>, &str)> = vec![
        (
            "a half-precision input",
            Box::new(|c| *c = c.replacen("TYPE_FP32\n    dims: [ 4, -1 ]", "TYPE_FP16\n    dims: [ 4, -1 ]", 1)),
            "input `features`: data_type TYPE_FP16 has no tensorgate tensor type",
        ),
        ("another platform", Box::new(|c| *c = c.replace("pytorch_libtorch", "tensorflow_savedmodel")), "platform \"tensorflow_savedmodel\": only TorchScript models"),
        (
            "a reshape",
            Box::new(|c| *c = c.replacen("dims: [ 3 ]", "dims: [ 3 ]\n    reshape: { shape: [ 1, 3 ] }", 1)),
            "output `scores`: `reshape` is not supported",
        ),
        (
            "an input the model does not take",
            Box::new(|c| *c = c.replacen("input [\n", "input [\n  { name: \"extra\" data_type: TYPE_FP32 dims: [ 1 ] },\n", 1)),
            "declares 4 input(s) (extra, points, features, mask), but model.pt's forward(points: Tensor, features: Tensor, mask: Tensor) -> Tensor takes 3",
        ),
        (
            "dims that do not match the model",
            Box::new(|c| *c = c.replacen("dims: [ 4, -1 ]", "dims: [ 5, -1 ]", 1)),
            "the declared inputs do not fit the model",
        ),
    ];
    for (what, edit, expected) in cases {
        let work = tempfile::tempdir().expect("temp dir");
        let dir = model_dir(work.path(), edit);
        let repo = work.path().join("repo");
        let out = import(&dir, &repo).await;
        // The host's check prints its verdict on stdout; the CLI's error is on stderr.
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{what}: the import must fail");
        assert!(said.contains(expected), "{what}: expected `{expected}` in\n{said}");
        assert!(said.contains("config.pbtxt") || said.contains("not installed"), "{what}: names the file: {said}");
        assert!(!repo.join("particlenet").exists(), "{what}: nothing installed");
    }
}
