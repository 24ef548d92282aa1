//! The convergence check: do stores that replicate with each other hold the
//! same logs and the same projections? The design's invariants 2 ("every
//! region holds every acknowledged event exactly once") and 3 ("all regions
//! converge to the same projection of every ticket"), as one call for
//! tests, the simulation and operators.
//!
//! Each origin's own store is the reference for its log: a replica must hold
//! exactly the same events, no fewer (lost), no more (unknown to the
//! origin), none twice, none different. Projections are compared ticket by
//! ticket against the first store that has the ticket.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use std::collections::HashMap;

use meridian_core::{EventEnvelope, EventKind, RegionId, TicketId, residency};
use meridian_store::{ConflictRecord, EVENTS_PAGE_MAX, LIST_LIMIT_MAX, Store, TicketFilter, TicketRecord};

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
    pub problems: Vec<Divergence>,
}

/// One way the stores disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The origin's own log is not dense from 1: a hole or a repeated number.
    NotDense { origin: RegionId, after_seq: u64, next_seq: u64 },
    /// `store` lacks these events of `origin`'s log.
    Lost { store: RegionId, origin: RegionId, seqs: Vec<RangeInclusive<u64>> },
    /// `store` holds events of `origin` that the origin's own log does not.
    Unknown { store: RegionId, origin: RegionId, seqs: Vec<RangeInclusive<u64>> },
    /// `store` holds an event of `origin` more than once.
    Duplicated { store: RegionId, origin: RegionId, seq: u64 },
    /// `store`'s copy of an event differs from the origin's.
    Differs { store: RegionId, origin: RegionId, seq: u64 },
    /// `store` has no projection of a ticket that another store has.
    TicketMissing { store: RegionId, ticket: TicketId },
    /// `store`'s projection of a ticket differs from `reference`'s in these
    /// parts (ticket fields by name, `notes`, `conflicts`).
    TicketDiffers { store: RegionId, reference: RegionId, ticket: TicketId, parts: Vec<String> },
}

impl ConvergenceReport {
    pub fn is_converged(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ConvergenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let heads: Vec<String> = self.heads.iter().map(|(origin, head)| format!("{origin}={head}")).collect();
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
            Divergence::NotDense { origin, after_seq, next_seq } => {
                write!(f, "{origin}'s own log is not dense: {next_seq} follows {after_seq}")
            }
            Divergence::Lost { store, origin, seqs } => write!(f, "{store} lost {origin} events {}", ranges(seqs)),
            Divergence::Unknown { store, origin, seqs } => {
                write!(f, "{store} holds {origin} events {} that {origin} does not", ranges(seqs))
            }
            Divergence::Duplicated { store, origin, seq } => write!(f, "{store} holds {origin} event {seq} twice"),
            Divergence::Differs { store, origin, seq } => {
                write!(f, "{store}'s copy of {origin} event {seq} differs from {origin}'s")
            }
            Divergence::TicketMissing { store, ticket } => write!(f, "{store} has no ticket {ticket}"),
            Divergence::TicketDiffers { store, reference, ticket, parts } => {
                write!(f, "{store}'s ticket {ticket} differs from {reference}'s in {}", parts.join(", "))
            }
        }
    }
}

fn ranges(seqs: &[RangeInclusive<u64>]) -> String {
    seqs.iter()
        .map(|r| if r.start() == r.end() { r.start().to_string() } else { format!("{}..={}", r.start(), r.end()) })
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

/// Compares the logs of every origin and the projection of every ticket
/// across `stores` (one per region; each region's own store is the
/// reference for its log). Reads everything: meant for tests, the
/// simulation and occasional audits, not for a hot path.
pub async fn check_convergence(stores: &[Store]) -> Result<ConvergenceReport> {
    let mut report = ConvergenceReport::default();
    let origins: BTreeSet<RegionId> = stores.iter().map(|store| store.local_region().clone()).collect();
    for origin in &origins {
        let Some(reference) = stores.iter().find(|store| store.local_region() == origin) else { continue };
        let own = read_log(reference, origin).await?;
        report.events_checked += own.len();
        report.heads.insert(origin.clone(), own.last().map_or(0, |event| event.origin_seq));
        let mut previous = 0;
        for event in &own {
            if event.origin_seq != previous + 1 {
                report.problems.push(Divergence::NotDense {
                    origin: origin.clone(),
                    after_seq: previous,
                    next_seq: event.origin_seq,
                });
            }
            previous = event.origin_seq;
        }
        let residencies = log_residencies(reference, &own).await?;
        let own: BTreeMap<u64, &EventEnvelope> = own.iter().map(|event| (event.origin_seq, event)).collect();
        for replica in stores.iter().filter(|store| store.local_region() != origin) {
            let copy = read_log(replica, origin).await?;
            report.events_checked += copy.len();
            compare_log(&mut report, replica.local_region(), origin, &own, &copy, &residencies);
        }
    }
    compare_tickets(&mut report, stores).await?;
    Ok(report)
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
            Some(original) if !same_event(original, event, store, residencies) => report.problems.push(Divergence::Differs {
                store: store.clone(),
                origin: origin.clone(),
                seq: event.origin_seq,
            }),
            Some(_) => {}
        }
    }
    let lost: Vec<u64> = own.keys().copied().filter(|seq| !seen.contains(seq)).collect();
    if !lost.is_empty() {
        report.problems.push(Divergence::Lost { store: store.clone(), origin: origin.clone(), seqs: to_ranges(lost) });
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
async fn log_residencies(reference: &Store, log: &[EventEnvelope]) -> Result<Residencies> {
    let ids: BTreeSet<TicketId> = log.iter().filter_map(|event| residency::residency_ticket(&event.kind)).collect();
    Ok(reference.residencies(&ids.into_iter().collect::<Vec<_>>()).await?)
}

/// Whether `copy`, held by `store`, is what `store` must hold of the
/// origin's `original`: the event itself in a region that may hold its
/// ticket's text, its redacted form (residency) anywhere else. A
/// redacted copy inside the set, or the text outside it, differs.
fn same_event(original: &EventEnvelope, copy: &EventEnvelope, store: &RegionId, residencies: &Residencies) -> bool {
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
        let Some(last) = page.last() else { return Ok(log) };
        after = last.origin_seq;
        log.extend(page);
    }
}

async fn ticket_ids(store: &Store) -> Result<Vec<TicketId>> {
    let mut ids = Vec::new();
    let mut filter = TicketFilter { limit: LIST_LIMIT_MAX, ..TicketFilter::default() };
    loop {
        let page = store.list_tickets(&filter).await?;
        ids.extend(page.tickets.iter().map(|ticket| ticket.id));
        match page.next_after {
            Some(after) => filter.after = Some(after),
            None => return Ok(ids),
        }
    }
}

async fn compare_tickets(report: &mut ConvergenceReport, stores: &[Store]) -> Result<()> {
    let mut ids = BTreeSet::new();
    for store in stores {
        ids.extend(ticket_ids(store).await?);
    }
    report.tickets_checked = ids.len();
    for id in ids {
        let mut records = Vec::with_capacity(stores.len());
        for store in stores {
            let region = store.local_region();
            match store.get_ticket(id).await? {
                Some(record) => records.push((region, record)),
                None => report.problems.push(Divergence::TicketMissing { store: region.clone(), ticket: id }),
            }
        }
        // Residency: the reference is a region that may hold the text.
        if let Some(first) = records.iter().position(|(region, record)| residency::may_hold(&record.ticket.residency, region)) {
            records[..=first].rotate_right(1);
        }
        let mut reference: Option<(&RegionId, TicketRecord)> = None;
        for (region, record) in records {
            match &reference {
                None => reference = Some((region, record)),
                Some((reference_region, expected)) => {
                    let parts = differing_parts(&expected_here(expected, region), &record);
                    if !parts.is_empty() {
                        report.problems.push(Divergence::TicketDiffers {
                            store: region.clone(),
                            reference: (*reference_region).clone(),
                            ticket: id,
                            parts,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// What `region` must hold of a ticket whose full projection is `full`:
/// all of it inside the ticket's residency, the redacted ticket and notes
/// outside it.
fn expected_here<'a>(full: &'a TicketRecord, region: &RegionId) -> std::borrow::Cow<'a, TicketRecord> {
    if residency::may_hold(&full.ticket.residency, region) {
        return std::borrow::Cow::Borrowed(full);
    }
    std::borrow::Cow::Owned(TicketRecord {
        ticket: full.ticket.redacted(),
        notes: full.notes.iter().map(meridian_core::Note::redacted).collect(),
        conflicts: full.conflicts.clone(),
    })
}

/// The parts of two projections of one ticket that differ. A conflict's
/// `recorded_at` is when it arrived in that region, so it is not compared,
/// nor is the ticket's epoch when it arrived (which depends on arrival
/// order), nor the order conflicts were recorded in.
fn differing_parts(expected: &TicketRecord, actual: &TicketRecord) -> Vec<String> {
    let mut parts = Vec::new();
    if expected.ticket != actual.ticket {
        match (serde_json::to_value(&expected.ticket), serde_json::to_value(&actual.ticket)) {
            (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                parts.extend(keys.into_iter().filter(|key| a.get(*key) != b.get(*key)).map(|key| format!("ticket.{key}")));
            }
            _ => parts.push("ticket".to_owned()),
        }
    }
    if expected.notes != actual.notes {
        parts.push("notes".to_owned());
    }
    let conflicts = |record: &TicketRecord| {
        let mut keyed: Vec<(RegionId, u64, String)> = record.conflicts.iter().map(conflict_key).collect();
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
}
