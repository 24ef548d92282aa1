//! Building and installing the tracing subscriber, the OpenTelemetry
//! providers and their exporters, and shutting them down so that nothing
//! already recorded is lost.

use std::{net::SocketAddr, time::Duration};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, ParentBasedSampler, SdkTracerProvider},
};
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::filter_fn,
    fmt::{self, writer::BoxMakeWriter},
    layer::SubscriberExt as _,
};

use crate::{
    Error, LogFormat, LogWriter, Metrics, MetricsServer, Result, TelemetryConfig,
    TicketRatioSampler,
};

/// Spans finished but not yet exported; past this, new spans are dropped
/// rather than let memory grow while a collector is down.
const SPAN_QUEUE_MAX: usize = 8_192;
/// Spans in one export call.
const SPAN_BATCH_MAX: usize = 512;

/// Libraries under the OTLP exporter itself: tracing their spans would
/// export the export, forever.
const TRANSPORT_TARGETS: [&str; 7] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
];

/// The guard of a process's telemetry. [`Telemetry::shutdown`] (or
/// dropping the guard) exports every span and metric already recorded.
///
/// The OTLP exporter runs on the Tokio runtime that was current when the
/// guard was built, so build it inside the runtime and shut it down before
/// the runtime stops. Dropping the guard on a multi-threaded runtime (or
/// outside any runtime) flushes; on a current-thread runtime call
/// `shutdown().await` instead, since a blocking flush there would stall the
/// very runtime that sends it.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    metrics: Metrics,
    metrics_server: Option<MetricsServer>,
    export_timeout: Duration,
    shut_down: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.exporting())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds and installs telemetry for the whole process: the global
    /// tracing subscriber, the global meter provider and the W3C trace
    /// context propagator.
    pub fn init(config: &TelemetryConfig) -> Result<Self> {
        let (telemetry, dispatch) = Self::build(config)?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|e| Error::Subscriber(e.to_string()))?;
        opentelemetry::global::set_meter_provider(telemetry.metrics.provider().clone());
        telemetry.metrics.install();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(provider) = &telemetry.tracer_provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        Ok(telemetry)
    }

    /// Builds telemetry without installing anything globally; the caller
    /// decides where the returned dispatcher applies (tests use
    /// `tracing::dispatcher::set_default`).
    pub fn build(config: &TelemetryConfig) -> Result<(Self, tracing::Dispatch)> {
        config.validate()?;
        let resource = resource(config);
        let endpoint = config
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());

        let tracer_provider = endpoint
            .map(|endpoint| tracer_provider(config, endpoint, resource.clone()))
            .transpose()?;
        let metric_reader = endpoint
            .map(|endpoint| {
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(config.export_timeout)
                    .build()
                    .map_err(|e| Error::Exporter {
                        endpoint: endpoint.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok::<_, Error>(
                    PeriodicReader::builder(exporter)
                        .with_interval(config.metrics_export_interval)
                        .build(),
                )
            })
            .transpose()?;
        let metrics = Metrics::new(resource, metric_reader);

        let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![log_layer(config)];
        if let Some(provider) = &tracer_provider {
            let tracer = provider.tracer("meridian");
            // Spans are traced at info and above whatever the log level, so
            // a quiet CLI still exports its spans.
            let filter = filter_fn(|meta: &Metadata<'_>| {
                *meta.level() <= Level::INFO && !is_transport(meta.target())
            });
            // Per-span extras off: busy/idle timing (a clock read on every
            // enter and exit), thread, source location and target
            // attributes, and activating an OpenTelemetry context on every
            // enter (nothing here reads it; trace context is taken from the
            // `tracing` span). Together they cost ticket intake about 15% of
            // its throughput on the `trace-overhead` benchmark.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_context_activation(false);
            layers.push(layer.with_filter(filter).boxed());
        }
        let dispatch = tracing::Dispatch::new(Registry::default().with(layers));

        Ok((
            Self {
                tracer_provider,
                metrics,
                metrics_server: None,
                export_timeout: config.export_timeout,
                shut_down: false,
            },
            dispatch,
        ))
    }

    /// Whether spans and metrics are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves these metrics at `http://ADDR/metrics` for as long as the
    /// guard lives; returns the bound address (useful with port 0).
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        let server = MetricsServer::bind(addr, self.metrics.clone()).await?;
        let bound = server.local_addr();
        tracing::info!(addr = %bound, "serving metrics at /metrics");
        self.metrics_server = Some(server);
        Ok(bound)
    }

    /// Exports every finished span and the current metrics, then stops the
    /// exporters. The blocking part runs off the async threads, so this is
    /// safe on any Tokio runtime.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shut_down = true;
        self.metrics_server = None;
        let (tracer, meter, timeout) = (
            self.tracer_provider.clone(),
            self.metrics.provider().clone(),
            self.export_timeout,
        );
        tokio::task::spawn_blocking(move || shutdown_providers(tracer.as_ref(), &meter, timeout))
            .await
            .map_err(|e| Error::Shutdown(format!("the flush task failed: {e}")))?
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let flush = || {
            shutdown_providers(
                self.tracer_provider.as_ref(),
                self.metrics.provider(),
                self.export_timeout,
            )
        };
        let result = match tokio::runtime::Handle::try_current() {
            // Hand this worker's tasks to another thread while blocking, so
            // the exporter's connection task can still run.
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush)
            }
            _ => flush(),
        };
        if let Err(error) = result {
            // Logging may already be gone at this point; stderr is not.
            eprintln!("warning: {error}");
        }
    }
}

fn shutdown_providers(
    tracer: Option<&SdkTracerProvider>,
    meter: &SdkMeterProvider,
    timeout: Duration,
) -> Result<()> {
    let mut problems = Vec::new();
    if let Some(tracer) = tracer
        && let Err(e) = tracer.shutdown_with_timeout(timeout)
    {
        problems.push(format!("spans: {e}"));
    }
    if let Err(e) = meter.shutdown_with_timeout(timeout) {
        problems.push(format!("metrics: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Shutdown(problems.join("; ")))
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    let mut attributes = vec![KeyValue::new(
        "service.instance.id",
        config.service_instance_id.clone(),
    )];
    if let Some(region) = &config.region {
        attributes.push(KeyValue::new("meridian.region", region.clone()));
    }
    // `builder()` also reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME;
    // what Meridian sets itself wins.
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(attributes)
        .build()
}

fn tracer_provider(
    config: &TelemetryConfig,
    endpoint: &str,
    resource: Resource,
) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| Error::Exporter {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(config.span_batch_delay)
        .with_max_queue_size(SPAN_QUEUE_MAX)
        .with_max_export_batch_size(SPAN_BATCH_MAX)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    // Roots and remote parents (a ticket's virtual root, a caller's
    // context) are decided by trace id; local children follow their
    // parent. A remote parent marked not sampled stays unsampled.
    let ratio = TicketRatioSampler::new(config.sample_ratio);
    let sampler = ParentBasedSampler::new(ratio).with_remote_parent_sampled(ratio);
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

fn log_layer(config: &TelemetryConfig) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.default_log_filter));
    use std::io::IsTerminal as _;
    // Colours only on a terminal: a file or a pipe gets plain text.
    let (writer, terminal) = match config.log_writer {
        LogWriter::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogWriter::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let ansi = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match config.log_format {
        LogFormat::Human => fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

fn is_transport(target: &str) -> bool {
    TRANSPORT_TARGETS.iter().any(|t| {
        target == *t
            || target
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_targets_are_matched_by_crate_not_by_prefix() {
        assert!(is_transport("h2"));
        assert!(is_transport("h2::proto::streams"));
        assert!(is_transport("tonic::transport"));
        assert!(!is_transport("h2o"));
        assert!(!is_transport("meridian_gateway::service"));
    }
}
