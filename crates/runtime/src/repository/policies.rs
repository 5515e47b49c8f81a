//! A repository's default-version policies on disk: `REPO/.defaults.json`
//! (so a rolled-back version does not come back as the default after a
//! restart). The policy rules themselves are `tensorgate_server::rollout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tensorgate_server::rollout::DefaultPolicy;

/// The file a repository keeps its policies in.
pub const FILE: &str = ".defaults.json";

/// Reads the policies of the repository at `root` (none when the file is
/// missing; a file that cannot be read is logged and ignored, so the host
/// still starts and serves the newest versions).
pub fn load(root: &Path) -> BTreeMap<String, DefaultPolicy> {
    let path = root.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), "default versions unreadable, serving the newest versions: {e}");
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "default versions unreadable, serving the newest versions: {e}");
            BTreeMap::new()
        }
    }
}

/// Writes the policies atomically (a temporary file renamed over the old one).
pub fn save(root: &Path, policies: &BTreeMap<String, DefaultPolicy>) -> std::io::Result<()> {
    let kept: BTreeMap<&String, &DefaultPolicy> = policies.iter().filter(|(_, p)| !p.is_empty()).collect();
    let path = root.join(FILE);
    let tmp: PathBuf = root.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    if let Ok(dir) = std::fs::File::open(root) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn policies_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let mut all = BTreeMap::new();
        let mut p = DefaultPolicy::default();
        p.rollback("tabular", &set(&[1, 2]), "rolled back by hand").unwrap();
        all.insert("tabular".to_string(), p.clone());
        all.insert("empty".to_string(), DefaultPolicy::default());
        save(dir.path(), &all).unwrap();
        let back = load(dir.path());
        assert_eq!(back.len(), 1, "empty policies are not written");
        assert_eq!(back.get("tabular"), Some(&p));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty(), "an unreadable file is ignored");
    }
}
