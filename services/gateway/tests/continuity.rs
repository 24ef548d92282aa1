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

async fn owner(mesh: &Mesh, id: &str) -> String {
    let mut eu = mesh.client("eu-west").await;
    let got = eu.get_ticket(v1::GetTicketRequest { ticket_id: id.into() }).await.unwrap().into_inner();
    got.ticket.unwrap().owner.unwrap().owner_region
}

async fn wait_owner(mesh: &Mesh, id: &str, region: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if owner(mesh, id).await == region {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never reached {region}: owned by {}", owner(mesh, id).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_shift_tickets_move_to_a_region_that_may_take_them() {
    // 18:00Z: eu-west is off shift, us-east on its late shift.
    let mesh = Mesh::start(Options { at: "2026-06-02T18:00:00Z", ..Options::default() }).await;
    let mut eu = mesh.client("eu-west").await;
    let general = eu.create_ticket(create("Printer on fire", "general")).await.unwrap().into_inner().ticket.unwrap();
    let database = eu.create_ticket(create("Replica lagging", "database")).await.unwrap().into_inner().ticket.unwrap();
    // Nothing moves before the sweep's period has passed on the clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(owner(&mesh, &general.id).await, "eu-west");

    // One sweep period (60 s of mesh time) later, us-east has the general
    // ticket; nobody on shift may take the database one, so it stays.
    mesh.clock.set("2026-06-02T18:01:05Z".parse::<Timestamp>().unwrap());
    wait_owner(&mesh, &general.id, "us-east").await;
    mesh.clock.set("2026-06-02T18:02:10Z".parse::<Timestamp>().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owner(&mesh, &database.id).await, "eu-west", "no region on shift has the skill");

    // apac-south opens at 23:00: the shift start sweeps at once, well within
    // one period.
    mesh.clock.set("2026-06-02T23:00:01Z".parse::<Timestamp>().unwrap());
    wait_owner(&mesh, &database.id, "apac-south").await;

    mesh.wait_quiet().await;
    let mut apac = mesh.client("apac-south").await;
    let got = apac.get_ticket(v1::GetTicketRequest { ticket_id: database.id.clone() }).await.unwrap().into_inner();
    let note = got.notes.iter().find(|n| n.body.starts_with("Handoff eu-west → apac-south")).unwrap();
    assert!(note.auto, "no agent wrote a note, so Meridian did: {}", note.body);
    assert!(note.body.contains("continuity sweep"), "the note says the sweep moved it: {}", note.body);
    mesh.check_invariants().await;
    mesh.stop().await;
}
