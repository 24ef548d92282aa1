//! A real OTLP collector for tests: a tonic server implementing the
//! collector's `TraceService` and `MetricsService` from
//! `opentelemetry-proto`, on a loopback port, keeping everything it is
//! sent. Tests point an exporter at [`OtlpReceiver::endpoint`] and wait for
//! what they expect with [`OtlpReceiver::wait_for_spans`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use opentelemetry::trace::{SpanId, TraceId};
/// The kind of a received span (server, client, producer, consumer…).
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::ResourceMetrics,
};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::{Error, Result};

/// One received span, flattened with its resource's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    pub kind: SpanKind,
    /// Attribute values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// The attributes of the resource that sent the span.
    pub resource: BTreeMap<String, String>,
    /// Linked span contexts, as (trace id, span id).
    pub links: Vec<(TraceId, SpanId)>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ResourceMetrics>,
}

#[derive(Clone)]
struct Collector {
    received: Arc<Mutex<Received>>,
    /// Bumped on every export, so waiters wake without polling on a timer.
    exports: Arc<watch::Sender<u64>>,
}

impl Collector {
    fn record(&self, store: impl FnOnce(&mut Received)) {
        store(&mut self.received.lock().unwrap_or_else(PoisonError::into_inner));
        self.exports.send_modify(|n| *n += 1);
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ReceivedSpan {
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    name: span.name,
                    trace_id: trace_id(&span.trace_id),
                    span_id: span_id(&span.span_id),
                    parent_span_id: Some(span_id(&span.parent_span_id))
                        .filter(|id| *id != SpanId::INVALID),
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (trace_id(&l.trace_id), span_id(&l.span_id)))
                        .collect(),
                });
            }
        }
        self.record(|received| received.spans.extend(spans));
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> std::result::Result<Response<ExportMetricsServiceResponse>, Status> {
        let metrics = request.into_inner().resource_metrics;
        self.record(|received| received.metrics.extend(metrics));
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The running collector; dropping it stops the server.
pub struct OtlpReceiver {
    addr: SocketAddr,
    collector: Collector,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a collector on a free loopback port.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                context: "cannot bind the OTLP receiver".to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "cannot read the OTLP receiver's address".to_owned(),
            source,
        })?;
        let (exports, _) = watch::channel(0);
        let collector = Collector {
            received: Arc::default(),
            exports: Arc::new(exports),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()));
        let task = tokio::spawn(async move {
            let incoming = TcpListenerStream::new(listener);
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::warn!(%error, "OTLP receiver stopped");
            }
        });
        Ok(Self {
            addr,
            collector,
            stop: Some(stop),
            task,
        })
    }

    /// The URL to give an OTLP/gRPC exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spans
            .clone()
    }

    /// Every metrics export received so far.
    pub fn metrics(&self) -> Vec<ResourceMetrics> {
        self.collector
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .metrics
            .clone()
    }

    /// The names of every metric received so far.
    pub fn metric_names(&self) -> Vec<String> {
        self.metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Waits until the spans received satisfy `done`, and returns them; an
    /// error names `what` after `timeout`.
    pub async fn wait_for_spans(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        self.wait_until(what, timeout, || {
            let spans = self.spans();
            done(&spans).then_some(spans)
        })
        .await
    }

    /// Waits until `check` returns something, re-checking after every
    /// export the receiver gets; an error names `what` after `timeout`.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn() -> Option<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exports = self.collector.exports.subscribe();
        loop {
            exports.borrow_and_update();
            if let Some(found) = check() {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, exports.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return check().ok_or_else(|| Error::Timeout {
                        what: what.to_owned(),
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn trace_id(bytes: &[u8]) -> TraceId {
    <[u8; 16]>::try_from(bytes)
        .map(TraceId::from_bytes)
        .unwrap_or(TraceId::INVALID)
}

fn span_id(bytes: &[u8]) -> SpanId {
    <[u8; 8]>::try_from(bytes)
        .map(SpanId::from_bytes)
        .unwrap_or(SpanId::INVALID)
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(render).unwrap_or_default(),
            )
        })
        .collect()
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
