//! The fronts: where clients connect. Each speaks a protocol and hands
//! requests to the request machine ([`crate::request`]), items to an
//! [`ItemRunner`](crate::request::ItemRunner), and status and management
//! to a [`Management`](crate::manage::Management).
//!
//! - [`quic`]: tensorgate's own protocol over QUIC (`docs/protocol.md`).

pub mod quic;
