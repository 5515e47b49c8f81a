//! tensorgate client: connect to a host over QUIC, submit items, read
//! results as they stream back. No libtorch, no wasmtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tensorgate_client::ClientError> {
//! use tensorgate_client::{Client, Trust, Submission, Input};
//! let client = Client::connect("127.0.0.1:7443".parse().unwrap(), Trust::Fingerprint("ab12…".into())).await?;
//! let reply = client.predict(Submission::new("tabular", vec![Input::json(br#"{"keys":[],"values":[]}"#.to_vec())])).await?;
//! for outcome in reply.outcomes { println!("{:?}", outcome.map(|r| r.payload.len())); }
//! # Ok(()) }
//! ```

mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, AdminHeader, AdminReply, Compression, ErrorCode, Frame, FrameDecoder, Item, ItemHead, Limits, ModelInfo,
    PredictHeader, ProtocolError, ReplyState, RequestHeader, StatusReply, Summary,
};

pub use tensorgate_protocol as protocol;

/// Payloads up to this size are copied into the coalesced write buffer.
const COPY_MAX_BYTES: usize = 64 * 1024;

/// QUIC transport settings for tensorgate traffic, shared by client and host:
/// flow-control windows sized for events of tens of MB, and path-MTU discovery
/// allowed up to jumbo datagrams (it probes, so ordinary 1500-byte paths are
/// unaffected; loopback and jumbo-frame networks send far fewer packets).
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// Largest UDP payload path-MTU discovery tries (a 9000-byte jumbo frame less headers).
pub const MTU_UPPER_BOUND: u16 = 8952;

/// How the client decides to trust the host's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Pin the SHA-256 fingerprint (hex) the host printed at start.
    Fingerprint(String),
    /// Verify the certificate chain against the CA certificates in this PEM file.
    CaFile(PathBuf),
}

/// A client certificate and its key (PEM files), for hosts that check
/// client certificates (mutual TLS).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate chain, end-entity first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to connect: whom to trust, and which credentials to present.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How to trust the host.
    pub trust: Trust,
    /// Client certificate, for hosts that check them.
    pub identity: Option<Identity>,
    /// Bearer token sent with every request (`predict` or `admin` role).
    pub token: Option<String>,
}

impl ConnectOptions {
    /// Trust as given, no credentials.
    pub fn new(trust: Trust) -> Self {
        ConnectOptions { trust, identity: None, token: None }
    }
}

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS setup failed (bad CA file, bad fingerprint syntax).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Connecting failed (includes certificate rejection).
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// Host address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The connection or stream broke.
    #[error("connection: {0}")]
    Connection(String),
    /// The host's reply broke the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The host rejected the whole request.
    #[error("request failed [{code}]: {message}")]
    Request {
        /// Error code.
        code: ErrorCode,
        /// Host's message.
        message: String,
    },
    /// The host closed the stream without a final frame.
    #[error("host closed the stream before the summary")]
    Incomplete,
    /// A bundle could not be read or packed for upload.
    #[error("bundle: {0}")]
    Bundle(String),
}

impl ClientError {
    /// The protocol error code, when the host sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Request { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<quinn::WriteError> for ClientError {
    fn from(e: quinn::WriteError) -> Self {
        ClientError::Connection(e.to_string())
    }
}

impl From<quinn::ReadError> for ClientError {
    fn from(e: quinn::ReadError) -> Self {
        ClientError::Connection(e.to_string())
    }
}

/// One item to submit.
#[derive(Debug, Clone)]
pub struct Input {
    /// Payload bytes.
    pub payload: Bytes,
    /// Content type, e.g. `application/json`.
    pub content_type: String,
    /// Metadata handed to the plugin.
    pub metadata: BTreeMap<String, String>,
}

impl Input {
    /// An item of `content_type`.
    pub fn new(payload: impl Into<Bytes>, content_type: &str) -> Self {
        Input { payload: payload.into(), content_type: content_type.to_string(), metadata: BTreeMap::new() }
    }

    /// A JSON item.
    pub fn json(payload: impl Into<Bytes>) -> Self {
        Self::new(payload, "application/json")
    }

    /// Adds a metadata entry.
    pub fn with_meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }
}

/// A predict request: a model and its items.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Header fields (model, version, request id, accepted compression, deadline).
    pub header: PredictHeader,
    /// Items, indexed in order from 0.
    pub items: Vec<Input>,
    /// zstd level for item payloads; `None` sends them raw.
    pub compress: Option<i32>,
}

impl Submission {
    /// Items for the newest version of `model`, accepting zstd replies.
    pub fn new(model: &str, items: Vec<Input>) -> Self {
        Submission {
            header: PredictHeader {
                model: model.to_string(),
                accept: vec![Compression::Zstd],
                ..PredictHeader::default()
            },
            items,
            compress: Some(tensorgate_protocol::ZSTD_LEVEL),
        }
    }

    /// Turns compression off both ways: items are sent raw and replies are
    /// requested raw.
    pub fn uncompressed(mut self) -> Self {
        self.compress = None;
        self.header.accept.clear();
        self
    }

    /// Pins a version.
    pub fn version(mut self, version: u64) -> Self {
        self.header.version = Some(version);
        self
    }
}

/// A successful item's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemReply {
    /// Item index.
    pub index: u32,
    /// Content type set by the plugin.
    pub content_type: String,
    /// Metadata set by the plugin.
    pub metadata: BTreeMap<String, String>,
    /// Payload, decompressed.
    pub payload: Bytes,
}

/// A failed item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("item {index} failed [{code}]: {message}")]
pub struct ItemFailed {
    /// Item index.
    pub index: u32,
    /// Error code.
    pub code: ErrorCode,
    /// Host's message.
    pub message: String,
    /// For `busy`: the host's suggested wait before retrying (milliseconds).
    pub retry_after_ms: Option<u64>,
}

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An item finished.
    Item(Result<ItemReply, ItemFailed>),
    /// All items finished.
    Summary(Summary),
}

/// All replies of a request, in input order.
#[derive(Debug, Clone)]
pub struct Reply {
    /// One outcome per input, in input order.
    pub outcomes: Vec<Result<ItemReply, ItemFailed>>,
    /// The host's summary.
    pub summary: Summary,
}

/// A connection to a host.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    limits: Limits,
    token: Option<String>,
}

/// Bundle bytes per `Item` frame of an upload.
const UPLOAD_CHUNK: usize = 4 << 20;

impl Client {
    /// Connects to `addr`, trusting the host as `trust` says, with no credentials.
    pub async fn connect(addr: SocketAddr, trust: Trust) -> Result<Self, ClientError> {
        Self::connect_with(addr, ConnectOptions::new(trust)).await
    }

    /// Connects to `addr` with the given trust and credentials.
    pub async fn connect_with(addr: SocketAddr, options: ConnectOptions) -> Result<Self, ClientError> {
        let crypto = tls::client_config(&options.trust, options.identity.as_ref())?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e: std::net::AddrParseError| ClientError::Tls(e.to_string()))?;
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect { addr, reason: e.to_string() })?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
        client_config.transport_config(Arc::new(transport_config()));
        endpoint.set_default_client_config(client_config);
        let conn = endpoint
            .connect(addr, "localhost")
            .map_err(|e| ClientError::Connect { addr, reason: e.to_string() })?
            .await
            .map_err(|e| ClientError::Connect { addr, reason: e.to_string() })?;
        // Replies (status, model lists) come from the host we chose to trust: allow them larger headers.
        let limits = Limits { max_header_bytes: 16 << 20, ..Limits::default() };
        Ok(Client { endpoint, conn, limits, token: options.token })
    }

    /// Sets the bearer token sent with every following request.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Submits a request and collects every reply, in input order.
    pub async fn predict(&self, submission: Submission) -> Result<Reply, ClientError> {
        let n = submission.items.len();
        let mut outcomes: Vec<Option<Result<ItemReply, ItemFailed>>> = vec![None; n];
        let summary = self
            .predict_stream(submission, |event| {
                if let Event::Item(outcome) = event {
                    let index = match &outcome {
                        Ok(r) => r.index,
                        Err(e) => e.index,
                    } as usize;
                    if let Some(slot) = outcomes.get_mut(index) {
                        *slot = Some(outcome);
                    }
                }
            })
            .await?;
        let outcomes = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| {
                    Err(ItemFailed {
                        index: i as u32,
                        code: ErrorCode::Internal,
                        message: "no reply for this item".into(),
                        retry_after_ms: None,
                    })
                })
            })
            .collect();
        Ok(Reply { outcomes, summary })
    }

    /// Submits a request and calls `on_event` for each reply as it arrives
    /// (completion order), then returns the summary.
    pub async fn predict_stream(
        &self,
        submission: Submission,
        mut on_event: impl FnMut(Event),
    ) -> Result<Summary, ClientError> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let Submission { mut header, items, compress } = submission;
        if header.token.is_none() {
            header.token = self.token.clone();
        }
        let writer = async move {
            // Small frames are coalesced into one write; large payloads go
            // straight to the stream, uncopied.
            let mut out = BytesMut::new();
            encode(&Frame::Header(RequestHeader::Predict(header)), &mut out);
            for (index, input) in items.into_iter().enumerate() {
                let (payload, compression) = match compress {
                    Some(level) => tensorgate_protocol::maybe_compress(input.payload, level),
                    None => (input.payload, Compression::None),
                };
                let head = ItemHead { index: index as u32, content_type: input.content_type, metadata: input.metadata, compression };
                let frame_head = tensorgate_protocol::encode_item_frame(
                    tensorgate_protocol::FrameKind::Item,
                    &head,
                    payload.len(),
                );
                out.extend_from_slice(&frame_head);
                if payload.len() <= COPY_MAX_BYTES {
                    out.extend_from_slice(&payload);
                } else {
                    send.write_all(&out).await?;
                    out.clear();
                    send.write_all(&payload).await?;
                }
                if out.len() >= COPY_MAX_BYTES {
                    send.write_all(&out).await?;
                    out.clear();
                }
            }
            encode(&Frame::End, &mut out);
            send.write_all(&out).await?;
            send.finish().map_err(|e| ClientError::Connection(e.to_string()))?;
            Ok::<_, ClientError>(())
        };
        let limits = self.limits;
        let reader = async move {
            let mut decoder = FrameDecoder::new(limits);
            let mut state = ReplyState::new();
            loop {
                while let Some(frame) = decoder.decode()? {
                    match state.on_frame(frame)? {
                        Frame::Result(item) => on_event(Event::Item(Ok(item_reply(item, limits)?))),
                        Frame::ItemError(e) => {
                            on_event(Event::Item(Err(ItemFailed {
                                index: e.index,
                                code: e.code,
                                message: e.message,
                                retry_after_ms: e.retry_after_ms,
                            })))
                        }
                        Frame::Summary(s) => {
                            on_event(Event::Summary(s.clone()));
                            return Ok(s);
                        }
                        Frame::RequestError(e) => return Err(ClientError::Request { code: e.code, message: e.message }),
                        _ => return Err(ClientError::Incomplete),
                    }
                }
                match recv.read_chunk(1 << 20, true).await? {
                    Some(chunk) => decoder.feed(&chunk.bytes),
                    None => return Err(ClientError::Incomplete),
                }
            }
        };
        // Write and read concurrently: replies stream back while items are still going out.
        let (written, summary) = tokio::join!(writer, reader);
        settle(written, summary)
    }

    /// Opens a raw bidirectional stream, for tools and tests that speak the
    /// protocol themselves.
    pub async fn open_raw(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        self.conn.open_bi().await.map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Asks the host for its status.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let mut out = BytesMut::new();
        let header = RequestHeader::Status(tensorgate_protocol::StatusHeader { token: self.token.clone() });
        encode(&Frame::Header(header), &mut out);
        encode(&Frame::End, &mut out);
        send.write_all(&out).await?;
        send.finish().map_err(|e| ClientError::Connection(e.to_string()))?;
        let mut decoder = FrameDecoder::new(self.limits);
        loop {
            if let Some(frame) = decoder.decode()? {
                return match frame {
                    Frame::Status(s) => Ok(s),
                    Frame::RequestError(e) => Err(ClientError::Request { code: e.code, message: e.message }),
                    other => Err(ProtocolError::UnexpectedFrame { got: other.kind().name(), state: "in a status reply" }.into()),
                };
            }
            match recv.read_chunk(1 << 20, true).await? {
                Some(chunk) => decoder.feed(&chunk.bytes),
                None => return Err(ClientError::Incomplete),
            }
        }
    }

    fn admin_header(&self, model: Option<&str>, version: Option<u64>) -> AdminHeader {
        AdminHeader { token: self.token.clone(), model: model.map(str::to_string), version, replace: false }
    }

    /// Lists every application version on the host: loaded (`ready`) and
    /// bundles that failed to load (`failed`, with the error). Needs admin.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let header = RequestHeader::Models(self.admin_header(None, None));
        Ok(self.admin(header, Vec::new()).await?.0.models)
    }

    /// Uploads a bundle — a directory holding `manifest.toml` (packed here)
    /// or a `.tar.zst` archive of one — and waits until the host has loaded
    /// it and serves it. `replace` overwrites an existing bundle of the same
    /// name and version. Needs admin.
    pub async fn upload(&self, path: &std::path::Path, replace: bool) -> Result<AdminReply, ClientError> {
        let archive = if path.is_dir() {
            let dir = path.to_path_buf();
            tokio::task::spawn_blocking(move || pack_bundle(&dir))
                .await
                .map_err(|e| ClientError::Bundle(e.to_string()))?
                .map_err(|e| ClientError::Bundle(format!("packing {}: {e}", path.display())))?
        } else {
            tokio::fs::read(path).await.map_err(|e| ClientError::Bundle(format!("{}: {e}", path.display())))?
        };
        self.upload_archive(Bytes::from(archive), replace).await
    }

    /// Uploads a bundle already packed as `.tar.zst` (see [`pack_bundle`]).
    pub async fn upload_archive(&self, archive: Bytes, replace: bool) -> Result<AdminReply, ClientError> {
        let mut header = self.admin_header(None, None);
        header.replace = replace;
        let chunks = (0..archive.len().div_ceil(UPLOAD_CHUNK))
            .map(|i| archive.slice(i * UPLOAD_CHUNK..((i + 1) * UPLOAD_CHUNK).min(archive.len())))
            .collect();
        Ok(self.admin(RequestHeader::Upload(header), chunks).await?.0)
    }

    /// Downloads a bundle (the newest version when `version` is `None`) as a
    /// `.tar.zst` archive. Needs admin.
    pub async fn fetch(&self, model: &str, version: Option<u64>) -> Result<Bytes, ClientError> {
        let header = RequestHeader::Fetch(self.admin_header(Some(model), version));
        Ok(self.admin(header, Vec::new()).await?.1)
    }

    /// Removes a version of a model, or every version when `version` is
    /// `None`. Requests already running finish first. Needs admin.
    pub async fn delete(&self, model: &str, version: Option<u64>) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Delete(self.admin_header(Some(model), version));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    /// Makes the host re-read its repository on disk (one model or all) and
    /// load what changed; failures are listed in the reply's `errors` and
    /// leave the versions that served before serving. Needs admin.
    pub async fn reload(&self, model: Option<&str>) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Reload(self.admin_header(model, None));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    /// Sends a management request (with `chunks` as its items) and reads its
    /// reply: the final `Reply` and the payloads of any `Result` frames before it.
    async fn admin(&self, header: RequestHeader, chunks: Vec<Bytes>) -> Result<(AdminReply, Bytes), ClientError> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let writer = async move {
            let mut out = BytesMut::new();
            encode(&Frame::Header(header), &mut out);
            for (index, chunk) in chunks.into_iter().enumerate() {
                let head = ItemHead {
                    index: index as u32,
                    content_type: "application/x-tar+zstd".into(),
                    ..ItemHead::default()
                };
                out.extend_from_slice(&tensorgate_protocol::encode_item_frame(
                    tensorgate_protocol::FrameKind::Item,
                    &head,
                    chunk.len(),
                ));
                send.write_all(&out).await?;
                out.clear();
                send.write_all(&chunk).await?;
            }
            encode(&Frame::End, &mut out);
            send.write_all(&out).await?;
            send.finish().map_err(|e| ClientError::Connection(e.to_string()))?;
            Ok::<_, ClientError>(())
        };
        let limits = self.limits;
        let reader = async move {
            let mut decoder = FrameDecoder::new(limits);
            let mut state = ReplyState::new();
            let mut payload = BytesMut::new();
            loop {
                while let Some(frame) = decoder.decode()? {
                    match state.on_frame(frame)? {
                        Frame::Result(item) => payload.extend_from_slice(&item.decompressed(limits.max_item_bytes)?),
                        Frame::Reply(r) => return Ok((r, payload.freeze())),
                        Frame::RequestError(e) => return Err(ClientError::Request { code: e.code, message: e.message }),
                        other => {
                            return Err(ProtocolError::UnexpectedFrame { got: other.kind().name(), state: "in a management reply" }.into())
                        }
                    }
                }
                match recv.read_chunk(1 << 20, true).await? {
                    Some(chunk) => decoder.feed(&chunk.bytes),
                    None => return Err(ClientError::Incomplete),
                }
            }
        };
        let (written, reply) = tokio::join!(writer, reader);
        settle(written, reply)
    }

    /// Closes the connection and waits briefly for the host to acknowledge.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// The outcome of a request whose writing and reading ran concurrently: the
/// reply if one came; else the host's own rejection, which explains a failed
/// write better than the write error; else whichever side failed.
fn settle<T>(written: Result<(), ClientError>, read: Result<T, ClientError>) -> Result<T, ClientError> {
    match (written, read) {
        (_, Ok(r)) => Ok(r),
        (_, Err(e @ ClientError::Request { .. })) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// Packs the bundle directory `dir` (manifest, model, plugin, any other
/// files) into a `.tar.zst` archive with the files at its root, as `upload`
/// sends it and `fetch` returns it.
pub fn pack_bundle(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if !dir.join("manifest.toml").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} has no manifest.toml: not a bundle directory", dir.display()),
        ));
    }
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()
}

fn item_reply(item: Item, limits: Limits) -> Result<ItemReply, ClientError> {
    let payload = item.decompressed(limits.max_item_bytes)?;
    Ok(ItemReply { index: item.head.index, content_type: item.head.content_type, metadata: item.head.metadata, payload })
}
