//! A bad rules file is refused with every problem, each at its line and
//! column with a sentence that says what to change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use expect_test::{Expect, expect};
use meridian_rules::{Rules, render};

const BASE: &str = r#"version = "t1"
overlap_minutes = 30

[[regions]]
id = "eu-west"
index = 1
time_zone = "Europe/London"
skills = ["billing"]
capacity = 10

[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "eu-lead"

[[regions.holidays]]
date = "2026-12-25"

[[regions]]
id = "us-east"
index = 0
time_zone = "America/New_York"
skills = ["billing"]
capacity = 10

[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "us-lead"

[calendars.eu-hours]
regions = ["eu-west"]

[tiers.standard]
calendar = "eu-hours"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 600

[residency.eu-only]
regions = ["eu-west"]
"#;

fn check(text: &str, expected: Expect) {
    expected.assert_eq(&errors(text));
}

#[test]
fn the_base_and_the_example_are_accepted() {
    let rules = parse(BASE);
    assert_eq!(
        render::check_ok("rules.toml", &rules),
        "rules.toml: ok, version t1, 2 regions"
    );
    let rules = example();
    assert_eq!(
        render::check_ok("rules.example.toml", &rules),
        "rules.example.toml: ok, version 2026.06-1, 3 regions"
    );
    assert_eq!(rules.content_hash().len(), 16);
    assert_ne!(
        parse(&BASE.replace("t1", "t2")).content_hash(),
        parse(BASE).content_hash()
    );
}

#[test]
fn unknown_time_zone_suggests_the_closest() {
    check(
        &BASE.replace("Europe/London", "Europe/Londn"),
        expect![[r#"
            rules.toml:7:13: unknown time zone "Europe/Londn" (did you mean "Europe/London"?)
        "#]],
    );
    check(
        &BASE.replace("Europe/London", "europe/london"),
        expect![[r#"
            rules.toml:7:13: unknown time zone "europe/london" (did you mean "Europe/London"?)
        "#]],
    );
    check(
        &BASE.replace("Europe/London", "Nowhere"),
        expect![[r#"
            rules.toml:7:13: unknown time zone "Nowhere"; use an IANA name such as "Europe/London"
        "#]],
    );
}

#[test]
fn overlapping_and_empty_shifts() {
    let overlapping = BASE.replace(
        "queue_owner = \"eu-lead\"\n",
        "queue_owner = \"eu-lead\"\n\n[[regions.shifts]]\nname = \"late\"\ndays = [\"fri-mon\"]\nstart = \"16:00\"\nend = \"02:00\"\nqueue_owner = \"eu-late\"\n",
    );
    check(
        &overlapping,
        expect![[r#"
            rules.toml:17:1: shift "late" (fri-mon 16:00–02:00) overlaps shift "shift 1" (mon-fri 09:00–17:00) at line 11; change the days or times so the two no longer overlap
        "#]],
    );
    // A late shift from Sunday that crosses midnight into Monday morning
    // overlaps Monday's day shift only if it runs past 09:00.
    let wrapping = overlapping
        .replace("end = \"02:00\"", "end = \"09:30\"")
        .replace("fri-mon", "sun")
        .replace("16:00", "20:00");
    check(
        &wrapping,
        expect![[r#"
            rules.toml:17:1: shift "late" (sun 20:00–09:30) overlaps shift "shift 1" (mon-fri 09:00–17:00) at line 11; change the days or times so the two no longer overlap
        "#]],
    );
    let fine = overlapping
        .replace("end = \"02:00\"", "end = \"09:00\"")
        .replace("fri-mon", "sun")
        .replace("16:00", "20:00");
    parse(&fine);
    check(
        &BASE.replace(
            "end = \"17:00\"\nqueue_owner = \"us-lead\"",
            "end = \"09:00\"\nqueue_owner = \"us-lead\"",
        ),
        expect![[r#"
            rules.toml:30:7: shift "shift 1" is empty: it starts and ends at 09:00; change its end (an end before the start runs past midnight, "24:00" ends at midnight)
        "#]],
    );
    check(
        &BASE.replace(
            "start = \"09:00\"\nend = \"17:00\"\nqueue_owner = \"us-lead\"",
            "start = \"9am\"\nend = \"25:00\"\nqueue_owner = \"\"",
        ),
        expect![[r#"
            rules.toml:29:9: shift start "9am" is not a time of day; write it as HH:MM, such as "09:00"
            rules.toml:30:7: shift end "25:00" is not a time of day; write it as HH:MM, such as "09:00" (or "24:00" for midnight at the end of the day)
            rules.toml:31:15: queue_owner is empty; name the person or team that owns the queue during this shift
        "#]],
    );
}

#[test]
fn invalid_holiday_dates() {
    check(
        &BASE.replace("2026-12-25", "2026-02-30"),
        expect![[r#"
            rules.toml:18:8: holiday date "2026-02-30" is not a valid date: parameter 'day' for `2026-02` is invalid, must be in range `1..=28`; write it as YYYY-MM-DD
        "#]],
    );
    check(
        &BASE.replace(
            "date = \"2026-12-25\"",
            "date = \"christmas\"\nstart = \"13:00\"",
        ),
        expect![[r#"
            rules.toml:18:8: holiday date "christmas" is not a valid date: failed to parse four digit integer as year: invalid digit, expected 0-9 but got c; write it as YYYY-MM-DD
            rules.toml:19:9: a partial holiday needs both start and end; remove both to close the whole day
        "#]],
    );
}

#[test]
fn references_to_things_that_do_not_exist() {
    check(
        &BASE.replace("calendar = \"eu-hours\"", "calendar = \"eu-hour\""),
        expect![[r#"
            rules.toml:37:12: tier "standard" names calendar "eu-hour", which is not defined (did you mean "eu-hours"?); define [calendars.eu-hour] or use "24x7"
        "#]],
    );
    check(
        &BASE.replace(
            "[residency.eu-only]\nregions = [\"eu-west\"]",
            "[residency.eu-only]\nregions = []\n\n[residency.uk]\nregions = [\"uk-south\"]",
        ),
        expect![[r#"
            rules.toml:43:11: residency "eu-only" names no region; list the regions its data may stay in, such as regions = ["eu-west"]
            rules.toml:46:12: residency "uk" names unknown region "uk-south"; the regions are "eu-west", "us-east"
        "#]],
    );
    check(
        &BASE.replace(
            "[calendars.eu-hours]\nregions = [\"eu-west\"]",
            "[calendars.eu-hours]\nregions = [\"eu-wets\"]",
        ),
        expect![[r#"
            rules.toml:34:12: calendar "eu-hours" names unknown region "eu-wets" (did you mean "eu-west"?)
        "#]],
    );
}

#[test]
fn duplicated_regions() {
    check(
        &BASE.replace("id = \"us-east\"\nindex = 0", "id = \"eu-west\"\nindex = 1"),
        expect![[r#"
            rules.toml:21:6: region id "eu-west" is already defined at line 5; give each region a unique id
            rules.toml:22:9: region index 1 is already used by region "eu-west" at line 6; give each region a unique index
        "#]],
    );
    check(
        &BASE
            .replace("index = 0", "index = 1024")
            .replace("id = \"us-east\"", "id = \"US-East\""),
        expect![[r#"
            rules.toml:21:6: region id is not valid: "US-East" must start with a lowercase letter
            rules.toml:22:9: region index 1024 is out of range; use 0 to 1023 (it is encoded in ownership epochs)
        "#]],
    );
}

#[test]
fn unknown_keys_and_bad_toml() {
    check(
        &BASE.replace("capacity = 10\n\n[[regions.shifts]]\ndays = [\"mon-fri\"]\nstart = \"09:00\"\nend = \"17:00\"\nqueue_owner = \"us-lead\"", "capacity = 10\n\n[[regions.shifts]]\ndays = [\"mon-fri\"]\nstart = \"09:00\"\nend = \"17:00\"\nqueue_owner = \"us-lead\"\nowner = \"x\""),
        expect![[r#"
            rules.toml:32:1: unknown field `owner`, expected one of `name`, `days`, `start`, `end`, `queue_owner`
        "#]],
    );
    check(
        &format!("verison = \"x\"\n{BASE}"),
        expect![[r#"
            rules.toml:1:1: unknown field `verison`, expected one of `version`, `overlap_minutes`, `routing`, `regions`, `calendars`, `tiers`, `residency`, `spike`, `customers`
        "#]],
    );
    check(
        &BASE.replace("capacity = 10\n", "capacity = \n"),
        expect![[r#"
            rules.toml:9:12: string values must be quoted, expected literal string
        "#]],
    );
    check(
        "",
        expect![[r#"
            rules.toml:1:1: missing field `version`
        "#]],
    );
}

#[test]
fn routing_policy_mistakes() {
    check(
        &format!("{BASE}\n[routing]\nout_of_hours = \"on_call\"\nload_weight = -1.0\n"),
        expect![[r#"
            rules.toml:46:16: out_of_hours = "on_call" needs on_call_region = "REGION" in [routing]
            rules.toml:47:15: load_weight is -1; use a number from 0 to 100
        "#]],
    );
    check(
        &format!("{BASE}\n[routing]\nout_of_hours = \"pager\"\n"),
        expect![[r#"
            rules.toml:46:16: unknown out_of_hours policy "pager"; use "next_on_shift", "on_call" or "escalation"
        "#]],
    );
}

/// Every problem in a file is reported at once, in file order.
#[test]
fn all_problems_at_once() {
    let text = BASE
        .replace("Europe/London", "Europe/Londn")
        .replace("2026-12-25", "2026-13-01")
        .replace("id = \"us-east\"", "id = \"eu-west\"")
        .replace("calendar = \"eu-hours\"", "calendar = \"uk-hours\"")
        .replace("first_response_minutes = 60", "first_response_minutes = 0")
        .replace(
            "[residency.eu-only]\nregions = [\"eu-west\"]",
            "[residency.eu-only]\nregions = []",
        );
    let err = Rules::parse("rules.toml", &text).unwrap_err();
    assert_eq!(err.len(), 6);
    expect![[r#"
        rules.toml:7:13: unknown time zone "Europe/Londn" (did you mean "Europe/London"?)
        rules.toml:18:8: holiday date "2026-13-01" is not a valid date: failed to parse two digit integer as month: parameter 'month' is not in the required range of 1..=12; write it as YYYY-MM-DD
        rules.toml:21:6: region id "eu-west" is already defined at line 5; give each region a unique id
        rules.toml:37:12: tier "standard" names calendar "uk-hours", which is not defined (did you mean "eu-hours"?); define [calendars.uk-hours] or use "24x7"
        rules.toml:38:26: first_response_minutes is 0; use a number of minutes from 1 to 527040
        rules.toml:43:11: residency "eu-only" names no region; list the regions its data may stay in, such as regions = ["eu-west"]
    "#]]
    .assert_eq(&format!("{err}\n"));
}

#[test]
fn oncall_names_a_notification_target() {
    let with = |value: &str| {
        BASE.replacen(
            "capacity = 10\n",
            &format!("capacity = 10\noncall = {value}\n"),
            1,
        )
    };
    let rules = parse(&with("\"eu-pager\""));
    assert_eq!(
        rules.region("eu-west").unwrap().oncall.as_deref(),
        Some("eu-pager")
    );
    assert_eq!(rules.region("us-east").unwrap().oncall, None);
    check(
        &with("\"\""),
        expect![[r#"
            rules.toml:10:10: oncall "" is not a target name; use 1 to 64 letters, digits, '-', '_' or '.', naming a notification target such as "us-east-pager"
        "#]],
    );
    check(
        &with("\"pager duty\""),
        expect![[r#"
            rules.toml:10:10: oncall "pager duty" is not a target name; use 1 to 64 letters, digits, '-', '_' or '.', naming a notification target such as "us-east-pager"
        "#]],
    );
    check(
        &with("7"),
        expect![[r#"
            rules.toml:10:10: invalid type: integer `7`, expected a string
        "#]],
    );
}
