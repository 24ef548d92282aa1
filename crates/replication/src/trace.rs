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
pub fn apply_spans(
    region: &RegionId,
    applied: u64,
    events: &[EventEnvelope],
) -> Vec<tracing::Span> {
    events
        .iter()
        .filter(|event| event.origin_seq > applied)
        .filter_map(|event| {
            let traceparent = event
                .traceparent
                .as_deref()
                .filter(|tp| propagation::is_sampled(tp))?;
            let span = ticket::apply_span(event.ticket_id, Some(traceparent));
            span.record("meridian.region", region.as_str());
            span.record("meridian.epoch", event.epoch.raw());
            span.record("meridian.origin_region", event.origin_region.as_str());
            span.record("meridian.origin_seq", event.origin_seq);
            Some(span)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use meridian_core::{Epoch, EventKind, HlcTimestamp, Note, NoteId, TicketId};

    use super::*;

    fn event(seq: u64, traceparent: Option<&str>) -> EventEnvelope {
        let at = Timestamp::from_millisecond(1_750_000_000_000).unwrap_or_else(|e| panic!("{e}"));
        let ticket_id = TicketId::new_v7(at, [1; 10]);
        let region = RegionId::new("us-east").unwrap_or_else(|e| panic!("{e}"));
        EventEnvelope {
            origin_region: region.clone(),
            origin_seq: seq,
            ticket_id,
            epoch: Epoch::initial(0),
            hlc_time: HlcTimestamp::new(1_750_000_000_000, 0),
            traceparent: traceparent.map(str::to_owned),
            actor: None,
            kind: EventKind::NoteAdded {
                note: Note {
                    id: NoteId::new_v7(at, [2; 10]),
                    ticket_id,
                    region,
                    author: "ana".into(),
                    body: "x".into(),
                    created_at: at,
                    auto: false,
                    visibility: meridian_core::Visibility::Internal,
                },
            },
        }
    }

    #[test]
    fn only_sampled_producers_past_the_cursor_get_a_span() {
        let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let events = [
            event(1, Some(sampled)),
            event(2, Some(sampled)),
            event(3, Some(unsampled)),
            event(4, None),
            event(5, Some(sampled)),
        ];
        let here = RegionId::new("eu-west").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(apply_spans(&here, 1, &events).len(), 2, "events 2 and 5");
        assert_eq!(apply_spans(&here, 5, &events).len(), 0);
    }
}
