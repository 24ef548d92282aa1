//! The values the coordinator hands out.

use std::{collections::BTreeMap, fmt, time::Duration};

use jiff::Timestamp;
use meridian_core::RegionId;
use serde::{Deserialize, Serialize};

/// A store revision: etcd's cluster-wide counter, raised by one for every
/// write transaction (the local coordinator keeps one by the same rule).
/// Takeover fencing tokens are revisions, so a later takeover always carries
/// a greater token.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(u64);

impl Revision {
    /// Before any write.
    pub const ZERO: Revision = Revision(0);

    pub const fn new(revision: u64) -> Self {
        Revision(revision)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// etcd's signed representation; revisions never exceed `i64::MAX`.
    pub(crate) fn from_etcd(revision: i64) -> Self {
        Revision(u64::try_from(revision).unwrap_or(0))
    }

    pub(crate) fn to_etcd(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease's id in the coordination store, shown in hex as etcd does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A live lease as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLease {
    pub lease_id: LeaseId,
    /// The granted time-to-live.
    pub ttl: Duration,
}

/// The record that `failed_region`'s tickets are taken over: by
/// `successor`, the primary, and, for tickets whose residency excludes it,
/// by the first region of `also` that may hold them. [`Takeover::successors`]
/// is the whole list in preference order; each ticket's taker is the first
/// region of it that the ticket may be held in, so the takers are disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub failed_region: RegionId,
    /// The primary successor: the router's first choice.
    pub successor: RegionId,
    /// The other live regions, in the router's preference order after the
    /// primary; empty in records written before pinned tickets failed over
    /// (and in takeovers made by hand).
    pub also: Vec<RegionId>,
    /// The revision of the write that recorded the takeover.
    pub fencing_token: Revision,
    /// When the coordinator recorded it (its clock; informational only).
    pub recorded_at: Timestamp,
}

impl Takeover {
    /// Every successor, the primary first, in preference order.
    pub fn successors(&self) -> impl Iterator<Item = &RegionId> {
        std::iter::once(&self.successor).chain(self.also.iter())
    }

    /// Whether `region` is one of the successors.
    pub fn names(&self, region: &RegionId) -> bool {
        self.successors().any(|successor| successor == region)
    }

    /// The successor that takes a ticket: the first one `may_hold` accepts.
    /// `None` when no successor may hold it (it stays with its failed owner).
    pub fn taker(&self, mut may_hold: impl FnMut(&RegionId) -> bool) -> Option<&RegionId> {
        self.successors().find(|region| may_hold(region))
    }
}

/// One region as the coordination store sees it at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: RegionId,
    /// `Some` while the region holds a live lease.
    pub lease: Option<LiveLease>,
    /// A takeover of this region that awaits the region's acknowledgement.
    pub takeover: Option<Takeover>,
    /// The fencing token of the last takeover the region acknowledged.
    pub acknowledged: Option<Revision>,
    /// The store revision this status reflects: pass it to
    /// [`crate::Coordinator::record_takeover`] as the expected revision.
    pub revision: Revision,
}

impl RegionStatus {
    pub(crate) fn empty(region: RegionId, revision: Revision) -> Self {
        RegionStatus {
            region,
            lease: None,
            takeover: None,
            acknowledged: None,
            revision,
        }
    }

    /// Whether the region holds a live lease.
    pub fn is_live(&self) -> bool {
        self.lease.is_some()
    }
}

/// Every region the coordinator has seen, at one store revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionView {
    pub regions: BTreeMap<RegionId, RegionStatus>,
    /// The store revision the whole view reflects.
    pub revision: Revision,
    /// `false` while the watch on the store is broken and being re-established:
    /// the view may be stale, so decide nothing on it.
    pub connected: bool,
}

impl RegionView {
    /// The status of `region`; a region never seen holds no lease.
    pub fn status(&self, region: &RegionId) -> RegionStatus {
        self.regions
            .get(region)
            .cloned()
            .unwrap_or_else(|| RegionStatus::empty(region.clone(), self.revision))
    }

    /// The regions that hold live leases.
    pub fn live_regions(&self) -> impl Iterator<Item = &RegionId> {
        self.regions
            .values()
            .filter(|status| status.is_live())
            .map(|status| &status.region)
    }

    /// Sets every region's revision to the view's, after a change.
    pub(crate) fn stamp(&mut self, revision: Revision) {
        self.revision = revision;
        for status in self.regions.values_mut() {
            status.revision = revision;
        }
    }
}
