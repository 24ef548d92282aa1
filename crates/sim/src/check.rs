//! The checker: after a run has healed and gone quiet, does every region
//! hold the design's invariants?
//!
//! - each origin's log is dense from 1 in every region (a repeated number
//!   is a duplicate, a jump a hole);
//! - every region holds exactly the origin's own log of every origin: no
//!   event lost, none unknown to the origin, none different (divergent);
//! - every acknowledged write is present exactly once in every region,
//!   as the event of the ticket it was acknowledged for;
//! - every ticket projects (by `meridian_core::replay`) to the same
//!   ticket and the same stale writes everywhere, and its owner is the
//!   region its epoch encodes: one owner;
//! - no ticket has owner-scoped events at one epoch from two regions, nor
//!   from a region that epoch does not encode.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use meridian_core::{Epoch, EventEnvelope, RegionId, TicketId, replay};

/// One region's logs, as the checker reads them.
pub struct RegionView<'a> {
    pub region: RegionId,
    pub logs: &'a BTreeMap<RegionId, Vec<EventEnvelope>>,
}

/// A write some region acknowledged: its event must be everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub origin: RegionId,
    pub seq: u64,
    pub ticket_id: TicketId,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    NotDense { region: RegionId, origin: RegionId, position: u64, seq: u64 },
    Duplicated { region: RegionId, origin: RegionId, seq: u64 },
    Lost { region: RegionId, origin: RegionId, first_seq: u64, last_seq: u64 },
    Unknown { region: RegionId, origin: RegionId, first_seq: u64, last_seq: u64 },
    Divergent { region: RegionId, origin: RegionId, seq: u64 },
    AckedMissing { region: RegionId, origin: RegionId, seq: u64, ticket_id: TicketId },
    ProjectionDiffers { region: RegionId, reference: RegionId, ticket_id: TicketId },
    ProjectionMissing { region: RegionId, ticket_id: TicketId },
    WrongOwner { ticket_id: TicketId, owner: RegionId, epoch: Epoch },
    EpochWrittenByTwo { ticket_id: TicketId, epoch: Epoch, writers: Vec<RegionId> },
    /// A problem `meridian_replication::check_views` or `check_acked` (the
    /// checker shared with the chaos test) found.
    Shared(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotDense { region, origin, position, seq } => {
                write!(f, "{region}'s copy of {origin}'s log holds seq {seq} at position {position}")
            }
            Violation::Duplicated { region, origin, seq } => write!(f, "{region} holds {origin} event {seq} twice"),
            Violation::Lost { region, origin, first_seq, last_seq } => {
                write!(f, "{region} lost {origin} events {first_seq}..={last_seq}")
            }
            Violation::Unknown { region, origin, first_seq, last_seq } => {
                write!(f, "{region} holds {origin} events {first_seq}..={last_seq} that {origin} does not")
            }
            Violation::Divergent { region, origin, seq } => {
                write!(f, "{region}'s copy of {origin} event {seq} differs from {origin}'s own")
            }
            Violation::AckedMissing { region, origin, seq, ticket_id } => {
                write!(f, "{region} lacks acknowledged {origin} event {seq} (ticket {ticket_id})")
            }
            Violation::ProjectionDiffers { region, reference, ticket_id } => {
                write!(f, "{region}'s projection of ticket {ticket_id} differs from {reference}'s")
            }
            Violation::ProjectionMissing { region, ticket_id } => write!(f, "{region} has no ticket {ticket_id}"),
            Violation::WrongOwner { ticket_id, owner, epoch } => {
                write!(f, "ticket {ticket_id} is owned by {owner} at epoch {epoch:?}, which that epoch does not encode")
            }
            Violation::EpochWrittenByTwo { ticket_id, epoch, writers } => {
                let writers: Vec<&str> = writers.iter().map(RegionId::as_str).collect();
                write!(f, "ticket {ticket_id} epoch {epoch:?} has owner-scoped writes from {}", writers.join(", "))
            }
            Violation::Shared(problem) => write!(f, "shared checker: {problem}"),
        }
    }
}

/// What the checker looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Event copies compared (every origin's log in every region).
    pub events_checked: u64,
    pub acked_checked: u64,
    pub tickets_checked: u64,
    /// Owner-scoped writes the projections keep as conflicts (stale):
    /// expected after takeovers, not a violation.
    pub stale_writes: u64,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks every invariant over `views` (one per region; `regions` gives
/// each region's epoch index, its position).
pub fn check(regions: &[RegionId], views: &[RegionView<'_>], acked: &[Acked]) -> Report {
    let mut report = Report::default();
    let empty = Vec::new();
    let own_log = |origin: &RegionId| -> &Vec<EventEnvelope> {
        views.iter().find(|view| &view.region == origin).and_then(|view| view.logs.get(origin)).unwrap_or(&empty)
    };

    // Logs: dense, and equal to the origin's own.
    for view in views {
        for origin in regions {
            let reference = own_log(origin);
            let copy = view.logs.get(origin).unwrap_or(&empty);
            report.events_checked += copy.len() as u64;
            for (position, event) in (1u64..).zip(copy) {
                if event.origin_seq != position {
                    let violation = if position > 1 && event.origin_seq == position - 1 {
                        Violation::Duplicated { region: view.region.clone(), origin: origin.clone(), seq: event.origin_seq }
                    } else {
                        Violation::NotDense { region: view.region.clone(), origin: origin.clone(), position, seq: event.origin_seq }
                    };
                    report.violations.push(violation);
                    break;
                }
                if event.origin_region != *origin {
                    report.violations.push(Violation::Divergent {
                        region: view.region.clone(),
                        origin: origin.clone(),
                        seq: event.origin_seq,
                    });
                }
            }
            let (held, own) = (copy.len() as u64, reference.len() as u64);
            if held < own {
                report.violations.push(Violation::Lost {
                    region: view.region.clone(),
                    origin: origin.clone(),
                    first_seq: held + 1,
                    last_seq: own,
                });
            } else if held > own {
                report.violations.push(Violation::Unknown {
                    region: view.region.clone(),
                    origin: origin.clone(),
                    first_seq: own + 1,
                    last_seq: held,
                });
            }
            for (ours, theirs) in copy.iter().zip(reference) {
                if ours != theirs {
                    report.violations.push(Violation::Divergent {
                        region: view.region.clone(),
                        origin: origin.clone(),
                        seq: ours.origin_seq,
                    });
                }
            }
        }
    }

    // Acknowledged writes: exactly once, as what was acknowledged.
    for write in acked {
        for view in views {
            report.acked_checked += 1;
            let copies = view
                .logs
                .get(&write.origin)
                .map_or(0, |log| log.iter().filter(|e| e.origin_seq == write.seq && e.ticket_id == write.ticket_id).count());
            match copies {
                1 => {}
                0 => report.violations.push(Violation::AckedMissing {
                    region: view.region.clone(),
                    origin: write.origin.clone(),
                    seq: write.seq,
                    ticket_id: write.ticket_id,
                }),
                _ => report.violations.push(Violation::Duplicated {
                    region: view.region.clone(),
                    origin: write.origin.clone(),
                    seq: write.seq,
                }),
            }
        }
    }

    // Projections: the same everywhere, one owner, one writer per epoch.
    let per_region: Vec<BTreeMap<TicketId, Vec<EventEnvelope>>> = views
        .iter()
        .map(|view| {
            let mut tickets: BTreeMap<TicketId, Vec<EventEnvelope>> = BTreeMap::new();
            for event in view.logs.values().flatten() {
                tickets.entry(event.ticket_id).or_default().push(event.clone());
            }
            tickets
        })
        .collect();
    let all_tickets: BTreeSet<TicketId> = per_region.iter().flat_map(|tickets| tickets.keys().copied()).collect();
    for ticket_id in all_tickets {
        let projections: Vec<Option<meridian_core::Replayed>> =
            per_region.iter().map(|tickets| tickets.get(&ticket_id).and_then(|events| replay(events))).collect();
        // Regional records (shift summaries) have no creation: no ticket.
        let Some((reference_at, Some(reference))) = projections.iter().enumerate().find(|(_, p)| p.is_some()) else {
            continue;
        };
        report.tickets_checked += 1;
        report.stale_writes += reference.stale.len() as u64;
        for (view, projection) in views.iter().zip(&projections) {
            match projection {
                None => report.violations.push(Violation::ProjectionMissing { region: view.region.clone(), ticket_id }),
                Some(projection) if projection != reference => report.violations.push(Violation::ProjectionDiffers {
                    region: view.region.clone(),
                    reference: views[reference_at].region.clone(),
                    ticket_id,
                }),
                Some(_) => {}
            }
        }
        let owner = &reference.ticket.owner;
        let owner_index = regions.iter().position(|r| r == &owner.owner_region);
        if owner_index.is_none_or(|index| usize::from(owner.epoch.owner_index()) != index) {
            report.violations.push(Violation::WrongOwner {
                ticket_id,
                owner: owner.owner_region.clone(),
                epoch: owner.epoch,
            });
        }
        let mut writers: BTreeMap<Epoch, BTreeSet<RegionId>> = BTreeMap::new();
        for event in per_region.iter().filter_map(|tickets| tickets.get(&ticket_id)).flatten() {
            if event.kind.is_owner_scoped() {
                writers.entry(event.epoch).or_default().insert(event.origin_region.clone());
            }
        }
        for (epoch, writers) in writers {
            let encoded = regions.get(usize::from(epoch.owner_index()));
            if writers.len() > 1 || writers.iter().any(|writer| Some(writer) != encoded) {
                report.violations.push(Violation::EpochWrittenByTwo { ticket_id, epoch, writers: writers.into_iter().collect() });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::RegionDb;
    use jiff::Timestamp;
    use meridian_core::{NewTicket, Priority, Tier};

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn new_ticket() -> NewTicket {
        NewTicket {
            subject: "Printer on fire".into(),
            body: "It is on fire.".into(),
            customer: "acme".into(),
            tier: Tier::new("standard").unwrap(),
            skills: BTreeSet::new(),
            language: "en".into(),
            residency: BTreeSet::new(),
            priority: Priority::High,
        }
    }

    /// The checker finds each kind of damage it promises to find.
    #[test]
    fn reports_lost_duplicated_divergent_and_two_writers() {
        let regions = vec![region("us-east"), region("eu-west")];
        let us = RegionDb::new(regions[0].clone(), 0);
        let at = Timestamp::from_millisecond(1_750_000_000_000).unwrap();
        let id = TicketId::new_v7(at, [1; 10]);
        let created = crate::model::lock(&us).create(id, new_ticket(), at).unwrap();
        let mut us_logs = crate::model::lock(&us).logs.clone();
        let acked = vec![Acked { origin: regions[0].clone(), seq: 1, ticket_id: id }];

        // A perfect copy: clean.
        let eu_logs = us_logs.clone();
        let views = [RegionView { region: regions[0].clone(), logs: &us_logs }, RegionView { region: regions[1].clone(), logs: &eu_logs }];
        assert!(check(&regions, &views, &acked).is_clean());

        // Lost.
        let lost = BTreeMap::new();
        let views = [RegionView { region: regions[0].clone(), logs: &us_logs }, RegionView { region: regions[1].clone(), logs: &lost }];
        let report = check(&regions, &views, &acked);
        assert!(report.violations.iter().any(|v| matches!(v, Violation::Lost { .. })), "{report:?}");
        assert!(report.violations.iter().any(|v| matches!(v, Violation::AckedMissing { .. })), "{report:?}");

        // Duplicated.
        let mut twice = us_logs.clone();
        twice.get_mut(&regions[0]).unwrap().push(created.clone());
        let views = [RegionView { region: regions[0].clone(), logs: &us_logs }, RegionView { region: regions[1].clone(), logs: &twice }];
        let report = check(&regions, &views, &acked);
        assert!(report.violations.iter().any(|v| matches!(v, Violation::Duplicated { .. })), "{report:?}");

        // Divergent.
        let mut other = us_logs.clone();
        other.get_mut(&regions[0]).unwrap()[0].hlc_time = meridian_core::HlcTimestamp::new(1, 0);
        let views = [RegionView { region: regions[0].clone(), logs: &us_logs }, RegionView { region: regions[1].clone(), logs: &other }];
        let report = check(&regions, &views, &acked);
        assert!(report.violations.iter().any(|v| matches!(v, Violation::Divergent { .. })), "{report:?}");

        // An owner-scoped write at us-east's epoch by eu-west.
        let mut forged = created.clone();
        forged.origin_region = regions[1].clone();
        forged.kind = meridian_core::EventKind::TicketUpdated {
            changes: meridian_core::TicketChanges { epoch: created.epoch, priority: Some(Priority::Low), ..Default::default() },
        };
        us_logs.insert(regions[1].clone(), vec![forged]);
        let views = [RegionView { region: regions[0].clone(), logs: &us_logs }, RegionView { region: regions[1].clone(), logs: &us_logs }];
        let report = check(&regions, &views, &[]);
        assert!(report.violations.iter().any(|v| matches!(v, Violation::EpochWrittenByTwo { .. })), "{report:?}");
    }
}
