//! The request machine driven in memory, with injected time: every
//! frame-order rule of §4 and every per-request limit of §7 of
//! `docs/protocol.md`. No sockets, no runtime.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, AdminHeader, Compression, ErrorCode, Frame, FrameDecoder, Item, ItemHead, Limits, PredictHeader,
    RequestHeader, Timings, COPY_MAX_BYTES,
};

use super::*;

/// One machine and what it asked for, like quinn-proto's test `Pair` with a
/// scripted peer on the other side.
struct Harness {
    m: RequestMachine,
    now: Instant,
    /// Everything written to the client.
    written: BytesMut,
    /// Chunks per write action.
    writes: Vec<Vec<Bytes>>,
    /// Items handed out to run, in order.
    runs: Vec<Item>,
    /// Items cancelled, in order.
    cancelled: Vec<u32>,
    /// Status/management requests handed out.
    serves: Vec<(RequestHeader, Vec<Bytes>)>,
    stopped_reading: bool,
    finished: Option<Outcome>,
    /// How `Open` is answered.
    route: Result<Routed, Reject>,
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: Config) -> Self {
        Harness {
            m: RequestMachine::new(config),
            now: Instant::now(),
            written: BytesMut::new(),
            writes: Vec::new(),
            runs: Vec::new(),
            cancelled: Vec::new(),
            serves: Vec::new(),
            stopped_reading: false,
            finished: None,
            route: Ok(Routed { model: "m".into(), version: 3 }),
        }
    }

    /// Performs every action the machine has, as the pump would.
    fn pump(&mut self) {
        while let Some(action) = self.m.poll_action() {
            assert!(self.finished.is_none(), "action after Finish: {action:?}");
            match action {
                Action::Open(_) => self.m.opened(self.route.clone(), self.now),
                Action::Run(item) => self.runs.push(item),
                Action::Cancel(items) => self.cancelled.extend(items),
                Action::Serve { header, upload } => self.serves.push((header, upload)),
                Action::StopReading => self.stopped_reading = true,
                Action::Write(chunks) => {
                    for c in &chunks {
                        self.written.extend_from_slice(c);
                    }
                    self.writes.push(chunks);
                }
                Action::Finish(outcome) => self.finished = Some(outcome),
            }
        }
    }

    fn bytes(&mut self, data: &[u8]) {
        self.m.on_data(data, self.now);
        self.pump();
    }

    fn send(&mut self, frames: &[Frame]) {
        self.bytes(&encoded(frames));
    }

    fn fin(&mut self) {
        self.m.on_finish(self.now);
        self.pump();
    }

    fn ok(&mut self, index: u32, payload: &[u8]) {
        let timings = Timings { queue_us: 1, preprocess_us: 10, forward_us: 100, postprocess_us: 1000 };
        let output = ItemOutput { payload: Bytes::copy_from_slice(payload), content_type: "t".into(), ..Default::default() };
        self.m.item_done(index, ItemDone { result: Ok(output), timings }, self.now);
        self.pump();
    }

    fn fail(&mut self, index: u32, code: ErrorCode) {
        let failure = ItemFailure::new(code, "it broke");
        self.m.item_done(index, ItemDone { result: Err(failure), timings: Timings::default() }, self.now);
        self.pump();
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
        }
        self.pump();
    }

    /// The frames written so far, decoded as a client would.
    fn replies(&self) -> Vec<Frame> {
        let mut d = FrameDecoder::new(Limits::default());
        d.feed(&self.written);
        let mut out = Vec::new();
        while let Some(f) = d.decode().expect("host wrote valid frames") {
            out.push(f);
        }
        assert_eq!(d.buffered(), 0, "no partial frame written");
        out
    }

    fn ran(&self) -> Vec<u32> {
        self.runs.iter().map(|i| i.head.index).collect()
    }

    /// The single RequestError written last, with nothing after it.
    fn request_error(&self) -> (ErrorCode, String) {
        match self.replies().last() {
            Some(Frame::RequestError(e)) => (e.code, e.message.clone()),
            other => panic!("expected a RequestError last, got {other:?}"),
        }
    }

    fn rejected(&self, code: ErrorCode, message: &str) {
        let (c, m) = self.request_error();
        assert_eq!((c, m.as_str()), (code, message));
        assert!(self.stopped_reading, "STOP_SENDING the client's side");
        assert!(matches!(&self.finished, Some(Outcome::Rejected { code: c, .. }) if *c == code), "{:?}", self.finished);
        assert!(self.m.is_done() && !self.m.wants_read());
    }
}

fn config() -> Config {
    Config { limits: Limits::default(), max_items_in_flight: 1024, max_upload_bytes: 1 << 20 }
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out);
    }
    out.to_vec()
}

fn predict() -> Frame {
    predict_with(|_| {})
}

fn predict_with(edit: impl FnOnce(&mut PredictHeader)) -> Frame {
    let mut h = PredictHeader { model: "m".into(), request_id: "r1".into(), ..PredictHeader::default() };
    edit(&mut h);
    Frame::Header(RequestHeader::Predict(h))
}

fn item(index: u32) -> Frame {
    Frame::Item(Item { head: ItemHead { index, ..ItemHead::default() }, payload: Bytes::from_static(b"{}") })
}

fn summary(h: &Harness) -> tensorgate_protocol::Summary {
    match h.replies().last() {
        Some(Frame::Summary(s)) => s.clone(),
        other => panic!("expected a Summary last, got {other:?}"),
    }
}

// --- Predict: the happy paths ---------------------------------------------

#[test]
fn items_run_as_they_arrive_and_replies_follow_completion_order() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), item(1)]);
    assert_eq!(h.ran(), vec![0, 1], "items start before End");
    h.ok(1, b"one");
    assert!(matches!(&h.replies()[..], [Frame::Result(r)] if r.head.index == 1), "a reply goes out before End");
    h.send(&[item(2), Frame::End]);
    h.fail(2, ErrorCode::PluginError);
    assert!(h.finished.is_none(), "item 0 still runs");
    h.now += Duration::from_millis(7);
    h.ok(0, b"zero");
    let replies = h.replies();
    let order: Vec<u32> = replies
        .iter()
        .filter_map(|f| match f {
            Frame::Result(r) => Some(r.head.index),
            Frame::ItemError(e) => Some(e.index),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec![1, 2, 0], "completion order, each item exactly once");
    let s = summary(&h);
    assert_eq!((s.ok, s.failed, s.model.as_str(), s.version, s.request_id.as_str()), (2, 1, "m", 3, "r1"));
    // Timings are sums over items: two items reported 1+10+100+1000 each, the failure none.
    assert_eq!((s.timings.queue_us, s.timings.preprocess_us, s.timings.forward_us, s.timings.postprocess_us), (2, 20, 200, 2000));
    assert_eq!(s.elapsed_us, 7000, "elapsed from the Header to the Summary, on the injected clock");
    assert_eq!(h.finished, Some(Outcome::Completed { ok: 2, failed: 1 }));
    assert!(!h.stopped_reading && h.cancelled.is_empty());
}

#[test]
fn zero_items_is_a_valid_request() {
    let mut h = Harness::new();
    h.send(&[predict(), Frame::End]);
    let s = summary(&h);
    assert_eq!((s.ok, s.failed), (0, 0));
    assert_eq!(h.finished, Some(Outcome::Completed { ok: 0, failed: 0 }));
}

#[test]
fn frames_split_at_every_byte_decode_the_same() {
    let mut h = Harness::new();
    let bytes = encoded(&[predict(), item(0), item(1), Frame::End]);
    for b in &bytes {
        h.bytes(std::slice::from_ref(b));
    }
    assert_eq!(h.ran(), vec![0, 1]);
    h.ok(0, b"a");
    h.ok(1, b"b");
    assert_eq!((summary(&h).ok, h.m.is_done()), (2, true));
}

#[test]
fn routing_failure_is_answered_at_once() {
    let mut h = Harness::new();
    h.route = Err(Reject::new(ErrorCode::UnknownModel, "unknown model `m` (loaded: a)"));
    h.send(&[predict(), item(0)]);
    h.rejected(ErrorCode::UnknownModel, "unknown model `m` (loaded: a)");
    assert!(h.runs.is_empty(), "nothing runs for an unrouted request");
    assert_eq!(h.replies().len(), 1, "the RequestError is the only frame");
}

// --- §4 sequencing errors --------------------------------------------------

#[test]
fn item_or_end_before_the_header() {
    let mut h = Harness::new();
    h.send(&[item(0)]);
    h.rejected(ErrorCode::BadRequest, "unexpected Item frame before Header");
    let mut h = Harness::new();
    h.send(&[Frame::End]);
    h.rejected(ErrorCode::BadRequest, "unexpected End frame before Header");
}

#[test]
fn a_second_header() {
    let mut h = Harness::new();
    h.send(&[predict(), predict()]);
    h.rejected(ErrorCode::BadRequest, "unexpected Header frame after Header");
}

#[test]
fn duplicate_index_fails_the_request_and_cancels_what_runs() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), item(1)]);
    h.ok(0, b"done");
    h.send(&[item(1)]);
    h.rejected(ErrorCode::BadRequest, "duplicate item index 1");
    assert_eq!(h.cancelled, vec![1], "the running item is cancelled");
    assert!(matches!(h.finished, Some(Outcome::Rejected { cancelled: 1, .. })));
    // The reply already sent stays ahead of the RequestError.
    assert!(matches!(&h.replies()[..], [Frame::Result(_), Frame::RequestError(_)]));
    h.ok(1, b"late");
    assert_eq!(h.replies().len(), 2, "nothing is written after the RequestError");
}

#[test]
fn a_whole_frame_after_end_in_the_same_read_is_refused() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0)]);
    h.send(&[Frame::End, item(1)]);
    h.rejected(ErrorCode::BadRequest, "unexpected Item frame after End");
    assert_eq!(h.cancelled, vec![0]);
    assert!(!h.replies().iter().any(|f| matches!(f, Frame::Summary(_))), "no Summary follows a RequestError");
}

#[test]
fn a_frame_after_end_in_a_later_read_is_refused() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), Frame::End]);
    assert!(h.m.wants_read(), "the host keeps reading after End");
    h.send(&[predict()]);
    h.rejected(ErrorCode::BadRequest, "unexpected Header frame after End");
}

#[test]
fn a_partial_frame_after_end_then_fin_is_refused() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), Frame::End]);
    h.bytes(&[0x02, 0xff]);
    h.fin();
    h.rejected(ErrorCode::BadRequest, "data after End");
}

#[test]
fn fin_before_end() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0)]);
    h.fin();
    h.rejected(ErrorCode::BadRequest, "stream ended early: stream finished before End");
    let mut h = Harness::new();
    h.send(&[predict()]);
    h.bytes(&[0x02, 0x10, 0, 0]);
    h.fin();
    h.rejected(ErrorCode::BadRequest, "stream ended early: partial frame at end of stream");
}

#[test]
fn fin_right_after_end_is_normal() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), Frame::End]);
    h.fin();
    assert!(h.finished.is_none(), "the item still runs");
    h.ok(0, b"x");
    assert_eq!(h.finished, Some(Outcome::Completed { ok: 1, failed: 0 }));
}

#[test]
fn unknown_frame_kind() {
    let mut h = Harness::new();
    h.send(&[predict()]);
    h.bytes(&[0x07, 0, 0, 0, 0]);
    h.rejected(ErrorCode::BadRequest, "unknown frame kind 0x07");
}

#[test]
fn a_host_frame_kind_from_a_client_is_named_not_decoded() {
    // A Result kind byte with a body that is not MessagePack at all.
    let mut h = Harness::new();
    h.send(&[predict()]);
    h.bytes(&[0x81, 3, 0, 0, 0, 0xc1, 0xc1, 0xc1]);
    h.rejected(ErrorCode::BadRequest, "unexpected Result frame from a client");
    // Refused on its 5-byte head alone.
    let mut h = Harness::new();
    h.bytes(&[0x83, 0xff, 0xff, 0xff, 0x0f]);
    h.rejected(ErrorCode::BadRequest, "unexpected Summary frame from a client");
}

#[test]
fn array_form_header_is_malformed() {
    // ["predict"-less] A Header body as a MessagePack array: [ "m" ].
    let mut h = Harness::new();
    h.bytes(&[0x01, 3, 0, 0, 0, 0x91, 0xa1, b'm']);
    let (code, message) = h.request_error();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.starts_with("malformed Header frame") && message.contains("map"), "{message}");
}

// --- §7 limits ----------------------------------------------------------------

#[test]
fn max_header_bytes_is_enforced_on_the_frame_head() {
    let mut h = Harness::with(Config { limits: Limits { max_header_bytes: 100, ..Limits::default() }, ..config() });
    h.bytes(&[0x01, 101, 0, 0, 0]);
    h.rejected(ErrorCode::LimitExceeded, "Header frame of 101 bytes exceeds limit max_header_bytes = 100");
}

#[test]
fn max_frame_bytes_is_enforced_on_the_frame_head() {
    let mut h = Harness::with(Config { limits: Limits { max_frame_bytes: 1000, ..Limits::default() }, ..config() });
    h.send(&[predict()]);
    h.bytes(&[0x02, 0xe9, 0x03, 0, 0]);
    h.rejected(ErrorCode::LimitExceeded, "Item frame of 1001 bytes exceeds limit max_frame_bytes = 1000");
}

#[test]
fn max_items_per_request() {
    let mut h = Harness::with(Config { limits: Limits { max_items_per_request: 2, ..Limits::default() }, ..config() });
    h.send(&[predict(), item(0), item(1)]);
    h.send(&[item(2)]);
    h.rejected(ErrorCode::LimitExceeded, "request has more than max_items_per_request = 2 items");
    assert_eq!(h.cancelled, vec![0, 1]);
}

#[test]
fn max_item_bytes_fails_only_that_item() {
    let limits = Limits { max_item_bytes: 10, ..Limits::default() };
    let big = Item {
        head: ItemHead { index: 4, compression: Compression::Zstd, ..ItemHead::default() },
        payload: tensorgate_protocol::compress(&[7u8; 11], 3),
    };
    let e = decompressed_payload(&big, limits.max_item_bytes).unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert_eq!(e.message, "item 4 decompresses past limit max_item_bytes = 10");
    let fits = Item { head: ItemHead { index: 5, ..big.head.clone() }, payload: tensorgate_protocol::compress(&[7u8; 10], 3) };
    assert_eq!(decompressed_payload(&fits, limits.max_item_bytes).unwrap().len(), 10);
}

#[test]
fn in_flight_bound_stops_decoding_and_reading() {
    let mut h = Harness::with(Config { max_items_in_flight: 2, ..config() });
    h.send(&[predict(), item(0), item(1), item(2), item(3), Frame::End]);
    assert_eq!(h.ran(), vec![0, 1], "only two run at once");
    assert!(!h.m.wants_read(), "no reading while the bound is reached");
    h.ok(0, b"a");
    assert_eq!(h.ran(), vec![0, 1, 2], "one finished, one more starts");
    h.ok(1, b"b");
    h.ok(2, b"c");
    h.ok(3, b"d");
    assert_eq!(summary(&h).ok, 4);
}

#[test]
fn fin_while_a_whole_frame_waits_for_room_is_not_an_error() {
    let mut h = Harness::with(Config { max_items_in_flight: 1, ..config() });
    h.send(&[predict(), item(0), item(1), Frame::End]);
    h.fin();
    assert!(h.finished.is_none());
    h.ok(0, b"a");
    h.ok(1, b"b");
    assert_eq!(h.finished, Some(Outcome::Completed { ok: 2, failed: 0 }));
}

// --- Deadlines: the one place they are checked ---------------------------------

#[test]
fn deadline_answers_and_cancels_what_still_runs() {
    let mut h = Harness::new();
    h.send(&[predict_with(|p| p.deadline_ms = Some(100)), item(0), item(1), Frame::End]);
    assert_eq!(h.m.poll_timeout(), Some(h.now + Duration::from_millis(100)));
    h.wait(Duration::from_millis(40));
    h.ok(0, b"in time");
    h.wait(Duration::from_millis(59));
    assert!(h.cancelled.is_empty(), "not yet");
    h.wait(Duration::from_millis(1));
    assert_eq!(h.cancelled, vec![1], "the late item is withdrawn");
    let late = h.replies().into_iter().find_map(|f| match f {
        Frame::ItemError(e) => Some(e),
        _ => None,
    });
    let late = late.expect("an ItemError for item 1");
    assert_eq!((late.index, late.code), (1, ErrorCode::DeadlineExceeded));
    assert_eq!((summary(&h).ok, summary(&h).failed), (1, 1));
    h.ok(1, b"too late");
    assert_eq!(h.replies().len(), 3, "a late answer is dropped: each item answered once");
}

#[test]
fn items_arriving_after_the_deadline_do_not_run() {
    let mut h = Harness::new();
    h.send(&[predict_with(|p| p.deadline_ms = Some(10))]);
    h.wait(Duration::from_millis(10));
    h.send(&[item(0), Frame::End]);
    assert!(h.runs.is_empty());
    match &h.replies()[..] {
        [Frame::ItemError(e), Frame::Summary(s)] => {
            assert_eq!((e.code, s.failed), (ErrorCode::DeadlineExceeded, 1));
            assert!(e.message.contains("before the item started"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_deadline_no_timer() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0)]);
    assert_eq!(h.m.poll_timeout(), None);
}

// --- Cancellation -----------------------------------------------------------------

#[test]
fn client_gone_cancels_everything_and_writes_nothing() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), item(1), item(2)]);
    h.m.ok_unpolled(0);
    h.m.on_reset();
    h.pump();
    assert_eq!(h.cancelled, vec![1, 2]);
    assert_eq!(h.finished, Some(Outcome::Gone { cancelled: 2 }));
    assert!(h.written.is_empty(), "nothing more is sent on a stream the client left");
}

#[test]
fn items_decoded_with_a_violation_never_start() {
    // Item 0 and a duplicate arrive in one read: item 0 was queued to run but
    // not handed out yet, so it is withdrawn rather than cancelled.
    let mut h = Harness::new();
    h.m.on_data(&encoded(&[predict()]), h.now);
    h.pump();
    h.m.on_data(&encoded(&[item(0), item(0)]), h.now);
    h.pump();
    assert!(h.runs.is_empty() && h.cancelled.is_empty());
    h.rejected(ErrorCode::BadRequest, "duplicate item index 0");
}

// --- Write coalescing ----------------------------------------------------------------

#[test]
fn replies_done_together_go_out_in_one_write_large_payloads_alone() {
    let mut h = Harness::new();
    h.send(&[predict(), item(0), item(1), item(2), Frame::End]);
    let before = h.writes.len();
    let output = |n: usize| ItemDone {
        result: Ok(ItemOutput { payload: Bytes::from(vec![1u8; n]), ..Default::default() }),
        timings: Timings::default(),
    };
    // Three completions before the pump polls, as with tokio's try_join_next.
    h.m.item_done(0, output(10), h.now);
    h.m.item_done(1, output(COPY_MAX_BYTES + 1), h.now);
    h.m.item_done(2, output(20), h.now);
    h.pump();
    assert_eq!(h.writes.len(), before + 1, "one write for three replies and the Summary");
    let chunks = &h.writes[before];
    assert_eq!(chunks.len(), 3, "small frames + head | large payload | small frames + Summary");
    assert_eq!(chunks[1].len(), COPY_MAX_BYTES + 1);
    assert_eq!(summary(&h).ok, 3);
}

#[test]
fn results_are_compressed_only_when_accepted() {
    for (accept, want) in [(vec![], Compression::None), (vec![Compression::Zstd], Compression::Zstd)] {
        let mut h = Harness::new();
        h.send(&[predict_with(|p| p.accept = accept), item(0), Frame::End]);
        h.ok(0, &[0u8; 4096]);
        match &h.replies()[0] {
            Frame::Result(r) => {
                assert_eq!(r.head.compression, want);
                assert_eq!(r.decompressed(1 << 20).unwrap().len(), 4096);
            }
            other => panic!("{other:?}"),
        }
    }
}

// --- Status and management -------------------------------------------------------------

#[test]
fn status_is_served_after_end() {
    let mut h = Harness::new();
    h.send(&[Frame::Header(RequestHeader::status()), Frame::End]);
    assert_eq!(h.serves.len(), 1);
    assert!(matches!(h.serves[0].0, RequestHeader::Status(_)));
    assert!(!h.m.wants_read(), "nothing more is read while it is served");
    h.m.answered(Ok(vec![Bytes::from_static(b"reply")]));
    h.pump();
    assert_eq!(&h.written[..], b"reply");
    assert_eq!(h.finished, Some(Outcome::Served));
}

#[test]
fn an_item_on_a_status_request() {
    let mut h = Harness::new();
    h.send(&[Frame::Header(RequestHeader::status()), item(0)]);
    h.rejected(ErrorCode::BadRequest, "unexpected Item frame after Header");
}

#[test]
fn junk_after_end_of_a_management_request_is_refused() {
    let mut h = Harness::new();
    h.send(&[Frame::Header(RequestHeader::Models(AdminHeader::default())), Frame::End, Frame::End]);
    assert!(h.serves.is_empty(), "withdrawn before it was served");
    h.rejected(ErrorCode::BadRequest, "unexpected End frame after End");
}

#[test]
fn upload_chunks_are_joined_in_index_order_and_capped() {
    let chunk = |index: u32, data: &'static [u8]| {
        Frame::Item(Item { head: ItemHead { index, ..ItemHead::default() }, payload: Bytes::from_static(data) })
    };
    let mut h = Harness::new();
    h.send(&[Frame::Header(RequestHeader::Upload(AdminHeader::default())), chunk(1, b"world"), chunk(0, b"hello "), Frame::End]);
    assert_eq!(h.serves[0].1, vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
    h.m.answered(Err(Reject::new(ErrorCode::LoadFailed, "bundle did not load")));
    h.pump();
    h.rejected(ErrorCode::LoadFailed, "bundle did not load");

    let mut h = Harness::with(Config { max_upload_bytes: 8, ..config() });
    h.send(&[Frame::Header(RequestHeader::Upload(AdminHeader::default())), chunk(0, b"hello "), chunk(1, b"world")]);
    h.rejected(ErrorCode::LimitExceeded, "upload exceeds max_upload_bytes = 8");
}

#[test]
fn refused_role_is_forbidden() {
    let mut h = Harness::new();
    h.route = Err(Reject::new(ErrorCode::Forbidden, "`upload` needs the admin role"));
    h.send(&[Frame::Header(RequestHeader::Upload(AdminHeader::default()))]);
    h.rejected(ErrorCode::Forbidden, "`upload` needs the admin role");
}

impl RequestMachine {
    /// Test helper: an item answered without the pump polling afterwards.
    fn ok_unpolled(&mut self, index: u32) {
        let done = ItemDone { result: Ok(ItemOutput::default()), timings: Timings::default() };
        let now = self.started.unwrap_or_else(Instant::now);
        self.item_done(index, done, now);
    }
}
