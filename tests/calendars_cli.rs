//! The calendar parts of the CLI, through the real binary: `sla deadline
//! --customer`, `rules check` reading an `.ics` feed beside the rules and
//! warning about a region with no holidays ahead, and `rules simulate`
//! listing recurring holidays, ranges and openings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use std::path::Path;
use std::process::{Command, Output};

use expect_test::expect;

const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");

fn meridian(args: &[&str]) -> Output {
    Command::new(MERIDIAN).args(args).output().unwrap()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/rules.example.toml")
        .display()
        .to_string()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn sla_deadline_follows_the_customer_calendar() {
    let file = example();
    let base = [
        "sla",
        "deadline",
        file.as_str(),
        "--tier",
        "standard",
        "--metric",
        "resolution",
    ];
    let start = ["--start", "2026-06-02T14:00:00Z", "--output", "json"];
    let tier = meridian(&[&base[..], &start[..]].concat());
    let tier: serde_json::Value = serde_json::from_str(&stdout(&tier)).unwrap();
    assert_eq!(tier["calendar"], "us-business");
    let own = meridian(&[&base[..], &start[..], &["--customer", "koala-freight"][..]].concat());
    let own: serde_json::Value = serde_json::from_str(&stdout(&own)).unwrap();
    assert_eq!(own["calendar"], "sydney-business");
    assert_eq!(own["deadline"], "2026-06-11T17:00:00+10:00");
}

const RULES: &str = r#"version = "cli-cal"

[[regions]]
id = "eu-west"
index = 1
time_zone = "Europe/London"
capacity = 10
holidays_ics = "bank-holidays.ics"
[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "eu-lead"
[[regions.openings]]
date = "2025-12-27"
start = "10:00"
end = "14:00"
name = "year-end stock-take"

[[regions]]
id = "us-east"
index = 0
time_zone = "America/New_York"
capacity = 10
holidays = [
  { every = "4th thu of nov", name = "Thanksgiving Day" },
  { every = "12-24", to = "12-26", name = "Winter break" },
]
[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "us-lead"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 60
resolution_minutes = 480
"#;

#[test]
fn check_reads_the_feed_beside_the_rules_and_warns_and_simulate_lists_the_days() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let feed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/rules/tests/data/england-and-wales.ics");
    std::fs::copy(feed, dir.path().join("bank-holidays.ics")).unwrap();
    let file = rules.display().to_string();

    // The GOV.UK copy ends in 2025: eu-west has no holidays in the coming
    // year (the check runs on today's date, which is after 2025).
    let check = meridian(&["rules", "check", &file, "--output", "json"]);
    let check: serde_json::Value = serde_json::from_str(&stdout(&check)).unwrap();
    let warnings: Vec<String> = check["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("warning: region \"eu-west\" has no holidays from "),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("(bank-holidays.ics has none in it)"),
        "{warnings:?}"
    );

    let simulate = meridian(&[
        "rules",
        "simulate",
        &file,
        "--from",
        "2025-12-22",
        "--days",
        "7",
    ]);
    let out = stdout(&simulate);
    let legend = out
        .split("holidays and extra hours in this window:\n")
        .nth(1)
        .unwrap();
    // Lines start with two spaces, which expect! would take as indentation.
    let legend: Vec<&str> = legend
        .split("knowledge-parity")
        .next()
        .unwrap()
        .lines()
        .map(str::trim)
        .collect();
    let legend = legend.join("\n");
    expect![[r#"
        Wed 2025-12-24 to Fri 2025-12-26  us-east: closed all day "Winter break" (every 12-24 to 12-26)
        Thu 2025-12-25  eu-west: closed all day "Christmas Day" (bank-holidays.ics:528)
        Fri 2025-12-26  eu-west: closed all day "Boxing Day" (bank-holidays.ics:536)
        Sat 2025-12-27  eu-west: extra opening 10:00–14:00 "year-end stock-take" (2025-12-27)"#]].assert_eq(&legend);

    // A broken feed is refused with its file and line, like the rules.
    std::fs::write(
        dir.path().join("bank-holidays.ics"),
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:soon\nEND:VEVENT\nEND:VCALENDAR\n",
    )
    .unwrap();
    let refused = meridian(&["rules", "check", &file]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).unwrap();
    let expected = format!(
        "{}:3:1: DTSTART \"soon\" is not a date",
        dir.path().join("bank-holidays.ics").display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}
