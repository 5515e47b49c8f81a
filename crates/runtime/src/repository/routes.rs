//! The routing table: which loaded version serves a model name and version.
//! Requests read it without locking (`arc-swap`); every change builds a new
//! table and swaps it in atomically.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use tensorgate_server::rollout::DefaultPolicy;
use crate::application::Application;

/// Why a request could not be routed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// No application of that name.
    #[error("unknown model `{name}` (loaded: {loaded})")]
    UnknownModel {
        /// Requested name.
        name: String,
        /// Names loaded.
        loaded: String,
    },
    /// The application exists but not in that version.
    #[error("model `{name}` has no version {version} (loaded: {loaded})")]
    UnknownVersion {
        /// Requested name.
        name: String,
        /// Requested version.
        version: u64,
        /// Versions loaded.
        loaded: String,
    },
}

type Table = HashMap<String, BTreeMap<u64, Arc<Application>>>;

/// Loaded versions by name, then version, and the policies that choose
/// each model's default version.
#[derive(Default)]
pub struct Routes {
    table: ArcSwap<Table>,
    policies: ArcSwap<BTreeMap<String, DefaultPolicy>>,
}

impl Routes {
    /// The default-version policy of `name` (empty when none was set).
    pub fn policy(&self, name: &str) -> DefaultPolicy {
        self.policies.load().get(name).cloned().unwrap_or_default()
    }

    /// Every model's policy.
    pub fn policies(&self) -> BTreeMap<String, DefaultPolicy> {
        BTreeMap::clone(&self.policies.load())
    }

    /// Replaces every model's policy.
    pub fn set_policies(&self, policies: BTreeMap<String, DefaultPolicy>) {
        self.policies.store(Arc::new(policies));
    }

    /// The default version of `name` among `versions`.
    fn default_of(&self, name: &str, versions: &BTreeMap<u64, Arc<Application>>) -> Option<u64> {
        self.pick(name, versions, |p, ready| p.choose(ready))
    }

    /// Where a request for `name` naming no version goes: a canary for its
    /// share of requests, else the default.
    fn route_of(&self, name: &str, versions: &BTreeMap<u64, Arc<Application>>) -> Option<u64> {
        self.pick(name, versions, |p, ready| p.route(ready, fastrand::f64()))
    }

    /// `by` the model's policy over its loaded versions; the newest when it
    /// has none (no set is built for those, the common case per request).
    fn pick(
        &self,
        name: &str,
        versions: &BTreeMap<u64, Arc<Application>>,
        by: impl FnOnce(&DefaultPolicy, &std::collections::BTreeSet<u64>) -> Option<u64>,
    ) -> Option<u64> {
        match self.policies.load().get(name) {
            Some(p) => by(p, &versions.keys().copied().collect()),
            None => versions.keys().next_back().copied(),
        }
    }

    /// The application serving `name` at `version` (the default, or a
    /// canary for its share, when `None`).
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<Application>, RouteError> {
        let table = self.table.load();
        let Some(versions) = table.get(name) else {
            return Err(RouteError::UnknownModel { name: name.to_string(), loaded: self.names().join(", ") });
        };
        let found = match version {
            Some(v) => versions.get(&v),
            None => self.route_of(name, versions).and_then(|v| versions.get(&v)),
        };
        found.cloned().ok_or_else(|| RouteError::UnknownVersion {
            name: name.to_string(),
            version: version.unwrap_or(0),
            loaded: versions.keys().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The loaded version `name`/`version`, if any.
    pub fn get(&self, name: &str, version: u64) -> Option<Arc<Application>> {
        self.table.load().get(name).and_then(|m| m.get(&version)).cloned()
    }

    /// The loaded versions of `name`.
    pub fn versions(&self, name: &str) -> BTreeMap<u64, Arc<Application>> {
        self.table.load().get(name).cloned().unwrap_or_default()
    }

    /// Every loaded application version, by name then version; with each,
    /// whether it is its model's default version.
    pub fn all(&self) -> Vec<(Arc<Application>, bool)> {
        let table = self.table.load();
        let mut all: Vec<_> = table
            .iter()
            .flat_map(|(name, versions)| {
                let default = self.default_of(name, versions);
                versions.values().map(move |a| (a.clone(), Some(a.version()) == default))
            })
            .collect();
        all.sort_by(|(a, _), (b, _)| (a.name(), a.version()).cmp(&(b.name(), b.version())));
        all
    }

    /// Names loaded, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table.load().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Serves `app`, freshly built (not yet shared), replacing what served
    /// its name and version before, whose counters it carries on; returns
    /// it. Callers serialize changes, so no update is lost.
    pub fn insert(&self, mut app: Arc<Application>) -> Arc<Application> {
        if let Some(old) = self.get(app.name(), app.version()) {
            match Arc::get_mut(&mut app) {
                Some(new) => new.counters = old.counters.clone(),
                None => tracing::warn!(app = app.name(), "replacing a shared application: its counters start afresh"),
            }
        }
        self.swap(|t| {
            t.entry(app.name().to_string()).or_default().insert(app.version(), app.clone());
        });
        app
    }

    /// Stops serving `name` at `version`.
    pub fn remove(&self, name: &str, version: u64) {
        self.swap(|t| {
            if let Some(versions) = t.get_mut(name) {
                versions.remove(&version);
                if versions.is_empty() {
                    t.remove(name);
                }
            }
        });
    }

    fn swap(&self, edit: impl FnOnce(&mut Table)) {
        let mut next = Table::clone(&self.table.load());
        edit(&mut next);
        self.table.store(Arc::new(next));
    }
}
