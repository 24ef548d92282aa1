//! SLA clocks computed from the example rules: targets in business time,
//! the 80% warning, pauses that push deadlines back only by the business
//! time they covered.

mod common;

use common::{example, ts};
use jiff::{SignedDuration, Timestamp};
use meridian_core::{SlaMetric, SlaState, Status};
use meridian_rules::{Metric, Pauses, pause_spans};
use proptest::prelude::*;

#[test]
fn new_clocks_are_due_after_the_tier_targets_in_its_calendar() {
    let rules = example();
    let start = ts("2026-06-01T14:00:00Z");
    for tier in ["standard", "premium", "enterprise"] {
        let clocks = rules.sla_clocks(tier, start).unwrap();
        for (metric, clock) in [
            (Metric::FirstResponse, clocks.first_response.unwrap()),
            (Metric::Resolution, clocks.resolution.unwrap()),
        ] {
            let deadline = rules
                .sla_deadline(tier, metric, start, &Pauses::none())
                .unwrap();
            assert_eq!(
                clock.due, deadline.deadline_at,
                "{tier} {metric} matches `meridian sla deadline`"
            );
            assert_eq!(clock.state, SlaState::Running);
            assert!(
                start <= clock.warn_at && clock.warn_at <= clock.due,
                "{tier} {metric}"
            );
        }
    }
    let err = rules.sla_clocks("platinum", start).unwrap_err().to_string();
    assert!(err.contains("platinum"), "{err}");
}

#[test]
fn pause_history_becomes_spans() {
    let history = [
        (ts("2026-06-01T10:00:00Z"), Status::Open),
        (ts("2026-06-01T11:00:00Z"), Status::Pending),
        (ts("2026-06-01T12:00:00Z"), Status::Open),
        (ts("2026-06-01T13:00:00Z"), Status::Pending),
    ];
    let spans = pause_spans(&history, ts("2026-06-01T15:00:00Z"), |s| {
        s == Status::Pending
    })
    .unwrap();
    assert_eq!(
        spans.spans(),
        [
            (ts("2026-06-01T11:00:00Z"), ts("2026-06-01T12:00:00Z")),
            (ts("2026-06-01T13:00:00Z"), ts("2026-06-01T15:00:00Z")),
        ]
    );
}

#[test]
fn resuming_pushes_only_paused_clocks_back() {
    let rules = example();
    let start = ts("2026-06-02T13:00:00Z");
    let clocks = rules.sla_clocks("premium", start).unwrap();
    // Answered, then pending: the met first response is not paused.
    let paused = clocks.after_reply().after_status(Status::Pending, true);
    assert_eq!(
        paused.first_response.unwrap().state,
        SlaState::Met,
        "a reply met the first response"
    );
    assert_eq!(paused.resolution.unwrap().state, SlaState::Paused);

    let pauses = Pauses::new([(ts("2026-06-02T14:00:00Z"), ts("2026-06-02T16:00:00Z"))]).unwrap();
    let resumed = rules
        .sla_resume("premium", start, &paused, &pauses)
        .unwrap();
    let resolution = resumed.resolution.unwrap();
    assert_eq!(resolution.state, SlaState::Running);
    let calendar_elapsed = |until: Timestamp| {
        let calendar = rules.tier_calendar(rules.tier("premium").unwrap());
        calendar.elapsed(start, until, &pauses)
    };
    let target =
        SignedDuration::from_mins(i64::from(rules.tier("premium").unwrap().resolution_minutes));
    assert_eq!(
        calendar_elapsed(resolution.due),
        target,
        "the pause does not count"
    );
    assert!(resolution.due >= clocks.resolution.unwrap().due);
    assert_eq!(
        resumed.first_response, paused.first_response,
        "a met clock is left alone"
    );
}

proptest! {
    /// For any start in the next two years, each clock's warning comes at
    /// 80% of its target in business time and its deadline at 100%.
    #[test]
    fn warning_is_eighty_percent_of_the_target(offset_minutes in 0i64..(2 * 365 * 24 * 60),
                                              tier in prop::sample::select(vec!["standard", "premium", "enterprise"])) {
        let rules = example();
        let start = ts("2026-01-01T00:00:00Z") + SignedDuration::from_mins(offset_minutes);
        let clocks = rules.sla_clocks(tier, start).unwrap();
        let policy = rules.tier(tier).unwrap();
        let calendar = rules.tier_calendar(policy);
        let next = rules.sla_next_response(tier, None, start).unwrap();
        prop_assert!(clocks.next_response.is_none(), "no customer message after a reply yet");
        for metric in SlaMetric::ALL {
            let (clock, minutes) = match metric {
                SlaMetric::FirstResponse => (clocks.first_response.unwrap(), policy.first_response_minutes),
                SlaMetric::NextResponse => (next, policy.next_response_minutes),
                SlaMetric::Resolution => (clocks.resolution.unwrap(), policy.resolution_minutes),
            };
            let target = SignedDuration::from_mins(i64::from(minutes));
            prop_assert_eq!(calendar.elapsed(start, clock.due, &Pauses::none()), target);
            let warning = SignedDuration::from_secs(target.as_secs() * 80 / 100);
            prop_assert_eq!(calendar.elapsed(start, clock.warn_at, &Pauses::none()), warning);
        }
    }
}
