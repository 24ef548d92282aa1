//! RED metrics for every gRPC call a server answers, as one tower layer:
//! [`RpcMetricsLayer`] records `rpc.server.call.duration` (seconds, the
//! OpenTelemetry semantic conventions for RPC, v1.40) with
//! `rpc.system.name = "grpc"`, `rpc.method` (`pkg.Service/Method`) and
//! `rpc.response.status_code` (`OK`, `NOT_FOUND`, …). Its count is the
//! rate, its count by code the errors, its buckets the duration.
//!
//! The status is read where gRPC puts it: in the response headers of a
//! trailers-only response (how tonic answers an error before any message),
//! else in the trailers at the end of the body, so a streaming call is
//! recorded when its stream ends, with the code it ended with. A call
//! dropped before it ends (the client went away, the deadline passed) is
//! `CANCELLED`; a body that ends without a status is `UNKNOWN`.
//!
//! Cardinality: a path that is not `/service/method` of plain name
//! characters, and any call answered `UNIMPLEMENTED` (how a server answers
//! a method it does not serve), is recorded as method `_OTHER`, as the
//! conventions ask, so a client cannot mint series by calling made-up
//! paths.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::{
    KeyValue,
    metrics::{Histogram, Meter},
};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The instrument's name.
pub const RPC_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
/// The conventions' advisory buckets for `rpc.server.call.duration`.
const DURATION_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The longest method path recorded as itself.
const METHOD_CHARS_MAX: usize = 160;

/// Records RED metrics of every call through it; see the module doc.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    shared: Arc<Shared>,
}

struct Shared {
    duration: Histogram<f64>,
    /// Attributes on every series of this server (its region, which port).
    constant: Vec<KeyValue>,
}

impl RpcMetricsLayer {
    /// A layer recording into `meter`, adding `constant` (e.g. the region
    /// and which server: `meridian.server = "mesh"`) to every series.
    pub fn new(meter: &Meter, constant: Vec<KeyValue>) -> Self {
        let duration = meter
            .f64_histogram(RPC_SERVER_CALL_DURATION)
            .with_description(
                "Duration of gRPC calls served, by method and status code (count: calls)",
            )
            .with_unit("s")
            .with_boundaries(DURATION_BUCKETS_S.to_vec())
            .build();
        Self {
            shared: Arc::new(Shared { duration, constant }),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = BoxError;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = Call {
            shared: self.shared.clone(),
            method: method_of(request.uri().path()),
            started: Instant::now(),
            done: false,
        };
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// One call in flight: recorded exactly once, as `CANCELLED` if dropped
/// before its status is known.
struct Call {
    shared: Arc<Shared>,
    method: Option<String>,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let method = match &self.method {
            Some(method) if code != Code::Unimplemented => method.clone(),
            _ => "_OTHER".to_owned(),
        };
        let mut attributes = self.shared.constant.clone();
        attributes.extend([
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", method),
            KeyValue::new("rpc.response.status_code", code_name(code)),
        ]);
        self.shared
            .duration
            .record(self.started.elapsed().as_secs_f64(), &attributes);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetrics`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<MeteredBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        match result {
            Ok(response) => {
                // Trailers-only: the status is in the headers, the body empty.
                let status =
                    header_code(response.headers()).or_else(|| http_code(response.status()));
                if let (Some(code), Some(call)) = (status, call.as_mut()) {
                    call.finish(code);
                }
                Poll::Ready(Ok(response.map(|inner| MeteredBody { inner, call })))
            }
            Err(error) => {
                let error: BoxError = error.into();
                if let Some(call) = call.as_mut() {
                    call.finish(error_code(&*error));
                }
                Poll::Ready(Err(error))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers pass (or
    /// when it ends or is dropped without them).
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(header_code) {
                        call.finish(code);
                    }
                }
                Some(Err(_)) => call.finish(Code::Unknown),
                // gRPC ends every call with a status; none is an error.
                None => call.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `pkg.Service/Method` from a request path, or `None` for anything else.
fn method_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    (rest.len() <= METHOD_CHARS_MAX && plain(service) && plain(method) && !method.contains('.'))
        .then(|| rest.to_owned())
}

fn header_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.trim().parse::<i32>().ok()?;
    Some(Code::from_i32(code))
}

/// A response that is not gRPC's 200: the code gRPC clients derive from
/// the HTTP status (gRPC's "HTTP to gRPC status code mapping").
fn http_code(status: http::StatusCode) -> Option<Code> {
    if status == http::StatusCode::OK {
        return None;
    }
    Some(match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    })
}

/// The code a client sees for an error of the inner service, as tonic
/// turns it into a status: a `Status` anywhere in the chain, a timeout as
/// `CANCELLED`, anything else `UNKNOWN`.
fn error_code(error: &(dyn std::error::Error + 'static)) -> Code {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if error.is::<tonic::TimeoutExpired>() {
            return Code::Cancelled;
        }
        source = error.source();
    }
    Code::Unknown
}

/// The code's name as gRPC spells it (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::{Telemetry, TelemetryConfig};

    /// A response body of canned frames: messages, then maybe trailers.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A server that answers every call with one canned response.
    #[derive(Clone)]
    struct Canned {
        headers: HeaderMap,
        trailers: Option<HeaderMap>,
    }

    impl Service<Request<()>> for Canned {
        type Response = Response<Frames>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _request: Request<()>) -> Self::Future {
            let mut frames = VecDeque::from([Frame::data(Bytes::from_static(b"message"))]);
            frames.extend(self.trailers.clone().map(Frame::trailers));
            let mut response = Response::new(Frames(frames));
            *response.headers_mut() = self.headers.clone();
            std::future::ready(Ok(response))
        }
    }

    fn status(code: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static(code));
        headers
    }

    #[tokio::test]
    async fn codes_are_read_from_trailers_from_trailers_only_headers_and_from_drops() {
        let (telemetry, _dispatch) = Telemetry::build(&TelemetryConfig::new("rpc-test")).unwrap();
        let layer = RpcMetricsLayer::new(
            &telemetry.metrics().meter("test"),
            vec![KeyValue::new("meridian.server", "t")],
        );
        let call = |canned: Canned, path: &'static str| {
            let mut service = layer.layer(canned);
            async move {
                service
                    .call(Request::builder().uri(path).body(()).unwrap())
                    .await
                    .unwrap()
            }
        };
        // A stream that ends with INTERNAL in its trailers.
        let streamed = Canned {
            headers: HeaderMap::new(),
            trailers: Some(status("13")),
        };
        let response = call(streamed.clone(), "/p.S/Stream").await;
        response.into_body().collect().await.unwrap();
        // An error before any message: the status is in the headers.
        let trailers_only = Canned {
            headers: status("5"),
            trailers: None,
        };
        drop(call(trailers_only, "/p.S/Get").await);
        // A stream the client abandons before its end.
        drop(call(streamed, "/p.S/Abandoned").await);
        // A made-up method answered UNIMPLEMENTED.
        let unimplemented = Canned {
            headers: status("12"),
            trailers: None,
        };
        drop(call(unimplemented, "/p.S/Nonsense").await);

        let text = telemetry.metrics().render_prometheus().unwrap();
        for (method, code) in [
            ("p.S/Stream", "INTERNAL"),
            ("p.S/Get", "NOT_FOUND"),
            ("p.S/Abandoned", "CANCELLED"),
            ("_OTHER", "UNIMPLEMENTED"),
        ] {
            let series = format!(
                "rpc_server_call_duration_seconds_count{{meridian_server=\"t\",rpc_method=\"{method}\",\
                 rpc_response_status_code=\"{code}\",rpc_system_name=\"grpc\"}} 1"
            );
            assert!(
                text.lines().any(|l| l == series),
                "missing {series} in:\n{text}"
            );
        }
        assert_eq!(
            text.matches("rpc_server_call_duration_seconds_count{")
                .count(),
            4,
            "one series per call:\n{text}"
        );
    }

    #[test]
    fn only_plain_service_and_method_paths_are_kept() {
        assert_eq!(
            method_of("/meridian.v1.TicketService/GetTicket").as_deref(),
            Some("meridian.v1.TicketService/GetTicket")
        );
        assert_eq!(
            method_of("/grpc.health.v1.Health/Check").as_deref(),
            Some("grpc.health.v1.Health/Check")
        );
        for odd in [
            "/",
            "/x",
            "/a/b/c",
            "//m",
            "/s/",
            "/s/m.x",
            "/s p/m",
            "no-slash/m",
        ] {
            assert_eq!(method_of(odd), None, "{odd}");
        }
        assert_eq!(method_of(&format!("/{}/m", "s".repeat(200))), None);
    }

    #[test]
    fn codes_come_from_headers_http_statuses_and_error_chains() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(header_code(&headers), Some(Code::NotFound));
        assert_eq!(header_code(&HeaderMap::new()), None);
        assert_eq!(http_code(http::StatusCode::OK), None);
        assert_eq!(
            http_code(http::StatusCode::SERVICE_UNAVAILABLE),
            Some(Code::Unavailable)
        );
        let status: BoxError = Box::new(tonic::Status::permission_denied("no"));
        assert_eq!(error_code(&*status), Code::PermissionDenied);
        let other: BoxError = "broken".into();
        assert_eq!(error_code(&*other), Code::Unknown);
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    }
}
