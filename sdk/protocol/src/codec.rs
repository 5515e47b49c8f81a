//! Frame layout: `kind: u8 | body_len: u32 little-endian | body`.
//!
//! `Item` and `Result` bodies are `head_len: u32 LE | MessagePack ItemHead |
//! payload bytes`; every other body with content is one MessagePack map.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ProtocolError;
use crate::limits::Limits;
use crate::messages::{Frame, Item, ItemHead};

/// Bytes before every frame body: kind (1) and body length (4).
pub const FRAME_HEAD_LEN: usize = 5;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client: request header.
    Header = 0x01,
    /// Client: one item.
    Item = 0x02,
    /// Client: end of items.
    End = 0x03,
    /// Host: one item's result.
    Result = 0x81,
    /// Host: one item's failure.
    ItemError = 0x82,
    /// Host: request summary.
    Summary = 0x83,
    /// Host: request failure.
    RequestError = 0x84,
    /// Host: status reply.
    Status = 0x85,
    /// Host: management reply.
    Reply = 0x86,
}

impl FrameKind {
    /// Parses a kind byte.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0x01 => FrameKind::Header,
            0x02 => FrameKind::Item,
            0x03 => FrameKind::End,
            0x81 => FrameKind::Result,
            0x82 => FrameKind::ItemError,
            0x83 => FrameKind::Summary,
            0x84 => FrameKind::RequestError,
            0x85 => FrameKind::Status,
            0x86 => FrameKind::Reply,
            other => return Err(ProtocolError::UnknownFrameKind(other)),
        })
    }

    /// Name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Header => "Header",
            FrameKind::Item => "Item",
            FrameKind::End => "End",
            FrameKind::Result => "Result",
            FrameKind::ItemError => "ItemError",
            FrameKind::Summary => "Summary",
            FrameKind::RequestError => "RequestError",
            FrameKind::Status => "Status",
            FrameKind::Reply => "Reply",
        }
    }

    fn carries_payload(self) -> bool {
        matches!(self, FrameKind::Item | FrameKind::Result)
    }
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Header(_) => FrameKind::Header,
            Frame::Item(_) => FrameKind::Item,
            Frame::End => FrameKind::End,
            Frame::Result(_) => FrameKind::Result,
            Frame::ItemError(_) => FrameKind::ItemError,
            Frame::Summary(_) => FrameKind::Summary,
            Frame::RequestError(_) => FrameKind::RequestError,
            Frame::Status(_) => FrameKind::Status,
            Frame::Reply(_) => FrameKind::Reply,
        }
    }
}

fn to_msgpack<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain structs to a Vec cannot fail.
    rmp_serde::to_vec_named(v).unwrap_or_default()
}

fn put_frame_head(out: &mut BytesMut, kind: FrameKind, body_len: usize) {
    out.put_u8(kind as u8);
    out.put_u32_le(body_len as u32);
}

/// Appends the encoding of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Item(item) | Frame::Result(item) => {
            out.extend_from_slice(&encode_item_frame(frame.kind(), &item.head, item.payload.len()));
            out.extend_from_slice(&item.payload);
        }
        Frame::End => put_frame_head(out, FrameKind::End, 0),
        Frame::Header(h) => put_msgpack(out, FrameKind::Header, h),
        Frame::ItemError(e) => put_msgpack(out, FrameKind::ItemError, e),
        Frame::Summary(s) => put_msgpack(out, FrameKind::Summary, s),
        Frame::RequestError(e) => put_msgpack(out, FrameKind::RequestError, e),
        Frame::Status(s) => put_msgpack(out, FrameKind::Status, s),
        Frame::Reply(r) => put_msgpack(out, FrameKind::Reply, r),
    }
}

fn put_msgpack<T: Serialize>(out: &mut BytesMut, kind: FrameKind, v: &T) {
    let body = to_msgpack(v);
    put_frame_head(out, kind, body.len());
    out.extend_from_slice(&body);
}

/// Encodes everything of an `Item`/`Result` frame except its payload, so a
/// large payload can be written after it without being copied.
pub fn encode_item_frame(kind: FrameKind, head: &ItemHead, payload_len: usize) -> Bytes {
    let meta = to_msgpack(head);
    let mut out = BytesMut::with_capacity(FRAME_HEAD_LEN + 4 + meta.len());
    put_frame_head(&mut out, kind, 4 + meta.len() + payload_len);
    out.put_u32_le(meta.len() as u32);
    out.extend_from_slice(&meta);
    out.freeze()
}

/// Incremental frame decoder: feed it bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limits: Limits,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { buf: BytesMut::new(), limits }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded into a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the frame being received needs (at least 1 when
    /// the head is incomplete); 0 when a whole frame is buffered.
    pub fn needed(&self) -> usize {
        if self.buf.len() < FRAME_HEAD_LEN {
            return FRAME_HEAD_LEN - self.buf.len();
        }
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        (FRAME_HEAD_LEN + len).saturating_sub(self.buf.len())
    }

    /// Decodes the next complete frame, if one is buffered. A frame head that
    /// breaks a limit is refused as soon as its 5 bytes arrive, before its
    /// body is buffered.
    pub fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.len() < FRAME_HEAD_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buf[0])?;
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as u64;
        let (limit_name, limit) = if kind.carries_payload() {
            ("max_frame_bytes", self.limits.max_frame_bytes)
        } else {
            ("max_header_bytes", self.limits.max_header_bytes as u64)
        };
        if len > limit {
            return Err(ProtocolError::FrameTooLarge { kind: kind.name(), len, limit_name, limit });
        }
        if (self.buf.len() as u64) < FRAME_HEAD_LEN as u64 + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEAD_LEN);
        let body = self.buf.split_to(len as usize).freeze();
        decode_body(kind, body).map(Some)
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Truncated("partial frame at end of stream"))
        }
    }
}

fn from_msgpack<T: DeserializeOwned>(kind: FrameKind, body: &[u8]) -> Result<T, ProtocolError> {
    rmp_serde::from_slice(body)
        .map_err(|e| ProtocolError::Malformed { kind: kind.name(), reason: e.to_string() })
}

fn decode_body(kind: FrameKind, mut body: Bytes) -> Result<Frame, ProtocolError> {
    Ok(match kind {
        FrameKind::Header => Frame::Header(from_msgpack(kind, &body)?),
        FrameKind::End => {
            if !body.is_empty() {
                return Err(ProtocolError::Malformed { kind: kind.name(), reason: "non-empty body".into() });
            }
            Frame::End
        }
        FrameKind::Item | FrameKind::Result => {
            let malformed = |reason: &str| ProtocolError::Malformed { kind: kind.name(), reason: reason.into() };
            if body.len() < 4 {
                return Err(malformed("body shorter than its 4-byte head length"));
            }
            let head_len = body.get_u32_le() as usize;
            if head_len > body.len() {
                return Err(malformed("head length runs past the frame body"));
            }
            let head: ItemHead = from_msgpack(kind, &body[..head_len])?;
            body.advance(head_len);
            let item = Item { head, payload: body };
            if kind == FrameKind::Item { Frame::Item(item) } else { Frame::Result(item) }
        }
        FrameKind::ItemError => Frame::ItemError(from_msgpack(kind, &body)?),
        FrameKind::Summary => Frame::Summary(from_msgpack(kind, &body)?),
        FrameKind::RequestError => Frame::RequestError(from_msgpack(kind, &body)?),
        FrameKind::Status => Frame::Status(from_msgpack(kind, &body)?),
        FrameKind::Reply => Frame::Reply(from_msgpack(kind, &body)?),
    })
}
