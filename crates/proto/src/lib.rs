//! Meridian's protobuf API: the generated messages and services, and the
//! conversions between them and the core's types.
//!
//! Boundary: this is the only crate that knows protobuf. Core types never
//! derive prost; services convert at their edge through this crate.

#![forbid(unsafe_code)]

pub mod codec;
pub mod convert;
pub mod replication;
pub mod router;

/// Generated code for the `meridian.v1` package.
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");
}

/// The encoded descriptor set of every Meridian proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meridian_descriptor");

pub use convert::{ConvertError, timestamp_from_proto, timestamp_to_proto};
