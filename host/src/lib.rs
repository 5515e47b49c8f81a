//! The tensorgate host: serves applications (a TorchScript model plus a
//! WebAssembly plugin doing its pre- and post-processing) over QUIC.
//!
//! The path of one item, module by module:
//! ```text
//! server (QUIC stream, protocol decode) → repository (route by model/version)
//!   → pipeline: plugin.preprocess (plugin, instance pool)
//!   → executor (tch forward on the model's device thread)
//!   → plugin.postprocess → server (encode, reply streamed)
//! ```

pub mod auth;
pub mod config;
pub mod executor;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod repository;
pub mod server;
pub mod tensor;
pub mod tls;

pub use config::HostConfig;
pub use server::{Host, RunningHost};
