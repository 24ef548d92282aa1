//! `meridian-telemetry`: how every Meridian process reports what it does.
//!
//! - [`Telemetry`] installs `tracing` with human or JSON logs and, when an
//!   OTLP endpoint is configured, an OpenTelemetry layer that batches spans
//!   to a collector over gRPC. Its guard flushes on shutdown and on drop.
//! - [`ticket`] puts spans in a ticket's own trace (the trace id is the
//!   ticket id's 128 bits) and links an apply span to its producer.
//! - [`propagation`] carries W3C `traceparent` through gRPC metadata and
//!   through the string stored in every event envelope.
//! - [`metrics`] holds OpenTelemetry metrics, exported over OTLP and
//!   rendered as Prometheus text by a small `/metrics` HTTP server.
//! - [`rpc`] is the tower layer that records RED metrics of every gRPC
//!   call a server answers; [`process`] reports the process and the build.
//! - `testing` (feature `test-receiver`) is a real OTLP collector on
//!   loopback that tests export to.
//!
//! Boundary: this crate knows about tracing, OpenTelemetry and the wire
//! formats of trace context; it knows nothing of tickets beyond their id,
//! and never decides anything about them.

#![forbid(unsafe_code)]

mod config;
mod error;
pub mod metrics;
pub mod process;
pub mod propagation;
pub mod rpc;
mod sampler;
mod setup;
#[cfg(feature = "test-receiver")]
pub mod testing;
pub mod ticket;

#[cfg(feature = "cli")]
pub use config::TelemetryArgs;
pub use config::{LogFormat, LogWriter, TelemetryConfig};
pub use error::{Error, Result};
pub use metrics::{Metrics, MetricsServer};
pub use rpc::RpcMetricsLayer;
pub use sampler::TicketRatioSampler;
pub use setup::Telemetry;

/// The OpenTelemetry API this crate speaks, re-exported so callers name the
/// same version (counters, histograms, `KeyValue`, span contexts).
pub use opentelemetry;
