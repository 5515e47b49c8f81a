//! The model repository: bundles on disk (`REPO/NAME/VERSION/`), loaded into
//! [`Application`]s and routed by name and version.
//!
//! - `build.rs`: one bundle directory → a ready application (plugin, model, warm-up);
//! - `check.rs`: the checks a version passes before it serves (`error.rs`:
//!   why a bundle did not load); `dry_run.rs`: a bundle checked and its
//!   samples run, nothing installed (`tensorgate-host check`);
//! - `routes.rs`: the lock-free routing table;
//! - `policies.rs`: the default-version policies (`promote`, `rollback`,
//!   trials; the rules are `tensorgate_server::rollout`) kept on disk;
//! - `signature.rs`: the model file's signature against the manifest;
//! - `reconcile.rs`: `reload`, bringing the table in line with the disk;
//! - `store.rs`: crash-safe changes on disk (uploads, replacements, deletes);
//! - `watch.rs`: reload on file changes.

pub mod build;
pub mod check;
pub mod dry_run;
mod error;
pub mod policies;
mod reconcile;
pub mod routes;
pub mod signature;
pub mod store;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tensorgate_protocol::{LoadFailure, ModelInfo};

pub use tensorgate_server::manifest::{Manifest, ManifestError, ModelSection, PluginSection, TensorDecl, Warmup};
pub use error::LoadError;
pub use tensorgate_server::rollout::{DefaultPolicy, PolicyError};
use tensorgate_server::rollout;
pub use reconcile::ReloadReport;
pub use routes::RouteError;
pub use store::{Stamp, StoreError};

use crate::application::{Application, ModelState};
use crate::config::HostConfig;
use crate::plugin::PluginEngine;
use reconcile::{file_name, sorted_dirs, Failures};

/// Why a change to the repository was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Storing or removing files failed, or the archive is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundle did not load; the versions serving before keep serving.
    #[error("bundle did not load (nothing changed): {0}")]
    Load(#[from] LoadError),
    /// No such model or version.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// `promote` or `rollback` could not be done.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The model repository: the bundles under one directory and the table that
/// routes requests to their loaded versions.
///
/// Every change prepares the new version fully before it is swapped into
/// the routing table. A request keeps the `Arc<Application>` it was routed
/// to, so it finishes on that version; a replaced or deleted version is
/// freed (model, executor threads, plugin instances) when its last request
/// ends.
pub struct Repository {
    root: PathBuf,
    engine: PluginEngine,
    config: HostConfig,
    routes: routes::Routes,
    failures: Failures,
    /// Serializes changes (reload, upload commit, delete).
    changes: Mutex<()>,
    /// Set once the repository as found at start is loaded: versions
    /// installed after that are releases (and may go on trial).
    opened: std::sync::atomic::AtomicBool,
    /// Each running trial's item counts when it began.
    trials: Mutex<std::collections::HashMap<String, TrialStart>>,
}

/// Where a trial's counting began.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TrialStart {
    canary: u64,
    base: u64,
    canary_at: rollout::Tally,
    base_at: rollout::Tally,
}

fn tally(app: &Application) -> rollout::Tally {
    use std::sync::atomic::Ordering::Relaxed;
    rollout::Tally { ok: app.counters.items_ok.load(Relaxed), failed: app.counters.items_failed.load(Relaxed) }
}

impl Repository {
    /// Opens the repository at `root`: repairs what a crash may have left
    /// (see [`store`]) and loads every `NAME/VERSION` bundle. A bundle that
    /// fails to load is logged and recorded, and does not stop the others.
    pub fn open(root: &Path, engine: PluginEngine, config: HostConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            what: "creating",
            path: root.display().to_string(),
            source,
        })?;
        store::recover(root)?;
        let repo = Repository {
            root: root.to_path_buf(),
            engine,
            config,
            routes: routes::Routes::default(),
            failures: Failures::default(),
            changes: Mutex::new(()),
            opened: std::sync::atomic::AtomicBool::new(false),
            trials: Mutex::new(std::collections::HashMap::new()),
        };
        repo.routes.set_policies(policies::load(root));
        repo.reload(None);
        repo.opened.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(repo)
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Installs a bundle from a `.tar.zst` archive: unpacked into staging,
    /// loaded there (plugin, model, warm-up), and only then renamed to
    /// `REPO/NAME/VERSION` and swapped in. On any failure nothing changes.
    pub fn upload(&self, archive: &[u8], replace: bool) -> Result<Arc<Application>, ChangeError> {
        let staged = store::unpack(&self.root, archive, self.config.front.max_upload_bytes)?;
        let holder = staged.ancestors().find(|p| p.parent() == Some(&self.root.join(store::STAGING))).map(Path::to_path_buf);
        let result = self.install(&staged, replace);
        if let Some(h) = holder {
            let _ = std::fs::remove_dir_all(h);
        }
        result
    }

    fn install(&self, staged: &Path, replace: bool) -> Result<Arc<Application>, ChangeError> {
        let manifest = Manifest::load(staged).map_err(|e| build::in_bundle(e.into(), staged))?;
        let home = self.root.join(&manifest.name).join(manifest.version.to_string());
        if home.exists() && !replace {
            let (name, version) = (manifest.name, manifest.version);
            if self.routes.get(&name, version).is_some() {
                return Err(StoreError::Exists { name, version }.into());
            }
            if !store::same_files(staged, &home) {
                return Err(StoreError::NotLoaded { name, version }.into());
            }
            // The very bundle is already in the folder, not loaded (e.g. put
            // there by `tensorgate plugin build --repository` on a host not
            // watching it): load it where it is.
            return self.load_in_place(&home, &name, version);
        }
        let app = build::prepare(staged, &home, &self.engine, &self.config)?;
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        store::commit(&self.root, staged, app.name(), app.version(), replace)?;
        log_loaded(&app);
        self.failures.clear(&home);
        let app = self.routes.insert(app);
        self.released(&[(app.name().to_string(), app.version())]);
        Ok(app)
    }

    /// Loads the bundle already at `home` (`REPO/NAME/VERSION`), as a
    /// reload of it would; a failure is recorded as a reload's is.
    fn load_in_place(&self, home: &Path, name: &str, version: u64) -> Result<Arc<Application>, ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(app) = self.routes.get(name, version) {
            // Loaded meanwhile (a reload or the watcher).
            return Err(StoreError::Exists { name: app.name().to_string(), version }.into());
        }
        let stamp = crate::application::Stamp::of(home);
        let app = match build::load(home, &self.engine, &self.config) {
            Ok(app) => app,
            Err(e) => {
                self.failures.record(home, name, Some(version), &e, stamp);
                return Err(e.into());
            }
        };
        log_loaded(&app);
        self.failures.clear(home);
        let app = self.routes.insert(app);
        self.released(&[(app.name().to_string(), app.version())]);
        Ok(app)
    }

    /// Newly installed versions: a new release takes over the default from
    /// a pin (saved). Called with the change lock held.
    fn released(&self, installed: &[(String, u64)]) {
        let mut policies = self.routes.policies();
        let mut changed = false;
        let opened = self.opened.load(std::sync::atomic::Ordering::Relaxed);
        for (name, version) in installed {
            let versions = self.routes.versions(name);
            let ready: std::collections::BTreeSet<u64> = versions.keys().copied().collect();
            let newest = ready.last() == Some(version);
            let terms = versions.get(version).map(|a| a.manifest.rollout.over(self.config.rollout));
            let p = policies.entry(name.clone()).or_default();
            if let (true, true, Some(terms)) = (opened, newest, terms) {
                if p.start_trial(*version, &ready, terms) {
                    let base = p.choose(&ready).and_then(|v| versions.get(&v));
                    if let (Some(c), Some(b)) = (versions.get(version), base) {
                        let start = TrialStart { canary: c.version(), base: b.version(), canary_at: tally(c), base_at: tally(b) };
                        self.trials.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), start);
                    }
                    tracing::info!(app = %name, version, share = terms.canary_share, items = terms.canary_items, "on trial: takes its share of requests until promoted or rolled back");
                    changed = true;
                    continue;
                }
            }
            if p.released(*version) {
                tracing::info!(app = %name, version, "a newer version is installed: it is the default again, not the promoted one");
                changed = true;
            }
        }
        if changed {
            self.save_policies(policies);
        }
    }

    /// Routes by `policies` at once, then keeps them on disk.
    fn save_policies(&self, policies: std::collections::BTreeMap<String, DefaultPolicy>) {
        self.routes.set_policies(policies.clone());
        if let Err(e) = policies::save(&self.root, &policies) {
            tracing::warn!(dir = %self.root.display(), "could not save the default versions (they hold until a restart): {e}");
        }
    }

    /// Judges every running trial once (see [`rollout::judge`]): promotes a
    /// canary that answered its items within the allowed failure rate, and
    /// rolls back one that failed more items than its trial allows.
    /// Returns the trials ended, as `(model, version, promoted, why)`.
    pub fn judge_trials(&self) -> Vec<(String, u64, bool, String)> {
        let mut ended = Vec::new();
        for (name, p) in self.routes.policies() {
            let Some(canary) = p.canary.clone() else { continue };
            let versions = self.routes.versions(&name);
            let ready: std::collections::BTreeSet<u64> = versions.keys().copied().collect();
            let (Some(c), Some(b)) = (versions.get(&canary.version), p.choose(&ready).and_then(|v| versions.get(&v))) else {
                continue;
            };
            let (now_c, now_b) = (tally(c), tally(b));
            let start = {
                let mut trials = self.trials.lock().unwrap_or_else(|e| e.into_inner());
                let fresh = TrialStart { canary: c.version(), base: b.version(), canary_at: now_c, base_at: now_b };
                let start = trials.entry(name.clone()).or_insert(fresh);
                if (start.canary, start.base) != (fresh.canary, fresh.base) {
                    *start = fresh;
                }
                *start
            };
            let since = |now: rollout::Tally, at: rollout::Tally| rollout::Tally {
                ok: now.ok.saturating_sub(at.ok),
                failed: now.failed.saturating_sub(at.failed),
            };
            let (promoted, why) = match rollout::judge(&canary.rollout, since(now_c, start.canary_at), since(now_b, start.base_at)) {
                rollout::Verdict::Running => continue,
                rollout::Verdict::Promote(why) => (true, why),
                rollout::Verdict::RollBack(why) => (false, why),
            };
            let _guard = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            let mut policies = self.routes.policies();
            let Some(p) = policies.get_mut(&name).filter(|p| p.canary.as_ref().is_some_and(|x| x.version == canary.version)) else {
                continue;
            };
            p.end_trial(canary.version, promoted, &why);
            self.save_policies(policies);
            self.trials.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            let version = canary.version;
            tensorgate_server::metrics::trial_ended(&name, version, promoted, &why, "");
            ended.push((name, version, promoted, why));
        }
        ended
    }

    /// Judges running trials on a thread of its own, for as long as the
    /// repository lives: at once when an item fails (so a bad canary fails
    /// only the items already on their way), and every `period` otherwise.
    pub fn judge_trials_every(self: &Arc<Self>, period: std::time::Duration) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("trials".into()).spawn(move || {
            let mut seen = 0;
            while let Some(repo) = weak.upgrade() {
                repo.judge_trials();
                drop(repo);
                seen = crate::application::ITEM_FAILED.wait(seen, period);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("no thread to judge canaries (new versions stay on trial): {e}");
        }
    }

    /// Makes `version` the default of `name` until a newer version is
    /// installed; returns every version of the model afterwards.
    pub fn promote(&self, name: &str, version: u64) -> Result<Vec<ModelInfo>, ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready_versions(name)?;
        let mut policies = self.routes.policies();
        policies.entry(name.to_string()).or_default().promote(name, version, &ready)?;
        self.save_policies(policies);
        tracing::info!(app = name, version, "promoted: the default version");
        Ok(self.models_of(name))
    }

    /// Rolls the default of `name` back to the newest earlier version not
    /// rolled back, marking the current default rolled back with `reason`.
    /// Returns `(from, to)` and every version of the model afterwards.
    pub fn rollback(&self, name: &str, reason: &str) -> Result<((u64, u64), Vec<ModelInfo>), ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready_versions(name)?;
        let mut policies = self.routes.policies();
        let moved = policies.entry(name.to_string()).or_default().rollback(name, &ready, reason)?;
        self.save_policies(policies);
        tracing::warn!(app = name, from = moved.0, to = moved.1, "rolled back: {reason}");
        Ok((moved, self.models_of(name)))
    }

    fn ready_versions(&self, name: &str) -> Result<std::collections::BTreeSet<u64>, RouteError> {
        let ready: std::collections::BTreeSet<u64> = self.routes.versions(name).keys().copied().collect();
        if ready.is_empty() {
            return Err(RouteError::UnknownModel { name: name.into(), loaded: self.routes.names().join(", ") });
        }
        Ok(ready)
    }

    fn models_of(&self, name: &str) -> Vec<ModelInfo> {
        self.models().into_iter().filter(|m| m.name == name).collect()
    }

    /// Stops serving `name` at `version` (every version when `None`) and
    /// removes the bundles from disk. Requests already routed finish first.
    /// Returns what was removed (loaded versions and failed bundles).
    pub fn delete(&self, name: &str, version: Option<u64>) -> Result<Vec<ModelInfo>, ChangeError> {
        let _guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut versions: Vec<u64> = sorted_dirs(&self.root.join(name))
            .iter()
            .filter_map(|d| file_name(d).parse().ok())
            .filter(|v| version.is_none_or(|want| want == *v))
            .collect();
        let routed = self.routes.versions(name);
        for v in routed.keys().filter(|v| version.is_none_or(|want| want == **v)) {
            if !versions.contains(v) {
                versions.push(*v);
            }
        }
        if versions.is_empty() {
            return Err(match version {
                Some(v) if !routed.is_empty() || self.root.join(name).exists() => RouteError::UnknownVersion {
                    name: name.into(),
                    version: v,
                    loaded: routed.keys().map(u64::to_string).collect::<Vec<_>>().join(", "),
                },
                _ => RouteError::UnknownModel { name: name.into(), loaded: self.routes.names().join(", ") },
            }
            .into());
        }
        let mut removed = Vec::new();
        for v in versions {
            let mut info = match routed.get(&v) {
                Some(app) => app.info(false),
                None => ModelInfo { name: name.into(), version: v, ..Default::default() },
            };
            self.routes.remove(name, v);
            store::remove(&self.root, name, v)?;
            self.failures.clear(&self.root.join(name).join(v.to_string()));
            tracing::info!(app = name, version = v, "deleted");
            info.state = ModelState::Deleted.to_string();
            removed.push(info);
        }
        let mut policies = self.routes.policies();
        if let Some(p) = policies.get_mut(name) {
            let mut changed = false;
            for m in &removed {
                changed |= p.forget(m.version);
            }
            if changed {
                self.save_policies(policies);
            }
        }
        Ok(removed)
    }

    /// The application serving `name` at `version` (the default when `None`).
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<Application>, RouteError> {
        self.routes.resolve(name, version)
    }

    /// Whether `version` is the default of `name` (a canary is not).
    pub fn is_default(&self, name: &str, version: u64) -> bool {
        self.routes.all().iter().any(|(a, default)| *default && a.name() == name && a.version() == version)
    }

    /// The loaded versions of `name`, in order.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.routes.versions(name).into_keys().collect()
    }

    /// Every loaded application version, by name then version.
    pub fn all(&self) -> Vec<Arc<Application>> {
        self.routes.all().into_iter().map(|(a, _)| a).collect()
    }

    /// Every version: loaded ones (`ready`) and bundles that failed (`failed`).
    pub fn models(&self) -> Vec<ModelInfo> {
        let policies = self.routes.policies();
        let mut out: Vec<ModelInfo> = self
            .routes
            .all()
            .iter()
            .map(|(a, default)| {
                let mut info = a.info(*default);
                let policy = policies.get(a.name());
                info.rolled_back = policy.and_then(|p| p.rolled_back.get(&a.version()).cloned());
                info.canary = policy.and_then(|p| p.canary.as_ref()).filter(|c| c.version == a.version()).map(|c| {
                    let at = self.trials.lock().unwrap_or_else(|e| e.into_inner()).get(a.name()).map(|t| t.canary_at).unwrap_or_default();
                    let now = tally(a);
                    tensorgate_protocol::CanaryInfo {
                        share: c.rollout.canary_share,
                        items_needed: c.rollout.canary_items,
                        items_ok: now.ok.saturating_sub(at.ok),
                        items_failed: now.failed.saturating_sub(at.failed),
                    }
                });
                info
            })
            .collect();
        for f in self.failures.all() {
            let Some(v) = f.version else { continue };
            if !out.iter().any(|m| m.name == f.model && m.version == v) {
                out.push(ModelInfo {
                    name: f.model.clone(),
                    version: v,
                    state: ModelState::Failed.to_string(),
                    error: Some(f.error.clone()),
                    ..Default::default()
                });
            }
        }
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        out
    }

    /// Load errors of the bundles on disk that are not serving as they are.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures.all()
    }
}

fn log_loaded(app: &Application) {
    tracing::info!(
        app = app.name(), version = app.version(), device = %app.device(),
        load_ms = app.load_time.as_secs_f64() * 1e3,
        plugin_from_cache = app.plugin.from_cache(), "loaded"
    );
}
