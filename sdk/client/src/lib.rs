//! tensorgate client: connect to a host over QUIC, submit items, read
//! results as they stream back. No libtorch, no wasmtime.
//!
//! The crate is split by concern:
//! - `transport`: connecting (TLS trust and client
//!   credentials, QUIC transport settings) and the one request/reply
//!   exchange every operation goes through;
//! - `predict`: items in, results out, collected or streamed;
//! - `management`: status, models, upload, fetch,
//!   delete, reload;
//! - `failover`: several addresses behind one client, resubmitting the
//!   items a broken connection left unanswered;
//! - `targets`: the addresses a user gives and how to trust each (one
//!   fingerprint for all, or one per address), shared by the command line
//!   and the Python bindings.
//!
//! The modules are private; everything public is re-exported here at the
//! crate root.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tensorgate_client::ClientError> {
//! use tensorgate_client::{Client, Trust, Submission, Input};
//! let client = Client::connect("127.0.0.1:7443".parse().unwrap(), Trust::Fingerprint("ab12…".into())).await?;
//! let reply = client.predict(Submission::new("tabular", vec![Input::json(br#"{"keys":[],"values":[]}"#.to_vec())])).await?;
//! for outcome in reply.outcomes { println!("{:?}", outcome.map(|r| r.payload.len())); }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod failover;
mod management;
mod predict;
mod targets;
mod transport;

pub use error::ClientError;
pub use failover::Failover;
pub use management::pack_bundle;
pub use targets::{trust_per_address, TargetsError};
pub use predict::{content_type_for, Event, Input, ItemFailed, ItemReply, Reply, Submission};
pub use transport::{transport_config, Client, ConnectOptions, Identity, Trust, DEAD_PEER_TIMEOUT, KEEP_ALIVE, MTU_UPPER_BOUND};

/// The wire protocol crate this client speaks (frames, headers, replies, error codes).
pub use tensorgate_protocol as protocol;
