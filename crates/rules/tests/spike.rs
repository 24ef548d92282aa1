//! The `[spike]` table: defaults, every setting read, each bad value refused
//! at its line and column; and who owns a region's queue at an instant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use expect_test::expect;
use jiff::SignedDuration;
use meridian_core::SpikeConfig;

const BASE: &str = r#"version = "t1"

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

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 600
"#;

#[test]
fn without_a_table_no_intake_is_watched() {
    assert_eq!(parse(BASE).spike(), None);
}

#[test]
fn an_empty_table_takes_the_defaults_and_the_example_sets_them_all() {
    assert_eq!(
        parse(&format!("{BASE}\n[spike]\n")).spike(),
        Some(&SpikeConfig::default())
    );
    assert_eq!(example().spike(), Some(&SpikeConfig::default()));
}

#[test]
fn every_setting_is_read() {
    let rules = parse(&format!(
        "{BASE}\n[spike]\nbucket = \"5m\"\nalpha = 0.25\nthreshold_sigmas = 3\nclear_sigmas = 1.5\nmin_count = 4\nwarmup_buckets = 6\n"
    ));
    let expected = SpikeConfig {
        bucket: SignedDuration::from_mins(5),
        alpha: 0.25,
        threshold_sigmas: 3.0,
        clear_sigmas: 1.5,
        min_count: 4,
        warmup_buckets: 6,
    };
    assert_eq!(rules.spike(), Some(&expected));
    for (text, secs) in [("30s", 30), ("2h", 7200), ("24h", 86_400), ("1s", 1)] {
        let rules = parse(&format!("{BASE}\n[spike]\nbucket = \"{text}\"\n"));
        assert_eq!(
            rules.spike().unwrap().bucket,
            SignedDuration::from_secs(secs),
            "{text}"
        );
    }
}

#[test]
fn bad_values_are_refused_where_they_are_written() {
    let text = format!(
        "{BASE}\n[spike]\nbucket = \"90 minutes\"\nalpha = 1.5\nthreshold_sigmas = -2\nclear_sigmas = nan\nmin_count = 0\nwarmup_buckets = 5000000\n"
    );
    expect![[r#"
        rules.toml:23:10: spike bucket is "90 minutes"; use a whole number of seconds, minutes or hours from "1s" to "24h", such as "1m"
        rules.toml:24:9: spike alpha is 1.5; use a number above 0 and at most 1 (the weight of the newest bucket in the baseline, such as 0.1)
        rules.toml:25:20: spike threshold_sigmas is -2; use a number above 0 and at most 100
        rules.toml:26:16: spike clear_sigmas is NaN; use a number from 0 up to threshold_sigmas
        rules.toml:27:13: spike min_count is 0; use a whole number from 1 to 1000000
        rules.toml:28:18: spike warmup_buckets is 5000000; use a whole number from 1 to 1000000
    "#]]
    .assert_eq(&errors(&text));
    expect![[r#"
        rules.toml:23:16: spike clear_sigmas (5) must be below threshold_sigmas (4), or an alert could never stay raised
    "#]]
    .assert_eq(&errors(&format!("{BASE}\n[spike]\nclear_sigmas = 5\n")));
    expect![[r#"
        rules.toml:23:10: spike bucket is "0m"; use a whole number of seconds, minutes or hours from "1s" to "24h", such as "1m"
    "#]]
    .assert_eq(&errors(&format!("{BASE}\n[spike]\nbucket = \"0m\"\n")));
    expect![[r#"
        rules.toml:23:10: spike bucket is "25h"; use a whole number of seconds, minutes or hours from "1s" to "24h", such as "1m"
    "#]]
    .assert_eq(&errors(&format!("{BASE}\n[spike]\nbucket = \"25h\"\n")));
    expect![[r#"
        rules.toml:23:1: unknown field `threshold`, expected one of `bucket`, `alpha`, `threshold_sigmas`, `clear_sigmas`, `min_count`, `warmup_buckets`
    "#]]
    .assert_eq(&errors(&format!("{BASE}\n[spike]\nthreshold = 3\n")));
}

#[test]
fn the_queue_owner_is_the_shift_on_duty() {
    let rules = example();
    // Monday 14:00 UTC is 10:00 in New York: us-east's day shift.
    assert_eq!(
        rules
            .queue_owner_at("us-east", ts("2026-06-01T14:00:00Z"))
            .as_deref(),
        Some("us-east-day-lead")
    );
    assert_eq!(
        rules
            .queue_owner_at("us-east", ts("2026-06-01T22:00:00Z"))
            .as_deref(),
        Some("us-east-late-lead")
    );
    // Off shift, whoever owns the queue where new tickets go now.
    assert_eq!(
        rules
            .queue_owner_at("us-east", ts("2026-06-02T04:00:00Z"))
            .as_deref(),
        Some("apac-south-day-lead")
    );
    assert_eq!(
        rules.queue_owner_at("mars-north", ts("2026-06-01T14:00:00Z")),
        None
    );
}
