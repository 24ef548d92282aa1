//! Residency where events leave a region: every path that ships events to
//! another region (the stream's batches, anti-entropy's `FetchLog`
//! answers, the log tails carried in handoff calls) passes them through
//! [`for_peer`], which applies `meridian_core::residency::decide` with the
//! residency this store holds for each ticket: the full event to a region
//! in the ticket's set, the redacted copy outside it.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeSet;

use crate::seam::ReplicaLog;
use meridian_core::residency::{Shipping, decide, redact_event, residency_ticket};
use meridian_core::{EventEnvelope, RegionId, TicketId};

/// What to do with an event this store cannot vouch for (it does not have
/// the ticket, or holds only the redacted copy and the peer is in the set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unvouched {
    /// Ship what comes before it and stop: a relay's answer, which the peer
    /// completes from a region that has the full event.
    Stop,
    /// Ship the redacted copy: a region's own log, whose tickets are always
    /// here (a note needs its ticket), so this only guards against a bug;
    /// an in-set peer refuses the copy and the stream shows the error.
    Redact,
}

/// `events` as they may leave for `peer`, in order: each one full or
/// redacted; with [`Unvouched::Stop`] a prefix.
pub async fn for_peer<'a, E: Borrow<EventEnvelope>>(
    store: &dyn ReplicaLog,
    peer: &RegionId,
    events: &'a [E],
    unvouched: Unvouched,
) -> meridian_store::Result<Vec<Cow<'a, EventEnvelope>>> {
    // A region's own log needs no look-up while no ticket here is pinned
    // (every ticket of its notes is here, unpinned); a relay always looks,
    // since a ticket not here yet may be pinned.
    if unvouched == Unvouched::Redact && !store.may_hold_pinned() {
        return Ok(events
            .iter()
            .map(|event| Cow::Borrowed(event.borrow()))
            .collect());
    }
    let ids: BTreeSet<TicketId> = events
        .iter()
        .filter_map(|event| residency_ticket(&event.borrow().kind))
        .collect();
    let residencies = if ids.is_empty() {
        Default::default()
    } else {
        store
            .residencies(&ids.into_iter().collect::<Vec<_>>())
            .await?
    };
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let event = event.borrow();
        let residency = residency_ticket(&event.kind).and_then(|id| residencies.get(&id));
        match decide(event, residency, peer) {
            Shipping::Full => out.push(Cow::Borrowed(event)),
            Shipping::Redacted => out.push(Cow::Owned(redact_event(event))),
            Shipping::Withhold => match unvouched {
                Unvouched::Stop => {
                    tracing::debug!(peer = %peer, origin = %event.origin_region, origin_seq = event.origin_seq,
                        ticket_id = %event.ticket_id, "event withheld from a peer in its ticket's residency: no full copy here");
                    break;
                }
                Unvouched::Redact => {
                    tracing::error!(peer = %peer, origin = %event.origin_region, origin_seq = event.origin_seq,
                        ticket_id = %event.ticket_id, "own event without its ticket's residency here: shipped redacted");
                    out.push(Cow::Owned(redact_event(event)));
                }
            },
        }
    }
    Ok(out)
}
