//! Status and management requests (`status`; `models`, `upload`, `fetch`,
//! `delete`, `reload`, `promote`, `rollback`) answered from the front end's
//! [`Management`](crate::manage::Management) and encoded as QUIC frames.
//! The caller has already checked the role.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{encode, encode_item_frame, Compression, Frame, FrameKind, ItemHead, RequestHeader, StatusReply};

use super::Shared;
use crate::request::Reject;

/// Bundle bytes per `Result` frame of a `fetch` reply.
pub const FETCH_CHUNK: usize = 4 << 20;

/// Runs one status or management request; returns the encoded reply, in
/// pieces to write in order. `upload` holds an upload's archive chunks in order.
pub(crate) async fn handle(shared: &Arc<Shared>, header: RequestHeader, upload: Vec<Bytes>) -> Result<Vec<Bytes>, Reject> {
    let start = Instant::now();
    let op = header.op();
    if let RequestHeader::Status(_) = header {
        let mut out = BytesMut::new();
        encode(&Frame::Status(status(shared).await), &mut out);
        return Ok(vec![out.freeze()]);
    }
    let managed = shared.management.manage(header, upload).await?;
    let mut out = managed.archive.map(|a| archive_frames(&a)).unwrap_or_default();
    let mut reply = managed.reply;
    reply.op = op.to_string();
    reply.elapsed_us = start.elapsed().as_micros() as u64;
    if op != "models" {
        tracing::info!(op, elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "{}", reply.message);
    }
    let mut last = BytesMut::new();
    encode(&Frame::Reply(reply), &mut last);
    out.push(last.freeze());
    Ok(out)
}

/// A `fetch` reply's `Result` frames: the archive in [`FETCH_CHUNK`] pieces.
fn archive_frames(archive: &Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    for (index, start) in (0..archive.len()).step_by(FETCH_CHUNK).enumerate() {
        let chunk = archive.slice(start..(start + FETCH_CHUNK).min(archive.len()));
        let head = ItemHead {
            index: index as u32,
            content_type: "application/x-tar+zstd".into(),
            compression: Compression::None,
            ..ItemHead::default()
        };
        frames.push(encode_item_frame(FrameKind::Result, &head, chunk.len()));
        frames.push(chunk);
    }
    frames
}

/// The front end's status: what its management serves, and its own counters.
async fn status(shared: &Shared) -> StatusReply {
    let mut s = shared.management.status().await;
    crate::item_stats::annotate(&mut s.models);
    StatusReply {
        host_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: shared.started.elapsed().as_secs(),
        role: s.role.to_string(),
        workers: s.workers,
        models: s.models,
        items_cancelled: shared.items_cancelled.load(Ordering::Relaxed),
        streams_refused: shared.streams_refused.load(Ordering::Relaxed),
        load_errors: s.load_errors,
    }
}
