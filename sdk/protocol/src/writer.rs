//! Write coalescing, shared by host and client: small frames are gathered
//! into one buffer so that many replies (or items) go out in one write;
//! a large payload travels as its own chunk, never copied.

use bytes::{Bytes, BytesMut};

use crate::codec::{encode, encode_item_frame, FrameKind};
use crate::messages::{Frame, ItemHead};

/// Payloads up to this size are copied next to their frame head; larger ones
/// are handed out as their own chunk, uncopied.
pub const COPY_MAX_BYTES: usize = 64 * 1024;

/// Encoded frames waiting to be written, in order, as few chunks as the
/// copy rule allows. Sans-IO: the caller takes the chunks and writes them
/// (e.g. with `quinn::SendStream::write_all_chunks`).
#[derive(Debug, Default)]
pub struct FrameWriter {
    /// Chunks complete and ready, in order, before `buf`.
    ready: Vec<Bytes>,
    /// Small frames being coalesced.
    buf: BytesMut,
    /// Bytes held in `ready` and `buf`.
    pending: usize,
}

impl FrameWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends any frame; an `Item`/`Result` frame follows the copy rule.
    pub fn frame(&mut self, frame: &Frame) {
        match frame {
            Frame::Item(item) | Frame::Result(item) => self.item(frame.kind(), &item.head, item.payload.clone()),
            other => {
                let before = self.buf.len();
                encode(other, &mut self.buf);
                self.pending += self.buf.len() - before;
            }
        }
    }

    /// Appends an `Item` or `Result` frame with `payload`: copied when it is
    /// at most [`COPY_MAX_BYTES`], otherwise queued as its own chunk.
    pub fn item(&mut self, kind: FrameKind, head: &ItemHead, payload: Bytes) {
        let frame_head = encode_item_frame(kind, head, payload.len());
        self.pending += frame_head.len() + payload.len();
        self.buf.extend_from_slice(&frame_head);
        if payload.len() <= COPY_MAX_BYTES {
            self.buf.extend_from_slice(&payload);
        } else {
            self.seal();
            self.ready.push(payload);
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Whether the coalesced bytes are worth a write of their own even if
    /// more frames could still join them (at least [`COPY_MAX_BYTES`]).
    pub fn should_flush(&self) -> bool {
        !self.ready.is_empty() || self.buf.len() >= COPY_MAX_BYTES
    }

    /// Takes every waiting chunk, in order; the writer is empty afterwards.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        self.pending = 0;
        std::mem::take(&mut self.ready)
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.ready.push(self.buf.split().freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameDecoder;
    use crate::limits::Limits;
    use crate::messages::Item;

    fn head(index: u32) -> ItemHead {
        ItemHead { index, ..ItemHead::default() }
    }

    #[test]
    fn small_frames_coalesce_large_payloads_travel_alone() {
        let mut w = FrameWriter::new();
        w.item(FrameKind::Result, &head(0), Bytes::from(vec![1u8; 10]));
        w.item(FrameKind::Result, &head(1), Bytes::from(vec![2u8; 20]));
        assert_eq!(w.take().len(), 1, "two small frames make one chunk");
        let big = Bytes::from(vec![3u8; COPY_MAX_BYTES + 1]);
        w.item(FrameKind::Result, &head(2), big.clone());
        w.frame(&Frame::End);
        assert!(w.should_flush());
        let chunks = w.take();
        assert_eq!(chunks.len(), 3, "head, payload, trailing End");
        assert_eq!(chunks[1].as_ptr(), big.as_ptr(), "large payload is not copied");
        assert!(w.is_empty() && w.take().is_empty());
    }

    #[test]
    fn chunks_decode_to_the_frames_in_order() {
        let mut w = FrameWriter::new();
        for (i, n) in [5usize, COPY_MAX_BYTES * 2, 7, COPY_MAX_BYTES + 3].into_iter().enumerate() {
            w.frame(&Frame::Result(Item { head: head(i as u32), payload: Bytes::from(vec![i as u8; n]) }));
        }
        let pending = w.pending();
        let chunks = w.take();
        assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), pending);
        let mut d = FrameDecoder::new(Limits::default());
        for c in &chunks {
            d.feed(c);
        }
        for (i, n) in [5usize, COPY_MAX_BYTES * 2, 7, COPY_MAX_BYTES + 3].into_iter().enumerate() {
            match d.decode().unwrap() {
                Some(Frame::Result(item)) => {
                    assert_eq!(item.head.index, i as u32);
                    assert_eq!(item.payload.len(), n);
                    assert!(item.payload.iter().all(|&b| b == i as u8));
                }
                other => panic!("frame {i}: {other:?}"),
            }
        }
        assert!(d.decode().unwrap().is_none());
    }
}
