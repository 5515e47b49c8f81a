//! The cluster's wire: every subject, KV key, object name, header and
//! message between gateways, workers and the engine, in one place, and the
//! one size budget messages are cut to. Small heads travel as JSON;
//! payloads travel as they are, never copied into an envelope.
//!
//! | subject | from → to | kind | body |
//! |---|---|---|---|
//! | `P.work.MODEL.VERSION` | gateway → stream → a worker | JetStream, work queue | a [`pack`]ed group of items ([`WorkHead`] each); headers `Tg-Reply`, `Tg-Gateway`, `Tg-Group` |
//! | `P.reply.GATEWAY` | worker → gateway | request (the gateway's empty answer confirms) | a [`pack`]ed group of results ([`ReplyHead`] each); header `Tg-Group` |
//! | `P.fleet.advert` | worker → gateways | publish, every heartbeat and on change | [`Advert`] (JSON) |
//! | `P.fleet.gateway` | gateway → workers and gateways | publish, every heartbeat | [`GatewayAdvert`] (JSON) |
//! | `P.fleet.ping` | gateway → workers | publish | empty; every worker advertises at once |
//! | `P.fleet.report.NAME.VERSION` | worker → gateway | publish | [`Report`] (JSON) |
//! | `P.fleet.reload` | gateway → workers | request, many answers | `Option<String>` model (JSON) → [`ReloadAnswer`] |
//!
//! Every work and reply message is a **group**: the body holds each
//! member's key, head and payload length, then the payloads back to back;
//! one engine message, acknowledgement and confirmation then serve many
//! items, and each member is still answered (and deduplicated) by its own
//! key. A member whose payload is larger than one message travels in the
//! `P_LARGE` object store: its [`Member::object`] names the object and its
//! payload in the body is empty; the receiver deletes it.
//!
//! Engine state: the work stream `P_WORK`, the KV bucket `P_FLEET` (keys
//! [`bundle_key`] → [`Desired`], [`policy_key`] → the model's default-version
//! policy), the object stores `P_BUNDLES` ([`bundle_object`]) and `P_LARGE`
//! ([`item_object`], [`result_object`]).

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tensorgate_protocol::{ErrorCode, ItemHead, LoadFailure, ModelInfo, Timings};
use tensorgate_server::request::{ItemDone, ItemFailure, ItemOutput};

/// Header carrying the subject a work message's replies go to.
pub const REPLY_TO: &str = "Tg-Reply";
/// Header naming the gateway a work message came from.
pub const GATEWAY: &str = "Tg-Gateway";
/// Header carrying the number of members of a message.
pub const GROUP: &str = "Tg-Group";

/// Room left in a message for headers when cutting payloads to the
/// engine's `max_payload`.
pub const HEADER_ROOM: usize = 4096;

/// The one size budget: what the engine's `max_payload` leaves for bodies,
/// groups and object chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max_payload: usize,
}

impl Budget {
    /// The budget of an engine that takes messages of `max_payload` bytes.
    pub fn new(max_payload: usize) -> Budget {
        Budget { max_payload }
    }

    /// Body bytes one message can carry (headers need room too).
    pub fn body(&self) -> usize {
        self.max_payload.saturating_sub(HEADER_ROOM).max(1)
    }

    /// Bytes of members one group message should carry at most: half a
    /// body, so the engine never holds one item's neighbours hostage to
    /// a nearly full message.
    pub fn group(&self) -> usize {
        (self.body() / 2).max(1)
    }

    /// Whether a payload of `len` bytes travels in the message itself
    /// (else in the large-item store).
    pub fn inline(&self, len: usize) -> bool {
        len + Member::<()>::OVERHEAD <= self.body()
    }

    /// Chunk size of objects written to the stores: as large as one
    /// message allows, within 64 KiB..8 MiB.
    pub fn object_chunk(&self) -> usize {
        self.body().clamp(64 << 10, 8 << 20)
    }

    /// What one member of `payload` bytes with a head of about `head`
    /// bytes counts against a group.
    pub fn member_size(payload: usize, head: usize) -> usize {
        payload + head + Member::<()>::OVERHEAD
    }
}

/// One member of a group: its gateway key, its head, the length of its
/// payload in the body, and the object holding it when it is too large
/// for a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member<H> {
    /// The gateway's key of the item.
    pub key: u64,
    /// Payload bytes in the body (0 when in an object).
    pub len: u64,
    /// The large-item object holding the payload, if it is not in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Its head.
    pub head: H,
}

impl<H> Member<H> {
    /// Bytes a member's entry in the member list costs beside its head.
    pub const OVERHEAD: usize = 96;
}

/// A member's payload: in the message, or in the large-item store.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The bytes themselves.
    Inline(Bytes),
    /// The name of the object holding them.
    Object(String),
}

impl Payload {
    /// Bytes it adds to a message body.
    pub fn body_len(&self) -> usize {
        match self {
            Payload::Inline(b) => b.len(),
            Payload::Object(_) => 0,
        }
    }
}

/// One member as packed or unpacked: key, head, payload.
pub type Packed<H> = (u64, H, Payload);

/// A group body: `u32` little-endian length of the JSON member list, the
/// list, then every inline payload back to back.
pub fn pack<H: Serialize>(members: &[Packed<H>]) -> Bytes {
    let list: Vec<Member<&H>> = members
        .iter()
        .map(|(key, head, payload)| Member {
            key: *key,
            len: payload.body_len() as u64,
            object: match payload {
                Payload::Object(name) => Some(name.clone()),
                Payload::Inline(_) => None,
            },
            head,
        })
        .collect();
    // Serialising plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec(&list).unwrap_or_default();
    let total = 4 + json.len() + members.iter().map(|(_, _, p)| p.body_len()).sum::<usize>();
    let mut body = bytes::BytesMut::with_capacity(total);
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    for (_, _, payload) in members {
        if let Payload::Inline(b) = payload {
            body.extend_from_slice(b);
        }
    }
    body.freeze()
}

/// The members of a group body, each inline payload a slice of `body` (no
/// copies), or why the body is unreadable.
pub fn unpack<H: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<Vec<Packed<H>>, String> {
    let len = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or("group body shorter than 4 bytes")?;
    let json = body.get(4..4 + len).ok_or_else(|| format!("group body of {} bytes holds no {len}-byte member list", body.len()))?;
    let list: Vec<Member<H>> = serde_json::from_slice(json).map_err(|e| format!("group member list: {e}"))?;
    let mut at = 4 + len;
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let payload = match m.object {
            Some(name) if m.len == 0 => Payload::Object(name),
            Some(_) => return Err(format!("group member {} has both an object and {} body bytes", m.key, m.len)),
            None => {
                let end = usize::try_from(m.len).ok().and_then(|n| at.checked_add(n)).filter(|&e| e <= body.len());
                let end = end.ok_or_else(|| format!("group member {} claims {} bytes past the body's end", m.key, m.len))?;
                let slice = body.slice(at..end);
                at = end;
                Payload::Inline(slice)
            }
        };
        out.push((m.key, m.head, payload));
    }
    if at != body.len() {
        return Err(format!("group body has {} bytes after its members", body.len() - at));
    }
    Ok(out)
}

/// The headers of a message of `count` members.
pub fn group_headers(count: usize, extra: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(GROUP, count.to_string().as_str());
    for (name, value) in extra {
        map.insert(*name, *value);
    }
    map
}

/// A text header's value.
pub fn text<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// Members in a message: its `Tg-Group` count (at least 1).
pub fn group_size(headers: Option<&HeaderMap>) -> usize {
    text(headers, GROUP).and_then(|n| n.parse().ok()).unwrap_or(1).max(1)
}

/// Names of one cluster's subjects, streams, buckets, keys and objects
/// (one prefix: several clusters can share one engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Names { prefix: prefix.to_string() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stem(&self) -> String {
        self.prefix.to_ascii_uppercase()
    }

    /// Where items for one application version are queued.
    pub fn work(&self, model: &str, version: u64) -> String {
        format!("{}.work.{model}.{version}", self.prefix)
    }

    /// Every work subject (the work stream's filter).
    pub fn all_work(&self) -> String {
        format!("{}.work.>", self.prefix)
    }

    /// Where a gateway's replies arrive.
    pub fn reply(&self, gateway: &str) -> String {
        format!("{}.reply.{gateway}", self.prefix)
    }

    /// Where workers advertise.
    pub fn advert(&self) -> String {
        format!("{}.fleet.advert", self.prefix)
    }

    /// Where gateways advertise.
    pub fn gateway_advert(&self) -> String {
        format!("{}.fleet.gateway", self.prefix)
    }

    /// Where gateways ask every worker to advertise now.
    pub fn ping(&self) -> String {
        format!("{}.fleet.ping", self.prefix)
    }

    /// Where workers report on one version's fleet change.
    pub fn report(&self, name: &str, version: u64) -> String {
        format!("{}.fleet.report.{name}.{version}", self.prefix)
    }

    /// Where gateways ask every worker to reload its repository.
    pub fn reload(&self) -> String {
        format!("{}.fleet.reload", self.prefix)
    }

    /// The durable pull consumer shared by every worker serving one version
    /// (model names are `[A-Za-z0-9_-]`, valid in consumer names).
    pub fn consumer(&self, model: &str, version: u64) -> String {
        format!("{}-{model}-{version}", self.prefix)
    }

    /// The JetStream stream that holds queued items.
    pub fn work_stream(&self) -> String {
        format!("{}_WORK", self.stem())
    }

    /// The KV bucket of the fleet's desired state and policies.
    pub fn fleet_bucket(&self) -> String {
        format!("{}_FLEET", self.stem())
    }

    /// The object store of bundle archives.
    pub fn bundle_store(&self) -> String {
        format!("{}_BUNDLES", self.stem())
    }

    /// The object store of payloads and results too large for a message.
    pub fn large_store(&self) -> String {
        format!("{}_LARGE", self.stem())
    }
}

/// Prefix of the KV keys naming desired bundles (`bundle.NAME.VERSION`).
pub const BUNDLE_PREFIX: &str = "bundle.";
/// Prefix of the KV keys holding default-version policies (`default.NAME`).
pub const POLICY_PREFIX: &str = "default.";

/// The KV key of one desired version.
pub fn bundle_key(name: &str, version: u64) -> String {
    format!("{BUNDLE_PREFIX}{name}.{version}")
}

/// `(name, version)` of a bundle key.
pub fn parse_bundle_key(key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix(BUNDLE_PREFIX)?;
    let (name, version) = rest.rsplit_once('.')?;
    Some((name.to_string(), version.parse().ok()?))
}

/// The KV key of a model's default-version policy.
pub fn policy_key(name: &str) -> String {
    format!("{POLICY_PREFIX}{name}")
}

/// The object holding one bundle archive (one per content).
pub fn bundle_object(name: &str, version: u64, sha256: &str) -> String {
    format!("{name}/{version}/{sha256}")
}

/// The object holding a large item payload sent by `gateway`.
pub fn item_object(gateway: &str, key: u64) -> String {
    format!("i-{gateway}-{key}")
}

/// The object holding a large result of `worker` (`unique`: any id unique to it).
pub fn result_object(worker: &str, unique: &str) -> String {
    format!("r-{worker}-{unique}")
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

impl WorkHead {
    /// Whether the item's deadline has passed at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.deadline_unix_ms.is_some_and(|d| now_unix_ms > d)
    }
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
    pub fn from_done(worker: &str, done: ItemDone) -> (ReplyHead, Bytes) {
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
                (head, Bytes::new())
            }
        }
    }

    /// Back into what the request machine takes.
    pub fn into_done(self, payload: Bytes) -> ItemDone {
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

    /// Bytes the head adds to a group, roughly.
    pub fn size(&self) -> usize {
        256 + self.message.len() + self.metadata.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
    }
}

/// Bytes an item's head adds to a group, roughly.
pub fn item_head_size(head: &ItemHead) -> usize {
    256 + head.content_type.len() + head.metadata.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
}

/// A worker's or gateway's state as it advertises it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Pulling work (a gateway: forwarding it).
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
    /// Worker id (kept across restarts with the same state directory).
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
    /// Its advert period (ms): silent for three, it is gone.
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// Every application version it holds ready.
    #[serde(default)]
    pub apps: Vec<AppAdvert>,
    /// Bundles that failed to load on it.
    #[serde(default)]
    pub load_errors: Vec<LoadFailure>,
    /// Whether it has applied the fleet's desired state as it was when it
    /// joined (until then routing does not wait for it).
    #[serde(default)]
    pub converged: bool,
}

/// One application version a worker holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppAdvert {
    /// Its `models` entry on the worker (name, version, labels, counters…).
    pub info: ModelInfo,
    /// Items it pulls at once for this version.
    pub capacity: u64,
    /// Items it holds now.
    pub in_flight: u64,
    /// Items waiting for its model now.
    pub queued: u64,
    /// Forward passes run.
    pub forwards: u64,
    /// Rows run through them.
    pub forward_rows: u64,
    /// Time in forward passes (µs).
    pub forward_us: u64,
}

/// A gateway's advert: that it is alive, and the requests it routed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayAdvert {
    /// Gateway id (its reply subject's last token).
    pub id: String,
    /// Serving, or left (its last advert, on a clean shutdown).
    pub state: WorkerState,
    /// Its advert period (ms): silent for three, it is gone.
    pub heartbeat_ms: u64,
    /// Requests it routed per model version since it started.
    #[serde(default)]
    pub requests: Vec<RequestCount>,
}

/// Requests routed to one model version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Requests.
    pub requests: u64,
}

/// One bundle the fleet should hold (the value of a [`bundle_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Object holding the archive.
    pub object: String,
    /// SHA-256 of the archive (hex).
    pub sha256: String,
    /// Archive size.
    pub bytes: u64,
}

/// A worker's outcome for one desired bundle (or deletion).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Worker id.
    pub worker: String,
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// The content it loaded (empty for a deletion).
    #[serde(default)]
    pub sha256: String,
    /// Why it failed, naming the file or field (none: ready, or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Load time (µs).
    #[serde(default)]
    pub load_us: u64,
}

/// A worker's answer to a fleet-wide `reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// Worker id.
    pub worker: String,
    /// Versions loaded.
    pub loaded: Vec<ModelInfo>,
    /// Versions removed.
    pub removed: Vec<ModelInfo>,
    /// Bundles left as they were.
    pub unchanged: usize,
    /// Bundles that failed.
    pub errors: Vec<LoadFailure>,
}

/// A message body as JSON (plain structs of strings and numbers cannot
/// fail to serialise).
pub fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_round_trips_a_result_and_a_failure() {
        let ok = ItemDone {
            result: Ok(ItemOutput {
                payload: Bytes::from_static(b"{\"a\":1}"),
                content_type: "application/json".into(),
                metadata: [("k".to_string(), "line\nbreak".to_string())].into_iter().collect(),
            }),
            timings: Timings { forward_us: 5, ..Timings::default() },
        };
        let (head, payload) = ReplyHead::from_done("w1", ok.clone());
        let body = pack(&[(3, head, Payload::Inline(payload))]);
        let mut back = unpack::<ReplyHead>(&body).unwrap();
        let (key, head, Payload::Inline(payload)) = back.remove(0) else { panic!("inline") };
        assert_eq!((key, head.worker.as_str()), (3, "w1"));
        assert_eq!(head.into_done(payload), ok);

        let failed = ItemDone {
            result: Err(ItemFailure { code: ErrorCode::Busy, message: "full".into(), retry_after_ms: Some(7) }),
            timings: Timings::default(),
        };
        let (head, payload) = ReplyHead::from_done("w1", failed.clone());
        assert_eq!(head.into_done(payload), failed);
    }

    #[test]
    fn a_group_round_trips_inline_and_stored_members_and_a_garbled_one_is_named() {
        let head = |i: u32| WorkHead { item: ItemHead { index: i, ..ItemHead::default() }, ..WorkHead::default() };
        let members = vec![
            (7, head(0), Payload::Inline(Bytes::from_static(b"abc"))),
            (8, head(1), Payload::Object("i-g-8".into())),
            (9, head(2), Payload::Inline(Bytes::from_static(b"\n\0z"))),
        ];
        let body = pack(&members);
        assert_eq!(unpack::<WorkHead>(&body).unwrap(), members);
        assert_eq!(unpack::<WorkHead>(&body.slice(..2)).unwrap_err(), "group body shorter than 4 bytes");
        let cut = body.slice(..body.len() - 1);
        assert_eq!(unpack::<WorkHead>(&cut).unwrap_err(), "group member 9 claims 3 bytes past the body's end");
        let mut longer = body.to_vec();
        longer.push(1);
        assert_eq!(unpack::<WorkHead>(&Bytes::from(longer)).unwrap_err(), "group body has 1 bytes after its members");
        let mut bad = body.to_vec();
        bad[0] = 0xff;
        assert!(unpack::<WorkHead>(&Bytes::from(bad)).unwrap_err().contains("holds no"));
    }

    #[test]
    fn names_are_per_prefix_and_version_and_keys_round_trip() {
        let n = Names::new("tg");
        assert_eq!(n.work("tabular", 2), "tg.work.tabular.2");
        assert_eq!(n.consumer("tabular", 2), "tg-tabular-2");
        assert_ne!(n.work("tabular", 2), n.work("tabular", 3));
        assert_eq!((n.work_stream(), n.fleet_bucket(), n.large_store()), ("TG_WORK".into(), "TG_FLEET".into(), "TG_LARGE".into()));
        assert_eq!(parse_bundle_key(&bundle_key("lartpc-dense_v", 12)), Some(("lartpc-dense_v".into(), 12)));
        assert_eq!(parse_bundle_key("bundle.x"), None);
        assert_eq!(parse_bundle_key("other.x.1"), None);
    }

    #[test]
    fn the_budget_keeps_headers_room_and_sends_large_payloads_aside() {
        let b = Budget::new(1 << 20);
        assert_eq!(b.body(), (1 << 20) - HEADER_ROOM);
        assert_eq!(b.group(), b.body() / 2);
        assert!(b.inline(1000));
        assert!(!b.inline(b.body()));
        assert_eq!(Budget::new(1 << 30).object_chunk(), 8 << 20);
        assert_eq!(Budget::new(1000).object_chunk(), 64 << 10);
    }

    #[test]
    fn a_deadline_is_past_only_after_it() {
        let h = WorkHead { deadline_unix_ms: Some(1000), ..WorkHead::default() };
        assert!(!h.expired(1000) && h.expired(1001));
        assert!(!WorkHead::default().expired(u64::MAX));
    }
}
