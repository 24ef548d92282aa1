//! One trace per ticket. A ticket's trace id is its id's 128 bits, so an
//! SRE goes from ticket to trace with no lookup.
//!
//! How a span joins that trace: its parent is set to the ticket's *virtual
//! root*, a remote span context whose trace id is the ticket id and whose
//! span id is derived from it ([`root_span_id`]). Every region derives the
//! same root, so the spans of every region sit side by side under it with
//! no coordination and no lookup. The root itself is never exported;
//! trace viewers show it as the one missing parent of the trace.
//!
//! Chosen over a custom `IdGenerator` reading a task-local ticket id
//! because an id generator only names *new root* traces: a span under an
//! incoming request (which has a parent) would never consult it, and the
//! ticket id is often minted after the request span exists. Setting the
//! parent explicitly works for every span, at the point where the ticket
//! id is known.
//!
//! The root is marked sampled; the keep-or-drop decision is then the
//! sampler's, by trace id ([`crate::TicketRatioSampler`]), so every region
//! keeps the same tickets.

use meridian_core::TicketId;
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

use crate::{Error, Result, propagation::parse_traceparent};

/// The ticket's trace id: its 128 bits.
pub fn trace_id(ticket: TicketId) -> TraceId {
    TraceId::from(ticket.as_u128())
}

/// The span id of the ticket's virtual root: both halves of the id mixed
/// (splitmix64's finaliser), never zero.
pub fn root_span_id(ticket: TicketId) -> SpanId {
    let bits = ticket.as_u128();
    let mut z = (bits >> 64) as u64 ^ bits as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    SpanId::from(if z == 0 { 1 } else { z })
}

/// The ticket's virtual root as a remote parent context.
pub fn root_context(ticket: TicketId) -> Context {
    let root = SpanContext::new(
        trace_id(ticket),
        root_span_id(ticket),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    Context::new().with_remote_span_context(root)
}

/// Puts `span` in the ticket's trace, as a child of its virtual root. Call
/// it right after creating the span, before it is entered. With telemetry
/// off (no OpenTelemetry layer) or the span disabled this does nothing.
pub fn set_ticket_parent(span: &tracing::Span, ticket: TicketId) -> Result<()> {
    match span.set_parent(root_context(ticket)) {
        Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => Ok(()),
        Err(e @ SetParentError::AlreadyStarted) => Err(Error::SetParent(e.to_string())),
    }
}

/// Links `span` to the span that produced an event, from the event's
/// stored `traceparent` (the OpenTelemetry messaging convention: the
/// consumer links to the producer's creation context). A malformed value
/// is returned as an error and no link is made.
pub fn link_producer(span: &tracing::Span, producer_traceparent: &str) -> Result<()> {
    let producer = parse_traceparent(producer_traceparent)?;
    span.add_link(producer);
    Ok(())
}

/// Links `span` to the caller's span named in gRPC request metadata, if
/// there is one. A ticket span's parent is the ticket's root, so the
/// caller (a client, the router, the owner offering a handoff) is a link
/// rather than the parent.
pub fn link_caller(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let cx = crate::propagation::extract_metadata(metadata);
    let caller = cx.span().span_context().clone();
    if caller.is_valid() {
        span.add_link(caller);
    }
}

/// Links `span` to `other` (a span in another trace that led to it, such
/// as the request that caused a ticket's step).
pub fn link_span(span: &tracing::Span, other: &tracing::Span) {
    let cx = other.context();
    let other = cx.span().span_context().clone();
    if other.is_valid() {
        span.add_link(other);
    }
}

/// The span that applies a replicated event: in the ticket's trace, of
/// kind consumer, linked to the producer span when the envelope carries a
/// `traceparent`. Fields left empty for the caller to record:
/// `meridian.region`, `meridian.epoch`, `meridian.origin_region`,
/// `meridian.origin_seq`.
pub fn apply_span(ticket: TicketId, producer_traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "apply",
        otel.kind = "consumer",
        messaging.operation.type = "process",
        meridian.ticket_id = %ticket,
        meridian.region = tracing::field::Empty,
        meridian.epoch = tracing::field::Empty,
        meridian.origin_region = tracing::field::Empty,
        meridian.origin_seq = tracing::field::Empty,
    );
    // A span fresh from the macro cannot have started yet.
    let _ = set_ticket_parent(&span, ticket);
    if let Some(traceparent) = producer_traceparent
        && let Err(error) = link_producer(&span, traceparent)
    {
        tracing::debug!(%error, ticket_id = %ticket, "apply span has no producer link");
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(bits: u128) -> TicketId {
        // Force the UUIDv7 version and variant so `from_uuid` accepts it.
        let bits = (bits & !(0xf << 76) & !(0b11 << 62)) | (0x7 << 76) | (0b10 << 62);
        TicketId::from_uuid(uuid::Uuid::from_u128(bits)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn trace_id_is_the_ticket_ids_bits() {
        let t = ticket(0x0190_0000_0000_7abc_8def_0123_4567_89ab);
        assert_eq!(trace_id(t).to_bytes(), t.as_u128().to_be_bytes());
    }

    #[test]
    fn root_span_id_is_deterministic_valid_and_differs_between_tickets() {
        let (a, b) = (ticket(1 << 90 | 5), ticket(1 << 90 | 6));
        assert_eq!(root_span_id(a), root_span_id(a));
        assert_ne!(root_span_id(a), root_span_id(b));
        assert_ne!(root_span_id(a), SpanId::INVALID);
        let cx = root_context(a);
        assert!(cx.span().span_context().is_remote() && cx.span().span_context().is_sampled());
    }
}
