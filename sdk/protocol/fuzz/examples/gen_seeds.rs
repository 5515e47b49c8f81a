//! Writes the seed corpus of the `decode` target into `corpus-seed/decode/`.
//!
//!     cargo run --example gen_seeds            # from sdk/protocol/fuzz
//!
//! Each seed is `chunking: u8 | stream`, the input layout of
//! `fuzz_targets/decode.rs`; the streams are valid frame sequences encoded
//! by the crate itself.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    compress, encode, AdminHeader, AdminReply, Compression, ErrorCode, Frame, Item, ItemError, ItemHead, LoadFailure,
    ModelInfo, ModelStatus, PredictHeader, RequestError, RequestHeader, StatusReply, Summary, Timings,
};

fn item(index: u32, content_type: &str, payload: &[u8], zstd: bool) -> Item {
    let metadata: BTreeMap<String, String> =
        [("run".to_string(), "7".to_string()), ("unit".to_string(), "GeV".to_string())].into_iter().collect();
    let (payload, compression) = if zstd {
        (compress(payload, 1), Compression::Zstd)
    } else {
        (Bytes::copy_from_slice(payload), Compression::None)
    };
    Item { head: ItemHead { index, content_type: content_type.into(), metadata, compression }, payload }
}

fn stream(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out);
    }
    out
}

fn predict(model: &str) -> Frame {
    Frame::Header(RequestHeader::Predict(PredictHeader {
        model: model.into(),
        version: Some(3),
        request_id: "req-1".into(),
        accept: vec![Compression::Zstd, Compression::None],
        deadline_ms: Some(500),
        token: None,
    }))
}

fn main() -> std::io::Result<()> {
    let json = br#"{"keys": ["jet_pt", "jet_eta"], "values": [1.5, -0.25]}"#;
    let big: Vec<u8> = (0..4096u32).map(|i| (i % 17) as u8).collect();

    let request = stream(&[
        predict("tabular"),
        Frame::Item(item(0, "application/json", json, false)),
        Frame::Item(item(1, "application/octet-stream", &big, true)),
        Frame::Item(item(2, "application/json", b"", false)),
        Frame::End,
    ]);
    let minimal_request = stream(&[
        Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() })),
        Frame::Item(Item {
            head: ItemHead { index: 0, ..Default::default() },
            payload: Bytes::from_static(b"x"),
        }),
        Frame::End,
    ]);
    let status_request = stream(&[Frame::Header(RequestHeader::status()), Frame::End]);
    let reply = stream(&[
        Frame::Result(item(0, "application/json", br#"{"qcd":0.26,"top":0.27}"#, false)),
        Frame::Result(item(2, "application/octet-stream", &big, true)),
        Frame::ItemError(ItemError { index: 1, code: ErrorCode::PluginError, message: "missing key `x`".into(), retry_after_ms: None, metadata: Default::default() }),
        Frame::Summary(Summary {
            request_id: "req-1".into(),
            model: "tabular".into(),
            version: 3,
            ok: 2,
            failed: 1,
            timings: Timings { queue_us: 1, preprocess_us: 2, forward_us: 3, postprocess_us: 4 },
            elapsed_us: 10,
        }),
    ]);
    let request_error = stream(&[Frame::RequestError(RequestError {
        code: ErrorCode::UnknownModel,
        message: "unknown model `nope`".into(),
    })]);
    let status_reply = stream(&[Frame::Status(StatusReply {
        host_version: "0.1.0".into(),
        uptime_s: 5,
        models: vec![
            ModelStatus { name: "tabular".into(), version: 1, device: "cpu".into(), ..Default::default() },
            ModelStatus {
                name: "tensors".into(),
                version: 2,
                description: "d".into(),
                device: "cuda:0".into(),
                items_ok: 10,
                items_failed: 1,
                forwards: 4,
                forward_rows: 11,
                forward_us: 900,
                queued: 2,
                plugin_instances: 3,
                ..Default::default()
            },
        ],
        items_cancelled: 3,
        streams_refused: 1,
        load_errors: vec![LoadFailure { model: "broken".into(), version: Some(1), error: "manifest.toml: bad".into(), at_unix_s: 5 }],
        ..Default::default()
    })]);
    // Management: an upload in two chunks, a fetch answered by chunks and a Reply.
    let upload = stream(&[
        Frame::Header(RequestHeader::Upload(AdminHeader { token: Some("t".into()), replace: true, ..Default::default() })),
        Frame::Item(item(0, "application/x-tar+zstd", &big, false)),
        Frame::Item(item(1, "application/x-tar+zstd", b"tail", false)),
        Frame::End,
    ]);
    let fetch_reply = stream(&[
        Frame::Result(item(0, "application/x-tar+zstd", &big, false)),
        Frame::Result(item(1, "application/x-tar+zstd", b"tail", false)),
        Frame::Reply(AdminReply {
            op: "fetch".into(),
            message: "tabular version 1: 4100 bytes".into(),
            models: vec![ModelInfo {
                name: "tabular".into(),
                version: 1,
                state: "ready".into(),
                inputs: vec!["x: F32[-1, 16]".into()],
                outputs: vec!["scores: F32[-1, 4]".into()],
                default: true,
                ..Default::default()
            }],
            errors: Vec::new(),
            elapsed_us: 12,
        }),
    ]);
    // A client request with a host frame in it (the host refuses it at its head).
    let mut wrong_side = stream(&[predict("tabular"), Frame::Item(item(0, "application/json", json, false))]);
    wrong_side.extend_from_slice(&[0x81, 3, 0, 0, 0, 0xc1, 0xc1, 0xc1]);
    // Both directions back to back, and one stream cut in the middle of a frame.
    let mut everything = request.clone();
    everything.extend_from_slice(&reply);
    everything.extend_from_slice(&status_reply);
    let truncated = &request[..request.len() - 20];

    let seeds: [(&str, u8, &[u8]); 14] = [
        ("request-whole", 0, &request),
        ("request-chunks-7", 7, &request),
        ("request-bytewise", 1, &request),
        ("request-minimal", 0, &minimal_request),
        ("status-request", 3, &status_request),
        ("reply-whole", 0, &reply),
        ("reply-chunks-64", 64, &reply),
        ("request-error", 0, &request_error),
        ("status-reply", 5, &status_reply),
        ("both-directions", 200, &everything),
        ("truncated", 13, truncated),
        ("upload", 9, &upload),
        ("fetch-reply", 0, &fetch_reply),
        ("wrong-side", 4, &wrong_side),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-seed/decode");
    std::fs::create_dir_all(&dir)?;
    for (name, chunking, bytes) in seeds {
        let mut data = vec![chunking];
        data.extend_from_slice(bytes);
        std::fs::write(dir.join(name), &data)?;
        println!("{name}: {} bytes", data.len());
    }
    Ok(())
}
