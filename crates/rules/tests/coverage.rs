//! Coverage simulation: the grid, gaps, knowledge-parity gaps, and the SVG.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use expect_test::expect;
use jiff::civil::date;
use meridian_rules::{CoverageRowKind, render};

#[test]
fn a_week_of_the_example() {
    let rules = example();
    let coverage = rules.coverage(date(2026, 6, 1), 7);
    assert_eq!(coverage.rows.len(), 3 + 4 + 1);
    assert!(coverage.rows.iter().all(|r| r.minutes.len() == 7 * 24));
    expect![[r#"
        coverage 2026-06-01 to 2026-06-07 (7 days), UTC hours, rules 2026.06-1
        █ covered all hour   ▒ part of the hour   · not covered

        regions
          us-east
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ██████ ██████
            Tue 2026-06-02  █····· ······ ██████ ██████
            Wed 2026-06-03  █····· ······ ██████ ██████
            Thu 2026-06-04  █····· ······ ██████ ██████
            Fri 2026-06-05  █····· ······ ██████ ██████
            Sat 2026-06-06  █····· ······ ··████ ████··
            Sun 2026-06-07  ······ ······ ··████ ████··
          eu-west
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ······ ······
            Tue 2026-06-02  ······ ·█████ ████·· ······
            Wed 2026-06-03  ······ ·█████ ████·· ······
            Thu 2026-06-04  ······ ·█████ ████·· ······
            Fri 2026-06-05  ······ ·█████ ████·· ······
            Sat 2026-06-06  ······ ······ ······ ······
            Sun 2026-06-07  ······ ······ ······ ······
          apac-south
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ······ ·····█
            Tue 2026-06-02  ██████ ██···· ······ ·····█
            Wed 2026-06-03  ██████ ██···· ······ ·····█
            Thu 2026-06-04  ██████ ██···· ······ ·····█
            Fri 2026-06-05  ██████ ██···· ······ ······
            Sat 2026-06-06  ······ ······ ······ ······
            Sun 2026-06-07  ······ ······ ······ ·····█

        skills
          billing
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ██████ ██████
            Tue 2026-06-02  █····· ·█████ ██████ ██████
            Wed 2026-06-03  █····· ·█████ ██████ ██████
            Thu 2026-06-04  █····· ·█████ ██████ ██████
            Fri 2026-06-05  █····· ·█████ ██████ ██████
            Sat 2026-06-06  █····· ······ ··████ ████··
            Sun 2026-06-07  ······ ······ ··████ ████··
          networking
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ██████ ██████
            Tue 2026-06-02  ██████ ██···· ██████ ██████
            Wed 2026-06-03  ██████ ██···· ██████ ██████
            Thu 2026-06-04  ██████ ██···· ██████ ██████
            Fri 2026-06-05  ██████ ██···· ██████ ██████
            Sat 2026-06-06  █····· ······ ··████ ████··
            Sun 2026-06-07  ······ ······ ··████ ████·█
          general
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ██████ ██████
            Tue 2026-06-02  ██████ ██████ ██████ ██████
            Wed 2026-06-03  ██████ ██████ ██████ ██████
            Thu 2026-06-04  ██████ ██████ ██████ ██████
            Fri 2026-06-05  ██████ ██████ ██████ ██████
            Sat 2026-06-06  █····· ······ ··████ ████··
            Sun 2026-06-07  ······ ······ ··████ ████·█
          database
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ······ ·····█
            Tue 2026-06-02  ██████ ██████ ████·· ·····█
            Wed 2026-06-03  ██████ ██████ ████·· ·····█
            Thu 2026-06-04  ██████ ██████ ████·· ·····█
            Fri 2026-06-05  ██████ ██████ ████·· ······
            Sat 2026-06-06  ······ ······ ······ ······
            Sun 2026-06-07  ······ ······ ······ ·····█

        all regions together
          any region
                            00     06     12     18
            Mon 2026-06-01  ······ ······ ██████ ██████
            Tue 2026-06-02  ██████ ██████ ██████ ██████
            Wed 2026-06-03  ██████ ██████ ██████ ██████
            Thu 2026-06-04  ██████ ██████ ██████ ██████
            Fri 2026-06-05  ██████ ██████ ██████ ██████
            Sat 2026-06-06  █····· ······ ··████ ████··
            Sun 2026-06-07  ······ ······ ··████ ████·█

        gaps (hours no region fully covers): 42 h in 4 runs
          Mon 2026-06-01 00:00 → Mon 2026-06-01 12:00 UTC (12 h)
          Sat 2026-06-06 01:00 → Sat 2026-06-06 14:00 UTC (13 h)
          Sat 2026-06-06 22:00 → Sun 2026-06-07 14:00 UTC (16 h)
          Sun 2026-06-07 22:00 → Sun 2026-06-07 23:00 UTC (1 h)
        holidays and extra hours in this window:
          Mon 2026-06-01  apac-south: closed all day "Vesak Day (observed)" (2026-06-01)
          Mon 2026-06-01  eu-west: closed all day "June Bank Holiday" (2026-06-01)
        knowledge-parity gaps (someone is on shift, nobody with the skill):
          billing: 25 h
            Tue 2026-06-02 01:00 → Tue 2026-06-02 07:00 UTC (6 h)
            Wed 2026-06-03 01:00 → Wed 2026-06-03 07:00 UTC (6 h)
            Thu 2026-06-04 01:00 → Thu 2026-06-04 07:00 UTC (6 h)
            Fri 2026-06-05 01:00 → Fri 2026-06-05 07:00 UTC (6 h)
            Sun 2026-06-07 23:00 → Mon 2026-06-08 00:00 UTC (1 h)
          networking: 16 h
            Tue 2026-06-02 08:00 → Tue 2026-06-02 12:00 UTC (4 h)
            Wed 2026-06-03 08:00 → Wed 2026-06-03 12:00 UTC (4 h)
            Thu 2026-06-04 08:00 → Thu 2026-06-04 12:00 UTC (4 h)
            Fri 2026-06-05 08:00 → Fri 2026-06-05 12:00 UTC (4 h)
          database: 57 h
            Mon 2026-06-01 12:00 → Mon 2026-06-01 23:00 UTC (11 h)
            Tue 2026-06-02 16:00 → Tue 2026-06-02 23:00 UTC (7 h)
            Wed 2026-06-03 16:00 → Wed 2026-06-03 23:00 UTC (7 h)
            Thu 2026-06-04 16:00 → Thu 2026-06-04 23:00 UTC (7 h)
            Fri 2026-06-05 16:00 → Sat 2026-06-06 01:00 UTC (9 h)
            Sat 2026-06-06 14:00 → Sat 2026-06-06 22:00 UTC (8 h)
            Sun 2026-06-07 14:00 → Sun 2026-06-07 22:00 UTC (8 h)
    "#]]
    .assert_eq(&render::coverage_table(&coverage));
}

#[test]
fn full_coverage_has_no_gaps() {
    let rules = parse(NIGHT_RULES);
    // Across the March change in both zones.
    let coverage = rules.coverage(date(2026, 3, 7), 24);
    assert!(coverage.gaps.is_empty(), "{:?}", coverage.gaps);
    assert!(coverage.parity_gaps.is_empty());
    let any = coverage
        .rows
        .iter()
        .find(|r| r.kind == CoverageRowKind::Any)
        .unwrap();
    assert!(any.minutes.iter().all(|m| *m == 60));
}

#[test]
fn partial_hours_are_counted_in_minutes() {
    let rules = example();
    // Christmas Eve: us-east closes at 13:00 EST = 18:00Z, eu-west at 12:30 GMT.
    let coverage = rules.coverage(date(2026, 12, 24), 1);
    let eu = coverage.rows.iter().find(|r| r.name == "eu-west").unwrap();
    assert_eq!(&eu.minutes[8..13], &[60, 60, 60, 60, 30]);
    let us = coverage.rows.iter().find(|r| r.name == "us-east").unwrap();
    assert_eq!(&us.minutes[12..19], &[0, 60, 60, 60, 60, 60, 0]);
}

#[test]
fn svg_is_well_formed_and_marks_gaps() {
    let rules = example();
    let coverage = rules.coverage(date(2026, 6, 1), 7);
    let svg = render::coverage_svg(&coverage);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect").count(), 1 + 8 * 7 * 24);
    assert_eq!(
        svg.matches("<rect").count(),
        svg.matches("</rect>").count() + 1
    );
    assert!(svg.contains("#c62828"), "gaps are drawn in red");
    assert!(!svg.contains('&') || svg.contains("&amp;") || svg.contains("&lt;"));
}
