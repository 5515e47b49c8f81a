//! One request on one bidirectional stream: decode frames, run items
//! concurrently, write each reply as it completes, close with a summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, encode_item_frame, maybe_compress, Compression, ErrorCode, Frame, FrameDecoder, FrameKind, Item,
    ItemError, ItemHead, ModelStatus, PredictHeader, ProtocolError, RequestError, RequestHeader, RequestState,
    StatusReply, Summary, Timings, ZSTD_LEVEL,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::admin;
use super::Shared;
use crate::auth::Peer;
use crate::pipeline::{process_item, ItemFailure};
use crate::plugin::Output;
use crate::repository::Application;

/// Payloads up to this size are copied into the coalesced write buffer.
const COPY_MAX_BYTES: usize = 64 * 1024;
/// Largest read from the stream at once.
const READ_CHUNK: usize = 1 << 20;

type Done = (u32, Result<Output, ItemFailure>, Timings);

/// Why serving a stream stopped early.
enum Abort {
    /// The request broke the protocol: answer with a `RequestError`.
    Reject(ErrorCode, String),
    /// The client went away (reset, stop, connection lost): nothing to answer.
    Gone,
}

impl From<ProtocolError> for Abort {
    fn from(e: ProtocolError) -> Self {
        Abort::Reject(e.code(), e.to_string())
    }
}

impl From<quinn::WriteError> for Abort {
    fn from(_: quinn::WriteError) -> Self {
        Abort::Gone
    }
}

pub(crate) async fn serve_stream(
    shared: Arc<Shared>,
    peer: Peer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let span = tracing::info_span!("request", stream = %send.id(), model = tracing::field::Empty, request_id = tracing::field::Empty);
    async {
        let mut req = Request::new(shared, peer);
        let outcome = req.run(&mut send, &mut recv).await;
        let model = req.header.as_ref().map(|h| h.model.clone()).unwrap_or_else(|| "-".into());
        match outcome {
            Ok(()) => {}
            Err(Abort::Reject(code, message)) => {
                crate::metrics::request(&model, &code.to_string());
                req.cancel_remaining();
                tracing::warn!(%code, "request rejected: {message}");
                let _ = recv.stop(0u32.into());
                let mut out = BytesMut::new();
                encode(&Frame::RequestError(RequestError { code, message }), &mut out);
                let _ = send.write_all(&out).await;
            }
            Err(Abort::Gone) => {
                crate::metrics::request(&model, "cancelled");
                let cancelled = req.cancel_remaining();
                tracing::info!(cancelled, "client went away; remaining items cancelled");
                return;
            }
        }
        let _ = send.finish();
        // Let the peer read what was written before the stream is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    }
    .instrument(span)
    .await
}

/// What to do after a client frame.
enum Next {
    /// Keep reading.
    Continue,
    /// Send this complete reply; the request is done.
    Reply(Bytes),
    /// Run the management request now that all of it has arrived.
    Admin(RequestHeader),
}

struct Request {
    shared: Arc<Shared>,
    peer: Peer,
    state: RequestState,
    decoder: FrameDecoder,
    app: Option<Arc<Application>>,
    header: Option<PredictHeader>,
    tasks: JoinSet<Done>,
    received: Instant,
    deadline: Option<tokio::time::Instant>,
    summary: Summary,
    out: BytesMut,
    /// A management request's header, until its `End`.
    admin: Option<RequestHeader>,
    /// An upload's archive chunks, by index.
    upload: Vec<(u32, Bytes)>,
    upload_bytes: u64,
}

impl Request {
    fn new(shared: Arc<Shared>, peer: Peer) -> Self {
        let limits = shared.config.limits;
        Request {
            shared,
            peer,
            admin: None,
            upload: Vec::new(),
            upload_bytes: 0,
            state: RequestState::new(limits),
            decoder: FrameDecoder::new(limits),
            app: None,
            header: None,
            tasks: JoinSet::new(),
            received: Instant::now(),
            deadline: None,
            summary: Summary::default(),
            out: BytesMut::new(),
        }
    }

    async fn run(&mut self, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) -> Result<(), Abort> {
        // At most `max_items_in_flight` items of one request are held at once:
        // past that the host decodes and reads nothing more, and QUIC flow
        // control makes the client wait, so memory stays bounded.
        let max = self.shared.config.max_items_in_flight;
        let mut reading = true;
        loop {
            while self.tasks.len() < max && !self.state.ended() {
                let Some(frame) = self.decoder.decode()? else { break };
                match self.on_frame(frame)? {
                    Next::Continue => {}
                    // A status request: answered, nothing else to do.
                    Next::Reply(reply) => {
                        send.write_all(&reply).await?;
                        return Ok(());
                    }
                    Next::Admin(header) => {
                        let upload = std::mem::take(&mut self.upload);
                        let reply = admin::handle(&self.shared, header, upload).await;
                        for chunk in reply.map_err(|(code, message)| Abort::Reject(code, message))? {
                            send.write_all(&chunk).await?;
                        }
                        return Ok(());
                    }
                }
            }
            if self.state.ended() {
                reading = false;
            }
            if !reading && self.tasks.is_empty() {
                break;
            }
            // Read only when no whole frame is waiting to be decoded.
            let want_bytes = reading && self.tasks.len() < max && self.decoder.needed() > 0;
            tokio::select! {
                chunk = recv.read_chunk(READ_CHUNK, true), if want_bytes => {
                    match chunk {
                        Ok(Some(chunk)) => self.decoder.feed(&chunk.bytes),
                        Ok(None) => {
                            self.decoder.finish()?;
                            return Err(ProtocolError::Truncated("stream finished before End").into());
                        }
                        Err(_) => return Err(Abort::Gone),
                    }
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.reply(send, done).await?;
                    // Coalesce every other reply that is already done (and the
                    // summary, if this was the last) into one write.
                    while let Some(done) = self.tasks.try_join_next() {
                        self.reply(send, done).await?;
                    }
                    if !reading && self.tasks.is_empty() {
                        break;
                    }
                    self.flush(send).await?;
                }
            }
        }
        self.summary.elapsed_us = self.received.elapsed().as_micros() as u64;
        if let Some(h) = &self.header {
            crate::metrics::request(&h.model, if self.summary.failed == 0 { "ok" } else { "partial" });
        }
        encode(&Frame::Summary(std::mem::take(&mut self.summary)), &mut self.out);
        self.flush(send).await
    }

    /// Aborts the items still running; returns how many there were.
    fn cancel_remaining(&mut self) -> usize {
        let n = self.tasks.len();
        self.tasks.abort_all();
        self.shared.items_cancelled.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        n
    }

    async fn flush(&mut self, send: &mut quinn::SendStream) -> Result<(), Abort> {
        if !self.out.is_empty() {
            send.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Acts on one client frame.
    fn on_frame(&mut self, frame: Frame) -> Result<Next, Abort> {
        match self.state.on_frame(frame)? {
            Frame::Header(header) => {
                let access = &self.shared.config.access;
                access
                    .check(header.role(), header.op(), &self.peer, header.token())
                    .map_err(|m| Abort::Reject(ErrorCode::Forbidden, m))?;
                match header {
                    RequestHeader::Predict(h) => self.route(h)?,
                    RequestHeader::Status(_) => {}
                    other => self.admin = Some(other),
                }
            }
            Frame::Item(item) if self.admin.is_some() => {
                // Upload: archive chunks, held until End (bounded).
                let chunk = item.decompressed(self.shared.config.limits.max_item_bytes)?;
                self.upload_bytes += chunk.len() as u64;
                let limit = self.shared.config.max_upload_bytes;
                if self.upload_bytes > limit {
                    return Err(Abort::Reject(ErrorCode::LimitExceeded, format!("upload exceeds max_upload_bytes = {limit}")));
                }
                self.upload.push((item.head.index, chunk));
            }
            Frame::Item(item) => self.spawn_item(item)?,
            Frame::End => {
                if let Some(header) = self.admin.take() {
                    return Ok(Next::Admin(header));
                }
                if self.header.is_none() {
                    let mut out = BytesMut::new();
                    encode(&Frame::Status(self.status()), &mut out);
                    return Ok(Next::Reply(out.freeze()));
                }
            }
            other => {
                let kind = other.kind().name();
                return Err(Abort::Reject(ErrorCode::BadRequest, format!("unexpected {kind} frame from a client")));
            }
        }
        Ok(Next::Continue)
    }

    /// Routes a predict request to the application version that will serve it.
    fn route(&mut self, h: PredictHeader) -> Result<(), Abort> {
        let span = tracing::Span::current();
        span.record("model", h.model.as_str());
        span.record("request_id", h.request_id.as_str());
        let app = self
            .shared
            .repo
            .resolve(&h.model, h.version)
            .map_err(|e| Abort::Reject(ErrorCode::UnknownModel, e.to_string()))?;
        app.counters.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.summary = Summary {
            request_id: h.request_id.clone(),
            model: app.name().to_string(),
            version: app.version(),
            ..Summary::default()
        };
        self.deadline = h.deadline_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        self.app = Some(app);
        self.header = Some(h);
        Ok(())
    }

    fn spawn_item(&mut self, item: Item) -> Result<(), Abort> {
        let Some(app) = self.app.clone() else {
            return Err(Abort::Reject(ErrorCode::Internal, "item before a routed header".into()));
        };
        let index = item.head.index;
        let payload = item.decompressed(self.shared.config.limits.max_item_bytes);
        let head = ItemHead { compression: Compression::None, ..item.head };
        let deadline = self.deadline;
        let span = tracing::debug_span!("item", index);
        self.tasks.spawn(
            async move {
                let mut timings = Timings::default();
                let payload = match payload {
                    Ok(p) => p,
                    Err(e) => return (index, Err(ItemFailure::new(e.code(), e.to_string())), timings),
                };
                let work = process_item(&app, head, payload, deadline.map(|d| d.into_std()), &mut timings);
                let result = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, work).await {
                        Ok(r) => r,
                        Err(_) => Err(ItemFailure::new(
                            ErrorCode::DeadlineExceeded,
                            "request deadline passed before the item finished",
                        )),
                    },
                    None => work.await,
                };
                (index, result, timings)
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Encodes one item's reply into the output buffer; a large payload is
    /// written straight to the stream after the buffered frames, uncopied.
    async fn reply(
        &mut self,
        send: &mut quinn::SendStream,
        done: Result<Done, tokio::task::JoinError>,
    ) -> Result<(), Abort> {
        let (index, result, t) =
            done.map_err(|e| Abort::Reject(ErrorCode::Internal, format!("item task failed: {e}")))?;
        let s = &mut self.summary.timings;
        s.queue_us += t.queue_us;
        s.preprocess_us += t.preprocess_us;
        s.forward_us += t.forward_us;
        s.postprocess_us += t.postprocess_us;
        match result {
            Ok(output) => {
                self.summary.ok += 1;
                let accept_zstd = self.header.as_ref().is_some_and(|h| h.accept.contains(&Compression::Zstd));
                let (payload, compression) = if accept_zstd {
                    maybe_compress(Bytes::from(output.data), ZSTD_LEVEL)
                } else {
                    (Bytes::from(output.data), Compression::None)
                };
                let head = ItemHead {
                    index,
                    content_type: output.content_type,
                    metadata: output.metadata.into_iter().collect(),
                    compression,
                };
                self.out.extend_from_slice(&encode_item_frame(FrameKind::Result, &head, payload.len()));
                if payload.len() <= COPY_MAX_BYTES {
                    self.out.extend_from_slice(&payload);
                } else {
                    self.flush(send).await?;
                    send.write_all(&payload).await?;
                }
            }
            Err(failure) => {
                self.summary.failed += 1;
                tracing::debug!(index, code = %failure.code, "item failed: {}", failure.message);
                encode(
                    &Frame::ItemError(ItemError {
                        index,
                        code: failure.code,
                        message: failure.message,
                        retry_after_ms: failure.retry_after_ms,
                    }),
                    &mut self.out,
                );
            }
        }
        Ok(())
    }

    fn status(&self) -> StatusReply {
        StatusReply {
            host_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.shared.started.elapsed().as_secs(),
            models: self
                .shared
                .repo
                .all()
                .iter()
                .map(|a| ModelStatus {
                    name: a.name().to_string(),
                    version: a.version(),
                    description: a.manifest.description.clone(),
                    device: a.device(),
                    items_ok: a.counters.items_ok.load(std::sync::atomic::Ordering::Relaxed),
                    items_failed: a.counters.items_failed.load(std::sync::atomic::Ordering::Relaxed),
                    forwards: a.model.stats().forwards.load(std::sync::atomic::Ordering::Relaxed),
                    forward_rows: a.model.stats().rows.load(std::sync::atomic::Ordering::Relaxed),
                    forward_us: a.model.stats().busy_ns.load(std::sync::atomic::Ordering::Relaxed) / 1000,
                    queued: a.model.stats().queued.load(std::sync::atomic::Ordering::Relaxed) as u64,
                    plugin_instances: a.plugin.idle_instances() as u64,
                })
                .collect(),
            items_cancelled: self.shared.items_cancelled.load(std::sync::atomic::Ordering::Relaxed),
            streams_refused: self.shared.streams_refused.load(std::sync::atomic::Ordering::Relaxed),
            load_errors: self.shared.repo.failures(),
        }
    }
}

/// Answers a stream over the connection's limit with `limit_exceeded`.
pub(crate) async fn refuse_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, limit: u32) {
    let _ = recv.stop(0u32.into());
    let mut out = BytesMut::new();
    let message = format!("connection has max_streams_per_connection = {limit} requests open");
    encode(&Frame::RequestError(RequestError { code: ErrorCode::LimitExceeded, message }), &mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}
