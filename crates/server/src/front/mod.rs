//! The fronts: where clients connect. Each speaks a protocol and hands
//! requests to the request machine ([`crate::request`]) or, for the Open
//! Inference Protocol, to [`oip::Oip`]; items to an
//! [`ItemRunner`](crate::request::ItemRunner); status and management to a
//! [`Management`](crate::manage::Management).
//!
//! - [`quic`]: tensorgate's own protocol over QUIC (`docs/protocol.md`).
//! - [`oip`]: the Open Inference Protocol (KServe v2), transport-free.
//! - [`http`]: it over HTTP/REST; [`grpc`]: it over gRPC (`docs/oip.md`).
//! - [`Fronts`]: every front a host or gateway is configured with, started together;
//!   [`listen`]: the TCP (plain or TLS) listeners of the HTTP and gRPC fronts.

pub mod grpc;
pub mod http;
pub mod oip;
pub mod quic;

mod fronts;
pub mod listen;
pub use fronts::Fronts;
