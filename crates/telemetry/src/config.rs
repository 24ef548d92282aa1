//! What a process tells [`crate::Telemetry`]: who it is, where to export,
//! how much to sample and how to log.

use std::{str::FromStr, time::Duration};

use crate::{Error, Result};

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(Error::LogFormat(s.to_owned())),
        }
    }
}

/// Where log lines go. Services log to stdout (what container runtimes
/// collect); the CLI logs to stderr so its output stays what was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogWriter {
    #[default]
    Stdout,
    Stderr,
}

/// Everything [`crate::Telemetry`] needs. Build with [`TelemetryConfig::new`]
/// and adjust the public fields.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`, e.g. `meridian-gateway`.
    pub service_name: String,
    /// `service.instance.id`: unique per process; a fresh UUIDv7 by default.
    pub service_instance_id: String,
    /// `meridian.region`, when the process serves exactly one region.
    pub region: Option<String>,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. `None` turns span
    /// and metric export off (logs and `/metrics` still work).
    pub otlp_endpoint: Option<String>,
    /// Share of traces kept, 0.0 to 1.0, decided from the trace id so every
    /// region keeps or drops the same tickets.
    pub sample_ratio: f64,
    pub log_format: LogFormat,
    pub log_writer: LogWriter,
    /// The filter used when `RUST_LOG` is not set, e.g. `info`.
    pub default_log_filter: String,
    /// How long finished spans may wait before a batch is sent.
    pub span_batch_delay: Duration,
    /// How often metrics are pushed over OTLP.
    pub metrics_export_interval: Duration,
    /// Deadline of one OTLP export call, and of each shutdown step.
    pub export_timeout: Duration,
}

impl TelemetryConfig {
    /// Defaults: export off, every trace sampled, human logs at `info` on
    /// stdout, spans batched for up to 5 s, metrics pushed every 60 s (the
    /// OpenTelemetry defaults).
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            service_instance_id: uuid::Uuid::now_v7().to_string(),
            region: None,
            otlp_endpoint: None,
            sample_ratio: 1.0,
            log_format: LogFormat::Human,
            log_writer: LogWriter::Stdout,
            default_log_filter: "info".to_owned(),
            span_batch_delay: Duration::from_secs(5),
            metrics_export_interval: Duration::from_secs(60),
            export_timeout: Duration::from_secs(10),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(Error::SampleRatio(self.sample_ratio));
        }
        Ok(())
    }
}

/// The telemetry flags every Meridian binary takes (each also reads its
/// environment variable), flattened into the binary's own arguments.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Export spans and metrics over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317. Export is off without it.
    #[arg(long, env = "MERIDIAN_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Share of ticket traces to keep, from 0.0 (none) to 1.0 (all).
    #[arg(
        long,
        env = "MERIDIAN_TRACE_SAMPLE",
        default_value_t = 1.0,
        value_name = "RATIO"
    )]
    pub trace_sample: f64,
    /// Log lines as readable text or JSON objects.
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "MERIDIAN_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[cfg(feature = "cli")]
impl TelemetryArgs {
    /// The config these flags describe for `service_name`; the caller sets
    /// the region and log writer it knows.
    pub fn config(&self, service_name: impl Into<String>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            sample_ratio: self.trace_sample,
            log_format: self.log_format,
            ..TelemetryConfig::new(service_name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_both_spellings_and_names_the_bad_one() {
        assert_eq!("JSON".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>().ok(), Some(LogFormat::Human));
        let err = "yaml"
            .parse::<LogFormat>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("\"yaml\""), "{err}");
    }

    #[test]
    fn sample_ratio_outside_zero_to_one_is_refused() {
        for ratio in [-0.1, 1.5, f64::NAN] {
            let config = TelemetryConfig {
                sample_ratio: ratio,
                ..TelemetryConfig::new("t")
            };
            assert!(config.validate().is_err(), "{ratio} accepted");
        }
        assert!(TelemetryConfig::new("t").validate().is_ok());
    }
}
