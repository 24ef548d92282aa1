//! Walks every DST transition of the example file's zones (and the
//! round-the-clock fixture's) from 2026 through 2031, and checks shift
//! boundaries and SLA deadlines around each.
//!
//! The oracle for a boundary is independent of the implementation: scan the
//! instants minute by minute and take the first one at which the wall clock
//! reads the configured time or later. That single definition covers the
//! ordinary case, the gap (the first instant after it) and the fold (the
//! first occurrence).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use meridian_rules::{Pauses, Region, Rules};

const FROM: &str = "2026-01-01T00:00:00Z";
const UNTIL: &str = "2032-01-01T00:00:00Z";

fn transitions(tz: &TimeZone) -> Vec<Timestamp> {
    let until = ts(UNTIL);
    tz.following(ts(FROM))
        .map(|t| t.timestamp())
        .take_while(|t| *t < until)
        .collect()
}

/// The first instant at or after `near - 6h`, on a minute, whose wall-clock
/// reading in `tz` is at or after `wall`.
fn first_reading_at_or_after(tz: &TimeZone, wall: DateTime, near: Timestamp) -> Timestamp {
    let mut t = near.checked_sub(SignedDuration::from_hours(6)).unwrap();
    for _ in 0..24 * 60 {
        if tz.to_datetime(t) >= wall {
            return t;
        }
        t = t.checked_add(SignedDuration::from_mins(1)).unwrap();
    }
    panic!("no instant near {near} reads {wall} in {tz:?}");
}

fn check_region_around(rules: &Rules, region: &Region, transition: Timestamp) -> usize {
    let from = transition
        .checked_sub(SignedDuration::from_hours(72))
        .unwrap();
    let until = transition
        .checked_add(SignedDuration::from_hours(72))
        .unwrap();
    let tz = &region.time_zone;
    let mut checked = 0;
    for (start, end, name) in rules.shift_windows(region, from, until) {
        // Pieces clipped by the query range or by a holiday are not whole
        // shifts; skip them.
        if start <= from || end >= until {
            continue;
        }
        let shift = region.shifts.iter().find(|s| s.name == name).unwrap();
        let date = tz.to_datetime(start).date();
        if region
            .holidays
            .iter()
            .any(|h| h.date == date || Some(h.date) == date.tomorrow().ok())
        {
            continue;
        }
        let m = shift.start.minutes();
        let wall_start = date.at((m / 60) as i8, (m % 60) as i8, 0, 0);
        assert_eq!(
            start,
            first_reading_at_or_after(tz, wall_start, start),
            "{} shift {name} on {date}: start (transition {transition})",
            region.id
        );
        let end_minutes = if shift.end.minutes() > m {
            shift.end.minutes()
        } else {
            shift.end.minutes() + 1440
        };
        let end_date = if end_minutes >= 1440 {
            date.tomorrow().unwrap()
        } else {
            date
        };
        let e = end_minutes % 1440;
        let wall_end = end_date.at((e / 60) as i8, (e % 60) as i8, 0, 0);
        assert_eq!(
            end,
            first_reading_at_or_after(tz, wall_end, end),
            "{} shift {name} on {date}: end (transition {transition})",
            region.id
        );
        checked += 1;
    }
    checked
}

#[test]
fn every_transition_of_the_example_zones() {
    let example = example();
    let night = parse(NIGHT_RULES);
    let mut zones_seen = Vec::new();
    let mut windows_checked = 0;
    let mut transitions_checked = 0;
    for rules in [&example, &night] {
        for region in rules.regions() {
            let list = transitions(&region.time_zone);
            zones_seen.push((region.time_zone_name.clone(), list.len()));
            for &t in &list {
                windows_checked += check_region_around(rules, region, t);
                transitions_checked += 1;
            }
        }
    }
    // New York and Dublin change twice a year; Singapore never does, so its
    // shifts are checked by the ordinary tests only.
    assert_eq!(
        zones_seen,
        [
            ("America/New_York".to_owned(), 12),
            ("Europe/Dublin".to_owned(), 12),
            ("Asia/Singapore".to_owned(), 0),
            ("America/New_York".to_owned(), 12),
            ("Europe/Dublin".to_owned(), 12),
        ]
    );
    assert_eq!(transitions_checked, 48);
    assert!(
        windows_checked > 48 * 4,
        "only {windows_checked} shift windows checked"
    );
}

/// Three shifts that cover the clock must still cover it, with no gap and no
/// overlap, across every transition; the queue owner changes only at a shift
/// boundary.
#[test]
fn round_the_clock_shifts_tile_time_across_transitions() {
    let rules = parse(NIGHT_RULES);
    for region in rules.regions() {
        for t in transitions(&region.time_zone) {
            let from = t.checked_sub(SignedDuration::from_hours(30)).unwrap();
            let until = t.checked_add(SignedDuration::from_hours(30)).unwrap();
            let windows = rules.shift_windows(region, from, until);
            assert!(windows.first().unwrap().0 <= from && windows.last().unwrap().1 >= until);
            for pair in windows.windows(2) {
                assert_eq!(pair[0].1, pair[1].0, "{}: {pair:?} around {t}", region.id);
            }
            let mut minute = t.checked_sub(SignedDuration::from_hours(3)).unwrap();
            while minute < t.checked_add(SignedDuration::from_hours(3)).unwrap() {
                let active = rules.active_at(minute);
                let mine: Vec<_> = active
                    .iter()
                    .filter(|a| {
                        a.region == region.id.as_str()
                            && a.position == meridian_rules::ShiftPosition::OnShift
                    })
                    .collect();
                assert_eq!(mine.len(), 1, "{} at {minute}: {active:?}", region.id);
                minute = minute.checked_add(SignedDuration::from_mins(5)).unwrap();
            }
        }
    }
}

/// Deadlines started around each transition: the business time between
/// start and deadline is exactly the target, and in calendars open round the
/// clock the deadline is exactly that many real minutes later (an SLA never
/// gains or loses the hour the clocks change by).
#[test]
fn deadlines_around_every_transition() {
    let example = example();
    let night = parse(NIGHT_RULES);
    let cases: [(&Rules, &str, bool); 6] = [
        (&example, "24x7", true),
        (&example, "us-business", false),
        (&example, "follow-the-sun", false),
        (&example, "eu-business", false),
        (&night, "ny-shifts", true),
        (&night, "dub-shifts", true),
    ];
    let zones = ["America/New_York", "Europe/Dublin"];
    let mut checked = 0;
    for zone in zones {
        let tz = jiff::tz::TimeZoneDatabase::bundled().get(zone).unwrap();
        for t in transitions(&tz) {
            for (rules, name, round_the_clock) in cases {
                let cal = rules.calendar(name).unwrap();
                for k in -8i64..=8 {
                    let start = t.checked_add(SignedDuration::from_mins(15 * k)).unwrap();
                    for n in [1u32, 30, 59, 60, 61, 90, 120, 600] {
                        let d = cal.deadline(start, n, &Pauses::none()).unwrap();
                        assert_eq!(
                            cal.elapsed(start, d, &Pauses::none()),
                            SignedDuration::from_mins(i64::from(n)),
                            "{name}: {n} minutes from {start}"
                        );
                        if round_the_clock {
                            assert_eq!(
                                d.duration_since(start),
                                SignedDuration::from_mins(i64::from(n)),
                                "{name} from {start}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 24 * 6 * 17 * 8);
}
