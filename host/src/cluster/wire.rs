//! The cluster's wire format: subjects, headers and the messages between
//! gateways and workers. Small heads travel as JSON in one NATS header
//! (JSON never holds a raw CR or LF); payloads travel as they are, never
//! copied into an envelope.
//!
//! | subject | from → to | kind | body |
//! |---|---|---|---|
//! | `P.work.MODEL.VERSION` | gateway → stream → a worker | JetStream, work queue | the item's payload as sent; `Tg-Head`: [`WorkHead`] — or a group of items (`Tg-Group`) |
//! | `P.reply.GATEWAY` | worker → gateway | request (the gateway's empty answer confirms) | the result payload; `Tg-Head`: [`ReplyHead`] — or a group of results (`Tg-Group`) |
//! | `P.fleet.advert` | worker → gateways | publish, every heartbeat and on change | [`Advert`] (JSON) |
//! | `P.fleet.ping` | gateway → workers | publish | empty; every worker advertises at once |
//!
//! A payload or result larger than the engine's `max_payload` travels in
//! the `P_LARGE` object store instead; the message's `Tg-Object` header
//! names the object and its body is empty. The receiver deletes it.
//!
//! Items of one request that reach the gateway together travel as one
//! **group** message (and results finished together as one group reply):
//! the `Tg-Group` header holds the count, the body is [`pack`]ed — each
//! member's key, head and payload length, then the payloads back to back.
//! One engine message, acknowledgement and confirmation then serve many
//! items; each member is still answered (and deduplicated) by its own key.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use tensorgate_protocol::{ErrorCode, ItemHead, Timings};

use crate::request::{ItemDone, ItemFailure, ItemOutput};

/// Header carrying a message's JSON head.
pub const HEAD: &str = "Tg-Head";
/// Header carrying the gateway's key of an item (decimal).
pub const KEY: &str = "Tg-Key";
/// Header carrying the subject a work item's reply goes to.
pub const REPLY_TO: &str = "Tg-Reply";
/// Header naming the large-item object that holds the payload (the message
/// body is then empty): payloads above the engine's `max_payload`.
pub const OBJECT: &str = "Tg-Object";
/// Header of a message carrying several items or results ([`pack`]): their count.
pub const GROUP: &str = "Tg-Group";

/// One member of a group: its gateway key, its head, and the length of its
/// payload in the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member<H> {
    /// The gateway's key of the item.
    pub key: u64,
    /// Payload bytes in the body.
    pub len: u64,
    /// Its head.
    pub head: H,
}

/// A group body: `u32` little-endian length of the JSON member list, the
/// list, then every member's payload back to back.
pub fn pack<H: Serialize>(members: &[(u64, H, bytes::Bytes)]) -> bytes::Bytes {
    let list: Vec<Member<&H>> =
        members.iter().map(|(key, head, payload)| Member { key: *key, len: payload.len() as u64, head }).collect();
    // Serialising plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec(&list).unwrap_or_default();
    let total = 4 + json.len() + members.iter().map(|(_, _, p)| p.len()).sum::<usize>();
    let mut body = bytes::BytesMut::with_capacity(total);
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    for (_, _, payload) in members {
        body.extend_from_slice(payload);
    }
    body.freeze()
}

/// The members of a group body, each payload a slice of `body` (no
/// copies), or why the body is unreadable.
pub fn unpack<H: for<'de> Deserialize<'de>>(body: &bytes::Bytes) -> Result<Vec<(u64, H, bytes::Bytes)>, String> {
    let len = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or("group body shorter than 4 bytes")?;
    let json = body.get(4..4 + len).ok_or_else(|| format!("group body of {} bytes holds no {len}-byte member list", body.len()))?;
    let list: Vec<Member<H>> = serde_json::from_slice(json).map_err(|e| format!("group member list: {e}"))?;
    let mut at = 4 + len;
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let end = usize::try_from(m.len).ok().and_then(|n| at.checked_add(n)).filter(|&e| e <= body.len());
        let end = end.ok_or_else(|| format!("group member {} claims {} bytes past the body's end", m.key, m.len))?;
        out.push((m.key, m.head, body.slice(at..end)));
        at = end;
    }
    if at != body.len() {
        return Err(format!("group body has {} bytes after its members", body.len() - at));
    }
    Ok(out)
}

/// Subjects of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Subjects { prefix: prefix.to_string() }
    }

    /// Where items for one application version are queued.
    pub fn work(&self, model: &str, version: u64) -> String {
        format!("{}.work.{model}.{version}", self.prefix)
    }

    /// Where a gateway's replies arrive.
    pub fn reply(&self, gateway: &str) -> String {
        format!("{}.reply.{gateway}", self.prefix)
    }

    /// Where workers advertise.
    pub fn advert(&self) -> String {
        format!("{}.fleet.advert", self.prefix)
    }

    /// Where gateways ask every worker to advertise now.
    pub fn ping(&self) -> String {
        format!("{}.fleet.ping", self.prefix)
    }

    /// The durable pull consumer shared by every worker serving one version
    /// (model names are `[A-Za-z0-9_-]`, valid in consumer names).
    pub fn consumer(&self, model: &str, version: u64) -> String {
        format!("{}-{model}-{version}", self.prefix)
    }
}

/// What a worker needs to run one item, beside its payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkHead {
    /// The item's head as the client sent it (index, content type,
    /// metadata, compression of the payload).
    #[serde(flatten)]
    pub item: ItemHead,
    /// The client's request id (for logs).
    #[serde(default)]
    pub request_id: String,
    /// When the request's deadline passes (ms since the Unix epoch): a
    /// worker does not start an item past it (the gateway has already
    /// answered `deadline_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

/// A worker's answer for one item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyHead {
    /// The worker that ran it.
    pub worker: String,
    /// Result content type (`None` when the item failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Result metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Failure code (when the item failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Failure message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For `busy`: suggested wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Time per stage on the worker.
    #[serde(default)]
    pub timings: Timings,
}

impl ReplyHead {
    /// The head and payload of `done`, run by `worker`.
    pub fn from_done(worker: &str, done: ItemDone) -> (ReplyHead, bytes::Bytes) {
        let mut head = ReplyHead { worker: worker.to_string(), timings: done.timings, ..ReplyHead::default() };
        match done.result {
            Ok(out) => {
                head.content_type = Some(out.content_type);
                head.metadata = out.metadata;
                (head, out.payload)
            }
            Err(f) => {
                head.code = Some(f.code);
                head.message = f.message;
                head.retry_after_ms = f.retry_after_ms;
                (head, bytes::Bytes::new())
            }
        }
    }

    /// Back into what the request machine takes.
    pub fn into_done(self, payload: bytes::Bytes) -> ItemDone {
        let result = match (self.code, self.content_type) {
            (None, Some(content_type)) => Ok(ItemOutput { payload, content_type, metadata: self.metadata }),
            (code, _) => Err(ItemFailure {
                code: code.unwrap_or(ErrorCode::Internal),
                message: self.message,
                retry_after_ms: self.retry_after_ms,
            }),
        };
        ItemDone { result, timings: self.timings }
    }
}

/// A worker's state as it advertises it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Pulling work.
    #[default]
    Serving,
    /// Finishing what it holds; takes nothing new.
    Draining,
    /// Gone (its last advert).
    Left,
}

impl WorkerState {
    /// The name used in adverts and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Serving => "serving",
            WorkerState::Draining => "draining",
            WorkerState::Left => "left",
        }
    }
}

/// What a worker serves and how busy it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    /// Worker id (unique per process).
    pub id: String,
    /// Host name of the machine.
    #[serde(default)]
    pub hostname: String,
    /// Serving, draining or left.
    pub state: WorkerState,
    /// Its default device (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: String,
    /// Seconds since it started.
    #[serde(default)]
    pub uptime_s: u64,
    /// Every application version it holds ready.
    #[serde(default)]
    pub apps: Vec<AppAdvert>,
    /// Bundles that failed to load on it.
    #[serde(default)]
    pub load_errors: Vec<tensorgate_protocol::LoadFailure>,
    /// Whether it has applied the fleet's desired state as it was when it
    /// joined (until then routing does not wait for it).
    #[serde(default)]
    pub converged: bool,
}

/// One application version a worker holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppAdvert {
    /// Its `models` entry on the worker (name, version, labels, counters…).
    pub info: tensorgate_protocol::ModelInfo,
    /// Items it pulls at once for this version.
    pub capacity: u64,
    /// Items it holds now.
    pub in_flight: u64,
    /// Items waiting for its model now.
    pub queued: u64,
    /// Forward passes, rows and time in them (µs).
    pub forwards: u64,
    /// Rows run through them.
    pub forward_rows: u64,
    /// Time in forward passes (µs).
    pub forward_us: u64,
}

/// A header map with the JSON `head` and extra text headers.
pub fn headers<T: Serialize>(head: &T, extra: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    // Serialising plain structs of strings and numbers cannot fail.
    map.insert(HEAD, serde_json::to_string(head).unwrap_or_default().as_str());
    for (name, value) in extra {
        map.insert(*name, *value);
    }
    map
}

/// The JSON head of a message, or why it is unreadable.
pub fn head<T: for<'de> Deserialize<'de>>(headers: Option<&HeaderMap>) -> Result<T, String> {
    let value = headers.and_then(|h| h.get(HEAD)).ok_or_else(|| format!("no `{HEAD}` header"))?;
    serde_json::from_str(value.as_str()).map_err(|e| format!("`{HEAD}` header: {e}"))
}

/// A text header's value.
pub fn text<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_round_trips_a_result_and_a_failure() {
        let ok = ItemDone {
            result: Ok(ItemOutput {
                payload: bytes::Bytes::from_static(b"{\"a\":1}"),
                content_type: "application/json".into(),
                metadata: [("k".to_string(), "line\nbreak".to_string())].into_iter().collect(),
            }),
            timings: Timings { forward_us: 5, ..Timings::default() },
        };
        let (head, payload) = ReplyHead::from_done("w1", ok.clone());
        let map = headers(&head, &[]);
        assert!(!map.get(HEAD).unwrap().as_str().contains('\n'), "a header value must not hold a raw newline");
        let back: ReplyHead = super::head(Some(&map)).unwrap();
        assert_eq!(back.worker, "w1");
        assert_eq!(back.into_done(payload), ok);

        let failed = ItemDone {
            result: Err(ItemFailure { code: ErrorCode::Busy, message: "full".into(), retry_after_ms: Some(7) }),
            timings: Timings::default(),
        };
        let (head, payload) = ReplyHead::from_done("w1", failed.clone());
        let back: ReplyHead = super::head(Some(&headers(&head, &[]))).unwrap();
        assert_eq!(back.into_done(payload), failed);
    }

    #[test]
    fn a_missing_or_garbled_head_is_named() {
        assert_eq!(head::<WorkHead>(None).unwrap_err(), "no `Tg-Head` header");
        let mut map = HeaderMap::new();
        map.insert(HEAD, "{not json");
        assert!(head::<WorkHead>(Some(&map)).unwrap_err().starts_with("`Tg-Head` header: "));
    }

    #[test]
    fn a_group_round_trips_and_a_garbled_one_is_named() {
        let head = |i: u32| WorkHead { item: ItemHead { index: i, ..ItemHead::default() }, ..WorkHead::default() };
        let members = vec![
            (7, head(0), bytes::Bytes::from_static(b"abc")),
            (8, head(1), bytes::Bytes::new()),
            (9, head(2), bytes::Bytes::from_static(b"\n\0z")),
        ];
        let body = pack(&members);
        assert_eq!(unpack::<WorkHead>(&body).unwrap(), members);
        assert_eq!(unpack::<WorkHead>(&body.slice(..2)).unwrap_err(), "group body shorter than 4 bytes");
        let cut = body.slice(..body.len() - 1);
        assert_eq!(unpack::<WorkHead>(&cut).unwrap_err(), "group member 9 claims 3 bytes past the body's end");
        let mut longer = body.to_vec();
        longer.push(1);
        assert_eq!(unpack::<WorkHead>(&bytes::Bytes::from(longer)).unwrap_err(), "group body has 1 bytes after its members");
        let mut bad = body.to_vec();
        bad[0] = 0xff;
        assert!(unpack::<WorkHead>(&bytes::Bytes::from(bad)).unwrap_err().contains("holds no"));
    }

    #[test]
    fn subjects_and_consumers_are_per_version() {
        let s = Subjects::new("tg");
        assert_eq!(s.work("tabular", 2), "tg.work.tabular.2");
        assert_eq!(s.consumer("tabular", 2), "tg-tabular-2");
        assert_ne!(s.work("tabular", 2), s.work("tabular", 3));
    }
}
