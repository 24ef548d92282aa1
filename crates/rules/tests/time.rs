//! Shift and business-time arithmetic: fixed cases across DST, holidays and
//! midnight, and property tests of the SLA deadline algebra.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use jiff::{SignedDuration, Timestamp};
use meridian_rules::{Metric, Pauses, Rules, ShiftChangeKind, ShiftPosition, TimeError};
use proptest::prelude::*;

fn windows(rules: &Rules, region: &str, from: &str, until: &str) -> Vec<String> {
    let region = rules.region(region).unwrap();
    rules
        .shift_windows(region, ts(from), ts(until))
        .into_iter()
        .map(|(s, e, name)| format!("{name} {s} {e}"))
        .collect()
}

#[test]
fn shift_starting_in_a_dst_gap_starts_at_the_transition() {
    let rules = parse(NIGHT_RULES);
    // 2026-03-08: New York skips 02:00–03:00 EST (07:00Z is 03:00 EDT).
    assert_eq!(
        windows(&rules, "ny", "2026-03-08T05:00:00Z", "2026-03-08T08:00:00Z"),
        [
            "evening 2026-03-07T23:00:00Z 2026-03-08T06:30:00Z",
            // 01:30 EST to 02:30, which does not exist: the first valid
            // instant after the gap.
            "night 2026-03-08T06:30:00Z 2026-03-08T07:00:00Z",
            "day 2026-03-08T07:00:00Z 2026-03-08T22:00:00Z",
        ]
    );
}

#[test]
fn shift_boundary_in_a_dst_fold_is_the_first_occurrence() {
    let rules = parse(NIGHT_RULES);
    // 2026-11-01: New York repeats 01:00–02:00 (EDT 05:00Z, then EST 06:00Z).
    assert_eq!(
        windows(&rules, "ny", "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z"),
        [
            // Ends at the first 01:30 (EDT).
            "evening 2026-10-31T22:00:00Z 2026-11-01T05:30:00Z",
            // Starts at that same instant: no gap, no overlap; it lasts two
            // real hours because the clock repeats an hour.
            "night 2026-11-01T05:30:00Z 2026-11-01T07:30:00Z",
            "day 2026-11-01T07:30:00Z 2026-11-01T23:00:00Z",
        ]
    );
}

#[test]
fn wall_clock_shifts_keep_local_times_across_dst() {
    let rules = example();
    // Friday before and Monday after the March change: 08:00–17:00 local.
    assert_eq!(
        windows(
            &rules,
            "us-east",
            "2026-03-06T12:00:00Z",
            "2026-03-06T22:00:00Z"
        ),
        ["day 2026-03-06T13:00:00Z 2026-03-06T22:00:00Z"]
    );
    assert_eq!(
        windows(
            &rules,
            "us-east",
            "2026-03-09T11:00:00Z",
            "2026-03-09T21:00:00Z"
        ),
        ["day 2026-03-09T12:00:00Z 2026-03-09T21:00:00Z"]
    );
}

#[test]
fn holidays_whole_and_partial() {
    let rules = example();
    // Christmas Eve: us-east closes at 13:00 EST (18:00Z); the late shift does
    // not happen.
    assert_eq!(
        windows(
            &rules,
            "us-east",
            "2026-12-24T05:00:00Z",
            "2026-12-25T06:00:00Z"
        ),
        ["day 2026-12-24T13:00:00Z 2026-12-24T18:00:00Z"]
    );
    // Ireland's June bank holiday, a Monday.
    assert_eq!(
        rules.on_shift("eu-west", ts("2026-06-01T10:00:00Z")),
        Some(false)
    );
    assert_eq!(
        rules.on_shift("eu-west", ts("2026-06-02T10:00:00Z")),
        Some(true)
    );
}

#[test]
fn overlap_window_and_next_change() {
    let rules = example();
    // 22:45Z on a Tuesday in June: us-east's late shift runs until 01:00Z;
    // apac-south starts at 23:00Z (07:00 SGT), within the 30-minute overlap.
    let active = rules.active_at(ts("2026-06-02T22:45:00Z"));
    let summary: Vec<_> = active
        .iter()
        .map(|a| (a.region.as_str(), a.position, a.shift.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("us-east", ShiftPosition::OnShift, "late"),
            ("apac-south", ShiftPosition::Overlap, "day")
        ]
    );
    let change = rules.next_shift_change(ts("2026-06-02T22:45:00Z")).unwrap();
    assert_eq!(
        (change.region.as_str(), change.kind, change.at),
        (
            "apac-south",
            ShiftChangeKind::Start,
            ts("2026-06-02T23:00:00Z")
        )
    );
    // At 00:45Z us-east is in its last 30 minutes: handing off.
    let active = rules.active_at(ts("2026-06-03T00:45:00Z"));
    assert!(
        active
            .iter()
            .any(|a| a.region == "us-east" && a.handing_off),
        "{active:?}"
    );
    // The boundary between us-east's day and late shifts is a change too.
    let change = rules.next_shift_change(ts("2026-06-02T20:30:00Z")).unwrap();
    assert_eq!(
        (change.region.as_str(), change.kind, change.shift.as_str()),
        ("us-east", ShiftChangeKind::End, "day")
    );
}

#[test]
fn deadlines_in_each_kind_of_calendar() {
    let rules = example();
    let none = Pauses::none();
    // 24x7: thirty real minutes, shown in UTC.
    let d = rules
        .sla_deadline(
            "enterprise",
            Metric::FirstResponse,
            ts("2026-03-08T06:45:00Z"),
            &none,
        )
        .unwrap();
    assert_eq!(d.deadline, "2026-03-08T07:15:00+00:00");
    // follow-the-sun, Friday 23:30Z: 90 minutes until us-east's late shift
    // ends at 01:00Z Saturday, then 30 minutes of us-east's weekend shift
    // (10:00 EDT = 14:00Z). Shown in New York time.
    let d = rules
        .sla_deadline(
            "premium",
            Metric::FirstResponse,
            ts("2026-06-05T23:30:00Z"),
            &none,
        )
        .unwrap();
    assert_eq!(d.deadline, "2026-06-06T10:30:00-04:00");
    // us-business over Thanksgiving: 480 minutes from Wednesday 20:00 EST
    // (1 h of late shift), nothing Thursday, Friday 08:00–13:00 (5 h, early
    // close), weekend 10:00–12:00 Saturday.
    let d = rules
        .sla_deadline(
            "standard",
            Metric::FirstResponse,
            ts("2026-11-26T01:00:00Z"),
            &none,
        )
        .unwrap();
    assert_eq!(d.deadline, "2026-11-28T12:00:00-05:00");
    // eu-business (explicit hours 09:00–17:30 Dublin).
    let cal = rules.calendar("eu-business").unwrap();
    let d = cal
        .deadline(ts("2026-12-24T16:30:00Z"), 120, &none)
        .unwrap();
    // 60 minutes on the 24th, Christmas and St Stephen's closed, 60 more on
    // Tuesday the 29th from 09:00.
    assert_eq!(d, ts("2026-12-29T10:00:00Z"));
}

#[test]
fn pauses_stop_the_clock() {
    let rules = example();
    let start = ts("2026-06-02T10:00:00Z");
    let pauses = Pauses::new([(ts("2026-06-02T10:10:00Z"), ts("2026-06-02T10:40:00Z"))]).unwrap();
    let d = rules
        .sla_deadline("enterprise", Metric::FirstResponse, start, &pauses)
        .unwrap();
    assert_eq!(d.deadline_at, ts("2026-06-02T11:00:00Z"));
    assert_eq!(d.paused_minutes, 30);
    let inverted =
        Pauses::new([(ts("2026-06-02T10:40:00Z"), ts("2026-06-02T10:10:00Z"))]).unwrap_err();
    assert!(matches!(
        inverted,
        TimeError::InvertedPause { index: 0, .. }
    ));
}

#[test]
fn unknown_tier_names_the_known_ones() {
    let rules = example();
    let err = rules
        .sla_deadline(
            "gold",
            Metric::Resolution,
            ts("2026-06-02T10:00:00Z"),
            &Pauses::none(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown tier "gold"; the rules define "standard", "premium", "enterprise""#
    );
}

#[test]
fn a_calendar_with_no_time_left_reports_it() {
    let text = NIGHT_RULES.replace(
        "[calendars.ny-shifts]",
        "[calendars.closed]\ntime_zone = \"UTC\"\nhours = [{ days = [\"mon\"], start = \"09:00\", end = \"10:00\" }]\nholidays = [{ date = \"2026-06-01\" }]\n\n[calendars.ny-shifts]",
    );
    let rules = parse(&text);
    let cal = rules.calendar("closed").unwrap();
    // One hour a week: 120 minutes take two Mondays (the first is a holiday).
    assert_eq!(
        cal.deadline(ts("2026-05-31T00:00:00Z"), 120, &Pauses::none())
            .unwrap(),
        ts("2026-06-15T10:00:00Z")
    );
    // A year of minutes at one hour a week is beyond the ten-year search:
    // the message says the target cannot be met, not that there is no time.
    let err = cal
        .deadline(ts("2026-05-31T00:00:00Z"), 525_600, &Pauses::none())
        .unwrap_err();
    assert!(matches!(err, TimeError::BeyondHorizon { .. }), "{err}");
    expect_test::expect![[r#"calendar "closed" cannot meet a target of 525600 business minutes within the search horizon: the 3660 days after 2026-05-31T00:00:00Z hold only 31320 open minutes; lower the target or give the calendar more hours"#]].assert_eq(&err.to_string());
    // A calendar with no open time at all says so.
    let text = NIGHT_RULES.replace(
        "[calendars.ny-shifts]",
        "[calendars.never]\ntime_zone = \"UTC\"\nhours = [{ days = [\"mon\"], start = \"09:00\", end = \"10:00\" }]\nholidays = [{ every = \"01-01\", to = \"12-31\" }]\n\n[calendars.ny-shifts]",
    );
    let rules = parse(&text);
    let err = rules
        .calendar("never")
        .unwrap()
        .deadline(ts("2026-05-31T00:00:00Z"), 60, &Pauses::none())
        .unwrap_err();
    assert!(matches!(err, TimeError::NoBusinessTime { .. }), "{err}");
}

fn calendars() -> Vec<&'static str> {
    vec!["24x7", "us-business", "follow-the-sun", "eu-business"]
}

fn instant() -> impl Strategy<Value = Timestamp> {
    // 2026-01-01 to 2031-12-31.
    (1_767_225_600i64..1_956_528_000).prop_map(|s| Timestamp::from_second(s).unwrap())
}

fn pauses_near(start: Timestamp) -> impl Strategy<Value = Pauses> {
    proptest::collection::vec((0i64..7 * 24 * 60, 0i64..3 * 24 * 60), 0..4).prop_map(move |spans| {
        Pauses::new(spans.into_iter().map(|(offset, len)| {
            let from = start
                .checked_add(SignedDuration::from_mins(offset - 24 * 60))
                .unwrap();
            (
                from,
                from.checked_add(SignedDuration::from_mins(len)).unwrap(),
            )
        }))
        .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// elapsed(start, deadline(start, n)) == n, with and without pauses.
    #[test]
    fn elapsed_inverts_deadline(
        cal in proptest::sample::select(calendars()),
        (start, pauses) in instant().prop_flat_map(|s| (Just(s), pauses_near(s))),
        n in 0u32..4000,
    ) {
        let rules = example();
        let cal = rules.calendar(cal).unwrap();
        let d = cal.deadline(start, n, &pauses).unwrap();
        prop_assert!(d >= start);
        prop_assert_eq!(cal.elapsed(start, d, &pauses), SignedDuration::from_mins(i64::from(n)));
        // And the deadline is the first such instant: a second earlier, the
        // count is not complete.
        if n > 0 {
            let before = d.checked_sub(SignedDuration::from_secs(1)).unwrap();
            prop_assert!(cal.elapsed(start, before, &pauses) < SignedDuration::from_mins(i64::from(n)));
        }
    }

    /// Later start, later (or equal) deadline; bigger target, later deadline.
    #[test]
    fn deadlines_are_monotone(
        cal in proptest::sample::select(calendars()),
        start in instant(),
        delay_min in 0i64..3000,
        n in 0u32..3000,
        more in 0u32..3000,
    ) {
        let rules = example();
        let cal = rules.calendar(cal).unwrap();
        let none = Pauses::none();
        let later = start.checked_add(SignedDuration::from_mins(delay_min)).unwrap();
        prop_assert!(cal.deadline(start, n, &none).unwrap() <= cal.deadline(later, n, &none).unwrap());
        prop_assert!(cal.deadline(start, n, &none).unwrap() <= cal.deadline(start, n + more, &none).unwrap());
    }

    /// Pausing the clock never brings a deadline forward.
    #[test]
    fn pauses_never_shorten_a_deadline(
        cal in proptest::sample::select(calendars()),
        (start, pauses) in instant().prop_flat_map(|s| (Just(s), pauses_near(s))),
        n in 0u32..3000,
    ) {
        let rules = example();
        let cal = rules.calendar(cal).unwrap();
        prop_assert!(cal.deadline(start, n, &pauses).unwrap() >= cal.deadline(start, n, &Pauses::none()).unwrap());
    }

    /// Business time is additive: elapsed(a, c) = elapsed(a, b) + elapsed(b, c).
    #[test]
    fn elapsed_is_additive(
        cal in proptest::sample::select(calendars()),
        a in instant(),
        ab in 0i64..20_000,
        bc in 0i64..20_000,
    ) {
        let rules = example();
        let cal = rules.calendar(cal).unwrap();
        let none = Pauses::none();
        let b = a.checked_add(SignedDuration::from_mins(ab)).unwrap();
        let c = b.checked_add(SignedDuration::from_mins(bc)).unwrap();
        prop_assert_eq!(cal.elapsed(a, c, &none), cal.elapsed(a, b, &none) + cal.elapsed(b, c, &none));
    }

    /// A shift boundary is never skipped: the next change after t is after t,
    /// and between t and it every region's on-shift state is constant.
    #[test]
    fn next_shift_change_is_the_next_change(t in instant()) {
        let rules = example();
        let change = rules.next_shift_change(t).unwrap();
        prop_assert!(change.at > t);
        let before = change.at.checked_sub(SignedDuration::from_secs(1)).unwrap().max(t);
        for region in rules.regions() {
            prop_assert_eq!(rules.on_shift(region.id.as_str(), t), rules.on_shift(region.id.as_str(), before));
        }
    }
}

/// An on-call rotation of 20-minute slots from 08:00 to 20:00 UTC: one
/// stretch of coverage, not 36 shifts that each end in 20 minutes.
#[test]
fn back_to_back_short_shifts_are_one_stretch() {
    let mut text = String::from(
        "version = \"rotation\"\noverlap_minutes = 15\n\n[[regions]]\nid = \"oncall\"\n\
         index = 0\ntime_zone = \"UTC\"\nskills = [\"general\"]\ncapacity = 10\n",
    );
    for slot in 0..36 {
        let start = 8 * 60 + slot * 20;
        let end = start + 20;
        text.push_str(&format!(
            "\n[[regions.shifts]]\nname = \"slot{slot}\"\ndays = [\"mon-sun\"]\n\
             start = \"{:02}:{:02}\"\nend = \"{:02}:{:02}\"\nqueue_owner = \"person{slot}\"\n",
            start / 60,
            start % 60,
            end / 60,
            end % 60,
        ));
    }
    text.push_str(
        "\n[tiers.standard]\ncalendar = \"24x7\"\nfirst_response_minutes = 60\n\
         next_response_minutes = 120\nresolution_minutes = 600\n",
    );
    let rules = parse(&text);
    // 10:05Z: six hours into twelve of continuous coverage.
    let at = ts("2026-06-02T10:05:00Z");
    let active = rules.active_at(at);
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(
        !active[0].handing_off,
        "a rotation is not handing off mid-day: {active:?}"
    );
    let health = [(
        meridian_core::RegionId::new("oncall").unwrap(),
        meridian_rules::RegionHealth::Up,
    )]
    .into_iter()
    .collect();
    let decision = rules.decide(
        at,
        &health,
        &std::collections::HashMap::new(),
        &meridian_rules::RouteRequest::default(),
    );
    assert_eq!(
        decision.candidates[0].shift_ends_at,
        Some(ts("2026-06-02T20:00:00Z"))
    );
    // In the last slot's final 15 minutes the rotation does hand off.
    let active = rules.active_at(ts("2026-06-02T19:50:00Z"));
    assert!(active[0].handing_off, "{active:?}");
}
