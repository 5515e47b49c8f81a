//! The repository on disk, kept consistent across crashes.
//!
//! Every change is prepared off to the side and made visible with one
//! `rename(2)` of a directory, which is atomic:
//! - an upload is unpacked into `REPO/.staging/ID/`, checked and loaded
//!   there, then renamed to `REPO/NAME/VERSION`;
//! - a replaced bundle is first renamed to `REPO/.trash/replaced-ID/NAME/VERSION`
//!   and a deleted one to `REPO/.trash/deleted-ID/NAME/VERSION`, then removed.
//!
//! [`recover`] runs before the repository is loaded: it removes staging
//! leftovers, puts back a replaced bundle whose successor never arrived
//! (a crash between the two renames), and empties the trash. So a host killed
//! at any moment restarts with each `NAME/VERSION` either the old bundle or
//! the new one, complete.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

pub use crate::application::Stamp;

/// Scratch space for uploads being unpacked and loaded.
pub const STAGING: &str = ".staging";
/// Bundles on their way out.
pub const TRASH: &str = ".trash";

/// Most files in one uploaded bundle.
const MAX_ENTRIES: usize = 10_000;

/// Why a bundle archive could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The archive is not a valid `.tar.zst` bundle.
    #[error("bundle archive: {0}")]
    Archive(String),
    /// The archive unpacks to more than the limit.
    #[error("bundle archive unpacks past the limit of {limit} bytes")]
    TooLarge {
        /// Limit in bytes.
        limit: u64,
    },
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path involved.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// `NAME/VERSION` exists and the upload did not ask to replace it.
    #[error("{name} version {version} already exists; upload with replace to overwrite it, or bump `version` in manifest.toml")]
    Exists {
        /// Model name.
        name: String,
        /// Version.
        version: u64,
    },
    /// `NAME/VERSION` is in the repository's folder but not loaded (copied
    /// there by hand or by `tensorgate plugin build --repository`, or it
    /// failed to load) and holds other files than the upload.
    #[error(
        "{name} version {version} is already in the repository's folder but not loaded (copied there, e.g. by \
         `tensorgate plugin build --repository`), and its files differ from this upload: `tensorgate reload` loads \
         what is on disk (`tensorgate models` lists a load error), upload with replace overwrites it"
    )]
    NotLoaded {
        /// Model name.
        name: String,
        /// Version.
        version: u64,
    },
}

/// Whether the bundle folders `a` and `b` hold the same files (relative
/// paths and bytes): an upload of the very bundle already in the folder.
pub fn same_files(a: &Path, b: &Path) -> bool {
    fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                files(root, &entry.path(), out)?;
            } else {
                out.push(entry.path().strip_prefix(root).map(Path::to_path_buf).unwrap_or_default());
            }
        }
        Ok(())
    }
    let list = |root: &Path| {
        let mut out = Vec::new();
        files(root, root, &mut out).map(|()| {
            out.sort();
            out
        })
    };
    let (Ok(in_a), Ok(in_b)) = (list(a), list(b)) else { return false };
    let same = |rel: &PathBuf| {
        let (x, y) = (a.join(rel), b.join(rel));
        let sizes = (std::fs::metadata(&x).map(|m| m.len()).ok(), std::fs::metadata(&y).map(|m| m.len()).ok());
        sizes.0.is_some() && sizes.0 == sizes.1 && std::fs::read(&x).ok() == std::fs::read(&y).ok()
    };
    in_a == in_b && in_a.iter().all(same)
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { what, path: path.display().to_string(), source }
}

/// A name unique within this process and across restarts.
pub fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Brings `root` back to a consistent state after a crash (see the module docs).
pub fn recover(root: &Path) -> Result<(), StoreError> {
    let staging = root.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
    }
    let trash = root.join(TRASH);
    if !trash.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&trash).map_err(io("reading", &trash))?.flatten() {
        let holder = entry.path();
        if entry.file_name().to_string_lossy().starts_with("replaced-") {
            // Holds NAME/VERSION: restore it if nothing took its place.
            for name in subdirs(&holder) {
                for version in subdirs(&name) {
                    let (Some(n), Some(v)) = (name.file_name(), version.file_name()) else { continue };
                    let target = root.join(n).join(v);
                    if !target.exists() {
                        tracing::warn!(bundle = %target.display(), "restoring a bundle whose replacement never landed");
                        std::fs::create_dir_all(root.join(n)).map_err(io("creating", &target))?;
                        std::fs::rename(&version, &target).map_err(io("restoring", &target))?;
                    }
                }
            }
        }
    }
    std::fs::remove_dir_all(&trash).map_err(io("removing", &trash))?;
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Unpacks a `.tar.zst` bundle into a fresh directory under `REPO/.staging`
/// and returns the bundle directory (the one holding `manifest.toml`: the
/// archive's root, or its single top-level folder). Only regular files and
/// folders with plain relative names are accepted; at most `max_bytes` are
/// written. Files are synced to disk before this returns.
pub fn unpack(root: &Path, archive: &[u8], max_bytes: u64) -> Result<PathBuf, StoreError> {
    let dest = root.join(STAGING).join(unique_id());
    std::fs::create_dir_all(&dest).map_err(io("creating", &dest))?;
    match unpack_into(&dest, archive, max_bytes) {
        Ok(bundle) => Ok(bundle),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(e)
        }
    }
}

fn unpack_into(dest: &Path, archive: &[u8], max_bytes: u64) -> Result<PathBuf, StoreError> {
    let bad = |m: String| StoreError::Archive(m);
    let decoder = zstd::stream::read::Decoder::new(archive).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut written = 0u64;
    let entries = tar.entries().map_err(|e| bad(format!("tar: {e}")))?;
    for (count, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
        if count >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let path = entry.path().map_err(|e| bad(format!("tar entry name: {e}")))?.into_owned();
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                _ => return Err(bad(format!("entry `{}` leaves the bundle (absolute or `..`)", path.display()))),
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target).map_err(io("creating", &target))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                let mut file = std::fs::File::create(&target).map_err(io("creating", &target))?;
                let budget = max_bytes.saturating_sub(written);
                let n = std::io::copy(&mut (&mut entry).take(budget + 1), &mut file)
                    .map_err(|e| bad(format!("reading `{}`: {e}", rel.display())))?;
                written += n;
                if n > budget {
                    return Err(StoreError::TooLarge { limit: max_bytes });
                }
                file.sync_all().map_err(io("syncing", &target))?;
            }
            // PAX and GNU long-name headers are consumed by the tar reader.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(bad(format!(
                    "entry `{}` is a {other:?}; bundles hold only regular files and folders",
                    rel.display()
                )))
            }
        }
    }
    if dest.join("manifest.toml").is_file() {
        return Ok(dest.to_path_buf());
    }
    let dirs = subdirs(dest);
    match dirs.as_slice() {
        [only] if only.join("manifest.toml").is_file() => Ok(only.clone()),
        _ => Err(bad("no manifest.toml at the archive's root (or in its single top-level folder)".into())),
    }
}

/// The text of a `.tar.zst` bundle's `manifest.toml`, read without unpacking the rest.
pub fn manifest_text(archive: &[u8]) -> Result<String, StoreError> {
    tensorgate_server::manifest::text_in_archive(archive).map_err(StoreError::Archive)
}

/// Moves the checked bundle at `staged` to `REPO/NAME/VERSION`. An existing
/// bundle there is replaced only when `replace` is set; it is moved to the
/// trash first and removed after. Returns the final directory.
pub fn commit(root: &Path, staged: &Path, name: &str, version: u64, replace: bool) -> Result<PathBuf, StoreError> {
    let parent = root.join(name);
    let target = parent.join(version.to_string());
    std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
    let mut old = None;
    if target.exists() {
        if !replace {
            return Err(StoreError::Exists { name: name.to_string(), version });
        }
        let holder = root.join(TRASH).join(format!("replaced-{}", unique_id())).join(name);
        std::fs::create_dir_all(&holder).map_err(io("creating", &holder))?;
        let moved = holder.join(version.to_string());
        std::fs::rename(&target, &moved).map_err(io("moving aside", &target))?;
        old = Some(moved);
    }
    if let Err(e) = std::fs::rename(staged, &target) {
        // Put the old bundle back: the failed upload changes nothing.
        if let Some(moved) = &old {
            let _ = std::fs::rename(moved, &target);
        }
        return Err(io("renaming into place", &target)(e));
    }
    sync_dir(&parent);
    if let Some(moved) = old {
        remove_holder(&moved);
    }
    Ok(target)
}

/// Removes `REPO/NAME/VERSION` (first renamed into the trash, so a crash
/// midway never leaves half a bundle in place).
pub fn remove(root: &Path, name: &str, version: u64) -> Result<(), StoreError> {
    let target = root.join(name).join(version.to_string());
    if !target.exists() {
        return Ok(());
    }
    let holder = root.join(TRASH).join(format!("deleted-{}", unique_id())).join(name);
    std::fs::create_dir_all(&holder).map_err(io("creating", &holder))?;
    let moved = holder.join(version.to_string());
    std::fs::rename(&target, &moved).map_err(io("moving to the trash", &target))?;
    sync_dir(&root.join(name));
    remove_holder(&moved);
    // The model's folder goes too once its last version is gone.
    let _ = std::fs::remove_dir(root.join(name));
    Ok(())
}

/// Removes the trash holder folder `.trash/KIND-ID` of a moved bundle.
fn remove_holder(moved: &Path) {
    if let Some(holder) = moved.parent().and_then(Path::parent) {
        if let Err(e) = std::fs::remove_dir_all(holder) {
            tracing::warn!(dir = %holder.display(), "could not empty the trash (removed at next start): {e}");
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("manifest.toml"), tag).unwrap();
    }

    fn read(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("manifest.toml")).unwrap()
    }

    /// Every state a crash can leave behind comes back consistent.
    #[test]
    fn recover_restores_or_discards_every_crash_state() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // Crash while unpacking an upload.
        bundle(&root.join(STAGING).join("1-2-3"), "half");
        // Crash between the two renames of a replace: old bundle only in the trash.
        bundle(&root.join(TRASH).join("replaced-a/m/1"), "old m1");
        // Crash after a replace completed, before the trash was emptied.
        bundle(&root.join("m/2"), "new m2");
        bundle(&root.join(TRASH).join("replaced-b/m/2"), "old m2");
        // Crash in the middle of a delete.
        bundle(&root.join(TRASH).join("deleted-c/m/3"), "deleted m3");
        recover(root).unwrap();
        assert_eq!(read(&root.join("m/1")), "old m1", "the replaced bundle is restored");
        assert_eq!(read(&root.join("m/2")), "new m2", "a finished replace stays");
        assert!(!root.join("m/3").exists(), "a delete stays deleted");
        assert!(!root.join(STAGING).exists() && !root.join(TRASH).exists());
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, name, *data).unwrap();
        }
        zstd::bulk::compress(&tar.into_inner().unwrap(), 3).unwrap()
    }

    #[test]
    fn unpack_accepts_root_or_single_folder_and_enforces_the_size_cap() {
        let root = tempfile::tempdir().unwrap();
        let a = unpack(root.path(), &archive(&[("manifest.toml", b"x"), ("samples/a.json", b"{}")]), 1000).unwrap();
        assert!(a.join("samples/a.json").is_file());
        let b = unpack(root.path(), &archive(&[("tabular/manifest.toml", b"x"), ("tabular/model.pt", b"m")]), 1000).unwrap();
        assert!(b.ends_with("tabular") && b.join("model.pt").is_file());
        let e = unpack(root.path(), &archive(&[("manifest.toml", &[0u8; 600]), ("model.pt", &[0u8; 600])]), 1000).unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { limit: 1000 }), "{e}");
        let e = unpack(root.path(), &archive(&[("model.pt", b"m")]), 1000).unwrap_err();
        assert!(e.to_string().contains("no manifest.toml"), "{e}");
        // Failed unpacks leave nothing behind in staging.
        let left: Vec<_> = std::fs::read_dir(root.path().join(STAGING)).unwrap().collect();
        assert_eq!(left.len(), 2, "only the two good unpacks remain");
    }

    #[test]
    fn commit_refuses_or_replaces_an_existing_version() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        bundle(&root.join("m/1"), "old");
        bundle(&root.join("s1"), "new");
        let e = commit(root, &root.join("s1"), "m", 1, false).unwrap_err();
        assert!(matches!(e, StoreError::Exists { .. }));
        assert_eq!(read(&root.join("m/1")), "old");
        commit(root, &root.join("s1"), "m", 1, true).unwrap();
        assert_eq!(read(&root.join("m/1")), "new");
        remove(root, "m", 1).unwrap();
        assert!(!root.join("m").exists());
    }

    #[test]
    fn same_files_compares_paths_and_bytes() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        bundle(&root.join("a"), "x");
        bundle(&root.join("b"), "x");
        assert!(same_files(&root.join("a"), &root.join("b")));
        bundle(&root.join("c"), "y");
        assert!(!same_files(&root.join("a"), &root.join("c")), "other bytes");
        std::fs::create_dir_all(root.join("b/samples")).unwrap();
        std::fs::write(root.join("b/samples/s.json"), "{}").unwrap();
        assert!(!same_files(&root.join("a"), &root.join("b")), "another file");
        assert!(!same_files(&root.join("a"), &root.join("nowhere")));
    }
}
