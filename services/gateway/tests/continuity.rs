//! The continuity sweep on a manual clock (example rules, June, UTC times):
//! eu-west is off shift after 16:00; us-east works `general` until 01:00 but
//! lacks `database`; apac-south opens at 23:00 with both. A ticket eu-west
//! holds off shift goes, within one sweep, to a region on shift that may
//! take it; one that nobody on shift may take stays until someone may, and
//! then goes at once.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Mesh, Options};
use jiff::Timestamp;
use meridian_proto::v1;

fn create(subject: &str, skill: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: "standard".into(),
        skills: vec![skill.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_shift_tickets_move_to_a_region_that_may_take_them() {
    // 18:00Z: eu-west is off shift, us-east on its late shift.
    let mesh = Mesh::start(Options {
        at: "2026-06-02T18:00:00Z",
        ..Options::default()
    })
    .await;
    let mut eu = mesh.client("eu-west").await;
    let general = eu
        .create_ticket(create("Printer on fire", "general"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let database = eu
        .create_ticket(create("Replica lagging", "database"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // Nothing moves before the sweep's period has passed on the clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mesh.owner("eu-west", &general.id).await, "eu-west");

    // One sweep period (60 s of mesh time) later, us-east has the general
    // ticket; nobody on shift may take the database one, so it stays.
    mesh.clock
        .set("2026-06-02T18:01:05Z".parse::<Timestamp>().unwrap());
    mesh.wait_owner("eu-west", &general.id, "us-east").await;
    mesh.clock
        .set("2026-06-02T18:02:10Z".parse::<Timestamp>().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mesh.owner("eu-west", &database.id).await,
        "eu-west",
        "no region on shift has the skill"
    );

    // apac-south opens at 23:00: the shift start sweeps at once, well within
    // one period.
    mesh.clock
        .set("2026-06-02T23:00:01Z".parse::<Timestamp>().unwrap());
    mesh.wait_owner("eu-west", &database.id, "apac-south").await;

    mesh.wait_quiet().await;
    let mut apac = mesh.client("apac-south").await;
    let got = apac
        .get_ticket(v1::GetTicketRequest {
            ticket_id: database.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let note = got
        .notes
        .iter()
        .find(|n| n.body.starts_with("Handoff eu-west → apac-south"))
        .unwrap();
    assert!(
        note.auto,
        "no agent wrote a note, so Meridian did: {}",
        note.body
    );
    assert!(
        note.body.contains("continuity sweep"),
        "the note says the sweep moved it: {}",
        note.body
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}

/// A week of mesh time in 30-minute steps, tickets of random skills, tiers
/// and residency arriving at random regions around the clock (on shift or
/// not) and being solved after a while: after every step, no open ticket may
/// still sit with a region that may not work it while one that may is on
/// shift. The clock stands still while the test waits, so a ticket moved
/// then spent no mesh time stranded; one still stranded when the clock moves
/// on has spent 30 minutes, more than a sweep interval, and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_strands_no_ticket_beyond_one_sweep_interval() {
    use std::collections::HashMap;

    use meridian_rules::{Reason, RegionHealth, RouteRequest};

    const STEP_MINUTES: i64 = 30;
    const SKILLS: [&str; 4] = ["billing", "networking", "database", "general"];
    const TIERS: [&str; 3] = ["standard", "premium", "enterprise"];
    let start: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap(); // a Monday
    let mesh = Mesh::start(Options {
        at: "2026-06-01T00:00:00Z",
        ..Options::default()
    })
    .await;
    let rules_text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml"),
    )
    .unwrap();
    let rules = meridian_rules::Rules::parse("rules.example.toml", &rules_text).unwrap();
    let all_up: HashMap<meridian_core::RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let mut clients = HashMap::new();
    for name in common::REGIONS {
        clients.insert(name, mesh.client(name).await);
    }
    // A small deterministic generator: the run is the same every time.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // Open tickets: id, skill, residency, when to solve it.
    let mut open: Vec<(String, &str, Vec<String>, Timestamp)> = Vec::new();
    let (mut created, mut moved_checks, mut stranded_minutes) = (0, 0, 0i64);
    let mut stranded_report = Vec::new();
    for step in 1..=(7 * 24 * 60 / STEP_MINUTES) {
        let now = start
            .checked_add(jiff::SignedDuration::from_mins(step * STEP_MINUTES))
            .unwrap();
        mesh.clock.set(now);
        for _ in 0..next(3) {
            let skill = SKILLS[next(4) as usize];
            let residency: Vec<String> = match next(10) {
                0 => vec!["eu-west".into()],
                1 => vec!["eu-west".into(), "apac-south".into()],
                _ => Vec::new(),
            };
            let at = if residency.is_empty() {
                common::REGIONS[next(3) as usize]
            } else {
                residency[next(residency.len() as u64) as usize].as_str()
            };
            let at = common::REGIONS.iter().find(|r| **r == at).unwrap();
            let request = v1::CreateTicketRequest {
                subject: format!("ticket {created}"),
                customer: "acme".into(),
                tier: TIERS[next(3) as usize].into(),
                skills: vec![skill.into()],
                residency: residency.clone(),
                ..Default::default()
            };
            let ticket = clients
                .get_mut(at)
                .unwrap()
                .create_ticket(request)
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap();
            let life = jiff::SignedDuration::from_mins(60 * (2 + next(14) as i64));
            open.push((ticket.id, skill, residency, now.checked_add(life).unwrap()));
            created += 1;
        }
        // One sweep interval later (the sweeps run on the way), wait with
        // the clock still until nothing is stranded, or count what still is.
        let now = now
            .checked_add(jiff::SignedDuration::from_secs(61))
            .unwrap();
        mesh.clock.set(now);
        let mut stranded: Vec<String> = Vec::new();
        for attempt in 0..200 {
            tokio::time::sleep(Duration::from_millis(if attempt == 0 { 60 } else { 25 })).await;
            mesh.wait_quiet().await;
            stranded.clear();
            let list = v1::ListTicketsRequest {
                status: v1::Status::New.into(),
                page_size: 500,
                ..Default::default()
            };
            let listed = clients
                .get_mut("us-east")
                .unwrap()
                .list_tickets(list)
                .await
                .unwrap()
                .into_inner();
            assert!(
                listed.next_page_token.is_empty(),
                "more open tickets than one page"
            );
            let owners: HashMap<String, String> = listed
                .tickets
                .into_iter()
                .map(|t| (t.id, t.owner.unwrap().owner_region))
                .collect();
            for (id, skill, residency, _) in &open {
                let owner = owners[id].clone();
                let request = RouteRequest {
                    tier: None,
                    skills: vec![meridian_core::Skill::new(*skill).unwrap()],
                    residency: residency.clone(),
                    ..RouteRequest::default()
                };
                let decision = rules.decide(now, &all_up, &HashMap::new(), &request);
                let workable = decision
                    .candidates
                    .iter()
                    .any(|c| c.region.as_str() == owner && c.filtered.is_none());
                let someone_may = matches!(decision.reason, Reason::OnShift | Reason::Overlap);
                moved_checks += 1;
                if !workable && someone_may {
                    stranded.push(format!("{id} ({skill}, {residency:?}) with {owner}"));
                }
            }
            if stranded.is_empty() {
                break;
            }
        }
        if !stranded.is_empty() {
            stranded_minutes += STEP_MINUTES * stranded.len() as i64;
            stranded_report.push(format!("{now}: {}", stranded.join("; ")));
        }
        // Solve what is due, by its owner (a ticket mid-handoff waits).
        let mut still_open = Vec::new();
        for entry in open.drain(..) {
            if entry.3 > now {
                still_open.push(entry);
                continue;
            }
            let got = clients
                .get_mut("us-east")
                .unwrap()
                .get_ticket(v1::GetTicketRequest {
                    ticket_id: entry.0.clone(),
                });
            let owner = got
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap()
                .owner
                .unwrap()
                .owner_region;
            let solve = v1::UpdateTicketRequest {
                ticket_id: entry.0.clone(),
                status: Some(v1::Status::Solved.into()),
                ..Default::default()
            };
            let client = clients.get_mut(owner.as_str()).unwrap();
            if client.update_ticket(solve).await.is_err() {
                still_open.push(entry);
            }
        }
        open = still_open;
    }
    println!(
        "a week in {STEP_MINUTES}-minute steps: {created} tickets, {moved_checks} ownership checks, \
         {stranded_minutes} stranded minutes beyond one sweep interval"
    );
    assert!(created > 300, "the week brought only {created} tickets");
    assert_eq!(
        stranded_minutes,
        0,
        "stranded beyond one sweep interval:\n{}",
        stranded_report.join("\n")
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}
