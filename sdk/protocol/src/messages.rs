//! The messages carried in frames.
//!
//! Headers, errors and summaries are MessagePack maps with named fields, so
//! that any language's MessagePack library reads them; item payloads travel
//! as raw bytes next to a small MessagePack head and are never re-encoded.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtocolError};

/// Compression applied to one item or result payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Raw bytes.
    #[default]
    None,
    /// A zstd frame.
    Zstd,
    /// A compression this version does not know (named by a newer peer):
    /// ignored in `accept`, an item error on an item.
    #[serde(other)]
    Unsupported,
}

/// The first frame on a stream: what the client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RequestHeader {
    /// Run items through an application; `Item` frames and `End` follow.
    Predict(PredictHeader),
    /// Ask for the host's status; `End` follows immediately. Role: predict.
    Status(StatusHeader),
    /// List every application version, loaded or failed; `End` follows. Role: admin.
    Models(AdminHeader),
    /// Install a bundle: `Item` frames carry a `.tar.zst` archive in order of
    /// their index, then `End`. Role: admin.
    Upload(AdminHeader),
    /// Download a bundle as a `.tar.zst` archive, sent back in `Result` frames
    /// (chunks in index order) before the `Reply`. Role: admin.
    Fetch(AdminHeader),
    /// Remove a version (or every version) of a model. Role: admin.
    Delete(AdminHeader),
    /// Re-read the repository on disk (one model or all) and load what changed. Role: admin.
    Reload(AdminHeader),
    /// Make `version` the model's default (the version served when a
    /// request names none), until a newer version is installed. Role: admin.
    Promote(AdminHeader),
    /// The model's default version is bad: serve the newest earlier version
    /// that is not rolled back instead, and mark the current one rolled back
    /// (it still serves requests that name it). Role: admin.
    Rollback(AdminHeader),
}

/// The role a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Run predictions and read the status.
    Predict,
    /// Everything, including managing the repository.
    Admin,
}

impl RequestHeader {
    /// The operation's name as on the wire (`predict`, `status`, `upload`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            RequestHeader::Predict(_) => "predict",
            RequestHeader::Status(_) => "status",
            RequestHeader::Models(_) => "models",
            RequestHeader::Upload(_) => "upload",
            RequestHeader::Fetch(_) => "fetch",
            RequestHeader::Delete(_) => "delete",
            RequestHeader::Reload(_) => "reload",
            RequestHeader::Promote(_) => "promote",
            RequestHeader::Rollback(_) => "rollback",
        }
    }

    /// The role this operation needs.
    pub fn role(&self) -> Role {
        match self {
            RequestHeader::Predict(_) | RequestHeader::Status(_) => Role::Predict,
            _ => Role::Admin,
        }
    }

    /// The bearer token presented, if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            RequestHeader::Predict(h) => h.token.as_deref(),
            RequestHeader::Status(h) => h.token.as_deref(),
            RequestHeader::Models(h)
            | RequestHeader::Upload(h)
            | RequestHeader::Fetch(h)
            | RequestHeader::Delete(h)
            | RequestHeader::Reload(h)
            | RequestHeader::Promote(h)
            | RequestHeader::Rollback(h) => h.token.as_deref(),
        }
    }

    /// Whether `Item` frames may follow this header.
    pub fn takes_items(&self) -> bool {
        matches!(self, RequestHeader::Predict(_) | RequestHeader::Upload(_))
    }

    /// A status request with no credentials.
    pub fn status() -> Self {
        RequestHeader::Status(StatusHeader::default())
    }
}

/// Header of a status request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusHeader {
    /// Bearer token, when the host requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Header of a management request (`models`, `upload`, `fetch`, `delete`,
/// `reload`, `promote`, `rollback`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminHeader {
    /// Bearer token with the admin role (not needed from loopback on a host
    /// with no admin tokens configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Model name: required by `fetch`, `delete`, `promote` and `rollback`;
    /// limits `reload` to one model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Version: `fetch` defaults to the newest; `delete` without one removes
    /// every version; required by `promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `upload`: replace an existing bundle of the same name and version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// Header of a predict request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictHeader {
    /// Application (model) name.
    pub model: String,
    /// Version to use; the newest ready version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Client-chosen id echoed in logs and the summary.
    #[serde(default)]
    pub request_id: String,
    /// Compressions the client accepts for result payloads.
    #[serde(default)]
    pub accept: Vec<Compression>,
    /// Milliseconds from receipt after which unfinished items fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Bearer token, when the host requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Head of an `Item` frame; the payload follows it in the same frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemHead {
    /// Index of the item within the request, unique per request.
    pub index: u32,
    /// MIME-like content type of the payload, e.g. `application/json`.
    #[serde(default)]
    pub content_type: String,
    /// Free-form string metadata handed to the plugin.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Compression of the payload bytes as sent.
    #[serde(default)]
    pub compression: Compression,
}

/// One item of a request, or one result: a head and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Index, content type, metadata and compression.
    pub head: ItemHead,
    /// Payload bytes, as sent (possibly compressed).
    pub payload: Bytes,
}

impl Item {
    /// The payload with its compression removed, refusing to produce more than
    /// `max_bytes` (so a zstd bomb is stopped before memory is spent).
    pub fn decompressed(&self, max_bytes: u64) -> Result<Bytes, ProtocolError> {
        match self.head.compression {
            Compression::None => Ok(self.payload.clone()),
            Compression::Zstd => {
                let index = self.head.index;
                let cap = usize::try_from(max_bytes).unwrap_or(usize::MAX);
                // The frame header may state the content size: refuse early,
                // else decompress in one pass into a buffer of exactly that size.
                if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(&self.payload) {
                    if n > max_bytes {
                        return Err(ProtocolError::DecompressedTooLarge { index, limit: max_bytes });
                    }
                    if zstd::zstd_safe::find_frame_compressed_size(&self.payload) == Ok(self.payload.len()) {
                        return zstd::bulk::decompress(&self.payload, n as usize)
                            .map(Bytes::from)
                            .map_err(|e| ProtocolError::Decompress { index, reason: e.to_string() });
                    }
                }
                decompress_capped(&self.payload, cap).map_err(|e| match e {
                    CapError::TooLarge => {
                        ProtocolError::DecompressedTooLarge { index, limit: max_bytes }
                    }
                    CapError::Zstd(reason) => ProtocolError::Decompress { index, reason },
                })
            }
            Compression::Unsupported => Err(ProtocolError::UnsupportedCompression { index: self.head.index }),
        }
    }
}

enum CapError {
    TooLarge,
    Zstd(String),
}

/// Streams the decompression so that at most `cap` bytes are ever allocated.
fn decompress_capped(data: &[u8], cap: usize) -> Result<Bytes, CapError> {
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::new(data).map_err(|e| CapError::Zstd(e.to_string()))?;
    // A frame may ask for a window (decoder memory) far larger than its
    // content: allow no more than the output cap needs, but at least the 8 MiB
    // that zstd's streaming levels 1-19 use, and at most its default 128 MiB.
    let window_log = (usize::BITS - cap.max(1).saturating_sub(1).leading_zeros()).clamp(23, 27);
    decoder.window_log_max(window_log).map_err(|e| CapError::Zstd(e.to_string()))?;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(cap));
    let mut limited = (&mut decoder).take(cap as u64 + 1);
    limited.read_to_end(&mut out).map_err(|e| CapError::Zstd(e.to_string()))?;
    if out.len() > cap {
        return Err(CapError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// Default zstd level for payloads (chosen by measurement: docs/protocol.md).
pub const ZSTD_LEVEL: i32 = -1;
/// Payloads smaller than this are never worth compressing.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// Compresses `data` with zstd at `level`.
pub fn compress(data: &[u8], level: i32) -> Bytes {
    // Compressing into memory cannot fail except on allocation failure.
    Bytes::from(zstd::bulk::compress(data, level).unwrap_or_default())
}

/// `data` compressed with zstd at `level` when that is worth it (at least
/// [`COMPRESS_MIN_BYTES`] and smaller once compressed); otherwise unchanged.
pub fn maybe_compress(data: Bytes, level: i32) -> (Bytes, Compression) {
    if data.len() >= COMPRESS_MIN_BYTES {
        let packed = compress(&data, level);
        if !packed.is_empty() && packed.len() < data.len() {
            return (packed, Compression::Zstd);
        }
    }
    (data, Compression::None)
}

/// The failure of one item; its siblings are unaffected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    /// Index of the failed item.
    pub index: u32,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable message naming what was wrong.
    pub message: String,
    /// For `busy`: a suggested wait before retrying (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The metadata the client sent with the item, given back so that a
    /// failure can be matched to its event, jet or file without the index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The failure of a whole request (nothing else follows on the stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestError {
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable message naming what was wrong.
    pub message: String,
}

/// Server-side time spent on a request, summed over its items (microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Waiting in queues.
    pub queue_us: u64,
    /// In the plugin's `preprocess`.
    pub preprocess_us: u64,
    /// In the model's forward pass.
    pub forward_us: u64,
    /// In the plugin's `postprocess`.
    pub postprocess_us: u64,
}

/// The last frame of a predict reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The request id from the header.
    #[serde(default)]
    pub request_id: String,
    /// Application name that served the request.
    #[serde(default)]
    pub model: String,
    /// Version that served the request.
    #[serde(default)]
    pub version: u64,
    /// Items answered with a result.
    pub ok: u32,
    /// Items answered with an error.
    pub failed: u32,
    /// Server-side time split.
    #[serde(default)]
    pub timings: Timings,
    /// Wall time on the host from the Header's arrival to the Summary (microseconds).
    #[serde(default)]
    pub elapsed_us: u64,
}

/// One loaded application, as listed by `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Description from the manifest.
    #[serde(default)]
    pub description: String,
    /// Device the model runs on (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: String,
    /// Items served so far.
    #[serde(default)]
    pub items_ok: u64,
    /// Items failed so far.
    #[serde(default)]
    pub items_failed: u64,
    /// Forward passes run so far.
    #[serde(default)]
    pub forwards: u64,
    /// Rows run through them (`forward_rows / forwards` is the mean batch size).
    #[serde(default)]
    pub forward_rows: u64,
    /// Total time in forward passes (microseconds).
    #[serde(default)]
    pub forward_us: u64,
    /// Of the forward passes, those run on the async worker of a request
    /// alone on the host rather than by the model's executor thread.
    #[serde(default)]
    pub forwards_inline: u64,
    /// Items waiting for the model now.
    #[serde(default)]
    pub queued: u64,
    /// Idle plugin instances now.
    #[serde(default)]
    pub plugin_instances: u64,
    /// Gateway: workers serving this version (0 on a host).
    #[serde(default)]
    pub workers: u64,
    /// Gateway: items the fleet runs at once for it (0 on a host).
    #[serde(default)]
    pub capacity: u64,
    /// Gateway: items workers hold for it now (0 on a host).
    #[serde(default)]
    pub in_flight: u64,
    /// Whether this is the version served when a request names none.
    #[serde(default)]
    pub default: bool,
    /// Why this version was rolled back, if it was (as in `models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Its trial, while it is a canary (as in `models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryInfo>,
    /// Items of this version that the answering process (host or gateway)
    /// failed, by error code, since it started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    /// Median item latency in that process (µs, from a fixed-bucket histogram
    /// by linear interpolation; 0: no item yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_p50_us: u64,
    /// 90th percentile of the item latency (µs, as `latency_p50_us`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_p90_us: u64,
    /// 99th percentile of the item latency (µs, as `latency_p50_us`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_p99_us: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One worker of a gateway's fleet, as listed by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: String,
    /// Its machine's host name.
    #[serde(default)]
    pub hostname: String,
    /// `serving` or `draining`.
    #[serde(default)]
    pub state: String,
    /// Its default device.
    #[serde(default)]
    pub device: String,
    /// Seconds since it started.
    #[serde(default)]
    pub uptime_s: u64,
    /// The versions it serves, as `name/version`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Items it runs at once, over all its versions.
    #[serde(default)]
    pub capacity: u64,
    /// Items it holds now.
    #[serde(default)]
    pub in_flight: u64,
    /// Items it answered with a result.
    #[serde(default)]
    pub items_ok: u64,
    /// Items that failed on it.
    #[serde(default)]
    pub items_failed: u64,
}

/// Reply to a `status` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Host software version.
    pub host_version: String,
    /// Seconds since the host started.
    pub uptime_s: u64,
    /// Loaded applications.
    pub models: Vec<ModelStatus>,
    /// Items whose work was cancelled because their client went away or
    /// their request was rejected mid-stream.
    #[serde(default)]
    pub items_cancelled: u64,
    /// Streams refused because a connection had `max_streams_per_connection` open.
    #[serde(default)]
    pub streams_refused: u64,
    /// Bundles on disk that failed to load (the versions that were serving
    /// before keep serving).
    #[serde(default)]
    pub load_errors: Vec<LoadFailure>,
    /// `host` or `gateway`.
    #[serde(default)]
    pub role: String,
    /// Gateway: the workers of its fleet.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
}

/// A bundle that failed to load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailure {
    /// Model name (from the directory when the manifest is unreadable).
    pub model: String,
    /// Version (from the directory), if it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// What went wrong, naming the file or field.
    pub error: String,
    /// When (seconds since the Unix epoch).
    #[serde(default)]
    pub at_unix_s: u64,
}

/// One application version as listed by `models` and affected by other
/// management commands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Application name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// `ready` (serving), `failed` (on disk, did not load) or `deleted`.
    pub state: String,
    /// Description from the manifest.
    #[serde(default)]
    pub description: String,
    /// Class labels from the manifest.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Declared model inputs (`name: dtype[shape]`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Declared model outputs.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Device of the model.
    #[serde(default)]
    pub device: String,
    /// Whether this is the version served when a request names none.
    #[serde(default)]
    pub default: bool,
    /// Why this version was rolled back (it then serves only requests that
    /// name it); absent when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Its trial, while it is a canary; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryInfo>,
    /// Time to load (plugin, model and warm-up), microseconds.
    #[serde(default)]
    pub load_us: u64,
    /// Whether the plugin came from the compile cache.
    #[serde(default)]
    pub plugin_cached: bool,
    /// When it was loaded (seconds since the Unix epoch).
    #[serde(default)]
    pub loaded_at_unix_s: u64,
    /// Requests routed to it.
    #[serde(default)]
    pub requests: u64,
    /// Items served.
    #[serde(default)]
    pub items_ok: u64,
    /// Items failed.
    #[serde(default)]
    pub items_failed: u64,
    /// Bundle size on disk (bytes).
    #[serde(default)]
    pub bundle_bytes: u64,
    /// For `failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plugin's name (`tensors`: the generic plugin, named tensors in and out).
    #[serde(default)]
    pub plugin: String,
    /// Content types the plugin accepts (empty: any).
    #[serde(default)]
    pub accepts: Vec<String>,
    /// The model file's format (`torchscript`, `onnx`, `aoti`).
    #[serde(default)]
    pub format: String,
    /// Most rows in one forward pass (1: items are not batched together).
    #[serde(default)]
    pub max_batch: u64,
    /// How long a batch that is not full may wait for more items (µs).
    #[serde(default)]
    pub max_delay_us: u64,
    /// Copies of the model, each on its own executor thread.
    #[serde(default)]
    pub instances: u64,
}

/// A version on trial: the share of requests it takes and how it does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryInfo {
    /// Share of the requests naming no version it takes (0..=1).
    pub share: f64,
    /// Items it must answer before it is promoted.
    pub items_needed: u64,
    /// Items it answered with a result since the trial began.
    #[serde(default)]
    pub items_ok: u64,
    /// Items it failed since the trial began.
    #[serde(default)]
    pub items_failed: u64,
}

/// The final frame of a management request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminReply {
    /// The operation answered.
    pub op: String,
    /// What was done, for people.
    #[serde(default)]
    pub message: String,
    /// `models`: every version; `upload`/`reload`: the versions loaded;
    /// `delete`: the versions removed; `fetch`: the version sent;
    /// `promote`/`rollback`: every version of the model, after the change.
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    /// `reload`: bundles that failed to load (old versions keep serving).
    #[serde(default)]
    pub errors: Vec<LoadFailure>,
    /// Host-side time spent (microseconds).
    #[serde(default)]
    pub elapsed_us: u64,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Client: request header.
    Header(RequestHeader),
    /// Client: one item.
    Item(Item),
    /// Client: no more items.
    End,
    /// Host: the result of one item.
    Result(Item),
    /// Host: the failure of one item.
    ItemError(ItemError),
    /// Host: the last frame of a predict reply.
    Summary(Summary),
    /// Host: the whole request failed.
    RequestError(RequestError),
    /// Host: reply to `status`.
    Status(StatusReply),
    /// Host: the final frame of a management request.
    Reply(AdminReply),
}
