//! The `meridian.v1.RouterService` handlers: decode and validate (through
//! `meridian-proto`), decide (through `meridian-rules`), forward to a
//! gateway when asked, encode. Errors become statuses in [`crate::error`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_auth::Principal;
use meridian_core::{self as core, Clock, RegionId};
use meridian_proto::router::{self as convert, within};
use meridian_proto::{ConvertError, timestamp_to_proto, v1};
use meridian_rules::{Decision, FilterReason, RegionHealth, RouteRequest, Rules, render};
use meridian_rules_source::ActiveRules;
use meridian_telemetry::opentelemetry::KeyValue;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::config::Limits;
use crate::error::Error;
use crate::health::HealthTable;

type TicketClient = v1::ticket_service_client::TicketServiceClient<Channel>;

/// Below this much time left in a request, no further gateway is tried: the
/// attempt could not finish and the caller is better told now.
const FORWARD_TIME_MIN: Duration = Duration::from_millis(20);

/// The router's API over the shared rules, health table and gateway clients.
#[derive(Clone)]
pub struct RouterApi {
    rules: Arc<ActiveRules>,
    health: Arc<HealthTable>,
    gateways: Arc<HashMap<RegionId, TicketClient>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
}

impl RouterApi {
    pub(crate) fn new(
        rules: Arc<ActiveRules>,
        health: Arc<HealthTable>,
        gateways: HashMap<RegionId, Channel>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        let gateways = gateways
            .into_iter()
            .map(|(region, channel)| {
                let client = TicketClient::new(channel)
                    .max_decoding_message_size(limits.request_bytes_max.saturating_mul(4));
                (region, client)
            })
            .collect();
        Self {
            rules,
            health,
            gateways: Arc::new(gateways),
            clock,
            limits,
        }
    }

    pub(crate) fn rules(&self) -> &Arc<ActiveRules> {
        &self.rules
    }

    pub(crate) fn health(&self) -> &Arc<HealthTable> {
        &self.health
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Creates the ticket at `region`'s gateway within `timeout`.
    async fn forward(
        &self,
        region: &RegionId,
        ticket: v1::CreateTicketRequest,
        timeout: Duration,
        authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<v1::CreateTicketResponse, Status> {
        let Some(client) = self.gateways.get(region) else {
            // The decision only picks regions with a health report, and only
            // gateways have one; kept for safety.
            return Err(Error::NoGatewayEndpoint.into());
        };
        let mut client = client.clone();
        let mut request = Request::new(ticket);
        // The gateway learns the deadline too, and gives up when it passes.
        request.set_timeout(timeout);
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert(meridian_auth::AUTHORIZATION, authorization.clone());
        }
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        match tokio::time::timeout(timeout, client.create_ticket(request)).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Error::GatewayTimeout {
                ms: timeout.as_millis(),
            }
            .into()),
        }
    }
}

/// Outcomes of a call to a gateway that say nothing about the ticket: the
/// gateway could not be reached or did not answer in time.
fn unreachable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

impl RouterApi {
    /// A request to a gateway made for `caller`: its token, the trace
    /// context and a deadline that ends no later than `deadline`. The
    /// timeout to wait with, or the error when no time is left.
    fn for_caller<T>(
        caller: &Caller,
        message: T,
        deadline: Instant,
        per_call: Duration,
    ) -> Result<(Request<T>, Duration), Error> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < FORWARD_TIME_MIN {
            return Err(Error::GatewayTimeout {
                ms: per_call.as_millis(),
            });
        }
        let timeout = per_call.min(remaining);
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        if let Some(authorization) = &caller.authorization {
            request
                .metadata_mut()
                .insert(meridian_auth::AUTHORIZATION, authorization.clone());
        }
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok((request, timeout))
    }

    /// `GetTicket` at `region`'s gateway with the caller's token.
    async fn get_ticket_at(
        &self,
        region: &RegionId,
        caller: &Caller,
        ticket_id: &str,
        deadline: Instant,
    ) -> Result<v1::GetTicketResponse, Status> {
        let Some(client) = self.gateways.get(region) else {
            return Err(Error::NoGatewayEndpoint.into());
        };
        let message = v1::GetTicketRequest {
            ticket_id: ticket_id.to_owned(),
        };
        let (request, timeout) =
            Self::for_caller(caller, message, deadline, self.limits.forward_timeout)?;
        match tokio::time::timeout(timeout, client.clone().get_ticket(request)).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Error::GatewayTimeout {
                ms: timeout.as_millis(),
            }
            .into()),
        }
    }

    /// `AddNote` at `region`'s gateway with the caller's token.
    async fn add_note_at(
        &self,
        region: &RegionId,
        caller: &Caller,
        note: v1::AddNoteRequest,
        deadline: Instant,
    ) -> Result<v1::AddNoteResponse, Status> {
        let Some(client) = self.gateways.get(region) else {
            return Err(Error::NoGatewayEndpoint.into());
        };
        let (request, timeout) =
            Self::for_caller(caller, note, deadline, self.limits.forward_timeout)?;
        match tokio::time::timeout(timeout, client.clone().add_note(request)).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Error::GatewayTimeout {
                ms: timeout.as_millis(),
            }
            .into()),
        }
    }

    /// The region that owns ticket `id`, by `GetTicket` with the caller's
    /// token at the gateways in turn, healthy ones first (the router keeps
    /// no ticket state; once a ticket has replicated, the first one asked
    /// knows its owner). The others are asked last rather than skipped:
    /// health is a hint (a report may be a probe interval old) and the
    /// ticket may be only there. A refusal of the caller (a token, a role,
    /// an agent of another region) is the answer; a gateway that does not
    /// hold the ticket yet, or cannot be reached, sends the question to the
    /// next.
    async fn find_owner(
        &self,
        caller: &Caller,
        id: &str,
        deadline: Instant,
    ) -> Result<RegionId, Error> {
        let now = self.clock.now();
        let mut regions: Vec<&RegionId> = self.gateways.keys().collect();
        regions.sort();
        let (up, down): (Vec<&RegionId>, Vec<&RegionId>) = regions
            .into_iter()
            .partition(|region| self.health.is_up(region.as_str(), now));
        let mut missing: Vec<String> = Vec::new();
        let mut unanswered: Vec<String> = Vec::new();
        for region in up.into_iter().chain(down) {
            match self.get_ticket_at(region, caller, id, deadline).await {
                Ok(answer) => {
                    let owner = answer
                        .ticket
                        .and_then(|t| t.owner)
                        .map(|o| o.owner_region)
                        .and_then(|o| RegionId::new(o).ok());
                    match owner {
                        Some(owner) => return Ok(owner),
                        None => unanswered.push(format!("{region} (answered no owner)")),
                    }
                }
                Err(status) if status.code() == Code::NotFound => missing.push(region.to_string()),
                Err(status) if unreachable(status.code()) => {
                    tracing::warn!(region = %region, code = ?status.code(), error = %status.message(), "gateway could not say who owns a ticket, asking the next");
                    unanswered.push(format!("{region} ({:?})", status.code()));
                }
                Err(status) => {
                    return Err(Error::GatewayStatus {
                        region: region.clone(),
                        status: Box::new(status),
                    });
                }
            }
        }
        let asked = if missing.is_empty() {
            "no gateway".to_owned()
        } else {
            missing.join(", ")
        };
        if unanswered.is_empty() {
            Err(Error::TicketNotFound {
                id: id.to_owned(),
                asked,
            })
        } else {
            Err(Error::TicketUnreachable {
                id: id.to_owned(),
                asked,
                unreachable: unanswered.join(", "),
            })
        }
    }

    /// A customer's message (`AddNote`, visibility inbound) delivered to the
    /// region that owns the ticket, with the caller's token: only the owner
    /// may write one (docs/conversation.md). When ownership moved between
    /// the look-up and the write, the owner refuses with
    /// `FAILED_PRECONDITION`; the region that refused knows where the
    /// ticket went, and the message is tried there once.
    pub(crate) async fn add_customer_message(
        &self,
        caller: &Caller,
        id: &str,
        author: String,
        body: String,
        note_id: String,
    ) -> Result<v1::AddNoteResponse, Error> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let ticket_id = meridian_proto::convert::ticket_id("id", id)?;
        let owner = self.find_owner(caller, id, deadline).await?;
        // Checked as the owner will check it, so a bad message is refused
        // naming its field before a gateway writes anything. The id is a
        // placeholder: the owner mints the note's own.
        core::Note {
            id: core::NoteId::from_uuid(ticket_id.as_uuid()).map_err(ConvertError::from)?,
            ticket_id,
            region: owner.clone(),
            author: author.clone(),
            body: body.clone(),
            created_at: self.clock.now(),
            auto: false,
            visibility: core::Visibility::Inbound,
        }
        .validate()
        .map_err(ConvertError::from)?;
        let note = v1::AddNoteRequest {
            ticket_id: id.to_owned(),
            author,
            body,
            visibility: v1::Visibility::Inbound.into(),
            note_id,
        };
        let refusal = match self
            .add_note_at(&owner, caller, note.clone(), deadline)
            .await
        {
            Ok(added) => return Ok(added),
            Err(status) if status.code() == Code::FailedPrecondition => status,
            Err(status) => {
                return Err(Error::GatewayStatus {
                    region: owner,
                    status: Box::new(status),
                });
            }
        };
        let moved_to = match self.get_ticket_at(&owner, caller, id, deadline).await {
            Ok(answer) => answer
                .ticket
                .and_then(|t| t.owner)
                .and_then(|o| RegionId::new(o.owner_region).ok())
                .filter(|now_owner| *now_owner != owner),
            Err(_) => None,
        };
        let Some(new_owner) = moved_to else {
            // Not a move (a pending handoff, a closed ticket): the refusal
            // is the answer.
            return Err(Error::GatewayStatus {
                region: owner,
                status: Box::new(refusal),
            });
        };
        tracing::info!(ticket_id = %ticket_id, from = %owner, to = %new_owner, "ticket changed owner before its customer message arrived, delivering it to the new owner");
        self.add_note_at(&new_owner, caller, note, deadline)
            .await
            .map_err(|status| Error::GatewayStatus {
                region: new_owner,
                status: Box::new(status),
            })
    }
}

/// Validates a submitted ticket as the gateway's CreateTicket would, its
/// idempotency key included, naming fields under `ticket.`.
fn convert_create(
    create: v1::CreateTicketRequest,
) -> Result<(core::NewTicket, Option<core::IdempotencyKey>), Error> {
    meridian_proto::convert::create_from_proto(create).map_err(|e| Error::from(within("ticket", e)))
}

/// Whether a failed forward may nevertheless have created the ticket: the
/// gateway may have committed before the answer was lost (a timeout, a
/// cut stream), or committed and then missed its durability tier
/// (`DEADLINE_EXCEEDED`). `UNAVAILABLE` counts too: tonic reports an HTTP/2
/// connection lost mid-call (a keepalive ping timing out on a slow link)
/// with the same code as a refused connection, and only the first may
/// have committed. A refusal of the ticket did not create it.
fn outcome_unknown(code: Code) -> bool {
    matches!(
        code,
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Unavailable
    )
}

/// The route request a ticket's attributes make.
fn route_request(ticket: &core::NewTicket) -> RouteRequest {
    RouteRequest {
        tier: Some(ticket.tier.clone()),
        skills: ticket.skills.iter().cloned().collect(),
        residency: ticket.residency.iter().map(ToString::to_string).collect(),
        priority: ticket.priority,
        language: Some(ticket.language.clone()),
    }
}

/// The ticket as the gateway must see it: residency rule names (`eu-only`)
/// replaced by the regions they allow. Routing reads names and regions
/// alike, but a gateway knows only regions, and would refuse a ticket whose
/// set names a rule as "outside the ticket's residency". An entry that is
/// neither is refused here, naming it.
fn expand_residency(
    rules: &Rules,
    mut create: v1::CreateTicketRequest,
) -> Result<v1::CreateTicketRequest, Error> {
    let mut regions = std::collections::BTreeSet::new();
    for name in &create.residency {
        let Some(allowed) = rules.residency(name) else {
            return Err(Error::from(ConvertError::new(
                "ticket.residency",
                format!(
                    "{name:?} is neither a region nor a residency rule of rules {} (regions: {}; rules: {})",
                    rules.version_id(),
                    region_names(rules),
                    rules
                        .residency_rules()
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        };
        regions.extend(allowed.iter().map(ToString::to_string));
    }
    create.residency = regions.into_iter().collect();
    Ok(create)
}

/// What a submitter must know when the ticket lands off shift: the region,
/// when its shift opens, and whether the first response falls due before
/// that. Empty when the region is on shift (no `next_shift_at`).
/// The ticket's own first-response clock counts; a gateway that runs
/// without rules sets none, and then the router's rules say when it falls
/// due.
fn off_shift_warning(
    rules: &Rules,
    now: jiff::Timestamp,
    decision: &v1::RoutingDecision,
    region: &RegionId,
    ticket: Option<&v1::Ticket>,
) -> String {
    let Some(opens) = decision.next_shift_at.as_ref().and_then(convert_timestamp) else {
        return String::new();
    };
    let due = ticket
        .and_then(|t| t.sla.as_ref())
        .and_then(|sla| sla.first_response_due.as_ref())
        .and_then(convert_timestamp)
        .or_else(|| {
            let tier = ticket.map(|t| t.tier.as_str())?;
            rules
                .sla_clocks(tier, now)
                .ok()?
                .first_response
                .map(|clock| clock.due)
        });
    let opens_text = opens.strftime("%Y-%m-%dT%H:%M:%SZ");
    match due {
        Some(due) if due < opens => format!(
            "{region} is off shift until {opens_text}; the first response is due {} and will breach before it opens unless someone answers",
            due.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        Some(due) => format!(
            "{region} is off shift until {opens_text}; the first response is due {}, after it opens",
            due.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        None => format!("{region} is off shift until {opens_text}"),
    }
}

fn convert_timestamp(t: &prost_types::Timestamp) -> Option<jiff::Timestamp> {
    meridian_proto::timestamp_from_proto("timestamp", t).ok()
}

/// Why no region can take a ticket, from the candidates: `us-east: down,
/// eu-west: missing_skill`.
fn no_region(decision: &Decision<'_>) -> Error {
    let retryable = decision.candidates.iter().any(|c| {
        matches!(
            c.filtered,
            Some(FilterReason::Down | FilterReason::NoHealthReport)
        )
    });
    let detail = decision
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c.region,
                c.filtered.map_or("kept", FilterReason::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Error::NoEligibleRegion { detail, retryable }
}

/// The rules' regions, for messages: `us-east, eu-west, apac-south`.
fn region_names(rules: &Rules) -> String {
    rules
        .regions()
        .iter()
        .map(|r| r.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn attempts_text(attempts: &[v1::ForwardAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}: {}", a.region, a.error_code, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The decision as a `route` span in the ticket's own trace (now that the
/// ticket exists), linked to the `router.submit` span that made it.
fn route_span(ticket_id: &str, region: &RegionId, reason: &str, attempts: usize) {
    let Ok(id) = meridian_proto::convert::ticket_id("ticket.id", ticket_id) else {
        return;
    };
    let span = tracing::info_span!(
        "route",
        meridian.ticket_id = %id,
        meridian.region = %region,
        meridian.reason = reason,
        meridian.attempts = attempts,
    );
    // A span fresh from the macro has not started.
    let _ = meridian_telemetry::ticket::set_ticket_parent(&span, id);
    meridian_telemetry::ticket::link_span(&span, &tracing::Span::current());
}

/// Routing decisions taken, by reason and chosen region (`chosen_region`,
/// `none` when no region could take the ticket; `meridian_region` always
/// means the reporting region, which a router has not). From the
/// process's meter provider.
fn count_decision(decision: &Decision<'_>) {
    static DECISIONS: std::sync::LazyLock<
        meridian_telemetry::opentelemetry::metrics::Counter<u64>,
    > = std::sync::LazyLock::new(|| {
        meridian_telemetry::opentelemetry::global::meter("meridian-router")
            .u64_counter("meridian.routing.decisions")
            .with_description("Routing decisions, by reason and chosen region")
            .with_unit("{decision}")
            .build()
    });
    DECISIONS.add(
        1,
        &[
            KeyValue::new("reason", decision.reason.as_str().to_owned()),
            KeyValue::new(
                "chosen_region",
                decision.region.map_or("none", RegionId::as_str).to_owned(),
            ),
        ],
    );
}

fn log_decision(rules: &Rules, decision: &Decision<'_>, rpc: &'static str) {
    tracing::debug!(
        rpc,
        rules_version = %rules.version_id(),
        region = decision.region.map_or("", RegionId::as_str),
        reason = decision.reason.as_str(),
        "routing decision"
    );
}

/// Who submits a ticket, as the gRPC layer or the intake endpoint verified
/// them: the principal (`None` without `[auth]`) and the `authorization`
/// value that travels on to the gateway, which checks the caller too.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    pub(crate) principal: Option<Principal>,
    pub(crate) authorization: Option<MetadataValue<Ascii>>,
}

impl Caller {
    /// The caller of a gRPC request, as the auth layer left it.
    fn of<T>(request: &Request<T>) -> Self {
        Self {
            principal: meridian_auth::principal(request).cloned(),
            authorization: request
                .metadata()
                .get(meridian_auth::AUTHORIZATION)
                .cloned(),
        }
    }
}

impl RouterApi {
    /// `SubmitTicket` for any front end (the gRPC service, the intake
    /// endpoint): one `router.submit` span in the caller's trace (parent
    /// from `metadata`'s `traceparent`), the decision, the forward.
    pub(crate) async fn submit(
        &self,
        caller: Caller,
        metadata: &MetadataMap,
        request: v1::SubmitTicketRequest,
    ) -> Result<v1::SubmitTicketResponse, Error> {
        // The ticket's id (and so its trace) exists only once a gateway has
        // created it: this span is in the caller's trace and travels to the
        // gateway, whose `ticket.create` span links to it; the decision is
        // then a `route` span in the ticket's own trace.
        let span = tracing::info_span!(
            "router.submit",
            otel.kind = "server",
            meridian.ticket_id = tracing::field::Empty
        );
        meridian_telemetry::propagation::set_parent_from_metadata(&span, metadata);
        self.submit_in_span(caller, request).instrument(span).await
    }

    async fn submit_in_span(
        &self,
        caller: Caller,
        request: v1::SubmitTicketRequest,
    ) -> Result<v1::SubmitTicketResponse, Error> {
        let started = Instant::now();
        // The gateway checks the caller too: its token travels on.
        let authorization = caller.authorization;
        let rules = self.rules.current();
        // A token for a region the mesh does not have is no agent of it.
        if let Some(principal) = &caller.principal
            && let Some(region) = &principal.region
            && rules.region(region.as_str()).is_none()
        {
            return Err(Error::UnknownTokenRegion(format!(
                "the token of {} names region {region}, which is not a region of this mesh ({})",
                principal.subject,
                region_names(&rules)
            )));
        }
        let create = request
            .ticket
            .ok_or_else(|| Error::from(ConvertError::new("ticket", "is required")))?;
        // The same validation the gateway applies, so a bad ticket is refused
        // here, naming its field, before any gateway is bothered.
        let (new, key) = convert_create(create.clone())?;
        // With a key, an attempt whose outcome is unknown may be tried again
        // at the same gateway: if it committed, the gateway answers that
        // ticket instead of creating another (ARCHITECTURE.md, "Idempotent
        // creation"). Each region gets one such retry.
        let keyed = key.is_some();
        let mut retried: Vec<RegionId> = Vec::new();
        let ticket = route_request(&new);
        let create = expand_residency(&rules, create)?;
        let now = self.clock.now();
        let mut health = self.health.snapshot(now);
        let loads = self.health.loads(now);
        let mut attempts: Vec<v1::ForwardAttempt> = Vec::new();
        let deadline = started + self.limits.request_timeout;
        loop {
            // Each failed gateway is marked down and the decision taken
            // again: on shift, that gives the next candidate by score; out of
            // hours, the policy's next choice.
            let decision = rules.decide(now, &health, &loads, &ticket);
            log_decision(&rules, &decision, "submit_ticket");
            count_decision(&decision);
            let Some(region) = decision.region.cloned() else {
                if attempts.is_empty() {
                    return Err(no_region(&decision));
                }
                return Err(Error::ForwardFailed {
                    attempts: attempts_text(&attempts),
                });
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if attempts.len() >= self.limits.forward_attempts_max || remaining < FORWARD_TIME_MIN {
                let why = if remaining < FORWARD_TIME_MIN {
                    "request deadline reached"
                } else {
                    "attempt budget spent"
                };
                return Err(Error::ForwardFailed {
                    attempts: format!("{}; {why} before trying {region}", attempts_text(&attempts)),
                });
            }
            let decision_proto = convert::decision_to_proto(&decision);
            let acknowledgement = decision
                .answer_when()
                .map(|when| format!("A person will answer {when}."))
                .unwrap_or_default();
            drop(decision);
            let timeout = self.limits.forward_timeout.min(remaining);
            match self
                .forward(&region, create.clone(), timeout, authorization.as_ref())
                .await
            {
                Ok(created) => {
                    attempts.push(v1::ForwardAttempt {
                        region: region.to_string(),
                        created: true,
                        ..Default::default()
                    });
                    let owner = created
                        .ticket
                        .as_ref()
                        .and_then(|t| t.owner.as_ref())
                        .map(|o| o.owner_region.clone());
                    if owner.as_deref().is_some_and(|o| o != region.as_str()) {
                        // The endpoint configured for `region` serves another
                        // region: the ticket exists there, so report that.
                        tracing::error!(region = %region, owner = ?owner, "gateway endpoint serves another region; fix the router's gateways table");
                    }
                    let ticket_id = created.ticket.as_ref().map_or("", |t| t.id.as_str());
                    route_span(
                        ticket_id,
                        &region,
                        decision_proto.reason().as_str_name(),
                        attempts.len(),
                    );
                    tracing::info!(
                        ticket_id,
                        region = %region,
                        reason = decision_proto.reason().as_str_name(),
                        rules_version = %rules.version_id(),
                        attempts = attempts.len(),
                        "ticket submitted"
                    );
                    let warning = off_shift_warning(
                        &rules,
                        now,
                        &decision_proto,
                        &region,
                        created.ticket.as_ref(),
                    );
                    if !warning.is_empty() {
                        tracing::warn!(ticket_id, region = %region, warning = %warning, "ticket routed off shift");
                    }
                    return Ok(v1::SubmitTicketResponse {
                        rules_version: rules.version_id(),
                        decision: Some(decision_proto),
                        region: owner.unwrap_or_else(|| region.to_string()),
                        ticket: created.ticket,
                        attempts,
                        warning,
                        acknowledgement,
                        replayed: created.replayed,
                    });
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    // The ticket itself is wrong; every gateway would say so.
                    return Err(Error::GatewayRefused {
                        region,
                        message: status.message().to_owned(),
                    });
                }
                Err(status) if status.code() == Code::AlreadyExists => {
                    // The key names another request's ticket at this
                    // gateway; another region would not know the key.
                    return Err(Error::IdempotencyConflict {
                        region,
                        message: status.message().to_owned(),
                    });
                }
                Err(status)
                    if keyed && outcome_unknown(status.code()) && !retried.contains(&region) =>
                {
                    // Not marked down: the same decision picks it again.
                    tracing::warn!(region = %region, code = ?status.code(), error = %status.message(), "forward to gateway may have committed, retrying it with the same idempotency key");
                    attempts.push(v1::ForwardAttempt {
                        region: region.to_string(),
                        created: false,
                        error_code: format!("{:?}", status.code()),
                        error: status.message().to_owned(),
                    });
                    retried.push(region);
                }
                Err(status) => {
                    tracing::warn!(region = %region, code = ?status.code(), error = %status.message(), "forward to gateway failed, trying the next candidate");
                    if status.code() == Code::Unavailable {
                        self.health.record_unreachable(&region);
                    }
                    attempts.push(v1::ForwardAttempt {
                        region: region.to_string(),
                        created: false,
                        error_code: format!("{:?}", status.code()),
                        error: status.message().to_owned(),
                    });
                    health.insert(region, RegionHealth::Down);
                }
            }
        }
    }
}

#[tonic::async_trait]
impl v1::router_service_server::RouterService for RouterApi {
    async fn route(
        &self,
        request: Request<v1::RouteRequest>,
    ) -> Result<Response<v1::RouteResponse>, Status> {
        let request = request.into_inner();
        let ticket = convert::route_request_from_proto("ticket", request.ticket.as_ref())
            .map_err(Error::from)?;
        let rules = self.rules.current();
        let now = self.clock.now();
        let health = self.health.snapshot(now);
        let decision = rules.decide(now, &health, &self.health.loads(now), &ticket);
        log_decision(&rules, &decision, "route");
        count_decision(&decision);
        Ok(Response::new(v1::RouteResponse {
            rules_version: rules.version_id(),
            decision: Some(convert::decision_to_proto(&decision)),
        }))
    }

    async fn submit_ticket(
        &self,
        request: Request<v1::SubmitTicketRequest>,
    ) -> Result<Response<v1::SubmitTicketResponse>, Status> {
        let caller = Caller::of(&request);
        let (metadata, _, request) = request.into_parts();
        Ok(Response::new(
            self.submit(caller, &metadata, request).await?,
        ))
    }

    async fn active_regions(
        &self,
        request: Request<v1::ActiveRegionsRequest>,
    ) -> Result<Response<v1::ActiveRegionsResponse>, Status> {
        let request = request.into_inner();
        let now = self.clock.now();
        let at = convert::optional_instant("at", request.at.as_ref())
            .map_err(Error::from)?
            .unwrap_or(now);
        let rules = self.rules.current();
        let regions = rules
            .active_at(at)
            .iter()
            .map(|shift| {
                convert::active_shift_to_proto(shift, self.health.is_up(&shift.region, now))
            })
            .collect();
        Ok(Response::new(v1::ActiveRegionsResponse {
            rules_version: rules.version_id(),
            at: Some(timestamp_to_proto(at)),
            regions,
            rules_refused: self.rules.refused().to_vec(),
        }))
    }

    async fn explain(
        &self,
        request: Request<v1::ExplainRequest>,
    ) -> Result<Response<v1::ExplainResponse>, Status> {
        let request = request.into_inner();
        let ticket = convert::route_request_from_proto("ticket", request.ticket.as_ref())
            .map_err(Error::from)?;
        let now = self.clock.now();
        let at = convert::optional_instant("at", request.at.as_ref())
            .map_err(Error::from)?
            .unwrap_or(now);
        let down = convert::region_ids("assume_down", &request.assume_down).map_err(Error::from)?;
        let rules = self.rules.current();
        let mut health = self.health.snapshot(now);
        for (i, region) in down.into_iter().enumerate() {
            if rules.region(region.as_str()).is_none() {
                let known = rules
                    .regions()
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let reason = format!(
                    "unknown region {:?}; the rules define {known}",
                    region.as_str()
                );
                return Err(
                    Error::from(ConvertError::new(format!("assume_down[{i}]"), reason)).into(),
                );
            }
            health.insert(region, RegionHealth::Down);
        }
        // Loads are the gateways' latest reports, whatever `at` asks about.
        let decision = rules.decide(at, &health, &self.health.loads(now), &ticket);
        log_decision(&rules, &decision, "explain");
        Ok(Response::new(v1::ExplainResponse {
            rules_version: rules.version_id(),
            text: render::decision_table(&rules, &decision),
            decision: Some(convert::decision_to_proto(&decision)),
            rules_refused: self.rules.refused().to_vec(),
        }))
    }
}
