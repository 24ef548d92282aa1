//! The web console: a small HTTP/1 server (hyper) beside the router's gRPC
//! port, with three pages (Now, Handoffs, Rules) and a ticket's journey.
//!
//! Data sources, all read live and never stored:
//! - the router's own state: the active rules, its health table and its
//!   decision logic (`meridian-rules`), read through the injected clock;
//! - each gateway's `TicketService`: `GetStatus` (queue, SLA risk, lease
//!   fencing, replication lag), `WatchEvents` (a region's log for the
//!   Handoffs stream, a ticket's events for its journey), `GetTicket` and
//!   `ListTickets` (the last day's tickets for the what-if).
//!
//! Live pages use server-sent events (`text/event-stream`). Pages are
//! plain HTML, CSS and a little JavaScript compiled into the binary with
//! `include_str!`: nothing is fetched from elsewhere.
//!
//! Access: with the router's `[auth]`, every request but the login page
//! needs a token of a role that may read (`auth`), from any peer; the
//! console serves HTTPS with the router's `[tls]` certificate, and refuses
//! to start on a non-loopback address without it. Without `[auth]` it is
//! local-only: it binds loopback by default and answers 403 to any peer
//! that is not a loopback address, whatever it is bound to.

mod auth;
mod intake;
mod limits;
// `pub(crate)`: the pure what-if is re-exported for `meridian rules what-if`.
pub(crate) mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::{SignedDuration, Timestamp};
use meridian_auth::Principal;
use meridian_core::{Clock, RegionId};
use meridian_core::{Priority, Skill, Tier};
use meridian_proto::v1;
use meridian_proto::v1::watch_events_request::Scope;
use meridian_rules::RouteRequest;
use meridian_rules_source::ActiveRules;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub(crate) use auth::ConsoleAuth;

use crate::config::{ConsoleConfig, TRACE_ID_PLACEHOLDER};
use crate::health::HealthTable;
use crate::service::RouterApi;

/// The console's calls carry the router's own token (an sre's) when the
/// gateways require one.
type TicketClient = v1::ticket_service_client::TicketServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, meridian_auth::BearerToken>,
>;
/// What an SSE page's feeder sends the response body.
type SseFrame = Result<Frame<Bytes>, Infallible>;

/// Connections served at once from one client address (an IPv6 /64
/// counts as one address): an idle or slow client holds at most these.
/// Each SSE page holds one.
const CONNECTIONS_PER_ADDRESS_MAX: usize = 32;
/// Connections served at once in all (a bound on file descriptors).
const CONNECTIONS_MAX: usize = 2_048;
/// A request's head (and the next one's, on a kept-alive connection) must
/// arrive within this, or the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request body that pauses this long between chunks is cut off.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request body (the login form, a what-if file) must arrive
/// within this, however it trickles in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A body declared larger than its limit is read and dropped, up to this,
/// before the 413 (larger ones are refused without reading).
const DRAIN_BYTES_MAX: u64 = 1024 * 1024;
/// Live streams (SSE) one principal may hold open at once.
pub const STREAMS_PER_PRINCIPAL_MAX: usize = 8;
/// Live streams open at once in all.
const STREAMS_MAX: usize = 1_024;
/// The largest what-if rules file accepted.
pub const WHAT_IF_BYTES_MAX: usize = 256 * 1024;
/// Each call to a gateway.
const GATEWAY_DEADLINE: Duration = Duration::from_secs(2);
/// How often the Now stream sends the page's state.
const NOW_TICK: Duration = Duration::from_secs(1);
/// Tickets at risk read from one gateway per round (its largest page): the
/// list is the soonest due among the oldest this many.
const AT_RISK_READ_MAX: u32 = 500;
/// Events of each region's log the Handoffs page starts with.
const HANDOFF_BACKLOG_EVENTS: u64 = 1_000;
/// A gateway whose stream failed is asked again after this.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(2);
/// SSE messages buffered per page before the stream waits for the browser.
const SSE_BUFFER: usize = 64;
/// The most events of one ticket read from one gateway.
const JOURNEY_EVENTS_MAX: usize = 10_000;
/// How long a ticket's event stream may stay quiet before its backlog is
/// taken as complete (the stream stays open for live events).
const JOURNEY_IDLE: Duration = Duration::from_millis(300);
/// The most tickets the what-if re-routes.
const WHAT_IF_TICKETS_MAX: usize = 5_000;
/// The event kinds the Handoffs page shows.
const HANDOFF_KINDS: [&str; 5] = [
    "handoff_offered",
    "handoff_accepted",
    "handoff_refused",
    "taken_over",
    "shift_summary",
];

const NOW_HTML: &str = include_str!("now.html");
const HANDOFFS_HTML: &str = include_str!("handoffs.html");
const RULES_HTML: &str = include_str!("rules.html");
const JOURNEY_HTML: &str = include_str!("journey.html");
const LOGIN_HTML: &str = include_str!("login.html");
/// Where the login page shows why a token was refused.
const LOGIN_ERROR_SLOT: &str = "<!--login-error-->";
/// The largest login form accepted (a token is at most 8 KiB).
const LOGIN_BYTES_MAX: usize = 16 * 1024;
/// How often an open SSE stream checks its token again: a stream outlives
/// neither its token's expiry nor its key by more than this.
const SSE_RECHECK: Duration = Duration::from_secs(5);
/// A TLS peer that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// Every gateway's status and the Now page's ticket lists, and when they
/// were asked.
type AskedStatuses = (std::time::Instant, Gathered);

/// What the Now page reads from the gateways in one round.
#[derive(Clone)]
struct Gathered {
    statuses: BTreeMap<String, view::GatewayView>,
    held_off_shift: view::TicketList,
    at_risk: view::TicketList,
}

/// What the console reads; shared by every connection (cloning is cheap).
#[derive(Clone)]
pub(crate) struct Console {
    rules: Arc<ActiveRules>,
    health: Arc<HealthTable>,
    gateways: BTreeMap<RegionId, TicketClient>,
    clock: Arc<dyn Clock>,
    tracing_ui: Option<String>,
    /// The last statuses the live Now pages were sent, and when they were
    /// asked: every open page shares one round of `GetStatus` per tick
    /// instead of asking every gateway itself.
    live_statuses: Arc<tokio::sync::Mutex<Option<AskedStatuses>>>,
    /// `Some` when the router has `[auth]`: every request is authenticated.
    auth: Option<ConsoleAuth>,
    /// Live streams open, per principal.
    streams: limits::StreamLimits,
    /// The router's API, for the intake endpoint (`intake`).
    api: RouterApi,
}

impl Console {
    /// The console over the router's `api` (its rules, health table and
    /// clock, and the intake endpoint's calls), reading the gateways on
    /// `channels` with the router's own `token`.
    pub(crate) fn new(
        config: &ConsoleConfig,
        api: RouterApi,
        channels: &HashMap<RegionId, Channel>,
        token: meridian_auth::BearerToken,
        auth: Option<ConsoleAuth>,
    ) -> Self {
        let gateways = channels
            .iter()
            .map(|(region, channel)| {
                (
                    region.clone(),
                    v1::ticket_service_client::TicketServiceClient::with_interceptor(
                        channel.clone(),
                        token.clone(),
                    ),
                )
            })
            .collect();
        Self {
            rules: api.rules().clone(),
            health: api.health().clone(),
            gateways,
            clock: api.clock().clone(),
            tracing_ui: config.tracing_ui.clone(),
            live_statuses: Arc::default(),
            auth,
            streams: limits::StreamLimits::new(STREAMS_PER_PRINCIPAL_MAX, STREAMS_MAX),
            api,
        }
    }
}

/// How the console is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Http,
    Https,
}

/// How a console on `listen` is served: HTTPS whenever it takes tokens and
/// the router has a certificate, so tokens never cross the network in clear
/// text; plain HTTP on loopback; and refused, naming the fields, when it
/// would take tokens in clear text from other hosts. Without `[auth]` the
/// console is local-only over HTTP, as it always was.
pub(crate) fn transport(auth: bool, tls: bool, listen: SocketAddr) -> Result<Transport, String> {
    match (auth, tls) {
        (false, _) => Ok(Transport::Http),
        (true, true) => Ok(Transport::Https),
        (true, false) if listen.ip().to_canonical().is_loopback() => Ok(Transport::Http),
        (true, false) => Err(format!(
            "console.listen {listen} is not a loopback address and the router has [auth] but no [tls] cert and key: \
             the console would take tokens over plaintext HTTP; set tls.cert and tls.key, or bind console.listen to 127.0.0.1"
        )),
    }
}

/// The console's TLS server settings from the router's `[tls]` certificate
/// chain and key (PEM), for HTTP/1.1.
pub(crate) fn tls_acceptor(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert: {e}"))?;
    if chain.is_empty() {
        return Err("tls.cert: no certificate in the file".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("tls.key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("console TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.cert and tls.key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the console on `listener` (over TLS with `tls`) until the task
/// is aborted; the connections are aborted with it.
///
/// The accept loop is ours (rather than `axum::serve`) so that each
/// connection is admitted under the per-address cap before anything is
/// read, its TLS handshake has a deadline, and hyper reads its request
/// heads under [`HEADER_READ_TIMEOUT`].
pub(crate) async fn serve(
    console: Arc<Console>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let app = router(Console::clone(&console));
    let limits = limits::ConnectionLimits::new(CONNECTIONS_PER_ADDRESS_MAX, CONNECTIONS_MAX);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "console accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Refused connections are closed at once: nothing is read from them.
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(limits::Refused::PerKey(limit)) => {
                let why = "console connection refused: too many open from this address";
                tracing::warn!(peer = %peer, limit, "{why}");
                continue;
            }
            Err(limits::Refused::Total(limit)) => {
                tracing::warn!(peer = %peer, limit, "console connection refused: too many open");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(app, peer, stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(app, peer, stream).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, peer = %peer, "console TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "console TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
}

/// The client address of a request, put in its extensions by the accept
/// loop.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Who asks, once the gate has verified the token (`None` without
/// `[auth]`), and the token (a live stream checks it again).
#[derive(Debug, Clone)]
struct Caller(Option<(Principal, String)>);

async fn serve_connection<I>(app: axum::Router, peer: SocketAddr, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        // A Router is always ready: `call` without `poll_ready` is allowed.
        tower_service::Service::call(&mut app.clone(), request)
    });
    // The header read timeout also bounds an idle keep-alive connection:
    // hyper starts it whenever it waits for the next request's head.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, peer = %peer, "console connection ended");
    }
}

/// The console's routes behind its gate (local-only rule, CSRF check,
/// authentication and roles), with the security headers on every answer
/// and a deadline between the chunks of a request body.
fn router(console: Console) -> axum::Router {
    let tls = console.auth.as_ref().is_some_and(|a| a.tls);
    let routes = axum::Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, HTML, NOW_HTML) }))
        .route(
            "/now",
            get(|| async { reply(StatusCode::OK, HTML, NOW_HTML) }),
        )
        .route(
            "/handoffs",
            get(|| async { reply(StatusCode::OK, HTML, HANDOFFS_HTML) }),
        )
        .route(
            "/rules",
            get(|| async { reply(StatusCode::OK, HTML, RULES_HTML) }),
        )
        .route(
            "/journey/",
            get(|| async { reply(StatusCode::OK, HTML, JOURNEY_HTML) }),
        )
        .route(
            "/journey/{*ticket}",
            get(|| async { reply(StatusCode::OK, HTML, JOURNEY_HTML) }),
        )
        .route(
            "/console.css",
            get(|| async { reply(StatusCode::OK, CSS_TYPE, CSS) }),
        )
        .route(
            "/console.js",
            get(|| async { reply(StatusCode::OK, JS_TYPE, JS) }),
        )
        .route("/login", any(login_route))
        .route("/logout", any(login_route))
        .route("/api/session", get(session))
        .route("/api/now", get(api_now))
        .route("/api/now/events", get(now_events))
        .route("/api/handoffs/events", get(handoff_events))
        .route(
            "/api/rules",
            get(|State(console): State<Console>| async move { rules(&console) }),
        )
        .route("/api/rules/what-if", post(what_if))
        .route("/api/journey/{*ticket}", get(api_journey))
        .fallback(|request: Request| async move {
            let path = request.uri().path();
            problem(
                StatusCode::NOT_FOUND,
                &format!("no page {path}: try /, /handoffs or /rules"),
            )
        })
        .method_not_allowed_fallback(|request: Request| async move {
            let message = match (request.method(), request.uri().path()) {
                (&Method::POST, path) => format!("{path} takes GET"),
                (_, "/api/rules/what-if") => "/api/rules/what-if takes POST".to_owned(),
                _ => "use GET, or POST for /api/rules/what-if".to_owned(),
            };
            problem(StatusCode::METHOD_NOT_ALLOWED, &message)
        })
        .layer(middleware::from_fn_with_state(console.clone(), gate))
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
        // Beside the gate, not behind it: the intake endpoint takes bearer
        // tokens only and the roles of the gRPC methods it stands for.
        .merge(intake::routes());
    let mut routes = security_headers()
        .into_iter()
        .fold(routes, |routes, (name, value)| {
            routes.layer(SetResponseHeaderLayer::if_not_present(name, value))
        });
    if tls {
        // Browsers keep to HTTPS for this host once they have seen it.
        routes = routes.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    routes.with_state(console)
}

/// `Strict-Transport-Security` when the console serves TLS: a year.
const HSTS: &str = "max-age=31536000";

/// The headers every answer carries: scripts, styles and connections only
/// from the console itself (every page's script and style is a served
/// file, so no inline code is allowed), no framing, no MIME sniffing, no
/// referrer to other sites (journey URLs name tickets). Not `no-referrer`:
/// with it a browser sends `Origin: null` on the login form's POST, which
/// the CSRF check refuses.
fn security_headers() -> [(header::HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

const HTML: &str = "text/html; charset=utf-8";
const CSS_TYPE: &str = "text/css; charset=utf-8";
const JS_TYPE: &str = "text/javascript; charset=utf-8";

async fn api_now(State(console): State<Console>) -> Response {
    json(StatusCode::OK, &now(&console).await)
}

async fn api_journey(State(console): State<Console>, Path(id): Path<String>) -> Response {
    journey(&console, &id).await
}

fn full(body: impl Into<Bytes>) -> Body {
    Body::from(body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => reply(status, "application/json", bytes),
        Err(error) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {error}"),
        ),
    }
}

/// An error as `{"error": "..."}`.
fn problem(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(status, "application/json", body)
}

/// Without `[auth]`, only the router's own host may use the console (an
/// IPv4-mapped IPv6 loopback address counts as loopback).
fn local_only_allows(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

fn header_str(request: &Request, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn see_other(location: &str) -> Response {
    let mut response = reply(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        format!("see {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The login page, with `error` shown when a token was refused.
fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let slot = error.map_or_else(String::new, |e| {
        format!(
            "<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>",
            auth::html_escape(e)
        )
    });
    reply(
        status,
        "text/html; charset=utf-8",
        LOGIN_HTML.replace(LOGIN_ERROR_SLOT, &slot),
    )
}

/// What every request passes before its route: the local-only rule
/// without `[auth]`, the Origin check of a POST, then (with `[auth]`) the
/// token and its role. Refusals are logged with the reason, never the
/// token. The caller is handed to the route as a [`Caller`].
async fn gate(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let Some(Peer(peer)) = request.extensions().get::<Peer>().copied() else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request has no client address",
        );
    };
    if console.auth.is_none() && !local_only_allows(peer) {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "the console is local-only without [auth]: open it from the router's host\n",
        );
    }
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let tls = console.auth.as_ref().is_some_and(|a| a.tls);
    if method == Method::POST
        && let Err(reason) = auth::origin_allows(
            header_str(&request, header::ORIGIN),
            header_str(&request, header::HOST),
            tls,
        )
    {
        tracing::warn!(%path, peer = %peer, %reason, "console request refused: cross-origin");
        return problem(StatusCode::FORBIDDEN, &reason);
    }
    let need = auth::need(&method, &path);
    let mut caller = Caller(None);
    if let Some(settings) = &console.auth
        && need != auth::Need::Open
    {
        let (principal, token) = match settings.authenticate(request.headers()) {
            Ok(verified) => verified,
            Err(reason) => {
                tracing::warn!(%path, peer = %peer, %reason, "console request refused: unauthenticated");
                if auth::is_api(&path) {
                    let mut response =
                        problem(StatusCode::UNAUTHORIZED, &format!("log in first: {reason}"));
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return response;
                }
                let next = auth::safe_next(&path).filter(|p| *p != "/");
                return see_other(
                    &next.map_or_else(|| "/login".to_owned(), |p| format!("/login?next={p}")),
                );
            }
        };
        if let Err(reason) = auth::allows(need, principal.role) {
            tracing::warn!(%path, peer = %peer, subject = %principal.subject, role = %principal.role, %reason, "console request refused: permission denied");
            if auth::is_api(&path) {
                return problem(StatusCode::FORBIDDEN, &reason);
            }
            return reply(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                format!("{reason}\nLog in with another token at /login\n"),
            );
        }
        tracing::debug!(%path, principal = %principal, "console request authorized");
        let token = token.to_owned();
        caller = Caller(Some((principal, token)));
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `/login` and `/logout`, any method: without `[auth]` there is nothing
/// to log into, and the browser goes to the Now page.
async fn login_route(
    State(console): State<Console>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response {
    let Some(settings) = &console.auth else {
        return see_other("/");
    };
    let post = request.method() == Method::POST;
    match (post, request.uri().path()) {
        (false, "/login") => login_page(StatusCode::OK, None),
        (true, "/login") => login(settings, peer, request).await,
        (true, _) => with_cookie(see_other("/login"), &auth::logout_cookie(settings.tls)),
        (false, _) => problem(StatusCode::METHOD_NOT_ALLOWED, "/logout takes POST"),
    }
}

async fn session(Extension(Caller(caller)): Extension<Caller>) -> Response {
    json(
        StatusCode::OK,
        &match &caller {
            Some((principal, _)) => serde_json::json!({
                "auth": true,
                "subject": principal.subject,
                "role": principal.role.as_str(),
                "what_if": auth::allows(auth::Need::WhatIf, principal.role).is_ok(),
            }),
            None => serde_json::json!({ "auth": false, "what_if": true }),
        },
    )
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    /// Not all of it arrived within [`BODY_READ_TIMEOUT`], or a chunk
    /// took longer than [`BODY_IDLE_TIMEOUT`].
    TooSlow,
    Broken(String),
}

/// The whole body of `request`, at most `bytes_max`, read within
/// [`BODY_READ_TIMEOUT`] however it trickles in (the layer's per-chunk
/// deadline alone lets a client send one byte every few seconds).
async fn read_body(request: Request, bytes_max: usize) -> Result<Bytes, BodyError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > bytes_max as u64) {
        // Read and drop what the client sends (within the deadline, up to
        // a bound) before answering: closing a connection with unread data
        // resets it, and a browser then reports a failed fetch instead of
        // the 413.
        if declared <= DRAIN_BYTES_MAX {
            let mut body = request.into_body();
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(BODY_READ_TIMEOUT, drain).await;
        }
        return Err(BodyError::TooLarge);
    }
    let read = Limited::new(request.into_body(), bytes_max).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if caused_by::<http_body_util::LengthLimitError>(&*error) => {
            Err(BodyError::TooLarge)
        }
        Ok(Err(error)) if caused_by::<tower_http::timeout::TimeoutError>(&*error) => {
            Err(BodyError::TooSlow)
        }
        Ok(Err(error)) => Err(BodyError::Broken(error.to_string())),
    }
}

/// Whether `error` or one of its sources is an `E` (axum wraps a body's
/// errors in its own).
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<E>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// 408 for a body that came too slowly; the connection is closed.
fn too_slow() -> Response {
    let mut response = problem(
        StatusCode::REQUEST_TIMEOUT,
        &format!(
            "the request body did not arrive within {} s (or paused for {} s)",
            BODY_READ_TIMEOUT.as_secs(),
            BODY_IDLE_TIMEOUT.as_secs()
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `POST /login` with a form `token=<jwt>` (and `next=<path>`): verifies
/// the token and its role, then sets it as the login cookie for no longer
/// than it lives and sends the browser on (303).
async fn login(settings: &ConsoleAuth, peer: SocketAddr, request: Request) -> Response {
    let body = match read_body(request, LOGIN_BYTES_MAX).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let why = "the login form is too large for a token";
            return login_page(StatusCode::PAYLOAD_TOO_LARGE, Some(why));
        }
        Err(BodyError::TooSlow) => {
            tracing::warn!(peer = %peer, "console login refused: the form came too slowly");
            return too_slow();
        }
        Err(BodyError::Broken(error)) => {
            let why = format!("cannot read the login form: {error}");
            return login_page(StatusCode::BAD_REQUEST, Some(&why));
        }
    };
    let body = String::from_utf8_lossy(&body);
    let token = auth::form_value(&body, "token").unwrap_or_default();
    let token = token.trim();
    let refuse = |status: StatusCode, reason: &str| {
        tracing::warn!(peer = %peer, %reason, "console login refused");
        login_page(status, Some(reason))
    };
    if token.is_empty() {
        return refuse(StatusCode::UNAUTHORIZED, "paste a token (a JWT) to log in");
    }
    let principal = match settings.verifier.verify(token) {
        Ok(principal) => principal,
        Err(error) => return refuse(StatusCode::UNAUTHORIZED, &error.to_string()),
    };
    if let Err(reason) = auth::allows(auth::Need::Read, principal.role) {
        return refuse(StatusCode::FORBIDDEN, &reason);
    }
    let now = jiff::Timestamp::now().as_second();
    let lifetime = auth::expiry(token).map_or(0, |exp| exp.saturating_sub(now));
    if lifetime <= 0 {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the token expires now: log in with a fresh one",
        );
    }
    let next = auth::form_value(&body, "next");
    let next = next.as_deref().and_then(auth::safe_next).unwrap_or("/");
    tracing::info!(peer = %peer, principal = %principal, "console login");
    with_cookie(
        see_other(next),
        &auth::login_cookie(token, lifetime, settings.tls),
    )
}

/// A slot for one more live stream of the caller (the token's subject;
/// the client address without `[auth]`), or 429 saying why.
fn open_stream(
    console: &Console,
    caller: &Caller,
    peer: SocketAddr,
) -> Result<StreamSlot, Box<Response>> {
    let who = match &caller.0 {
        Some((principal, _)) => principal.subject.clone(),
        None => format!("address {}", limits::client_key(peer.ip())),
    };
    console.streams.open(&who).map_err(|refused| {
        let reason = match refused {
            limits::Refused::PerKey(max) => format!(
                "{who} already has {max} live streams open, the most one user may hold: \
                 close a console tab, or wait for one to end"
            ),
            limits::Refused::Total(max) => {
                format!(
                    "the console already serves {max} live streams, the most it holds: \
                     try again later"
                )
            }
        };
        tracing::warn!(who = %who, %reason, "console stream refused");
        let mut response = problem(StatusCode::TOO_MANY_REQUESTS, &reason);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        Box::new(response)
    })
}

type StreamSlot = limits::Slot<String>;

/// A live stream's response: its body ends as soon as the caller's token
/// stops verifying, and holds `slot` until it is dropped.
fn live(
    console: &Console,
    caller: Caller,
    path: &str,
    response: Response,
    slot: StreamSlot,
) -> Response {
    let response = match (&console.auth, caller.0) {
        (Some(settings), Some((_, token))) => {
            guarded(response, settings.clone(), token, path.to_owned())
        }
        _ => response,
    };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `response`'s body, ended as soon as `token` stops verifying (expired, or
/// its key left the JWKS): checked every [`SSE_RECHECK`].
fn guarded(response: Response, settings: ConsoleAuth, token: String, path: String) -> Response {
    let (parts, mut body) = response.into_parts();
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    tokio::spawn(async move {
        let mut recheck = tokio::time::interval(SSE_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(frame) => if sender.send(frame).await.is_err() { return },
                    None => return,
                },
                _ = recheck.tick() => {
                    if let Err(error) = settings.verifier.verify(&token) {
                        tracing::warn!(%path, reason = %error, "console stream ended: its token no longer verifies");
                        return;
                    }
                }
                () = sender.closed() => return,
            }
        }
    });
    Response::from_parts(
        parts,
        Body::new(StreamBody::new(ReceiverStream::new(receiver))),
    )
}

/// Every gateway's status, asked at once, each within its deadline.
async fn statuses(console: &Console) -> BTreeMap<String, view::GatewayView> {
    let mut asks = JoinSet::new();
    for (region, client) in &console.gateways {
        let (region, mut client) = (region.to_string(), client.clone());
        asks.spawn(async move {
            let answer =
                tokio::time::timeout(GATEWAY_DEADLINE, client.get_status(v1::GetStatusRequest {}))
                    .await;
            let view = match answer {
                Ok(Ok(status)) => view::GatewayView::from_status(&status.into_inner()),
                Ok(Err(status)) => view::GatewayView::unreachable(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )),
                Err(_) => view::GatewayView::unreachable(format!(
                    "no answer within {} ms",
                    GATEWAY_DEADLINE.as_millis()
                )),
            };
            (region, view)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok((region, view)) = joined {
            out.insert(region, view);
        }
    }
    out
}

/// Every gateway's status, then the tickets the Now page lists.
async fn gather(console: &Console) -> Gathered {
    let statuses = statuses(console).await;
    let (held_off_shift, at_risk) = now_tickets(console, &statuses).await;
    Gathered {
        statuses,
        held_off_shift,
        at_risk,
    }
}

/// One `ListTickets` call of a Now list.
struct ListAsk {
    region: String,
    at_risk: bool,
    request: v1::ListTicketsRequest,
}

/// The Now page's two lists, read with `ListTickets` from the gateways
/// whose status says they have such tickets (nothing is asked of a gateway
/// with none): each off-shift region's open tickets, one call per open
/// status it holds, [`view::NOW_LIST_MAX`] each (so the oldest of all are
/// among them); and each region's tickets at risk, up to one page of the
/// gateway's largest ([`AT_RISK_READ_MAX`]), sorted here by deadline. The
/// totals are the gateways' own counts.
async fn now_tickets(
    console: &Console,
    statuses: &BTreeMap<String, view::GatewayView>,
) -> (view::TicketList, view::TicketList) {
    let off_shift = view::off_shift_regions(&console.rules.current(), console.clock.now());
    let mut asks = Vec::new();
    let (mut held_total, mut risk_total) = (0, 0);
    for (region, status) in statuses.iter().filter(|(_, s)| s.reachable) {
        if off_shift.contains(region) && status.queue_open > 0 {
            held_total += status.queue_open;
            for wanted in view::OPEN_STATUSES {
                let name = wanted.as_str_name().trim_start_matches("STATUS_");
                if status
                    .queue_by_status
                    .get(&name.to_ascii_lowercase())
                    .is_some_and(|n| *n > 0)
                {
                    asks.push(ListAsk {
                        region: region.clone(),
                        at_risk: false,
                        request: v1::ListTicketsRequest {
                            status: wanted.into(),
                            owner_region: region.clone(),
                            page_size: view::NOW_LIST_MAX as u32,
                            ..Default::default()
                        },
                    });
                }
            }
        }
        if status.sla_at_risk > 0 {
            risk_total += status.sla_at_risk;
            asks.push(ListAsk {
                region: region.clone(),
                at_risk: true,
                request: v1::ListTicketsRequest {
                    owner_region: region.clone(),
                    sla_at_risk: true,
                    page_size: AT_RISK_READ_MAX,
                    ..Default::default()
                },
            });
        }
    }
    let mut calls = JoinSet::new();
    for ask in asks {
        let Some(mut client) = RegionId::new(ask.region.as_str())
            .ok()
            .and_then(|r| console.gateways.get(&r).cloned())
        else {
            continue;
        };
        calls.spawn(async move {
            let answer =
                tokio::time::timeout(GATEWAY_DEADLINE, client.list_tickets(ask.request)).await;
            let result = match answer {
                Ok(Ok(page)) => Ok(page.into_inner().tickets),
                Ok(Err(status)) => Err(format!(
                    "{}: {:?}: {}",
                    ask.region,
                    status.code(),
                    status.message()
                )),
                Err(_) => Err(format!(
                    "{}: no answer within {} ms",
                    ask.region,
                    GATEWAY_DEADLINE.as_millis()
                )),
            };
            (ask.at_risk, result)
        });
    }
    let (mut held, mut risky, mut held_errors, mut risk_errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some(joined) = calls.join_next().await {
        let Ok((at_risk, result)) = joined else {
            continue;
        };
        match (at_risk, result) {
            (false, Ok(tickets)) => held.extend(tickets),
            (true, Ok(tickets)) => risky.extend(tickets),
            (false, Err(error)) => held_errors.push(error),
            (true, Err(error)) => risk_errors.push(error),
        }
    }
    held_errors.sort();
    risk_errors.sort();
    (
        view::held_off_shift(held_total, held, held_errors),
        view::at_risk(risk_total, risky, risk_errors),
    )
}

async fn now(console: &Console) -> view::NowView {
    now_from(console, gather(console).await)
}

/// [`gather`] for the live pages: asked at most once per half tick, by
/// whichever page asks first; the others wait for that answer.
async fn live_gather(console: &Console) -> Gathered {
    let mut last = console.live_statuses.lock().await;
    if let Some((asked, gathered)) = last.as_ref()
        && asked.elapsed() < NOW_TICK / 2
    {
        return gathered.clone();
    }
    let gathered = gather(console).await;
    *last = Some((std::time::Instant::now(), gathered.clone()));
    gathered
}

fn now_from(console: &Console, gathered: Gathered) -> view::NowView {
    let rules = console.rules.current();
    let at = console.clock.now();
    let health = console.health.snapshot(at);
    let loads = console.health.loads(at);
    view::now_view(
        &rules,
        console.rules.refused().to_vec(),
        at,
        (&health, &loads),
        &gathered.statuses,
        (gathered.held_off_shift, gathered.at_risk),
    )
}

/// An SSE response fed by `receiver`.
fn sse(receiver: mpsc::Receiver<SseFrame>) -> Response {
    let mut response = Response::new(Body::new(StreamBody::new(ReceiverStream::new(receiver))));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One SSE message: `event` (when not the default) and one JSON line.
fn sse_message(event: Option<&str>, data: &str) -> SseFrame {
    let mut text = String::with_capacity(data.len() + 32);
    if let Some(event) = event {
        text.push_str("event: ");
        text.push_str(event);
        text.push('\n');
    }
    // JSON from serde has no raw newlines; split anyway, as SSE requires.
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    Ok(Frame::data(Bytes::from(text)))
}

/// The Now page's state every [`NOW_TICK`], until the page goes away.
async fn now_events(
    State(console): State<Console>,
    Extension(caller): Extension<Caller>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Response {
    let slot = match open_stream(&console, &caller, peer) {
        Ok(slot) => slot,
        Err(refused) => return *refused,
    };
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    let feeder = console.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(NOW_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = sender.closed() => return,
            }
            let state = now_from(&feeder, live_gather(&feeder).await);
            let Ok(data) = serde_json::to_string(&state) else {
                return;
            };
            if sender.send(sse_message(None, &data)).await.is_err() {
                return;
            }
        }
    });
    live(&console, caller, "/api/now/events", sse(receiver), slot)
}

/// One handoff-related event as the Handoffs page shows it.
#[derive(Debug, Serialize)]
struct HandoffItem {
    at: Timestamp,
    origin_region: String,
    origin_seq: u64,
    epoch: u64,
    ticket_id: String,
    kind: String,
    /// The event's payload as the gateway stores it.
    payload: serde_json::Value,
    journey_url: String,
    trace_url: Option<String>,
}

fn hlc_instant(hlc: u64) -> Timestamp {
    let millis = i64::try_from(meridian_core::HlcTimestamp(hlc).millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The tracing UI's link for a ticket's trace: the trace id is the ticket
/// id's 128 bits, as `meridian trace` prints it.
fn trace_url(template: Option<&str>, ticket_id: &str) -> Option<String> {
    let template = template?;
    let id = ticket_id.parse::<meridian_core::TicketId>().ok()?;
    let trace_id = format!("{:032x}", meridian_telemetry::ticket::trace_id(id));
    Some(
        template
            .replace(TRACE_ID_PLACEHOLDER, &trace_id)
            .replace("{ticket_id}", ticket_id),
    )
}

fn handoff_item(tracing_ui: Option<&str>, event: &v1::Event) -> HandoffItem {
    let payload = serde_json::from_str(&event.payload_json)
        .unwrap_or_else(|_| serde_json::Value::String(event.payload_json.clone()));
    HandoffItem {
        at: hlc_instant(event.hlc_time),
        origin_region: event.origin_region.clone(),
        origin_seq: event.origin_seq,
        epoch: event.epoch,
        ticket_id: event.ticket_id.clone(),
        kind: event.kind.clone(),
        payload,
        journey_url: format!("/journey/{}", event.ticket_id),
        trace_url: (event.kind != "shift_summary")
            .then(|| trace_url(tracing_ui, &event.ticket_id))
            .flatten(),
    }
}

/// Follows every gateway's own log (the recent backlog, then live) and
/// sends its handoffs, refusals, takeovers and shift summaries.
async fn handoff_events(
    State(console): State<Console>,
    Extension(caller): Extension<Caller>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Response {
    let slot = match open_stream(&console, &caller, peer) {
        Ok(slot) => slot,
        Err(refused) => return *refused,
    };
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    for (region, client) in &console.gateways {
        let (region, mut client, sender) = (region.to_string(), client.clone(), sender.clone());
        let tracing_ui = console.tracing_ui.clone();
        tokio::spawn(async move {
            let mut after_seq: Option<u64> = None;
            loop {
                let ended = tokio::select! {
                    ended = follow_region(&region, &mut client, &mut after_seq, tracing_ui.as_deref(), &sender) => ended,
                    () = sender.closed() => return,
                };
                let message = serde_json::json!({ "region": region, "error": ended }).to_string();
                if sender
                    .send(sse_message(Some("problem"), &message))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                    () = sender.closed() => return,
                }
            }
        });
    }
    // A first message tells the page the stream is open.
    let hello = serde_json::json!({ "regions": console.gateways.keys().map(ToString::to_string).collect::<Vec<_>>() });
    let _ = sender.try_send(sse_message(Some("hello"), &hello.to_string()));
    live(
        &console,
        caller,
        "/api/handoffs/events",
        sse(receiver),
        slot,
    )
}

/// Streams one region's log from `after_seq` (the recent backlog the first
/// time) until it fails; returns why.
async fn follow_region(
    region: &str,
    client: &mut TicketClient,
    after_seq: &mut Option<u64>,
    tracing_ui: Option<&str>,
    sender: &mpsc::Sender<SseFrame>,
) -> String {
    let start = match *after_seq {
        Some(seq) => seq,
        None => {
            match tokio::time::timeout(GATEWAY_DEADLINE, client.get_status(v1::GetStatusRequest {}))
                .await
            {
                Ok(Ok(status)) => status
                    .into_inner()
                    .local_head
                    .saturating_sub(HANDOFF_BACKLOG_EVENTS),
                Ok(Err(status)) => {
                    return format!("{region}: {:?}: {}", status.code(), status.message());
                }
                Err(_) => {
                    return format!(
                        "{region}: no answer within {} ms",
                        GATEWAY_DEADLINE.as_millis()
                    );
                }
            }
        }
    };
    let request = v1::WatchEventsRequest {
        scope: Some(Scope::Region(region.to_owned())),
        after_seq: start,
    };
    let mut stream = match tokio::time::timeout(GATEWAY_DEADLINE, client.watch_events(request))
        .await
    {
        Ok(Ok(stream)) => stream.into_inner(),
        Ok(Err(status)) => return format!("{region}: {:?}: {}", status.code(), status.message()),
        Err(_) => {
            return format!(
                "{region}: no answer within {} ms",
                GATEWAY_DEADLINE.as_millis()
            );
        }
    };
    *after_seq = Some(start);
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                *after_seq = Some(event.origin_seq);
                if !HANDOFF_KINDS.contains(&event.kind.as_str()) {
                    continue;
                }
                let item = handoff_item(tracing_ui, &event);
                let Ok(data) = serde_json::to_string(&item) else {
                    continue;
                };
                if sender.send(sse_message(None, &data)).await.is_err() {
                    return "the page went away".to_owned();
                }
            }
            Ok(None) => return format!("{region}: the gateway ended the stream"),
            Err(status) => return format!("{region}: {:?}: {}", status.code(), status.message()),
        }
    }
}

/// A ticket's journey as the journey page reads it: built by
/// [`crate::journey::build_journey`], the same code `meridian trace` uses
/// (events deduplicated and in hybrid-logical order, the holder of the
/// highest epoch, conflicts merged across regions, what each asked region
/// has not applied yet); this only shapes it for the page.
#[derive(Debug, Serialize)]
struct Journey {
    ticket_id: String,
    trace_id: String,
    trace_url: Option<String>,
    subject: Option<String>,
    owner_region: Option<String>,
    epoch: Option<u64>,
    status: Option<String>,
    /// Each asked region, and the events it holds (or why it could not say).
    regions: BTreeMap<String, RegionHolding>,
    steps: Vec<JourneyStep>,
    conflicts: Vec<ConflictView>,
}

/// One event of the journey, and the asked regions that have not applied it
/// (yet): what `meridian trace` shows as replication still to come.
#[derive(Debug, Serialize)]
struct JourneyStep {
    #[serde(flatten)]
    event: HandoffItem,
    missing_in: Vec<String>,
    /// Who made it (`subject (role)`), as `meridian trace` shows it.
    actor: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct RegionHolding {
    events: usize,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConflictView {
    /// The asked regions that show it.
    seen_in: String,
    origin_region: String,
    origin_seq: u64,
    stale_epoch: u64,
    current_epoch: u64,
    changes_json: String,
}

async fn journey(console: &Console, raw_id: &str) -> Response {
    let id = match raw_id.parse::<meridian_core::TicketId>() {
        Ok(id) => id,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("{raw_id:?} is not a ticket id (a UUID): {error}"),
            );
        }
    };
    let ticket_id = id.to_string();
    let mut asks = JoinSet::new();
    for (region, client) in &console.gateways {
        let (region, mut client, ticket_id) =
            (region.to_string(), client.clone(), ticket_id.clone());
        asks.spawn(async move {
            let ticket = tokio::time::timeout(
                GATEWAY_DEADLINE,
                client.get_ticket(v1::GetTicketRequest {
                    ticket_id: ticket_id.clone(),
                }),
            )
            .await;
            let ticket = match ticket {
                Ok(Ok(answer)) => Some(answer.into_inner()),
                _ => None,
            };
            let events = ticket_events(&mut client, &ticket_id).await;
            (region, ticket, events)
        });
    }
    // A region whose events could not be read is listed with its error and
    // is not one of the asked copies (it would show every event missing).
    let mut copies = Vec::new();
    let mut regions: BTreeMap<String, RegionHolding> = BTreeMap::new();
    while let Some(joined) = asks.join_next().await {
        let Ok((region, ticket, answer)) = joined else {
            continue;
        };
        let holding = regions.entry(region.clone()).or_default();
        match answer {
            Ok(events) => {
                holding.events = events.len();
                let (ticket, conflicts) =
                    ticket.map_or((None, Vec::new()), |a| (a.ticket, a.conflicts));
                copies.push(crate::journey::RegionCopy {
                    region,
                    ticket,
                    conflicts,
                    events,
                    ..Default::default()
                });
            }
            Err(error) => holding.error = Some(error),
        }
    }
    copies.sort_by(|a, b| a.region.cmp(&b.region));
    if copies
        .iter()
        .all(|c| c.events.is_empty() && c.ticket.is_none())
    {
        let problems: Vec<String> = regions
            .iter()
            .filter_map(|(r, h)| h.error.as_ref().map(|e| format!("{r}: {e}")))
            .collect();
        let mut message = format!("no gateway knows ticket {ticket_id}");
        if !problems.is_empty() {
            message.push_str(&format!(" (could not ask: {})", problems.join("; ")));
        }
        return problem(StatusCode::NOT_FOUND, &message);
    }
    let built = crate::journey::build_journey(id, &copies, console.clock.now());
    let raw: BTreeMap<(&str, u64), &v1::Event> = copies
        .iter()
        .flat_map(|c| &c.events)
        .map(|e| ((e.origin_region.as_str(), e.origin_seq), e))
        .collect();
    let steps = built
        .steps
        .iter()
        .filter_map(|step| {
            let event = raw.get(&(step.origin_region.as_str(), step.origin_seq))?;
            Some(JourneyStep {
                event: handoff_item(console.tracing_ui.as_deref(), event),
                missing_in: step.missing_in.clone(),
                actor: step.actor.clone(),
            })
        })
        .collect();
    let journey = Journey {
        trace_url: trace_url(console.tracing_ui.as_deref(), &ticket_id),
        ticket_id,
        trace_id: built.trace_id,
        subject: built.subject,
        owner_region: built.owner.as_ref().map(|o| o.region.clone()),
        epoch: built.owner.as_ref().map(|o| o.epoch),
        status: built.status,
        regions,
        steps,
        conflicts: built
            .conflicts
            .into_iter()
            .map(|c| ConflictView {
                seen_in: c.seen_in.join(", "),
                origin_region: c.origin_region,
                origin_seq: c.origin_seq,
                stale_epoch: c.stale_epoch,
                current_epoch: c.current_epoch,
                changes_json: c.changes,
            })
            .collect(),
    };
    json(StatusCode::OK, &journey)
}

/// The events of one ticket a gateway holds: its backlog, read until the
/// stream goes quiet (it stays open for live events).
async fn ticket_events(
    client: &mut TicketClient,
    ticket_id: &str,
) -> Result<Vec<v1::Event>, String> {
    let request = v1::WatchEventsRequest {
        scope: Some(Scope::TicketId(ticket_id.to_owned())),
        after_seq: 0,
    };
    let mut stream =
        match tokio::time::timeout(GATEWAY_DEADLINE, client.watch_events(request)).await {
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => {
                return Err(format!(
                    "no answer within {} ms",
                    GATEWAY_DEADLINE.as_millis()
                ));
            }
        };
    let mut events = Vec::new();
    // The backlog is one store query: give the first event longer.
    let mut wait = GATEWAY_DEADLINE;
    while events.len() < JOURNEY_EVENTS_MAX {
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(event),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
        }
        wait = JOURNEY_IDLE;
    }
    Ok(events)
}

/// The active rules' coverage grid, for the week starting today (UTC).
fn rules(console: &Console) -> Response {
    let rules = console.rules.current();
    let today = console.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let grid = view::grid(&rules.coverage(today, view::GRID_DAYS));
    let body = serde_json::json!({
        "rules_version": rules.version_id(),
        "file_name": rules.file_name(),
        "rules_refused": console.rules.refused().to_vec(),
        "what_if_bytes_max": WHAT_IF_BYTES_MAX,
        "grid": grid,
    });
    json(StatusCode::OK, &body)
}

/// Reads a rules file from the request body (at most
/// [`WHAT_IF_BYTES_MAX`]) and answers what it would change. Applies
/// nothing.
async fn what_if(State(console): State<Console>, request: Request) -> Response {
    let console = &console;
    let body = match read_body(request, WHAT_IF_BYTES_MAX).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the rules file is larger than {WHAT_IF_BYTES_MAX} bytes; \
                     the what-if takes files up to that size"
                ),
            );
        }
        Err(BodyError::TooSlow) => return too_slow(),
        Err(BodyError::Broken(error)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {error}"),
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return problem(StatusCode::BAD_REQUEST, "the rules file is not UTF-8 text");
    };
    let now = console.clock.now();
    let tickets = last_day_tickets(console, now).await;
    let active = console.rules.current();
    let regions: BTreeSet<RegionId> = console.gateways.keys().cloned().collect();
    // Every past ticket is decided again with today's reported loads.
    let loads = console.health.loads(now);
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    // Parsing and two coverage simulations are CPU work: keep them off the
    // async workers.
    let text = text.to_owned();
    let (tickets, errors) = tickets;
    let answer = tokio::task::spawn_blocking(move || {
        view::what_if(&active, &text, today, &tickets, &regions, &loads)
    })
    .await;
    match answer {
        Ok(Ok(answer)) => {
            let mut value = serde_json::to_value(&answer).unwrap_or(serde_json::Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.insert("ticket_errors".into(), serde_json::json!(errors));
            }
            json(StatusCode::OK, &value)
        }
        Ok(Err(problems)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": format!("the rules file is refused: {} problem(s)", problems.len()),
                "problems": problems,
            }),
        ),
        Err(error) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the what-if failed: {error}"),
        ),
    }
}

/// Every gateway's tickets created in the last 24 hours before `now`
/// (at most [`WHAT_IF_TICKETS_MAX`]), and the gateways that could not say.
async fn last_day_tickets(
    console: &Console,
    now: Timestamp,
) -> (Vec<view::PastTicket>, Vec<String>) {
    let since = now
        .checked_sub(SignedDuration::from_hours(24))
        .unwrap_or(now);
    let mut tickets = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (region, client) in &console.gateways {
        let mut client = client.clone();
        let mut page_token = String::new();
        loop {
            let request = v1::ListTicketsRequest {
                owner_region: region.to_string(),
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            };
            let page =
                match tokio::time::timeout(GATEWAY_DEADLINE, client.list_tickets(request)).await {
                    Ok(Ok(page)) => page.into_inner(),
                    Ok(Err(status)) => {
                        errors.push(format!(
                            "{region}: {:?}: {}",
                            status.code(),
                            status.message()
                        ));
                        break;
                    }
                    Err(_) => {
                        errors.push(format!(
                            "{region}: no answer within {} ms",
                            GATEWAY_DEADLINE.as_millis()
                        ));
                        break;
                    }
                };
            for ticket in page.tickets {
                let Some(created_at) = ticket
                    .created_at
                    .as_ref()
                    .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
                else {
                    continue;
                };
                if created_at < since || created_at > now || !seen.insert(ticket.id.clone()) {
                    continue;
                }
                tickets.push(view::PastTicket {
                    id: ticket.id.clone(),
                    created_at,
                    owner_region: ticket
                        .owner
                        .as_ref()
                        .map(|o| o.owner_region.clone())
                        .unwrap_or_default(),
                    request: route_request(&ticket),
                });
            }
            if page.next_page_token.is_empty() || tickets.len() >= WHAT_IF_TICKETS_MAX {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    tickets.truncate(WHAT_IF_TICKETS_MAX);
    (tickets, errors)
}

/// The routing attributes of a stored ticket; attributes that no longer
/// parse are left out rather than failing the what-if.
fn route_request(ticket: &v1::Ticket) -> RouteRequest {
    let attributes = v1::TicketAttributes {
        tier: ticket.tier.clone(),
        skills: ticket.skills.clone(),
        residency: ticket.residency.clone(),
        priority: ticket.priority,
        language: ticket.language.clone(),
    };
    meridian_proto::router::route_request_from_proto("ticket", Some(&attributes)).unwrap_or_else(
        |_| RouteRequest {
            tier: Tier::new(ticket.tier.as_str()).ok(),
            skills: ticket
                .skills
                .iter()
                .filter_map(|s| Skill::new(s.as_str()).ok())
                .collect(),
            residency: Vec::new(),
            priority: Priority::Normal,
            language: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_link_fills_the_ticket_ids_128_bits() {
        let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let url = trace_url(Some("http://localhost:16686/trace/{trace_id}"), id).unwrap();
        assert_eq!(
            url,
            "http://localhost:16686/trace/0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"
        );
        assert_eq!(trace_url(None, id), None);
        assert_eq!(trace_url(Some("x/{trace_id}"), "not-a-ticket"), None);
    }

    #[test]
    fn tokens_cross_the_network_only_over_tls() {
        let loopback: SocketAddr = "127.0.0.1:7190".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:7190".parse().unwrap();
        assert_eq!(
            transport(false, false, anywhere),
            Ok(Transport::Http),
            "without auth: local-only HTTP as before"
        );
        assert_eq!(transport(false, true, loopback), Ok(Transport::Http));
        assert_eq!(transport(true, true, anywhere), Ok(Transport::Https));
        assert_eq!(transport(true, true, loopback), Ok(Transport::Https));
        assert_eq!(
            transport(true, false, loopback),
            Ok(Transport::Http),
            "tokens stay on this host"
        );
        let refused = transport(true, false, anywhere).unwrap_err();
        assert!(
            refused.starts_with("console.listen 0.0.0.0:7190 is not a loopback address")
                && refused.contains("tls.cert"),
            "{refused}"
        );
    }

    #[test]
    fn only_loopback_peers_are_served() {
        for allowed in [
            "127.0.0.1:5000",
            "127.9.9.9:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(local_only_allows(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "10.0.0.7:5000",
            "192.168.1.2:1",
            "[2001:db8::1]:5000",
            "[::ffff:10.0.0.7]:5000",
            "0.0.0.0:1",
        ] {
            assert!(!local_only_allows(refused.parse().unwrap()), "{refused}");
        }
    }

    #[test]
    fn an_sse_message_is_data_lines_and_a_blank_line() {
        let Ok(frame) = sse_message(Some("problem"), "{\"a\":1}");
        let bytes = frame.into_data().unwrap();
        assert_eq!(&bytes[..], b"event: problem\ndata: {\"a\":1}\n\n");
    }
}
