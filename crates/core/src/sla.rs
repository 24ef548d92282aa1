//! SLA clocks: for each target a ticket has (first response, next response,
//! resolution),
//! when it is due, when it turns "at risk", and where it stands. The clocks
//! are computed from the tier's policy and calendar by `meridian-rules`;
//! here are only their values and the transitions that need no calendar, so
//! every region derives the same projection from the same events.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Status;

/// Which SLA target a clock measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaMetric {
    /// From the ticket's creation to the first public reply.
    FirstResponse,
    /// From a customer message after a reply to the next public reply.
    NextResponse,
    Resolution,
}

impl SlaMetric {
    pub const ALL: [SlaMetric; 3] = [
        SlaMetric::FirstResponse,
        SlaMetric::NextResponse,
        SlaMetric::Resolution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SlaMetric::FirstResponse => "first_response",
            SlaMetric::NextResponse => "next_response",
            SlaMetric::Resolution => "resolution",
        }
    }

    /// As people read it: "first response".
    pub fn label(self) -> &'static str {
        match self {
            SlaMetric::FirstResponse => "first response",
            SlaMetric::NextResponse => "next response",
            SlaMetric::Resolution => "resolution",
        }
    }
}

impl fmt::Display for SlaMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where one SLA clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    /// Counting, less than the warning share of the target used.
    Running,
    /// Stopped while the ticket is in a status that pauses the clock; the
    /// deadline is recomputed when it leaves that status.
    Paused,
    /// Past the warning share (80%) of the target.
    AtRisk,
    /// Past the deadline.
    Breached,
    /// The target was met (responded, or resolved).
    Met,
}

impl SlaState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaState::Running => "running",
            SlaState::Paused => "paused",
            SlaState::AtRisk => "at_risk",
            SlaState::Breached => "breached",
            SlaState::Met => "met",
        }
    }

    /// Counts towards "SLA at risk" in lists and metrics.
    pub fn is_at_risk(self) -> bool {
        matches!(self, SlaState::AtRisk | SlaState::Breached)
    }
}

impl fmt::Display for SlaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One SLA target of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    pub due: Timestamp,
    /// When the warning share of the target is used up.
    pub warn_at: Timestamp,
    pub state: SlaState,
}

/// What the SLA monitor should record for a clock at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaAlert {
    Warning,
    Breached,
}

impl SlaClock {
    /// The next instant at which this clock needs looking at, if any.
    pub fn check_at(&self) -> Option<Timestamp> {
        match self.state {
            SlaState::Running => Some(self.warn_at),
            SlaState::AtRisk => Some(self.due),
            SlaState::Paused | SlaState::Breached | SlaState::Met => None,
        }
    }

    /// The alert due at `now`, if any. A clock found past its deadline
    /// while still running goes straight to `Breached`.
    pub fn alert_at(&self, now: Timestamp) -> Option<SlaAlert> {
        match self.state {
            SlaState::Running | SlaState::AtRisk if now >= self.due => Some(SlaAlert::Breached),
            SlaState::Running if now >= self.warn_at => Some(SlaAlert::Warning),
            _ => None,
        }
    }
}

/// The SLA clocks of a ticket. A ticket without SLA policy has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaDeadlines {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response: Option<SlaClock>,
    /// Counting only while a customer message after a reply is unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_response: Option<SlaClock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<SlaClock>,
}

impl SlaDeadlines {
    pub fn clock(&self, metric: SlaMetric) -> Option<&SlaClock> {
        match metric {
            SlaMetric::FirstResponse => self.first_response.as_ref(),
            SlaMetric::NextResponse => self.next_response.as_ref(),
            SlaMetric::Resolution => self.resolution.as_ref(),
        }
    }

    pub fn clock_mut(&mut self, metric: SlaMetric) -> Option<&mut SlaClock> {
        match metric {
            SlaMetric::FirstResponse => self.first_response.as_mut(),
            SlaMetric::NextResponse => self.next_response.as_mut(),
            SlaMetric::Resolution => self.resolution.as_mut(),
        }
    }

    /// Every clock the ticket has, with its metric.
    pub fn clocks(&self) -> impl Iterator<Item = (SlaMetric, &SlaClock)> {
        SlaMetric::ALL
            .into_iter()
            .filter_map(|metric| self.clock(metric).map(|clock| (metric, clock)))
    }

    fn clocks_mut(&mut self) -> impl Iterator<Item = &mut SlaClock> {
        self.first_response
            .iter_mut()
            .chain(self.next_response.iter_mut())
            .chain(self.resolution.iter_mut())
    }

    pub fn is_empty(&self) -> bool {
        self.first_response.is_none() && self.next_response.is_none() && self.resolution.is_none()
    }

    /// The earliest instant any clock needs looking at.
    pub fn check_at(&self) -> Option<Timestamp> {
        self.clocks()
            .filter_map(|(_, clock)| clock.check_at())
            .min()
    }

    pub fn is_at_risk(&self) -> bool {
        self.clocks().any(|(_, c)| c.state.is_at_risk())
    }

    /// The clocks after a public reply: it meets the first response and an
    /// unanswered customer message's next response. A breach is history.
    pub fn after_reply(&self) -> SlaDeadlines {
        let mut next = *self;
        for clock in next
            .first_response
            .iter_mut()
            .chain(next.next_response.iter_mut())
        {
            if clock.state != SlaState::Breached {
                clock.state = SlaState::Met;
            }
        }
        next
    }

    /// Whether a customer message now starts a next-response clock: only
    /// once the first response was given (before it, the first-response
    /// clock still measures the wait), and not while an earlier message is
    /// still waiting (the clock measures from the oldest unanswered one).
    /// A breached clock is history; the next message starts a new one.
    pub fn inbound_starts_next_response(&self) -> bool {
        let first_given = self
            .first_response
            .is_none_or(|c| matches!(c.state, SlaState::Met | SlaState::Breached));
        let waiting = self.next_response.is_some_and(|c| {
            matches!(
                c.state,
                SlaState::Running | SlaState::AtRisk | SlaState::Paused
            )
        });
        first_given && !waiting
    }

    /// The clocks after a customer message that started `clock`.
    pub fn with_next_response(&self, clock: SlaClock) -> SlaDeadlines {
        SlaDeadlines {
            next_response: Some(clock),
            ..*self
        }
    }

    /// The clocks after a status move, for the transitions that need no
    /// calendar: reaching `solved` or `closed` meets the resolution,
    /// reopening restarts it, and a pausing status stops every counting
    /// clock. A status move is not an answer: only a public reply meets
    /// the response clocks ([`SlaDeadlines::after_reply`]). Resuming from
    /// a pause needs the calendar, so it is `meridian-rules`' job.
    pub fn after_status(&self, to: Status, pauses: bool) -> SlaDeadlines {
        let mut next = *self;
        if let Some(clock) = next.resolution.as_mut() {
            if !to.is_open() && clock.state != SlaState::Breached {
                clock.state = SlaState::Met;
            } else if to.is_open() && clock.state == SlaState::Met {
                clock.state = SlaState::Running;
            }
        }
        if pauses {
            for clock in next.clocks_mut() {
                if matches!(clock.state, SlaState::Running | SlaState::AtRisk) {
                    clock.state = SlaState::Paused;
                }
            }
        }
        next
    }

    /// The clocks with one alert recorded.
    pub fn with_alert(&self, metric: SlaMetric, alert: SlaAlert) -> SlaDeadlines {
        let mut next = *self;
        if let Some(clock) = next.clock_mut(metric) {
            clock.state = match alert {
                SlaAlert::Warning => SlaState::AtRisk,
                SlaAlert::Breached => SlaState::Breached,
            };
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(minutes: i64) -> Timestamp {
        Timestamp::from_second(minutes * 60).unwrap()
    }

    fn clock(state: SlaState) -> SlaClock {
        SlaClock {
            due: ts(100),
            warn_at: ts(80),
            state,
        }
    }

    #[test]
    fn alerts_follow_the_clock() {
        let running = clock(SlaState::Running);
        assert_eq!(running.alert_at(ts(79)), None);
        assert_eq!(running.alert_at(ts(80)), Some(SlaAlert::Warning));
        assert_eq!(
            running.alert_at(ts(100)),
            Some(SlaAlert::Breached),
            "a missed warning does not delay the breach"
        );
        let at_risk = clock(SlaState::AtRisk);
        assert_eq!(at_risk.alert_at(ts(90)), None, "warned once");
        assert_eq!(at_risk.alert_at(ts(100)), Some(SlaAlert::Breached));
        for quiet in [SlaState::Paused, SlaState::Breached, SlaState::Met] {
            assert_eq!(clock(quiet).alert_at(ts(1_000)), None, "{quiet}");
            assert_eq!(clock(quiet).check_at(), None);
        }
    }

    #[test]
    fn status_moves_meet_pause_and_reopen() {
        let sla = SlaDeadlines {
            first_response: Some(clock(SlaState::AtRisk)),
            resolution: Some(clock(SlaState::Running)),
            next_response: None,
        };
        let opened = sla.after_status(Status::Open, false);
        assert_eq!(
            opened.first_response.unwrap().state,
            SlaState::AtRisk,
            "a status change is not an answer"
        );
        assert_eq!(opened.resolution.unwrap().state, SlaState::Running);
        let opened = opened.after_reply();
        assert_eq!(opened.first_response.unwrap().state, SlaState::Met);
        assert!(!opened.is_at_risk());

        let pending = opened.after_status(Status::Pending, true);
        assert_eq!(pending.resolution.unwrap().state, SlaState::Paused);
        assert_eq!(
            pending.first_response.unwrap().state,
            SlaState::Met,
            "a met target stays met"
        );
        assert_eq!(pending.check_at(), None, "nothing to watch while paused");

        let solved = opened.after_status(Status::Solved, false);
        assert_eq!(solved.resolution.unwrap().state, SlaState::Met);
        let reopened = solved.after_status(Status::Open, false);
        assert_eq!(reopened.resolution.unwrap().state, SlaState::Running);

        let breached = SlaDeadlines {
            resolution: Some(clock(SlaState::Breached)),
            ..SlaDeadlines::default()
        };
        assert_eq!(breached.after_reply(), breached);
        assert_eq!(
            breached.after_status(Status::Solved, false),
            breached,
            "a breach is history"
        );
    }

    #[test]
    fn next_response_runs_from_an_unanswered_message_after_a_reply() {
        let new = SlaDeadlines {
            first_response: Some(clock(SlaState::Running)),
            resolution: Some(clock(SlaState::Running)),
            ..SlaDeadlines::default()
        };
        assert!(
            !new.inbound_starts_next_response(),
            "before the first reply the first-response clock measures the wait"
        );
        let replied = new.after_reply();
        assert!(replied.inbound_starts_next_response());
        let waiting = replied.with_next_response(clock(SlaState::Running));
        assert!(
            !waiting.inbound_starts_next_response(),
            "a second message does not restart the oldest one's clock"
        );
        assert_eq!(waiting.check_at(), Some(ts(80)));
        let paused = waiting.after_status(Status::Pending, true);
        assert_eq!(paused.next_response.unwrap().state, SlaState::Paused);
        assert!(!paused.inbound_starts_next_response());
        let answered = waiting.after_reply();
        assert_eq!(answered.next_response.unwrap().state, SlaState::Met);
        assert_eq!(answered.resolution.unwrap().state, SlaState::Running);
        assert!(answered.inbound_starts_next_response());
        let breached = waiting.with_alert(SlaMetric::NextResponse, SlaAlert::Breached);
        assert!(breached.is_at_risk());
        assert_eq!(
            breached.after_reply().next_response.unwrap().state,
            SlaState::Breached
        );
        assert!(breached.inbound_starts_next_response());
    }

    proptest! {
        /// Whatever happens, a clock's next check is never after its
        /// deadline, and an alert is due exactly when the check time passed.
        #[test]
        fn check_at_is_when_alerts_fall_due(warn in 0i64..1000, extra in 0i64..1000, now in 0i64..3000,
                                             at_risk in any::<bool>()) {
            let state = if at_risk { SlaState::AtRisk } else { SlaState::Running };
            let clock = SlaClock { due: ts(warn + extra), warn_at: ts(warn), state };
            let check = clock.check_at().unwrap();
            prop_assert!(check <= clock.due);
            prop_assert_eq!(clock.alert_at(ts(now)).is_some(), ts(now) >= check);
        }
    }
}
