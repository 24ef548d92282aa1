//! The checker: after a run has healed and gone quiet, does every region
//! hold the design's invariants? It is the checker the chaos test runs on
//! real databases (`meridian_replication::convergence`), here over the
//! model stores' views:
//!
//! - each origin's log is dense from 1, and every region holds exactly it:
//!   no event lost, none unknown to the origin, none twice, none different;
//! - every acknowledged write is in every region, as the event of the
//!   ticket it was acknowledged for;
//! - every ticket projects (the model projects by `meridian_core::replay`)
//!   to the same ticket, notes and stale writes everywhere, and its owner
//!   is the region its epoch encodes;
//! - no ticket has owner-scoped events at one epoch from two regions, nor
//!   from a region that epoch does not encode.

use meridian_core::RegionId;
use meridian_replication::{RegionView, check_acked, check_owners, check_views};

pub use meridian_replication::Acked;

/// One broken invariant.
pub type Violation = meridian_replication::Divergence;

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
pub fn check(regions: &[RegionId], views: &[RegionView], acked: &[Acked]) -> Report {
    let mut shared = check_views(views);
    check_acked(&mut shared, views, acked);
    check_owners(&mut shared, views, regions);
    let stale_writes = views.first().map_or(0, |view| {
        view.tickets
            .values()
            .map(|record| record.conflicts.len() as u64)
            .sum()
    });
    Report {
        events_checked: shared.events_checked as u64,
        acked_checked: shared.acked_checked as u64,
        tickets_checked: shared.tickets_checked as u64,
        stale_writes,
        violations: shared.problems,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use crate::model::{RegionDb, region_view};
    use jiff::Timestamp;
    use meridian_core::{EventEnvelope, TicketId};
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
        let created = crate::model::lock(&us)
            .create(id, new_ticket(), at)
            .unwrap();
        let mut us_logs = crate::model::lock(&us).logs.clone();
        let acked = vec![Acked {
            origin: regions[0].clone(),
            seq: 1,
            ticket_id: id,
        }];

        // A perfect copy: clean.
        let eu_logs = us_logs.clone();
        let views = [
            region_view(&regions[0], &us_logs),
            region_view(&regions[1], &eu_logs),
        ];
        assert!(check(&regions, &views, &acked).is_clean());

        // Lost.
        let lost: BTreeMap<RegionId, Vec<EventEnvelope>> = BTreeMap::new();
        let views = [
            region_view(&regions[0], &us_logs),
            region_view(&regions[1], &lost),
        ];
        let report = check(&regions, &views, &acked);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Lost { .. })),
            "{report:?}"
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::AckedLost { .. })),
            "{report:?}"
        );

        // Duplicated.
        let mut twice = us_logs.clone();
        twice.get_mut(&regions[0]).unwrap().push(created.clone());
        let views = [
            region_view(&regions[0], &us_logs),
            region_view(&regions[1], &twice),
        ];
        let report = check(&regions, &views, &acked);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Duplicated { .. })),
            "{report:?}"
        );

        // Divergent.
        let mut other = us_logs.clone();
        other.get_mut(&regions[0]).unwrap()[0].hlc_time = meridian_core::HlcTimestamp::new(1, 0);
        let views = [
            region_view(&regions[0], &us_logs),
            region_view(&regions[1], &other),
        ];
        let report = check(&regions, &views, &acked);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Differs { .. })),
            "{report:?}"
        );

        // An owner-scoped write at us-east's epoch by eu-west.
        let mut forged = created.clone();
        forged.origin_region = regions[1].clone();
        forged.kind = meridian_core::EventKind::TicketUpdated {
            changes: meridian_core::TicketChanges {
                epoch: created.epoch,
                priority: Some(Priority::Low),
                ..Default::default()
            },
        };
        us_logs.insert(regions[1].clone(), vec![forged]);
        let views = [
            region_view(&regions[0], &us_logs),
            region_view(&regions[1], &us_logs),
        ];
        let report = check(&regions, &views, &[]);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::EpochTwoWriters { .. })),
            "{report:?}"
        );
    }
}
