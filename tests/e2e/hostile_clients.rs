//! Hostile clients: a client that never reads its replies, and garbage on
//! the wire. (Disconnects, stream floods, oversized frames and bad
//! credentials are covered in protocol.rs and management.rs.)

use std::time::Duration;

use bytes::BytesMut;
use tensorgate_client::protocol::{encode, ErrorCode, Frame, FrameDecoder, Limits, PredictHeader, RequestHeader};
use tensorgate_client::{Input, Submission};
use tensorgate_tests::{repository_with_hostile, root, rss_bytes, TestHost};

async fn still_serving(host: &TestHost) {
    let client = host.client().await;
    let jet = std::fs::read(root().join("plugins/tabular/samples/jet-0.json")).unwrap();
    let reply = client.predict(Submission::new("tabular", vec![Input::json(jet)])).await.expect("host still serves");
    assert_eq!(reply.summary.ok, 1);
    client.close().await;
}

/// 400 results of 1 MB each for a client that reads none of them: QUIC flow
/// control stops the host's writes, the host stops taking items, and memory
/// stays far below the 400 MB the replies would need.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_costs_bounded_memory() {
    let repo = repository_with_hostile();
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| c.front.max_items_in_flight = 16).await;
    let client = host.client().await;
    let (mut send, recv) = client.open_raw().await.unwrap();
    let mut req = BytesMut::new();
    let header = PredictHeader { model: "hostile".into(), ..Default::default() };
    encode(&Frame::Header(RequestHeader::Predict(header)), &mut req);
    for index in 0..400u32 {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("mode".to_string(), "huge-output".to_string());
        meta.insert("bytes".to_string(), "1000000".to_string());
        let head = tensorgate_client::protocol::ItemHead { index, content_type: "application/json".into(), metadata: meta, ..Default::default() };
        encode(&Frame::Item(tensorgate_client::protocol::Item { head, payload: bytes::Bytes::from_static(b"{}") }), &mut req);
    }
    encode(&Frame::End, &mut req);
    let before = rss_bytes();
    send.write_all(&req).await.unwrap();
    send.finish().unwrap();
    let mut peak = 0;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_bytes().saturating_sub(before));
    }
    let status = client.status().await.unwrap();
    let hostile = status.models.iter().find(|m| m.name == "hostile").unwrap();
    eprintln!("stalled reader: {} items done, RSS +{:.1} MB", hostile.items_ok, peak as f64 / 1e6);
    assert!(hostile.items_ok < 100, "{} items processed for a client reading nothing", hostile.items_ok);
    assert!(peak < 150_000_000, "RSS grew {:.0} MB", peak as f64 / 1e6);
    still_serving(&host).await;
    drop(recv); // walk away
    drop(send);
    client.close().await;
    host.stop().await;
}

/// Random bytes as UDP datagrams and as a request stream: the host answers
/// the stream with `bad_request`, ignores the datagrams, and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_bytes_are_refused_and_change_nothing() {
    let repo = repository_with_hostile();
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..2000 {
        udp.send_to(&noise(1 + i % 1400), host.host.addr()).await.unwrap();
    }
    for seed in 0..20 {
        let client = host.client().await;
        let (mut send, mut recv) = client.open_raw().await.unwrap();
        let mut junk = noise(64 + seed * 97);
        junk[0] = 0x01; // a Header kind, so the body is what is wrong ...
        if seed % 2 == 0 {
            junk[0] = 0x7f; // ... or an unknown kind
        }
        let _ = send.write_all(&junk).await;
        let _ = send.finish();
        let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20)).await.unwrap().unwrap_or_default();
        let mut dec = FrameDecoder::new(Limits::default());
        dec.feed(&reply);
        match dec.decode() {
            Ok(Some(Frame::RequestError(e))) => {
                assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::LimitExceeded), "{e:?}");
            }
            other => panic!("seed {seed}: expected a RequestError, got {other:?}"),
        }
        client.close().await;
    }
    still_serving(&host).await;
    host.stop().await;
}
