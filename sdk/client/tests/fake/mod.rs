//! A minimal in-process host that speaks the protocol (no libtorch, no
//! plugins), for the client's and the command line's tests: predict echoes
//! each item (a payload `fail` fails, a payload `hang` is never answered
//! and keeps the request open), status and management answer canned
//! replies. [`Relay`] stands between a client and it and can go silent, as
//! a killed host does. Shared by path (`#[path]`) with sdk/cli/tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tensorgate_client::protocol::{
    encode, AdminReply, ErrorCode, Frame, FrameDecoder, Item, ItemError, ItemHead, Limits, RequestError, RequestHeader,
    RequestState, StatusReply, Summary,
};

/// Bytes of archive a fetch returns, in two Result frames.
pub const FETCHED: &[u8] = b"tar-zst-archive-bytes";

/// Starts the fake host on 127.0.0.1; returns its address and certificate fingerprint.
pub async fn start_host() -> (SocketAddr, String) {
    start(true).await
}

/// Starts a fake host that answers `hang` items like any other (echoed).
pub async fn start_host_holding_nothing() -> (SocketAddr, String) {
    start(false).await
}

/// Starts the fake host; `hold`: whether `hang` items are held.
async fn start(hold: bool) -> (SocketAddr, String) {
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
                    tokio::spawn(serve(send, recv, hold));
                }
            });
        }
    });
    (addr, fingerprint)
}

/// Reads one whole request (order checked as the host does), then answers it.
async fn serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream, hold: bool) {
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
            let mut hang = false;
            // Answered in reverse order, to show completion order reaches the caller.
            for item in items.iter().rev() {
                match item.decompressed(limits.max_item_bytes) {
                    Ok(payload) if hold && &payload[..] == b"hang" => hang = true,
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
            if hang {
                // Some items are held: answer the others, then keep the
                // request open until the client goes away.
                let _ = send.write_all(&out).await;
                let _ = send.stopped().await;
                return;
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


/// A UDP relay in front of a host: forwards both ways until [`Relay::cut`],
/// then drops every datagram, so the host seems to have died (no reply,
/// no close: the client notices only by its idle timeout, as after a
/// SIGKILL). One client at a time.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay on 127.0.0.1 to `host`.
    pub async fn start(host: SocketAddr) -> Relay {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the relay");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the relay's upstream side");
        let addr = front.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let silent = cut.clone();
        let task = tokio::spawn(async move {
            let (mut from_client, mut from_host) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    got = front.recv_from(&mut from_client) => {
                        let Ok((n, peer)) = got else { return };
                        client = Some(peer);
                        if !silent.load(Ordering::SeqCst) {
                            let _ = back.send_to(&from_client[..n], host).await;
                        }
                    }
                    got = back.recv_from(&mut from_host) => {
                        let Ok((n, _)) = got else { return };
                        if let (Some(peer), false) = (client, silent.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&from_host[..n], peer).await;
                        }
                    }
                }
            }
        });
        Relay { addr, cut, task }
    }

    /// From now on nothing passes, either way.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
