//! Business time: how much of a calendar's open time lies between two
//! instants, and the instant at which a number of business minutes have
//! passed (an SLA deadline), with pauses.
//!
//! Both walk open intervals one at a time (never minute by minute), so a
//! deadline costs a few zone lookups per open interval it crosses.

use std::iter::Peekable;

use jiff::{SignedDuration, Timestamp};

use crate::error::{Result, TimeError};
use crate::model::{Calendar, CalendarKind, Metric, Rules};
use crate::schedule::{OpenIter, Schedule};

/// How far ahead a deadline is searched for. A calendar with no open time in
/// ten years is a mistake (no hours, or every day a holiday), reported as
/// [`TimeError::NoBusinessTime`]; one with too little for the target as
/// [`TimeError::BeyondHorizon`].
pub const DEADLINE_HORIZON_DAYS: u32 = 3660;

/// Intervals during which an SLA clock is stopped, as `[from, until)`.
/// Sorted and merged on construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pauses {
    spans: Vec<(Timestamp, Timestamp)>,
}

impl Pauses {
    pub fn none() -> Self {
        Self::default()
    }

    /// Sorts and merges the intervals. An interval that ends before it starts
    /// is refused; an empty one is dropped.
    pub fn new(spans: impl IntoIterator<Item = (Timestamp, Timestamp)>) -> Result<Self> {
        let mut list = Vec::new();
        for (index, (from, until)) in spans.into_iter().enumerate() {
            if until < from {
                return Err(TimeError::InvertedPause { index, from, until });
            }
            if until > from {
                list.push((from, until));
            }
        }
        list.sort();
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(list.len());
        for (from, until) in list {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(until),
                _ => merged.push((from, until)),
            }
        }
        Ok(Self { spans: merged })
    }

    pub fn spans(&self) -> &[(Timestamp, Timestamp)] {
        &self.spans
    }

    fn last_end(&self) -> Option<Timestamp> {
        self.spans.last().map(|p| p.1)
    }
}

/// Open stretches of a union of schedules, in order and without overlap.
/// Touching stretches are not merged: a calendar open round the clock would
/// otherwise have to walk to the end of the horizon before yielding anything.
struct UnionIter<'s> {
    parts: Vec<Peekable<OpenIter<'s>>>,
    /// Everything before this instant has been yielded already.
    covered_until: Option<Timestamp>,
}

impl Iterator for UnionIter<'_> {
    type Item = (Timestamp, Timestamp);

    fn next(&mut self) -> Option<(Timestamp, Timestamp)> {
        loop {
            let (index, start, end) = self
                .parts
                .iter_mut()
                .enumerate()
                .filter_map(|(i, p)| p.peek().map(|o| (i, o.start, o.end)))
                .min_by_key(|&(i, start, _)| (start, i))?;
            self.parts[index].next();
            let start = self.covered_until.map_or(start, |c| start.max(c));
            if start < end {
                self.covered_until = Some(end);
                return Some((start, end));
            }
        }
    }
}

/// A calendar's open stretches from `from` on, with pauses cut out, clamped
/// to start no earlier than `from`.
struct Running<'c> {
    open: Box<dyn Iterator<Item = (Timestamp, Timestamp)> + 'c>,
    pauses: &'c [(Timestamp, Timestamp)],
    pause: usize,
    pending: Option<(Timestamp, Timestamp)>,
    from: Timestamp,
}

impl Iterator for Running<'_> {
    type Item = (Timestamp, Timestamp);

    fn next(&mut self) -> Option<(Timestamp, Timestamp)> {
        loop {
            let (mut start, end) = match self.pending.take() {
                Some(p) => p,
                None => self.open.next()?,
            };
            start = start.max(self.from);
            if start >= end {
                continue;
            }
            // Skip pauses that ended before this stretch.
            while self.pauses.get(self.pause).is_some_and(|p| p.1 <= start) {
                self.pause += 1;
            }
            match self.pauses.get(self.pause) {
                Some(&(p_from, p_until)) if p_from < end => {
                    if p_from > start {
                        // Open time before the pause; the rest comes back later.
                        if p_until < end {
                            self.pending = Some((p_until, end));
                        }
                        return Some((start, p_from));
                    }
                    if p_until < end {
                        self.pending = Some((p_until, end));
                    }
                }
                _ => return Some((start, end)),
            }
        }
    }
}

impl Calendar {
    fn open_from<'c>(
        &'c self,
        from: Timestamp,
        until: Timestamp,
    ) -> Box<dyn Iterator<Item = (Timestamp, Timestamp)> + 'c> {
        match &self.kind {
            CalendarKind::Always => Box::new(std::iter::once((from, until))),
            CalendarKind::Business(schedules) => Box::new(UnionIter {
                parts: schedules
                    .iter()
                    .map(|s: &Schedule| s.open_from(from, until).peekable())
                    .collect(),
                covered_until: None,
            }),
        }
    }

    fn running<'c>(&'c self, from: Timestamp, until: Timestamp, pauses: &'c Pauses) -> Running<'c> {
        Running {
            open: self.open_from(from, until),
            pauses: &pauses.spans,
            pause: 0,
            pending: None,
            from,
        }
    }

    /// Is the calendar open (business time running) at `at`?
    pub fn is_open(&self, at: Timestamp) -> bool {
        match &self.kind {
            CalendarKind::Always => true,
            CalendarKind::Business(schedules) => schedules.iter().any(|s| s.open_at(at).is_some()),
        }
    }

    /// Business time in `[from, until)` outside the pauses. Zero when `until`
    /// is not after `from`.
    pub fn elapsed(&self, from: Timestamp, until: Timestamp, pauses: &Pauses) -> SignedDuration {
        if until <= from {
            return SignedDuration::ZERO;
        }
        let mut total = SignedDuration::ZERO;
        for (start, end) in self.running(from, until, pauses) {
            if start >= until {
                break;
            }
            total += end.min(until).duration_since(start);
        }
        total
    }

    /// The instant at which `minutes` business minutes have run from `start`,
    /// not counting pauses: an SLA deadline. `0` minutes is `start` itself.
    /// When the count completes exactly at the end of an open stretch, the
    /// deadline is that end, not the start of the next stretch.
    pub fn deadline(&self, start: Timestamp, minutes: u32, pauses: &Pauses) -> Result<Timestamp> {
        self.deadline_after(start, SignedDuration::from_mins(i64::from(minutes)), pauses)
    }

    /// As [`Calendar::deadline`], for any non-negative duration.
    pub fn deadline_after(
        &self,
        start: Timestamp,
        target: SignedDuration,
        pauses: &Pauses,
    ) -> Result<Timestamp> {
        if target <= SignedDuration::ZERO {
            return Ok(start);
        }
        let search_from = pauses.last_end().map_or(start, |p| p.max(start));
        let horizon = SignedDuration::from_hours(24 * i64::from(DEADLINE_HORIZON_DAYS));
        let until = search_from.checked_add(horizon).unwrap_or(Timestamp::MAX);
        let mut remaining = target;
        for (open, close) in self.running(start, until, pauses) {
            let length = close.duration_since(open);
            if length >= remaining {
                return open
                    .checked_add(remaining)
                    .map_err(|_| TimeError::OutOfRange);
            }
            remaining -= length;
        }
        if until == Timestamp::MAX {
            return Err(TimeError::OutOfRange);
        }
        let open = target - remaining;
        if open > SignedDuration::ZERO {
            return Err(TimeError::BeyondHorizon {
                calendar: self.name.clone(),
                from: start,
                horizon_days: DEADLINE_HORIZON_DAYS,
                target_minutes: target.as_secs() / 60,
                open_minutes: open.as_secs() / 60,
            });
        }
        Err(TimeError::NoBusinessTime {
            calendar: self.name.clone(),
            from: start,
            horizon_days: DEADLINE_HORIZON_DAYS,
        })
    }
}

/// An SLA deadline with the calendar it was measured in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlaDeadline {
    pub tier: String,
    pub metric: Metric,
    pub calendar: String,
    pub minutes: u32,
    pub start: Timestamp,
    /// The deadline, shown with the calendar zone's offset at that instant.
    pub deadline: String,
    #[serde(skip)]
    pub deadline_at: Timestamp,
    pub time_zone: String,
    pub paused_minutes: i64,
}

impl Rules {
    /// The deadline of `metric` for a ticket of `tier` whose clock started at
    /// `start`, measured in the tier's calendar and stopped during `pauses`.
    pub fn sla_deadline(
        &self,
        tier: &str,
        metric: Metric,
        start: Timestamp,
        pauses: &Pauses,
    ) -> Result<SlaDeadline> {
        self.sla_deadline_for(tier, None, metric, start, pauses)
    }

    /// As [`Rules::sla_deadline`], for a ticket of `customer`: measured in
    /// the customer's calendar when the rules give one (`[customers.NAME]`),
    /// else the tier's.
    pub fn sla_deadline_for(
        &self,
        tier: &str,
        customer: Option<&str>,
        metric: Metric,
        start: Timestamp,
        pauses: &Pauses,
    ) -> Result<SlaDeadline> {
        let policy = self.tier(tier).ok_or_else(|| TimeError::UnknownTier {
            tier: tier.to_owned(),
            known: self.known_tiers(),
        })?;
        let calendar = self.sla_calendar(policy, customer);
        let minutes = policy.minutes(metric);
        let deadline_at = calendar.deadline(start, minutes, pauses)?;
        // Pause time that fell inside business hours before the deadline: what
        // the pauses actually cost the customer.
        let unpaused = calendar.elapsed(start, deadline_at, &Pauses::none());
        let counted = calendar.elapsed(start, deadline_at, pauses);
        let paused_minutes = (unpaused - counted).as_secs() / 60;
        let offset = calendar.time_zone.to_offset(deadline_at);
        Ok(SlaDeadline {
            tier: tier.to_owned(),
            metric,
            calendar: calendar.name.clone(),
            minutes,
            start,
            deadline: deadline_at.display_with_offset(offset).to_string(),
            deadline_at,
            time_zone: calendar.time_zone.iana_name().unwrap_or("UTC").to_owned(),
            paused_minutes,
        })
    }
}
