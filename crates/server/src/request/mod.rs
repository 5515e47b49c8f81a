//! The request machine: everything the host decides about one request on
//! one stream, free of IO (no sockets, no async runtime, no clock of its
//! own), in the manner of `quinn-proto`.
//!
//! Bytes and events go in ([`RequestMachine::on_data`], [`on_finish`],
//! [`on_reset`], [`opened`], [`item_done`], [`answered`], [`handle_timeout`]),
//! each with the current time; [`Action`]s come out of
//! [`RequestMachine::poll_action`]: route this header, run this item,
//! cancel those, write these bytes, finish. `server/stream.rs` is the thin
//! pump that performs them over a QUIC stream; `tests.rs` drives the
//! machine in memory with injected time.
//!
//! The machine owns: frame order (§4 of `docs/protocol.md`), the header's
//! limits and the in-flight bound (§7), the request's deadline (the only
//! place it is checked: an item still running when it passes is answered
//! `deadline_exceeded` and cancelled, which withdraws it from the model's
//! queue), per-item bookkeeping (each item answered exactly once), the
//! summary, write coalescing, and cancellation.
//!
//! [`on_finish`]: RequestMachine::on_finish
//! [`on_reset`]: RequestMachine::on_reset
//! [`opened`]: RequestMachine::opened
//! [`item_done`]: RequestMachine::item_done
//! [`answered`]: RequestMachine::answered
//! [`handle_timeout`]: RequestMachine::handle_timeout

mod runner;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_protocol::{
    maybe_compress, Compression, ErrorCode, Frame, FrameDecoder, FrameKind, FrameWriter, Item, ItemError, ItemHead,
    Limits, ProtocolError, RequestError, RequestHeader, RequestState, Summary, Timings, ZSTD_LEVEL,
};

pub use runner::{decompressed_payload, ItemFuture, ItemRunner, Routed};

/// Why an item failed, as sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message naming what was wrong.
    pub message: String,
    /// For `busy`: suggested wait before retrying (milliseconds).
    pub retry_after_ms: Option<u64>,
}

impl ItemFailure {
    /// A failure with no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ItemFailure { code, message: message.into(), retry_after_ms: None }
    }
}

/// One item's reply payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemOutput {
    /// Payload bytes, uncompressed.
    pub payload: Bytes,
    /// Content type of the payload.
    pub content_type: String,
    /// Metadata sent back with the result.
    pub metadata: BTreeMap<String, String>,
}

/// What running one item produced, and where its time went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDone {
    /// The result or the failure.
    pub result: Result<ItemOutput, ItemFailure>,
    /// Time per stage (µs).
    pub timings: Timings,
}

/// A request's failure: answered with one `RequestError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message naming what was wrong.
    pub message: String,
}

impl Reject {
    /// A rejection with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Reject { code, message: message.into() }
    }
}

impl From<ProtocolError> for Reject {
    fn from(e: ProtocolError) -> Self {
        Reject { code: e.code(), message: e.to_string() }
    }
}

/// Settings of the machine, from the host configuration.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Wire limits (§7).
    pub limits: Limits,
    /// Most items of one request running at once; past it the machine
    /// decodes and reads nothing more until some finish, and QUIC flow
    /// control makes the client wait.
    pub max_items_in_flight: usize,
    /// Largest upload (sum of its chunks, bytes).
    pub max_upload_bytes: u64,
}

/// What the pump must do next.
#[derive(Debug)]
pub enum Action {
    /// Authorise this header's operation for the peer and, for a predict,
    /// route it; answer with [`RequestMachine::opened`]. Nothing more is
    /// decoded until then.
    Open(RequestHeader),
    /// Start running this item (its payload still as sent: possibly
    /// compressed); report with [`RequestMachine::item_done`].
    Run(Item),
    /// Stop running these items: their answers are no longer wanted.
    Cancel(Vec<u32>),
    /// Serve a status or management request whose frames have all arrived
    /// (an upload with its archive chunks, in index order); answer with
    /// [`RequestMachine::answered`].
    Serve {
        /// The request's header.
        header: RequestHeader,
        /// Upload chunks, joined in order (empty otherwise).
        upload: Vec<Bytes>,
    },
    /// Stop reading the client's side (QUIC STOP_SENDING, code 0).
    StopReading,
    /// Write these chunks to the stream, in order.
    Write(Vec<Bytes>),
    /// Finish the stream; the request is over.
    Finish(Outcome),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A predict request answered with a Summary.
    Completed {
        /// Items answered with a result.
        ok: u32,
        /// Items answered with an error.
        failed: u32,
    },
    /// A status or management request answered.
    Served,
    /// Answered with a RequestError; `cancelled` items were still running.
    Rejected {
        /// The error code sent.
        code: ErrorCode,
        /// The message sent.
        message: String,
        /// Items cancelled unanswered.
        cancelled: usize,
    },
    /// The client went away; `cancelled` items were still running.
    Gone {
        /// Items cancelled unanswered.
        cancelled: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the Header.
    Header,
    /// The pump is deciding on the header (`Action::Open` emitted).
    Opening,
    /// A predict request: items run as they arrive.
    Predict,
    /// A status or management request, collecting its frames.
    Collect,
    /// A status or management request being served (`Action::Serve` emitted).
    Serving,
    /// Over: `Finish` queued or emitted.
    Done,
}

/// The state of one request (see the module docs).
pub struct RequestMachine {
    config: Config,
    decoder: FrameDecoder,
    sequence: RequestState,
    phase: Phase,
    header: Option<RequestHeader>,
    /// When the Header arrived.
    started: Option<Instant>,
    deadline: Option<Instant>,
    accept_zstd: bool,
    /// Items started and not yet answered, with the metadata the client
    /// sent (given back with a failure; empty maps do not allocate).
    running: HashMap<u32, BTreeMap<String, String>>,
    /// The client finished its side.
    peer_finished: bool,
    summary: Summary,
    writer: FrameWriter,
    actions: VecDeque<Action>,
    upload: Vec<(u32, Bytes)>,
    upload_bytes: u64,
    outcome: Option<Outcome>,
    finish_emitted: bool,
}

impl RequestMachine {
    /// A machine for a new stream.
    pub fn new(config: Config) -> Self {
        RequestMachine {
            config,
            decoder: FrameDecoder::from_client(config.limits),
            sequence: RequestState::new(config.limits),
            phase: Phase::Header,
            header: None,
            started: None,
            deadline: None,
            accept_zstd: false,
            running: HashMap::new(),
            peer_finished: false,
            summary: Summary::default(),
            writer: FrameWriter::new(),
            actions: VecDeque::new(),
            upload: Vec::new(),
            upload_bytes: 0,
            outcome: None,
            finish_emitted: false,
        }
    }

    /// The request's header, once it has arrived.
    pub fn header(&self) -> Option<&RequestHeader> {
        self.header.as_ref()
    }

    /// The model a predict request was routed to (`-` before that).
    pub fn model(&self) -> &str {
        if self.summary.model.is_empty() {
            "-"
        } else {
            &self.summary.model
        }
    }

    /// Items running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether the request is over (its `Finish` has been handed out).
    pub fn is_done(&self) -> bool {
        self.finish_emitted
    }

    /// Whether the pump should read more bytes from the client: not while
    /// a decision is pending, a whole frame waits to be decoded, or the
    /// in-flight bound is reached.
    pub fn wants_read(&self) -> bool {
        !self.peer_finished
            && matches!(self.phase, Phase::Header | Phase::Predict | Phase::Collect)
            && self.decoder.needed() > 0
            && self.running.len() < self.config.max_items_in_flight
    }

    /// The next moment [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Predict if !self.running.is_empty() => self.deadline,
            _ => None,
        }
    }

    /// Bytes from the client.
    pub fn on_data(&mut self, data: &[u8], now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.decoder.feed(data);
        self.advance(now);
    }

    /// The client finished its side of the stream.
    pub fn on_finish(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.peer_finished = true;
        self.advance(now);
    }

    /// Once the client has finished: whatever is left undecoded, or a
    /// missing End, fails the request (unless a decision or room in flight
    /// is still awaited).
    fn check_finished(&mut self) {
        let frame_waiting = self.decoder.needed() == 0 && self.decoder.buffered() > 0;
        if matches!(self.phase, Phase::Done | Phase::Opening) || frame_waiting && !self.sequence.ended() {
            return;
        }
        if self.sequence.ended() {
            if self.decoder.buffered() > 0 {
                self.reject(ProtocolError::DataAfterEnd.into());
            }
        } else if self.decoder.finish().is_err() {
            self.reject(ProtocolError::Truncated("partial frame at end of stream").into());
        } else {
            self.reject(ProtocolError::Truncated("stream finished before End").into());
        }
    }

    /// The client reset its side, stopped reading, or the connection was
    /// lost: everything still running is cancelled and nothing more is written.
    pub fn on_reset(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        let cancelled = self.cancel_all();
        self.writer.take();
        self.end(Outcome::Gone { cancelled });
    }

    /// The pump's decision on the header of an [`Action::Open`]: `Ok` with
    /// where a predict request was routed (ignored for other operations),
    /// or why the request is refused.
    pub fn opened(&mut self, decision: Result<Routed, Reject>, now: Instant) {
        if self.phase != Phase::Opening {
            return;
        }
        let routed = match decision {
            Ok(r) => r,
            Err(reject) => return self.reject(reject),
        };
        match &self.header {
            Some(RequestHeader::Predict(h)) => {
                self.summary = Summary {
                    request_id: h.request_id.clone(),
                    model: routed.model,
                    version: routed.version,
                    ..Summary::default()
                };
                self.accept_zstd = h.accept.contains(&Compression::Zstd);
                self.deadline = h.deadline_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
                self.phase = Phase::Predict;
            }
            _ => self.phase = Phase::Collect,
        }
        self.advance(now);
    }

    /// An item started by [`Action::Run`] is done. Answers that arrive after
    /// the item was answered otherwise (deadline) or cancelled are dropped.
    pub fn item_done(&mut self, index: u32, done: ItemDone, now: Instant) {
        if self.phase != Phase::Predict {
            return;
        }
        let Some(metadata) = self.running.remove(&index) else {
            return;
        };
        let (s, t) = (&mut self.summary.timings, &done.timings);
        s.queue_us += t.queue_us;
        s.preprocess_us += t.preprocess_us;
        s.forward_us += t.forward_us;
        s.postprocess_us += t.postprocess_us;
        match done.result {
            Ok(output) => {
                self.summary.ok += 1;
                let (payload, compression) = match self.accept_zstd {
                    true => maybe_compress(output.payload, ZSTD_LEVEL),
                    false => (output.payload, Compression::None),
                };
                let head = ItemHead { index, content_type: output.content_type, metadata: output.metadata, compression };
                self.writer.item(FrameKind::Result, &head, payload);
            }
            Err(failure) => self.answer_failed(index, failure, metadata),
        }
        self.advance(now);
    }

    /// The answer to an [`Action::Serve`]: the encoded reply frames, or why
    /// the request failed.
    pub fn answered(&mut self, reply: Result<Vec<Bytes>, Reject>) {
        if self.phase != Phase::Serving {
            return;
        }
        match reply {
            Ok(chunks) => {
                self.actions.push_back(Action::Write(chunks));
                self.end(Outcome::Served);
            }
            Err(reject) => self.reject(reject),
        }
    }

    /// Time has passed: items still running past the request's deadline are
    /// answered `deadline_exceeded` and cancelled.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Predict || !self.deadline.is_some_and(|d| now >= d) || self.running.is_empty() {
            return;
        }
        let mut expired: Vec<(u32, BTreeMap<String, String>)> = self.running.drain().collect();
        expired.sort_unstable_by_key(|(index, _)| *index);
        let indices = expired.iter().map(|(index, _)| *index).collect();
        for (index, metadata) in expired {
            self.answer_failed(
                index,
                ItemFailure::new(ErrorCode::DeadlineExceeded, "request deadline passed before the item finished"),
                metadata,
            );
        }
        self.actions.push_back(Action::Cancel(indices));
        self.advance(now);
    }

    /// The next thing to do, if any. Replies accumulate until the pump
    /// polls, so replies that complete together go out in one write.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if !self.writer.is_empty() {
            return Some(Action::Write(self.writer.take()));
        }
        if self.phase == Phase::Done && !self.finish_emitted {
            self.finish_emitted = true;
            let outcome = self.outcome.clone().unwrap_or(Outcome::Served);
            return Some(Action::Finish(outcome));
        }
        None
    }

    /// Decodes and acts on every frame the current phase allows.
    fn advance(&mut self, now: Instant) {
        loop {
            match self.phase {
                Phase::Header | Phase::Collect => {}
                Phase::Predict if self.running.len() < self.config.max_items_in_flight || self.sequence.ended() => {}
                // The frames after End are still decoded while a status or
                // management request is served, so that junk after End fails it.
                Phase::Serving => {}
                Phase::Predict | Phase::Opening | Phase::Done => break,
            }
            let frame = match self.decoder.decode() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return self.reject(e.into()),
            };
            if let Err(reject) = self.on_frame(frame, now) {
                return self.reject(reject);
            }
        }
        if self.peer_finished {
            self.check_finished();
        }
        self.maybe_complete(now);
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Reject> {
        match self.sequence.on_frame(frame)? {
            Frame::Header(header) => {
                self.started = Some(now);
                self.header = Some(header.clone());
                self.phase = Phase::Opening;
                self.actions.push_back(Action::Open(header));
            }
            Frame::Item(item) if self.phase == Phase::Collect => {
                // Upload: archive chunks, held until End (bounded).
                let chunk = item.decompressed(self.config.limits.max_item_bytes)?;
                self.upload_bytes += chunk.len() as u64;
                let limit = self.config.max_upload_bytes;
                if self.upload_bytes > limit {
                    return Err(Reject::new(ErrorCode::LimitExceeded, format!("upload exceeds max_upload_bytes = {limit}")));
                }
                self.upload.push((item.head.index, chunk));
            }
            Frame::Item(item) => {
                let index = item.head.index;
                if self.deadline.is_some_and(|d| now >= d) {
                    self.answer_failed(
                        index,
                        ItemFailure::new(ErrorCode::DeadlineExceeded, "request deadline passed before the item started"),
                        item.head.metadata,
                    );
                } else {
                    self.running.insert(index, item.head.metadata.clone());
                    self.actions.push_back(Action::Run(item));
                }
            }
            Frame::End if self.phase == Phase::Collect => {
                let Some(header) = self.header.clone() else {
                    return Err(Reject::new(ErrorCode::Internal, "End without a header"));
                };
                let mut chunks = std::mem::take(&mut self.upload);
                chunks.sort_by_key(|(index, _)| *index);
                self.phase = Phase::Serving;
                self.actions.push_back(Action::Serve { header, upload: chunks.into_iter().map(|(_, c)| c).collect() });
            }
            Frame::End => {}
            other => {
                let kind = other.kind().name();
                return Err(Reject::new(ErrorCode::BadRequest, format!("unexpected {kind} frame from a client")));
            }
        }
        Ok(())
    }

    /// A predict request whose items are all answered after End gets its Summary.
    fn maybe_complete(&mut self, now: Instant) {
        if self.phase != Phase::Predict || !self.sequence.ended() || !self.running.is_empty() {
            return;
        }
        let started = self.started.unwrap_or(now);
        self.summary.elapsed_us = now.saturating_duration_since(started).as_micros() as u64;
        let summary = std::mem::take(&mut self.summary);
        let (ok, failed) = (summary.ok, summary.failed);
        self.summary.model = summary.model.clone();
        self.writer.frame(&Frame::Summary(summary));
        self.end(Outcome::Completed { ok, failed });
    }

    fn answer_failed(&mut self, index: u32, failure: ItemFailure, metadata: BTreeMap<String, String>) {
        self.summary.failed += 1;
        self.writer.frame(&Frame::ItemError(ItemError {
            index,
            code: failure.code,
            message: failure.message,
            retry_after_ms: failure.retry_after_ms,
            metadata,
        }));
    }

    /// Ends the request with a RequestError after the replies already encoded.
    fn reject(&mut self, reject: Reject) {
        if self.phase == Phase::Done {
            return;
        }
        let cancelled = self.cancel_all();
        self.actions.push_back(Action::StopReading);
        let Reject { code, message } = reject;
        self.writer.frame(&Frame::RequestError(RequestError { code, message: message.clone() }));
        self.end(Outcome::Rejected { code, message, cancelled });
    }

    /// Withdraws queued work and cancels running items; returns how many ran.
    fn cancel_all(&mut self) -> usize {
        // Items queued but never handed out never started.
        for a in &self.actions {
            if let Action::Run(item) = a {
                self.running.remove(&item.head.index);
            }
        }
        self.actions.retain(|a| !matches!(a, Action::Run(_) | Action::Serve { .. } | Action::Open(_)));
        let mut started: Vec<u32> = self.running.drain().map(|(index, _)| index).collect();
        let n = started.len();
        if n > 0 {
            started.sort_unstable();
            self.actions.push_back(Action::Cancel(started));
        }
        n
    }

    fn end(&mut self, outcome: Outcome) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
    }
}
