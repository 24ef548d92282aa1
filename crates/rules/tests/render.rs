//! Snapshots of the remaining human-facing texts: `rules active` and
//! `sla deadline` (errors, `explain` and the coverage grid have their own).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use expect_test::expect;
use meridian_rules::{Metric, Pauses, render};

#[test]
fn active_regions_during_an_overlap() {
    let rules = example();
    let at = ts("2026-06-02T22:45:00Z");
    let text = render::active_table(&rules, at, &rules.active_at(at))
        .replace(rules.content_hash(), "HASH");
    expect![[r#"
        at 2026-06-02 22:45 UTC (rules 2026.06-1+HASH)
        REGION      STATE     SHIFT  QUEUE OWNER          LOCAL WINDOW                                         UTC WINDOW
        us-east     on_shift  late   us-east-late-lead    Tue 2026-06-02 17:00 EDT → Tue 2026-06-02 21:00 EDT  2026-06-02 21:00 UTC → 2026-06-03 01:00 UTC
        apac-south  overlap   day    apac-south-day-lead  Wed 2026-06-03 07:00 +08 → Wed 2026-06-03 16:00 +08  2026-06-02 23:00 UTC → 2026-06-03 08:00 UTC
        next change: apac-south starts shift "day" at 2026-06-02 23:00 UTC
    "#]].assert_eq(&text);
}

#[test]
fn active_regions_on_a_partial_holiday_and_when_nobody_works() {
    let rules = example();
    let at = ts("2026-12-24T17:00:00Z");
    let text = render::active_table(&rules, at, &rules.active_at(at))
        .replace(rules.content_hash(), "HASH");
    expect![[r#"
        at 2026-12-24 17:00 UTC (rules 2026.06-1+HASH)
        REGION   STATE     SHIFT  QUEUE OWNER           LOCAL WINDOW                                         UTC WINDOW
        us-east  on_shift  day    us-east-day-lead      Thu 2026-12-24 08:00 EST → Thu 2026-12-24 17:00 EST  2026-12-24 13:00 UTC → 2026-12-24 22:00 UTC
                                  (holiday cuts it to)  Thu 2026-12-24 08:00 EST → Thu 2026-12-24 13:00 EST  2026-12-24 13:00 UTC → 2026-12-24 18:00 UTC
        next change: us-east ends shift "day" at 2026-12-24 18:00 UTC
    "#]].assert_eq(&text);
    let at = ts("2026-06-06T03:00:00Z");
    let text = render::active_table(&rules, at, &rules.active_at(at))
        .replace(rules.content_hash(), "HASH");
    expect![[r#"
        at 2026-06-06 03:00 UTC (rules 2026.06-1+HASH)
        no region is on shift
        next change: us-east starts shift "weekend" at 2026-06-06 14:00 UTC
    "#]]
    .assert_eq(&text);
}

#[test]
fn a_deadline_with_a_pause() {
    let rules = example();
    let pauses = Pauses::new([(ts("2026-06-05T20:30:00Z"), ts("2026-06-08T14:00:00Z"))]).unwrap();
    let d = rules
        .sla_deadline(
            "standard",
            Metric::Resolution,
            ts("2026-06-05T20:00:00Z"),
            &pauses,
        )
        .unwrap();
    expect![[r#"
        2026-06-11T18:30:00-04:00
          tier standard, resolution = 2880 minutes in calendar "us-business" (America/New_York), from 2026-06-05T20:00:00Z; 1350 minutes of it paused
    "#]].assert_eq(&render::deadline_text(&d));
}
