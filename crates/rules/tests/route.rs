//! The routing decision: filters, scoring, out-of-hours policies, and the
//! explained output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use std::collections::HashMap;

use common::*;
use expect_test::expect;
use jiff::{SignedDuration, Timestamp};
use meridian_core::{Priority, RegionId, Skill, Tier};
use meridian_rules::*;
use proptest::prelude::*;

fn all_up(rules: &Rules) -> HashMap<RegionId, RegionHealth> {
    rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect()
}

fn request(tier: &str, skills: &[&str], residency: &[&str]) -> RouteRequest {
    RouteRequest {
        tier: Some(Tier::new(tier).unwrap()),
        skills: skills.iter().map(|s| Skill::new(*s).unwrap()).collect(),
        residency: residency.iter().map(|s| s.to_string()).collect(),
        priority: Priority::Normal,
        language: None,
    }
}

fn chosen<'r>(d: &Decision<'r>) -> (Option<&'r str>, Reason) {
    (d.region.map(|r| r.as_str()), d.reason)
}

fn region(id: &str) -> RegionId {
    RegionId::new(id).unwrap()
}

#[test]
fn on_shift_region_with_the_best_score_wins() {
    let rules = example();
    let now = ts("2026-06-02T14:00:00Z");
    let d = rules.decide(
        now,
        &all_up(&rules),
        &HashMap::new(),
        &request("premium", &["billing"], &[]),
    );
    assert_eq!(chosen(&d), (Some("us-east"), Reason::OnShift));
    assert_eq!(d.queue_owner, Some("us-east-day-lead"));
    assert_eq!(
        d.answer_when().as_deref(),
        Some("now: our team in us-east is on shift")
    );
    // A quarter-full us-east loses to an empty eu-west.
    let load = HashMap::from([(
        region("us-east"),
        RegionLoad {
            open_tickets: 100,
            staffing: None,
        },
    )]);
    let d = rules.decide(
        now,
        &all_up(&rules),
        &load,
        &request("premium", &["billing"], &[]),
    );
    assert_eq!(chosen(&d), (Some("eu-west"), Reason::OnShift));
    assert_eq!(d.queue_owner, Some("eu-west-day-lead"));
    expect![[r#"
        decision at 2026-06-02 14:00 UTC (rules 2026.06-1+HASH)
          route to: eu-west (queue owner eu-west-day-lead)
          reason:   on_shift — eu-west is on shift and scored highest of 2 eligible regions
        candidates (kept by score, then filtered):
          REGION      POSITION   VERDICT                  SCORE  PREF  LOAD  HEADROOM  TICKETS  SHIFT
          eu-west     on_shift   chosen                   3.00   0.50  1.00  1.00      0/300    until 2026-06-02 16:00 UTC
          us-east     on_shift   kept                     2.85   0.60  0.75  1.00      100/400  until 2026-06-03 01:00 UTC
          apac-south  off_shift  filtered: missing_skill  -      -     -     -         0/200    starts 2026-06-02 23:00 UTC
    "#]]
    .assert_eq(&render::decision_table(&rules, &d).replace(rules.content_hash(), "HASH"));
}

#[test]
fn residency_restricts_the_regions() {
    let rules = example();
    let now = ts("2026-06-02T14:00:00Z");
    let d = rules.decide(
        now,
        &all_up(&rules),
        &HashMap::new(),
        &request("premium", &[], &["eu-only"]),
    );
    assert_eq!(chosen(&d), (Some("eu-west"), Reason::OnShift));
    let us = d
        .candidates
        .iter()
        .find(|c| c.region.as_str() == "us-east")
        .unwrap();
    assert_eq!(us.filtered, Some(FilterReason::Residency));
    // A region id works as a residency entry too.
    let d = rules.decide(
        now,
        &all_up(&rules),
        &HashMap::new(),
        &request("premium", &[], &["apac-south"]),
    );
    assert_eq!(
        chosen(&d),
        (Some("apac-south"), Reason::OutOfHoursNextOnShift)
    );
}

#[test]
fn nothing_usable_is_said_not_dropped() {
    let rules = example();
    let mut health = all_up(&rules);
    health.insert(region("eu-west"), RegionHealth::Down);
    let d = rules.decide(
        ts("2026-06-02T14:00:00Z"),
        &health,
        &HashMap::new(),
        &request("premium", &[], &["eu-only"]),
    );
    assert_eq!(chosen(&d), (None, Reason::NoEligibleRegion));
    let reasons: Vec<_> = d
        .candidates
        .iter()
        .map(|c| (c.region.as_str(), c.filtered))
        .collect();
    assert_eq!(
        reasons,
        [
            ("us-east", Some(FilterReason::Residency)),
            ("eu-west", Some(FilterReason::Down)),
            ("apac-south", Some(FilterReason::Residency)),
        ]
    );
    // A region nobody has heard from counts as down.
    let mut health = all_up(&rules);
    health.remove(&region("us-east"));
    let d = rules.decide(
        ts("2026-06-02T20:00:00Z"),
        &health,
        &HashMap::new(),
        &request("premium", &["billing"], &[]),
    );
    let us = d
        .candidates
        .iter()
        .find(|c| c.region.as_str() == "us-east")
        .unwrap();
    assert_eq!(us.filtered, Some(FilterReason::NoHealthReport));
}

#[test]
fn out_of_hours_next_on_shift_and_overlap() {
    let rules = example();
    let up = all_up(&rules);
    // 18:00Z: only us-east is on shift, and it has no database skill.
    let d = rules.decide(
        ts("2026-06-02T18:00:00Z"),
        &up,
        &HashMap::new(),
        &request("premium", &["database"], &[]),
    );
    assert_eq!(
        chosen(&d),
        (Some("apac-south"), Reason::OutOfHoursNextOnShift)
    );
    assert_eq!(d.next_shift_at, Some(ts("2026-06-02T23:00:00Z")));
    assert_eq!(d.queue_owner, Some("apac-south-day-lead"));
    assert_eq!(d.out_of_hours_policy, Some(OutOfHoursKind::NextOnShift));
    assert_eq!(
        d.answer_when().as_deref(),
        Some("when our next shift opens, Tuesday 2 June 23:00 UTC"),
        "what the customer's acknowledgement says"
    );
    // 22:45Z: apac-south is within its 30-minute overlap window.
    let d = rules.decide(
        ts("2026-06-02T22:45:00Z"),
        &up,
        &HashMap::new(),
        &request("premium", &["database"], &[]),
    );
    assert_eq!(chosen(&d), (Some("apac-south"), Reason::Overlap));
    // During the overlap, a ticket any region could take goes to the region
    // coming on shift rather than the one about to hand off (SLA headroom).
    let d = rules.decide(
        ts("2026-06-03T00:45:00Z"),
        &up,
        &HashMap::new(),
        &request("premium", &["general"], &[]),
    );
    assert_eq!(chosen(&d), (Some("apac-south"), Reason::OnShift));
}

fn with_policy(policy: &str) -> Rules {
    parse(&EXAMPLE.replace("out_of_hours = \"next_on_shift\"", policy))
}

#[test]
fn out_of_hours_on_call_and_escalation() {
    // Saturday 03:00Z: nobody is on shift (us-east's weekend shift is 14:00–22:00Z).
    let now = ts("2026-06-06T03:00:00Z");
    let rules = with_policy("out_of_hours = \"on_call\"\non_call_region = \"eu-west\"");
    let mut health = all_up(&rules);
    let d = rules.decide(
        now,
        &health,
        &HashMap::new(),
        &request("standard", &["billing"], &[]),
    );
    assert_eq!(chosen(&d), (Some("eu-west"), Reason::OutOfHoursOnCall));
    // The on-call region is down: fall back to the next region on shift, and say so.
    health.insert(region("eu-west"), RegionHealth::Down);
    let d = rules.decide(
        now,
        &health,
        &HashMap::new(),
        &request("standard", &["billing"], &[]),
    );
    assert_eq!(chosen(&d), (Some("us-east"), Reason::OutOfHoursNextOnShift));
    assert_eq!(d.out_of_hours_policy, Some(OutOfHoursKind::OnCall));
    assert!(render::decision_table(&rules, &d).contains("fell back to next_on_shift"));

    let rules = with_policy("out_of_hours = \"escalation\"");
    let mut health = all_up(&rules);
    let d = rules.decide(
        now,
        &health,
        &HashMap::new(),
        &request("standard", &[], &[]),
    );
    // us-east is the most preferred; its path is eu-west, then apac-south.
    assert_eq!(chosen(&d), (Some("eu-west"), Reason::Escalation));
    assert_eq!(d.escalated_from.map(|r| r.as_str()), Some("us-east"));
    health.insert(region("eu-west"), RegionHealth::Down);
    let d = rules.decide(
        now,
        &health,
        &HashMap::new(),
        &request("standard", &[], &[]),
    );
    assert_eq!(chosen(&d), (Some("apac-south"), Reason::Escalation));
    expect![[r#"
        decision at 2026-06-06 03:00 UTC (rules 2026.06-1+HASH)
          route to: apac-south
          reason:   escalation — no eligible region is on shift; out-of-hours policy escalation follows the escalation path of us-east to apac-south
        candidates (kept by score, then filtered):
          REGION      POSITION   VERDICT                 SCORE  PREF  LOAD  HEADROOM  TICKETS  SHIFT
          us-east     off_shift  filtered: off_shift     -      -     -     -         0/400    starts 2026-06-06 14:00 UTC
          eu-west     off_shift  filtered: down          -      -     -     -         0/300    starts 2026-06-08 07:00 UTC
          apac-south  off_shift  chosen (was off_shift)  -      -     -     -         0/200    starts 2026-06-07 23:00 UTC
    "#]]
    .assert_eq(&render::decision_table(&rules, &d).replace(rules.content_hash(), "HASH"));
}

#[test]
fn warnings_and_json() {
    let rules = example();
    let mut req = request("gold", &["quantum"], &["mars"]);
    req.priority = Priority::Urgent;
    let d = rules.decide(
        ts("2026-06-02T14:00:00Z"),
        &all_up(&rules),
        &HashMap::new(),
        &req,
    );
    assert_eq!(chosen(&d), (None, Reason::NoEligibleRegion));
    assert_eq!(
        d.warnings,
        [
            Warning::UnknownTier,
            Warning::UnknownSkill,
            Warning::UnknownResidency
        ]
    );
    let d = rules.decide(
        ts("2026-06-02T14:00:00Z"),
        &all_up(&rules),
        &HashMap::new(),
        &request("premium", &[], &[]),
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["reason"], "on_shift");
    assert_eq!(json["region"], "us-east");
    assert_eq!(json["at"], "2026-06-02T14:00:00Z");
    assert_eq!(json["candidates"][0]["position"], "on_shift");
    assert_eq!(json["candidates"][0]["filtered"], serde_json::Value::Null);
    assert_eq!(json["candidates"][2]["filtered"], "off_shift");
    let order: Vec<_> = d.fallback_order().map(|r| r.as_str()).collect();
    assert_eq!(
        order,
        ["us-east", "eu-west"],
        "filtered regions are never fallbacks"
    );
}

fn instant() -> impl Strategy<Value = Timestamp> {
    (1_767_225_600i64..1_956_528_000).prop_map(|s| Timestamp::from_second(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the inputs: the decision is deterministic; a region is chosen
    /// unless the reason is `no_eligible_region`; the chosen region is allowed
    /// by residency and healthy; when it is chosen for being on shift (or in
    /// overlap) it really is, and covers the skills; kept candidates come
    /// first, best first.
    #[test]
    fn decisions_keep_their_promises(
        now in instant(),
        down in proptest::collection::vec(any::<bool>(), 3),
        skills in proptest::sample::subsequence(vec!["billing", "networking", "database", "general"], 0..3),
        residency in proptest::sample::subsequence(vec!["us-east", "eu-west", "apac-south", "eu-only", "not-us"], 0..2),
        loads in proptest::collection::vec(0u32..500, 3),
        policy in proptest::sample::select(vec![
            "out_of_hours = \"next_on_shift\"",
            "out_of_hours = \"on_call\"\non_call_region = \"apac-south\"",
            "out_of_hours = \"escalation\"",
        ]),
    ) {
        let rules = with_policy(policy);
        let ids: Vec<RegionId> = rules.regions().iter().map(|r| r.id.clone()).collect();
        let health: HashMap<_, _> = ids.iter().zip(&down)
            .map(|(id, d)| (id.clone(), if *d { RegionHealth::Down } else { RegionHealth::Up })).collect();
        let load: HashMap<_, _> = ids.iter().zip(&loads).map(|(id, l)| (id.clone(), RegionLoad { open_tickets: *l, staffing: None })).collect();
        let req = request("premium", &skills, &residency);
        let d = rules.decide(now, &health, &load, &req);
        prop_assert_eq!(&d, &rules.decide(now, &health, &load, &req));
        prop_assert_eq!(d.region.is_none(), d.reason == Reason::NoEligibleRegion);
        prop_assert_eq!(d.candidates.len(), 3);
        prop_assert_eq!(d.candidates.iter().filter(|c| c.chosen).count(), usize::from(d.region.is_some()));
        if let Some(id) = d.region {
            prop_assert_eq!(health[id], RegionHealth::Up);
            if !residency.is_empty() {
                let allowed = residency.iter().any(|r| rules.residency(r).unwrap().contains(id));
                prop_assert!(allowed, "{} not allowed by {:?}", id, residency);
            }
            let region = rules.region(id.as_str()).unwrap();
            match d.reason {
                Reason::OnShift => prop_assert_eq!(rules.on_shift(id.as_str(), now), Some(true)),
                Reason::Overlap => {
                    let start = d.candidates.iter().find(|c| c.chosen).unwrap().next_shift_at.unwrap();
                    prop_assert!(start > now && start.duration_since(now) <= SignedDuration::from_mins(30));
                }
                _ => {
                    // Out of hours only when no eligible region is on shift.
                    prop_assert!(d.candidates.iter().all(|c| c.filtered.is_some()));
                }
            }
            if matches!(d.reason, Reason::OnShift | Reason::Overlap | Reason::OutOfHoursNextOnShift) {
                prop_assert!(skills.iter().all(|s| region.covers(s)));
            }
        }
        let kept: Vec<f64> = d.candidates.iter().take_while(|c| c.filtered.is_none()).map(|c| c.score.unwrap().total).collect();
        prop_assert!(kept.windows(2).all(|w| w[0] >= w[1]));
        prop_assert!(d.candidates.iter().skip(kept.len()).all(|c| c.filtered.is_some()));
    }
}
