//! Connecting to a host (TLS trust, client credentials, QUIC settings) and
//! the one request/reply exchange every operation goes through: frames out
//! through the shared [`FrameWriter`] coalescing rule, reply frames in
//! through one reading loop checked by [`ReplyState`].

mod tls;

pub use tls::{Identity, Trust};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tensorgate_protocol::{
    Frame, FrameDecoder, FrameKind, FrameWriter, ItemHead, Limits, ReplyState, RequestHeader,
};

use crate::error::ClientError;

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

/// How often a client pings an otherwise quiet connection.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);
/// A client gives up on a host it has heard nothing from (not even an
/// acknowledgement of its pings) for this long: a host killed mid-request is
/// noticed within it, not after QUIC's default 30 s. QUIC uses the smaller
/// of both peers' idle timeouts, and the client's pings keep a live
/// connection from ever idling out.
pub const DEAD_PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// Largest UDP payload path-MTU discovery tries (a 9000-byte jumbo frame less headers).
pub const MTU_UPPER_BOUND: u16 = 8952;

/// Most bytes taken from the stream per read of a reply.
const READ_CHUNK_BYTES: usize = 1 << 20;

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

/// A connection to a host. Requests run concurrently, one QUIC stream each.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    limits: Limits,
    token: Option<String>,
}

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
        let mut transport = transport_config();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(DEAD_PEER_TIMEOUT).ok());
        client_config.transport_config(Arc::new(transport));
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

    /// The bearer token sent with requests, if any.
    pub(crate) fn token(&self) -> Option<&String> {
        self.token.as_ref()
    }

    /// Limits applied to the host's replies.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The host's address.
    pub fn address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Opens a raw bidirectional stream, for tools and tests that speak the
    /// protocol themselves.
    pub async fn open_raw(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        Ok(self.conn.open_bi().await?)
    }

    /// Closes the connection and waits briefly for the host to acknowledge.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Runs one request on a new stream: sends `header`, the `items` (as
    /// `Item` frames, produced lazily while earlier ones are written) and
    /// `End`, while reading the reply concurrently: each frame, checked
    /// for order, goes to `on_frame` until it returns the final value. A
    /// `RequestError` from the host ends the exchange as
    /// [`ClientError::Request`].
    pub(crate) async fn exchange<T, I, F>(&self, header: RequestHeader, items: I, on_frame: F) -> Result<T, ClientError>
    where
        I: IntoIterator<Item = (ItemHead, Bytes)>,
        F: FnMut(Frame) -> Result<Option<T>, ClientError>,
    {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let writer = async move {
            let mut out = FrameWriter::new();
            out.frame(&Frame::Header(header));
            for (head, payload) in items {
                out.item(FrameKind::Item, &head, payload);
                if out.should_flush() {
                    send.write_all_chunks(&mut out.take()).await?;
                }
            }
            out.frame(&Frame::End);
            send.write_all_chunks(&mut out.take()).await?;
            send.finish()?;
            Ok::<_, ClientError>(())
        };
        let reader = read_reply(&mut recv, self.limits, on_frame);
        // Write and read concurrently: replies stream back while items are still going out.
        let (written, read) = tokio::join!(writer, reader);
        settle(written, read)
    }
}

/// The one reply-reading loop: pumps bytes from `recv` into a
/// [`ReplyReader`] and hands every frame but a `RequestError` to `on_frame`
/// until it returns a value. A stream that ends first is
/// [`ClientError::Incomplete`].
async fn read_reply<T>(
    recv: &mut quinn::RecvStream,
    limits: Limits,
    mut on_frame: impl FnMut(Frame) -> Result<Option<T>, ClientError>,
) -> Result<T, ClientError> {
    let mut reader = ReplyReader::new(limits);
    loop {
        while let Some(frame) = reader.next_frame()? {
            if let Some(done) = on_frame(frame)? {
                return Ok(done);
            }
        }
        match recv.read_chunk(READ_CHUNK_BYTES, true).await? {
            Some(chunk) => reader.feed(&chunk.bytes),
            None => return Err(ClientError::Incomplete),
        }
    }
}

/// The host's reply frames from bytes, sans-IO: decoded under the client's
/// limits (host frame kinds only), checked for order ([`ReplyState`]), a
/// `RequestError` turned into [`ClientError::Request`].
pub(crate) struct ReplyReader {
    decoder: FrameDecoder,
    state: ReplyState,
}

impl ReplyReader {
    /// A reader for one reply.
    pub(crate) fn new(limits: Limits) -> Self {
        ReplyReader { decoder: FrameDecoder::from_host(limits), state: ReplyState::new() }
    }

    /// Adds bytes read from the stream.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// The next complete frame, if the bytes fed so far hold one.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        let Some(frame) = self.decoder.decode()? else { return Ok(None) };
        match self.state.on_frame(frame)? {
            Frame::RequestError(e) => Err(ClientError::Request { code: e.code, message: e.message }),
            frame => Ok(Some(frame)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_prefers_the_reply_then_the_hosts_rejection() {
        let write_err = || Err(ClientError::Connection("reset".into()));
        assert_eq!(settle(write_err(), Ok(7)).ok(), Some(7));
        let rejected = settle::<()>(
            write_err(),
            Err(ClientError::Request { code: tensorgate_protocol::ErrorCode::Busy, message: "full".into() }),
        );
        assert_eq!(rejected.err().and_then(|e| e.code()), Some(tensorgate_protocol::ErrorCode::Busy));
        assert!(matches!(settle::<()>(write_err(), Err(ClientError::Incomplete)), Err(ClientError::Connection(_))));
        assert!(matches!(settle::<()>(Ok(()), Err(ClientError::Incomplete)), Err(ClientError::Incomplete)));
    }
}
