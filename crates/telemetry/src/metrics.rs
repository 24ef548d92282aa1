//! Metrics: OpenTelemetry instruments, pushed over OTLP when an endpoint is
//! configured and always readable as Prometheus text from a small
//! `/metrics` HTTP server.
//!
//! The Prometheus text is encoded here (a page of code) rather than through
//! the `prometheus` crate or `opentelemetry-prometheus`, which would bring a
//! second metrics registry and its protobuf stack for one text format.
//! Naming follows the OpenTelemetry-to-Prometheus rules that matter for us:
//! dots become underscores, the unit is appended (`s` → `_seconds`),
//! monotonic sums are counters ending in `_total`, and the resource
//! attributes appear once as `target_info`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::Write as _,
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
}

impl Metrics {
    /// A provider with the Prometheus reader and, when given, a periodic
    /// OTLP reader.
    pub(crate) fn new(resource: Resource, otlp: Option<impl MetricReader>) -> Self {
        let prometheus = PrometheusReader(Arc::new(ManualReader::builder().build()));
        let mut builder = SdkMeterProvider::builder().with_resource(resource).with_reader(prometheus.clone());
        if let Some(otlp) = otlp {
            builder = builder.with_reader(otlp);
        }
        Self { provider: builder.build(), prometheus }
    }

    /// A meter for instruments of one component (the instrumentation
    /// scope), e.g. `meridian-gateway`.
    pub fn meter(&self, scope: &'static str) -> Meter {
        self.provider.meter(scope)
    }

    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Every instrument's current value in the Prometheus text format
    /// (version 0.0.4).
    pub fn render_prometheus(&self) -> Result<String> {
        let mut collected = ResourceMetrics::default();
        self.prometheus.collect(&mut collected).map_err(|e| Error::Metrics(e.to_string()))?;
        Ok(encode_prometheus(&collected))
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
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Io { context: format!("cannot listen for /metrics on {addr}"), source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Io { context: "cannot read the /metrics address".to_owned(), source })?;
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
        return reply(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n".to_owned());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned());
    }
    match metrics.render_prometheus() {
        Ok(text) => {
            let mut response = reply(StatusCode::OK, text);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        Err(error) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

/// One metric family: its help, type and sample lines.
struct Family {
    help: String,
    kind: &'static str,
    samples: String,
}

/// Encodes collected metrics in the Prometheus text format. Families are
/// sorted by name so the output is stable.
pub(crate) fn encode_prometheus(collected: &ResourceMetrics) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            let base = prometheus_name(metric.name(), metric.unit());
            match metric.data() {
                AggregatedMetrics::F64(data) => add_family(&mut families, &base, metric.description(), data),
                AggregatedMetrics::U64(data) => add_family(&mut families, &base, metric.description(), data),
                AggregatedMetrics::I64(data) => add_family(&mut families, &base, metric.description(), data),
            }
        }
    }
    let mut out = String::new();
    let resource: Vec<KeyValue> =
        collected.resource().iter().map(|(key, value)| KeyValue::new(key.clone(), value.clone())).collect();
    if !resource.is_empty() {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
        let _ = writeln!(out, "target_info{} 1", labels(resource.iter(), None));
    }
    for (name, family) in families {
        if family.samples.is_empty() {
            continue;
        }
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        out.push_str(&family.samples);
    }
    out
}

fn add_family<T: Sample>(families: &mut BTreeMap<String, Family>, base: &str, help: &str, data: &MetricData<T>) {
    let (name, kind) = match data {
        MetricData::Sum(sum) if sum.is_monotonic() => {
            (if base.ends_with("_total") { base.to_owned() } else { format!("{base}_total") }, "counter")
        }
        MetricData::Sum(_) | MetricData::Gauge(_) => (base.to_owned(), "gauge"),
        MetricData::Histogram(_) => (base.to_owned(), "histogram"),
        // Only produced when a view asks for it, and no view does.
        MetricData::ExponentialHistogram(_) => return,
    };
    let family =
        families.entry(name.clone()).or_insert_with(|| Family { help: help.to_owned(), kind, samples: String::new() });
    if family.kind != kind {
        // Two instruments whose names collide after sanitising: keep the
        // first rather than emit a family Prometheus would refuse.
        return;
    }
    let out = &mut family.samples;
    match data {
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(point.attributes(), None), point.value().render());
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(point.attributes(), None), point.value().render());
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative += count;
                    let le = bound.render();
                    let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(point.attributes(), Some(&le)));
                }
                let _ = writeln!(out, "{name}_bucket{} {}", labels(point.attributes(), Some("+Inf")), point.count());
                let _ = writeln!(out, "{name}_sum{} {}", labels(point.attributes(), None), point.sum().render());
                let _ = writeln!(out, "{name}_count{} {}", labels(point.attributes(), None), point.count());
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// A sample value as Prometheus writes it.
trait Sample: Copy {
    fn render(self) -> String;
}

impl Sample for u64 {
    fn render(self) -> String {
        self.to_string()
    }
}

impl Sample for i64 {
    fn render(self) -> String {
        self.to_string()
    }
}

impl Sample for f64 {
    fn render(self) -> String {
        if self.is_nan() {
            "NaN".to_owned()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            self.to_string()
        }
    }
}

/// `{key="value",…}` with `le` last, or nothing when there are no labels.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> =
        attributes.map(|kv| (sanitize(kv.key.as_str()), escape_label(&kv.value.as_str()))).collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(("le".to_owned(), le.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.into_iter().map(|(key, value)| format!("{key}=\"{value}\"")).collect();
    format!("{{{}}}", inner.join(","))
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
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        assert_eq!(prometheus_name("meridian.handoff.latency", "s"), "meridian_handoff_latency_seconds");
        assert_eq!(prometheus_name("queue_depth_seconds", "s"), "queue_depth_seconds");
        assert_eq!(prometheus_name("meridian.conflicts", "{conflict}"), "meridian_conflicts");
        assert_eq!(sanitize("9lives-and.more"), "_9lives_and_more");
    }

    #[test]
    fn label_values_are_escaped() {
        let kv = [KeyValue::new("peer.region", "a\"b\\c\nd")];
        assert_eq!(labels(kv.iter(), Some("0.5")), r#"{peer_region="a\"b\\c\nd",le="0.5"}"#);
        assert_eq!(labels([].iter(), None), "");
    }

    #[test]
    fn floats_render_as_prometheus_reads_them() {
        assert_eq!(f64::INFINITY.render(), "+Inf");
        assert_eq!(f64::NEG_INFINITY.render(), "-Inf");
        assert_eq!(f64::NAN.render(), "NaN");
        assert_eq!(0.25f64.render(), "0.25");
    }
}
