//! The client over real QUIC against a minimal in-process host that speaks
//! the protocol (no libtorch, no plugins): predict echoes each item, status
//! and management answer canned replies. Checks the one write path (the
//! coalescing FrameWriter, large payloads alone) and the one reply loop.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tensorgate_client::protocol::{
    encode, AdminReply, ErrorCode, Frame, FrameDecoder, Item, ItemError, ItemHead, Limits, RequestError, RequestHeader,
    RequestState, StatusReply, Summary, COPY_MAX_BYTES,
};
use tensorgate_client::{Client, ClientError, Event, Input, Submission, Trust};

/// Bytes of archive a fetch returns, in two Result frames.
const FETCHED: &[u8] = b"tar-zst-archive-bytes";

/// Starts the fake host on 127.0.0.1; returns its address and certificate fingerprint.
async fn start_host() -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = certified.cert.der().clone();
    let fingerprint = hex::encode(Sha256::digest(cert.as_ref()));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server certificate");
    tls.alpn_protocols = vec![tensorgate_client::protocol::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(tensorgate_client::transport_config()));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let addr = endpoint.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(serve(send, recv));
                }
            });
        }
    });
    (addr, fingerprint)
}

/// Reads one whole request (order checked as the host does), then answers it.
async fn serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let limits = Limits::default();
    let mut decoder = FrameDecoder::from_client(limits);
    let mut state = RequestState::new(limits);
    let mut header = None;
    let mut items = Vec::new();
    'read: loop {
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => match state.on_frame(frame) {
                    Ok(Frame::Header(h)) => header = Some(h),
                    Ok(Frame::Item(item)) => items.push(item),
                    Ok(Frame::End) => break 'read,
                    Ok(_) => {}
                    Err(e) => return reject(send, ErrorCode::BadRequest, &e.to_string()).await,
                },
                Ok(None) => break,
                Err(e) => return reject(send, ErrorCode::BadRequest, &e.to_string()).await,
            }
        }
        match recv.read_chunk(1 << 20, true).await {
            Ok(Some(chunk)) => decoder.feed(&chunk.bytes),
            _ => return,
        }
    }
    let mut out = BytesMut::new();
    match header {
        Some(RequestHeader::Predict(h)) if h.model == "missing" => {
            return reject(send, ErrorCode::UnknownModel, "no application `missing`").await
        }
        Some(RequestHeader::Predict(h)) => {
            let mut ok = 0;
            let mut failed = 0;
            // Answered in reverse order, to show completion order reaches the caller.
            for item in items.iter().rev() {
                match item.decompressed(limits.max_item_bytes) {
                    Ok(payload) if &payload[..] != b"fail" => {
                        ok += 1;
                        let head = ItemHead { index: item.head.index, content_type: item.head.content_type.clone(), metadata: item.head.metadata.clone(), ..ItemHead::default() };
                        encode(&Frame::Result(Item { head, payload }), &mut out);
                    }
                    _ => {
                        failed += 1;
                        let e = ItemError { index: item.head.index, code: ErrorCode::PluginError, message: "asked to fail".into(), retry_after_ms: None, metadata: Default::default() };
                        encode(&Frame::ItemError(e), &mut out);
                    }
                }
            }
            encode(&Frame::Summary(Summary { model: h.model, ok, failed, request_id: h.request_id, ..Summary::default() }), &mut out);
        }
        Some(RequestHeader::Status(_)) => {
            encode(&Frame::Status(StatusReply { host_version: "fake".into(), uptime_s: 7, ..StatusReply::default() }), &mut out)
        }
        Some(RequestHeader::Upload(h)) => {
            let bytes: usize = items.iter().map(|i| i.payload.len()).sum();
            let indices: Vec<u32> = items.iter().map(|i| i.head.index).collect();
            let message = format!("{bytes} bytes in {} chunks {indices:?} replace={}", items.len(), h.replace);
            encode(&Frame::Reply(AdminReply { op: "upload".into(), message, ..AdminReply::default() }), &mut out);
        }
        Some(RequestHeader::Fetch(h)) => {
            let (a, b) = FETCHED.split_at(7);
            for (index, part) in [a, b].into_iter().enumerate() {
                let head = ItemHead { index: index as u32, ..ItemHead::default() };
                encode(&Frame::Result(Item { head, payload: Bytes::copy_from_slice(part) }), &mut out);
            }
            let message = format!("{} {:?}", h.model.unwrap_or_default(), h.version);
            encode(&Frame::Reply(AdminReply { op: "fetch".into(), message, ..AdminReply::default() }), &mut out);
        }
        Some(RequestHeader::Models(_)) => {
            // A predict-style frame in a management reply: the client must refuse it.
            encode(&Frame::Summary(Summary::default()), &mut out);
        }
        _ => return reject(send, ErrorCode::Unsupported, "not in the fake host").await,
    }
    let _ = send.write_all(&out).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn reject(mut send: quinn::SendStream, code: ErrorCode, message: &str) {
    let mut out = BytesMut::new();
    encode(&Frame::RequestError(RequestError { code, message: message.into() }), &mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn client() -> Client {
    let (addr, fingerprint) = start_host().await;
    Client::connect(addr, Trust::Fingerprint(fingerprint)).await.expect("connect")
}

#[tokio::test]
async fn predict_collects_small_large_compressed_and_failed_items_in_input_order() {
    let client = client().await;
    let large = Bytes::from((0..COPY_MAX_BYTES * 3 + 5).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let items = vec![
        Input::json(&b"{\"a\": 1}"[..]).with_meta("run", "7"),
        Input::new(large.clone(), "application/octet-stream"),
        Input::new(&b"fail"[..], "text/plain"),
        Input::new(vec![0u8; COPY_MAX_BYTES], "application/x-npy"),
    ];
    for submission in [Submission::new("echo", items.clone()), Submission::new("echo", items.clone()).uncompressed()] {
        let reply = client.predict(submission).await.expect("predict");
        assert_eq!((reply.summary.ok, reply.summary.failed, reply.summary.model.as_str()), (3, 1, "echo"));
        let ok = |i: usize| reply.outcomes[i].as_ref().expect("ok");
        assert_eq!((&ok(0).payload[..], ok(0).metadata.get("run").map(String::as_str)), (&b"{\"a\": 1}"[..], Some("7")));
        assert_eq!(ok(1).payload, large);
        assert_eq!(ok(1).content_type, "application/octet-stream");
        let failed = reply.outcomes[2].as_ref().expect_err("fails");
        assert_eq!((failed.index, failed.code), (2, ErrorCode::PluginError));
        assert_eq!(ok(3).payload.len(), COPY_MAX_BYTES);
    }
    client.close().await;
}

#[tokio::test]
async fn predict_stream_reports_completion_order_then_the_summary() {
    let client = client().await;
    let items = (0..5).map(|i| Input::json(format!("{{\"i\": {i}}}").into_bytes())).collect();
    let mut events = Vec::new();
    let summary = client.predict_stream(Submission::new("echo", items), |e| events.push(e)).await.expect("stream");
    let order: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Item(Ok(r)) => Some(r.index),
            _ => None,
        })
        .collect();
    assert_eq!(order, [4, 3, 2, 1, 0]);
    assert_eq!(events.last(), Some(&Event::Summary(summary.clone())));
    assert_eq!(summary.ok, 5);
    // Nothing to send is a valid request too.
    assert_eq!(client.predict(Submission::new("echo", Vec::new())).await.expect("empty").summary.ok, 0);
    client.close().await;
}

#[tokio::test]
async fn a_request_error_is_the_hosts_code_and_message() {
    let client = client().await;
    let e = client.predict(Submission::new("missing", vec![Input::json(&b"{}"[..])])).await.expect_err("rejected");
    assert_eq!(e.code(), Some(ErrorCode::UnknownModel));
    assert!(e.to_string().contains("no application `missing`"), "{e}");
    let e = client.reload(None).await.expect_err("unsupported");
    assert_eq!(e.code(), Some(ErrorCode::Unsupported));
    client.close().await;
}

#[tokio::test]
async fn status_and_management_go_through_the_same_exchange() {
    let mut client = client().await;
    client.set_token(Some("secret".into()));
    let status = client.status().await.expect("status");
    assert_eq!((status.host_version.as_str(), status.uptime_s), ("fake", 7));
    // 9 MiB + 5: three upload chunks of at most 4 MiB, indexed from 0.
    let archive = Bytes::from(vec![3u8; (9 << 20) + 5]);
    let reply = client.upload_archive(archive, true).await.expect("upload");
    assert_eq!(reply.message, format!("{} bytes in 3 chunks [0, 1, 2] replace=true", (9 << 20) + 5));
    let fetched = client.fetch("tabular", Some(2)).await.expect("fetch");
    assert_eq!(&fetched[..], FETCHED);
    let e = client.models().await.expect_err("a Summary is no management reply");
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("Summary"), "{e}");
    client.close().await;
}
