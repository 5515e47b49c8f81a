//! The protocol core without a transport: items built from requests, responses from items.

use bytes::Bytes;
use tensorgate_protocol::ModelInfo;

use super::model::ModelDesc;
use super::tensor::{Data, Datatype, Param, Params, Tensor};
use super::*;

fn mlp() -> ModelDesc {
    ModelDesc::of(&ModelInfo {
        name: "mlp".into(),
        version: 1,
        plugin: "tensors".into(),
        inputs: vec!["x: F32[-1, 2]".into()],
        outputs: vec!["scores: F32[-1, 3]".into(), "label: I64[-1]".into()],
        max_batch: 8,
        ..Default::default()
    })
}

fn x(rows: u64, datatype: Datatype) -> Tensor {
    let size = datatype.size().unwrap_or(1) as u64;
    Tensor { name: "x".into(), datatype, shape: vec![rows, 2], data: Data::Raw(Bytes::from(vec![0u8; (rows * 2 * size) as usize])), params: Params::new() }
}

fn req(inputs: Vec<Tensor>) -> InferRequest {
    InferRequest { model: "mlp".into(), inputs, ..Default::default() }
}

#[test]
fn tensors_go_in_an_npz_by_declared_name() {
    let mut r = req(vec![x(3, Datatype::Fp32)]);
    r.params.insert("note".into(), Param::Int(5));
    r.params.insert("timeout".into(), Param::Int(5));
    let item = item_for(&mlp(), &r, 1 << 20).unwrap();
    assert_eq!(item.head.content_type, "application/x-npz");
    assert_eq!(item.head.metadata.get("note").map(String::as_str), Some("5"));
    assert!(!item.head.metadata.contains_key("timeout"), "protocol parameters stay out of the plugin's metadata");
    let arrays = tensorgate_npy::parse_npz(&item.payload).unwrap();
    assert_eq!(arrays[0].0, "x");
    assert_eq!(arrays[0].1.shape, [3, 2]);
}

#[test]
fn wrong_inputs_name_what_is_wrong() {
    let d = mlp();
    let cases = [
        (req(vec![x(1, Datatype::Fp64)]), "input `x` is FP64, model `mlp` takes FP32"),
        (req(vec![Tensor { shape: vec![1, 3], data: Data::Raw(Bytes::from(vec![0u8; 12])), ..x(1, Datatype::Fp32) }]), "has shape [1, 3]"),
        (req(vec![Tensor { name: "y".into(), ..x(1, Datatype::Fp32) }]), "has no input `y`"),
        (req(vec![]), "has no inputs"),
    ];
    for (r, want) in cases {
        let e = item_for(&d, &r, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains(want), "{}", e.message);
    }
    let e = item_for(&d, &req(vec![x(1000, Datatype::Fp32)]), 100).unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
}

#[test]
fn plugin_applications_take_one_bytes_element() {
    let d = ModelDesc::of(&ModelInfo { name: "tab".into(), plugin: "tabular".into(), accepts: vec!["application/json".into()], ..Default::default() });
    let one = |items: Vec<Bytes>| Tensor { name: "payload".into(), datatype: Datatype::Bytes, shape: vec![items.len() as u64], data: Data::Strings(items), params: Params::new() };
    let item = item_for(&d, &req(vec![one(vec![Bytes::from_static(b"{}")])]), 1 << 20).unwrap();
    assert_eq!(item.head.content_type, "application/json");
    assert_eq!(&item.payload[..], b"{}");
    let mut r = req(vec![one(vec![Bytes::from_static(b"x")])]);
    r.params.insert("content_type".into(), Param::Str("text/csv".into()));
    assert_eq!(item_for(&d, &r, 1 << 20).unwrap().head.content_type, "text/csv");
    let e = item_for(&d, &req(vec![one(vec![Bytes::new(), Bytes::new()])]), 1 << 20).unwrap_err();
    assert!(e.message.contains("holds 2 elements"), "{}", e.message);
    let e = item_for(&d, &req(vec![x(1, Datatype::Fp32)]), 1 << 20).unwrap_err();
    assert!(e.message.contains("takes one BYTES element"), "{}", e.message);
}

#[test]
fn responses_pick_the_requested_outputs() {
    let d = mlp();
    let scores = [0f32; 3];
    let npz = tensorgate_npy::write_npz(&[
        ("scores", &tensorgate_npy::Descr::F32, &[1, 3], bytemuck_f32(&scores).as_slice()),
        ("label", &tensorgate_npy::Descr::I64, &[1], &7i64.to_le_bytes()),
    ])
    .unwrap();
    let output = ItemOutput { payload: Bytes::from(npz), content_type: "application/x-npz".into(), metadata: [("k".to_string(), "v".to_string())].into() };
    let routed = Routed { model: "mlp".into(), version: 4 };
    let mut r = req(vec![x(1, Datatype::Fp32)]);
    let all = response_for(&d, &r, &routed, output.clone()).unwrap();
    assert_eq!(all.outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["scores", "label"]);
    assert_eq!(all.version, "4");
    assert_eq!(all.params.get("k"), Some(&Param::Str("v".into())));
    assert_eq!(all.outputs[1].data, Data::Raw(Bytes::copy_from_slice(&7i64.to_le_bytes())));
    r.outputs = vec![RequestedOutput { name: "label".into(), params: Params::new() }];
    let one = response_for(&d, &r, &routed, output.clone()).unwrap();
    assert_eq!(one.outputs.len(), 1);
    r.outputs = vec![RequestedOutput { name: "nope".into(), params: Params::new() }];
    let e = response_for(&d, &r, &routed, output).unwrap_err();
    assert!(e.message.contains("no output `nope`") && e.message.contains("scores, label"), "{}", e.message);
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// A runner whose items never finish (and say so when dropped), and a
/// management that lists one `tensors` model: enough to drive [`Oip::infer`].
struct Stuck {
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

struct Dropped(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl ItemRunner for Stuck {
    type Session = ();
    fn route(&self, header: &PredictHeader) -> Result<(Routed, ()), Reject> {
        Ok((Routed { model: header.model.clone(), version: 1 }, ()))
    }
    fn run(&self, _: &(), _: Item, _: bool) -> crate::request::ItemFuture {
        let guard = Dropped(self.dropped.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        })
    }
}

struct OneModel;

impl Management for OneModel {
    fn status(&self) -> crate::manage::BoxFuture<'_, crate::manage::Status> {
        Box::pin(async { crate::manage::Status::default() })
    }
    fn manage(&self, _: RequestHeader, _: Vec<Bytes>) -> crate::manage::BoxFuture<'_, Result<crate::manage::Managed, Reject>> {
        Box::pin(async {
            let mut m = crate::manage::Managed::default();
            m.reply.models = vec![ModelInfo {
                name: "mlp".into(),
                version: 1,
                state: "ready".into(),
                plugin: "tensors".into(),
                inputs: vec!["x: F32[-1, 2]".into()],
                ..Default::default()
            }];
            Ok(m)
        })
    }
}

#[tokio::test]
async fn a_passed_deadline_fails_the_call_and_cancels_the_item() {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let oip = Oip::new(Arc::new(Stuck { dropped: dropped.clone() }), Arc::new(OneModel), AccessPolicy::default(), Limits::default());
    let caller = Caller { peer: Peer { loopback: true, cert_role: None }, token: None, protocol: "grpc" };
    let mut r = req(vec![x(1, Datatype::Fp32)]);
    r.params.insert("timeout".into(), Param::Int(20_000));
    let started = Instant::now();
    let e = oip.infer(&caller, r.clone(), None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeadlineExceeded, "{}", e.message);
    assert!(e.message.contains("20000 µs"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(dropped.load(Ordering::SeqCst), "the item was withdrawn");
    // The transport's deadline counts too; the shorter one wins.
    let e = oip.infer(&caller, r, Some(Duration::from_millis(5))).await.unwrap_err();
    assert!(e.message.contains("5000 µs"), "{}", e.message);
    // A timeout that is not a count is the request's error.
    let mut bad = req(vec![x(1, Datatype::Fp32)]);
    bad.params.insert("timeout".into(), Param::Str("soon".into()));
    assert!(oip.infer(&caller, bad, None).await.unwrap_err().message.contains("`timeout`"));
}
