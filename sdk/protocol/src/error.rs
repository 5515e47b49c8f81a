//! Protocol errors and the error codes carried on the wire.

use serde::{Deserialize, Serialize};

/// Machine-readable error code carried in `ItemError` and `RequestError` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or item was malformed.
    BadRequest,
    /// No application with the requested name (or version) is loaded.
    UnknownModel,
    /// The plugin rejected the item (its `plugin-error`).
    PluginError,
    /// The plugin trapped, ran out of time or of memory.
    PluginFailed,
    /// The model's forward pass failed.
    ModelError,
    /// A configured limit was exceeded; the message names it.
    LimitExceeded,
    /// The host is overloaded; retry later.
    Busy,
    /// The item's deadline passed before it was processed.
    DeadlineExceeded,
    /// The credentials presented do not allow this operation.
    Forbidden,
    /// The operation is not supported by this host.
    Unsupported,
    /// The item's content type is not one the application accepts.
    UnsupportedContentType,
    /// An uploaded or reloaded bundle did not load; what served before still serves.
    LoadFailed,
    /// The change conflicts with the repository (e.g. that version exists).
    Conflict,
    /// An unexpected failure inside the host.
    Internal,
    /// A code this version does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::PluginError => "plugin_error",
            ErrorCode::PluginFailed => "plugin_failed",
            ErrorCode::ModelError => "model_error",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Busy => "busy",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnsupportedContentType => "unsupported_content_type",
            ErrorCode::LoadFailed => "load_failed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// A violation of the protocol found while decoding or sequencing frames.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame kind byte is not one this version knows.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownFrameKind(u8),
    /// A frame is larger than the limit for its kind.
    #[error("{kind} frame of {len} bytes exceeds limit {limit_name} = {limit}")]
    FrameTooLarge {
        /// Frame kind name.
        kind: &'static str,
        /// Declared body length.
        len: u64,
        /// Name of the limit that was exceeded.
        limit_name: &'static str,
        /// Value of the limit.
        limit: u64,
    },
    /// A decompressed item exceeds `max_item_bytes`.
    #[error("item {index} decompresses past limit max_item_bytes = {limit}")]
    DecompressedTooLarge {
        /// Item index.
        index: u32,
        /// Value of the limit.
        limit: u64,
    },
    /// A request carries more items than `max_items_per_request`.
    #[error("request has more than max_items_per_request = {limit} items")]
    TooManyItems {
        /// Value of the limit.
        limit: u32,
    },
    /// A frame body could not be decoded.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// Frame kind name.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A frame arrived where the protocol does not allow it: out of order
    /// (`state` is `before Header`, `after Header`, `after End`, `after the
    /// final frame`) or from the wrong peer (`state` is `from a client` for a
    /// host kind read by the host, `from a host` for a client kind read by a
    /// client).
    #[error("unexpected {got} frame {state}")]
    UnexpectedFrame {
        /// Frame kind name received.
        got: &'static str,
        /// Where in the exchange it arrived, or which peer sent it.
        state: &'static str,
    },
    /// Bytes that are not a whole frame arrived after `End` (a whole frame
    /// after `End` is an [`UnexpectedFrame`](Self::UnexpectedFrame) `after End`).
    #[error("data after End")]
    DataAfterEnd,
    /// Two items of one request carry the same index.
    #[error("duplicate item index {0}")]
    DuplicateIndex(u32),
    /// The stream ended in the middle of a frame or before the exchange was complete.
    #[error("stream ended early: {0}")]
    Truncated(&'static str),
    /// The item names a compression this version does not know.
    #[error("item {index}: unsupported compression (known: none, zstd)")]
    UnsupportedCompression {
        /// Item index.
        index: u32,
    },
    /// Zstd decompression failed.
    #[error("item {index}: zstd decompression failed: {reason}")]
    Decompress {
        /// Item index.
        index: u32,
        /// Decoder message.
        reason: String,
    },
}

impl ProtocolError {
    /// The wire error code a host answers this violation with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::DecompressedTooLarge { .. }
            | ProtocolError::TooManyItems { .. } => ErrorCode::LimitExceeded,
            _ => ErrorCode::BadRequest,
        }
    }
}
