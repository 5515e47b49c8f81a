//! Golden bytes of the worked example in `docs/protocol.md`.
//!
//! The frames of the example are encoded with the crate's public API and
//! compared with hex literals; the annotated hex dumps in the document are
//! parsed and compared with the same literals, so the document cannot drift
//! from the code. The field tables of the document's section 3 are parsed
//! too and checked against fully populated messages on the wire (names,
//! order, types, required or optional, `nil`, defaults). The remaining tests
//! pin down the decoding rules the document states (map form only, unknown
//! fields, unknown codes and compressions, the messages of its error tables).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, AdminHeader, AdminReply, CanaryInfo, Compression, ErrorCode, Frame, FrameDecoder, Item, ItemError, ItemHead, Limits,
    LoadFailure, ModelInfo, ModelStatus, PredictHeader, ProtocolError, RequestError, RequestHeader, RequestState,
    StatusHeader, StatusReply, Summary, Timings, WorkerStatus, ALPN,
};

/// The item payload: `plugins/tabular/samples/jet-0.json`, byte for byte.
const JET0: &str = concat!(
    r#"{"keys": ["jet_tau21", "jet_nconst", "jet_nemf", "jet_muf", "jet_axis2", "jet_nhf", "jet_msd", "#,
    r#""jet_phi", "jet_btag", "jet_cemf", "jet_mass", "jet_pt", "jet_tau32", "jet_ptd", "jet_chf", "jet_eta"], "#,
    r#""values": [-0.4266, -1.86, -3.3321, 1.7105, 0.9976, 0.7895, 0.8483, -0.4522, 2.0738, 0.3707, "#,
    r#"-0.6301, -0.5118, 2.2238, 1.0128, 0.4978, 1.0229]}"#,
    "\n"
);

/// The result payload the host sent for it (tabular v1, as captured).
const SCORES: &str =
    r#"{"qcd":0.2602151334285736,"top":0.26725292205810547,"w":0.31055718660354614,"z":0.16197480261325836}"#;

/// Header + Item + End, as the client sends them.
const REQUEST_HEX: &str = concat!(
    // Header
    "0133000000",
    "84a26f70a770726564696374a56d6f64656ca7746162756c6172aa726571756573745f6964a57265712d31a6616363657074",
    "90",
    // Item
    "029c010000",
    "41000000",
    "84a5696e64657800ac636f6e74656e745f74797065b06170706c69636174696f6e2f6a736f6ea86d6574616461746180",
    "ab636f6d7072657373696f6ea46e6f6e65",
    "7b226b657973223a205b226a65745f7461753231222c20226a65745f6e636f6e7374222c20226a65745f6e656d66222c20",
    "226a65745f6d7566222c20226a65745f6178697332222c20226a65745f6e6866222c20226a65745f6d7364222c20226a65",
    "745f706869222c20226a65745f62746167222c20226a65745f63656d66222c20226a65745f6d617373222c20226a65745f",
    "7074222c20226a65745f7461753332222c20226a65745f707464222c20226a65745f636866222c20226a65745f65746122",
    "5d2c202276616c756573223a205b2d302e343236362c202d312e38362c202d332e333332312c20312e373130352c20302e",
    "393937362c20302e373839352c20302e383438332c202d302e343532322c20322e303733382c20302e333730372c202d30",
    "2e363330312c202d302e353131382c20322e323233382c20312e303132382c20302e343937382c20312e303232395d7d0a",
    // End
    "0300000000",
);

/// Result + Summary, as the host answers.
const REPLY_HEX: &str = concat!(
    // Result
    "81a9000000",
    "41000000",
    "84a5696e64657800ac636f6e74656e745f74797065b06170706c69636174696f6e2f6a736f6ea86d6574616461746180",
    "ab636f6d7072657373696f6ea46e6f6e65",
    "7b22716364223a302e323630323135313333343238353733362c22746f70223a302e3236373235323932323035383130",
    "3534372c2277223a302e33313035353731383636303335343631342c227a223a302e3136313937343830323631333235",
    "3833367d",
    // Summary
    "8383000000",
    "87aa726571756573745f6964a57265712d31a56d6f64656ca7746162756c6172a776657273696f6e01a26f6b01a66661",
    "696c656400a774696d696e677384a871756575655f75732fad70726570726f636573735f757349aa666f72776172645f",
    "7573cd07dcae706f737470726f636573735f75731daa656c61707365645f7573cd08e4",
);

/// A status request: Header{op: "status"} + End.
const STATUS_REQUEST_HEX: &str = concat!(
    "010b00000081a26f70a6737461747573", // Header {op: "status"}
    "0300000000",                       // End
);

/// The RequestError for an unknown model.
const REQUEST_ERROR_HEX: &str = concat!(
    "8444000000",
    "82a4636f6465ad756e6b6e6f776e5f6d6f64656ca76d657373616765d926",
    "756e6b6e6f776e206d6f64656c20606e6f70656020286c6f616465643a20746162756c617229",
);

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd number of hex digits");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out);
    }
    out.to_vec()
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode()? {
        out.push(f);
    }
    dec.finish()?;
    Ok(out)
}

fn json_head(index: u32) -> ItemHead {
    ItemHead { index, content_type: "application/json".into(), metadata: BTreeMap::new(), compression: Compression::None }
}

fn request_frames() -> Vec<Frame> {
    vec![
        Frame::Header(RequestHeader::Predict(PredictHeader {
            model: "tabular".into(),
            version: None,
            request_id: "req-1".into(),
            accept: vec![],
            deadline_ms: None,
            token: None,
        })),
        Frame::Item(Item { head: json_head(0), payload: Bytes::from_static(JET0.as_bytes()) }),
        Frame::End,
    ]
}

fn reply_frames() -> Vec<Frame> {
    vec![
        Frame::Result(Item { head: json_head(0), payload: Bytes::from_static(SCORES.as_bytes()) }),
        Frame::Summary(Summary {
            request_id: "req-1".into(),
            model: "tabular".into(),
            version: 1,
            ok: 1,
            failed: 0,
            timings: Timings { queue_us: 47, preprocess_us: 73, forward_us: 2012, postprocess_us: 29 },
            elapsed_us: 2276,
        }),
    ]
}

#[test]
fn alpn_is_tensorgate_1() {
    assert_eq!(ALPN, b"tensorgate/1");
}

#[test]
fn worked_example_request_bytes() {
    assert_eq!(JET0.len(), 343);
    let bytes = encode_all(&request_frames());
    assert_eq!(to_hex(&bytes), to_hex(&hex(REQUEST_HEX)));
    assert_eq!(decode_all(&bytes).unwrap(), request_frames());
}

#[test]
fn worked_example_reply_bytes() {
    let bytes = encode_all(&reply_frames());
    assert_eq!(to_hex(&bytes), to_hex(&hex(REPLY_HEX)));
    assert_eq!(decode_all(&bytes).unwrap(), reply_frames());
}

#[test]
fn status_request_bytes() {
    let bytes = encode_all(&[Frame::Header(RequestHeader::status()), Frame::End]);
    assert_eq!(to_hex(&bytes), STATUS_REQUEST_HEX);
}

#[test]
fn unknown_model_request_error_bytes() {
    let frame = Frame::RequestError(RequestError {
        code: ErrorCode::UnknownModel,
        message: "unknown model `nope` (loaded: tabular)".into(),
    });
    let bytes = encode_all(std::slice::from_ref(&frame));
    assert_eq!(to_hex(&bytes), to_hex(&hex(REQUEST_ERROR_HEX)));
    assert_eq!(decode_all(&bytes).unwrap(), vec![frame]);
}

/// The fenced blocks of `docs/protocol.md` whose info string is `hex LABEL`,
/// comments (`#` to the end of the line) and whitespace removed, concatenated.
fn doc_hex(doc: &str, label: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in doc.lines() {
        let t = line.trim();
        if !inside {
            if let Some(info) = t.strip_prefix("```") {
                let mut words = info.split_whitespace();
                if words.next() == Some("hex") && words.next() == Some(label) {
                    inside = true;
                    found = true;
                }
            }
        } else if t.starts_with("```") {
            inside = false;
        } else {
            let code = t.split('#').next().unwrap_or("");
            out.extend(code.chars().filter(|c| !c.is_whitespace()));
        }
    }
    assert!(found, "docs/protocol.md has no ```hex {label} block");
    out.to_lowercase()
}

#[test]
fn document_shows_exactly_these_bytes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    for (label, literal) in [
        ("request", REQUEST_HEX),
        ("reply", REPLY_HEX),
        ("status-request", STATUS_REQUEST_HEX),
        ("request-error", REQUEST_ERROR_HEX),
    ] {
        assert_eq!(doc_hex(&doc, label), to_hex(&hex(literal)), "```hex {label} block of docs/protocol.md");
    }
}

// ---- decoding rules stated in the document ---------------------------------

fn frame_bytes(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn msgpack<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

fn item_bytes(kind: u8, head: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = (head.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(head);
    body.extend_from_slice(payload);
    frame_bytes(kind, &body)
}

#[test]
fn optional_fields_take_their_defaults() {
    // A Header with only `op` and `model`; an ItemHead with only `index`.
    let mut header = BTreeMap::new();
    header.insert("op", "predict");
    header.insert("model", "tabular");
    let mut head = BTreeMap::new();
    head.insert("index", 7u32);
    let mut bytes = frame_bytes(0x01, &msgpack(&header));
    bytes.extend(item_bytes(0x02, &msgpack(&head), b"xyz"));
    let frames = decode_all(&bytes).unwrap();
    assert_eq!(
        frames,
        vec![
            Frame::Header(RequestHeader::Predict(PredictHeader { model: "tabular".into(), ..Default::default() })),
            Frame::Item(Item {
                head: ItemHead { index: 7, ..Default::default() },
                payload: Bytes::from_static(b"xyz")
            }),
        ]
    );
}

#[test]
fn nil_is_accepted_for_version_and_deadline() {
    #[derive(serde::Serialize)]
    struct H {
        op: &'static str,
        model: &'static str,
        version: Option<u64>,
        deadline_ms: Option<u64>,
    }
    let bytes = frame_bytes(0x01, &msgpack(&H { op: "predict", model: "m", version: None, deadline_ms: None }));
    match &decode_all(&bytes).unwrap()[0] {
        Frame::Header(RequestHeader::Predict(h)) => assert_eq!((h.version, h.deadline_ms), (None, None)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_map_fields_are_ignored() {
    #[derive(serde::Serialize)]
    struct H {
        op: &'static str,
        model: &'static str,
        priority: u8,
        tags: Vec<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Head {
        index: u32,
        checksum: &'static str,
    }
    #[derive(serde::Serialize)]
    struct S {
        ok: u32,
        failed: u32,
        gpu_ms: f64,
    }
    let mut bytes = frame_bytes(0x01, &msgpack(&H { op: "predict", model: "m", priority: 3, tags: vec!["a"] }));
    bytes.extend(item_bytes(0x02, &msgpack(&Head { index: 1, checksum: "x" }), b""));
    bytes.extend(frame_bytes(0x83, &msgpack(&S { ok: 1, failed: 0, gpu_ms: 1.5 })));
    let frames = decode_all(&bytes).unwrap();
    assert_eq!(frames.len(), 3);
    assert!(matches!(&frames[2], Frame::Summary(s) if s.ok == 1));
}

#[test]
fn unknown_error_code_decodes_as_unknown() {
    #[derive(serde::Serialize)]
    struct E {
        code: &'static str,
        message: &'static str,
    }
    let bytes = frame_bytes(0x84, &msgpack(&E { code: "quota_exhausted", message: "m" }));
    match &decode_all(&bytes).unwrap()[0] {
        Frame::RequestError(e) => assert_eq!(e.code, ErrorCode::Unknown),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_op_is_malformed_unknown_compression_is_not() {
    // An unknown `op` makes the Header malformed (host: RequestError bad_request).
    #[derive(serde::Serialize)]
    struct H {
        op: &'static str,
        model: &'static str,
        accept: Vec<&'static str>,
    }
    let err = decode_all(&frame_bytes(0x01, &msgpack(&H { op: "train", model: "m", accept: vec![] }))).unwrap_err();
    assert!(matches!(err, ProtocolError::Malformed { kind: "Header", .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    // An unknown compression name in `accept` decodes (and is never chosen).
    match &decode_all(&frame_bytes(0x01, &msgpack(&H { op: "predict", model: "m", accept: vec!["zstd", "lz4"] }))).unwrap()[0] {
        Frame::Header(RequestHeader::Predict(p)) => assert_eq!(p.accept, vec![Compression::Zstd, Compression::Unsupported]),
        other => panic!("{other:?}"),
    }
    // An item in an unknown compression decodes, and fails alone when decompressed.
    #[derive(serde::Serialize)]
    struct Head {
        index: u32,
        compression: &'static str,
    }
    match &decode_all(&item_bytes(0x02, &msgpack(&Head { index: 4, compression: "lz4" }), b"xx")).unwrap()[0] {
        Frame::Item(item) => {
            let err = item.decompressed(1 << 20).unwrap_err();
            assert_eq!(err, ProtocolError::UnsupportedCompression { index: 4 });
            assert_eq!(err.code(), ErrorCode::BadRequest);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_codes_on_the_wire() {
    let all = [
        (ErrorCode::BadRequest, "bad_request"),
        (ErrorCode::UnknownModel, "unknown_model"),
        (ErrorCode::PluginError, "plugin_error"),
        (ErrorCode::PluginFailed, "plugin_failed"),
        (ErrorCode::ModelError, "model_error"),
        (ErrorCode::LimitExceeded, "limit_exceeded"),
        (ErrorCode::Busy, "busy"),
        (ErrorCode::DeadlineExceeded, "deadline_exceeded"),
        (ErrorCode::Forbidden, "forbidden"),
        (ErrorCode::Unsupported, "unsupported"),
        (ErrorCode::UnsupportedContentType, "unsupported_content_type"),
        (ErrorCode::LoadFailed, "load_failed"),
        (ErrorCode::Conflict, "conflict"),
        (ErrorCode::Internal, "internal"),
    ];
    for (code, name) in all {
        assert_eq!(rmp_serde::to_vec(&code).unwrap(), rmp_serde::to_vec(name).unwrap(), "{name}");
        assert_eq!(code.to_string(), name);
    }
}

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!(l.max_header_bytes, 65_536);
    assert_eq!(l.max_frame_bytes, 268_435_456);
    assert_eq!(l.max_item_bytes, 536_870_912);
    assert_eq!(l.max_items_per_request, 100_000);
}

#[test]
fn nil_for_other_optional_fields_is_malformed() {
    #[derive(serde::Serialize)]
    struct H {
        op: &'static str,
        model: &'static str,
        request_id: Option<String>,
    }
    let err = decode_all(&frame_bytes(0x01, &msgpack(&H { op: "predict", model: "m", request_id: None }))).unwrap_err();
    assert!(matches!(err, ProtocolError::Malformed { kind: "Header", .. }), "{err}");
}

#[test]
fn integers_in_any_width_and_keys_in_any_order() {
    // Header map {"model": "m", "version": uint64 2, "op": "predict"}: tag last.
    let mut header = vec![0x83, 0xa5];
    header.extend_from_slice(b"model");
    header.extend_from_slice(&[0xa1, b'm', 0xa7]);
    header.extend_from_slice(b"version");
    header.extend_from_slice(&[0xcf, 0, 0, 0, 0, 0, 0, 0, 2, 0xa2]);
    header.extend_from_slice(b"op");
    header.push(0xa7);
    header.extend_from_slice(b"predict");
    // ItemHead {"index": uint32 7}.
    let mut head = vec![0x81, 0xa5];
    head.extend_from_slice(b"index");
    head.extend_from_slice(&[0xce, 0, 0, 0, 7]);
    let mut bytes = frame_bytes(0x01, &header);
    bytes.extend(item_bytes(0x02, &head, b""));
    let frames = decode_all(&bytes).unwrap();
    assert_eq!(
        frames[0],
        Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), version: Some(2), ..Default::default() }))
    );
    assert!(matches!(&frames[1], Frame::Item(it) if it.head.index == 7));
}

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

// ---- map form only, unknown names (document §3, §9) ------------------------

fn decode_err(bytes: &[u8]) -> ProtocolError {
    let err = decode_all(bytes).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");
    err
}

#[test]
fn array_form_header_and_item_head_are_malformed() {
    // What serde's array form of these structs looks like; the document says
    // a body is a map, and the decoder used to accept these.
    let header = rmp_serde::to_vec(&RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() }))
        .unwrap();
    assert_eq!(header[0] & 0xf0, 0x90, "array form");
    assert_eq!(
        decode_err(&frame_bytes(0x01, &header)).to_string(),
        "malformed Header frame: body must be a MessagePack map, got an array"
    );
    let head = rmp_serde::to_vec(&json_head(3)).unwrap();
    assert_eq!(head[0] & 0xf0, 0x90, "array form");
    assert_eq!(
        decode_err(&item_bytes(0x02, &head, b"{}")).to_string(),
        "malformed Item frame: ItemHead must be a MessagePack map, got an array"
    );
    assert_eq!(
        decode_err(&item_bytes(0x81, &head, b"{}")).to_string(),
        "malformed Result frame: ItemHead must be a MessagePack map, got an array"
    );
    // The same fields in map form decode.
    let ok = item_bytes(0x02, &msgpack(&json_head(3)), b"{}");
    assert!(matches!(&decode_all(&ok).unwrap()[0], Frame::Item(it) if it.head.index == 3));
}

#[test]
fn unknown_accept_entry_is_ignored() {
    #[derive(serde::Serialize)]
    struct H {
        op: &'static str,
        model: &'static str,
        accept: Vec<&'static str>,
    }
    let bytes = frame_bytes(0x01, &msgpack(&H { op: "predict", model: "m", accept: vec!["zstd", "brotli"] }));
    match &decode_all(&bytes).unwrap()[0] {
        Frame::Header(RequestHeader::Predict(p)) => {
            // Decoded, kept apart from the names the host may choose, never chosen.
            assert_eq!(p.accept, vec![Compression::Zstd, Compression::Unsupported]);
            assert!(p.accept.contains(&Compression::Zstd));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_item_compression_fails_that_item_alone() {
    #[derive(serde::Serialize)]
    struct Head {
        index: u32,
        compression: &'static str,
    }
    let mut bytes = item_bytes(0x02, &msgpack(&Head { index: 4, compression: "brotli" }), b"xx");
    bytes.extend(item_bytes(0x02, &msgpack(&json_head(5)), b"{}"));
    let frames = decode_all(&bytes).unwrap();
    let Frame::Item(unknown) = &frames[0] else { panic!("{:?}", frames[0]) };
    assert_eq!(unknown.head.compression, Compression::Unsupported);
    let err = unknown.decompressed(1 << 20).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    let message = err.to_string();
    assert_eq!(message, "item 4: unsupported compression (known: none, zstd)");
    assert!(doc().contains("`item I: unsupported compression (known: none, zstd)`"));
    // Its sibling is unaffected.
    let Frame::Item(sibling) = &frames[1] else { panic!("{:?}", frames[1]) };
    assert_eq!(sibling.decompressed(1 << 20).unwrap(), Bytes::from_static(b"{}"));
}

#[test]
fn signed_integer_encodings_of_non_negative_values_are_accepted() {
    // ItemHead {"index": int8 5}, then {"index": int8 -1} (negative: malformed).
    let mut head = vec![0x81, 0xa5];
    head.extend_from_slice(b"index");
    head.extend_from_slice(&[0xd0, 0x05]);
    assert!(matches!(&decode_all(&item_bytes(0x02, &head, b"")).unwrap()[0], Frame::Item(it) if it.head.index == 5));
    let last = head.len() - 1;
    head[last] = 0xff;
    assert!(matches!(decode_err(&item_bytes(0x02, &head, b"")), ProtocolError::Malformed { kind: "Item", .. }));
}

/// `docs/protocol.md` names these messages in its sequencing-error table
/// (§4) and elsewhere; each is produced here by the crate, and must appear
/// in the document exactly.
#[test]
fn documented_error_messages_are_the_decoders() {
    let doc = doc();
    let mut trailing = msgpack(&RequestHeader::status());
    trailing.extend_from_slice(&[0xc0, 0xc0]);
    let mut dup_index = vec![0x82, 0xa5];
    dup_index.extend_from_slice(b"index");
    dup_index.push(1);
    dup_index.push(0xa5);
    dup_index.extend_from_slice(b"index");
    dup_index.push(2);
    #[derive(serde::Serialize)]
    struct Op {
        op: &'static str,
    }
    // A Result from a client whose body would not decode: refused at its head.
    let host_kind = [0x81, 3, 0, 0, 0, 0, 0];
    let from_client = |bytes: &[u8]| {
        let mut dec = FrameDecoder::from_client(Limits::default());
        dec.feed(bytes);
        dec.decode().unwrap_err().to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (decode_err(&frame_bytes(0x01, &[0x92, 0xa1, b'p', 0xa1, b'm'])).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x01, &[0x81, 0x00, 0x01])).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x01, &trailing)).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x01, &[0x81, 0xa2, b'o'])).to_string(), "decoder"),
        (decode_err(&item_bytes(0x02, &rmp_serde::to_vec(&json_head(0)).unwrap(), b"")).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x03, &[0])).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x02, &[1, 0])).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x02, &[9, 0, 0, 0, 0x80])).to_string(), "decoder"),
        (decode_err(&frame_bytes(0x04, &[])).to_string(), "decoder"),
        (from_client(&host_kind), "from_client"),
        (ProtocolError::DataAfterEnd.to_string(), "host after End"),
        (decode_all(&[0x03, 0, 0]).unwrap_err().to_string(), "finish"),
    ];
    for (message, source) in &cases {
        assert!(doc.contains(&format!("`{message}`")), "docs/protocol.md lacks `{message}` ({source})");
    }
    // Messages quoted inside a longer example: the decoder's own text.
    let missing = decode_err(&frame_bytes(0x01, &msgpack(&Op { op: "predict" }))).to_string();
    assert_eq!(missing, "malformed Header frame: missing field `model`");
    let dup = decode_err(&item_bytes(0x02, &dup_index, b"")).to_string();
    assert_eq!(dup, "malformed Item frame: duplicate field `index`");
    let unknown_op = decode_err(&frame_bytes(0x01, &msgpack(&Op { op: "train" }))).to_string();
    assert_eq!(
        unknown_op,
        "malformed Header frame: unknown variant `train`, expected one of `predict`, `status`, `models`, `upload`, `fetch`, `delete`, `reload`, `promote`, `rollback`"
    );
    for quoted in [
        "``missing field `model` ``",
        "``duplicate field `index` ``",
        "``unknown variant `train`, expected one of `predict`, `status`, `models`, `upload`, `fetch`, `delete`, `reload`, `promote`, `rollback` ``",
    ] {
        assert!(doc.contains(quoted), "docs/protocol.md lacks {quoted}");
    }
    // Sequencing (RequestState, the host side).
    let predict = Frame::Header(RequestHeader::Predict(PredictHeader { model: "m".into(), ..Default::default() }));
    let item = |i| Frame::Item(Item { head: json_head(i), payload: Bytes::new() });
    let mut s = RequestState::new(Limits::default());
    let mut seq = vec![s.on_frame(item(0)).unwrap_err().to_string()];
    s.on_frame(predict.clone()).unwrap();
    seq.push(s.on_frame(predict.clone()).unwrap_err().to_string());
    s.on_frame(item(3)).unwrap();
    seq.push(s.on_frame(item(3)).unwrap_err().to_string());
    s.on_frame(Frame::End).unwrap();
    seq.push(s.on_frame(item(4)).unwrap_err().to_string());
    seq.push(ProtocolError::Truncated("stream finished before End").to_string());
    let mut status = RequestState::new(Limits::default());
    status.on_frame(Frame::Header(RequestHeader::status())).unwrap();
    seq.push(status.on_frame(item(0)).unwrap_err().to_string());
    for message in seq {
        assert!(doc.contains(&format!("`{message}`")), "docs/protocol.md lacks `{message}`");
    }
    let limits = Limits::default();
    for message in [
        ProtocolError::FrameTooLarge { kind: "Header", len: 70_000, limit_name: "max_header_bytes", limit: 65_536 }
            .to_string()
            .replace("70000", "N"),
        ProtocolError::FrameTooLarge { kind: "Item", len: 1, limit_name: "max_frame_bytes", limit: limits.max_frame_bytes }
            .to_string()
            .replace(" 1 ", " N "),
        ProtocolError::DecompressedTooLarge { index: 0, limit: limits.max_item_bytes }.to_string().replace("item 0", "item I"),
        ProtocolError::TooManyItems { limit: limits.max_items_per_request }.to_string(),
    ] {
        assert!(doc.contains(&format!("`{message}`")), "docs/protocol.md lacks `{message}`");
    }
}

// ---- the field tables of §3, against the wire ------------------------------

/// A MessagePack value, map entries in wire order.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    UInt(u64),
    Int(i64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a MessagePack value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                <Value as serde::Deserialize>::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::UInt(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(if v >= 0 { Value::UInt(v as u64) } else { Value::Int(v) })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Bin(v.to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Value::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// One row of a field table: `| field | type | presence | default | meaning |`.
#[derive(Debug)]
struct DocField {
    name: String,
    ty: String,
    required: bool,
    nil_ok: bool,
    default: String,
}

/// The `nth` table after the line `after` (which must be followed by that
/// many tables before the next heading of its level or above).
fn doc_table(doc: &str, after: &str, nth: usize) -> Vec<DocField> {
    let lines: Vec<&str> = doc.lines().collect();
    let start = lines.iter().position(|l| l.trim() == after).unwrap_or_else(|| panic!("no line `{after}` in docs/protocol.md"));
    let level = after.chars().take_while(|c| *c == '#').count();
    let mut tables: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in &lines[start + 1..] {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            break;
        }
        if line.starts_with('|') {
            current.get_or_insert_with(Vec::new).push(line);
        } else if let Some(t) = current.take() {
            tables.push(t);
        }
    }
    tables.extend(current);
    let table = tables.get(nth).unwrap_or_else(|| panic!("`{after}` has no table {nth} before the next heading"));
    let cells = |l: &str| -> Vec<String> { l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect() };
    assert_eq!(cells(table[0])[..4], ["field", "type", "presence", "default"], "table {nth} after `{after}`");
    table[2..]
        .iter()
        .map(|row| {
            let c = cells(row);
            let presence = c[2].as_str();
            assert!(
                ["required", "optional", "optional, nil = absent"].contains(&presence),
                "`{after}`: presence `{presence}`"
            );
            DocField {
                name: c[0].trim_matches('`').to_string(),
                ty: c[1].clone(),
                required: presence == "required",
                nil_ok: presence == "optional, nil = absent",
                default: c[3].clone(),
            }
        })
        .collect()
}

/// The entries of one map, in wire order.
type Entries = Vec<(String, Value)>;

#[derive(Clone, Copy)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// One message (or nested map) whose table is checked against the wire.
struct Case {
    /// Where its table is: a line of the document and which table after it.
    after: &'static str,
    nth: usize,
    /// A frame with every field set (none at its default).
    frame: Frame,
    /// From the body's map to the map the table describes.
    path: &'static [Step],
}

/// The MessagePack map of a frame: its body, or an Item's/Result's head.
fn wire_value(frame: &Frame) -> Value {
    let mut out = BytesMut::new();
    encode(frame, &mut out);
    let body = &out[5..];
    let map = match frame {
        Frame::Item(_) | Frame::Result(_) => {
            let head_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
            &body[4..4 + head_len]
        }
        _ => body,
    };
    rmp_serde::from_slice(map).expect("generic decode")
}

/// Decodes a frame of `like`'s kind whose map is `value`.
fn decode_value(like: &Frame, value: &Value) -> Result<Frame, ProtocolError> {
    let map = rmp_serde::to_vec(value).unwrap();
    let kind = like.kind() as u8;
    let bytes = match like {
        Frame::Item(_) | Frame::Result(_) => item_bytes(kind, &map, b"xyz"),
        _ => frame_bytes(kind, &map),
    };
    let mut frames = decode_all(&bytes)?;
    assert_eq!(frames.len(), 1);
    Ok(frames.remove(0))
}

fn entries_at<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Entries {
    let mut v = value;
    for step in path {
        v = match (step, v) {
            (Step::Key(k), Value::Map(entries)) => {
                &mut entries.iter_mut().find(|(name, _)| name == k).unwrap_or_else(|| panic!("no key {k}")).1
            }
            (Step::Index(i), Value::Array(items)) => &mut items[*i],
            (_, other) => panic!("path does not fit {other:?}"),
        };
    }
    match v {
        Value::Map(entries) => entries,
        other => panic!("not a map: {other:?}"),
    }
}

/// Whether a wire value has the document's type (`str`, `uint (u32)`,
/// `array of str`, `map str → str`, ...).
fn has_type(value: &Value, ty: &str) -> bool {
    match (ty.split_whitespace().next().unwrap_or(""), value) {
        ("str", Value::Str(_)) | ("uint", Value::UInt(_)) | ("bool", Value::Bool(_)) | ("float", Value::Float(_)) => true,
        ("array", Value::Array(items)) => match ty {
            "array of str" => items.iter().all(|v| matches!(v, Value::Str(_))),
            "array of maps" => items.iter().all(|v| matches!(v, Value::Map(_))),
            _ => false,
        },
        ("map", Value::Map(entries)) => match ty {
            "map" => true,
            "map str → str" => entries.iter().all(|(_, v)| matches!(v, Value::Str(_))),
            "map str → uint" => entries.iter().all(|(_, v)| matches!(v, Value::UInt(_))),
            _ => false,
        },
        _ => false,
    }
}

/// The value a default cell stands for; `None`: the field is left out.
fn default_value(cell: &str) -> Option<Value> {
    match cell {
        "`\"\"`" => Some(Value::Str(String::new())),
        "0" => Some(Value::UInt(0)),
        "`[]`" => Some(Value::Array(Vec::new())),
        "`{}`" => Some(Value::Map(Vec::new())),
        "`false`" => Some(Value::Bool(false)),
        "`\"none\"`" => Some(Value::Str("none".into())),
        "all 0" => Some(Value::Map(
            ["queue_us", "preprocess_us", "forward_us", "postprocess_us"].map(|k| (k.to_string(), Value::UInt(0))).to_vec(),
        )),
        "none" | "newest" => None,
        other => panic!("unknown default `{other}`"),
    }
}

fn check_table(doc: &str, case: &Case) {
    let what = format!("table {} after `{}`", case.nth, case.after);
    let fields = doc_table(doc, case.after, case.nth);
    let full = wire_value(&case.frame);
    assert_eq!(decode_value(&case.frame, &full).as_ref(), Ok(&case.frame), "{what}: round trip");
    let mut probe = full.clone();
    let entries = entries_at(&mut probe, case.path).clone();
    // Names and order: exactly the table's rows.
    let wire_names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let doc_names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(wire_names, doc_names, "{what}: field names and order on the wire");
    for (field, (_, value)) in fields.iter().zip(&entries) {
        let name = &field.name;
        assert!(has_type(value, &field.ty), "{what}: `{name}` is {value:?} on the wire, the table says {}", field.ty);
        let with = |f: &dyn Fn(&mut Entries)| {
            let mut v = full.clone();
            f(entries_at(&mut v, case.path));
            decode_value(&case.frame, &v)
        };
        // Left out: malformed when required; else decodes to the default.
        let without = with(&|e| e.retain(|(k, _)| k != name));
        if field.required {
            assert!(
                matches!(&without, Err(ProtocolError::Malformed { reason, .. }) if reason.contains("missing field")),
                "{what}: `{name}` is required, yet {without:?}"
            );
            assert_eq!(field.default, "", "{what}: required `{name}` has a default");
        } else {
            let frame = without.unwrap_or_else(|e| panic!("{what}: optional `{name}` left out: {e}"));
            match default_value(&field.default) {
                // Left out means the same as the default written out.
                Some(default) => {
                    let set = with(&|e| e.iter_mut().filter(|(k, _)| k == name).for_each(|(_, v)| *v = default.clone()));
                    assert_eq!(set.as_ref(), Ok(&frame), "{what}: default of `{name}`");
                }
                // No default value: absent, and the encoder writes nothing.
                None => {
                    let mut again = wire_value(&frame);
                    let got = entries_at(&mut again, case.path).iter().any(|(k, _)| k == name);
                    assert!(!got, "{what}: `{name}` absent is written out");
                }
            }
        }
        // nil: accepted (as absent) exactly where the table says so.
        let nil = with(&|e| e.iter_mut().filter(|(k, _)| k == name).for_each(|(_, v)| *v = Value::Nil));
        assert_eq!(nil.is_ok(), field.nil_ok, "{what}: `{name}` = nil gave {nil:?}");
        // Integer range: u32 fields refuse 2^32, u64 fields take it.
        if field.ty.starts_with("uint") {
            let big = with(&|e| e.iter_mut().filter(|(k, _)| k == name).for_each(|(_, v)| *v = Value::UInt(1 << 32)));
            match field.ty.as_str() {
                "uint (u32)" => assert!(big.is_err(), "{what}: `{name}` is u32 yet took 2^32"),
                "uint (u64)" => assert!(big.is_ok(), "{what}: `{name}` is u64 yet refused 2^32: {big:?}"),
                other => panic!("{what}: `{name}`: say `uint (u32)` or `uint (u64)`, not `{other}`"),
            }
        }
    }
}

fn full_model_status() -> ModelStatus {
    ModelStatus {
        name: "tabular".into(),
        version: 2,
        description: "jet tagger".into(),
        device: "cuda:0".into(),
        items_ok: 10,
        items_failed: 1,
        forwards: 4,
        forward_rows: 11,
        forward_us: 900,
        forwards_inline: 1,
        queued: 3,
        plugin_instances: 2,
        workers: 2,
        capacity: 64,
        in_flight: 5,
        default: true,
        rolled_back: Some("canary: 3 of 13 items failed".into()),
        canary: Some(CanaryInfo { share: 0.1, items_needed: 200, items_ok: 37, items_failed: 1 }),
        failures: [("plugin_error".to_string(), 1)].into(),
        latency_p50_us: 350,
        latency_p90_us: 470,
        latency_p99_us: 4_800,
    }
}

fn full_worker_status() -> WorkerStatus {
    WorkerStatus {
        id: "w-Qx81Ab".into(),
        hostname: "gpu07".into(),
        state: "serving".into(),
        device: "cuda:0".into(),
        uptime_s: 310,
        models: vec!["tabular/2".into()],
        capacity: 32,
        in_flight: 3,
        items_ok: 6,
        items_failed: 1,
    }
}

fn full_load_failure() -> LoadFailure {
    LoadFailure { model: "broken".into(), version: Some(3), error: "manifest.toml: missing field `name`".into(), at_unix_s: 1_700_000_000 }
}

fn full_model_info() -> ModelInfo {
    ModelInfo {
        name: "multi-io".into(),
        version: 1,
        state: "failed".into(),
        description: "two inputs".into(),
        labels: vec!["a".into(), "b".into()],
        inputs: vec!["x: F32[-1, 4]".into(), "y: F32[-1, 3]".into()],
        outputs: vec!["h: F32[-1, 3]".into(), "s: F64[-1]".into()],
        device: "cpu".into(),
        default: true,
        rolled_back: Some("rolled back by hand".into()),
        canary: Some(CanaryInfo { share: 0.1, items_needed: 200, items_ok: 37, items_failed: 1 }),
        load_us: 12_345,
        plugin_cached: true,
        loaded_at_unix_s: 1_700_000_001,
        requests: 5,
        items_ok: 9,
        items_failed: 2,
        bundle_bytes: 4096,
        error: Some("model.pt: bad".into()),
        plugin: "tensors".into(),
        accepts: vec!["application/x-npz".into()],
        format: "torchscript".into(),
        max_batch: 32,
        max_delay_us: 500,
        instances: 2,
    }
}

fn full_status() -> StatusReply {
    StatusReply {
        host_version: "0.1.0".into(),
        uptime_s: 77,
        models: vec![full_model_status()],
        items_cancelled: 4,
        streams_refused: 1,
        load_errors: vec![full_load_failure()],
        role: "gateway".into(),
        workers: vec![full_worker_status()],
    }
}

fn full_reply() -> AdminReply {
    AdminReply {
        op: "models".into(),
        message: "1 version".into(),
        models: vec![full_model_info()],
        errors: vec![full_load_failure()],
        elapsed_us: 321,
    }
}

fn full_item_head() -> ItemHead {
    ItemHead {
        index: 7,
        content_type: "application/x-npz".into(),
        metadata: [("run".to_string(), "12".to_string())].into_iter().collect(),
        compression: Compression::Zstd,
    }
}

fn table_cases() -> Vec<Case> {
    let full_summary = Summary {
        request_id: "req-1".into(),
        model: "tabular".into(),
        version: 1,
        ok: 3,
        failed: 1,
        timings: Timings { queue_us: 1, preprocess_us: 2, forward_us: 3, postprocess_us: 4 },
        elapsed_us: 10,
    };
    let admin = AdminHeader { token: Some("t".into()), model: Some("m".into()), version: Some(2), replace: true };
    vec![
        Case {
            after: "### Header (0x01)",
            nth: 0,
            frame: Frame::Header(RequestHeader::Predict(PredictHeader {
                model: "tabular".into(),
                version: Some(3),
                request_id: "r".into(),
                accept: vec![Compression::Zstd, Compression::None],
                deadline_ms: Some(500),
                token: Some("t".into()),
            })),
            path: &[],
        },
        Case {
            after: "### Header (0x01)",
            nth: 1,
            frame: Frame::Header(RequestHeader::Status(StatusHeader { token: Some("t".into()) })),
            path: &[],
        },
        Case { after: "### Header (0x01)", nth: 2, frame: Frame::Header(RequestHeader::Delete(admin.clone())), path: &[] },
        Case { after: "### Header (0x01)", nth: 2, frame: Frame::Header(RequestHeader::Upload(admin)), path: &[] },
        Case {
            after: "### ItemHead (inside Item 0x02 and Result 0x81)",
            nth: 0,
            frame: Frame::Item(Item { head: full_item_head(), payload: Bytes::from_static(b"xyz") }),
            path: &[],
        },
        Case {
            after: "### ItemHead (inside Item 0x02 and Result 0x81)",
            nth: 0,
            frame: Frame::Result(Item { head: full_item_head(), payload: Bytes::from_static(b"xyz") }),
            path: &[],
        },
        Case {
            after: "### ItemError (0x82)",
            nth: 0,
            frame: Frame::ItemError(ItemError {
                index: 1,
                code: ErrorCode::Busy,
                message: "model queue is full".into(),
                retry_after_ms: Some(250),
                metadata: [("event".to_string(), "17".to_string())].into_iter().collect(),
            }),
            path: &[],
        },
        Case { after: "### Summary (0x83)", nth: 0, frame: Frame::Summary(full_summary.clone()), path: &[] },
        Case { after: "### Summary (0x83)", nth: 1, frame: Frame::Summary(full_summary), path: &[Step::Key("timings")] },
        Case {
            after: "### RequestError (0x84)",
            nth: 0,
            frame: Frame::RequestError(RequestError { code: ErrorCode::UnknownModel, message: "m".into() }),
            path: &[],
        },
        Case { after: "### Status (0x85)", nth: 0, frame: Frame::Status(full_status()), path: &[] },
        Case {
            after: "#### Status `models` entries",
            nth: 0,
            frame: Frame::Status(full_status()),
            path: &[Step::Key("models"), Step::Index(0)],
        },
        Case {
            after: "#### Status `workers` entries",
            nth: 0,
            frame: Frame::Status(full_status()),
            path: &[Step::Key("workers"), Step::Index(0)],
        },
        Case {
            after: "#### LoadFailure (Status `load_errors`, Reply `errors`)",
            nth: 0,
            frame: Frame::Status(full_status()),
            path: &[Step::Key("load_errors"), Step::Index(0)],
        },
        Case {
            after: "#### LoadFailure (Status `load_errors`, Reply `errors`)",
            nth: 0,
            frame: Frame::Reply(full_reply()),
            path: &[Step::Key("errors"), Step::Index(0)],
        },
        Case { after: "### Reply (0x86)", nth: 0, frame: Frame::Reply(full_reply()), path: &[] },
        Case {
            after: "#### Reply `models` entries",
            nth: 0,
            frame: Frame::Reply(full_reply()),
            path: &[Step::Key("models"), Step::Index(0)],
        },
        Case {
            after: "#### Reply `models` entry `canary`",
            nth: 0,
            frame: Frame::Reply(full_reply()),
            path: &[Step::Key("models"), Step::Index(0), Step::Key("canary")],
        },
    ]
}

#[test]
fn field_tables_match_the_wire() {
    let doc = doc();
    for case in table_cases() {
        check_table(&doc, &case);
    }
}

#[test]
fn fully_populated_status_and_reply_round_trip() {
    for frame in [Frame::Status(full_status()), Frame::Reply(full_reply())] {
        let bytes = encode_all(std::slice::from_ref(&frame));
        assert_eq!(decode_all(&bytes).unwrap(), vec![frame]);
    }
    // Reply's `inputs` are strings such as "x: F32[-1, 4]", as documented.
    assert!(doc().contains("`\"x: F32[-1, 4]\"`"));
}
