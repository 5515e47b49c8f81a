//! tensorgate's runtime: what runs an item once a request is routed.
//!
//! ```text
//! local (LocalRunner: route by repository) ─▶ pipeline: plugin.preprocess (plugin/)
//!   ─▶ executor (batch.rs: the batcher; one thread per model instance) ─▶ backend (backends.rs)
//!   ─▶ plugin.postprocess ─▶ reply
//! ```
//!
//! - [`plugin`]: the plugin boundary (wasmtime, instance pool, limits; the
//!   only place WIT types exist);
//! - [`executor`]: the batcher and the model's instance threads, over the
//!   [`tensorgate_backend::Backend`] of the model's format ([`backends`]);
//! - [`application`]: one loaded version; [`pipeline`]: one item's path;
//!   [`reply`]: a plugin's JSON reply keys held to the manifest;
//! - [`repository`]: bundles on disk, loaded, checked, routed, changed;
//! - [`local`]: the item runner of a host; [`manage`]: its management;
//!   [`host`]: the two assembled; [`config`], [`command`]: settings and flags.
//!
//! Modules, bottom-up (each uses only those before it; a test checks every
//! file): `backends`, `plugin`, `executor`, `application`, `reply`, `pipeline`,
//! `config`, `repository`, `local`, `manage`, `host`, `command`.

pub mod application;
pub mod backends;
pub mod command;
pub mod config;
pub mod executor;
pub mod host;
pub mod local;
pub mod manage;
pub mod pipeline;
pub mod plugin;
pub mod reply;
pub mod repository;

pub use config::HostConfig;
pub use host::{Host, HostError, RunningHost};
