//! SLA clocks of a ticket from its tier's policy: when each target is due
//! and when it turns "at risk", in the customer's calendar when the rules
//! give one (`[customers.NAME]`), else the tier's; never the region's, so a
//! handoff never moves a deadline. Clocks stop while the ticket sat in a
//! status that pauses them.

use jiff::{SignedDuration, Timestamp};
use meridian_core::{SlaClock, SlaDeadlines, SlaMetric, SlaState, Status};

use crate::calendar::Pauses;
use crate::error::{Result, TimeError};
use crate::model::{Metric, Rules, TierPolicy};

/// The share of a target after which its clock is at risk (an `SlaWarning`).
pub const SLA_WARNING_PERCENT: i64 = 80;

fn rules_metric(metric: SlaMetric) -> Metric {
    match metric {
        SlaMetric::FirstResponse => Metric::FirstResponse,
        SlaMetric::NextResponse => Metric::NextResponse,
        SlaMetric::Resolution => Metric::Resolution,
    }
}

impl Rules {
    fn policy(&self, tier: &str) -> Result<&TierPolicy> {
        self.tier(tier).ok_or_else(|| TimeError::UnknownTier {
            tier: tier.to_owned(),
            known: self.known_tiers(),
        })
    }

    /// One clock: due after the target's business minutes, at risk after
    /// [`SLA_WARNING_PERCENT`] of them.
    fn clock(
        &self,
        policy: &TierPolicy,
        customer: Option<&str>,
        metric: SlaMetric,
        start: Timestamp,
        pauses: &Pauses,
    ) -> Result<SlaClock> {
        let calendar = self.sla_calendar(policy, customer);
        let target = SignedDuration::from_mins(i64::from(policy.minutes(rules_metric(metric))));
        let warning = SignedDuration::from_secs(target.as_secs() * SLA_WARNING_PERCENT / 100);
        Ok(SlaClock {
            due: calendar.deadline_after(start, target, pauses)?,
            warn_at: calendar.deadline_after(start, warning, pauses)?,
            state: SlaState::Running,
        })
    }

    /// The SLA clocks of a new ticket of `tier` created at `start`.
    pub fn sla_clocks(&self, tier: &str, start: Timestamp) -> Result<SlaDeadlines> {
        self.sla_clocks_for(tier, None, start)
    }

    /// The SLA clocks of a new ticket of `tier` for `customer`, in the
    /// customer's calendar when the rules give one.
    pub fn sla_clocks_for(
        &self,
        tier: &str,
        customer: Option<&str>,
        start: Timestamp,
    ) -> Result<SlaDeadlines> {
        let policy = self.policy(tier)?;
        let none = Pauses::none();
        Ok(SlaDeadlines {
            first_response: Some(self.clock(
                policy,
                customer,
                SlaMetric::FirstResponse,
                start,
                &none,
            )?),
            // Starts at the first customer message after a reply.
            next_response: None,
            resolution: Some(self.clock(policy, customer, SlaMetric::Resolution, start, &none)?),
        })
    }

    /// The next-response clock a customer message at `at` starts, in the
    /// same calendar as the ticket's other clocks.
    pub fn sla_next_response(
        &self,
        tier: &str,
        customer: Option<&str>,
        at: Timestamp,
    ) -> Result<SlaClock> {
        let policy = self.policy(tier)?;
        self.clock(
            policy,
            customer,
            SlaMetric::NextResponse,
            at,
            &Pauses::none(),
        )
    }

    /// Whether a ticket of `tier` in `status` has its clocks stopped. An
    /// unknown tier pauses nothing.
    pub fn sla_pauses(&self, tier: &str, status: Status) -> bool {
        self.tier(tier)
            .is_some_and(|policy| policy.pauses_on(status))
    }

    /// The clocks after a pause ends: each paused clock runs again with its
    /// deadlines pushed back by the pauses (as far as they fell in business
    /// hours); clocks that were met or breached stay as they are.
    pub fn sla_resume(
        &self,
        tier: &str,
        start: Timestamp,
        current: &SlaDeadlines,
        pauses: &Pauses,
    ) -> Result<SlaDeadlines> {
        self.sla_resume_for(tier, None, start, None, current, pauses)
    }

    /// As [`Rules::sla_resume`], in `customer`'s calendar when it has one.
    /// `next_response_since` is when the unanswered customer message that
    /// started the next-response clock arrived (the ticket's creation if
    /// not given); the other clocks run from `start`.
    pub fn sla_resume_for(
        &self,
        tier: &str,
        customer: Option<&str>,
        start: Timestamp,
        next_response_since: Option<Timestamp>,
        current: &SlaDeadlines,
        pauses: &Pauses,
    ) -> Result<SlaDeadlines> {
        let policy = self.policy(tier)?;
        let mut next = *current;
        for metric in SlaMetric::ALL {
            let from = match metric {
                SlaMetric::NextResponse => next_response_since.unwrap_or(start),
                SlaMetric::FirstResponse | SlaMetric::Resolution => start,
            };
            if let Some(clock) = next.clock_mut(metric)
                && clock.state == SlaState::Paused
            {
                *clock = self.clock(policy, customer, metric, from, pauses)?;
            }
        }
        Ok(next)
    }
}

/// The spans a ticket spent in pausing statuses, from its status history
/// (`(instant, status entered)`, in order) up to `until`.
pub fn pause_spans(
    history: &[(Timestamp, Status)],
    until: Timestamp,
    pauses: impl Fn(Status) -> bool,
) -> Result<Pauses> {
    let mut spans = Vec::new();
    let mut paused_since = None;
    for &(at, status) in history {
        match (paused_since, pauses(status)) {
            (None, true) => paused_since = Some(at),
            (Some(from), false) => {
                spans.push((from, at.max(from)));
                paused_since = None;
            }
            _ => {}
        }
    }
    if let Some(from) = paused_since {
        spans.push((from, until.max(from)));
    }
    Pauses::new(spans)
}
