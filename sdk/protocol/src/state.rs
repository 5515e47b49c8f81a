//! Sequencing rules for the frames of one stream, on each side.

use std::collections::HashSet;

use crate::error::ProtocolError;
use crate::limits::Limits;
use crate::messages::{Frame, RequestHeader};

/// Host-side check of the client's frame sequence: `Header, Item*, End`.
#[derive(Debug)]
pub struct RequestState {
    limits: Limits,
    header: Option<RequestHeader>,
    seen: HashSet<u32>,
    ended: bool,
}

impl RequestState {
    /// A fresh stream.
    pub fn new(limits: Limits) -> Self {
        RequestState { limits, header: None, seen: HashSet::new(), ended: false }
    }

    /// Validates the next frame from the client; the frame is returned for the caller to act on.
    /// A host frame kind is refused wherever it arrives (`unexpected Result
    /// frame from a client`), as [`FrameDecoder::from_client`](crate::FrameDecoder::from_client)
    /// refuses it at its head.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        if frame.kind().is_host_frame() {
            return Err(ProtocolError::UnexpectedFrame { got: frame.kind().name(), state: "from a client" });
        }
        let state = if self.ended {
            "after End"
        } else if self.header.is_none() {
            "before Header"
        } else {
            "after Header"
        };
        match (&frame, self.header.as_ref(), self.ended) {
            (Frame::Header(h), None, false) => self.header = Some(h.clone()),
            (Frame::Item(item), Some(h), false) if h.takes_items() => {
                if self.seen.len() as u32 >= self.limits.max_items_per_request {
                    return Err(ProtocolError::TooManyItems { limit: self.limits.max_items_per_request });
                }
                if !self.seen.insert(item.head.index) {
                    return Err(ProtocolError::DuplicateIndex(item.head.index));
                }
            }
            (Frame::End, Some(_), false) => self.ended = true,
            _ => return Err(ProtocolError::UnexpectedFrame { got: frame.kind().name(), state }),
        }
        Ok(frame)
    }

    /// Items accepted so far.
    pub fn items(&self) -> usize {
        self.seen.len()
    }

    /// Whether `End` was received.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Client-side check of the host's reply sequence.
#[derive(Debug, Default)]
pub struct ReplyState {
    answered: HashSet<u32>,
    done: bool,
}

impl ReplyState {
    /// A fresh reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next frame from the host. A client frame kind is
    /// refused wherever it arrives (`unexpected Header frame from a host`).
    pub fn on_frame(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        if !frame.kind().is_host_frame() {
            return Err(ProtocolError::UnexpectedFrame { got: frame.kind().name(), state: "from a host" });
        }
        if self.done {
            return Err(ProtocolError::UnexpectedFrame { got: frame.kind().name(), state: "after the final frame" });
        }
        match &frame {
            Frame::Result(item) => self.answer(item.head.index)?,
            Frame::ItemError(e) => self.answer(e.index)?,
            Frame::Summary(_) | Frame::RequestError(_) | Frame::Status(_) | Frame::Reply(_) => self.done = true,
            Frame::Header(_) | Frame::Item(_) | Frame::End => {
                return Err(ProtocolError::UnexpectedFrame { got: frame.kind().name(), state: "from a host" })
            }
        }
        Ok(frame)
    }

    fn answer(&mut self, index: u32) -> Result<(), ProtocolError> {
        if self.answered.insert(index) {
            Ok(())
        } else {
            Err(ProtocolError::DuplicateIndex(index))
        }
    }

    /// Whether the final frame arrived.
    pub fn done(&self) -> bool {
        self.done
    }
}
