//! The messages and service of `proto/inference.proto`, generated at build time.
#![allow(missing_docs, clippy::all)]

tonic::include_proto!("inference");
