//! TCP listeners for the fronts that use TCP (HTTP, gRPC), plain or TLS.
//! With TLS, handshakes run in their own tasks (a slow client holds up no
//! one else's accept), and each connection carries its verified client
//! certificate to the access policy, as over QUIC.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::StartError;

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a TCP listener for a front, synchronously (inside a tokio runtime).
pub(crate) fn bind(listen: SocketAddr) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr: listen, source };
    let std = std::net::TcpListener::bind(listen).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std).map_err(err)
}

/// A TCP front serving: where, and how to stop it.
pub struct Serving {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// A front at `addr` whose server task ends once `stop` says `true`.
    pub(crate) fn new(addr: SocketAddr, stop: tokio::sync::watch::Sender<bool>, task: tokio::task::JoinHandle<()>) -> Self {
        Serving { addr, stop, task }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets the calls in progress finish (at most 2 s).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its address.
    pub remote: SocketAddr,
    /// Its end-entity certificate (DER), verified against the client CA, over TLS.
    pub cert: Option<Vec<u8>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plain or TLS.
pub struct Conn {
    io: Io,
    peer: PeerInfo,
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Accepted connections, handshaken when TLS is on.
pub struct Acceptor {
    local: SocketAddr,
    conns: mpsc::Receiver<Conn>,
}

impl Acceptor {
    /// Accepts on `listener`, with TLS when `tls` is given (ALPN set by the caller).
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Acceptor> {
        let local = listener.local_addr()?;
        let (tx, conns) = mpsc::channel(64);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::debug!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tx = tx.clone();
                match &acceptor {
                    None => {
                        if tx.send(Conn { io: Io::Plain(tcp), peer: PeerInfo { remote, cert: None } }).await.is_err() {
                            return;
                        }
                    }
                    Some(a) => {
                        let a = a.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
                                Ok(Ok(tls)) => {
                                    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                                    let _ = tx.send(Conn { io: Io::Tls(Box::new(tls)), peer: PeerInfo { remote, cert } }).await;
                                }
                                Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Acceptor { local, conns })
    }

    /// The next connection (never, once the accept task ended).
    pub async fn next(&mut self) -> Conn {
        match self.conns.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    /// The connections as a stream, for tonic.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Conn, io::Error>> {
        futures_util::stream::unfold(self, |mut a| async move {
            let c = a.conns.recv().await?;
            Some((Ok(c), a))
        })
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = Conn;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Conn, PeerInfo) {
        let c = self.next().await;
        let peer = c.peer.clone();
        (c, peer)
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo { remote: self.local, cert: None })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Acceptor>> for PeerInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Acceptor>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The TLS configuration of an Open Inference Protocol front: the host's
/// identity, client certificates as the access policy says, `alpn`.
pub(crate) fn tls_config(
    identity: &crate::tls::Identity,
    access: &crate::auth::AccessPolicy,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| StartError::TlsConfig(e.to_string()))?
        .with_client_cert_verifier(crate::front::quic::client_verifier(access)?)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(|e| StartError::TlsConfig(e.to_string()))?;
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(tls))
}
