//! The one way a bundle made on this machine enters a model repository,
//! used by `plugin build --repository` and `import triton`: its files are
//! staged in a hidden folder inside the repository, the staged bundle is
//! checked as a host checks it before serving (`tensorgate-host check`),
//! and only a bundle that passes is moved (one rename) to
//! `REPO/NAME/VERSION`. A bundle that fails to stage or to check leaves
//! the repository as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Stages a bundle with `fill` (which writes the bundle's files into the
/// folder it is given), checks it, and installs it as `repo/name/version`,
/// replacing a bundle already there; returns where it was installed. On
/// any failure the staged files are removed and the error says the bundle
/// was not installed.
pub fn install(repo: &Path, name: &str, version: u64, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<PathBuf> {
    let staged = repo.join(format!(".stage-{name}-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    let checked = std::fs::create_dir_all(&staged)
        .with_context(|| format!("creating {}", staged.display()))
        .and_then(|()| fill(&staged))
        .and_then(|()| check(&staged));
    if let Err(e) = checked {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.context("not installed"));
    }
    let dest = repo.join(name).join(version.to_string());
    let moved = std::fs::create_dir_all(repo.join(name))
        .with_context(|| format!("creating {}", repo.join(name).display()))
        .and_then(|()| {
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::rename(&staged, &dest).with_context(|| format!("moving the bundle to {}", dest.display()))
        });
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.context("not installed"));
    }
    println!("installed {}", dest.display());
    Ok(dest)
}

/// Checks the bundle folder `bundle` as a host would before serving it:
/// runs `tensorgate-host check --precompile BUNDLE` (found beside this
/// binary), passing its output through; an error if the bundle fails. The
/// check leaves the plugin compiled for this machine in the bundle
/// (`plugin.cwasm`, beside the plugin), so hosts of the same tensorgate
/// build on the same kind of CPU load it without compiling.
pub fn check(bundle: &Path) -> anyhow::Result<()> {
    let host = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("tensorgate-host")))
        .filter(|p| p.is_file())
        .context("tensorgate-host is not beside this tensorgate binary: it runs the check")?;
    let mut cmd = Command::new(&host);
    // Compiled plugins are cached across checks (a Python component takes
    // seconds to compile), unless the caller chose a cache.
    if std::env::var_os("TENSORGATE_COMPILE_CACHE").is_none() {
        if let Some(c) = cache_dir() {
            cmd.env("TENSORGATE_COMPILE_CACHE", c.join("compiled-plugins"));
        }
    }
    let status = cmd.arg("check").arg("--precompile").arg(bundle).status().with_context(|| format!("running {}", host.display()))?;
    if !status.success() {
        return Err(CheckFailed.into());
    }
    Ok(())
}

/// The bundle was checked and did not pass (the check printed why): `plugin
/// check` exits 1 for this, 2 when it could not check at all.
#[derive(Debug)]
pub struct CheckFailed;

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the bundle failed its check (above)")
    }
}

impl std::error::Error for CheckFailed {}

/// tensorgate's cache: `$TENSORGATE_CACHE`, else `~/.cache/tensorgate`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("TENSORGATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorgate")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_that_fails_to_stage_leaves_the_repository_as_it_was() {
        let repo = std::env::temp_dir().join(format!("tg-install-{}", std::process::id()));
        std::fs::create_dir_all(repo.join("app/1")).unwrap();
        std::fs::write(repo.join("app/1/manifest.toml"), "old").unwrap();
        let e = install(&repo, "app", 1, |dir| {
            std::fs::write(dir.join("manifest.toml"), "new")?;
            anyhow::bail!("no model file")
        })
        .unwrap_err();
        assert_eq!(format!("{e:#}"), "not installed: no model file");
        assert_eq!(std::fs::read_to_string(repo.join("app/1/manifest.toml")).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(&repo).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["app"], "the staging folder is removed");
        let _ = std::fs::remove_dir_all(&repo);
    }
}
