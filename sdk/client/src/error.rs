//! The client's error type.

use std::net::SocketAddr;

use tensorgate_protocol::{ErrorCode, ProtocolError};

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
    /// A predict request's connection or stream broke before every item
    /// was answered: `unanswered` lists the items that got no reply (the
    /// others were handed out as they arrived), so they can be resubmitted.
    #[error("{reason}: {} of {total} items got no answer ({})", unanswered.len(), index_list(unanswered))]
    Unanswered {
        /// What broke (the connection or stream error).
        reason: String,
        /// Items in the request.
        total: usize,
        /// Indices of the items without a reply, ascending.
        unanswered: Vec<u32>,
    },
    /// A bundle could not be read or packed for upload.
    #[error("bundle: {0}")]
    Bundle(String),
}

/// `0, 1, 2, … 9 more` — the first few indices of a list.
fn index_list(indices: &[u32]) -> String {
    const SHOWN: usize = 8;
    let mut text: Vec<String> = indices.iter().take(SHOWN).map(u32::to_string).collect();
    if indices.len() > SHOWN {
        text.push(format!("… {} more", indices.len() - SHOWN));
    }
    format!("items {}", text.join(", "))
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

impl From<quinn::ConnectionError> for ClientError {
    fn from(e: quinn::ConnectionError) -> Self {
        ClientError::Connection(e.to_string())
    }
}

impl From<quinn::ClosedStream> for ClientError {
    fn from(e: quinn::ClosedStream) -> Self {
        ClientError::Connection(e.to_string())
    }
}
