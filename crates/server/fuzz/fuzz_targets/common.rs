//! What both targets do with a parsed request: build the item for a
//! `tensors` application and for a plugin application, and write a
//! response of the request's own inputs, without panicking.

use bytes::Bytes;
use tensorgate_protocol::ModelInfo;
use tensorgate_server::front::oip::model::ModelDesc;
use tensorgate_server::front::oip::tensor::Data;
use tensorgate_server::front::oip::{item_for, InferRequest, InferResponse};

/// Runs the request through everything after parsing; checks the invariants.
pub fn exercise(req: &InferRequest) {
    let mut valid = true;
    for t in &req.inputs {
        if t.check().is_err() {
            valid = false;
        }
    }
    let tensors = ModelDesc::of(&ModelInfo {
        name: "m".into(),
        plugin: "tensors".into(),
        inputs: vec!["x: F32[-1, 4]".into(), "y: I64[-1]".into()],
        outputs: vec!["h: F32[-1, 3]".into()],
        max_batch: 8,
        ..Default::default()
    });
    let plugin = ModelDesc::of(&ModelInfo { name: "p".into(), plugin: "json".into(), accepts: vec!["application/json".into()], ..Default::default() });
    for desc in [&tensors, &plugin] {
        if let Ok(item) = item_for(desc, req, 1 << 20) {
            assert!(item.payload.len() <= 1 << 20, "an item over the limit was built");
            if desc.tensors {
                assert!(valid, "an item was built from inputs that fail their own check");
                let arrays = tensorgate_npy::parse_npz(&item.payload).expect("the item's npz parses");
                assert_eq!(arrays.len(), 2);
            }
        }
    }
    if valid {
        let resp = InferResponse { model: req.model.clone(), version: "1".into(), id: req.id.clone(), params: req.params.clone(), outputs: req.inputs.clone() };
        for binary in [false, true] {
            if let Ok((body, Some(json_len))) = tensorgate_server::front::http::codec::write_infer(&resp, &req.outputs, binary) {
                assert!(json_len <= body.len(), "the JSON length header is within the body");
            }
        }
        let _ = tensorgate_server::front::grpc::infer_response(resp);
    }
    for t in &req.inputs {
        if let Data::Strings(items) = &t.data {
            let joined = Bytes::from(tensorgate_server::front::oip::tensor::join_strings(items));
            let split = tensorgate_server::front::oip::tensor::split_strings("t", &joined).expect("joined strings split");
            assert_eq!(&split, items, "BYTES elements round-trip");
        }
    }
}
