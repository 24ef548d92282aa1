//! Calendars operators keep: recurring holidays in three countries' rules
//! (and Greece's Orthodox Easter) for 2026–2035 against dates written by
//! hand from the official calendars (GOV.UK bank holidays, US OPM federal
//! holidays, German federal holidays, Greek public holidays), observed-day
//! rules, a range across a year boundary, an extra opening, a closure across
//! midnight on DST nights, `.ics` import and a customer's own calendar.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use std::path::Path;

use common::*;
use expect_test::expect;
use jiff::civil::Date;
use meridian_rules::{Calendar, Metric, Pauses, Rules, render};

/// A year's public holidays of three countries, in a few lines each.
const COUNTRIES: &str = r#"version = "cal-1"

[[regions]]
id = "eu-west"
index = 1
time_zone = "Europe/London"
capacity = 10
[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "eu-lead"

[calendars.uk]
time_zone = "Europe/London"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays = [
  { every = "01-01", observed = "next_weekday", name = "New Year's Day" },
  { every = "easter-2", name = "Good Friday" },
  { every = "easter+1", name = "Easter Monday" },
  { every = "1st mon of may", name = "Early May bank holiday" },
  { every = "last mon of may", name = "Spring bank holiday" },
  { every = "last mon of aug", name = "Summer bank holiday" },
  { every = "12-25", observed = "next_weekday", name = "Christmas Day" },
  { every = "12-26", observed = "next_weekday", name = "Boxing Day" },
]

[calendars.us]
time_zone = "America/New_York"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays = [
  { every = "01-01", observed = "nearest_weekday", name = "New Year's Day" },
  { every = "3rd mon of jan", name = "Martin Luther King Jr. Day" },
  { every = "last mon of may", name = "Memorial Day" },
  { every = "06-19", observed = "nearest_weekday", name = "Juneteenth" },
  { every = "07-04", observed = "nearest_weekday", name = "Independence Day" },
  { every = "1st mon of sep", name = "Labor Day" },
  { every = "4th thu of nov", name = "Thanksgiving Day" },
  { every = "12-25", observed = "nearest_weekday", name = "Christmas Day" },
]

[calendars.de]
time_zone = "Europe/Berlin"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays = [
  { every = "01-01", name = "Neujahr" },
  { every = "easter-2", name = "Karfreitag" },
  { every = "easter+1", name = "Ostermontag" },
  { every = "05-01", name = "Tag der Arbeit" },
  { every = "easter+39", name = "Christi Himmelfahrt" },
  { every = "easter+50", name = "Pfingstmontag" },
  { every = "10-03", name = "Tag der Deutschen Einheit" },
  { every = "12-24", to = "01-01", name = "Betriebsferien" },
]

[calendars.gr]
time_zone = "Europe/Athens"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays = [
  { every = "orthodox_easter-2", name = "Megali Paraskevi" },
  { every = "orthodox_easter+1", name = "Deftera tou Pascha" },
  { every = "orthodox_easter+50", name = "Agiou Pnevmatos" },
]

[tiers.standard]
calendar = "uk"
first_response_minutes = 60
next_response_minutes = 60
resolution_minutes = 480
"#;

fn rules() -> Rules {
    parse(COUNTRIES)
}

/// The dates in 2026–2035 of the holiday called `name`.
fn dates(calendar: &Calendar, name: &str) -> Vec<String> {
    let from = Date::new(2026, 1, 1).unwrap();
    let to = Date::new(2035, 12, 31).unwrap();
    let (holidays, _) = calendar.days_between(from, to);
    holidays
        .iter()
        .filter(|h| h.name == name)
        .map(|h| h.date.to_string())
        .collect()
}

fn check(rules: &Rules, calendar: &str, name: &str, expected: &[&str]) {
    let got = dates(rules.calendar(calendar).unwrap(), name);
    assert_eq!(got, expected, "{calendar}: {name}");
}

#[test]
fn fixed_dates_every_year() {
    let r = rules();
    let years: Vec<String> = (2026..=2035).map(|y| format!("{y}-10-03")).collect();
    let years: Vec<&str> = years.iter().map(String::as_str).collect();
    check(&r, "de", "Tag der Deutschen Einheit", &years);
    let may: Vec<String> = (2026..=2035).map(|y| format!("{y}-05-01")).collect();
    let may: Vec<&str> = may.iter().map(String::as_str).collect();
    check(&r, "de", "Tag der Arbeit", &may);
}

#[test]
fn nth_and_last_weekdays_of_a_month() {
    let r = rules();
    // US: OPM federal holidays.
    check(
        &r,
        "us",
        "Thanksgiving Day",
        &[
            "2026-11-26",
            "2027-11-25",
            "2028-11-23",
            "2029-11-22",
            "2030-11-28",
            "2031-11-27",
            "2032-11-25",
            "2033-11-24",
            "2034-11-23",
            "2035-11-22",
        ],
    );
    check(
        &r,
        "us",
        "Memorial Day",
        &[
            "2026-05-25",
            "2027-05-31",
            "2028-05-29",
            "2029-05-28",
            "2030-05-27",
            "2031-05-26",
            "2032-05-31",
            "2033-05-30",
            "2034-05-29",
            "2035-05-28",
        ],
    );
    check(
        &r,
        "us",
        "Martin Luther King Jr. Day",
        &[
            "2026-01-19",
            "2027-01-18",
            "2028-01-17",
            "2029-01-15",
            "2030-01-21",
            "2031-01-20",
            "2032-01-19",
            "2033-01-17",
            "2034-01-16",
            "2035-01-15",
        ],
    );
    check(
        &r,
        "us",
        "Labor Day",
        &[
            "2026-09-07",
            "2027-09-06",
            "2028-09-04",
            "2029-09-03",
            "2030-09-02",
            "2031-09-01",
            "2032-09-06",
            "2033-09-05",
            "2034-09-04",
            "2035-09-03",
        ],
    );
    // UK: GOV.UK bank holidays.
    check(
        &r,
        "uk",
        "Early May bank holiday",
        &[
            "2026-05-04",
            "2027-05-03",
            "2028-05-01",
            "2029-05-07",
            "2030-05-06",
            "2031-05-05",
            "2032-05-03",
            "2033-05-02",
            "2034-05-01",
            "2035-05-07",
        ],
    );
    check(
        &r,
        "uk",
        "Spring bank holiday",
        &[
            "2026-05-25",
            "2027-05-31",
            "2028-05-29",
            "2029-05-28",
            "2030-05-27",
            "2031-05-26",
            "2032-05-31",
            "2033-05-30",
            "2034-05-29",
            "2035-05-28",
        ],
    );
    check(
        &r,
        "uk",
        "Summer bank holiday",
        &[
            "2026-08-31",
            "2027-08-30",
            "2028-08-28",
            "2029-08-27",
            "2030-08-26",
            "2031-08-25",
            "2032-08-30",
            "2033-08-29",
            "2034-08-28",
            "2035-08-27",
        ],
    );
}

#[test]
fn days_relative_to_western_easter() {
    let r = rules();
    let good_friday = [
        "2026-04-03",
        "2027-03-26",
        "2028-04-14",
        "2029-03-30",
        "2030-04-19",
        "2031-04-11",
        "2032-03-26",
        "2033-04-15",
        "2034-04-07",
        "2035-03-23",
    ];
    let easter_monday = [
        "2026-04-06",
        "2027-03-29",
        "2028-04-17",
        "2029-04-02",
        "2030-04-22",
        "2031-04-14",
        "2032-03-29",
        "2033-04-18",
        "2034-04-10",
        "2035-03-26",
    ];
    check(&r, "uk", "Good Friday", &good_friday);
    check(&r, "uk", "Easter Monday", &easter_monday);
    check(&r, "de", "Karfreitag", &good_friday);
    check(&r, "de", "Ostermontag", &easter_monday);
    check(
        &r,
        "de",
        "Christi Himmelfahrt",
        &[
            "2026-05-14",
            "2027-05-06",
            "2028-05-25",
            "2029-05-10",
            "2030-05-30",
            "2031-05-22",
            "2032-05-06",
            "2033-05-26",
            "2034-05-18",
            "2035-05-03",
        ],
    );
    check(
        &r,
        "de",
        "Pfingstmontag",
        &[
            "2026-05-25",
            "2027-05-17",
            "2028-06-05",
            "2029-05-21",
            "2030-06-10",
            "2031-06-02",
            "2032-05-17",
            "2033-06-06",
            "2034-05-29",
            "2035-05-14",
        ],
    );
}

#[test]
fn days_relative_to_orthodox_easter() {
    let r = rules();
    check(
        &r,
        "gr",
        "Megali Paraskevi",
        &[
            "2026-04-10",
            "2027-04-30",
            "2028-04-14",
            "2029-04-06",
            "2030-04-26",
            "2031-04-11",
            "2032-04-30",
            "2033-04-22",
            "2034-04-07",
            "2035-04-27",
        ],
    );
    check(
        &r,
        "gr",
        "Deftera tou Pascha",
        &[
            "2026-04-13",
            "2027-05-03",
            "2028-04-17",
            "2029-04-09",
            "2030-04-29",
            "2031-04-14",
            "2032-05-03",
            "2033-04-25",
            "2034-04-10",
            "2035-04-30",
        ],
    );
    check(
        &r,
        "gr",
        "Agiou Pnevmatos",
        &[
            "2026-06-01",
            "2027-06-21",
            "2028-06-05",
            "2029-05-28",
            "2030-06-17",
            "2031-06-02",
            "2032-06-21",
            "2033-06-13",
            "2034-05-29",
            "2035-06-18",
        ],
    );
}

#[test]
fn observed_days_move_off_weekends() {
    let r = rules();
    // UK substitute days: the next weekday that is not already a holiday,
    // so Christmas on a Sunday (2033) is observed on Tuesday after Boxing
    // Day's Monday, as GOV.UK did in 2022.
    check(
        &r,
        "uk",
        "New Year's Day",
        &[
            "2026-01-01",
            "2027-01-01",
            "2028-01-03",
            "2029-01-01",
            "2030-01-01",
            "2031-01-01",
            "2032-01-01",
            "2033-01-03",
            "2034-01-02",
            "2035-01-01",
        ],
    );
    check(
        &r,
        "uk",
        "Christmas Day",
        &[
            "2026-12-25",
            "2027-12-27",
            "2028-12-25",
            "2029-12-25",
            "2030-12-25",
            "2031-12-25",
            "2032-12-27",
            "2033-12-27",
            "2034-12-25",
            "2035-12-25",
        ],
    );
    check(
        &r,
        "uk",
        "Boxing Day",
        &[
            "2026-12-28",
            "2027-12-28",
            "2028-12-26",
            "2029-12-26",
            "2030-12-26",
            "2031-12-26",
            "2032-12-28",
            "2033-12-26",
            "2034-12-26",
            "2035-12-26",
        ],
    );
    // US federal: Saturday to Friday (even into the previous year), Sunday
    // to Monday.
    check(
        &r,
        "us",
        "New Year's Day",
        &[
            "2026-01-01",
            "2027-01-01",
            "2027-12-31",
            "2029-01-01",
            "2030-01-01",
            "2031-01-01",
            "2032-01-01",
            "2032-12-31",
            "2034-01-02",
            "2035-01-01",
        ],
    );
    check(
        &r,
        "us",
        "Independence Day",
        &[
            "2026-07-03",
            "2027-07-05",
            "2028-07-04",
            "2029-07-04",
            "2030-07-04",
            "2031-07-04",
            "2032-07-05",
            "2033-07-04",
            "2034-07-04",
            "2035-07-04",
        ],
    );
    check(
        &r,
        "us",
        "Juneteenth",
        &[
            "2026-06-19",
            "2027-06-18",
            "2028-06-19",
            "2029-06-19",
            "2030-06-19",
            "2031-06-19",
            "2032-06-18",
            "2033-06-20",
            "2034-06-19",
            "2035-06-19",
        ],
    );
    check(
        &r,
        "us",
        "Christmas Day",
        &[
            "2026-12-25",
            "2027-12-24",
            "2028-12-25",
            "2029-12-25",
            "2030-12-25",
            "2031-12-25",
            "2032-12-24",
            "2033-12-26",
            "2034-12-25",
            "2035-12-25",
        ],
    );
    // The moved day is what is closed: Friday 3 July 2026 in New York.
    let us = r.calendar("us").unwrap();
    assert!(!us.is_open(ts("2026-07-03T15:00:00Z")));
    assert!(us.is_open(ts("2026-07-02T15:00:00Z")));
}

#[test]
fn a_range_across_a_year_boundary() {
    let r = rules();
    let de = r.calendar("de").unwrap();
    let (holidays, _) = de.days_between(
        Date::new(2026, 12, 1).unwrap(),
        Date::new(2027, 1, 31).unwrap(),
    );
    let ranges: Vec<String> = holidays
        .iter()
        .filter(|h| h.name == "Betriebsferien")
        .map(|h| format!("{} to {}", h.date, h.last))
        .collect();
    assert_eq!(ranges, ["2026-12-24 to 2027-01-01"]);
    // Wednesday 23 December 2026, 16:00 in Berlin (15:00Z): one hour that day,
    // then closed until Monday 4 January 2027 (the 2nd and 3rd are a
    // weekend); the second hour ends at 10:00 CET.
    let due = de
        .deadline(ts("2026-12-23T15:00:00Z"), 120, &Pauses::none())
        .unwrap();
    assert_eq!(due, ts("2027-01-04T09:00:00Z"));
}

/// The UK calendar with an extra Saturday opening before a release.
fn with_opening(opening: &str) -> Rules {
    parse(&COUNTRIES.replace(
        "  { every = \"12-26\", observed = \"next_weekday\", name = \"Boxing Day\" },\n]",
        &format!("  {{ every = \"12-26\", observed = \"next_weekday\", name = \"Boxing Day\" }},\n]\n{opening}"),
    ))
}

#[test]
fn an_extra_weekend_opening_moves_a_deadline_earlier() {
    // Friday 12 June 2026, 16:00 BST, three hours to go.
    let start = ts("2026-06-12T15:00:00Z");
    let plain = rules();
    let due = plain
        .sla_deadline("standard", Metric::FirstResponse, start, &Pauses::none())
        .unwrap();
    assert_eq!(
        due.deadline_at,
        ts("2026-06-12T16:00:00Z"),
        "one hour target, within Friday"
    );
    let uk = plain.calendar("uk").unwrap();
    assert_eq!(
        uk.deadline(start, 180, &Pauses::none()).unwrap(),
        ts("2026-06-15T10:00:00Z"),
        "without the opening: Friday's last hour, then Monday 09:00–11:00 BST"
    );
    let opened = with_opening(
        "openings = [{ date = \"2026-06-13\", start = \"10:00\", end = \"14:00\", name = \"release Saturday\" }]",
    );
    let uk = opened.calendar("uk").unwrap();
    assert_eq!(
        uk.deadline(start, 180, &Pauses::none()).unwrap(),
        ts("2026-06-13T11:00:00Z"),
        "with it: Friday's last hour, then Saturday 10:00–12:00 BST"
    );
    assert!(uk.is_open(ts("2026-06-13T12:30:00Z")));
    assert!(!uk.is_open(ts("2026-06-13T13:30:00Z")));
}

#[test]
fn different_hours_on_one_date_replace_the_regular_ones() {
    // Christmas Eve 2026 is a Thursday: open 09:00–12:00 only.
    let rules = with_opening(
        "openings = [{ date = \"2026-12-24\", start = \"09:00\", end = \"12:00\", instead = true }]",
    );
    let uk = rules.calendar("uk").unwrap();
    assert!(uk.is_open(ts("2026-12-24T11:30:00Z")));
    assert!(!uk.is_open(ts("2026-12-24T12:30:00Z")));
    // From Thursday 11:00, two hours: one that morning, then Christmas and
    // Boxing Day (observed Monday 28th) pass; the second hour is Tuesday's.
    assert_eq!(
        uk.deadline(ts("2026-12-24T11:00:00Z"), 120, &Pauses::none())
            .unwrap(),
        ts("2026-12-29T10:00:00Z")
    );
}

/// Open round the clock in London, closed 22:00–02:00 over a DST night.
fn night_closure(date: &str) -> Calendar {
    let text = COUNTRIES.replace(
        "[calendars.us]",
        &format!(
            "[calendars.nights]\ntime_zone = \"Europe/London\"\n\
             hours = [{{ days = [\"mon-sun\"], start = \"00:00\", end = \"24:00\" }}]\n\
             holidays = [{{ date = \"{date}\", start = \"22:00\", end = \"02:00\", name = \"maintenance\" }}]\n\n\
             [calendars.us]"
        ),
    );
    parse(&text).calendar("nights").unwrap().clone()
}

#[test]
fn a_closure_across_midnight_on_dst_nights() {
    // Autumn: 22:00 BST Saturday 24 October 2026 (21:00Z) to 02:00 GMT
    // Sunday (02:00Z): five real hours, the repeated hour included.
    let autumn = night_closure("2026-10-24");
    assert!(autumn.is_open(ts("2026-10-24T20:59:00Z")));
    assert!(!autumn.is_open(ts("2026-10-24T21:00:00Z")));
    assert!(!autumn.is_open(ts("2026-10-25T01:30:00Z")));
    assert!(autumn.is_open(ts("2026-10-25T02:00:00Z")));
    assert_eq!(
        autumn
            .deadline(ts("2026-10-24T20:00:00Z"), 120, &Pauses::none())
            .unwrap(),
        ts("2026-10-25T03:00:00Z")
    );
    // Spring: 22:00 GMT Saturday 28 March 2026 (22:00Z) to 02:00 BST
    // Sunday (01:00Z): three real hours, the skipped hour never happens.
    let spring = night_closure("2026-03-28");
    assert!(!spring.is_open(ts("2026-03-29T00:59:00Z")));
    assert!(spring.is_open(ts("2026-03-29T01:00:00Z")));
    assert_eq!(
        spring
            .deadline(ts("2026-03-28T21:00:00Z"), 120, &Pauses::none())
            .unwrap(),
        ts("2026-03-29T02:00:00Z")
    );
    assert_eq!(
        spring
            .elapsed(
                ts("2026-03-28T21:00:00Z"),
                ts("2026-03-29T02:00:00Z"),
                &Pauses::none()
            )
            .as_mins(),
        120
    );
}

fn data(name: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

const ICS_RULES: &str = r#"version = "ics-1"

[[regions]]
id = "eu-west"
index = 1
time_zone = "Europe/London"
capacity = 10
holidays_ics = "england-and-wales.ics"
[[regions.shifts]]
days = ["mon-fri"]
start = "09:00"
end = "17:00"
queue_owner = "eu-lead"

[calendars.acme]
time_zone = "America/New_York"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays_ics = "recurring-example.ics"

[tiers.standard]
calendar = "acme"
first_response_minutes = 60
next_response_minutes = 60
resolution_minutes = 480
"#;

#[test]
fn the_shipped_gov_uk_feed_is_imported() {
    let rules = Rules::parse_with_files("rules/rules.toml", ICS_RULES, &data).unwrap();
    assert_eq!(
        rules.ics_files(),
        ["england-and-wales.ics", "recurring-example.ics"]
    );
    let region = rules.region("eu-west").unwrap();
    assert_eq!(
        region.holidays.len(),
        67,
        "every event of the feed, 2018 to 2025"
    );
    let (in_2023, _) = region.days_between(
        Date::new(2023, 1, 1).unwrap(),
        Date::new(2023, 12, 31).unwrap(),
    );
    let got: Vec<String> = in_2023
        .iter()
        .map(|h| format!("{} {}", h.date, h.name))
        .collect();
    assert_eq!(
        got,
        [
            "2023-01-02 New Year’s Day",
            "2023-04-07 Good Friday",
            "2023-04-10 Easter Monday",
            "2023-05-01 Early May bank holiday",
            "2023-05-08 Bank holiday for the coronation of King Charles III",
            "2023-05-29 Spring bank holiday",
            "2023-08-28 Summer bank holiday",
            "2023-12-25 Christmas Day",
            "2023-12-26 Boxing Day",
        ]
    );
    assert_eq!(in_2023[4].rule, "england-and-wales.ics:376");
    // The coronation Monday closes the region.
    assert_eq!(
        rules.on_shift("eu-west", ts("2023-05-08T10:00:00Z")),
        Some(false)
    );
    assert_eq!(
        rules.on_shift("eu-west", ts("2023-05-09T10:00:00Z")),
        Some(true)
    );
}

#[test]
fn the_recurring_feed_expands_its_rrules() {
    let rules = Rules::parse_with_files("rules.toml", ICS_RULES, &data).unwrap();
    let acme = rules.calendar("acme").unwrap();
    let by_name = |prefix: &str| -> Vec<String> {
        let (h, _) = acme.days_between(
            Date::new(2026, 1, 1).unwrap(),
            Date::new(2035, 12, 31).unwrap(),
        );
        h.iter()
            .filter(|h| h.name.starts_with(prefix))
            .map(|h| {
                if h.last == h.date {
                    h.date.to_string()
                } else {
                    format!("{}..{}", h.date, h.last)
                }
            })
            .collect()
    };
    let christmas: Vec<String> = (2026..=2035).map(|y| format!("{y}-12-25")).collect();
    assert_eq!(by_name("Christmas"), christmas);
    assert_eq!(
        by_name("Memorial"),
        [
            "2026-05-25",
            "2027-05-31",
            "2028-05-29",
            "2029-05-28",
            "2030-05-27",
            "2031-05-26",
            "2032-05-31",
            "2033-05-30",
            "2034-05-29",
            "2035-05-28",
        ]
    );
    // Two days each (DTEND), 2030 excluded by EXDATE, until 2035; the
    // folded SUMMARY is read whole.
    assert_eq!(
        by_name("Thanksgiving Day and the day after (a long summary folded"),
        [
            "2026-11-26..2026-11-27",
            "2027-11-25..2027-11-26",
            "2028-11-23..2028-11-24",
            "2029-11-22..2029-11-23",
            "2031-11-27..2031-11-28",
            "2032-11-25..2032-11-26",
            "2033-11-24..2033-11-25",
            "2034-11-23..2034-11-24",
            "2035-11-22..2035-11-23",
        ]
    );
    assert_eq!(
        by_name("Founders"),
        [
            "2026-09-14",
            "2027-09-14",
            "2028-09-14",
            "2029-09-14",
            "2030-09-14"
        ]
    );
    assert_eq!(by_name("Company offsite"), ["2027-03-01..2027-03-03"]);
    // Friday after Thanksgiving 2026 is closed in New York; the Monday is not.
    assert!(!acme.is_open(ts("2026-11-27T15:00:00Z")));
    assert!(acme.is_open(ts("2026-11-30T15:00:00Z")));
}

#[test]
fn a_bad_feed_is_refused_with_its_file_and_line() {
    let bad = |name: &str| -> Result<String, String> {
        match name {
            "broken.ics" => Ok(
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Bad\r\nDTSTART;VALUE=DATE:20260101\r\n\
                                RRULE:FREQ=YEARLY;BYMONTH=13\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
                    .to_owned(),
            ),
            other => Err(format!("no such file {other}")),
        }
    };
    let text = ICS_RULES
        .replace("england-and-wales.ics", "broken.ics")
        .replace("recurring-example.ics", "../secrets.ics");
    let errors = Rules::parse_with_files("deploy/rules.toml", &text, &bad)
        .unwrap_err()
        .to_string();
    expect![[r#"
        deploy/broken.ics:5:1: RRULE is not valid: RRule parsing error: `13` is not a valid BYMONTH value. Expected a comma-separated list of values in range 1..=12, e.g. `6,9,10`
        deploy/rules.toml:18:16: holidays_ics "../secrets.ics" must name a .ics file beside the rules file, such as "england-and-wales.ics" (no directories)"#]].assert_eq(&errors);
    let missing = ICS_RULES.replace("recurring-example.ics", "missing.ics");
    let errors = Rules::parse_with_files("rules.toml", &missing, &bad)
        .unwrap_err()
        .to_string();
    expect![[r#"
        rules.toml:8:16: holidays_ics "england-and-wales.ics" cannot be read: no such file england-and-wales.ics
        rules.toml:18:16: holidays_ics "missing.ics" cannot be read: no such file missing.ics"#]].assert_eq(&errors);
}

#[test]
fn recurring_rules_are_refused_with_a_clear_sentence() {
    let text = COUNTRIES
        .replace(
            "{ every = \"easter-2\", name = \"Good Friday\" }",
            "{ every = \"easter-two\" }",
        )
        .replace(
            "{ every = \"1st mon of may\"",
            "{ every = \"first monday of mai\"",
        )
        .replace(
            "observed = \"nearest_weekday\", name = \"Juneteenth\"",
            "observed = \"closest\"",
        )
        .replace(
            "{ every = \"12-24\", to = \"01-01\"",
            "{ every = \"easter\", to = \"01-01\"",
        );
    expect![[r#"
        rules.toml:19:13: holiday every "easter-two": write days from easter as easter+1 or easter-2 (within 100 days)
        rules.toml:21:13: holiday every "first monday of mai": "mai" is not a month; use jan to dec
        rules.toml:35:33: unknown observed rule "closest"; use "next_weekday" (weekend to the next free weekday), "nearest_weekday" (Saturday to Friday, Sunday to Monday) or "sunday_to_monday"
        rules.toml:53:28: holiday to "01-01": a recurring range runs between two fixed dates, such as every = "12-24", to = "01-02"
    "#]].assert_eq(&errors(&text));
}

const CUSTOMERS: &str = r#"
[calendars.sydney-business]
time_zone = "Australia/Sydney"
hours = [{ days = ["mon-fri"], start = "09:00", end = "17:00" }]
holidays = [{ every = "01-26", observed = "next_weekday", name = "Australia Day" }]

[customers.acme]
calendar = "sydney-business"

[customers.globex]
calendar = "24x7"
"#;

#[test]
fn a_customer_calendar_overrides_the_tier_calendar() {
    let rules = parse(&format!("{COUNTRIES}{CUSTOMERS}"));
    assert_eq!(
        rules.customer_calendars(),
        [("acme", "sydney-business"), ("globex", "24x7")]
    );
    // Monday 1 June 2026, 08:00Z: 18:00 in Sydney (closed), 09:00 in London.
    let start = ts("2026-06-01T08:00:00Z");
    let none = Pauses::none();
    let tier = rules
        .sla_deadline_for("standard", None, Metric::FirstResponse, start, &none)
        .unwrap();
    assert_eq!(
        (tier.calendar.as_str(), tier.deadline.as_str()),
        ("uk", "2026-06-01T10:00:00+01:00")
    );
    let other = rules
        .sla_deadline_for(
            "standard",
            Some("initech"),
            Metric::FirstResponse,
            start,
            &none,
        )
        .unwrap();
    assert_eq!(
        other.calendar, "uk",
        "a customer without a calendar follows the tier"
    );
    let acme = rules
        .sla_deadline_for(
            "standard",
            Some("acme"),
            Metric::FirstResponse,
            start,
            &none,
        )
        .unwrap();
    assert_eq!(
        (acme.calendar.as_str(), acme.deadline.as_str()),
        ("sydney-business", "2026-06-02T10:00:00+10:00")
    );
    let globex = rules
        .sla_deadline_for(
            "standard",
            Some("globex"),
            Metric::FirstResponse,
            start,
            &none,
        )
        .unwrap();
    assert_eq!(globex.deadline_at, ts("2026-06-01T09:00:00Z"));
    let clocks = rules
        .sla_clocks_for("standard", Some("acme"), start)
        .unwrap();
    assert_eq!(clocks.first_response.unwrap().due, acme.deadline_at);
    // Australia Day 2026 is a Monday: closed in Sydney.
    let jan = rules
        .sla_deadline_for(
            "standard",
            Some("acme"),
            Metric::FirstResponse,
            ts("2026-01-25T22:00:00Z"),
            &none,
        )
        .unwrap();
    assert_eq!(jan.deadline, "2026-01-27T10:00:00+11:00");
    // An unknown calendar is refused at its line.
    let bad = format!(
        "{COUNTRIES}{}",
        CUSTOMERS.replace("calendar = \"sydney-business\"", "calendar = \"sydney\"")
    );
    expect![[r#"
        rules.toml:77:12: customer "acme" names calendar "sydney", which is not defined; define [calendars.sydney] or use "24x7"
    "#]].assert_eq(&errors(&bad));
}

#[test]
fn simulate_lists_recurring_holidays_ranges_and_openings() {
    let text = COUNTRIES.replace(
        "queue_owner = \"eu-lead\"\n",
        "queue_owner = \"eu-lead\"\n[[regions.holidays]]\nevery = \"12-25\"\nobserved = \"next_weekday\"\nname = \"Christmas Day\"\n\
         [[regions.holidays]]\nevery = \"12-26\"\nobserved = \"next_weekday\"\nname = \"Boxing Day\"\n\
         [[regions.openings]]\ndate = \"2027-01-02\"\nstart = \"10:00\"\nend = \"14:00\"\nname = \"stock-take\"\nqueue_owner = \"eu-stock\"\n",
    );
    let rules = parse(&text);
    let coverage = rules.coverage(Date::new(2026, 12, 24).unwrap(), 10);
    let table = render::coverage_table(&coverage);
    let legend = table
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
        Thu 2026-12-24 to Fri 2027-01-01  calendar de: closed all day "Betriebsferien" (every 12-24 to 01-01)
        Fri 2026-12-25  calendar uk: closed all day "Christmas Day" (every 12-25, observed next_weekday)
        Fri 2026-12-25  calendar us: closed all day "Christmas Day" (every 12-25, observed nearest_weekday)
        Fri 2026-12-25  eu-west: closed all day "Christmas Day" (every 12-25, observed next_weekday)
        Mon 2026-12-28  calendar uk: closed all day "Boxing Day" (every 12-26, observed next_weekday)
        Mon 2026-12-28  eu-west: closed all day "Boxing Day" (every 12-26, observed next_weekday)
        Fri 2027-01-01  calendar de: closed all day "Neujahr" (every 01-01)
        Fri 2027-01-01  calendar uk: closed all day "New Year's Day" (every 01-01, observed next_weekday)
        Fri 2027-01-01  calendar us: closed all day "New Year's Day" (every 01-01, observed nearest_weekday)
        Sat 2027-01-02  eu-west: extra opening 10:00–14:00 "stock-take" (2027-01-02)"#]].assert_eq(&legend);
    // The Saturday opening is on shift with its own queue owner.
    let active = rules.active_at(ts("2027-01-02T11:00:00Z"));
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].shift.as_str(), active[0].queue_owner.as_str()),
        ("stock-take", "eu-stock")
    );
}

#[test]
fn check_warns_about_a_region_without_holidays_in_the_coming_year() {
    let rules = parse(&format!("{COUNTRIES}{CUSTOMERS}"));
    let warnings = rules.holiday_warnings(Date::new(2026, 6, 1).unwrap());
    expect![[r#"warning: region "eu-west" has no holidays from 2026-06-01 to 2027-05-31; add [[regions.holidays]] (such as every = "12-25") or holidays_ics"#]].assert_eq(&warnings.join("\n"));
    let ics = Rules::parse_with_files("rules.toml", ICS_RULES, &data).unwrap();
    // The GOV.UK feed copy ends in 2025.
    let warnings = ics.holiday_warnings(Date::new(2026, 6, 1).unwrap());
    expect![[r#"warning: region "eu-west" has no holidays from 2026-06-01 to 2027-05-31 (england-and-wales.ics has none in it); add [[regions.holidays]] (such as every = "12-25") or holidays_ics"#]].assert_eq(&warnings.join("\n"));
    assert!(
        ics.holiday_warnings(Date::new(2025, 1, 1).unwrap())
            .is_empty()
    );
}
