//! In-memory tests: a client and a host exchange frames through byte buffers.

use bytes::{Bytes, BytesMut};

use crate::*;

fn item(index: u32, payload: &[u8]) -> Item {
    Item {
        head: ItemHead {
            index,
            content_type: "application/json".into(),
            metadata: [("run".to_string(), "7".to_string())].into_iter().collect(),
            compression: Compression::None,
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::Header(RequestHeader::Predict(PredictHeader {
            model: "tabular".into(),
            version: Some(3),
            request_id: "r1".into(),
            accept: vec![Compression::Zstd],
            deadline_ms: Some(500),
            token: Some("t0k3n".into()),
        })),
        Frame::Header(RequestHeader::status()),
        Frame::Header(RequestHeader::Status(StatusHeader { token: Some("t".into()) })),
        Frame::Header(RequestHeader::Upload(AdminHeader { token: Some("a".into()), replace: true, ..Default::default() })),
        Frame::Header(RequestHeader::Delete(AdminHeader { model: Some("m".into()), version: Some(2), ..Default::default() })),
        Frame::Header(RequestHeader::Models(AdminHeader::default())),
        Frame::Reply(AdminReply {
            op: "upload".into(),
            message: "loaded m 2".into(),
            models: vec![ModelInfo { name: "m".into(), version: 2, state: "ready".into(), ..Default::default() }],
            errors: vec![LoadFailure { model: "x".into(), version: None, error: "bad".into(), at_unix_s: 5 }],
            elapsed_us: 7,
        }),
        Frame::Item(item(0, b"{\"a\":1}")),
        Frame::Item(item(1, b"")),
        Frame::End,
        Frame::Result(item(0, &[0, 1, 2, 255])),
        Frame::ItemError(ItemError { index: 1, code: ErrorCode::PluginError, message: "missing key `x`".into(), retry_after_ms: None }),
        Frame::Summary(Summary {
            request_id: "r1".into(),
            model: "tabular".into(),
            version: 3,
            ok: 1,
            failed: 1,
            timings: Timings { queue_us: 1, preprocess_us: 2, forward_us: 3, postprocess_us: 4 },
            elapsed_us: 10,
        }),
        Frame::RequestError(RequestError { code: ErrorCode::UnknownModel, message: "unknown model `x`".into() }),
        Frame::Status(StatusReply {
            host_version: "0.1.0".into(),
            uptime_s: 5,
            models: vec![ModelStatus { name: "tabular".into(), version: 1, ..Default::default() }],
            ..Default::default()
        }),
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out);
    }
    out
}

fn decode_all(dec: &mut FrameDecoder) -> Result<Vec<Frame>, ProtocolError> {
    let mut out = Vec::new();
    while let Some(f) = dec.decode()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn every_frame_roundtrips_whole() {
    let frames = all_frames();
    let bytes = encode_all(&frames);
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(&bytes);
    assert_eq!(decode_all(&mut dec).unwrap(), frames);
    dec.finish().unwrap();
}

#[test]
fn every_frame_roundtrips_byte_by_byte() {
    let frames = all_frames();
    let bytes = encode_all(&frames);
    let mut dec = FrameDecoder::new(Limits::default());
    let mut got = Vec::new();
    for b in bytes.iter() {
        dec.feed(&[*b]);
        got.extend(decode_all(&mut dec).unwrap());
    }
    assert_eq!(got, frames);
}

#[test]
fn needed_reports_missing_bytes() {
    let mut out = BytesMut::new();
    encode(&Frame::Item(item(0, &[7; 100])), &mut out);
    let mut dec = FrameDecoder::new(Limits::default());
    assert_eq!(dec.needed(), FRAME_HEAD_LEN);
    dec.feed(&out[..FRAME_HEAD_LEN]);
    assert_eq!(dec.needed(), out.len() - FRAME_HEAD_LEN);
    assert_eq!(dec.decode().unwrap(), None);
}

#[test]
fn unknown_kind_is_rejected() {
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(&[0x7f, 0, 0, 0, 0]);
    assert_eq!(dec.decode(), Err(ProtocolError::UnknownFrameKind(0x7f)));
}

#[test]
fn oversized_header_is_refused_before_its_body_arrives() {
    let limits = Limits { max_header_bytes: 16, ..Limits::default() };
    let mut dec = FrameDecoder::new(limits);
    dec.feed(&[FrameKind::Header as u8, 17, 0, 0, 0]);
    let err = dec.decode().unwrap_err();
    assert!(matches!(err, ProtocolError::FrameTooLarge { limit_name: "max_header_bytes", len: 17, .. }));
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
    assert!(err.to_string().contains("max_header_bytes"));
}

#[test]
fn oversized_item_is_refused_by_max_frame_bytes() {
    let limits = Limits { max_frame_bytes: 1000, ..Limits::default() };
    let mut dec = FrameDecoder::new(limits);
    dec.feed(&[FrameKind::Item as u8, 0xe9, 0x03, 0, 0]); // 1001
    let err = dec.decode().unwrap_err();
    assert!(matches!(err, ProtocolError::FrameTooLarge { limit_name: "max_frame_bytes", len: 1001, .. }), "{err}");
}

#[test]
fn malformed_bodies_are_named() {
    let cases: Vec<(u8, Vec<u8>, &str)> = vec![
        (FrameKind::Header as u8, vec![0xc1], "Header"),
        (FrameKind::Item as u8, vec![1, 0], "Item"),
        (FrameKind::Item as u8, vec![9, 0, 0, 0, 0x80], "Item"),
        (FrameKind::End as u8, vec![1], "End"),
        (FrameKind::Summary as u8, vec![0x93, 1, 2, 3], "Summary"),
        (FrameKind::ItemError as u8, vec![0x80], "ItemError"),
    ];
    for (kind, body, name) in cases {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let mut dec = FrameDecoder::new(Limits::default());
        dec.feed(&bytes);
        match dec.decode() {
            Err(ProtocolError::Malformed { kind, .. }) => assert_eq!(kind, name),
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn truncated_stream_is_detected() {
    let mut out = BytesMut::new();
    encode(&Frame::End, &mut out);
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(&out[..3]);
    assert_eq!(dec.decode(), Ok(None));
    assert!(matches!(dec.finish(), Err(ProtocolError::Truncated(_))));
}

#[test]
fn unknown_error_code_from_newer_peer_decodes() {
    #[derive(serde::Serialize)]
    struct Raw {
        index: u32,
        code: &'static str,
        message: &'static str,
    }
    let body = rmp_serde::to_vec_named(&Raw { index: 2, code: "quantum_flux", message: "m" }).unwrap();
    let mut bytes = vec![FrameKind::ItemError as u8];
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(&bytes);
    match dec.decode().unwrap() {
        Some(Frame::ItemError(e)) => assert_eq!(e.code, ErrorCode::Unknown),
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_sequence_is_enforced() {
    let header = Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() }));
    let mut s = RequestState::new(Limits::default());
    assert!(matches!(s.on_frame(item_frame(0)), Err(ProtocolError::UnexpectedFrame { state: "before Header", .. })));
    s.on_frame(header.clone()).unwrap();
    assert!(matches!(s.on_frame(header.clone()), Err(ProtocolError::UnexpectedFrame { got: "Header", .. })));
    s.on_frame(item_frame(0)).unwrap();
    assert_eq!(s.on_frame(item_frame(0)), Err(ProtocolError::DuplicateIndex(0)));
    s.on_frame(Frame::End).unwrap();
    assert!(s.ended());
    assert!(matches!(s.on_frame(item_frame(1)), Err(ProtocolError::UnexpectedFrame { state: "after End", .. })));
    // Replies are never accepted from a client.
    let mut s = RequestState::new(Limits::default());
    s.on_frame(header).unwrap();
    assert!(matches!(s.on_frame(Frame::Result(item(0, b""))), Err(ProtocolError::UnexpectedFrame { got: "Result", .. })));
}

fn item_frame(i: u32) -> Frame {
    Frame::Item(item(i, b"x"))
}

#[test]
fn items_on_a_status_request_are_refused() {
    let mut s = RequestState::new(Limits::default());
    s.on_frame(Frame::Header(RequestHeader::status())).unwrap();
    assert!(s.on_frame(item_frame(0)).is_err());
}

#[test]
fn too_many_items_names_the_limit() {
    let limits = Limits { max_items_per_request: 2, ..Limits::default() };
    let mut s = RequestState::new(limits);
    s.on_frame(Frame::Header(RequestHeader::Predict(PredictHeader::default()))).unwrap();
    s.on_frame(item_frame(0)).unwrap();
    s.on_frame(item_frame(1)).unwrap();
    let err = s.on_frame(item_frame(2)).unwrap_err();
    assert_eq!(err, ProtocolError::TooManyItems { limit: 2 });
    assert!(err.to_string().contains("max_items_per_request"));
}

#[test]
fn reply_sequence_is_enforced() {
    let mut r = ReplyState::new();
    r.on_frame(Frame::Result(item(3, b""))).unwrap();
    assert_eq!(r.on_frame(Frame::Result(item(3, b""))), Err(ProtocolError::DuplicateIndex(3)));
    assert!(r.on_frame(Frame::End).is_err());
    r.on_frame(Frame::Summary(Summary::default())).unwrap();
    assert!(r.done());
    assert!(r.on_frame(Frame::Result(item(4, b""))).is_err());
}

#[test]
fn zstd_roundtrip_and_bomb_is_capped() {
    let data = vec![0u8; 1 << 20];
    let packed = compress(&data, 3);
    assert!(packed.len() < 1000);
    let mut it = item(0, &packed);
    it.head.compression = Compression::Zstd;
    assert_eq!(it.decompressed(1 << 20).unwrap().len(), 1 << 20);
    let err = it.decompressed((1 << 20) - 1).unwrap_err();
    assert!(matches!(err, ProtocolError::DecompressedTooLarge { index: 0, .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
}

#[test]
fn zstd_bomb_without_declared_size_is_capped_while_streaming() {
    use std::io::Write;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    enc.write_all(&vec![0u8; 4 << 20]).unwrap();
    let packed = enc.finish().unwrap();
    let mut it = item(5, &packed);
    it.head.compression = Compression::Zstd;
    assert!(matches!(it.decompressed(1 << 20), Err(ProtocolError::DecompressedTooLarge { index: 5, .. })));
}

#[test]
fn garbage_zstd_is_a_decompress_error() {
    let mut it = item(1, b"definitely not zstd");
    it.head.compression = Compression::Zstd;
    assert!(matches!(it.decompressed(1 << 20), Err(ProtocolError::Decompress { index: 1, .. })));
}

#[test]
fn in_memory_exchange() {
    // Client side writes a request; host side decodes and validates it, answers;
    // client side decodes and validates the reply.
    let limits = Limits::default();
    let request = vec![
        Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() })),
        item_frame(0),
        item_frame(1),
        Frame::End,
    ];
    let wire = encode_all(&request);
    let mut host_dec = FrameDecoder::new(limits);
    let mut host_state = RequestState::new(limits);
    host_dec.feed(&wire);
    let mut replies = Vec::new();
    while let Some(f) = host_dec.decode().unwrap() {
        if let Frame::Item(it) = host_state.on_frame(f).unwrap() {
            replies.push(Frame::Result(Item { head: it.head.clone(), payload: Bytes::from_static(b"ok") }));
        }
    }
    assert_eq!(host_state.items(), 2);
    replies.reverse(); // completion order differs from submission order
    replies.push(Frame::Summary(Summary { ok: 2, ..Default::default() }));
    let back = encode_all(&replies);
    let mut client_dec = FrameDecoder::new(limits);
    let mut client_state = ReplyState::new();
    client_dec.feed(&back);
    let mut indices = Vec::new();
    while let Some(f) = client_dec.decode().unwrap() {
        if let Frame::Result(it) = client_state.on_frame(f).unwrap() {
            indices.push(it.head.index);
        }
    }
    assert_eq!(indices, vec![1, 0]);
    assert!(client_state.done());
}

#[test]
fn zstd_frame_asking_for_a_huge_window_is_refused() {
    // Found by cargo fuzz (fuzz/regressions/zstd-window-128mib): a 20-byte
    // zstd frame declaring a 128 MiB window made the decoder allocate it.
    let input = include_bytes!("../fuzz/regressions/zstd-window-128mib");
    let mut dec = FrameDecoder::new(Limits { max_item_bytes: 1 << 20, ..Limits::default() });
    dec.feed(&input[1..]); // the fuzz input's first byte picks chunk sizes
    match dec.decode().unwrap() {
        Some(Frame::Item(item)) => assert!(matches!(item.decompressed(1 << 20), Err(ProtocolError::Decompress { .. }))),
        other => panic!("{other:?}"),
    }
}
