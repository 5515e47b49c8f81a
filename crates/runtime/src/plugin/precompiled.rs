//! Precompiled plugins carried inside a bundle: `plugin.cwasm` beside
//! `plugin.wasm` (the manifest's `[plugin] file` with the extension
//! `cwasm`), so that a host that has never seen a plugin loads it without
//! compiling it (a Python component takes 12–28 s to compile, well under a
//! second to load precompiled).
//!
//! The artefact is wasmtime's serialized component (native code) after a
//! fixed header of [`HEADER_LEN`] bytes:
//!
//! | bytes    | what |
//! |----------|------|
//! | 0..16    | [`MAGIC`] |
//! | 16..20   | [`FORMAT`], little-endian |
//! | 20..52   | SHA-256 of the plugin component it was compiled from |
//! | 52..84   | the engine hash: SHA-256 of wasmtime's `precompile_compatibility_hash` (wasmtime version, target, engine settings) |
//! | 84..116  | SHA-256 of the serialized component after the header |
//!
//! A host uses it only when all three match (the component next to it, this
//! engine, the bytes themselves); otherwise it logs one line naming why
//! ([`Rejected`]: stale, foreign or corrupt) and compiles as it would
//! without one (through its own compile cache). The hashes catch mistakes
//! (a plugin rebuilt without its artefact, another host build or CPU, a
//! damaged file), not malice: the artefact is native code, trusted like an
//! AOTInductor package's shared library, by whoever may put bundles in the
//! repository (the `admin` role for uploads).
//!
//! Artefacts are written by `tensorgate-host check --precompile` (which
//! `tensorgate plugin build --repository` and `plugin check` run).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::PluginEngine;

/// The artefact's file extension: `plugin.wasm` → `plugin.cwasm`.
pub const EXTENSION: &str = "cwasm";
/// The first bytes of an artefact.
pub const MAGIC: &[u8; 16] = b"tensorgate-cwasm";
/// The header's layout version.
pub const FORMAT: u32 = 1;
/// Bytes before the serialized component.
pub const HEADER_LEN: usize = 16 + 4 + 3 * 32;

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// Why a bundle's artefact was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Compiled from another component than the one beside it.
    #[error("stale: compiled from another component (sha256 {found}, the plugin is {want})")]
    Stale {
        /// The component hash the artefact records.
        found: String,
        /// The hash of the component beside it.
        want: String,
    },
    /// Compiled by another engine: another wasmtime version, engine
    /// settings or target CPU.
    #[error("foreign: compiled by another engine (wasmtime version, settings or CPU differ)")]
    Foreign,
    /// Not an artefact, truncated, or its bytes do not match the hash it records.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// Why an artefact could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Compilation failed.
    #[error("compiling: {0}")]
    Compile(String),
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The artefact's path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where the artefact of the plugin component at `component` lives.
pub fn artefact_path(component: &Path) -> PathBuf {
    component.with_extension(EXTENSION)
}

/// A [`Hasher`] that feeds everything into SHA-256, so that the engine
/// hash is the same in every process and Rust release (std's
/// `DefaultHasher` promises neither).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

/// The engine hash: SHA-256 of `engine`'s precompile compatibility hash
/// (wasmtime version, compilation target and engine settings).
pub fn engine_hash(engine: &Engine) -> Digest32 {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// An artefact: the header for `component` (its SHA-256) and `engine`
/// (its [`engine_hash`]), then `compiled` (wasmtime's serialized component).
pub fn encode(component: &Digest32, engine: &Digest32, compiled: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + compiled.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(component);
    out.extend_from_slice(engine);
    out.extend_from_slice(&sha256(compiled));
    out.extend_from_slice(compiled);
    out
}

/// The serialized component in `artefact` when it was compiled from the
/// component whose SHA-256 is `component` by an engine whose hash is
/// `engine`, and its bytes match the hash it records.
pub fn verify<'a>(artefact: &'a [u8], component: &Digest32, engine: &Digest32) -> Result<&'a [u8], Rejected> {
    if artefact.len() < HEADER_LEN || &artefact[..16] != MAGIC {
        return Err(Rejected::Corrupt("not a tensorgate precompiled plugin (no header)".into()));
    }
    let field = |at: usize| -> &[u8] { &artefact[at..at + 32] };
    let format = u32::from_le_bytes([artefact[16], artefact[17], artefact[18], artefact[19]]);
    if format != FORMAT {
        return Err(Rejected::Foreign);
    }
    if field(20) != component {
        return Err(Rejected::Stale { found: hex::encode(field(20)), want: hex::encode(component) });
    }
    if field(52) != engine {
        return Err(Rejected::Foreign);
    }
    let body = &artefact[HEADER_LEN..];
    if field(84) != sha256(body) {
        return Err(Rejected::Corrupt("its bytes do not match the SHA-256 it records".into()));
    }
    Ok(body)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// a reader sees the old file or the new one, whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// How a plugin's compiled code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The bundle's artefact.
    Bundle,
    /// The host's compile cache.
    Cache,
    /// Compiled now.
    Compiled,
}

impl PluginEngine {
    /// The compiled component for the plugin `bytes` read from `path`: from
    /// the bundle's artefact beside it when that verifies, else from the
    /// host's compile cache or compiled (as `cached_compile`). With
    /// `write_artefact`, an artefact that was missing or unusable is
    /// (re)written from the code obtained, so the bundle carries it.
    pub(super) fn compiled(&self, path: &Path, bytes: &[u8], write_artefact: bool) -> wasmtime::Result<(Component, Source)> {
        let component = sha256(bytes);
        let engine = engine_hash(&self.engine);
        let artefact = artefact_path(path);
        // Read into memory rather than mapped, as the compile cache does: a
        // file changed while the plugin is loaded cannot crash the host.
        match std::fs::read(&artefact) {
            Ok(file) => match verify(&file, &component, &engine) {
                Ok(body) => {
                    // SAFETY: the artefact verified: compiled by this engine's
                    // configuration from the component beside it, and intact.
                    // Its native code is trusted as the bundle is (module docs);
                    // wasmtime checks its own header again.
                    match unsafe { Component::deserialize(&self.engine, body) } {
                        Ok(c) => {
                            tracing::info!(artefact = %artefact.display(), bytes = file.len(), "plugin loaded from the bundle's precompiled artefact");
                            return Ok((c, Source::Bundle));
                        }
                        Err(e) => tracing::warn!(artefact = %artefact.display(), "ignoring the bundle's precompiled plugin: foreign: wasmtime refused it: {e:#}; compiling"),
                    }
                }
                Err(why) => tracing::warn!(artefact = %artefact.display(), "ignoring the bundle's precompiled plugin: {why}; compiling"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(artefact = %artefact.display(), "ignoring the bundle's precompiled plugin: unreadable: {e}; compiling"),
        }
        let (c, serialized, from_cache) = match &self.cache {
            Some(dir) => self.cached_compile(dir, bytes)?,
            None => {
                let serialized = self.engine.precompile_component(bytes)?;
                // SAFETY: produced just now by this engine.
                (unsafe { Component::deserialize(&self.engine, &serialized)? }, serialized, false)
            }
        };
        if write_artefact {
            match write_atomically(&artefact, &encode(&component, &engine, &serialized)) {
                Ok(()) => tracing::info!(artefact = %artefact.display(), "wrote the precompiled plugin into the bundle"),
                Err(e) => tracing::warn!(artefact = %artefact.display(), "cannot write the precompiled plugin: {e}"),
            }
        }
        Ok((c, if from_cache { Source::Cache } else { Source::Compiled }))
    }
}

/// Writes the artefact for the plugin component at `component_path` with
/// `engine` (compiling it, or taking it from `cache` when there); a valid
/// artefact already there is kept. Returns the artefact's path.
pub fn precompile(engine: &PluginEngine, component_path: &Path) -> Result<PathBuf, WriteError> {
    let io = |source| WriteError::Io { path: component_path.display().to_string(), source };
    let bytes = std::fs::read(component_path).map_err(io)?;
    engine.compiled(component_path, &bytes, true).map_err(|e| WriteError::Compile(format!("{e:#}")))?;
    Ok(artefact_path(component_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_stale_foreign_and_corrupt() {
        let (c, e) = (sha256(b"component"), sha256(b"engine"));
        let art = encode(&c, &e, b"native code");
        assert_eq!(verify(&art, &c, &e), Ok(&b"native code"[..]));
        assert!(matches!(verify(&art, &sha256(b"other"), &e), Err(Rejected::Stale { .. })));
        assert_eq!(verify(&art, &c, &sha256(b"other engine")), Err(Rejected::Foreign));
        let mut flipped = art.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(verify(&flipped, &c, &e), Err(Rejected::Corrupt(_))));
        assert!(matches!(verify(&art[..10], &c, &e), Err(Rejected::Corrupt(_))));
        assert!(matches!(verify(b"\x7fELF and more bytes than a header holds ....................................................................", &c, &e), Err(Rejected::Corrupt(_))));
        let mut future = art.clone();
        future[16] = 2;
        assert_eq!(verify(&future, &c, &e), Err(Rejected::Foreign));
    }

    #[test]
    fn the_engine_hash_is_stable_and_the_artefact_sits_beside_the_plugin() {
        let engine = Engine::default();
        assert_eq!(engine_hash(&engine), engine_hash(&Engine::default()));
        assert_eq!(artefact_path(Path::new("/b/plugin.wasm")), Path::new("/b/plugin.cwasm"));
    }
}
