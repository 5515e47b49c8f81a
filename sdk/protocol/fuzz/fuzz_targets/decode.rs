//! Fuzz target for the sans-IO decoder of `tensorgate-protocol`.
//!
//! Input layout: `chunking: u8 | stream bytes`. The stream is fed to a
//! [`FrameDecoder`] in chunks whose sizes are drawn from `chunking` (0: the
//! whole stream at once; n > 0: pseudo-random sizes in 1..=n), decoding after
//! every chunk until an error or until no whole frame is buffered.
//!
//! Properties checked (any violation panics, which libFuzzer reports):
//! * nothing in the crate panics, whatever the bytes;
//! * chunking does not matter: the frames and the error are the same as when
//!   the whole stream is fed at once;
//! * `needed()` / `buffered()` agree with what `decode()` does, and a decoded
//!   frame consumes exactly `5 + body_len` bytes;
//! * direction: `FrameDecoder::from_client` / `from_host` give the frames of
//!   `FrameDecoder::new` up to the first frame of the other side's kinds,
//!   which they refuse at its head (`UnexpectedFrame`, `from a client` /
//!   `from a host`), whatever its length or body;
//! * every frame goes through `RequestState::on_frame` and
//!   `ReplyState::on_frame` (errors are fine) and comes back unchanged;
//! * `Item::decompressed(1 MiB)` on `Item`/`Result` frames never returns more
//!   than 1 MiB;
//! * round trip: `encode(frame)` has a consistent head, decodes to exactly one
//!   frame equal to `frame`, and re-encoding that gives the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tensorgate_protocol::{
    encode, Frame, FrameDecoder, FrameKind, Limits, ProtocolError, ReplyState, RequestState, FRAME_HEAD_LEN,
};

const LIMITS: Limits = Limits {
    max_header_bytes: 4096,
    max_frame_bytes: 1 << 20,
    max_item_bytes: 1 << 20,
    max_items_per_request: 64,
};

/// Limits for decoding a re-encoding: re-encoding may legitimately grow a
/// body (defaults written out, nested array-form structs written as maps),
/// so the original limits do not apply to it.
const ROOMY: Limits = Limits {
    max_header_bytes: u32::MAX,
    max_frame_bytes: u64::MAX,
    max_item_bytes: u64::MAX,
    max_items_per_request: u32::MAX,
};

/// What decoding one stream produced.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<ProtocolError>,
    /// `finish()` after the last chunk (only meaningful without `error`).
    finished: Option<Result<(), ProtocolError>>,
}

/// Chunk sizes from a tiny xorshift generator seeded by the chunking byte.
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn next_len(&mut self) -> usize {
        if self.max == 0 {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + (self.state as usize % self.max)
    }
}

fn body_len_at(stream: &[u8], offset: usize) -> usize {
    let h = &stream[offset..offset + FRAME_HEAD_LEN];
    u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize
}

/// Which decoder reads the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Both,
    FromClient,
    FromHost,
}

fn decode_stream(stream: &[u8], chunking: u8) -> Outcome {
    decode_stream_as(stream, chunking, Side::Both)
}

fn decode_stream_as(stream: &[u8], chunking: u8, side: Side) -> Outcome {
    let mut chunks = Chunks { state: 0x9e37_79b9 ^ u32::from(chunking), max: usize::from(chunking) };
    let mut dec = match side {
        Side::Both => FrameDecoder::new(LIMITS),
        Side::FromClient => FrameDecoder::from_client(LIMITS),
        Side::FromHost => FrameDecoder::from_host(LIMITS),
    };
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    while fed < stream.len() {
        let n = chunks.next_len().min(stream.len() - fed);
        dec.feed(&stream[fed..fed + n]);
        fed += n;
        assert_eq!(dec.buffered(), fed - consumed, "buffered() disagrees with bytes fed minus frames taken");
        loop {
            let before = dec.buffered();
            let needed = dec.needed();
            match dec.decode() {
                Ok(Some(frame)) => {
                    assert_eq!(needed, 0, "a frame decoded while needed() said {needed} more bytes");
                    let taken = before - dec.buffered();
                    assert_eq!(
                        taken,
                        FRAME_HEAD_LEN + body_len_at(stream, consumed),
                        "a frame consumed a different number of bytes than its head says"
                    );
                    consumed += taken;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(dec.needed() > 0, "decode() returned None while needed() is 0");
                    assert_eq!(dec.buffered(), before, "decode() returning None consumed bytes");
                    break;
                }
                Err(e) => return Outcome { frames, error: Some(e), finished: None },
            }
        }
    }
    let finished = Some(dec.finish());
    Outcome { frames, error: None, finished }
}

/// What a one-direction decoder must give, from the two-direction outcome.
fn expected_for(stream: &[u8], both: &Outcome, side: Side) -> Outcome {
    let wrong = |kind: u8| match FrameKind::from_byte(kind) {
        Ok(k) if side == Side::FromClient && k.is_host_frame() => Some((k.name(), "from a client")),
        Ok(k) if side == Side::FromHost && !k.is_host_frame() => Some((k.name(), "from a host")),
        _ => None,
    };
    let refused = |frames: Vec<Frame>, (got, state): (&'static str, &'static str)| Outcome {
        frames,
        error: Some(ProtocolError::UnexpectedFrame { got, state }),
        finished: None,
    };
    let mut offset = 0;
    for (i, frame) in both.frames.iter().enumerate() {
        if let Some(why) = wrong(frame.kind() as u8) {
            return refused(both.frames[..i].to_vec(), why);
        }
        offset += FRAME_HEAD_LEN + body_len_at(stream, offset);
    }
    // The frame after the last one decoded: refused by its head alone once
    // its 5 bytes are there, before any check of its length or body.
    if stream.len() - offset >= FRAME_HEAD_LEN {
        if let Some(why) = wrong(stream[offset]) {
            return refused(both.frames.clone(), why);
        }
    }
    both.clone()
}

fn check_round_trip(frame: &Frame) {
    let mut enc = BytesMut::new();
    encode(frame, &mut enc);
    assert!(enc.len() >= FRAME_HEAD_LEN);
    assert_eq!(enc[0], frame.kind() as u8, "encoded kind byte");
    assert_eq!(body_len_at(&enc, 0), enc.len() - FRAME_HEAD_LEN, "encoded body_len");

    let mut dec = FrameDecoder::new(ROOMY);
    dec.feed(&enc);
    let again = match dec.decode() {
        Ok(Some(f)) => f,
        Ok(None) => panic!("re-encoding of {frame:?} is incomplete: {:02x?}", &enc[..]),
        Err(e) => panic!("re-encoding of {frame:?} does not decode: {e}: {:02x?}", &enc[..]),
    };
    assert_eq!(&again, frame, "round trip changed the frame; re-encoding {:02x?}", &enc[..]);
    assert_eq!(dec.buffered(), 0, "re-encoding holds more than one frame");
    assert_eq!(dec.finish(), Ok(()));

    let mut enc2 = BytesMut::new();
    encode(&again, &mut enc2);
    assert_eq!(enc, enc2, "encoding is not canonical");
}

fn check_frame(frame: &Frame, request: &mut RequestState, reply: &mut ReplyState) {
    if let Frame::Item(item) | Frame::Result(item) = frame {
        if let Ok(bytes) = item.decompressed(LIMITS.max_item_bytes) {
            assert!(bytes.len() as u64 <= LIMITS.max_item_bytes, "decompressed past its cap");
        }
    }
    if let Ok(f) = request.on_frame(frame.clone()) {
        assert_eq!(&f, frame, "RequestState changed the frame");
    }
    if let Ok(f) = reply.on_frame(frame.clone()) {
        assert_eq!(&f, frame, "ReplyState changed the frame");
    }
    check_round_trip(frame);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunking, stream)) = data.split_first() else { return };

    let whole = decode_stream(stream, 0);
    if chunking != 0 {
        assert_eq!(decode_stream(stream, chunking), whole, "chunking changed the decoding");
    }

    for side in [Side::FromClient, Side::FromHost] {
        let got = decode_stream_as(stream, chunking, side);
        assert_eq!(got, expected_for(stream, &whole, side), "{side:?} decoder");
    }

    let mut request = RequestState::new(LIMITS);
    let mut reply = ReplyState::new();
    for frame in &whole.frames {
        check_frame(frame, &mut request, &mut reply);
    }
    assert!(request.items() <= LIMITS.max_items_per_request as usize);
});
