//! The tensorgate wire protocol, sans-IO.
//!
//! This crate frames, encodes and decodes the messages exchanged between a
//! client and the host on one QUIC bidirectional stream. It never touches a
//! socket: callers feed it bytes and take frames out (see [`FrameDecoder`]:
//! the host reads with [`FrameDecoder::from_client`], a client with
//! [`FrameDecoder::from_host`]), check their order ([`RequestState`],
//! [`ReplyState`]), or hand it frames and get bytes back (see [`encode`],
//! [`FrameWriter`]). The byte layout is documented in `docs/protocol.md`,
//! and `tests/golden.rs` checks the document's bytes and field tables
//! against this crate.
//!
//! One stream carries one request:
//! ```text
//! client → host:  Header, Item*, End
//! host → client:  (Result | ItemError)*, Summary      — or one RequestError
//! ```

mod codec;
mod error;
mod limits;
mod messages;
mod state;
mod writer;

pub use codec::{encode, encode_item_frame, FrameDecoder, FrameKind, FRAME_HEAD_LEN};
pub use error::{ErrorCode, ProtocolError};
pub use limits::Limits;
pub use messages::*;
pub use state::{ReplyState, RequestState};
pub use writer::{FrameWriter, COPY_MAX_BYTES};

/// ALPN identifier of this protocol version, negotiated during the TLS handshake.
pub const ALPN: &[u8] = b"tensorgate/1";

#[cfg(test)]
mod tests;
