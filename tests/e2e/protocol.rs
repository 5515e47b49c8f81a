//! Wire protocol v1 against a real host: many items, cancellation, limits,
//! malformed input. Each violation must fail only its own request (or item)
//! with an error that names what was wrong, while the host keeps serving.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tensorgate_client::protocol::{
    compress, encode, encode_item_frame, Compression, ErrorCode, Frame, FrameDecoder, FrameKind, ItemHead, Limits,
    PredictHeader, RequestHeader,
};
use tensorgate_client::{Client, Event, Input, Submission};
use tensorgate_tests::{repository, root, TestHost};

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn good_item() -> Input {
    Input::json(serde_json::to_vec(&cases()[0]["request"]).unwrap())
}

/// Header + items as raw bytes (no End), for tests that misbehave on purpose.
fn raw_request(model: &str, items: &[(u32, Bytes, Compression)]) -> BytesMut {
    raw_request_as(model, "application/json", items)
}

/// [`raw_request`] with items of `content_type`.
fn raw_request_as(model: &str, content_type: &str, items: &[(u32, Bytes, Compression)]) -> BytesMut {
    let mut out = BytesMut::new();
    encode(&Frame::Header(RequestHeader::Predict(PredictHeader { model: model.into(), ..Default::default() })), &mut out);
    for (index, payload, compression) in items {
        let head = ItemHead { index: *index, content_type: content_type.into(), compression: *compression, ..Default::default() };
        out.extend_from_slice(&encode_item_frame(FrameKind::Item, &head, payload.len()));
        out.extend_from_slice(payload);
    }
    out
}

/// Reads frames from `recv` until the stream ends.
async fn read_frames(recv: &mut quinn::RecvStream) -> Vec<Frame> {
    let bytes = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(64 << 20)).await.expect("reply in time").expect("read");
    let mut dec = FrameDecoder::new(Limits::default());
    dec.feed(&bytes);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode().expect("host sends valid frames") {
        frames.push(f);
    }
    frames
}

async fn assert_still_serving(host: &TestHost) {
    let other = host.client().await;
    let reply = other.predict(Submission::new("tabular", vec![good_item()])).await.expect("host still serves");
    assert_eq!(reply.summary.ok, 1);
    other.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_items_each_answered_exactly_once_and_mapped_right() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let cases = cases();
    let items: Vec<Input> = (0..1000).map(|i| Input::json(serde_json::to_vec(&cases[i % cases.len()]["request"]).unwrap())).collect();
    let mut seen: HashMap<u32, f64> = HashMap::new();
    let mut order = Vec::new();
    let summary = client
        .predict_stream(Submission::new("tabular", items), |event| {
            if let Event::Item(outcome) = event {
                let r = outcome.expect("item ok");
                let v: Value = serde_json::from_slice(&r.payload).unwrap();
                assert!(seen.insert(r.index, v["w"].as_f64().unwrap()).is_none(), "index {} answered twice", r.index);
                order.push(r.index);
            }
        })
        .await
        .unwrap();
    assert_eq!(summary.ok, 1000);
    assert_eq!(seen.len(), 1000);
    for (i, w) in &seen {
        let want = cases[*i as usize % cases.len()]["scores"]["w"].as_f64().unwrap();
        assert!((w - want).abs() < 1e-5, "item {i} got the result of another input");
    }
    assert!(summary.timings.preprocess_us > 0 && summary.timings.postprocess_us > 0);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cancelling_mid_stream_cancels_the_remaining_work() {
    // The slow test model (~2 ms per item, one item per forward): items are
    // still queued and running when the client walks away, however fast the
    // host's own path is.
    let repo = tensorgate_tests::repository_with_slow();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let x = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![1, 256], 0.5f32.to_le_bytes().repeat(256)).unwrap();
    let item = Bytes::from(tensorgate_plugin::npy::write_npy(&x));
    const N: u32 = 2_000;
    let items: Vec<(u32, Bytes, Compression)> = (0..N).map(|i| (i, item.clone(), Compression::None)).collect();
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    let request = raw_request_as("slow", "application/x-npy", &items);
    // Wait for the first reply, then walk away, while the items may still be
    // being sent (the host reads a request only as fast as it runs its items).
    let mut first = [0u8; 1];
    {
        let write = send.write_all(&request);
        tokio::pin!(write);
        tokio::select! {
            read = recv.read_exact(&mut first) => read.unwrap(),
            written = &mut write => {
                written.unwrap();
                recv.read_exact(&mut first).await.unwrap();
            }
        }
    }
    send.reset(0u32.into()).unwrap();
    recv.stop(0u32.into()).unwrap();
    let mut cancelled = 0;
    for _ in 0..100 {
        cancelled = client.status().await.unwrap().items_cancelled;
        if cancelled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cancelled > 0, "host reports no cancelled items");
    let status = client.status().await.unwrap();
    let slow = status.models.iter().find(|m| m.name == "slow").expect("slow model");
    assert!(slow.items_ok < N as u64, "all items ran although the client left");
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_item_is_refused_naming_the_limit() {
    let host = TestHost::start_with(repository(), |c| c.front.limits.max_frame_bytes = 4096).await;
    let client = host.client().await;
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    let big = Bytes::from(vec![b' '; 8192]);
    let _ = send.write_all(&raw_request("tabular", &[(0, big, Compression::None)])).await;
    let frames = read_frames(&mut recv).await;
    match frames.as_slice() {
        [Frame::RequestError(e)] => {
            assert_eq!(e.code, ErrorCode::LimitExceeded);
            assert!(e.message.contains("max_frame_bytes = 4096"), "{}", e.message);
        }
        other => panic!("expected one RequestError, got {other:?}"),
    }
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_bomb_fails_its_item_only() {
    let host = TestHost::start_with(repository(), |c| c.front.limits.max_item_bytes = 1 << 20).await;
    let client = host.client().await;
    let bomb = compress(&vec![b' '; 64 << 20], 3); // 64 MiB of spaces in ~2 KiB
    assert!(bomb.len() < 64 * 1024);
    let good = Bytes::from(serde_json::to_vec(&cases()[0]["request"]).unwrap());
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    let mut req = raw_request("tabular", &[(0, bomb, Compression::Zstd), (1, good, Compression::None)]);
    encode(&Frame::End, &mut req);
    send.write_all(&req).await.unwrap();
    send.finish().unwrap();
    let frames = read_frames(&mut recv).await;
    let mut errors = 0;
    for f in &frames {
        match f {
            Frame::ItemError(e) => {
                errors += 1;
                assert_eq!((e.index, e.code), (0, ErrorCode::LimitExceeded));
                assert!(e.message.contains("max_item_bytes"), "{}", e.message);
            }
            Frame::Result(r) => assert_eq!(r.head.index, 1),
            Frame::Summary(s) => assert_eq!((s.ok, s.failed), (1, 1)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors, 1);
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_items_are_decompressed() {
    let host = TestHost::start().await;
    let client = host.client().await;
    // Pad the JSON past the compression threshold so the client compresses it.
    let mut padded = serde_json::to_vec(&cases()[3]["request"]).unwrap();
    padded.extend(std::iter::repeat_n(b' ', 4096));
    let reply = client.predict(Submission::new("tabular", vec![Input::json(padded.clone())])).await.unwrap();
    let raw = client.predict(Submission::new("tabular", vec![Input::json(padded)]).uncompressed()).await.unwrap();
    let a = &reply.outcomes[0].as_ref().unwrap().payload;
    let b = &raw.outcomes[0].as_ref().unwrap().payload;
    assert_eq!(a, b, "compressed and raw submissions give the same result");
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_past_the_limit_are_refused_naming_it() {
    let host = TestHost::start_with(repository(), |c| c.front.max_streams_per_connection = 2).await;
    let client = host.client().await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut send, recv) = client.open_raw().await.unwrap();
        send.write_all(&raw_request("tabular", &[])).await.unwrap(); // header, no End: stays open
        held.push((send, recv));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    send.write_all(&raw_request("tabular", &[])).await.unwrap();
    let frames = read_frames(&mut recv).await;
    match frames.as_slice() {
        [Frame::RequestError(e)] => {
            assert_eq!(e.code, ErrorCode::LimitExceeded);
            assert!(e.message.contains("max_streams_per_connection = 2"), "{}", e.message);
        }
        other => panic!("expected one RequestError, got {other:?}"),
    }
    drop(held);
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_header_is_a_bad_request() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    let body = [0x81u8, 0xa2, b'o', b'p', 0xa4, b'n', b'o', b'p', b'e']; // {"op": "nope"}
    let mut bytes = vec![FrameKind::Header as u8];
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    match read_frames(&mut recv).await.as_slice() {
        [Frame::RequestError(e)] => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("malformed Header frame"), "{}", e.message);
        }
        other => panic!("expected one RequestError, got {other:?}"),
    }
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_model_connection_keeps_working() {
    let host = TestHost::start().await;
    let client: Client = host.client().await;
    assert!(client.predict(Submission::new("nope", vec![good_item()])).await.is_err());
    assert_eq!(client.predict(Submission::new("tabular", vec![good_item()])).await.unwrap().summary.ok, 1);
    client.close().await;
    host.stop().await;
}

/// §1: on a fresh connection the host grants credit for
/// `max_streams_per_connection` + 16 streams at once, so a client holding
/// 256 open requests (the default limit) gets `limit_exceeded` for each of
/// the next 16 at once instead of waiting for credit.
#[tokio::test(flavor = "multi_thread")]
async fn the_257th_open_stream_is_refused_at_once_on_a_fresh_connection() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let mut held = Vec::new();
    for _ in 0..256 {
        let (mut send, recv) = tokio::time::timeout(Duration::from_secs(10), client.open_raw()).await.expect("credit").unwrap();
        send.write_all(&raw_request("tabular", &[])).await.unwrap(); // header, no End: stays open
        held.push((send, recv));
    }
    // The host has accepted all 256 once a status request on top of them is refused.
    for extra in 0..16 {
        let opened = tokio::time::timeout(Duration::from_secs(5), client.open_raw()).await;
        let (mut send, mut recv) = opened.unwrap_or_else(|_| panic!("stream {} waited for credit", 257 + extra)).unwrap();
        send.write_all(&raw_request("tabular", &[])).await.unwrap();
        match read_frames(&mut recv).await.as_slice() {
            [Frame::RequestError(e)] => {
                assert_eq!(e.code, ErrorCode::LimitExceeded, "stream {}", 257 + extra);
                assert!(e.message.contains("max_streams_per_connection = 256"), "{}", e.message);
            }
            other => panic!("stream {}: expected one RequestError, got {other:?}", 257 + extra),
        }
    }
    drop(held);
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

/// §4: anything after End fails the request with `bad_request`, whether it
/// arrives in the same write as End or later; the host keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn frames_after_end_are_a_bad_request() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let item = Bytes::from(serde_json::to_vec(&cases()[0]["request"]).unwrap());
    for (what, tail, expect) in [
        ("an Item in the same write", true, "unexpected Item frame after End"),
        ("a second Header later", false, "unexpected Header frame after End"),
    ] {
        let (mut send, mut recv) = client.open_raw().await.unwrap();
        let mut bytes = raw_request("tabular", &[(0, item.clone(), Compression::None)]);
        encode(&Frame::End, &mut bytes);
        if tail {
            let head = ItemHead { index: 1, content_type: "application/json".into(), ..Default::default() };
            bytes.extend_from_slice(&encode_item_frame(FrameKind::Item, &head, item.len()));
            bytes.extend_from_slice(&item);
            send.write_all(&bytes).await.unwrap();
        } else {
            send.write_all(&bytes).await.unwrap();
            let mut again = BytesMut::new();
            encode(&Frame::Header(RequestHeader::status()), &mut again);
            send.write_all(&again).await.unwrap();
        }
        let _ = send.finish();
        let frames = read_frames(&mut recv).await;
        match frames.last() {
            Some(Frame::RequestError(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{what}");
                assert!(e.message.contains(expect), "{what}: {}", e.message);
            }
            // The item may have finished and the Summary gone out before the
            // second Header was read; then nothing after End was read at all.
            Some(Frame::Summary(_)) if !tail => {}
            other => panic!("{what}: expected a RequestError, got {other:?}"),
        }
        assert!(!frames.iter().any(|f| matches!(f, Frame::Summary(_))) || !tail, "{what}: no Summary after a RequestError");
    }
    // A host frame kind from a client is named, its body never decoded.
    let (mut send, mut recv) = client.open_raw().await.unwrap();
    send.write_all(&[0x81, 3, 0, 0, 0, 0xc1, 0xc1, 0xc1]).await.unwrap();
    let _ = send.finish();
    match read_frames(&mut recv).await.as_slice() {
        [Frame::RequestError(e)] => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(e.message, "unexpected Result frame from a client");
        }
        other => panic!("expected one RequestError, got {other:?}"),
    }
    assert_still_serving(&host).await;
    client.close().await;
    host.stop().await;
}

/// A host killed (SIGKILL) with two requests in flight: both fail within
/// the client's dead-peer timeout (not QUIC's default 30 s), each naming
/// exactly the items that got no answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_host_is_noticed_quickly_and_unanswered_items_are_named() {
    let bin = root().join("target/release/tensorgate-host");
    assert!(bin.exists(), "{} not built", bin.display());
    let repo = tensorgate_tests::repository_with_slow();
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .arg("--repository")
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = state.path().join("listening");
    let mut addr = None;
    for _ in 0..1500 {
        if let Ok(a) = std::fs::read_to_string(&listening) {
            addr = Some(a.parse::<std::net::SocketAddr>().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("host did not start");
    };
    let fp = std::fs::read_to_string(state.path().join("fingerprint")).unwrap();
    let client = std::sync::Arc::new(Client::connect(addr, tensorgate_client::Trust::Fingerprint(fp)).await.unwrap());
    let x = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![1, 256], 0.5f32.to_le_bytes().repeat(256)).unwrap();
    let sample = tensorgate_plugin::npy::write_npy(&x);
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let items: Vec<Input> = (0..400).map(|_| Input::new(sample.clone(), "application/x-npy")).collect();
            tokio::spawn(async move { client.predict(Submission::new("slow", items)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill().unwrap(); // SIGKILL: no goodbye, the socket just goes silent
    let killed = std::time::Instant::now();
    let _ = child.wait();
    for r in requests {
        let e = r.await.unwrap().expect_err("a request on a killed host fails");
        let waited = killed.elapsed();
        assert!(waited < tensorgate_client::DEAD_PEER_TIMEOUT + Duration::from_secs(3), "noticed after {waited:?}");
        match &e {
            tensorgate_client::ClientError::Unanswered { total, unanswered, .. } => {
                assert_eq!(*total, 400);
                assert!(!unanswered.is_empty() && unanswered.iter().all(|&i| i < 400), "{unanswered:?}");
                assert!(unanswered.windows(2).all(|w| w[0] < w[1]), "ascending, each once");
                assert!(e.to_string().contains("got no answer"), "{e}");
            }
            other => panic!("expected Unanswered, got {other}"),
        }
    }
}
