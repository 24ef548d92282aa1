//! The web intake endpoint (issue 17): JSON over the console's listener for
//! web forms and other systems that bring customers' words in.
//!
//! - `POST /intake/v1/tickets` creates a ticket through the same code as
//!   gRPC `SubmitTicket` ([`crate::service::RouterApi::submit`], called in
//!   process), with an idempotency key from the `Idempotency-Key` header or
//!   the `idempotency_key` field.
//! - `POST /intake/v1/tickets/{id}/messages` adds a customer message at the
//!   region that owns the ticket
//!   ([`crate::service::RouterApi::add_customer_message`]).
//!
//! Not behind the console's gate: a token comes only in `Authorization:
//! Bearer` (never the console's cookie, so a page on another site cannot
//! make a browser post here), and the roles are those of the gRPC methods
//! the endpoint stands for (`router_policy`, `gateway_policy`). The token
//! travels on to the gateways, which check the caller again. The
//! console's connection limits and body deadlines apply.
//!
//! Every refusal is `{"error": {"code", "message", "field"}}`, its HTTP
//! status derived from a gRPC code in one function, [`http_status`].

use std::net::SocketAddr;

use axum::extract::{Extension, Path, Request, State};
use axum::response::Response;
use axum::routing::{any, post};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use meridian_auth::Access;
use meridian_core as core;
use meridian_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::{BODY_IDLE_TIMEOUT, BodyError, Console, Peer, local_only_allows, read_body, reply};
use crate::error::Error;
use crate::service::Caller;

/// The largest request body accepted. A ticket's text is far smaller; the
/// gateway's own limits on each field still apply.
pub const INTAKE_BYTES_MAX: usize = 256 * 1024;
/// Whose roles may create a ticket here: those of gRPC `SubmitTicket`.
const SUBMIT_METHOD: &str = "/meridian.v1.RouterService/SubmitTicket";
/// Whose roles may post a customer message: those of the gateway's
/// `AddNote` (which also refuses an intake principal anything but a
/// customer message).
const ADD_NOTE_METHOD: &str = "/meridian.v1.TicketService/AddNote";
/// The web convention for a client's retry key (IETF draft
/// `httpapi-idempotency-key-header`).
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The intake routes, in the console's state.
pub(super) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route(
            "/intake/v1/tickets",
            post(create_ticket).fallback(wrong_method),
        )
        .route(
            "/intake/v1/tickets/{id}/messages",
            post(add_message).fallback(wrong_method),
        )
        // Not the console's fallback, which would ask a reader to log in.
        .route("/intake/{*rest}", any(unknown_path))
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
}

async fn unknown_path(request: Request) -> Response {
    Refusal::grpc(
        Code::NotFound,
        format!(
            "no endpoint {}: POST /intake/v1/tickets or /intake/v1/tickets/{{id}}/messages",
            request.uri().path()
        ),
    )
    .into_response()
}

/// A new ticket as a web form or another system sends it: the fields of
/// `CreateTicketRequest`, the priority as a word. Fields left out are
/// empty, and the same validation as gRPC names the ones that must not be.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NewTicketJson {
    subject: String,
    body: String,
    customer: String,
    tier: String,
    skills: Vec<String>,
    language: String,
    residency: Vec<String>,
    priority: Option<core::Priority>,
    idempotency_key: Option<String>,
}

/// A customer's message.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MessageJson {
    body: String,
    author: String,
    /// Optional: the note's id (a UUIDv7) chosen by the caller, so that a
    /// retry is refused as a duplicate (409) instead of written twice.
    note_id: String,
}

/// A ticket as the endpoint answers it.
#[derive(Debug, Serialize)]
struct TicketJson {
    id: String,
    /// The owning region.
    region: String,
    status: &'static str,
    subject: String,
    customer: String,
    tier: String,
    priority: &'static str,
    skills: Vec<String>,
    language: String,
    residency: Vec<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    sla: Option<SlaJson>,
}

/// The ticket's answer clocks.
#[derive(Debug, Serialize)]
struct SlaJson {
    first_response: Option<ClockJson>,
    next_response: Option<ClockJson>,
    resolution: Option<ClockJson>,
    at_risk: bool,
}

#[derive(Debug, Serialize)]
struct ClockJson {
    due: Option<String>,
    warn_at: Option<String>,
    state: String,
}

/// What a create answers.
#[derive(Debug, Serialize)]
struct CreatedJson {
    #[serde(flatten)]
    ticket: TicketJson,
    /// For the customer: when a person will answer.
    acknowledgement: String,
    /// Set when the ticket landed off shift (for the submitter, not the
    /// customer).
    #[serde(skip_serializing_if = "String::is_empty")]
    warning: String,
    replayed: bool,
}

#[derive(Debug, Serialize)]
struct NoteJson {
    id: String,
    ticket_id: String,
    region: String,
    author: String,
    body: String,
    visibility: &'static str,
    created_at: Option<String>,
}

/// What a customer message answers: the note, and the ticket with the
/// clocks it moved.
#[derive(Debug, Serialize)]
struct MessageAddedJson {
    note: NoteJson,
    ticket: Option<TicketJson>,
}

/// A refused request, as the endpoint answers it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl Refusal {
    /// A refusal a gRPC call would have answered with `code`.
    fn grpc(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code: code_name(code),
            message: message.into(),
            field: None,
        }
    }

    /// A refusal of HTTP alone (content type, size, method).
    fn http(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::grpc(Code::InvalidArgument, message)
        }
    }

    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "field": self.field,
            }
        });
        let mut response = reply(self.status, "application/json", body.to_string());
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

impl From<Error> for Refusal {
    /// The router's error as the gRPC API would answer it (one mapping,
    /// `crate::error`), with the field it names in the JSON's terms.
    fn from(error: Error) -> Self {
        let field = match &error {
            Error::Invalid(invalid) => Some(
                invalid
                    .field
                    .strip_prefix("ticket.")
                    .unwrap_or(&invalid.field)
                    .to_owned(),
            ),
            _ => None,
        };
        let status = tonic::Status::from(error);
        Self {
            field,
            ..Self::grpc(status.code(), status.message())
        }
    }
}

impl From<meridian_proto::ConvertError> for Refusal {
    fn from(error: meridian_proto::ConvertError) -> Self {
        Self::invalid(&error.field, error.to_string())
    }
}

/// The one place a gRPC code becomes an HTTP status.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        // The request is fine; the state it met is not (a key that created
        // another ticket, a closed ticket, a pending handoff).
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code's name as the JSON spells it: `invalid_argument`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

async fn wrong_method(request: Request) -> Response {
    Refusal::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes POST", request.uri().path()),
    )
    .into_response()
}

async fn create_ticket(
    State(console): State<Console>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response {
    match create(&console, peer, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn add_message(
    State(console): State<Console>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    match message(&console, peer, &id, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn create(
    console: &Console,
    peer: SocketAddr,
    request: Request,
) -> Result<Response, Refusal> {
    let caller = authorize(
        console,
        peer,
        request.headers(),
        &meridian_auth::router_policy(),
        SUBMIT_METHOD,
        "create tickets",
    )?;
    let header_key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
            Refusal::invalid(
                "idempotency_key",
                "the Idempotency-Key header is not printable ASCII",
            )
        })?),
    };
    let trace = trace_context(request.headers());
    let new: NewTicketJson = json_body(request).await?;
    let idempotency_key = match (header_key, new.idempotency_key) {
        (Some(header), Some(field)) if header != field => {
            return Err(Refusal::invalid(
                "idempotency_key",
                format!(
                    "the Idempotency-Key header ({header:?}) and the idempotency_key field ({field:?}) differ; send one of them"
                ),
            ));
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => String::new(),
    };
    let create = v1::CreateTicketRequest {
        subject: new.subject,
        body: new.body,
        customer: new.customer,
        tier: new.tier,
        skills: new.skills,
        language: new.language,
        residency: new.residency,
        priority: new
            .priority
            .map_or(
                v1::Priority::Unspecified,
                meridian_proto::convert::priority_to_proto,
            )
            .into(),
        idempotency_key,
    };
    // SubmitTicket validates too, but names fields as `ticket.subject`;
    // checked here first so the field is the JSON's.
    meridian_proto::convert::create_from_proto(create.clone())?;
    let submitted = console
        .api
        .submit(
            caller,
            &trace,
            v1::SubmitTicketRequest {
                ticket: Some(create),
            },
        )
        .await?;
    let Some(ticket) = submitted.ticket.as_ref() else {
        return Err(Refusal::grpc(
            Code::Internal,
            "the gateway answered without the ticket",
        ));
    };
    let status = if submitted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(super::json(
        status,
        &CreatedJson {
            ticket: ticket_json(ticket),
            acknowledgement: submitted.acknowledgement,
            warning: submitted.warning,
            replayed: submitted.replayed,
        },
    ))
}

async fn message(
    console: &Console,
    peer: SocketAddr,
    id: &str,
    request: Request,
) -> Result<Response, Refusal> {
    let caller = authorize(
        console,
        peer,
        request.headers(),
        &meridian_auth::gateway_policy(),
        ADD_NOTE_METHOD,
        "add customer messages",
    )?;
    let message: MessageJson = json_body(request).await?;
    let added = console
        .api
        .add_customer_message(&caller, id, message.author, message.body, message.note_id)
        .await?;
    let Some(note) = added.note.as_ref() else {
        return Err(Refusal::grpc(
            Code::Internal,
            "the gateway answered without the note",
        ));
    };
    Ok(super::json(
        StatusCode::CREATED,
        &MessageAddedJson {
            note: note_json(note),
            ticket: added.ticket.as_ref().map(ticket_json),
        },
    ))
}

/// The caller, when it may call `method` (the gRPC method whose roles
/// apply). Without `[auth]` the endpoint is local-only, as the console is.
fn authorize(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    policy: &meridian_auth::Policy,
    method: &str,
    what: &str,
) -> Result<Caller, Refusal> {
    let Some(settings) = &console.auth else {
        if !local_only_allows(peer) {
            return Err(Refusal::grpc(
                Code::PermissionDenied,
                "the router has no [auth]: the intake endpoint, like the console, serves only the router's own host",
            ));
        }
        return Ok(Caller::default());
    };
    let unauthenticated = |reason: String| {
        tracing::warn!(peer = %peer, %reason, "intake request refused: unauthenticated");
        Refusal::grpc(Code::Unauthenticated, reason)
    };
    let token = bearer(headers).map_err(unauthenticated)?;
    let principal = settings
        .verifier
        .verify(token)
        .map_err(|e| unauthenticated(e.to_string()))?;
    let allowed = match policy.access(method) {
        Access::Roles(roles) => roles,
        Access::Open => &[],
    };
    if !allowed.contains(&principal.role) {
        let roles = allowed
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let reason = format!("{principal} may not {what}; allowed: {roles}");
        tracing::warn!(peer = %peer, subject = %principal.subject, role = %principal.role, %reason, "intake request refused: permission denied");
        return Err(Refusal::grpc(Code::PermissionDenied, reason));
    }
    let authorization = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| unauthenticated("the token is not ASCII".to_owned()))?;
    tracing::debug!(principal = %principal, "intake request authorized");
    Ok(Caller {
        principal: Some(principal),
        authorization: Some(authorization),
    })
}

/// The token of `Authorization: Bearer <jwt>`; why not otherwise.
fn bearer(headers: &HeaderMap) -> Result<&str, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("no token: send Authorization: Bearer <token>".to_owned());
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII".to_owned())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("the Authorization header is not \"Bearer <token>\"".to_owned()),
    }
}

/// The caller's trace context, for the `router.submit` span's parent.
fn trace_context(headers: &HeaderMap) -> MetadataMap {
    let mut carried = HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.get(name) {
            carried.insert(name, value.clone());
        }
    }
    MetadataMap::from_headers(carried)
}

/// The request's JSON body as a `T`: 415 unless it says it is JSON, 413
/// over [`INTAKE_BYTES_MAX`], 400 naming the line and column (and an
/// unknown field) when it does not parse.
async fn json_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, Refusal> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Refusal::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be JSON: send Content-Type: application/json (not {:?})",
                content_type
            ),
        ));
    }
    let bytes = match read_body(request, INTAKE_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(Refusal::http(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {INTAKE_BYTES_MAX} bytes"),
            ));
        }
        Err(BodyError::TooSlow) => {
            return Err(Refusal::http(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body did not arrive in time",
            ));
        }
        Err(BodyError::Broken(reason)) => {
            return Err(Refusal::grpc(
                Code::InvalidArgument,
                format!("the body could not be read: {reason}"),
            ));
        }
    };
    // serde's message names the line and column, and an unknown field.
    serde_json::from_slice(&bytes).map_err(|e| {
        let message = format!("the body is not a valid request: {e}");
        match unknown_field(&e.to_string()) {
            Some(field) => Refusal::invalid(field, message),
            None => Refusal::grpc(Code::InvalidArgument, message),
        }
    })
}

/// The field serde names in "unknown field `x`, expected …": serde reports
/// it only in its message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

fn timestamp(at: Option<&prost_types::Timestamp>) -> Option<String> {
    at.and_then(|t| meridian_proto::timestamp_from_proto("at", t).ok())
        .map(|t| t.to_string())
}

fn clock_json(clock: Option<&v1::SlaClock>) -> Option<ClockJson> {
    let clock = clock?;
    let state = v1::SlaState::try_from(clock.state)
        .unwrap_or(v1::SlaState::Unspecified)
        .as_str_name()
        .trim_start_matches("SLA_STATE_")
        .to_ascii_lowercase();
    Some(ClockJson {
        due: timestamp(clock.due.as_ref()),
        warn_at: timestamp(clock.warn_at.as_ref()),
        state,
    })
}

fn ticket_json(ticket: &v1::Ticket) -> TicketJson {
    let status = meridian_proto::convert::status_from_proto("status", ticket.status)
        .ok()
        .flatten()
        .map_or("unspecified", core::Status::as_str);
    let priority = meridian_proto::convert::priority_from_proto("priority", ticket.priority)
        .ok()
        .flatten()
        .map_or("unspecified", core::Priority::as_str);
    TicketJson {
        id: ticket.id.clone(),
        region: ticket
            .owner
            .as_ref()
            .map(|o| o.owner_region.clone())
            .unwrap_or_default(),
        status,
        subject: ticket.subject.clone(),
        customer: ticket.customer.clone(),
        tier: ticket.tier.clone(),
        priority,
        skills: ticket.skills.clone(),
        language: ticket.language.clone(),
        residency: ticket.residency.clone(),
        created_at: timestamp(ticket.created_at.as_ref()),
        updated_at: timestamp(ticket.updated_at.as_ref()),
        sla: ticket.sla.as_ref().map(|sla| SlaJson {
            first_response: clock_json(sla.first_response.as_ref()),
            next_response: clock_json(sla.next_response.as_ref()),
            resolution: clock_json(sla.resolution.as_ref()),
            at_risk: sla.at_risk,
        }),
    }
}

fn note_json(note: &v1::Note) -> NoteJson {
    NoteJson {
        id: note.id.clone(),
        ticket_id: note.ticket_id.clone(),
        region: note.region.clone(),
        author: note.author.clone(),
        body: note.body.clone(),
        visibility: meridian_proto::convert::visibility_from_proto("visibility", note.visibility)
            .map_or("unspecified", core::Visibility::as_str),
        created_at: timestamp(note.created_at.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_is_named() {
        assert_eq!(
            unknown_field("unknown field `bodyy`, expected one of `body` at line 1 column 9"),
            Some("bodyy")
        );
        assert_eq!(unknown_field("expected value at line 1 column 1"), None);
    }

    #[test]
    fn grpc_codes_map_to_the_http_statuses_clients_expect() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
        assert_eq!(code_name(Code::FailedPrecondition), "failed_precondition");
    }

    #[test]
    fn a_router_error_names_the_field_as_the_json_does() {
        let refusal = Refusal::from(Error::Invalid(meridian_proto::ConvertError::new(
            "ticket.residency",
            "\"mars\" is neither a region nor a residency rule",
        )));
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert_eq!(refusal.field.as_deref(), Some("residency"));
    }

    #[test]
    fn the_bearer_token_is_read_only_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_err());
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("meridian_console=a.b.c"),
        );
        assert!(
            bearer(&headers).is_err(),
            "the console's cookie is not a token here"
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer a.b.c"),
        );
        assert_eq!(bearer(&headers), Ok("a.b.c"));
    }
}
