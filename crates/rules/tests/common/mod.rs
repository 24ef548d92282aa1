//! Shared fixtures for the rules tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test fixtures: a failure should stop the test loudly.
#![allow(dead_code)]

use jiff::Timestamp;
use meridian_rules::Rules;

pub const EXAMPLE: &str = include_str!("../../../../deploy/rules.example.toml");

pub fn example() -> Rules {
    match Rules::parse("rules.example.toml", EXAMPLE) {
        Ok(rules) => rules,
        Err(e) => panic!("the example rules must parse:\n{e}"),
    }
}

pub fn parse(text: &str) -> Rules {
    match Rules::parse("rules.toml", text) {
        Ok(rules) => rules,
        Err(e) => panic!("rules must parse:\n{e}"),
    }
}

pub fn errors(text: &str) -> String {
    match Rules::parse("rules.toml", text) {
        Ok(_) => panic!("rules were accepted but should not be:\n{text}"),
        Err(e) => format!("{e}\n"),
    }
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Round-the-clock coverage in New York by three shifts whose boundaries sit
/// on the DST gap (02:00–03:00 in March) and fold (01:00–02:00 in November),
/// plus a shift that starts inside the gap.
pub const NIGHT_RULES: &str = r#"
version = "night"
overlap_minutes = 15

[[regions]]
id = "ny"
index = 0
time_zone = "America/New_York"
skills = ["general"]
capacity = 10

[[regions.shifts]]
name = "evening"
days = ["mon-sun"]
start = "18:00"
end = "01:30"
queue_owner = "evening-lead"

[[regions.shifts]]
name = "night"
days = ["mon-sun"]
start = "01:30"
end = "02:30"
queue_owner = "night-lead"

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "02:30"
end = "18:00"
queue_owner = "day-lead"

[[regions]]
id = "dub"
index = 1
time_zone = "Europe/Dublin"
skills = ["general"]
capacity = 10

[[regions.shifts]]
name = "late"
days = ["mon-sun"]
start = "12:00"
end = "01:30"
queue_owner = "dub-late"

[[regions.shifts]]
name = "early"
days = ["mon-sun"]
start = "01:30"
end = "12:00"
queue_owner = "dub-early"

[calendars.ny-shifts]
regions = ["ny"]

[calendars.dub-shifts]
regions = ["dub"]

[tiers.gold]
calendar = "ny-shifts"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 600
"#;
