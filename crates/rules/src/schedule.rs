//! Weekly wall-clock hours in a time zone, minus holidays, turned into
//! instants.
//!
//! A [`Schedule`] is the engine under both shifts and business calendars.
//! Hours are wall-clock times in the schedule's zone, so a 09:00–17:00 shift
//! stays 09:00–17:00 local across daylight-saving changes. Every wall-clock
//! boundary (a shift's start or end, a holiday's start or end) is resolved to
//! an instant by one rule, [`resolve`]:
//!
//! * **Gap** (the clock jumps forward and the wall time never happens): the
//!   boundary is the first valid instant after the gap, which is the
//!   transition itself. A 02:30 start on the day New York skips 02:00–03:00
//!   starts at 03:00 EDT.
//! * **Fold** (the clock goes back and the wall time happens twice): the
//!   boundary is the *first* occurrence. A shift ending at 01:30 on the day
//!   New York repeats 01:00–02:00 ends at 01:30 EDT, and the shift that starts
//!   at 01:30 starts at that same instant.
//!
//! Because one monotone rule resolves every boundary, two shifts that meet on
//! the wall clock also meet as instants: a DST change never opens a gap or an
//! overlap between consecutive shifts. A shift that crosses a transition is an
//! hour shorter or longer in real time, as it is for the people working it.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

pub(crate) const MINUTES_PER_DAY: u32 = 24 * 60;

/// One weekly interval, as it starts on some weekday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayInterval {
    /// Minutes after local midnight, below [`MINUTES_PER_DAY`].
    pub start_min: u32,
    /// Minutes after the same midnight; above `MINUTES_PER_DAY` when the
    /// interval crosses midnight. Always greater than `start_min`, and at
    /// most one day after it.
    pub end_min: u32,
    /// What the interval belongs to (a shift index), reported with it.
    pub label: u32,
}

/// A holiday or other closure, as a half-open wall-clock range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CivilRange {
    pub start: DateTime,
    pub end: DateTime,
}

/// Weekly hours in a zone, minus closures.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub tz: TimeZone,
    /// Intervals by the weekday they start on (Monday first), sorted by start.
    days: [Vec<DayInterval>; 7],
    /// Sorted and merged: no two ranges overlap or touch.
    closures: Vec<CivilRange>,
    /// Extra open time, sorted by start; closures do not cut it.
    openings: Vec<(CivilRange, u32)>,
}

/// One stretch of open time, already cut by closures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    pub start: Timestamp,
    pub end: Timestamp,
    pub label: u32,
    /// The interval's nominal window before closures cut it: what a person
    /// calls "the 09:00–17:00 shift".
    pub nominal_start: Timestamp,
    pub nominal_end: Timestamp,
}

impl Schedule {
    pub(crate) fn new(
        tz: TimeZone,
        mut days: [Vec<DayInterval>; 7],
        mut closures: Vec<CivilRange>,
        mut openings: Vec<(CivilRange, u32)>,
    ) -> Self {
        openings.retain(|(c, _)| c.start < c.end);
        openings.sort_by_key(|(c, label)| (c.start, c.end, *label));
        for day in &mut days {
            day.sort_by_key(|i| (i.start_min, i.end_min));
        }
        closures.retain(|c| c.start < c.end);
        closures.sort();
        let mut merged: Vec<CivilRange> = Vec::with_capacity(closures.len());
        for c in closures {
            match merged.last_mut() {
                Some(last) if c.start <= last.end => last.end = last.end.max(c.end),
                _ => merged.push(c),
            }
        }
        Self {
            tz,
            days,
            closures: merged,
            openings,
        }
    }

    /// The open stretches that end after `from`, in order, up to the ones that
    /// start before `until`.
    pub(crate) fn open_from(&self, from: Timestamp, until: Timestamp) -> OpenIter<'_> {
        let local = self.tz.to_datetime(from);
        let until_date = self.tz.to_datetime(until).date();
        // An interval starts at most one day before it ends, so anything that
        // still runs at `from` started on the previous local day or later.
        // One more day of margin covers a fold that moved `from`'s local date.
        let first = local
            .date()
            .yesterday()
            .and_then(|d| d.yesterday())
            .unwrap_or(local.date());
        let weekly = WeeklyIter {
            schedule: self,
            from,
            local_from: local,
            until,
            until_date,
            date: first,
            index: 0,
            current: None,
            done: false,
        };
        // Openings are at most a day long: any still open at `from` starts
        // on or after the day before `from`'s local date (two for a fold).
        let first_start = first.at(0, 0, 0, 0);
        let extra = self
            .openings
            .partition_point(|(c, _)| c.start < first_start);
        OpenIter {
            weekly: weekly.peekable(),
            schedule: self,
            extra,
            from,
            until,
            covered_until: None,
        }
    }

    /// Is the schedule open at `at`? Returns the stretch containing it.
    pub(crate) fn open_at(&self, at: Timestamp) -> Option<Open> {
        let until = at
            .checked_add(SignedDuration::from_hours(48))
            .unwrap_or(Timestamp::MAX);
        self.open_from(at, until).next().filter(|o| o.start <= at)
    }
}

/// Resolves a wall-clock time in `tz` to an instant: a time in a gap becomes
/// the first instant after the gap, a time in a fold its first occurrence.
/// `None` only at the edges of the representable range.
pub(crate) fn resolve(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, the wall time names an instant just
            // before the transition; the transition after it ends the gap.
            let probe = after.to_timestamp(dt).ok()?;
            tz.following(probe).next().map(|t| t.timestamp())
        }
    }
}

/// The wall-clock time `minutes` after midnight of `date` (may spill into
/// the next days).
pub(crate) fn civil_at(date: Date, minutes: u32) -> Option<DateTime> {
    let mut date = date;
    for _ in 0..minutes / MINUTES_PER_DAY {
        date = date.tomorrow().ok()?;
    }
    let rest = minutes % MINUTES_PER_DAY;
    // Both values are bounded (hour < 24, minute < 60), so the casts are exact.
    Some(date.at((rest / 60) as i8, (rest % 60) as i8, 0, 0))
}

pub(crate) fn weekday_index(w: Weekday) -> usize {
    // Monday is 0 and Sunday is 6; always in range.
    w.to_monday_zero_offset().clamp(0, 6) as usize
}

/// An interval instance being cut by closures.
#[derive(Debug, Clone, Copy)]
struct Instance {
    civil_end: DateTime,
    end: Timestamp,
    nominal_start: Timestamp,
    label: u32,
    /// Where the next piece starts.
    cursor: Timestamp,
    /// The next closure that may cut this instance.
    closure: usize,
}

/// Iterator over a schedule's open stretches, weekly hours and extra
/// openings merged in order without overlap; see [`Schedule::open_from`].
pub(crate) struct OpenIter<'s> {
    weekly: std::iter::Peekable<WeeklyIter<'s>>,
    schedule: &'s Schedule,
    /// The next opening to look at.
    extra: usize,
    from: Timestamp,
    until: Timestamp,
    /// Everything before this instant has been yielded already.
    covered_until: Option<Timestamp>,
}

impl OpenIter<'_> {
    /// The next extra opening that ends after `from`, resolved.
    fn peek_extra(&mut self) -> Option<Open> {
        let tz = &self.schedule.tz;
        while let Some((range, label)) = self.schedule.openings.get(self.extra) {
            let start = resolve(tz, range.start)?;
            let end = resolve(tz, range.end)?;
            if end <= self.from || start >= end {
                self.extra += 1;
                continue;
            }
            if start >= self.until {
                return None;
            }
            return Some(Open {
                start,
                end,
                label: *label,
                nominal_start: start,
                nominal_end: end,
            });
        }
        None
    }
}

impl Iterator for OpenIter<'_> {
    type Item = Open;

    fn next(&mut self) -> Option<Open> {
        loop {
            let extra = self.peek_extra();
            let weekly = self.weekly.peek().copied();
            let mut next = match (weekly, extra) {
                (None, None) => return None,
                (Some(w), Some(e)) if e.start < w.start => {
                    self.extra += 1;
                    e
                }
                (Some(w), _) => {
                    self.weekly.next();
                    w
                }
                (None, Some(e)) => {
                    self.extra += 1;
                    e
                }
            };
            if let Some(covered) = self.covered_until {
                next.start = next.start.max(covered);
            }
            if next.start < next.end {
                self.covered_until = Some(next.end);
                return Some(next);
            }
        }
    }
}

/// The weekly hours minus closures.
struct WeeklyIter<'s> {
    schedule: &'s Schedule,
    from: Timestamp,
    local_from: DateTime,
    until: Timestamp,
    until_date: Date,
    date: Date,
    index: usize,
    current: Option<Instance>,
    done: bool,
}

impl WeeklyIter<'_> {
    /// The next piece of the current instance, skipping closures.
    fn next_piece(&mut self) -> Option<Open> {
        let closures = &self.schedule.closures;
        let tz = &self.schedule.tz;
        let inst = self.current.as_mut()?;
        while inst.cursor < inst.end {
            let Some(closure) = closures
                .get(inst.closure)
                .filter(|c| c.start < inst.civil_end)
            else {
                let piece = Open {
                    start: inst.cursor,
                    end: inst.end,
                    label: inst.label,
                    nominal_start: inst.nominal_start,
                    nominal_end: inst.end,
                };
                inst.cursor = inst.end;
                return Some(piece);
            };
            let closed_from = resolve(tz, closure.start).unwrap_or(Timestamp::MIN);
            let closed_until = resolve(tz, closure.end).unwrap_or(Timestamp::MAX);
            inst.closure += 1;
            if closed_from > inst.cursor {
                let piece = Open {
                    start: inst.cursor,
                    end: closed_from.min(inst.end),
                    label: inst.label,
                    nominal_start: inst.nominal_start,
                    nominal_end: inst.end,
                };
                inst.cursor = closed_until.max(inst.cursor);
                return Some(piece);
            }
            inst.cursor = closed_until.max(inst.cursor);
        }
        None
    }

    /// Moves to the next interval instance that ends after `from`.
    fn next_instance(&mut self) -> Option<Instance> {
        let schedule = self.schedule;
        loop {
            if self.date > self.until_date {
                return None;
            }
            let day = &schedule.days[weekday_index(self.date.weekday())];
            let Some(interval) = day.get(self.index) else {
                self.date = self.date.tomorrow().ok()?;
                self.index = 0;
                continue;
            };
            self.index += 1;
            let civil_start = civil_at(self.date, interval.start_min)?;
            let civil_end = civil_at(self.date, interval.end_min)?;
            // Cheap pre-check on the wall clock before any zone lookup: an
            // instance that ended more than a day before `from` (far beyond
            // any DST shift) cannot matter.
            if civil_end < self.local_from
                && self.local_from.date() > civil_end.date().tomorrow().ok()?
            {
                continue;
            }
            let end = resolve(&schedule.tz, civil_end)?;
            if end <= self.from {
                continue;
            }
            let start = resolve(&schedule.tz, civil_start)?;
            if start >= self.until {
                self.done = true;
                return None;
            }
            if start >= end {
                // The whole interval fell into a DST gap: it never happens.
                continue;
            }
            let closure = schedule.closures.partition_point(|c| c.end <= civil_start);
            return Some(Instance {
                civil_end,
                end,
                nominal_start: start,
                label: interval.label,
                cursor: start,
                closure,
            });
        }
    }
}

impl Iterator for WeeklyIter<'_> {
    type Item = Open;

    fn next(&mut self) -> Option<Open> {
        while !self.done {
            if let Some(piece) = self.next_piece() {
                if piece.end <= self.from {
                    continue;
                }
                if piece.start >= self.until {
                    self.done = true;
                    return None;
                }
                return Some(piece);
            }
            match self.next_instance() {
                Some(inst) => self.current = Some(inst),
                None => {
                    self.done = true;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ny() -> TimeZone {
        jiff::tz::TimeZoneDatabase::bundled()
            .get("America/New_York")
            .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn gap_resolves_to_the_transition_and_fold_to_first_occurrence() {
        let tz = ny();
        assert_eq!(
            resolve(&tz, date(2026, 3, 8).at(2, 30, 0, 0)),
            Some(ts("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            resolve(&tz, date(2026, 11, 1).at(1, 30, 0, 0)),
            Some(ts("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            resolve(&tz, date(2026, 7, 1).at(9, 0, 0, 0)),
            Some(ts("2026-07-01T13:00:00Z"))
        );
    }

    #[test]
    fn closures_cut_instances_and_crossing_midnight_works() {
        let tz = ny();
        let mut days: [Vec<DayInterval>; 7] = Default::default();
        // Friday 22:00 to Saturday 06:00.
        days[4].push(DayInterval {
            start_min: 22 * 60,
            end_min: 30 * 60,
            label: 7,
        });
        let closure = CivilRange {
            start: date(2026, 7, 4).at(0, 0, 0, 0),
            end: date(2026, 7, 4).at(2, 0, 0, 0),
        };
        let s = Schedule::new(tz, days, vec![closure], Vec::new());
        let got: Vec<_> = s
            .open_from(ts("2026-07-03T00:00:00Z"), ts("2026-07-06T00:00:00Z"))
            .map(|o| (o.start.to_string(), o.end.to_string(), o.label))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "2026-07-04T02:00:00Z".into(),
                    "2026-07-04T04:00:00Z".into(),
                    7
                ),
                (
                    "2026-07-04T06:00:00Z".into(),
                    "2026-07-04T10:00:00Z".into(),
                    7
                ),
            ]
        );
    }
}
