//! Status and management of a host's own repository: the
//! [`Management`] its front end serves. Repository changes block
//! (unpacking, compiling, loading a model), so they run on blocking threads.

use std::sync::Arc;

use bytes::Bytes;
use tensorgate_protocol::{AdminHeader, AdminReply, ErrorCode, ModelStatus, RequestHeader};
use tensorgate_server::manage::{BoxFuture, Managed, Management, Status};
use tensorgate_server::request::Reject;

use crate::application::ModelState;
use crate::repository::{ChangeError, PolicyError, Repository, StoreError};

/// A host's repository, managed.
pub struct LocalManagement {
    /// The repository.
    pub repo: Arc<Repository>,
}

fn required(h: &AdminHeader, op: &str) -> Result<String, Reject> {
    h.model.clone().ok_or_else(|| Reject::new(ErrorCode::BadRequest, format!("`{op}` needs a `model`")))
}

/// The archive from its chunks (already in index order).
fn join_chunks(chunks: Vec<Bytes>) -> Vec<u8> {
    let mut archive = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        archive.extend_from_slice(&c);
    }
    archive
}

fn change_failure(e: ChangeError) -> Reject {
    let code = match &e {
        ChangeError::Load(_) => ErrorCode::LoadFailed,
        ChangeError::Route(_) => ErrorCode::UnknownModel,
        ChangeError::Policy(PolicyError::NotReady { .. }) => ErrorCode::UnknownModel,
        ChangeError::Policy(PolicyError::NothingEarlier { .. }) => ErrorCode::Conflict,
        ChangeError::Store(StoreError::Exists { .. } | StoreError::NotLoaded { .. }) => ErrorCode::Conflict,
        ChangeError::Store(StoreError::TooLarge { .. }) => ErrorCode::LimitExceeded,
        ChangeError::Store(StoreError::Archive(_)) => ErrorCode::BadRequest,
        ChangeError::Store(StoreError::Io { .. }) => ErrorCode::Internal,
    };
    Reject::new(code, e.to_string())
}

/// Runs a repository change on a blocking thread.
async fn blocking(op: &'static str, f: impl FnOnce() -> Result<Managed, Reject> + Send + 'static) -> Result<Managed, Reject> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Reject::new(ErrorCode::Internal, format!("{op} task failed: {e}")))?
}

fn reply(reply: AdminReply) -> Managed {
    Managed { reply, archive: None }
}

impl Management for LocalManagement {
    fn status(&self) -> BoxFuture<'_, Status> {
        Box::pin(async move {
            let repo = &self.repo;
            let infos = repo.models();
            let info_of = |name: &str, version: u64| infos.iter().find(|m| m.name == name && m.version == version);
            let models = repo
                .all()
                .iter()
                .map(|a| {
                    let info = info_of(a.name(), a.version());
                    ModelStatus {
                        default: info.is_some_and(|m| m.default),
                        rolled_back: info.and_then(|m| m.rolled_back.clone()),
                        canary: info.and_then(|m| m.canary.clone()),
                        ..a.status()
                    }
                })
                .collect();
            Status { role: "host", models, workers: Vec::new(), load_errors: repo.failures() }
        })
    }

    fn manage(&self, header: RequestHeader, upload: Vec<Bytes>) -> BoxFuture<'_, Result<Managed, Reject>> {
        let repo = self.repo.clone();
        Box::pin(async move {
            let op = header.op();
            match header {
                RequestHeader::Models(_) => {
                    Ok(reply(AdminReply { models: repo.models(), errors: repo.failures(), ..AdminReply::default() }))
                }
                RequestHeader::Upload(h) => {
                    blocking(op, move || {
                        let app = repo.upload(&join_chunks(upload), h.replace).map_err(change_failure)?;
                        // As `models` lists it: default or not, on trial or not.
                        let info = repo
                            .models()
                            .into_iter()
                            .find(|m| m.name == app.name() && m.version == app.version())
                            .unwrap_or_else(|| app.info(repo.is_default(app.name(), app.version())));
                        let message = format!(
                            "{} version {} loaded in {:.1} ms, {}",
                            app.name(),
                            app.version(),
                            app.load_time.as_secs_f64() * 1e3,
                            tensorgate_server::rollout::serving_as(&info)
                        );
                        Ok(reply(AdminReply { message, models: vec![info], ..AdminReply::default() }))
                    })
                    .await
                }
                RequestHeader::Fetch(h) => {
                    let model = required(&h, op)?;
                    // The newest version when none is named (not the default, nor a canary).
                    let version = h.version.or_else(|| repo.versions(&model).last().copied());
                    let app = repo.resolve(&model, version).map_err(|e| Reject::new(ErrorCode::UnknownModel, e.to_string()))?;
                    blocking(op, move || {
                        let archive = tensorgate_client::pack_bundle(&app.dir)
                            .map_err(|e| Reject::new(ErrorCode::Internal, format!("packing {}: {e}", app.dir.display())))?;
                        let message = format!("{} version {}: {} bytes", app.name(), app.version(), archive.len());
                        let reply = AdminReply { message, models: vec![app.info(false)], ..AdminReply::default() };
                        Ok(Managed { reply, archive: Some(Bytes::from(archive)) })
                    })
                    .await
                }
                RequestHeader::Delete(h) => {
                    let model = required(&h, op)?;
                    blocking(op, move || {
                        let removed = repo.delete(&model, h.version).map_err(change_failure)?;
                        let versions: Vec<String> = removed.iter().map(|m| m.version.to_string()).collect();
                        let message = format!("{model}: deleted version(s) {}", versions.join(", "));
                        Ok(reply(AdminReply { message, models: removed, ..AdminReply::default() }))
                    })
                    .await
                }
                RequestHeader::Reload(h) => {
                    blocking(op, move || {
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
                        Ok(reply(AdminReply { message, models, errors: report.errors, ..AdminReply::default() }))
                    })
                    .await
                }
                RequestHeader::Promote(h) => {
                    let model = required(&h, op)?;
                    let version = h.version.ok_or_else(|| Reject::new(ErrorCode::BadRequest, "`promote` needs a `version`"))?;
                    // Behind the change lock, which an upload may hold while it compiles.
                    blocking(op, move || {
                        let models = repo.promote(&model, version).map_err(change_failure)?;
                        Ok(reply(AdminReply { message: format!("{model}: version {version} is the default"), models, ..AdminReply::default() }))
                    })
                    .await
                }
                RequestHeader::Rollback(h) => {
                    let model = required(&h, op)?;
                    blocking(op, move || {
                        let ((from, to), models) = repo.rollback(&model, "rolled back by hand").map_err(change_failure)?;
                        let message = format!("{model}: version {from} rolled back, version {to} is the default");
                        Ok(reply(AdminReply { message, models, ..AdminReply::default() }))
                    })
                    .await
                }
                RequestHeader::Predict(_) | RequestHeader::Status(_) => {
                    Err(Reject::new(ErrorCode::Internal, format!("`{op}` is not a management request")))
                }
            }
        })
    }
}
