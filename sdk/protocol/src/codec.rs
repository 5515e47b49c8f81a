//! Frame layout: `kind: u8 | body_len: u32 little-endian | body`.
//!
//! `Item` and `Result` bodies are `head_len: u32 LE | MessagePack ItemHead |
//! payload bytes`; every other body with content is one MessagePack map.
//! Every MessagePack body (and the ItemHead) must be exactly one map with
//! string keys: the array form of a struct, integer keys and bytes after the
//! map are refused before the fields are decoded.

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

    /// Whether only the host sends this kind (the high bit is set:
    /// `0x81`–`0x86`); client kinds are `0x01`–`0x03`.
    pub fn is_host_frame(self) -> bool {
        (self as u8) & 0x80 != 0
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

/// Which peer's frames a [`FrameDecoder`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The host reading a client: only `0x01`–`0x03`.
    FromClient,
    /// A client reading the host: only `0x81`–`0x86`.
    FromHost,
    /// Tools and fuzzing: every kind.
    Both,
}

/// Incremental frame decoder: feed it bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limits: Limits,
    reading: Reading,
}

impl FrameDecoder {
    /// A decoder for the host's side of a stream: it accepts only client
    /// frame kinds (`0x01`–`0x03`). A host kind (`0x81`–`0x86`) is refused as
    /// soon as its 5-byte head arrives, before its body is buffered or
    /// decoded, with [`ProtocolError::UnexpectedFrame`] (`unexpected Result
    /// frame from a client`, code `bad_request`).
    pub fn from_client(limits: Limits) -> Self {
        FrameDecoder { buf: BytesMut::new(), limits, reading: Reading::FromClient }
    }

    /// A decoder for a client's side of a stream: it accepts only host frame
    /// kinds (`0x81`–`0x86`); a client kind is refused as soon as its head
    /// arrives (`unexpected Header frame from a host`).
    pub fn from_host(limits: Limits) -> Self {
        FrameDecoder { buf: BytesMut::new(), limits, reading: Reading::FromHost }
    }

    /// A decoder accepting the frames of both directions (for tools, tests
    /// and fuzzing); peers use [`from_client`](Self::from_client) or
    /// [`from_host`](Self::from_host).
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { buf: BytesMut::new(), limits, reading: Reading::Both }
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
    /// breaks a rule it can be checked against alone (an unknown kind, a kind
    /// the other peer sends, a body over its limit) is refused as soon as its
    /// 5 bytes arrive, before its body is buffered. After an error the
    /// decoder stays where it was: the stream is not to be read further.
    pub fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.len() < FRAME_HEAD_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buf[0])?;
        match (self.reading, kind.is_host_frame()) {
            (Reading::FromClient, true) => {
                return Err(ProtocolError::UnexpectedFrame { got: kind.name(), state: "from a client" })
            }
            (Reading::FromHost, false) => {
                return Err(ProtocolError::UnexpectedFrame { got: kind.name(), state: "from a host" })
            }
            _ => {}
        }
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

/// Decodes one MessagePack body (`what`: "body" or "ItemHead") after
/// checking it is exactly one map with string keys.
fn from_msgpack<T: DeserializeOwned>(kind: FrameKind, what: &str, body: &[u8]) -> Result<T, ProtocolError> {
    let malformed = |reason: String| ProtocolError::Malformed { kind: kind.name(), reason };
    check_map(body).map_err(|e| {
        malformed(match e {
            MapError::NotAMap(got) => format!("{what} must be a MessagePack map, got {got}"),
            MapError::KeyNotAString(got) => format!("{what} must be a MessagePack map with string keys, got {got} as a key"),
            MapError::Trailing(n) => format!("{what} must be exactly one MessagePack map, got {n} more bytes after it"),
            MapError::Truncated => format!("{what} ends in the middle of a MessagePack value"),
            MapError::Reserved => format!("{what} holds the reserved MessagePack byte 0xc1"),
        })
    })?;
    rmp_serde::from_slice(body).map_err(|e| malformed(e.to_string()))
}

/// Why a body is not exactly one MessagePack map with string keys.
#[derive(Debug, PartialEq, Eq)]
enum MapError {
    NotAMap(&'static str),
    KeyNotAString(&'static str),
    Trailing(usize),
    Truncated,
    Reserved,
}

/// What a MessagePack marker byte starts, for error messages.
fn marker_name(b: u8) -> &'static str {
    match b {
        0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc1 => "the reserved byte 0xc1",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "binary data",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension value",
        0xca | 0xcb => "a float",
    }
}

/// Reads a big-endian length of `n` bytes at `*pos`.
fn read_len(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, MapError> {
    let bytes = buf.get(*pos..*pos + n).ok_or(MapError::Truncated)?;
    *pos += n;
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Skips `count` whole MessagePack values starting at `*pos`, iteratively
/// (no recursion, so nesting depth cannot exhaust the stack).
fn skip_values(buf: &[u8], pos: &mut usize, mut count: u64) -> Result<(), MapError> {
    while count > 0 {
        count -= 1;
        let marker = *buf.get(*pos).ok_or(MapError::Truncated)?;
        *pos += 1;
        // (bytes of data to skip, values nested inside)
        let (data, nested): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err(MapError::Reserved),
            0xc4 | 0xd9 => (read_len(buf, pos, 1)?, 0),
            0xc5 | 0xda => (read_len(buf, pos, 2)?, 0),
            0xc6 | 0xdb => (read_len(buf, pos, 4)?, 0),
            0xc7 => (read_len(buf, pos, 1)? + 1, 0),
            0xc8 => (read_len(buf, pos, 2)? + 1, 0),
            0xc9 => (read_len(buf, pos, 4)? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(buf, pos, 2)?),
            0xdd => (0, read_len(buf, pos, 4)?),
            0xde => (0, 2 * read_len(buf, pos, 2)?),
            0xdf => (0, 2 * read_len(buf, pos, 4)?),
        };
        if data > (buf.len() - *pos) as u64 {
            return Err(MapError::Truncated);
        }
        *pos += data as usize;
        // Every value takes at least one byte: a count larger than what is
        // left cannot be satisfied.
        count = count.saturating_add(nested);
        if count > (buf.len() - *pos) as u64 {
            return Err(MapError::Truncated);
        }
    }
    Ok(())
}

/// Checks that `body` is exactly one MessagePack map whose keys are strings.
/// The values are only skipped: their types are the struct's business.
fn check_map(body: &[u8]) -> Result<(), MapError> {
    let Some(&first) = body.first() else { return Err(MapError::NotAMap("an empty body")) };
    let mut pos = 1;
    let entries = match first {
        0x80..=0x8f => u64::from(first & 0x0f),
        0xde => read_len(body, &mut pos, 2)?,
        0xdf => read_len(body, &mut pos, 4)?,
        other => return Err(MapError::NotAMap(marker_name(other))),
    };
    for _ in 0..entries {
        let key = *body.get(pos).ok_or(MapError::Truncated)?;
        if !matches!(key, 0xa0..=0xbf | 0xd9..=0xdb) {
            return Err(MapError::KeyNotAString(marker_name(key)));
        }
        skip_values(body, &mut pos, 2)?;
    }
    match body.len() - pos {
        0 => Ok(()),
        n => Err(MapError::Trailing(n)),
    }
}

fn decode_body(kind: FrameKind, mut body: Bytes) -> Result<Frame, ProtocolError> {
    Ok(match kind {
        FrameKind::Header => Frame::Header(from_msgpack(kind, "body", &body)?),
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
            let head: ItemHead = from_msgpack(kind, "ItemHead", &body[..head_len])?;
            body.advance(head_len);
            let item = Item { head, payload: body };
            if kind == FrameKind::Item { Frame::Item(item) } else { Frame::Result(item) }
        }
        FrameKind::ItemError => Frame::ItemError(from_msgpack(kind, "body", &body)?),
        FrameKind::Summary => Frame::Summary(from_msgpack(kind, "body", &body)?),
        FrameKind::RequestError => Frame::RequestError(from_msgpack(kind, "body", &body)?),
        FrameKind::Status => Frame::Status(from_msgpack(kind, "body", &body)?),
        FrameKind::Reply => Frame::Reply(from_msgpack(kind, "body", &body)?),
    })
}
