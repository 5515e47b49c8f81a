//! Fuzz target: a gRPC `ModelInferRequest` message's bytes, decoded by
//! prost and read by the gRPC front (typed and raw contents). Properties:
//! no panic; every read request goes through item building and response
//! writing (`common.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorgate_server::front::grpc::proto::ModelInferRequest;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ModelInferRequest::decode(data) else { return };
    if let Ok(req) = tensorgate_server::front::grpc::infer_request(message) {
        common::exercise(&req);
    }
});
