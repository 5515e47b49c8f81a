//! Golden bytes of the worked example in `docs/protocol.md`.
//!
//! The frames of the example are encoded with the crate's public API and
//! compared with hex literals; the annotated hex dumps in the document are
//! parsed and compared with the same literals, so the document cannot drift
//! from the code. The remaining tests pin down the decoding rules the
//! document states (defaults, unknown fields, unknown codes).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, Compression, ErrorCode, Frame, FrameDecoder, Item, ItemHead, Limits, PredictHeader, ProtocolError,
    RequestError, RequestHeader, Summary, Timings, ALPN,
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
    assert!(s.len() % 2 == 0, "odd number of hex digits");
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
