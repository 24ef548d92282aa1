//! The spans a gateway adds to a ticket's trace: create, update, note,
//! handoff offer (owner side), handoff answer (target side), takeover,
//! escalation, and each conflict recorded here.
//! Each is a child of the ticket's virtual root (`set_ticket_parent`), so
//! every region's spans of one ticket sit in one trace; the caller's span,
//! when its `traceparent` came in the request metadata, is a link.
//!
//! Attributes: `meridian.ticket_id`, `meridian.region` (the resource names
//! no region when one process serves several, as `meridian up` does),
//! `meridian.epoch`, `meridian.handoff.to`, `meridian.outcome` and
//! `meridian.reason` (a refusal's or failure's reason).

use meridian_core::{RegionId, TicketId};
use tonic::metadata::MetadataMap;

/// A span of one step of a ticket's journey through this region. `name`
/// must be one of the literals below: tracing needs static span names.
macro_rules! ticket_span {
    ($name:literal, $region:expr, $ticket:expr) => {
        tracing::info_span!(
            $name,
            otel.kind = "server",
            meridian.ticket_id = %$ticket,
            meridian.region = %$region,
            meridian.epoch = tracing::field::Empty,
            meridian.handoff.to = tracing::field::Empty,
            meridian.outcome = tracing::field::Empty,
            meridian.reason = tracing::field::Empty,
        )
    };
}

/// Which step a span is of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Create,
    Update,
    Note,
    HandoffOffer,
    HandoffAccept,
    Takeover,
    Conflict,
    /// An escalation step (`escalation.rs`): its reason and outcome.
    Escalate,
}

/// The span of `step` for `ticket` in `region`, in the ticket's trace,
/// linked to the caller named in `caller` (request metadata) if any.
pub(crate) fn ticket_span(
    step: Step,
    region: &RegionId,
    ticket: TicketId,
    caller: Option<&MetadataMap>,
) -> tracing::Span {
    let span = match step {
        Step::Create => ticket_span!("ticket.create", region, ticket),
        Step::Update => ticket_span!("ticket.update", region, ticket),
        Step::Note => ticket_span!("ticket.note", region, ticket),
        Step::HandoffOffer => ticket_span!("handoff.offer", region, ticket),
        Step::HandoffAccept => ticket_span!("handoff.accept", region, ticket),
        Step::Takeover => ticket_span!("takeover", region, ticket),
        Step::Conflict => ticket_span!("conflict", region, ticket),
        Step::Escalate => ticket_span!("ticket.escalate", region, ticket),
    };
    // A span fresh from the macro has not started, which is the only way
    // setting its parent fails.
    let _ = meridian_telemetry::ticket::set_ticket_parent(&span, ticket);
    if let Some(caller) = caller {
        meridian_telemetry::ticket::link_caller(&span, caller);
    }
    span
}

/// Records how a step ended on its span: `outcome` and, for refusals and
/// failures, the reason.
pub(crate) fn record_outcome(span: &tracing::Span, outcome: &str, reason: Option<&str>) {
    span.record("meridian.outcome", outcome);
    if let Some(reason) = reason {
        span.record("meridian.reason", reason);
    }
}
