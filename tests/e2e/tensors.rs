//! The generic `tensors` plugin: NumPy in, NumPy out, for models with
//! several inputs and tuple or dict outputs. Compared with PyTorch's outputs
//! for the same inputs (reference.npz, written by scripts/make_models.py).

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::{parse_npz, write_npy, write_npz};
use tensorgate_plugin::{Dtype, Tensor};
use tensorgate_tests::{root, TestHost};

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_input_tuple_output_matches_pytorch() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let dir = root().join("plugins/tensors/bundles/multi-io");
    let sample = std::fs::read(dir.join("sample.npz")).unwrap();
    let reference = parse_npz(&std::fs::read(dir.join("reference.npz")).unwrap()).unwrap();
    let reply = client.predict(Submission::new("multi-io", vec![Input::new(sample, "application/x-npz")])).await.unwrap();
    let out = reply.outcomes[0].as_ref().expect("item ok");
    assert_eq!(out.content_type, "application/x-npz");
    let got = parse_npz(&out.payload).unwrap();
    assert_eq!(got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["h", "s"]);
    assert_eq!((got[0].1.dtype(), got[0].1.shape().to_vec()), (Dtype::F32, vec![3, 3]));
    assert_eq!((got[1].1.dtype(), got[1].1.shape().to_vec()), (Dtype::F64, vec![3]));
    for (g, w) in f32s(&got[0].1).iter().zip(f32s(&reference[0].1)) {
        assert!((g - w).abs() <= 1e-6, "h: host {g} vs pytorch {w}");
    }
    for (g, w) in f64s(&got[1].1).iter().zip(f64s(&reference[1].1)) {
        assert!((g - w).abs() <= 1e-6, "s: host {g} vs pytorch {w}");
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dict_output_and_large_plane() {
    let host = TestHost::start().await;
    let client = host.client().await;
    // One 3456x1008 plane, mostly zeros, a diagonal track of charge 2.0.
    let (w, t) = (3456u64, 1008u64);
    let mut values = vec![0f32; (w * t) as usize];
    for i in 0..1000usize {
        values[i * t as usize + i] = 2.0;
    }
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let plane = Tensor::from_parts(Dtype::F32, vec![1, w, t], data).unwrap();
    for sub in [
        Submission::new("plane-stats", vec![Input::new(write_npy(&plane), "application/x-npy")]),
        Submission::new("plane-stats", vec![Input::new(write_npy(&plane), "application/x-npy")]).uncompressed(),
    ] {
        let reply = client.predict(sub).await.unwrap();
        let got = parse_npz(&reply.outcomes[0].as_ref().expect("ok").payload).unwrap();
        assert_eq!(got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["lit", "charge", "wire_max"]);
        assert_eq!(got[0].1.data()[..8], 1000i64.to_le_bytes());
        assert_eq!(f32s(&got[1].1), vec![2000.0]);
        let wire_max = f32s(&got[2].1);
        assert_eq!(wire_max.len(), w as usize);
        assert_eq!((wire_max[999], wire_max[1000]), (2.0, 0.0));
    }
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arrays_are_clear_item_errors() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let x = Tensor::from_parts(Dtype::F32, vec![2, 4], vec![0; 32]).unwrap();
    let wrong_width = Tensor::from_parts(Dtype::F32, vec![2, 5], vec![0; 40]).unwrap();
    let y = Tensor::from_parts(Dtype::F32, vec![2, 3], vec![0; 24]).unwrap();
    let items = vec![
        Input::new(write_npz(&[("x".into(), x.clone())]), "application/x-npz"), // y missing
        Input::new(write_npz(&[("x".into(), wrong_width), ("y".into(), y.clone())]), "application/x-npz"),
        Input::new(b"not numpy".to_vec(), "application/x-npy"),
        Input::new(write_npz(&[("y".into(), y), ("x".into(), x)]), "application/x-npz"), // any order is fine
    ];
    let reply = client.predict(Submission::new("multi-io", items)).await.unwrap();
    let err = |i: usize| reply.outcomes[i].as_ref().expect_err("fails").clone();
    assert_eq!(err(0).code, ErrorCode::PluginError);
    assert!(err(0).message.contains("no array named `y`"), "{}", err(0).message);
    assert_eq!(err(1).code, ErrorCode::PluginFailed);
    assert!(err(1).message.contains("manifest declares"), "{}", err(1).message);
    assert!(err(2).message.contains("bad magic"), "{}", err(2).message);
    assert!(reply.outcomes[3].is_ok());
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conv_net_matches_pytorch() {
    use tensorgate_plugin::npy::parse_npy;
    let host = TestHost::start().await;
    let client = host.client().await;
    let dir = root().join("plugins/tensors/bundles/patch-cnn");
    let sample = std::fs::read(dir.join("sample.npy")).unwrap();
    let want = parse_npy(&std::fs::read(dir.join("reference.npy")).unwrap()).unwrap();
    // Once as one 3-patch item, once as three 1-patch items (batched together by the host).
    let whole = client.predict(Submission::new("patch-cnn", vec![Input::new(sample.clone(), "application/x-npy")])).await.unwrap();
    let got = parse_npz(&whole.outcomes[0].as_ref().expect("ok").payload).unwrap();
    assert_eq!((got[0].0.as_str(), got[0].1.shape().to_vec()), ("scores", vec![3, 3]));
    for (g, w) in f32s(&got[0].1).iter().zip(f32s(&want)) {
        assert!((g - w).abs() <= 1e-5, "host {g} vs pytorch {w}");
    }
    let all = parse_npy(&sample).unwrap();
    let row = all.data().len() / 3;
    let singles: Vec<Input> = (0..3)
        .map(|i| {
            let t = Tensor::from_parts(Dtype::F32, vec![1, 1, 64, 64], all.data()[i * row..(i + 1) * row].to_vec()).unwrap();
            Input::new(write_npy(&t), "application/x-npy")
        })
        .collect();
    let split = client.predict(Submission::new("patch-cnn", singles)).await.unwrap();
    let wanted = f32s(&want);
    for (i, outcome) in split.outcomes.iter().enumerate() {
        let got = parse_npz(&outcome.as_ref().expect("ok").payload).unwrap();
        for (g, w) in f32s(&got[0].1).iter().zip(&wanted[i * 3..i * 3 + 3]) {
            assert!((g - w).abs() <= 1e-5, "patch {i}: host {g} vs pytorch {w}");
        }
    }
    client.close().await;
    host.stop().await;
}
