//! Language-aware routing: regions declare the languages they serve,
//! routing prefers one that speaks the ticket's language, and `explain`
//! says so; bad declarations are refused at their line and column.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use std::collections::HashMap;

use common::*;
use expect_test::expect;
use meridian_core::{Priority, RegionId, Tier};
use meridian_rules::*;

/// The example rules with languages declared: us-east English and
/// Spanish, eu-west English and German, apac-south none.
fn with_languages() -> Rules {
    let text = EXAMPLE
        .replacen(
            "id = \"us-east\"\n",
            "id = \"us-east\"\nlanguages = [\"en\", \"ES\"]\n",
            1,
        )
        .replacen(
            "id = \"eu-west\"\n",
            "id = \"eu-west\"\nlanguages = [\"en\", \"de\"]\n",
            1,
        );
    parse(&text)
}

fn all_up(rules: &Rules) -> HashMap<RegionId, RegionHealth> {
    rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect()
}

fn request(language: Option<&str>) -> RouteRequest {
    RouteRequest {
        tier: Some(Tier::new("premium").unwrap()),
        skills: Vec::new(),
        residency: Vec::new(),
        priority: Priority::Normal,
        language: language.map(str::to_owned),
    }
}

#[test]
fn regions_keep_their_declared_languages_lowercase() {
    let rules = with_languages();
    let langs: Vec<(&str, Vec<&str>)> = rules
        .regions()
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.languages.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        langs,
        vec![
            ("us-east", vec!["en", "es"]),
            ("eu-west", vec!["en", "de"]),
            ("apac-south", vec![]),
        ]
    );
}

#[test]
fn routing_prefers_a_region_that_speaks_the_tickets_language() {
    let rules = with_languages();
    let now = ts("2026-06-02T14:00:00Z");
    let health = all_up(&rules);
    // Without a language us-east wins on preference (both on shift)...
    let plain = rules.decide(now, &health, &HashMap::new(), &request(None));
    assert_eq!(plain.region.map(|r| r.as_str()), Some("us-east"));
    assert_eq!(plain.language, None);
    assert!(plain.candidates.iter().all(|c| c.speaks_language.is_none()));
    // ...a German ticket (any region subtag) goes to eu-west, which speaks it.
    let german = rules.decide(now, &health, &HashMap::new(), &request(Some("de-AT")));
    assert_eq!(german.region.map(|r| r.as_str()), Some("eu-west"));
    assert_eq!(german.language.as_deref(), Some("de"));
    let eu = german
        .candidates
        .iter()
        .find(|c| c.region.as_str() == "eu-west")
        .unwrap();
    assert_eq!(eu.speaks_language, Some(true));
    assert_eq!(eu.score.unwrap().language, 1.0);
    // A language both speak changes nothing between them.
    let english = rules.decide(now, &health, &HashMap::new(), &request(Some("EN")));
    assert_eq!(english.region.map(|r| r.as_str()), Some("us-east"));
    expect![[r#"
        decision at 2026-06-02 14:00 UTC (rules 2026.06-1+HASH)
          route to: eu-west (queue owner eu-west-day-lead)
          reason:   on_shift — eu-west is on shift and scored highest of 2 eligible regions
          language: de: eu-west speaks it, preferred (+4.50 to its score); spoken by eu-west
        candidates (kept by score, then filtered):
          REGION      POSITION   VERDICT              SCORE  PREF  LOAD  HEADROOM  TICKETS  SHIFT
          eu-west     on_shift   chosen               7.50   0.50  1.00  1.00      0/300    until 2026-06-02 16:00 UTC
          us-east     on_shift   kept                 3.10   0.60  1.00  1.00      0/400    until 2026-06-03 01:00 UTC
          apac-south  off_shift  filtered: off_shift  -      -     -     -         0/200    starts 2026-06-02 23:00 UTC
    "#]]
    .assert_eq(&render::decision_table(&rules, &german).replace(rules.content_hash(), "HASH"));
}

#[test]
fn a_language_nobody_on_shift_speaks_is_a_preference_not_a_filter() {
    let rules = with_languages();
    let now = ts("2026-06-02T14:00:00Z");
    let health = all_up(&rules);
    // Nobody declares Japanese: routed as without a language, and said so.
    let japanese = rules.decide(now, &health, &HashMap::new(), &request(Some("ja")));
    assert_eq!(japanese.region.map(|r| r.as_str()), Some("us-east"));
    let text = render::decision_table(&rules, &japanese);
    assert!(
        text.contains("language: ja: no region declares it; routed without a language preference"),
        "{text}"
    );
    // German with eu-west down: us-east still takes it.
    let mut eu_down = health.clone();
    eu_down.insert(RegionId::new("eu-west").unwrap(), RegionHealth::Down);
    let german = rules.decide(now, &eu_down, &HashMap::new(), &request(Some("de")));
    assert_eq!(german.region.map(|r| r.as_str()), Some("us-east"));
    let text = render::decision_table(&rules, &german);
    assert!(
        text.contains("language: de: spoken by eu-west, none of them eligible now"),
        "{text}"
    );
}

#[test]
fn rules_without_languages_route_exactly_as_before() {
    let rules = example();
    let now = ts("2026-06-02T14:00:00Z");
    let health = all_up(&rules);
    let with = rules.decide(now, &health, &HashMap::new(), &request(Some("de")));
    let without = rules.decide(now, &health, &HashMap::new(), &request(None));
    assert_eq!(with, without);
}

#[test]
fn bad_language_declarations_are_refused_at_their_line_and_column() {
    let text = EXAMPLE.replacen(
        "id = \"eu-west\"\n",
        "id = \"eu-west\"\nlanguages = [\"de-DE\", \"english\", \"de\", \"DE\"]\n",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("languages"))
        .unwrap()
        + 1;
    let e = errors(&text);
    assert!(
        e.contains(&format!(
            "rules.toml:{line}:14: language \"de-DE\" is a full language tag; regions declare primary language subtags only, such as \"de\""
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "rules.toml:{line}:23: language \"english\" is not a BCP 47 primary language subtag"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "rules.toml:{line}:40: language \"DE\" is listed twice"
        )),
        "{e}"
    );
    let weight = errors(&EXAMPLE.replacen(
        "headroom_weight = 1.5",
        "headroom_weight = 1.5\nlanguage_weight = -1",
        1,
    ));
    assert!(
        weight.contains("language_weight is -1; use a number from 0 to 100"),
        "{weight}"
    );
}
