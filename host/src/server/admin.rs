//! Status and management requests (`status`; `models`, `upload`, `fetch`,
//! `delete`, `reload`, `promote`, `rollback`). The caller has already checked the role. Repository
//! changes block (unpacking, compiling, loading a model), so they run on
//! blocking threads.

use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    encode, encode_item_frame, AdminHeader, AdminReply, Compression, ErrorCode, Frame, FrameKind, ItemHead,
    ModelStatus, RequestHeader, StatusReply,
};

use super::{Backend, Shared};
use crate::application::ModelState;
use crate::repository::{ChangeError, PolicyError, StoreError};

/// Bundle bytes per `Result` frame of a `fetch` reply.
pub const FETCH_CHUNK: usize = 4 << 20;

/// A failed management request: the code and message of its `RequestError`.
pub type Failure = (ErrorCode, String);

/// Runs one status or management request; returns the encoded reply, in
/// pieces to write in order. `upload` holds an upload's archive chunks in order.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    header: RequestHeader,
    upload: Vec<Bytes>,
) -> Result<Vec<Bytes>, Failure> {
    let start = Instant::now();
    let op = header.op();
    let repo = match (&shared.backend, &header) {
        (_, RequestHeader::Status(_)) => {
            let mut out = BytesMut::new();
            encode(&Frame::Status(status(shared).await), &mut out);
            return Ok(vec![out.freeze()]);
        }
        (Backend::Local(repo), _) => repo.clone(),
        (Backend::Fleet(fleet), RequestHeader::Models(_)) => {
            let (models, errors) = fleet.models();
            let reply = AdminReply { op: op.to_string(), models, errors, elapsed_us: start.elapsed().as_micros() as u64, ..AdminReply::default() };
            let mut out = BytesMut::new();
            encode(&Frame::Reply(reply), &mut out);
            return Ok(vec![out.freeze()]);
        }
        (Backend::Fleet(fleet), _) => {
            let (archive, mut reply) = fleet.manage(header, upload).await?;
            let mut out = archive.map(|a| archive_frames(&a)).unwrap_or_default();
            reply.op = op.to_string();
            reply.elapsed_us = start.elapsed().as_micros() as u64;
            tracing::info!(op, elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "fleet: {}", reply.message);
            let mut last = BytesMut::new();
            encode(&Frame::Reply(reply), &mut last);
            out.push(last.freeze());
            return Ok(out);
        }
    };
    let blocking = |f: Box<dyn FnOnce() -> Result<(Vec<Bytes>, AdminReply), Failure> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| (ErrorCode::Internal, format!("{op} task failed: {e}")))?
    };
    let (mut out, mut reply) = match header {
        RequestHeader::Models(_) => {
            (Vec::new(), AdminReply { models: repo.models(), errors: repo.failures(), ..AdminReply::default() })
        }
        RequestHeader::Upload(h) => {
            blocking(Box::new(move || {
                let archive = join_chunks(upload);
                let app = repo.upload(&archive, h.replace).map_err(change_failure)?;
                let message = format!("{} version {} loaded in {:.1} ms and serving", app.name(), app.version(), app.load_time.as_secs_f64() * 1e3);
                Ok((Vec::new(), AdminReply { message, models: vec![app.info(true)], ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Fetch(h) => {
            let model = required(&h, op)?;
            // The newest version when none is named (not the default, nor a canary).
            let version = h.version.or_else(|| repo.versions(&model).last().copied());
            let app = repo.resolve(&model, version).map_err(|e| (ErrorCode::UnknownModel, e.to_string()))?;
            blocking(Box::new(move || {
                let archive = tensorgate_client::pack_bundle(&app.dir)
                    .map_err(|e| (ErrorCode::Internal, format!("packing {}: {e}", app.dir.display())))?;
                let archive = Bytes::from(archive);
                let frames = archive_frames(&archive);
                let message = format!("{} version {}: {} bytes", app.name(), app.version(), archive.len());
                Ok((frames, AdminReply { message, models: vec![app.info(false)], ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Delete(h) => {
            let model = required(&h, op)?;
            blocking(Box::new(move || {
                let removed = repo.delete(&model, h.version).map_err(change_failure)?;
                let versions: Vec<String> = removed.iter().map(|m| m.version.to_string()).collect();
                let message = format!("{model}: deleted version(s) {}", versions.join(", "));
                Ok((Vec::new(), AdminReply { message, models: removed, ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Reload(h) => {
            blocking(Box::new(move || {
                let report = repo.reload(h.model.as_deref());
                let message = format!(
                    "{} loaded, {} removed, {} unchanged, {} failed",
                    report.loaded.len(),
                    report.removed.len(),
                    report.unchanged,
                    report.errors.len()
                );
                let mut models: Vec<_> = report.loaded.iter().map(|a| a.info(false)).collect();
                models.extend(report.removed.iter().map(|a| {
                    let mut info = a.info(false);
                    info.state = ModelState::Deleted.to_string();
                    info
                }));
                Ok((Vec::new(), AdminReply { message, models, errors: report.errors, ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Promote(h) => {
            let model = required(&h, op)?;
            let version = h.version.ok_or_else(|| (ErrorCode::BadRequest, "`promote` needs a `version`".to_string()))?;
            // Behind the change lock, which an upload may hold while it compiles.
            blocking(Box::new(move || {
                let models = repo.promote(&model, version).map_err(change_failure)?;
                let message = format!("{model}: version {version} is the default");
                Ok((Vec::new(), AdminReply { message, models, ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Rollback(h) => {
            let model = required(&h, op)?;
            blocking(Box::new(move || {
                let ((from, to), models) = repo.rollback(&model, "rolled back by hand").map_err(change_failure)?;
                let message = format!("{model}: version {from} rolled back, version {to} is the default");
                Ok((Vec::new(), AdminReply { message, models, ..AdminReply::default() }))
            }))
            .await?
        }
        RequestHeader::Predict(_) | RequestHeader::Status(_) => {
            return Err((ErrorCode::Internal, format!("`{op}` is not a management request")))
        }
    };
    reply.op = op.to_string();
    reply.elapsed_us = start.elapsed().as_micros() as u64;
    tracing::info!(op, elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "{}", reply.message);
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

fn required(h: &AdminHeader, op: &str) -> Result<String, Failure> {
    h.model.clone().ok_or_else(|| (ErrorCode::BadRequest, format!("`{op}` needs a `model`")))
}

/// The archive from its chunks (already in index order).
fn join_chunks(chunks: Vec<Bytes>) -> Vec<u8> {
    let mut archive = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        archive.extend_from_slice(&c);
    }
    archive
}

/// The host's status: every loaded version with its counters (a
/// gateway's: its fleet's).
async fn status(shared: &Shared) -> StatusReply {
    let repo = match &shared.backend {
        Backend::Local(repo) => repo,
        Backend::Fleet(fleet) => {
            let fleet_status = fleet.status().await;
            return StatusReply {
                host_version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_s: shared.started.elapsed().as_secs(),
                models: fleet_status.models,
                items_cancelled: shared.items_cancelled.load(Ordering::Relaxed),
                streams_refused: shared.streams_refused.load(Ordering::Relaxed),
                load_errors: fleet_status.load_errors,
                role: fleet.role().to_string(),
                workers: fleet_status.workers,
            };
        }
    };
    let infos = repo.models();
    let info_of = |name: &str, version: u64| infos.iter().find(|m| m.name == name && m.version == version);
    StatusReply {
        host_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: shared.started.elapsed().as_secs(),
        role: "host".into(),
        workers: Vec::new(),
        models: repo
            .all()
            .iter()
            .map(|a| {
                let stats = a.model.stats();
                let info = info_of(a.name(), a.version());
                ModelStatus {
                    name: a.name().to_string(),
                    version: a.version(),
                    description: a.manifest.description.clone(),
                    device: a.device(),
                    items_ok: a.counters.items_ok.load(Ordering::Relaxed),
                    items_failed: a.counters.items_failed.load(Ordering::Relaxed),
                    forwards: stats.forwards.load(Ordering::Relaxed),
                    forward_rows: stats.rows.load(Ordering::Relaxed),
                    forward_us: stats.busy_ns.load(Ordering::Relaxed) / 1000,
                    forwards_inline: stats.inlined.load(Ordering::Relaxed),
                    queued: stats.queued.load(Ordering::Relaxed) as u64,
                    plugin_instances: a.plugin.idle_instances() as u64,
                    default: info.is_some_and(|m| m.default),
                    rolled_back: info.and_then(|m| m.rolled_back.clone()),
                    canary: info.and_then(|m| m.canary.clone()),
                    ..ModelStatus::default()
                }
            })
            .collect(),
        items_cancelled: shared.items_cancelled.load(Ordering::Relaxed),
        streams_refused: shared.streams_refused.load(Ordering::Relaxed),
        load_errors: repo.failures(),
    }
}

fn change_failure(e: ChangeError) -> Failure {
    let code = match &e {
        ChangeError::Load(_) => ErrorCode::LoadFailed,
        ChangeError::Route(_) => ErrorCode::UnknownModel,
        ChangeError::Policy(PolicyError::NotReady { .. }) => ErrorCode::UnknownModel,
        ChangeError::Policy(PolicyError::NothingEarlier { .. }) => ErrorCode::Conflict,
        ChangeError::Store(StoreError::Exists { .. }) => ErrorCode::Conflict,
        ChangeError::Store(StoreError::TooLarge { .. }) => ErrorCode::LimitExceeded,
        ChangeError::Store(StoreError::Archive(_)) => ErrorCode::BadRequest,
        ChangeError::Store(StoreError::Io { .. }) => ErrorCode::Internal,
    };
    (code, e.to_string())
}
