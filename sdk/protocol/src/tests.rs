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
        Frame::ItemError(ItemError { index: 1, code: ErrorCode::PluginError, message: "missing key `x`".into(), retry_after_ms: None, metadata: Default::default() }),
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

// ---- map form only (docs/protocol.md §3) ----------------------------------

fn frame_with_body(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn item_with_head(kind: u8, head: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = (head.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(head);
    body.extend_from_slice(payload);
    frame_with_body(kind, &body)
}

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, ProtocolError> {
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(bytes);
    dec.decode()
}

fn decode_error(bytes: &[u8]) -> String {
    match decode_one(bytes) {
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
            e.to_string()
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The struct encoded in MessagePack's array form (what `rmp_serde::to_vec`
/// writes), which serde alone would accept.
fn array_form<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let bytes = rmp_serde::to_vec(v).unwrap();
    assert!(matches!(bytes[0], 0x90..=0x9f | 0xdc | 0xdd), "not array form: {:02x}", bytes[0]);
    bytes
}

#[test]
fn array_form_header_is_malformed() {
    // ["predict", "m"]: serde's internally tagged enum would take it as {op, model}.
    let mut body = vec![0x92, 0xa7];
    body.extend_from_slice(b"predict");
    body.extend_from_slice(&[0xa1, b'm']);
    assert_eq!(
        decode_error(&frame_with_body(0x01, &body)),
        "malformed Header frame: body must be a MessagePack map, got an array"
    );
}

#[test]
fn array_form_item_head_is_malformed() {
    let head = array_form(&ItemHead { index: 5, ..Default::default() });
    assert_eq!(
        decode_error(&item_with_head(0x02, &head, b"x")),
        "malformed Item frame: ItemHead must be a MessagePack map, got an array"
    );
    assert_eq!(
        decode_error(&item_with_head(0x81, &head, b"x")),
        "malformed Result frame: ItemHead must be a MessagePack map, got an array"
    );
}

#[test]
fn array_form_is_malformed_for_every_messagepack_body() {
    let bodies: Vec<(u8, &str, Vec<u8>)> = vec![
        (0x82, "ItemError", array_form(&ItemError { index: 1, code: ErrorCode::Busy, message: "m".into(), retry_after_ms: Some(3), metadata: Default::default() })),
        (0x83, "Summary", array_form(&Summary { ok: 1, ..Default::default() })),
        (0x84, "RequestError", array_form(&RequestError { code: ErrorCode::Internal, message: "m".into() })),
        (0x85, "Status", array_form(&StatusReply { host_version: "1".into(), ..Default::default() })),
        (0x86, "Reply", array_form(&AdminReply { op: "models".into(), ..Default::default() })),
    ];
    for (kind, name, body) in bodies {
        assert_eq!(
            decode_error(&frame_with_body(kind, &body)),
            format!("malformed {name} frame: body must be a MessagePack map, got an array")
        );
    }
}

#[test]
fn non_map_bodies_name_what_they_are() {
    let cases: [(&[u8], &str); 9] = [
        (&[], "an empty body"),
        (&[0xc0], "nil"),
        (&[0xc3], "a boolean"),
        (&[0x05], "an integer"),
        (&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0], "a float"),
        (&[0xa1, b'x'], "a string"),
        (&[0xc4, 1, 0], "binary data"),
        (&[0xd4, 1, 0], "an extension value"),
        (&[0xc1], "the reserved byte 0xc1"),
    ];
    for (body, got) in cases {
        assert_eq!(
            decode_error(&frame_with_body(0x01, body)),
            format!("malformed Header frame: body must be a MessagePack map, got {got}")
        );
    }
}

#[test]
fn map_keys_must_be_strings() {
    // {0: 5}: serde would read key 0 as the first field, `index`.
    assert_eq!(
        decode_error(&item_with_head(0x02, &[0x81, 0x00, 0x05], b"")),
        "malformed Item frame: ItemHead must be a MessagePack map with string keys, got an integer as a key"
    );
    // {bin "op": "status"}: serde would take the bytes as the key `op`.
    let mut body = vec![0x81, 0xc4, 2, b'o', b'p', 0xa6];
    body.extend_from_slice(b"status");
    assert_eq!(
        decode_error(&frame_with_body(0x01, &body)),
        "malformed Header frame: body must be a MessagePack map with string keys, got binary data as a key"
    );
}

#[test]
fn bytes_after_the_map_are_malformed() {
    let mut body = vec![0x81, 0xa2, b'o', b'p', 0xa6];
    body.extend_from_slice(b"status");
    assert!(matches!(decode_one(&frame_with_body(0x01, &body)), Ok(Some(Frame::Header(RequestHeader::Status(_))))));
    body.extend_from_slice(&[0xc0, 0xc0]);
    assert_eq!(
        decode_error(&frame_with_body(0x01, &body)),
        "malformed Header frame: body must be exactly one MessagePack map, got 2 more bytes after it"
    );
    // An ItemHead is exactly `head_len` bytes: one map, nothing after it.
    assert_eq!(
        decode_error(&item_with_head(0x02, &[0x81, 0xa5, b'i', b'n', b'd', b'e', b'x', 0x01, 0x80], b"")),
        "malformed Item frame: ItemHead must be exactly one MessagePack map, got 1 more bytes after it"
    );
}

#[test]
fn truncated_maps_are_malformed() {
    let mut full = vec![0x82, 0xa2, b'o', b'p', 0xa6];
    full.extend_from_slice(b"status");
    full.extend_from_slice(&[0xa1, b'x', 0xdd, 0, 0, 0, 2, 0xc0, 0xc0]);
    assert!(decode_one(&frame_with_body(0x01, &full)).is_ok());
    for cut in 1..full.len() {
        let err = decode_error(&frame_with_body(0x01, &full[..cut]));
        assert_eq!(err, "malformed Header frame: body ends in the middle of a MessagePack value", "cut at {cut}");
    }
    // A map32 claiming four billion entries is refused without looping over them.
    let err = decode_error(&frame_with_body(0x01, &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'x', 0xc0]));
    assert_eq!(err, "malformed Header frame: body ends in the middle of a MessagePack value");
}

/// One value of every MessagePack type, in every width, as an array.
fn every_type() -> Vec<u8> {
    let mut v = vec![0xdc, 0, 0]; // array16, count patched below
    let mut n = 0u16;
    let mut push = |bytes: &[u8]| {
        v.extend_from_slice(bytes);
        n += 1;
    };
    push(&[0xc0]);
    push(&[0xc2]);
    push(&[0xc3]);
    push(&[0x7f]);
    push(&[0xe0]);
    push(&[0xcc, 1]);
    push(&[0xcd, 1, 2]);
    push(&[0xce, 1, 2, 3, 4]);
    push(&[0xcf, 1, 2, 3, 4, 5, 6, 7, 8]);
    push(&[0xd0, 0x80]);
    push(&[0xd1, 0x80, 0]);
    push(&[0xd2, 0x80, 0, 0, 0]);
    push(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    push(&[0xca, 0x3f, 0x80, 0, 0]);
    push(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    push(&[0xa3, b'a', b'b', b'c']);
    push(&[0xd9, 2, b'a', b'b']);
    push(&[0xda, 0, 2, b'a', b'b']);
    push(&[0xdb, 0, 0, 0, 2, b'a', b'b']);
    push(&[0xc4, 2, 1, 2]);
    push(&[0xc5, 0, 2, 1, 2]);
    push(&[0xc6, 0, 0, 0, 2, 1, 2]);
    push(&[0xd4, 7, 1]);
    push(&[0xd5, 7, 1, 2]);
    push(&[0xd6, 7, 1, 2, 3, 4]);
    push(&[0xd7, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
    push(&[0xd8, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    push(&[0xc7, 2, 7, 1, 2]);
    push(&[0xc8, 0, 2, 7, 1, 2]);
    push(&[0xc9, 0, 0, 0, 2, 7, 1, 2]);
    push(&[0x92, 0x01, 0x91, 0x80]);
    push(&[0xdc, 0, 1, 0xc0]);
    push(&[0xdd, 0, 0, 0, 1, 0xc0]);
    push(&[0x81, 0x01, 0x81, 0xa1, b'k', 0x90]);
    push(&[0xde, 0, 1, 0xc0, 0xc0]);
    push(&[0xdf, 0, 0, 0, 1, 0xc0, 0xc0]);
    v[1..3].copy_from_slice(&n.to_be_bytes());
    v
}

#[test]
fn values_of_every_type_under_unknown_keys_are_skipped() {
    // {"op": "status", "future": [every type]}: the unknown key is ignored.
    let mut body = vec![0x82, 0xa2, b'o', b'p', 0xa6];
    body.extend_from_slice(b"status");
    body.extend_from_slice(&[0xa6]);
    body.extend_from_slice(b"future");
    body.extend_from_slice(&every_type());
    assert_eq!(decode_one(&frame_with_body(0x01, &body)), Ok(Some(Frame::Header(RequestHeader::status()))));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut body = vec![0x82, 0xa2, b'o', b'p', 0xa6];
    body.extend_from_slice(b"status");
    body.extend_from_slice(&[0xa1, b'x']);
    body.extend(std::iter::repeat_n(0x91, 60_000));
    body.push(0xc0);
    let mut dec = FrameDecoder::new(Limits { max_header_bytes: 1 << 20, ..Limits::default() });
    dec.feed(&frame_with_body(0x01, &body));
    assert!(matches!(dec.decode(), Err(ProtocolError::Malformed { kind: "Header", .. })));
}

// ---- direction (docs/protocol.md §2, §4) -----------------------------------

const CLIENT_KINDS: [FrameKind; 3] = [FrameKind::Header, FrameKind::Item, FrameKind::End];
const HOST_KINDS: [FrameKind; 6] = [
    FrameKind::Result,
    FrameKind::ItemError,
    FrameKind::Summary,
    FrameKind::RequestError,
    FrameKind::Status,
    FrameKind::Reply,
];

#[test]
fn host_kinds_from_a_client_are_refused_at_the_head() {
    for kind in HOST_KINDS {
        assert!(kind.is_host_frame());
        let mut dec = FrameDecoder::from_client(Limits::default());
        // Only the head, declaring a body over every limit: refused as a
        // frame from the wrong peer, before the body is waited for.
        dec.feed(&[kind as u8, 0xff, 0xff, 0xff, 0xff]);
        let err = dec.decode().unwrap_err();
        assert_eq!(err.to_string(), format!("unexpected {} frame from a client", kind.name()));
        assert_eq!(err, ProtocolError::UnexpectedFrame { got: kind.name(), state: "from a client" });
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }
    // The case the issue found: a Result with a body that does not decode
    // (it used to answer `malformed Result frame: IO error while reading marker`).
    let mut dec = FrameDecoder::from_client(Limits::default());
    dec.feed(&[0x81, 3, 0, 0, 0, 0, 0]);
    assert_eq!(dec.decode().unwrap_err().to_string(), "unexpected Result frame from a client");
}

#[test]
fn client_kinds_from_a_host_are_refused_at_the_head() {
    for kind in CLIENT_KINDS {
        assert!(!kind.is_host_frame());
        let mut dec = FrameDecoder::from_host(Limits::default());
        dec.feed(&[kind as u8, 0xff, 0xff, 0xff, 0xff]);
        let err = dec.decode().unwrap_err();
        assert_eq!(err.to_string(), format!("unexpected {} frame from a host", kind.name()));
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }
}

#[test]
fn each_direction_decodes_its_own_frames() {
    let frames = all_frames();
    let (client, host): (Vec<Frame>, Vec<Frame>) = frames.into_iter().partition(|f| !f.kind().is_host_frame());
    assert!(!client.is_empty() && !host.is_empty());
    let mut dec = FrameDecoder::from_client(Limits::default());
    dec.feed(&encode_all(&client));
    assert_eq!(decode_all(&mut dec).unwrap(), client);
    dec.finish().unwrap();
    let mut dec = FrameDecoder::from_host(Limits::default());
    dec.feed(&encode_all(&host));
    assert_eq!(decode_all(&mut dec).unwrap(), host);
    dec.finish().unwrap();
    // A host frame after valid client frames: those come out, then the error.
    let mut dec = FrameDecoder::from_client(Limits::default());
    dec.feed(&encode_all(&client[..2]));
    dec.feed(&encode_all(&host[..1]));
    assert_eq!(dec.decode().unwrap().as_ref(), Some(&client[0]));
    assert_eq!(dec.decode().unwrap().as_ref(), Some(&client[1]));
    assert!(matches!(dec.decode(), Err(ProtocolError::UnexpectedFrame { state: "from a client", .. })));
}

#[test]
fn unknown_kind_is_rejected_in_every_direction() {
    for mut dec in [
        FrameDecoder::new(Limits::default()),
        FrameDecoder::from_client(Limits::default()),
        FrameDecoder::from_host(Limits::default()),
    ] {
        dec.feed(&[0x04, 0, 0, 0, 0]);
        assert_eq!(dec.decode(), Err(ProtocolError::UnknownFrameKind(0x04)));
        assert_eq!(ProtocolError::UnknownFrameKind(0x04).to_string(), "unknown frame kind 0x04");
    }
}

#[test]
fn state_machines_refuse_the_other_peers_kinds_wherever_they_arrive() {
    // RequestState (host side): a host kind before the Header, after it and after End.
    let header = Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() }));
    let result = Frame::Result(item(0, b""));
    let mut s = RequestState::new(Limits::default());
    assert_eq!(s.on_frame(result.clone()).unwrap_err().to_string(), "unexpected Result frame from a client");
    s.on_frame(header).unwrap();
    assert_eq!(s.on_frame(result.clone()).unwrap_err().to_string(), "unexpected Result frame from a client");
    s.on_frame(Frame::End).unwrap();
    let summary = Frame::Summary(Summary::default());
    assert_eq!(s.on_frame(summary).unwrap_err().to_string(), "unexpected Summary frame from a client");
    // The order errors keep their messages.
    assert_eq!(s.on_frame(item_frame(1)).unwrap_err().to_string(), "unexpected Item frame after End");
    // ReplyState (client side).
    let mut r = ReplyState::new();
    assert_eq!(r.on_frame(Frame::End).unwrap_err().to_string(), "unexpected End frame from a host");
    r.on_frame(result).unwrap();
    assert_eq!(r.on_frame(item_frame(2)).unwrap_err().to_string(), "unexpected Item frame from a host");
    r.on_frame(Frame::Summary(Summary::default())).unwrap();
    assert_eq!(
        r.on_frame(Frame::Status(StatusReply::default())).unwrap_err().to_string(),
        "unexpected Status frame after the final frame"
    );
}

#[test]
fn sequencing_messages_are_as_documented() {
    let header = || Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() }));
    let mut s = RequestState::new(Limits::default());
    assert_eq!(s.on_frame(item_frame(0)).unwrap_err().to_string(), "unexpected Item frame before Header");
    assert_eq!(s.on_frame(Frame::End).unwrap_err().to_string(), "unexpected End frame before Header");
    s.on_frame(header()).unwrap();
    assert_eq!(s.on_frame(header()).unwrap_err().to_string(), "unexpected Header frame after Header");
    s.on_frame(item_frame(3)).unwrap();
    assert_eq!(s.on_frame(item_frame(3)).unwrap_err().to_string(), "duplicate item index 3");
    s.on_frame(Frame::End).unwrap();
    assert_eq!(s.on_frame(header()).unwrap_err().to_string(), "unexpected Header frame after End");
    assert_eq!(s.on_frame(Frame::End).unwrap_err().to_string(), "unexpected End frame after End");
    let mut s = RequestState::new(Limits::default());
    s.on_frame(Frame::Header(RequestHeader::status())).unwrap();
    assert_eq!(s.on_frame(item_frame(0)).unwrap_err().to_string(), "unexpected Item frame after Header");
    assert_eq!(ProtocolError::DataAfterEnd.to_string(), "data after End");
    assert_eq!(ProtocolError::DataAfterEnd.code(), ErrorCode::BadRequest);
    assert_eq!(
        ProtocolError::Truncated("stream finished before End").to_string(),
        "stream ended early: stream finished before End"
    );
    let dec = {
        let mut d = FrameDecoder::from_client(Limits::default());
        d.feed(&[0x03, 0]);
        d
    };
    assert_eq!(dec.finish().unwrap_err().to_string(), "stream ended early: partial frame at end of stream");
    // Item body rules.
    assert_eq!(decode_error(&frame_with_body(0x03, &[0])), "malformed End frame: non-empty body");
    assert_eq!(
        decode_error(&frame_with_body(0x02, &[1, 0])),
        "malformed Item frame: body shorter than its 4-byte head length"
    );
    assert_eq!(
        decode_error(&frame_with_body(0x02, &[9, 0, 0, 0, 0x80])),
        "malformed Item frame: head length runs past the frame body"
    );
}
