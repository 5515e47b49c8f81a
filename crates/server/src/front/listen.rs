//! TCP listeners for the fronts that use TCP (HTTP, gRPC).

use std::net::SocketAddr;

use crate::StartError;

/// Binds a TCP listener for a front, synchronously (inside a tokio runtime).
pub(crate) fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr: listen, source };
    let std = std::net::TcpListener::bind(listen).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    tokio::net::TcpListener::from_std(std).map_err(err)
}
