//! A ticket's projection as a pure fold over its events, in any order.
//!
//! Replicas apply events as they arrive, one origin's log at a time, so a
//! write can reach a replica after the ownership move that followed it (a
//! handoff accepted elsewhere, a takeover), and a failed region may have
//! applied its own late write before it learns it was taken over. The
//! store's fast path handles the usual order; when the order is unusual it
//! asks this fold, which depends only on the set of events, so every
//! replica that holds the same events derives the same ticket and the same
//! conflicts.
//!
//! The rules:
//! - Each epoch has one holder: the ticket's creator for its first epoch,
//!   the origin of the `HandoffAccepted` or `TakenOver` that minted it for
//!   the others. The highest known epoch owns the ticket.
//! - An owner-scoped write at epoch `e` by its holder counts unless the
//!   holder had already given `e` up when it wrote: at or after the offer
//!   that another region accepted, or after the last of the holder's events
//!   that the successor had applied when it took over. Writes that do not
//!   count are stale: kept as conflicts, never applied.
//! - Writes that count apply in (epoch, hlc) order, field by field.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use crate::plan::{Change, Plan, Source, event_instant, plan};
use crate::{Epoch, EventEnvelope, EventKind, Ownership, RegionId, Ticket, TicketChanges};

/// The ticket the fold derived, and the writes it refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub ticket: Ticket,
    /// Stale owner-scoped writes, ordered by origin and sequence.
    pub stale: Vec<StaleWrite>,
}

/// An owner-scoped write made by a region that no longer held its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWrite {
    pub origin_region: RegionId,
    pub origin_seq: u64,
    pub changes: TicketChanges,
}

/// Folds one ticket's events (creation, owner-scoped changes, ownership
/// moves; others are ignored) into its projection. `None` until the
/// creation is among them.
pub fn replay(events: &[EventEnvelope]) -> Option<Replayed> {
    let mut ticket = events.iter().find_map(|event| match &event.kind {
        EventKind::TicketCreated { ticket } => Some((**ticket).clone()),
        _ => None,
    })?;

    // Who holds each epoch, and from which sequence number each holder's
    // writes at it stop counting.
    let mut holders = BTreeMap::from([(ticket.owner.epoch, ticket.owner.owner_region.clone())]);
    let mut given_up: HashMap<(Epoch, &RegionId), u64> = HashMap::new();
    for event in events {
        let (from, previous, first_stale) = match &event.kind {
            EventKind::HandoffAccepted {
                from,
                offer_seq,
                previous_epoch,
            } => (from, *previous_epoch, *offer_seq),
            EventKind::TakenOver {
                from,
                previous_epoch,
                through_seq,
                ..
            } => (from, *previous_epoch, through_seq.saturating_add(1)),
            _ => continue,
        };
        holders.insert(event.epoch, event.origin_region.clone());
        let cut = given_up.entry((previous, from)).or_insert(first_stale);
        *cut = (*cut).min(first_stale);
    }

    let mut counted = Vec::new();
    let mut stale = Vec::new();
    for event in events {
        let Some(changes) = event.kind.owner_changes() else {
            continue;
        };
        let held = holders.get(&changes.epoch) == Some(&event.origin_region);
        let in_time = given_up
            .get(&(changes.epoch, &event.origin_region))
            .is_none_or(|cut| event.origin_seq < *cut);
        if held && in_time {
            counted.push((changes.epoch, event.hlc_time, event, changes));
        } else {
            stale.push(StaleWrite {
                origin_region: event.origin_region.clone(),
                origin_seq: event.origin_seq,
                changes: changes.clone(),
            });
        }
    }
    counted.sort_by(|a, b| {
        (a.0, a.1, &a.2.origin_region, a.2.origin_seq).cmp(&(
            b.0,
            b.1,
            &b.2.origin_region,
            b.2.origin_seq,
        ))
    });
    // Each counted write makes exactly the change its plan names. Each
    // ownership change clears the assignee before the writes of its epoch
    // (the new owner's), after those of earlier epochs.
    let created = ticket.owner.epoch;
    let mut handed_over: Vec<Epoch> = holders.keys().copied().filter(|e| *e != created).collect();
    handed_over.reverse();
    for (epoch, _, event, _) in counted {
        while handed_over.last().is_some_and(|e| *e <= epoch) {
            handed_over.pop();
            ticket.assignee = None;
        }
        apply_planned(&mut ticket, event, false);
    }
    if !handed_over.is_empty() {
        ticket.assignee = None;
    }
    stale.sort_by(|a, b| (&a.origin_region, a.origin_seq).cmp(&(&b.origin_region, b.origin_seq)));

    // The highest epoch owns the ticket; its holder's offers and refusals
    // at that epoch, in its log's order, say whether an offer is pending.
    if let Some((epoch, owner)) = holders.last_key_value() {
        ticket.owner = Ownership {
            owner_region: owner.clone(),
            epoch: *epoch,
        };
    }
    let mut steps: Vec<&EventEnvelope> = events
        .iter()
        .filter(|event| {
            matches!(
                event.kind,
                EventKind::HandoffOffered { .. } | EventKind::HandoffRefused { .. }
            ) && event.epoch == ticket.owner.epoch
                && event.origin_region == ticket.owner.owner_region
        })
        .collect();
    steps.sort_by_key(|event| event.origin_seq);
    ticket.handoff_to = None;
    // Every ownership step touched the ticket when it was made; steps a
    // later epoch superseded happened before it, so they cannot raise this.
    for event in events.iter().filter(|event| event.kind.is_ownership()) {
        ticket.updated_at = ticket.updated_at.max(hlc_instant(event));
    }
    for event in steps {
        apply_planned(&mut ticket, event, true);
    }
    Some(Replayed { ticket, stale })
}

/// Makes the change [`plan`] names for `event` as a replica applies it,
/// where its guard holds when `guarded` (the fold already decided that the
/// event counts; the guard orders the offers and refusals of one epoch).
fn apply_planned(ticket: &mut Ticket, event: &EventEnvelope, guarded: bool) {
    if let Ok(Plan {
        change: Change::Update { set, guard },
        ..
    }) = plan(event, Source::Replica)
        && (!guarded || guard.holds(ticket))
    {
        set.apply_to(ticket);
    }
}

fn hlc_instant(event: &EventEnvelope) -> Timestamp {
    event_instant(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HandoffNote, HlcTimestamp, Note, NoteId, Status, ticket::tests::sample_ticket};
    use proptest::prelude::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    /// Builds one ticket's events in the order they were written.
    struct Story {
        ticket: Ticket,
        seqs: HashMap<RegionId, u64>,
        clock: u64,
        events: Vec<EventEnvelope>,
    }

    impl Story {
        fn new() -> Self {
            let ticket = sample_ticket();
            let mut story = Self {
                ticket: ticket.clone(),
                seqs: HashMap::new(),
                clock: 1_000,
                events: Vec::new(),
            };
            story.push(
                "us-east",
                ticket.owner.epoch,
                EventKind::TicketCreated {
                    ticket: Box::new(ticket),
                },
            );
            story
        }

        fn push(&mut self, origin: &str, epoch: Epoch, kind: EventKind) -> u64 {
            let seq = self.seqs.entry(region(origin)).or_default();
            *seq += 1;
            self.clock += 10;
            self.events.push(EventEnvelope {
                origin_region: region(origin),
                origin_seq: *seq,
                ticket_id: self.ticket.id,
                epoch,
                hlc_time: HlcTimestamp::new(self.clock, 0),
                traceparent: None,
                actor: None,
                kind,
            });
            *seq
        }

        fn update(
            &mut self,
            origin: &str,
            epoch: Epoch,
            status: Option<Status>,
            assignee: Option<&str>,
        ) -> u64 {
            let changes = TicketChanges {
                epoch,
                status,
                assignee: assignee.map(|a| Some(a.to_owned())),
                priority: None,
                sla: None,
            };
            self.push(origin, epoch, EventKind::TicketUpdated { changes })
        }

        fn offer(&mut self, origin: &str, epoch: Epoch, to: &str) -> u64 {
            let handoff = HandoffNote {
                current_status: Status::Open,
                last_action: "looked".into(),
                next_action: "fix".into(),
                deadline: None,
                text: String::new(),
                author: "ana".into(),
                auto: false,
            };
            let note = Note {
                id: NoteId::new_v7(Timestamp::UNIX_EPOCH, [7; 10]),
                ticket_id: self.ticket.id,
                region: region(origin),
                author: "ana".into(),
                body: "handoff".into(),
                created_at: Timestamp::UNIX_EPOCH,
                auto: false,
                visibility: crate::Visibility::Internal,
            };
            self.push(
                origin,
                epoch,
                EventKind::HandoffOffered {
                    to: region(to),
                    handoff,
                    note,
                },
            )
        }
    }

    /// us-east works the ticket and hands it to eu-west, which works it;
    /// then eu-west is taken over by apac-south, which had applied eu-west's
    /// log only up to its first update, so eu-west's second one is stale.
    fn handoff_then_takeover() -> (Story, Epoch, Epoch) {
        let mut story = Story::new();
        let e0 = story.ticket.owner.epoch;
        story.update("us-east", e0, Some(Status::Open), None);
        let offer_seq = story.offer("us-east", e0, "eu-west");
        let e1 = e0.next_for(1);
        story.push(
            "eu-west",
            e1,
            EventKind::HandoffAccepted {
                from: region("us-east"),
                offer_seq,
                previous_epoch: e0,
            },
        );
        let seen = story.update("eu-west", e1, None, Some("bo"));
        story.update("eu-west", e1, Some(Status::Pending), None);
        let e2 = e1.next_for(2);
        let takeover = EventKind::TakenOver {
            from: region("eu-west"),
            fencing_token: 9,
            previous_epoch: e1,
            through_seq: seen,
        };
        story.push("apac-south", e2, takeover);
        story.update("apac-south", e2, Some(Status::Escalated), None);
        (story, e1, e2)
    }

    #[test]
    fn writes_after_the_successors_cursor_are_stale() {
        let (story, e1, e2) = handoff_then_takeover();
        let replayed = replay(&story.events).unwrap();
        assert_eq!(
            replayed.ticket.owner,
            Ownership {
                owner_region: region("apac-south"),
                epoch: e2
            }
        );
        assert_eq!(replayed.ticket.status, Status::Escalated);
        // eu-west's write before the cursor counts (it is not stale, below),
        // and the takeover then left the ticket to apac-south's queue.
        assert_eq!(replayed.ticket.assignee, None);
        assert_eq!(replayed.ticket.handoff_to, None);
        assert_eq!(replayed.stale.len(), 1, "{:?}", replayed.stale);
        let stale = &replayed.stale[0];
        assert_eq!(
            (stale.origin_region.as_str(), stale.origin_seq),
            ("eu-west", 3)
        );
        assert_eq!(
            (stale.changes.epoch, stale.changes.status),
            (e1, Some(Status::Pending))
        );
        assert_eq!(
            replayed.ticket.updated_at,
            hlc_instant(story.events.last().unwrap())
        );
    }

    #[test]
    fn a_write_reaching_a_replica_after_the_handoff_still_counts() {
        let mut story = Story::new();
        let e0 = story.ticket.owner.epoch;
        story.update("us-east", e0, None, Some("ana"));
        let offer_seq = story.offer("us-east", e0, "eu-west");
        let e1 = e0.next_for(1);
        story.push(
            "eu-west",
            e1,
            EventKind::HandoffAccepted {
                from: region("us-east"),
                offer_seq,
                previous_epoch: e0,
            },
        );
        story.update("eu-west", e1, Some(Status::Open), None);
        // eu-west's log first, then us-east's: the update made before the
        // offer arrives after the epoch moved on.
        let mut events = story.events.clone();
        events.sort_by_key(|e| (e.origin_region.as_str() != "eu-west", e.origin_seq));
        let replayed = replay(&events).unwrap();
        assert!(replayed.stale.is_empty(), "{:?}", replayed.stale);
        // It counted, before the acceptance, which leaves the ticket to
        // eu-west's queue: arriving late does not bring ana back.
        assert_eq!(replayed.ticket.assignee, None);
        assert_eq!(replayed.ticket.status, Status::Open);
    }

    #[test]
    fn an_offer_is_pending_until_refused() {
        let mut story = Story::new();
        let e0 = story.ticket.owner.epoch;
        story.offer("us-east", e0, "eu-west");
        assert_eq!(
            replay(&story.events).unwrap().ticket.handoff_to,
            Some(region("eu-west"))
        );
        story.push(
            "us-east",
            e0,
            EventKind::HandoffRefused {
                to: region("eu-west"),
                reason: "off shift".into(),
            },
        );
        assert_eq!(replay(&story.events).unwrap().ticket.handoff_to, None);
    }

    #[test]
    fn nothing_without_the_creation() {
        let (story, _, _) = handoff_then_takeover();
        assert!(replay(&story.events[1..]).is_none());
    }

    proptest! {
        /// Every replica folds the same set of events to the same ticket,
        /// whatever order they arrived in.
        #[test]
        fn the_fold_ignores_arrival_order(order in Just((0..8).collect::<Vec<usize>>()).prop_shuffle()) {
            let (story, _, _) = handoff_then_takeover();
            let shuffled: Vec<EventEnvelope> = order.iter().map(|i| story.events[*i].clone()).collect();
            prop_assert_eq!(story.events.len(), 8);
            prop_assert_eq!(replay(&shuffled), replay(&story.events));
        }
    }
}
