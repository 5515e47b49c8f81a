//! Why a bundle could not be loaded (every step of `build.rs` and the
//! checks of `check.rs`).

use tensorgate_server::manifest::ManifestError;

use crate::executor::ModelError;
use crate::plugin::{CallError, PluginLoadError};

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The bundle's location does not match its manifest.
    #[error("{dir}: {message}")]
    Layout {
        /// Bundle directory.
        dir: String,
        /// What does not match.
        message: String,
    },
    /// The plugin failed to compile or link.
    #[error(transparent)]
    Plugin(#[from] PluginLoadError),
    /// The plugin's first instance failed: `configure` refused the
    /// manifest, or `describe` trapped.
    #[error("{0}")]
    Describe(#[from] CallError),
    /// The model failed to load.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The manifest's warm-up item did not go through.
    #[error("warm-up item {file}: {message}")]
    Warmup {
        /// The warm-up file named in the manifest.
        file: String,
        /// What failed.
        message: String,
    },
    /// A check before serving failed: the manifest does not match the
    /// model or plugin, or a sample item did not go through.
    #[error("{file}: {message}")]
    Check {
        /// The bundle file at fault (`manifest.toml`, `samples/…`).
        file: String,
        /// What does not match.
        message: String,
    },
    /// An uploaded bundle's error, its paths made relative to the bundle
    /// (the author's files, not the host's staging directory).
    #[error("{0}")]
    InBundle(String),
}

