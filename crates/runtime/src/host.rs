//! A host assembled: its repository loaded (and watched), its local item
//! runner and management, served by the QUIC front when asked. A worker
//! uses the same loaded host without serving it.

use std::sync::Arc;

use tensorgate_server::front::Fronts;
use tensorgate_server::StartError;

use crate::config::HostConfig;
use crate::local::LocalRunner;
use crate::manage::LocalManagement;
use crate::plugin::PluginEngine;
use crate::repository::{Repository, StoreError};

/// Errors loading a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The repository could not be opened.
    #[error("repository: {0}")]
    Repository(#[from] StoreError),
    /// The repository watcher could not start.
    #[error("watching the repository: {0}")]
    Watch(String),
    /// The wasmtime engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The front end could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A host with its repository loaded, not yet serving.
pub struct Host {
    config: HostConfig,
    repo: Arc<Repository>,
    _watcher: Option<crate::repository::watch::RepositoryWatcher>,
}

impl Host {
    /// Loads every bundle in the repository. Blocking: call it before
    /// entering the async runtime or from `spawn_blocking`.
    pub fn load(config: HostConfig) -> Result<Self, HostError> {
        let d = tensorgate_backend_torch::devices();
        // The runtime's own default, read before any executor thread sets its count.
        tensorgate_backend_torch::convert::default_threads();
        if config.intra_op_threads > 0 {
            tensorgate_backend_torch::convert::set_process_threads(config.intra_op_threads);
        }
        tracing::info!(
            cuda_feature = d.cuda_feature,
            libtorch_cuda = d.libtorch_cuda_loaded,
            cuda_devices = d.cuda_devices,
            auto = %d.auto,
            "libtorch sees {} CUDA device(s); models set to `auto` run on {}",
            d.cuda_devices,
            d.auto
        );
        let engine = PluginEngine::new(Some(config.compile_cache_dir())).map_err(|e| HostError::Engine(e.to_string()))?;
        let repo = Arc::new(Repository::open(&config.repository, engine, config.clone())?);
        repo.judge_trials_every(std::time::Duration::from_millis(20));
        let watcher = match config.watch {
            true => Some(
                crate::repository::watch::watch(&repo, config.watch_debounce).map_err(|e| HostError::Watch(e.to_string()))?,
            ),
            false => None,
        };
        Ok(Host { config, repo, _watcher: watcher })
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The item runner of this host's repository.
    pub fn runner(&self) -> LocalRunner {
        LocalRunner { repo: self.repo.clone(), max_item_bytes: self.config.front.limits.max_item_bytes }
    }

    /// Where models set to `auto` (or the host's `--device`) run here.
    pub fn device_name(&self) -> String {
        crate::backends::device_name(self.config.device)
    }

    /// Binds the fronts (QUIC, and HTTP and gRPC where configured) and
    /// starts serving. Must run inside a tokio runtime.
    pub fn serve(self) -> Result<RunningHost, HostError> {
        let management = Arc::new(LocalManagement { repo: self.repo.clone() });
        let front = Fronts::start(self.config.front.clone(), Arc::new(self.runner()), management)?;
        Ok(RunningHost { front, host: self })
    }
}

/// A host that is serving.
pub struct RunningHost {
    front: Fronts,
    host: Host,
}

impl RunningHost {
    /// The bound UDP address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.front.addr()
    }

    /// SHA-256 fingerprint of the host certificate (hex).
    pub fn fingerprint(&self) -> &str {
        self.front.fingerprint()
    }

    /// The fronts serving.
    pub fn fronts(&self) -> &Fronts {
        &self.front
    }

    /// The loaded repository.
    pub fn repository(&self) -> &Arc<Repository> {
        self.host.repository()
    }

    /// Stops accepting, closes connections and waits for the endpoint to go idle.
    pub async fn shutdown(self) {
        self.front.shutdown().await;
    }
}
