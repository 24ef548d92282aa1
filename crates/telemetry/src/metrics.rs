//! Metrics: OpenTelemetry instruments, pushed over OTLP when an endpoint is
//! configured and always readable as Prometheus text from a small
//! `/metrics` HTTP server.
//!
//! The SDK's collected metrics are mapped to Prometheus families here and
//! written by `prometheus-client` (the Prometheus project's crate), whose
//! text encoder does the escaping and the suffixes; its registry is used
//! only as the encoder's entry point, so the OpenTelemetry SDK stays the
//! one place instruments live. Naming follows the OpenTelemetry-to-Prometheus rules that matter for us:
//! dots become underscores, the unit is appended (`s` → `_seconds`),
//! monotonic sums are counters ending in `_total`, and the resource
//! attributes appear once as `target_info`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::{KeyValue, metrics::Meter, metrics::MeterProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::{AggregatedMetrics, MetricData, ResourceMetrics},
        reader::MetricReader,
    },
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet, prometheus_text},
    metrics::MetricType,
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use crate::{Error, Result};

/// Concurrent `/metrics` connections served; more are closed at once.
const CONNECTIONS_MAX: usize = 16;
/// Deadline for one connection, request and response together.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A process's metrics: make instruments with [`Metrics::meter`], read
/// them with [`Metrics::render_prometheus`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    provider: SdkMeterProvider,
    prometheus: PrometheusReader,
    _process: Arc<crate::process::ProcessInstruments>,
}

/// The process's metrics once [`crate::Telemetry::init`] installed them,
/// and where `/metrics` serves them when it does.
static INSTALLED: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
static SERVING: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

impl Metrics {
    /// A provider with the Prometheus reader and, when given, a periodic
    /// OTLP reader.
    pub(crate) fn new(resource: Resource, otlp: Option<impl MetricReader>) -> Self {
        let prometheus = PrometheusReader(Arc::new(ManualReader::builder().build()));
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus.clone());
        if let Some(otlp) = otlp {
            builder = builder.with_reader(otlp);
        }
        let provider = builder.build();
        let process = Arc::new(crate::process::register(
            &provider.meter("meridian-process"),
        ));
        Self {
            provider,
            prometheus,
            _process: process,
        }
    }

    /// The metrics [`crate::Telemetry::init`] installed for this process.
    pub fn installed() -> Option<Metrics> {
        INSTALLED.get().cloned()
    }

    pub(crate) fn install(&self) {
        let _ = INSTALLED.set(self.clone());
    }

    /// Where this process serves `/metrics`, once a [`MetricsServer`]
    /// bound for the installed metrics (first one wins).
    pub fn serving() -> Option<SocketAddr> {
        SERVING.get().copied()
    }

    /// A meter for instruments of one component (the instrumentation
    /// scope), e.g. `meridian-gateway`.
    pub fn meter(&self, scope: &'static str) -> Meter {
        self.provider.meter(scope)
    }

    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    fn provider_is(&self, other: &Metrics) -> bool {
        Arc::ptr_eq(&self.prometheus.0, &other.prometheus.0)
    }

    /// Every instrument's current value in the Prometheus text format
    /// (version 0.0.4).
    pub fn render_prometheus(&self) -> Result<String> {
        let mut collected = ResourceMetrics::default();
        self.prometheus
            .collect(&mut collected)
            .map_err(|e| Error::Metrics(e.to_string()))?;
        encode_prometheus(&collected)
    }
}

/// The SDK takes readers by value; this shares one with [`Metrics`] so a
/// scrape can collect on demand.
#[derive(Debug, Clone)]
struct PrometheusReader(Arc<ManualReader>);

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        // Prometheus expects running totals.
        let _ = kind;
        Temporality::Cumulative
    }
}

/// A `/metrics` server running in the background; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `metrics` at `/metrics` until dropped.
    pub async fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            context: format!("cannot listen for /metrics on {addr}"),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            context: "cannot read the /metrics address".to_owned(),
            source,
        })?;
        if INSTALLED
            .get()
            .is_some_and(|installed| installed.provider_is(&metrics))
        {
            let _ = SERVING.set(local_addr);
        }
        let task = tokio::spawn(async move {
            if let Err(error) = serve_metrics(listener, metrics, std::future::pending()).await {
                tracing::warn!(%error, "metrics server stopped");
            }
        });
        Ok(Self { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. One
/// request per connection, at most [`CONNECTIONS_MAX`] at once, each
/// finished within [`CONNECTION_TIMEOUT`].
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A failed accept (e.g. out of file descriptors) is about
                // that connection; keep serving the next.
                Err(error) => {
                    tracing::debug!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n".to_owned(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned());
    }
    match metrics.render_prometheus() {
        Ok(text) => {
            let mut response = reply(StatusCode::OK, text);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            response
        }
        Err(error) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

/// One metric family as read from the SDK, before encoding.
struct Family {
    help: String,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

type Labels = Vec<(String, String)>;

enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    /// Sum, count and `(upper bound, count in that bucket)` pairs, the last
    /// one at +Inf; the encoder makes them cumulative.
    Histogram(f64, u64, Vec<(f64, u64)>),
}

/// Encodes collected metrics in the Prometheus text format (0.0.4) with
/// `prometheus-client`'s encoder: the names, types and label sets are
/// mapped here, the text (escaping, suffixes, bucket lines) is the
/// library's. Families are sorted by name so the output is stable.
pub(crate) fn encode_prometheus(collected: &ResourceMetrics) -> Result<String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            let base = prometheus_name(metric.name(), metric.unit());
            let help = metric.description();
            match metric.data() {
                AggregatedMetrics::F64(data) => add_family(&mut families, &base, help, data),
                AggregatedMetrics::U64(data) => add_family(&mut families, &base, help, data),
                AggregatedMetrics::I64(data) => add_family(&mut families, &base, help, data),
            }
        }
    }
    let resource: Labels = collected
        .resource()
        .iter()
        .map(|(key, value)| (sanitize(key.as_str()), value.as_str().into_owned()))
        .collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { resource, families }));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).map_err(|e| Error::Metrics(e.to_string()))?;
    Ok(out)
}

/// One scrape's worth of families, handed to the library's encoder.
#[derive(Debug)]
struct Snapshot {
    resource: Labels,
    families: BTreeMap<String, Family>,
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("kind", &self.kind)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if !self.resource.is_empty() {
            let mut target = sorted(&self.resource);
            target.dedup_by(|a, b| a.0 == b.0);
            encoder
                .encode_descriptor("target", "Target metadata", None, MetricType::Info)?
                .encode_info(&target)?;
        }
        for (name, family) in &self.families {
            if family.samples.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(name, &family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                if family.kind == MetricType::Info {
                    metric.encode_info(labels)?;
                    continue;
                }
                let mut sample = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (MetricType::Counter, Value::U64(v)) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(v, None)?
                    }
                    (MetricType::Counter, Value::F64(v)) => {
                        sample.encode_counter::<NoLabelSet, _, f64>(v, None)?
                    }
                    // A monotonic sum never goes below zero.
                    (MetricType::Counter, Value::I64(v)) => sample
                        .encode_counter::<NoLabelSet, _, u64>(
                            &u64::try_from(*v).unwrap_or(0),
                            None,
                        )?,
                    (_, Value::U64(v)) => sample.encode_gauge(v)?,
                    (_, Value::I64(v)) => sample.encode_gauge(v)?,
                    (_, Value::F64(v)) => sample.encode_gauge(v)?,
                    (_, Value::Histogram(sum, count, buckets)) => {
                        sample.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// The SDK's numbers, as the values the encoder takes.
trait Sample: Copy {
    fn value(self) -> Value;
    fn as_f64(self) -> f64;
}

impl Sample for u64 {
    fn value(self) -> Value {
        Value::U64(self)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Sample for i64 {
    fn value(self) -> Value {
        Value::I64(self)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Sample for f64 {
    fn value(self) -> Value {
        Value::F64(self)
    }
    fn as_f64(self) -> f64 {
        self
    }
}

fn add_family<T: Sample>(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    help: &str,
    data: &MetricData<T>,
) {
    // The library appends `_total` to counters and `_info` to infos, so
    // the family is named without them.
    let (name, kind) = match data {
        MetricData::Sum(sum) if sum.is_monotonic() => (
            base.strip_suffix("_total").unwrap_or(base).to_owned(),
            MetricType::Counter,
        ),
        // A gauge named `…_info` (value 1, the facts in its labels) is an
        // info metric, as `meridian_build_info` is.
        MetricData::Gauge(_) if base.ends_with("_info") => (
            base.strip_suffix("_info").unwrap_or(base).to_owned(),
            MetricType::Info,
        ),
        MetricData::Sum(_) | MetricData::Gauge(_) => (base.to_owned(), MetricType::Gauge),
        MetricData::Histogram(_) => (base.to_owned(), MetricType::Histogram),
        // Only produced when a view asks for it, and no view does.
        MetricData::ExponentialHistogram(_) => return,
    };
    let family = families.entry(name).or_insert_with(|| Family {
        help: help.to_owned(),
        kind,
        samples: Vec::new(),
    });
    if family.kind != kind {
        // Two instruments whose names collide after sanitising: keep the
        // first rather than emit a family Prometheus would refuse.
        return;
    }
    let out = &mut family.samples;
    match data {
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                out.push((labels(point.attributes()), point.value().value()));
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                out.push((labels(point.attributes()), point.value().value()));
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                let mut buckets: Vec<(f64, u64)> =
                    point.bounds().zip(point.bucket_counts()).collect();
                // The SDK keeps one more count than bounds: the +Inf bucket.
                let overflow = point.bucket_counts().nth(buckets.len()).unwrap_or(0);
                buckets.push((f64::INFINITY, overflow));
                let value = Value::Histogram(point.sum().as_f64(), point.count(), buckets);
                out.push((labels(point.attributes()), value));
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// Attributes as sanitised label pairs, sorted by name.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Labels {
    let pairs: Labels = attributes
        .map(|kv| (sanitize(kv.key.as_str()), kv.value.as_str().into_owned()))
        .collect();
    sorted(&pairs)
}

fn sorted(pairs: &Labels) -> Labels {
    let mut pairs = pairs.clone();
    pairs.sort();
    pairs
}

/// The Prometheus name of an OpenTelemetry instrument: sanitised, with
/// its unit appended when the unit is one Prometheus names.
fn prometheus_name(name: &str, unit: &str) -> String {
    let mut out = sanitize(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        _ => "",
    };
    if !suffix.is_empty() && !out.ends_with(&format!("_{suffix}")) {
        out.push('_');
        out.push_str(suffix);
    }
    out
}

/// Replaces every character outside `[a-zA-Z0-9_:]` with `_`; a leading
/// digit gets a `_` in front.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        assert_eq!(
            prometheus_name("meridian.handoff.latency", "s"),
            "meridian_handoff_latency_seconds"
        );
        assert_eq!(
            prometheus_name("queue_depth_seconds", "s"),
            "queue_depth_seconds"
        );
        assert_eq!(
            prometheus_name("meridian.conflicts", "{conflict}"),
            "meridian_conflicts"
        );
        assert_eq!(sanitize("9lives-and.more"), "_9lives_and_more");
    }

    #[test]
    fn label_values_are_escaped_and_infos_and_counters_get_their_suffix() {
        let mut families = BTreeMap::new();
        let attributes = vec![("peer_region".to_owned(), "a\"b\\c\nd".to_owned())];
        families.insert(
            "meridian_build".to_owned(),
            Family {
                help: "Build".into(),
                kind: MetricType::Info,
                samples: vec![(attributes.clone(), Value::U64(1))],
            },
        );
        families.insert(
            "meridian_handoffs".to_owned(),
            Family {
                help: "Two\nlines".into(),
                kind: MetricType::Counter,
                samples: vec![(attributes, Value::U64(3))],
            },
        );
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            resource: Vec::new(),
            families,
        }));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        for expected in [
            r#"meridian_build_info{peer_region="a\"b\\c\nd"} 1"#,
            "# HELP meridian_handoffs_total Two\\nlines",
            "# TYPE meridian_handoffs_total counter",
            r#"meridian_handoffs_total{peer_region="a\"b\\c\nd"} 3"#,
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in:\n{out}");
        }
    }
}
