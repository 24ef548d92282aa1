//! The crate's one error type.

/// Everything that can go wrong while setting up or using telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("trace sample ratio {0} is out of range: give a number from 0.0 (none) to 1.0 (all)")]
    SampleRatio(f64),

    #[error("log format {0:?} is unknown: use \"human\" or \"json\"")]
    LogFormat(String),

    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },

    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),

    #[error("traceparent {value:?} is malformed: {reason}")]
    Traceparent { value: String, reason: String },

    #[error("cannot put the span in the ticket's trace: {0}")]
    SetParent(String),

    #[error("cannot collect metrics: {0}")]
    Metrics(String),

    #[error("telemetry shutdown did not complete: {0}")]
    Shutdown(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout { what: String, waited_ms: u128 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
