//! Predict requests: a model and its items in, one reply per item out,
//! collected in input order ([`Client::predict`]) or streamed in completion
//! order ([`Client::predict_stream`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use tensorgate_protocol::{
    Compression, ErrorCode, Frame, Item, ItemHead, Limits, PredictHeader, ProtocolError, RequestHeader, Summary,
};

use crate::error::ClientError;
use crate::transport::Client;

/// One item to submit.
#[derive(Debug, Clone)]
pub struct Input {
    /// Payload bytes.
    pub payload: Bytes,
    /// Content type, e.g. `application/json`.
    pub content_type: String,
    /// Metadata handed to the plugin.
    pub metadata: BTreeMap<String, String>,
}

impl Input {
    /// An item of `content_type`.
    pub fn new(payload: impl Into<Bytes>, content_type: &str) -> Self {
        Input { payload: payload.into(), content_type: content_type.to_string(), metadata: BTreeMap::new() }
    }

    /// A JSON item.
    pub fn json(payload: impl Into<Bytes>) -> Self {
        Self::new(payload, "application/json")
    }

    /// Adds a metadata entry.
    pub fn with_meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }
}

/// A predict request: a model and its items.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Header fields (model, version, request id, accepted compression, deadline).
    pub header: PredictHeader,
    /// Items, indexed in order from 0.
    pub items: Vec<Input>,
    /// zstd level for item payloads; `None` sends them raw.
    pub compress: Option<i32>,
}

impl Submission {
    /// Items for the newest version of `model`, accepting zstd replies.
    pub fn new(model: &str, items: Vec<Input>) -> Self {
        Submission {
            header: PredictHeader {
                model: model.to_string(),
                accept: vec![Compression::Zstd],
                ..PredictHeader::default()
            },
            items,
            compress: Some(tensorgate_protocol::ZSTD_LEVEL),
        }
    }

    /// Turns compression off both ways: items are sent raw and replies are
    /// requested raw.
    pub fn uncompressed(mut self) -> Self {
        self.compress = None;
        self.header.accept.clear();
        self
    }

    /// Pins a version.
    pub fn version(mut self, version: u64) -> Self {
        self.header.version = Some(version);
        self
    }
}

/// A successful item's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemReply {
    /// Item index.
    pub index: u32,
    /// Content type set by the plugin.
    pub content_type: String,
    /// The item's own metadata with the plugin's entries over it (only the
    /// plugin's when its manifest sets `echo_metadata = false`).
    pub metadata: BTreeMap<String, String>,
    /// Payload, decompressed.
    pub payload: Bytes,
}

/// A failed item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("item {index} failed [{code}]: {message}")]
pub struct ItemFailed {
    /// Item index.
    pub index: u32,
    /// Error code.
    pub code: ErrorCode,
    /// Host's message.
    pub message: String,
    /// For `busy`: the host's suggested wait before retrying (milliseconds).
    pub retry_after_ms: Option<u64>,
    /// The metadata the item was sent with, as the host gave it back.
    pub metadata: BTreeMap<String, String>,
}

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An item finished.
    Item(Result<ItemReply, ItemFailed>),
    /// All items finished.
    Summary(Summary),
}

/// All replies of a request, in input order.
#[derive(Debug, Clone)]
pub struct Reply {
    /// One outcome per input, in input order.
    pub outcomes: Vec<Result<ItemReply, ItemFailed>>,
    /// The host's summary.
    pub summary: Summary,
}

/// Collects the item outcomes of a streamed reply in input order: the one
/// way a collected [`Reply`] is made from [`Event`]s, by
/// [`Client::predict`] and by `Failover::predict`.
pub(crate) struct Collector {
    outcomes: Vec<Option<Result<ItemReply, ItemFailed>>>,
}

impl Collector {
    /// A collector for a request of `items` items.
    pub(crate) fn new(items: usize) -> Self {
        Collector { outcomes: vec![None; items] }
    }

    /// Keeps an item's outcome (at its index; an index out of range is
    /// ignored, the reply reader refuses it first).
    pub(crate) fn on_event(&mut self, event: Event) {
        if let Event::Item(outcome) = event {
            let index = match &outcome {
                Ok(r) => r.index,
                Err(e) => e.index,
            } as usize;
            if let Some(slot) = self.outcomes.get_mut(index) {
                *slot = Some(outcome);
            }
        }
    }

    /// The reply: one outcome per input, an item never answered an
    /// `internal` failure.
    pub(crate) fn reply(self, summary: Summary) -> Reply {
        Reply { outcomes: in_input_order(self.outcomes), summary }
    }
}

impl Client {
    /// Submits a request and collects every reply, in input order.
    pub async fn predict(&self, submission: Submission) -> Result<Reply, ClientError> {
        let mut collector = Collector::new(submission.items.len());
        let summary = self.predict_stream(submission, |event| collector.on_event(event)).await?;
        Ok(collector.reply(summary))
    }

    /// Submits a request and calls `on_event` for each reply as it arrives
    /// (completion order), then returns the summary.
    pub async fn predict_stream(
        &self,
        submission: Submission,
        mut on_event: impl FnMut(Event),
    ) -> Result<Summary, ClientError> {
        let Submission { mut header, items, compress } = submission;
        if header.token.is_none() {
            header.token = self.token().cloned();
        }
        // Compressed lazily, while earlier items are being written.
        let items = items.into_iter().enumerate().map(move |(index, input)| {
            let (payload, compression) = match compress {
                Some(level) => tensorgate_protocol::maybe_compress(input.payload, level),
                None => (input.payload, Compression::None),
            };
            let head = ItemHead { index: index as u32, content_type: input.content_type, metadata: input.metadata, compression };
            (head, payload)
        });
        let limits = self.limits();
        let total = items.len();
        let mut answered = vec![false; total];
        let result = self
            .exchange(RequestHeader::Predict(header), items, |frame| {
                match &frame {
                    Frame::Result(item) => mark(&mut answered, item.head.index),
                    Frame::ItemError(e) => mark(&mut answered, e.index),
                    _ => {}
                }
                on_predict_frame(frame, limits, &mut on_event)
            })
            .await;
        let reason = match result {
            // The connection or stream broke: say so, and which items got no answer.
            Err(ClientError::Connection(why)) => format!("connection to {} lost: {why}", self.address()),
            Err(e @ ClientError::Incomplete) => e.to_string(),
            other => return other,
        };
        Err(ClientError::Unanswered { reason, total, unanswered: (0..total as u32).filter(|&i| !answered[i as usize]).collect() })
    }
}

fn mark(answered: &mut [bool], index: u32) {
    if let Some(slot) = answered.get_mut(index as usize) {
        *slot = true;
    }
}

/// Outcomes by input index; an index the host never answered is an
/// `internal` failure.
fn in_input_order(outcomes: Vec<Option<Result<ItemReply, ItemFailed>>>) -> Vec<Result<ItemReply, ItemFailed>> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| {
                Err(ItemFailed {
                    index: i as u32,
                    code: ErrorCode::Internal,
                    message: "no reply for this item".into(),
                    retry_after_ms: None,
                    metadata: BTreeMap::new(),
                })
            })
        })
        .collect()
}

/// One frame of a predict reply: item outcomes become events; the summary
/// ends the reply.
fn on_predict_frame(frame: Frame, limits: Limits, on_event: &mut impl FnMut(Event)) -> Result<Option<Summary>, ClientError> {
    match frame {
        Frame::Result(item) => on_event(Event::Item(Ok(item_reply(item, limits)?))),
        Frame::ItemError(e) => on_event(Event::Item(Err(ItemFailed {
            index: e.index,
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            metadata: e.metadata,
        }))),
        Frame::Summary(s) => {
            on_event(Event::Summary(s.clone()));
            return Ok(Some(s));
        }
        other => return Err(ProtocolError::UnexpectedFrame { got: other.kind().name(), state: "in a predict reply" }.into()),
    }
    Ok(None)
}

fn item_reply(item: Item, limits: Limits) -> Result<ItemReply, ClientError> {
    let payload = item.decompressed(limits.max_item_bytes)?;
    Ok(ItemReply { index: item.head.index, content_type: item.head.content_type, metadata: item.head.metadata, payload })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tensorgate_protocol::{encode, ItemError, RequestError};

    use super::*;
    use crate::transport::ReplyReader;

    /// Feeds `frames`, encoded, through the reply reader and the predict
    /// handler; returns the events and the outcome.
    fn drive(frames: &[Frame]) -> (Vec<Event>, Result<Option<Summary>, ClientError>) {
        let mut bytes = BytesMut::new();
        for f in frames {
            encode(f, &mut bytes);
        }
        let limits = Limits::default();
        let mut reader = ReplyReader::new(limits);
        // One byte at a time: frames split across reads must still decode.
        let mut events = Vec::new();
        for b in bytes.iter() {
            reader.feed(&[*b]);
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => match on_predict_frame(frame, limits, &mut |e| events.push(e)) {
                        Ok(Some(s)) => return (events, Ok(Some(s))),
                        Ok(None) => {}
                        Err(e) => return (events, Err(e)),
                    },
                    Ok(None) => break,
                    Err(e) => return (events, Err(e)),
                }
            }
        }
        (events, Ok(None))
    }

    fn result(index: u32, payload: &'static [u8]) -> Frame {
        Frame::Result(Item { head: ItemHead { index, ..ItemHead::default() }, payload: Bytes::from_static(payload) })
    }

    #[test]
    fn results_and_errors_stream_then_the_summary_ends_the_reply() {
        let failed = ItemError { index: 0, code: ErrorCode::PluginError, message: "no".into(), retry_after_ms: None, metadata: Default::default() };
        let summary = Summary { ok: 1, failed: 1, ..Summary::default() };
        let (events, done) = drive(&[result(1, b"{}"), Frame::ItemError(failed), Frame::Summary(summary.clone())]);
        assert_eq!(done.ok().flatten(), Some(summary.clone()));
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[0], Event::Item(Ok(r)) if r.index == 1 && &r.payload[..] == b"{}"));
        assert!(matches!(&events[1], Event::Item(Err(e)) if e.index == 0 && e.code == ErrorCode::PluginError));
        assert_eq!(events[2], Event::Summary(summary));
    }

    #[test]
    fn a_request_error_is_the_hosts_rejection() {
        let rejected = RequestError { code: ErrorCode::UnknownModel, message: "nope".into() };
        let (events, done) = drive(&[Frame::RequestError(rejected)]);
        assert!(events.is_empty());
        assert_eq!(done.err().and_then(|e| e.code()), Some(ErrorCode::UnknownModel));
    }

    #[test]
    fn order_violations_are_protocol_errors() {
        let (_, done) = drive(&[result(0, b"a"), result(0, b"b")]);
        assert!(matches!(done, Err(ClientError::Protocol(ProtocolError::DuplicateIndex(0)))), "{done:?}");
        let (_, done) = drive(&[Frame::End]);
        assert!(matches!(done, Err(ClientError::Protocol(_))), "{done:?}");
    }

    #[test]
    fn unanswered_items_are_internal_failures_in_input_order() {
        let ok = ItemReply { index: 1, content_type: String::new(), metadata: BTreeMap::new(), payload: Bytes::new() };
        let outcomes = in_input_order(vec![None, Some(Ok(ok.clone()))]);
        assert!(matches!(&outcomes[0], Err(e) if e.index == 0 && e.code == ErrorCode::Internal));
        assert_eq!(outcomes[1], Ok(ok));
    }
}

/// The content type of an item file, guessed from its extension (`.json`,
/// `.npy`, `.npz`, `.png`; anything else `application/octet-stream`).
pub fn content_type_for(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("json") => "application/json",
        Some("npy") => "application/x-npy",
        Some("npz") => "application/x-npz",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}
