//! Optional reload on change: watches the repository directory with
//! `notify` and reloads once it has been quiet for the debounce interval.
//!
//! Partial writes are harmless: a copy still in progress keeps producing
//! events, so nothing is loaded until it stops; a bundle caught half-written
//! anyway fails to load, leaves the serving version alone, and is retried on
//! the next change to its files. The host's own `.staging` and `.trash`
//! folders are ignored.

use std::path::{Component, Path};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Repository;

/// Keeps the watcher alive; dropping it stops watching.
pub struct RepositoryWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `repo`'s directory; a change reloads after `debounce` of quiet.
pub fn watch(repo: &Arc<Repository>, debounce: Duration) -> notify::Result<RepositoryWatcher> {
    let root = repo.root().to_path_buf();
    let (tx, rx) = mpsc::channel::<()>();
    let filter_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| !is_hidden(&filter_root, p)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    let weak: Weak<Repository> = Arc::downgrade(repo);
    std::thread::Builder::new()
        .name("repo-watch".into())
        .spawn(move || {
            // Wait for a change, then for `debounce` without one.
            while rx.recv().is_ok() {
                while rx.recv_timeout(debounce).is_ok() {}
                let Some(repo) = weak.upgrade() else { return };
                let report = repo.reload(None);
                if !report.loaded.is_empty() || !report.removed.is_empty() || !report.errors.is_empty() {
                    tracing::info!(
                        loaded = report.loaded.len(),
                        removed = report.removed.len(),
                        failed = report.errors.len(),
                        "repository changed on disk: reloaded"
                    );
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(RepositoryWatcher { _watcher: watcher })
}

/// Whether `path` lies in a hidden folder of `root` (`.staging`, `.trash`, editors' temp files).
fn is_hidden(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')))
}
