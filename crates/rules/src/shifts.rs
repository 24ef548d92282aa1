//! Which regions are on shift at an instant, which are in their overlap
//! window, and when the next shift change happens.
//!
//! The overlap window is the `overlap_minutes` before a region's shift
//! starts: the incoming region is already staffed for the handover and may
//! take new tickets, while the outgoing region (still on shift, in its last
//! `overlap_minutes`) prepares its handoffs.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use meridian_core::RegionId;
use serde::Serialize;

use crate::model::{Region, Rules};
use crate::route::{RegionHealth, RouteRequest};
use crate::schedule::Open;

/// How far ahead "the next shift" is looked for. A region with no shift in
/// the next two weeks (a long closure) counts as having none.
pub(crate) const LOOKAHEAD: SignedDuration = SignedDuration::from_hours(14 * 24);

/// Where a region stands relative to its shifts at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftPosition {
    /// Inside a shift.
    OnShift,
    /// Within `overlap_minutes` before a shift starts.
    Overlap,
    OffShift,
}

impl ShiftPosition {
    pub fn as_str(self) -> &'static str {
        match self {
            ShiftPosition::OnShift => "on_shift",
            ShiftPosition::Overlap => "overlap",
            ShiftPosition::OffShift => "off_shift",
        }
    }
}

/// A region's shift situation at an instant; cheap to compute (a few zone
/// lookups), used by the router for every region on every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShiftState {
    pub position: ShiftPosition,
    /// The current shift stretch (on shift) or the upcoming one (overlap or
    /// off shift, if one starts within the lookahead).
    pub stretch: Option<Open>,
    /// When the region's continuous on-shift time (shifts that follow each
    /// other with no break) ends; `None` when off shift.
    pub covered_until: Option<Timestamp>,
}

impl Region {
    pub(crate) fn shift_state(&self, at: Timestamp, overlap: SignedDuration) -> ShiftState {
        let until = at.checked_add(LOOKAHEAD).unwrap_or(Timestamp::MAX);
        let mut iter = self.schedule.open_from(at, until);
        let Some(first) = iter.next() else {
            return ShiftState {
                position: ShiftPosition::OffShift,
                stretch: None,
                covered_until: None,
            };
        };
        if first.start <= at {
            // Follow shifts that start exactly when this one ends, as far as
            // the lookahead: a rotation of short back-to-back slots (72
            // twenty-minute slots a day, say) is one stretch of coverage,
            // and stopping after a few slots would report it handing off
            // hours early.
            let mut covered_until = first.end;
            for next in iter {
                if next.start > covered_until {
                    break;
                }
                covered_until = covered_until.max(next.end);
            }
            return ShiftState {
                position: ShiftPosition::OnShift,
                stretch: Some(first),
                covered_until: Some(covered_until),
            };
        }
        let wait = first.start.duration_since(at);
        let position = if wait <= overlap && !overlap.is_zero() {
            ShiftPosition::Overlap
        } else {
            ShiftPosition::OffShift
        };
        ShiftState {
            position,
            stretch: Some(first),
            covered_until: None,
        }
    }
}

/// A region's shift as reported by [`Rules::active_at`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveShift {
    pub region: String,
    pub position: ShiftPosition,
    pub shift: String,
    pub queue_owner: String,
    pub time_zone: String,
    /// The shift's window as scheduled, before holidays cut it.
    pub start: Timestamp,
    pub end: Timestamp,
    /// The window in the region's wall-clock time, with offsets.
    pub start_local: String,
    pub end_local: String,
    /// When this stretch of on-shift time actually ends (a partial holiday
    /// may end it early); for `overlap`, when the shift really starts.
    pub effective_start: Timestamp,
    pub effective_end: Timestamp,
    /// True in the last `overlap_minutes` of a shift, when the region hands
    /// its tickets over.
    pub handing_off: bool,
}

/// The next moment some region's shift starts or ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShiftChange {
    pub at: Timestamp,
    pub region: String,
    pub kind: ShiftChangeKind,
    pub shift: String,
    pub queue_owner: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftChangeKind {
    Start,
    End,
}

fn local(region: &Region, at: Timestamp) -> String {
    at.display_with_offset(region.time_zone.to_offset(at))
        .to_string()
}

impl Rules {
    /// Regions on shift or in their overlap window at `at`, in file order.
    pub fn active_at(&self, at: Timestamp) -> Vec<ActiveShift> {
        let mut out = Vec::new();
        for region in &self.regions {
            let state = region.shift_state(at, self.overlap);
            let Some(open) = state.stretch else { continue };
            if state.position == ShiftPosition::OffShift {
                continue;
            }
            let shift = region.shift_of(open.label);
            let handing_off = state.position == ShiftPosition::OnShift
                && !self.overlap.is_zero()
                && state
                    .covered_until
                    .is_some_and(|end| end.duration_since(at) <= self.overlap);
            out.push(ActiveShift {
                region: region.id.to_string(),
                position: state.position,
                shift: shift.map(|s| s.name.clone()).unwrap_or_default(),
                queue_owner: shift.map(|s| s.queue_owner.clone()).unwrap_or_default(),
                time_zone: region.time_zone_name.clone(),
                start: open.nominal_start,
                end: open.nominal_end,
                start_local: local(region, open.nominal_start),
                end_local: local(region, open.nominal_end),
                effective_start: open.start,
                effective_end: open.end,
                handing_off,
            });
        }
        out
    }

    /// Who owns `region`'s queue at `at`: the `queue_owner` of the shift it
    /// is on; off shift (intake after hours, or a region covering for a
    /// failed one), the queue owner wherever new tickets go at `at`. `None`
    /// for an unknown region, or when no region anywhere is on shift.
    pub fn queue_owner_at(&self, region: &str, at: Timestamp) -> Option<String> {
        let region = self.region(region)?;
        if let Some(open) = region.schedule.open_at(at) {
            return region.shift_of(open.label).map(|s| s.queue_owner.clone());
        }
        // Every region counted up and idle: only the shifts matter (a region
        // with no health report would be filtered out).
        let health: HashMap<RegionId, RegionHealth> = self
            .regions
            .iter()
            .map(|r| (r.id.clone(), RegionHealth::Up))
            .collect();
        let decision = self.decide(at, &health, &HashMap::new(), &RouteRequest::default());
        decision.queue_owner.map(str::to_owned)
    }

    /// Is `region` on shift at `at`? `None` for an unknown region.
    pub fn on_shift(&self, region: &str, at: Timestamp) -> Option<bool> {
        let region = self.region(region)?;
        Some(region.schedule.open_at(at).is_some())
    }

    /// The first shift start or end strictly after `after`, over all regions
    /// (the earliest; ties go to the region first in the file, starts before
    /// ends). `None` if nothing changes within two weeks.
    pub fn next_shift_change(&self, after: Timestamp) -> Option<ShiftChange> {
        let mut best: Option<ShiftChange> = None;
        for region in &self.regions {
            if let Some(change) = self.next_change_of(region, after)
                && best
                    .as_ref()
                    .is_none_or(|b| (change.at, change.kind as u8) < (b.at, b.kind as u8))
            {
                best = Some(change);
            }
        }
        best
    }

    /// The first start or end of `region`'s on-shift time strictly after
    /// `after`. Shifts that meet (one ends as the next starts) change owner
    /// at the boundary, and that counts as a change.
    pub fn next_change_of(&self, region: &Region, after: Timestamp) -> Option<ShiftChange> {
        let until = after.checked_add(LOOKAHEAD).unwrap_or(Timestamp::MAX);
        for open in region.schedule.open_from(after, until) {
            let (at, kind) = if open.start > after {
                (open.start, ShiftChangeKind::Start)
            } else if open.end > after {
                (open.end, ShiftChangeKind::End)
            } else {
                continue;
            };
            let shift = region.shift_of(open.label);
            return Some(ShiftChange {
                at,
                region: region.id.to_string(),
                kind,
                shift: shift.map(|s| s.name.clone()).unwrap_or_default(),
                queue_owner: shift.map(|s| s.queue_owner.clone()).unwrap_or_default(),
            });
        }
        None
    }

    /// The on-shift stretches of `region` that overlap `[from, until)`, as
    /// `(start, end, shift name)`; for reports and tests.
    pub fn shift_windows(
        &self,
        region: &Region,
        from: Timestamp,
        until: Timestamp,
    ) -> Vec<(Timestamp, Timestamp, String)> {
        region
            .schedule
            .open_from(from, until)
            .map(|o| {
                let name = region
                    .shift_of(o.label)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                (o.start, o.end, name)
            })
            .collect()
    }
}
