//! Several gateways (or hosts) serving the same applications behind one
//! client: when the connection in use breaks, the next address is tried,
//! and a predict request is resubmitted there for the items that had no
//! answer only, so each item is still answered exactly once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::path::Path;

use bytes::Bytes;
use tensorgate_protocol::{AdminReply, ModelInfo, StatusReply, Summary};
use tokio::sync::Mutex;

use crate::error::ClientError;
use crate::predict::{Collector, Event, Reply, Submission};
use crate::transport::{Client, ConnectOptions};

/// A client over several addresses, failing over in turn.
pub struct Failover {
    targets: Vec<(SocketAddr, ConnectOptions)>,
    /// The connection in use and the index of its target.
    current: Mutex<Option<(usize, Arc<Client>)>>,
    /// Index of the target whose connection broke last (`usize::MAX`: none).
    failed: AtomicUsize,
}

impl Failover {
    /// A client for `targets` (tried in order); nothing connects until used.
    pub fn new(targets: Vec<(SocketAddr, ConnectOptions)>) -> Result<Self, ClientError> {
        if targets.is_empty() {
            return Err(ClientError::Connection("no address to connect to".into()));
        }
        Ok(Failover { targets, current: Mutex::new(None), failed: AtomicUsize::new(usize::MAX) })
    }

    /// The connection in use, connecting (from the one after the last that
    /// failed, wrapping around once) when there is none.
    pub async fn client(&self) -> Result<Arc<Client>, ClientError> {
        let mut current = self.current.lock().await;
        if let Some((_, c)) = current.as_ref() {
            return Ok(c.clone());
        }
        let start = match self.failed.load(Ordering::Relaxed) {
            usize::MAX => 0,
            i => (i + 1) % self.targets.len(),
        };
        let mut last = None;
        for k in 0..self.targets.len() {
            let i = (start + k) % self.targets.len();
            let (addr, options) = &self.targets[i];
            match Client::connect_with(*addr, options.clone()).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *current = Some((i, c.clone()));
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(%addr, "cannot connect: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connection("no address answered".into())))
    }

    /// Forgets a broken connection so that the next call connects to the next address.
    async fn broken(&self, client: &Arc<Client>) {
        let mut current = self.current.lock().await;
        if let Some((i, c)) = current.as_ref() {
            if Arc::ptr_eq(c, client) {
                self.failed.store(*i, Ordering::Relaxed);
                *current = None;
            }
        }
    }

    /// The status of the host or gateway in use.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        self.client().await?.status().await
    }

    /// Every application version (`models`), from the host or gateway in use.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        self.client().await?.models().await
    }

    /// Uploads a bundle directory or archive through the host or gateway in use.
    pub async fn upload(&self, path: &Path, replace: bool) -> Result<AdminReply, ClientError> {
        self.client().await?.upload(path, replace).await
    }

    /// Fetches a bundle archive.
    pub async fn fetch(&self, model: &str, version: Option<u64>) -> Result<Bytes, ClientError> {
        self.client().await?.fetch(model, version).await
    }

    /// Deletes one version of a model, or all of them.
    pub async fn delete(&self, model: &str, version: Option<u64>) -> Result<AdminReply, ClientError> {
        self.client().await?.delete(model, version).await
    }

    /// Reloads one model or all of them.
    pub async fn reload(&self, model: Option<&str>) -> Result<AdminReply, ClientError> {
        self.client().await?.reload(model).await
    }

    /// Makes `version` the default of `model`.
    pub async fn promote(&self, model: &str, version: u64) -> Result<AdminReply, ClientError> {
        self.client().await?.promote(model, version).await
    }

    /// Rolls the default of `model` back to its previous version.
    pub async fn rollback(&self, model: &str) -> Result<AdminReply, ClientError> {
        self.client().await?.rollback(model).await
    }

    /// Closes the connection in use, if this is its last user.
    pub async fn close(&self) {
        if let Some((_, c)) = self.current.lock().await.take() {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.close().await;
            }
        }
    }

    /// Submits a request and collects every reply in input order, failing
    /// over as [`Failover::predict_stream`] does (the collecting is
    /// [`Client::predict`]'s).
    pub async fn predict(&self, submission: Submission) -> Result<Reply, ClientError> {
        let mut collector = Collector::new(submission.items.len());
        let summary = self.predict_stream(submission, |event| collector.on_event(event)).await?;
        Ok(collector.reply(summary))
    }

    /// Submits a request and calls `on_event` for each item's reply as it
    /// arrives (indices as in `submission`). If the connection breaks, the
    /// items that got no answer are resubmitted through the next address
    /// (each address at most once more); an item answered before the break
    /// is never sent again. The summary is the last attempt's, with `ok`
    /// and `failed` counted over all attempts.
    ///
    /// When the items cannot all be answered, the error is
    /// [`ClientError::Unanswered`] with indices as in `submission`, naming
    /// only the items no attempt answered, and the connection loss as its
    /// reason (also when no address answers a new connection afterwards).
    pub async fn predict_stream(&self, submission: Submission, mut on_event: impl FnMut(Event)) -> Result<Summary, ClientError> {
        let total = submission.items.len();
        let mut answered = vec![false; total];
        let (mut ok, mut failed) = (0u32, 0u32);
        // Original index of each item of the current attempt.
        let mut pending: Vec<usize> = (0..total).collect();
        // Why the last attempt's connection broke.
        let mut lost: Option<String> = None;
        let unanswered = |pending: &[usize], reason: String| ClientError::Unanswered {
            reason,
            total,
            unanswered: pending.iter().map(|&i| i as u32).collect(),
        };
        for attempt in 0..=self.targets.len() {
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    return Err(match lost {
                        // The loss is what the caller needs to hear; not
                        // finding another address is the consequence.
                        Some(reason) => {
                            tracing::warn!("after {reason}: {e}");
                            unanswered(&pending, format!("{reason}, and no address answered again"))
                        }
                        None => e,
                    })
                }
            };
            let mut this = submission.clone();
            this.items = pending.iter().map(|&i| submission.items[i].clone()).collect();
            let result = client
                .predict_stream(this, |event| match event {
                    Event::Item(mut o) => {
                        let slot = match &mut o {
                            Ok(r) => &mut r.index,
                            Err(e) => &mut e.index,
                        };
                        let Some(&original) = pending.get(*slot as usize) else { return };
                        *slot = original as u32;
                        if !std::mem::replace(&mut answered[original], true) {
                            if o.is_ok() {
                                ok += 1
                            } else {
                                failed += 1
                            }
                            on_event(Event::Item(o));
                        }
                    }
                    other => on_event(other),
                })
                .await;
            let reason = match result {
                Ok(mut s) => {
                    s.ok = ok;
                    s.failed = failed;
                    return Ok(s);
                }
                Err(ClientError::Unanswered { reason, .. }) => reason,
                Err(ClientError::Connection(why)) => format!("connection to {} lost: {why}", client.address()),
                Err(e) => return Err(e),
            };
            self.broken(&client).await;
            pending.retain(|&i| !answered[i]);
            if attempt < self.targets.len() {
                tracing::warn!("{reason}: resubmitting {} unanswered item(s) through the next address", pending.len());
            }
            lost = Some(reason);
        }
        Err(unanswered(&pending, lost.unwrap_or_else(|| "no address answered".into())))
    }
}
