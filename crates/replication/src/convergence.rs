//! The convergence check: do stores that replicate with each other hold the
//! same logs and the same projections? The design's invariants 2 ("every
//! region holds every acknowledged event exactly once") and 3 ("all regions
//! converge to the same projection of every ticket"), as one call for
//! tests, the simulation and operators.
//!
//! Each origin's own store is the reference for its log: a replica must hold
//! exactly the same events, no fewer (lost), no more (unknown to the
//! origin), none twice, none different. Projections are compared ticket by
//! ticket against the first store that has the ticket. Every event any
//! store holds is also checked for invariant 1: one writer per epoch.
//! The checks work on [`RegionView`]s, so the simulation's model stores and
//! the chaos test's real databases go through the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use std::collections::HashMap;

use meridian_core::{Epoch, EventEnvelope, EventKind, RegionId, TicketId, residency};
use meridian_store::{
    ConflictRecord, EVENTS_PAGE_MAX, LIST_LIMIT_MAX, Store, TicketFilter, TicketRecord,
};

use crate::Result;

/// What [`check_convergence`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvergenceReport {
    /// The head of each origin's log, as its own store has it.
    pub heads: BTreeMap<RegionId, u64>,
    /// Events compared, over every store and origin.
    pub events_checked: usize,
    /// Distinct tickets compared.
    pub tickets_checked: usize,
    /// Acknowledged writes looked for ([`check_acked`]), in every view.
    pub acked_checked: usize,
    pub problems: Vec<Divergence>,
}

/// One way the stores disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The origin's own log is not dense from 1: a hole or a repeated number.
    NotDense {
        origin: RegionId,
        after_seq: u64,
        next_seq: u64,
    },
    /// `store` lacks these events of `origin`'s log.
    Lost {
        store: RegionId,
        origin: RegionId,
        seqs: Vec<RangeInclusive<u64>>,
    },
    /// `store` holds events of `origin` that the origin's own log does not.
    Unknown {
        store: RegionId,
        origin: RegionId,
        seqs: Vec<RangeInclusive<u64>>,
    },
    /// `store` holds an event of `origin` more than once.
    Duplicated {
        store: RegionId,
        origin: RegionId,
        seq: u64,
    },
    /// `store`'s copy of an event differs from the origin's.
    Differs {
        store: RegionId,
        origin: RegionId,
        seq: u64,
    },
    /// `store` has no projection of a ticket that another store has.
    TicketMissing { store: RegionId, ticket: TicketId },
    /// `store`'s projection of a ticket differs from `reference`'s in these
    /// parts (ticket fields by name, `notes`, `conflicts`).
    TicketDiffers {
        store: RegionId,
        reference: RegionId,
        ticket: TicketId,
        parts: Vec<String>,
    },
    /// Owner-scoped writes of one ticket at one epoch came from several
    /// regions (invariant 1).
    EpochTwoWriters {
        ticket: TicketId,
        epoch: Epoch,
        regions: Vec<RegionId>,
    },
    /// Several regions wrote at epochs with the same owner index.
    EpochIndexShared { index: u16, regions: Vec<RegionId> },
    /// `writer` wrote an owner-scoped event of a ticket at an epoch that
    /// encodes another region ([`check_owners`]).
    EpochNotWriters {
        ticket: TicketId,
        epoch: Epoch,
        writer: RegionId,
    },
    /// `store`'s projection names `owner`, which its epoch does not encode.
    WrongOwner {
        store: RegionId,
        ticket: TicketId,
        owner: RegionId,
        epoch: Epoch,
    },
    /// `store` lacks these acknowledged writes of `origin`.
    AckedLost {
        store: RegionId,
        origin: RegionId,
        seqs: Vec<RangeInclusive<u64>>,
    },
    /// At an acknowledged write's place `store` holds another ticket's event.
    AckedElsewhere {
        store: RegionId,
        origin: RegionId,
        seq: u64,
        acked: TicketId,
        found: TicketId,
    },
    /// `store`'s SQL database disagrees with the fold of its own log, or
    /// refused what the core allowed (the simulation's mirror, crates/sim).
    StoreDisagrees {
        store: RegionId,
        ticket: Option<TicketId>,
        detail: String,
    },
}

impl ConvergenceReport {
    pub fn is_converged(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ConvergenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let heads: Vec<String> = self
            .heads
            .iter()
            .map(|(origin, head)| format!("{origin}={head}"))
            .collect();
        write!(
            f,
            "{} events and {} tickets checked (heads: {}): ",
            self.events_checked,
            self.tickets_checked,
            heads.join(", ")
        )?;
        if self.problems.is_empty() {
            return write!(f, "converged");
        }
        write!(f, "{} problems", self.problems.len())?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::NotDense {
                origin,
                after_seq,
                next_seq,
            } => {
                write!(
                    f,
                    "{origin}'s own log is not dense: {next_seq} follows {after_seq}"
                )
            }
            Divergence::Lost {
                store,
                origin,
                seqs,
            } => write!(f, "{store} lost {origin} events {}", ranges(seqs)),
            Divergence::Unknown {
                store,
                origin,
                seqs,
            } => {
                write!(
                    f,
                    "{store} holds {origin} events {} that {origin} does not",
                    ranges(seqs)
                )
            }
            Divergence::Duplicated { store, origin, seq } => {
                write!(f, "{store} holds {origin} event {seq} twice")
            }
            Divergence::Differs { store, origin, seq } => {
                write!(
                    f,
                    "{store}'s copy of {origin} event {seq} differs from {origin}'s"
                )
            }
            Divergence::TicketMissing { store, ticket } => {
                write!(f, "{store} has no ticket {ticket}")
            }
            Divergence::TicketDiffers {
                store,
                reference,
                ticket,
                parts,
            } => {
                write!(
                    f,
                    "{store}'s ticket {ticket} differs from {reference}'s in {}",
                    parts.join(", ")
                )
            }
            Divergence::EpochTwoWriters {
                ticket,
                epoch,
                regions,
            } => {
                write!(
                    f,
                    "ticket {ticket}: epoch {epoch} written by {}",
                    names(regions)
                )
            }
            Divergence::EpochIndexShared { index, regions } => {
                write!(f, "epoch owner index {index} written by {}", names(regions))
            }
            Divergence::EpochNotWriters {
                ticket,
                epoch,
                writer,
            } => {
                write!(
                    f,
                    "ticket {ticket}: {writer} wrote at epoch {epoch}, which encodes another region"
                )
            }
            Divergence::WrongOwner {
                store,
                ticket,
                owner,
                epoch,
            } => {
                write!(
                    f,
                    "{store}'s ticket {ticket} is owned by {owner} at epoch {epoch}, which encodes another region"
                )
            }
            Divergence::AckedLost {
                store,
                origin,
                seqs,
            } => {
                write!(
                    f,
                    "{store} lacks acknowledged {origin} events {}",
                    ranges(seqs)
                )
            }
            Divergence::AckedElsewhere {
                store,
                origin,
                seq,
                acked,
                found,
            } => {
                write!(
                    f,
                    "{store} holds ticket {found}'s event at acknowledged {origin} event {seq} (of ticket {acked})"
                )
            }
            Divergence::StoreDisagrees {
                store,
                ticket,
                detail,
            } => match ticket {
                Some(ticket) => write!(f, "{store}'s SQL store, ticket {ticket}: {detail}"),
                None => write!(f, "{store}'s SQL store: {detail}"),
            },
        }
    }
}

fn names(regions: &[RegionId]) -> String {
    regions
        .iter()
        .map(RegionId::as_str)
        .collect::<Vec<_>>()
        .join(" and ")
}

fn ranges(seqs: &[RangeInclusive<u64>]) -> String {
    seqs.iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}..={}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sorted numbers as inclusive ranges.
fn to_ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<RangeInclusive<u64>> {
    let mut out: Vec<RangeInclusive<u64>> = Vec::new();
    for seq in seqs {
        match out.last_mut() {
            Some(last) if *last.end() + 1 == seq => *last = *last.start()..=seq,
            _ => out.push(seq..=seq),
        }
    }
    out
}

/// What one region holds, read out of its store ([`read_view`]) or out of
/// a model of one (the simulation): the checks below work on this alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionView {
    pub region: RegionId,
    /// Every origin's log as this region holds it, in `origin_seq` order.
    pub logs: BTreeMap<RegionId, Vec<EventEnvelope>>,
    /// Every ticket's projection as this region holds it.
    pub tickets: BTreeMap<TicketId, TicketRecord>,
}

/// A write a client was told is durable: `origin`'s event `seq`, about
/// `ticket_id`. Invariant 2 says every region ends up holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub origin: RegionId,
    pub seq: u64,
    pub ticket_id: TicketId,
}

/// Compares the logs of every origin and the projection of every ticket
/// across `stores` (one per region; each region's own store is the
/// reference for its log), and checks that no epoch was written by two
/// regions. Reads everything: meant for tests and occasional audits, not
/// for a hot path.
pub async fn check_convergence(stores: &[Store]) -> Result<ConvergenceReport> {
    let mut views = Vec::with_capacity(stores.len());
    for store in stores {
        views.push(read_view(store).await?);
    }
    Ok(check_views(&views))
}

/// Everything `store` holds, as a [`RegionView`]: the logs of every origin
/// it has events of, and every ticket's projection.
pub async fn read_view(store: &Store) -> Result<RegionView> {
    let mut view = RegionView {
        region: store.local_region().clone(),
        logs: BTreeMap::new(),
        tickets: BTreeMap::new(),
    };
    let mut origins: BTreeSet<RegionId> = store.origins().await?.into_iter().collect();
    origins.insert(view.region.clone());
    for origin in origins {
        let log = read_log(store, &origin).await?;
        if !log.is_empty() {
            view.logs.insert(origin, log);
        }
    }
    for id in ticket_ids(store).await? {
        if let Some(record) = store.get_ticket(id).await? {
            view.tickets.insert(id, record);
        }
    }
    Ok(view)
}

/// The checks of [`check_convergence`] on views already read: each view's
/// own log is dense and every other view holds exactly it; every view has
/// the same projection of every ticket; no epoch of any ticket carries
/// owner-scoped writes from two regions, and no epoch owner index names two
/// regions.
pub fn check_views(views: &[RegionView]) -> ConvergenceReport {
    let mut report = ConvergenceReport::default();
    for home in views {
        let origin = &home.region;
        let empty = Vec::new();
        let own = home.logs.get(origin).unwrap_or(&empty);
        report.events_checked += own.len();
        report.heads.insert(
            origin.clone(),
            own.last().map_or(0, |event| event.origin_seq),
        );
        let mut previous = 0;
        for event in own {
            if event.origin_seq != previous + 1 {
                report.problems.push(Divergence::NotDense {
                    origin: origin.clone(),
                    after_seq: previous,
                    next_seq: event.origin_seq,
                });
            }
            previous = event.origin_seq;
        }
        let residencies = log_residencies(home, own);
        let own: BTreeMap<u64, &EventEnvelope> =
            own.iter().map(|event| (event.origin_seq, event)).collect();
        for replica in views.iter().filter(|view| &view.region != origin) {
            let copy = replica.logs.get(origin).unwrap_or(&empty);
            report.events_checked += copy.len();
            compare_log(
                &mut report,
                &replica.region,
                origin,
                &own,
                copy,
                &residencies,
            );
        }
    }
    compare_tickets(&mut report, views);
    check_epochs(&mut report, views);
    report
}

/// Adds to `report` every acknowledged write that some view does not hold
/// at its told place: the seq missing, or holding another ticket's event.
pub fn check_acked(report: &mut ConvergenceReport, views: &[RegionView], acked: &[Acked]) {
    report.acked_checked += acked.len();
    for view in views {
        let by_seq: BTreeMap<(&RegionId, u64), &EventEnvelope> = view
            .logs
            .iter()
            .flat_map(|(origin, log)| {
                log.iter()
                    .map(move |event| ((origin, event.origin_seq), event))
            })
            .collect();
        let mut lost = Vec::new();
        for write in acked {
            match by_seq.get(&(&write.origin, write.seq)) {
                Some(event) if event.ticket_id == write.ticket_id => {}
                Some(event) => report.problems.push(Divergence::AckedElsewhere {
                    store: view.region.clone(),
                    origin: write.origin.clone(),
                    seq: write.seq,
                    acked: write.ticket_id,
                    found: event.ticket_id,
                }),
                None => lost.push(write),
            }
        }
        let mut by_origin: BTreeMap<&RegionId, Vec<u64>> = BTreeMap::new();
        for write in lost {
            by_origin.entry(&write.origin).or_default().push(write.seq);
        }
        for (origin, mut seqs) in by_origin {
            seqs.sort_unstable();
            seqs.dedup();
            report.problems.push(Divergence::AckedLost {
                store: view.region.clone(),
                origin: origin.clone(),
                seqs: to_ranges(seqs),
            });
        }
    }
}

/// Invariants 1 and 4 against the mesh's region order (an epoch's owner
/// index is its owner's position in `regions`): every owner-scoped event
/// was written by the region its epoch encodes, and every projection's
/// owner is the region its epoch encodes.
pub fn check_owners(report: &mut ConvergenceReport, views: &[RegionView], regions: &[RegionId]) {
    let encoded = |epoch: Epoch| regions.get(usize::from(epoch.owner_index()));
    let mut reported = BTreeSet::new();
    for view in views {
        for event in view.logs.values().flatten() {
            if event.kind.is_owner_scoped()
                && encoded(event.epoch) != Some(&event.origin_region)
                && reported.insert((event.ticket_id, event.epoch, event.origin_region.clone()))
            {
                report.problems.push(Divergence::EpochNotWriters {
                    ticket: event.ticket_id,
                    epoch: event.epoch,
                    writer: event.origin_region.clone(),
                });
            }
        }
        for (id, record) in &view.tickets {
            let owner = &record.ticket.owner;
            if encoded(owner.epoch) != Some(&owner.owner_region) {
                report.problems.push(Divergence::WrongOwner {
                    store: view.region.clone(),
                    ticket: *id,
                    owner: owner.owner_region.clone(),
                    epoch: owner.epoch,
                });
            }
        }
    }
}

/// Invariant 1, one writer per epoch: over every event any view holds, an
/// owner-scoped write (everything but notes and regional records) at epoch
/// `e` of a ticket comes from one region only, and one epoch owner index
/// belongs to one region.
fn check_epochs(report: &mut ConvergenceReport, views: &[RegionView]) {
    let mut writers: BTreeMap<(TicketId, Epoch), BTreeSet<&RegionId>> = BTreeMap::new();
    let mut index_owner: BTreeMap<u16, BTreeSet<&RegionId>> = BTreeMap::new();
    for event in views.iter().flat_map(|view| view.logs.values().flatten()) {
        if !event.kind.is_owner_scoped() {
            continue;
        }
        writers
            .entry((event.ticket_id, event.epoch))
            .or_default()
            .insert(&event.origin_region);
        index_owner
            .entry(event.epoch.owner_index())
            .or_default()
            .insert(&event.origin_region);
    }
    for ((ticket, epoch), regions) in writers {
        if regions.len() > 1 {
            report.problems.push(Divergence::EpochTwoWriters {
                ticket,
                epoch,
                regions: regions.into_iter().cloned().collect(),
            });
        }
    }
    for (index, regions) in index_owner {
        if regions.len() > 1 {
            report.problems.push(Divergence::EpochIndexShared {
                index,
                regions: regions.into_iter().cloned().collect(),
            });
        }
    }
}

fn compare_log(
    report: &mut ConvergenceReport,
    store: &RegionId,
    origin: &RegionId,
    own: &BTreeMap<u64, &EventEnvelope>,
    copy: &[EventEnvelope],
    residencies: &Residencies,
) {
    let mut seen = BTreeSet::new();
    let mut unknown = Vec::new();
    for event in copy {
        if !seen.insert(event.origin_seq) {
            report.problems.push(Divergence::Duplicated {
                store: store.clone(),
                origin: origin.clone(),
                seq: event.origin_seq,
            });
            continue;
        }
        match own.get(&event.origin_seq) {
            None => unknown.push(event.origin_seq),
            Some(original) if !same_event(original, event, store, residencies) => {
                report.problems.push(Divergence::Differs {
                    store: store.clone(),
                    origin: origin.clone(),
                    seq: event.origin_seq,
                })
            }
            Some(_) => {}
        }
    }
    let lost: Vec<u64> = own
        .keys()
        .copied()
        .filter(|seq| !seen.contains(seq))
        .collect();
    if !lost.is_empty() {
        report.problems.push(Divergence::Lost {
            store: store.clone(),
            origin: origin.clone(),
            seqs: to_ranges(lost),
        });
    }
    if !unknown.is_empty() {
        unknown.sort_unstable();
        report.problems.push(Divergence::Unknown {
            store: store.clone(),
            origin: origin.clone(),
            seqs: to_ranges(unknown),
        });
    }
}

/// The residency of each ticket an origin's log holds text of.
type Residencies = HashMap<TicketId, BTreeSet<RegionId>>;

/// Residencies of the tickets `log`'s notes and offers are about, from the
/// origin's own store (which has every ticket it wrote a note on).
fn log_residencies(home: &RegionView, log: &[EventEnvelope]) -> Residencies {
    log.iter()
        .filter_map(|event| residency::residency_ticket(&event.kind))
        .filter_map(|id| {
            home.tickets
                .get(&id)
                .map(|record| (id, record.ticket.residency.clone()))
        })
        .collect()
}

/// Whether `copy`, held by `store`, is what `store` must hold of the
/// origin's `original`: the event itself in a region that may hold its
/// ticket's text, its redacted form (residency) anywhere else. A
/// redacted copy inside the set, or the text outside it, differs.
fn same_event(
    original: &EventEnvelope,
    copy: &EventEnvelope,
    store: &RegionId,
    residencies: &Residencies,
) -> bool {
    let residency = match &original.kind {
        EventKind::TicketCreated { ticket } => Some(&ticket.residency),
        kind => residency::residency_ticket(kind).and_then(|id| residencies.get(&id)),
    };
    match residency {
        Some(set) if !residency::may_hold(set, store) => residency::redact_event(original) == *copy,
        _ => original == copy,
    }
}

async fn read_log(store: &Store, origin: &RegionId) -> Result<Vec<EventEnvelope>> {
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(origin, after, EVENTS_PAGE_MAX).await?;
        let Some(last) = page.last() else {
            return Ok(log);
        };
        after = last.origin_seq;
        log.extend(page);
    }
}

async fn ticket_ids(store: &Store) -> Result<Vec<TicketId>> {
    let mut ids = Vec::new();
    let mut filter = TicketFilter {
        limit: LIST_LIMIT_MAX,
        ..TicketFilter::default()
    };
    loop {
        let page = store.list_tickets(&filter).await?;
        ids.extend(page.tickets.iter().map(|ticket| ticket.id));
        match page.next_after {
            Some(after) => filter.after = Some(after),
            None => return Ok(ids),
        }
    }
}

fn compare_tickets(report: &mut ConvergenceReport, views: &[RegionView]) {
    let ids: BTreeSet<TicketId> = views
        .iter()
        .flat_map(|view| view.tickets.keys().copied())
        .collect();
    report.tickets_checked = ids.len();
    for id in ids {
        let mut records = Vec::with_capacity(views.len());
        for view in views {
            match view.tickets.get(&id) {
                Some(record) => records.push((&view.region, record)),
                None => report.problems.push(Divergence::TicketMissing {
                    store: view.region.clone(),
                    ticket: id,
                }),
            }
        }
        // Residency: the reference is a region that may hold the text.
        if let Some(first) = records
            .iter()
            .position(|(region, record)| residency::may_hold(&record.ticket.residency, region))
        {
            records[..=first].rotate_right(1);
        }
        let mut reference: Option<(&RegionId, &TicketRecord)> = None;
        for (region, record) in records {
            match reference {
                None => reference = Some((region, record)),
                Some((reference_region, expected)) => {
                    let parts = differing_parts(&expected_here(expected, region), record);
                    if !parts.is_empty() {
                        report.problems.push(Divergence::TicketDiffers {
                            store: region.clone(),
                            reference: reference_region.clone(),
                            ticket: id,
                            parts,
                        });
                    }
                }
            }
        }
    }
}

/// What `region` must hold of a ticket whose full projection is `full`:
/// all of it inside the ticket's residency, the redacted ticket and notes
/// outside it.
fn expected_here<'a>(
    full: &'a TicketRecord,
    region: &RegionId,
) -> std::borrow::Cow<'a, TicketRecord> {
    if residency::may_hold(&full.ticket.residency, region) {
        return std::borrow::Cow::Borrowed(full);
    }
    std::borrow::Cow::Owned(TicketRecord {
        ticket: full.ticket.redacted(),
        notes: full
            .notes
            .iter()
            .map(meridian_core::Note::redacted)
            .collect(),
        conflicts: full.conflicts.clone(),
    })
}

/// The parts of two projections of one ticket that differ. A conflict's
/// `recorded_at` is when it arrived in that region, so it is not compared,
/// nor is the ticket's epoch when it arrived (which depends on arrival
/// order), nor the order conflicts were recorded in.
pub fn differing_parts(expected: &TicketRecord, actual: &TicketRecord) -> Vec<String> {
    let mut parts = Vec::new();
    if expected.ticket != actual.ticket {
        match (
            serde_json::to_value(&expected.ticket),
            serde_json::to_value(&actual.ticket),
        ) {
            (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                parts.extend(
                    keys.into_iter()
                        .filter(|key| a.get(*key) != b.get(*key))
                        .map(|key| format!("ticket.{key}")),
                );
            }
            _ => parts.push("ticket".to_owned()),
        }
    }
    if expected.notes != actual.notes {
        parts.push("notes".to_owned());
    }
    let conflicts = |record: &TicketRecord| {
        let mut keyed: Vec<(RegionId, u64, String)> =
            record.conflicts.iter().map(conflict_key).collect();
        keyed.sort();
        keyed
    };
    if conflicts(expected) != conflicts(actual) {
        parts.push("conflicts".to_owned());
    }
    parts
}

fn conflict_key(conflict: &ConflictRecord) -> (RegionId, u64, String) {
    (
        conflict.origin_region.clone(),
        conflict.origin_seq,
        format!("{}/{:?}", conflict.stale_epoch, conflict.changes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_collapse_into_ranges() {
        assert_eq!(to_ranges([1, 2, 3, 5, 7, 8]), vec![1..=3, 5..=5, 7..=8]);
        assert_eq!(ranges(&to_ranges([1, 2, 3, 5])), "1..=3, 5");
        assert!(to_ranges([]).is_empty());
    }

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn update(origin: &str, seq: u64, ticket: TicketId, epoch: Epoch) -> EventEnvelope {
        EventEnvelope {
            origin_region: region(origin),
            origin_seq: seq,
            ticket_id: ticket,
            epoch,
            hlc_time: meridian_core::HlcTimestamp::new(1_000 + seq, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::TicketUpdated {
                changes: meridian_core::TicketChanges {
                    epoch,
                    ..Default::default()
                },
            },
        }
    }

    fn view(name: &str, logs: &[(&str, Vec<EventEnvelope>)]) -> RegionView {
        RegionView {
            region: region(name),
            logs: logs
                .iter()
                .map(|(origin, log)| (region(origin), log.clone()))
                .collect(),
            tickets: BTreeMap::new(),
        }
    }

    fn ticket_id(n: u8) -> TicketId {
        TicketId::new_v7(jiff::Timestamp::UNIX_EPOCH, [n; 10])
    }

    #[test]
    fn identical_views_are_clean_and_every_event_is_counted() {
        let t = ticket_id(1);
        let a = vec![
            update("a", 1, t, Epoch::initial(0)),
            update("a", 2, t, Epoch::initial(0)),
        ];
        let views = [view("a", &[("a", a.clone())]), view("b", &[("a", a)])];
        let mut report = check_views(&views);
        check_acked(
            &mut report,
            &views,
            &[Acked {
                origin: region("a"),
                seq: 2,
                ticket_id: t,
            }],
        );
        assert!(report.is_converged(), "{report}");
        assert_eq!(report.events_checked, 4);
        assert_eq!(report.acked_checked, 1);
    }

    #[test]
    fn an_epoch_written_by_two_regions_is_reported() {
        let t = ticket_id(2);
        let epoch = Epoch::initial(0);
        let a = vec![update("a", 1, t, epoch)];
        let b = vec![update("b", 1, t, epoch)];
        let views = [
            view("a", &[("a", a.clone()), ("b", b.clone())]),
            view("b", &[("a", a), ("b", b)]),
        ];
        let report = check_views(&views);
        assert!(
            report.problems.contains(&Divergence::EpochTwoWriters {
                ticket: t,
                epoch,
                regions: vec![region("a"), region("b")]
            }),
            "{report}"
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Divergence::EpochIndexShared { index: 0, .. })),
            "{report}"
        );
    }

    #[test]
    fn a_write_at_an_epoch_encoding_another_region_is_reported() {
        let t = ticket_id(6);
        let a = vec![update("a", 1, t, Epoch::initial(1))];
        let views = [view("a", &[("a", a.clone())]), view("b", &[("a", a)])];
        let mut report = check_views(&views);
        assert!(report.is_converged(), "{report}");
        check_owners(&mut report, &views, &[region("a"), region("b")]);
        assert_eq!(
            report.problems,
            vec![Divergence::EpochNotWriters {
                ticket: t,
                epoch: Epoch::initial(1),
                writer: region("a")
            }]
        );
    }

    #[test]
    fn a_note_from_another_region_at_the_owners_epoch_is_no_second_writer() {
        let t = ticket_id(5);
        let epoch = Epoch::initial(0);
        let mut note = update("b", 1, t, epoch);
        note.kind = EventKind::NoteAdded {
            note: meridian_core::Note {
                id: meridian_core::NoteId::new_v7(jiff::Timestamp::UNIX_EPOCH, [9; 10]),
                ticket_id: t,
                region: region("b"),
                author: "bo".into(),
                body: "seen it".into(),
                created_at: jiff::Timestamp::UNIX_EPOCH,
                auto: false,
                visibility: meridian_core::Visibility::Internal,
            },
        };
        let a = vec![update("a", 1, t, epoch)];
        let b = vec![note];
        let views = [
            view("a", &[("a", a.clone()), ("b", b.clone())]),
            view("b", &[("a", a), ("b", b)]),
        ];
        let report = check_views(&views);
        assert!(report.is_converged(), "{report}");
    }

    #[test]
    fn acknowledged_writes_missing_or_replaced_are_reported_per_region() {
        let t = ticket_id(3);
        let other = ticket_id(4);
        let a = vec![
            update("a", 1, t, Epoch::initial(0)),
            update("a", 2, other, Epoch::initial(0)),
        ];
        let views = [
            view("a", &[("a", a.clone())]),
            view("b", &[("a", a[..1].to_vec())]),
        ];
        let mut report = check_views(&views);
        let acked = [
            Acked {
                origin: region("a"),
                seq: 2,
                ticket_id: t,
            },
            Acked {
                origin: region("a"),
                seq: 3,
                ticket_id: t,
            },
        ];
        check_acked(&mut report, &views, &acked);
        assert!(report.problems.contains(&Divergence::Lost {
            store: region("b"),
            origin: region("a"),
            seqs: vec![2..=2]
        }));
        assert!(report.problems.contains(&Divergence::AckedElsewhere {
            store: region("a"),
            origin: region("a"),
            seq: 2,
            acked: t,
            found: other,
        }));
        assert!(report.problems.contains(&Divergence::AckedLost {
            store: region("b"),
            origin: region("a"),
            seqs: vec![2..=3],
        }));
    }
}
