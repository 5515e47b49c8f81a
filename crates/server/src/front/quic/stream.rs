//! The pump for one request stream: moves bytes and events between a QUIC
//! stream, the item runner and the sans-IO [`RequestMachine`], and does
//! what the machine's actions say. It decides nothing itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tensorgate_protocol::{encode, ErrorCode, Frame, RequestError, RequestHeader};
use tracing::Instrument;

use super::inflight::InFlight;
use super::{admin, Shared};
use crate::auth::Peer;
use crate::item_stats::{timed, VersionStats};
use crate::request::{Action, ItemDone, ItemFailure, ItemRunner, Outcome, Reject, RequestMachine, Routed};

/// Largest read from the stream at once.
const READ_CHUNK: usize = 1 << 20;
/// Most bytes taken from the stream's buffer, without waiting, after a read.
const BURST_BYTES: usize = 1 << 20;

/// Serves one request on one bidirectional stream until the machine
/// finishes it; `runner` runs its items (the local pipeline, or elsewhere).
pub(crate) async fn serve_stream<R: ItemRunner>(
    shared: Arc<Shared>,
    runner: &R,
    peer: Peer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // At debug level: an enabled span costs allocations and formatting on
    // every request; the lines logged for a request name its model themselves.
    let span = tracing::debug_span!("request", stream = %send.id(), model = tracing::field::Empty, request_id = tracing::field::Empty);
    async {
        let _open = Open::new(&shared.open_streams);
        let mut machine = RequestMachine::new(shared.config.request_machine());
        let mut session = None;
        let mut inflight = InFlight::new(shared.busy_streams.clone());
        // Items decoded together, started together once the burst ends.
        let mut burst: Vec<tensorgate_protocol::Item> = Vec::new();
        let mut write_failed = false;
        'pump: loop {
            while let Some(action) = machine.poll_action() {
                if !burst.is_empty() && matches!(action, Action::Write(_) | Action::Serve { .. } | Action::Finish(_)) {
                    start(runner, &session, &mut inflight, &mut burst, &shared);
                }
                match action {
                    Action::Open(header) => {
                        let decision = open(&shared, &peer, runner, &header).map(|(routed, s)| {
                            session = s;
                            routed
                        });
                        machine.opened(decision, Instant::now());
                    }
                    Action::Run(item) => {
                        if session.is_none() {
                            // The machine runs items only for a routed predict request.
                            let index = item.head.index;
                            let failure = ItemFailure::new(ErrorCode::Internal, format!("item {index} of an unrouted request"));
                            machine.item_done(index, ItemDone { result: Err(failure), timings: Default::default() }, Instant::now());
                            continue;
                        }
                        burst.push(item);
                    }
                    Action::Cancel(indices) => {
                        for index in indices {
                            match burst.iter().position(|item| item.head.index == index) {
                                Some(at) => drop(burst.remove(at)),
                                None => inflight.cancel(index),
                            }
                        }
                    }
                    Action::Serve { header, upload } => {
                        let reply = admin::handle(&shared, header, upload).await;
                        machine.answered(reply);
                    }
                    Action::StopReading => {
                        let _ = recv.stop(0u32.into());
                    }
                    Action::Write(mut chunks) => {
                        if !write_failed && send.write_all_chunks(&mut chunks).await.is_err() {
                            // The client stopped reading or went away.
                            write_failed = true;
                            machine.on_reset();
                        }
                    }
                    Action::Finish(outcome) => {
                        finish(&shared, &machine, outcome);
                        break 'pump;
                    }
                }
            }
            if !burst.is_empty() {
                start(runner, &session, &mut inflight, &mut burst, &shared);
            }
            let deadline = machine.poll_timeout();
            tokio::select! {
                chunk = recv.read_chunk(READ_CHUNK, true), if machine.wants_read() => match chunk {
                    Ok(Some(chunk)) => {
                        machine.on_data(&chunk.bytes, Instant::now());
                        read_buffered(&mut recv, &mut machine);
                    }
                    Ok(None) => machine.on_finish(Instant::now()),
                    Err(_) => machine.on_reset(),
                },
                (index, done) = inflight.next(), if inflight.busy() => {
                    // Every other item already done joins this write.
                    machine.item_done(index, done, Instant::now());
                    while let Some((index, done)) = inflight.try_next() {
                        machine.item_done(index, done, Instant::now());
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => machine.handle_timeout(Instant::now()),
                else => {
                    // Nothing to read, run or wait for: a machine bug; never hang a stream on it.
                    tracing::error!("request stalled with nothing to wait for; dropped");
                    machine.on_reset();
                }
            }
        }
        // Items still running (the request failed or went away) are dropped with it.
        drop(inflight);
        if !write_failed {
            let _ = send.finish();
            // Let the peer read what was written before the stream is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
        }
    }
    .instrument(span)
    .await
}

/// Feeds the machine what else the stream already holds (up to
/// [`BURST_BYTES`]) without waiting, so that the items in it start as one
/// burst: a packet holds only a few small items.
fn read_buffered(recv: &mut quinn::RecvStream, machine: &mut RequestMachine) {
    use futures_util::FutureExt;
    let mut budget = BURST_BYTES;
    while budget > 0 && machine.wants_read() {
        // `read_chunk` takes data only when it is ready: dropping it pending loses nothing.
        match recv.read_chunk(budget, true).now_or_never() {
            Some(Ok(Some(chunk))) => {
                budget = budget.saturating_sub(chunk.bytes.len());
                machine.on_data(&chunk.bytes, Instant::now());
            }
            Some(Ok(None)) => return machine.on_finish(Instant::now()),
            Some(Err(_)) => return machine.on_reset(),
            None => return,
        }
    }
}

/// Starts a burst's items and tells the runner the burst is complete. A
/// lone item of the only request on the host (the only stream open, no
/// other item running) is run as such: its forward may skip the hand-off to
/// the executor thread, since there is nothing to batch it with.
fn start<R: ItemRunner>(
    runner: &R,
    session: &Option<(R::Session, Arc<VersionStats>)>,
    inflight: &mut InFlight,
    burst: &mut Vec<tensorgate_protocol::Item>,
    shared: &Shared,
) {
    let Some((s, stats)) = session else {
        burst.clear();
        return;
    };
    let alone = burst.len() == 1 && !inflight.busy() && shared.open_streams.load(Ordering::Relaxed) == 1;
    inflight.start(burst.drain(..).map(|item| (item.head.index, timed(stats.clone(), runner.run(s, item, alone)))).collect());
    runner.flush(s);
}

/// Counts a stream as open while it lives.
struct Open<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Open<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Open(count)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Checks the peer's role for the header's operation and routes a predict request.
fn open<R: ItemRunner>(
    shared: &Shared,
    peer: &Peer,
    runner: &R,
    header: &RequestHeader,
) -> Result<(Routed, Option<(R::Session, Arc<VersionStats>)>), Reject> {
    shared
        .config
        .access
        .check(header.role(), header.op(), peer, header.token())
        .map_err(|m| Reject::new(ErrorCode::Forbidden, m))?;
    match header {
        RequestHeader::Predict(h) => {
            let span = tracing::Span::current();
            span.record("model", h.model.as_str());
            span.record("request_id", h.request_id.as_str());
            let (routed, session) = runner.route(h)?;
            let stats = crate::item_stats::of(&routed.model, routed.version);
            Ok((routed, Some((session, stats))))
        }
        _ => Ok((Routed { model: String::new(), version: 0 }, None)),
    }
}

/// Metrics and logs for a finished request.
fn finish(shared: &Shared, machine: &RequestMachine, outcome: Outcome) {
    let model = machine.model();
    match outcome {
        Outcome::Completed { failed, .. } => crate::metrics::request(model, if failed == 0 { "ok" } else { "partial" }),
        Outcome::Served => {}
        Outcome::Rejected { code, message, cancelled } => {
            crate::metrics::request(model, &code.to_string());
            shared.items_cancelled.fetch_add(cancelled as u64, Ordering::Relaxed);
            tracing::warn!(model, %code, cancelled, "request rejected: {message}");
        }
        Outcome::Gone { cancelled } => {
            crate::metrics::request(model, "cancelled");
            shared.items_cancelled.fetch_add(cancelled as u64, Ordering::Relaxed);
            tracing::info!(model, cancelled, "client went away; remaining items cancelled");
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
