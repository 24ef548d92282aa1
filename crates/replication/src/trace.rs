//! Apply spans: one per replicated event of a ticket applied here, in the
//! ticket's trace and linked to the span that produced the event (its
//! envelope's `traceparent`).
//!
//! Cost is kept proportional to what is kept: an event whose producer was
//! not sampled gets no span (its ticket's trace is not kept anywhere, as
//! the sampler decides by trace id), and events this region already
//! applied (the cursor says so) get none either. With export off no span
//! is sampled, so the check is one string comparison per event.

use meridian_core::{EventEnvelope, RegionId};
use meridian_telemetry::{propagation, ticket};

/// Spans for the events of `events` past `applied` whose producer was
/// sampled. Hold them while the batch is applied and drop them after: each
/// then covers its batch's apply.
pub fn apply_spans(region: &RegionId, applied: u64, events: &[EventEnvelope]) -> Vec<tracing::Span> {
    events
        .iter()
        .filter(|event| event.origin_seq > applied)
        .filter_map(|event| {
            let traceparent = event.traceparent.as_deref().filter(|tp| propagation::is_sampled(tp))?;
            let span = ticket::apply_span(event.ticket_id, Some(traceparent));
            span.record("meridian.region", region.as_str());
            span.record("meridian.epoch", event.epoch.raw());
            span.record("meridian.origin_region", event.origin_region.as_str());
            span.record("meridian.origin_seq", event.origin_seq);
            Some(span)
        })
        .collect()
}
