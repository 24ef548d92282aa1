//! Shift end on a manual clock: eu-west's day shift ends at 16:00 UTC
//! (example rules); at that instant every open ticket it owns goes to the
//! region the routing rules choose (us-east, on shift until 21:00), with the
//! agent's note where one was written in the overlap window and an `auto`
//! note otherwise; a ticket whose residency keeps it in eu-west stays; the
//! shift summary replicates and reaches a webhook.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Mesh, Options, REGIONS, region};
use jiff::Timestamp;
use meridian_proto::v1;
use meridian_store::Store;

fn create(subject: &str, residency: &[&str]) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: "premium".into(),
        residency: residency.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_end_hands_every_open_ticket_over_with_notes_and_a_summary() {
    let (url, mut hooks) = meridian_test_support::webhook::receiver("/hooks/shift").await;
    // 15:45 UTC: eu-west is on shift and inside its 30-minute overlap window.
    let mesh = Mesh::start(Options {
        at: "2026-06-02T15:45:00Z",
        webhooks: vec![url],
        ..Options::default()
    })
    .await;
    let mut eu = mesh.client("eu-west").await;

    let silent = eu
        .create_ticket(create("No note", &[]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let noted = eu
        .create_ticket(create("With a note", &[]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let solved = eu
        .create_ticket(create("Done", &[]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let pinned = eu
        .create_ticket(create("Stays home", &["eu-west"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let set = |id: &str, status: v1::Status| v1::UpdateTicketRequest {
        ticket_id: id.into(),
        status: Some(status.into()),
        ..Default::default()
    };
    eu.update_ticket(set(&noted.id, v1::Status::Open))
        .await
        .unwrap();
    eu.update_ticket(set(&solved.id, v1::Status::Solved))
        .await
        .unwrap();
    let agent = v1::AddNoteRequest {
        ticket_id: noted.id.clone(),
        author: "siobhan".into(),
        body: "Waiting on the carrier's RMA number\nthey promised it by 17:00 CET".into(),
        visibility: 0,
        note_id: String::new(),
    };
    eu.add_note(agent).await.unwrap();
    // Let the shift task see the shift it is on.
    tokio::time::sleep(Duration::from_millis(200)).await;

    mesh.clock
        .set("2026-06-02T16:00:05Z".parse::<Timestamp>().unwrap());
    let body = tokio::time::timeout(Duration::from_secs(20), hooks.recv())
        .await
        .expect("a webhook within 20 s")
        .unwrap();
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted["type"], "shift_summary");
    let summary = &posted["summary"];
    assert_eq!(summary["region"], "eu-west");
    assert_eq!(summary["shift_end"], "2026-06-02T16:00:00Z");
    let handed: Vec<(String, String)> =
        serde_json::from_value(summary["handed_off"].clone()).unwrap();
    let mut handed_ids: Vec<&str> = handed.iter().map(|(id, _)| id.as_str()).collect();
    handed_ids.sort();
    let mut expected = vec![silent.id.as_str(), noted.id.as_str()];
    expected.sort();
    assert_eq!(
        handed_ids, expected,
        "every open ticket, and only those, is handed off"
    );
    assert!(handed.iter().all(|(_, to)| to == "us-east"), "{handed:?}");
    let kept: Vec<(String, String)> = serde_json::from_value(summary["kept"].clone()).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].0, pinned.id,
        "residency keeps the pinned ticket home"
    );
    assert_eq!(
        kept[0].1, "no other region of its residency (eu-west) may take it now",
        "the summary says why"
    );
    assert_eq!(summary["auto_notes"], 1);
    assert_eq!(summary["next_region"], "us-east");
    assert_eq!(
        summary["next_queue_owner"], "us-east-day-lead",
        "the incoming shift's named owner"
    );

    mesh.wait_quiet().await;
    for name in REGIONS {
        let mut client = mesh.client(name).await;
        let get = |id: &str| v1::GetTicketRequest {
            ticket_id: id.into(),
        };
        let silent_now = client
            .get_ticket(get(&silent.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            silent_now.ticket.unwrap().owner.unwrap().owner_region,
            "us-east",
            "{name}"
        );
        let auto = silent_now
            .notes
            .iter()
            .find(|n| n.body.starts_with("Handoff eu-west → us-east"))
            .unwrap();
        assert!(
            auto.auto,
            "{name}: no agent note, so Meridian wrote one: {}",
            auto.body
        );
        assert!(
            auto.body.contains("next action: first response due"),
            "{}",
            auto.body
        );

        let noted_now = client
            .get_ticket(get(&noted.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            noted_now.ticket.unwrap().owner.unwrap().owner_region,
            "us-east",
            "{name}"
        );
        let handoff = noted_now
            .notes
            .iter()
            .find(|n| n.body.starts_with("Handoff eu-west → us-east"))
            .unwrap();
        assert!(
            !handoff.auto,
            "{name}: the agent's note from the overlap window is used"
        );
        assert_eq!(handoff.author, "siobhan");
        assert!(
            handoff
                .body
                .contains("last action: Waiting on the carrier's RMA number"),
            "{}",
            handoff.body
        );

        let solved_now = client
            .get_ticket(get(&solved.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            solved_now.ticket.unwrap().owner.unwrap().owner_region,
            "eu-west",
            "{name}: solved tickets stay"
        );
    }
    mesh.check_invariants().await;

    // The summary reached every region's store through replication.
    for r in &mesh.regions {
        let store = Store::open(&r.db.config(), &r.name).await.unwrap();
        let summaries = store
            .shift_summaries(Some(&region("eu-west")), 10)
            .await
            .unwrap();
        assert_eq!(summaries.len(), 1, "{}", r.name);
        assert_eq!(summaries[0].handed_off.len(), 2);
        store.close().await;
    }
    mesh.stop().await;
}

/// us-east's day shift (08:00–17:00 New York) meets its late shift at
/// 21:00 UTC: the queue owner changes, the region does not, so its tickets
/// stay, even when the boundary is seen late (the clock jumps past it, as
/// after a pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_that_meets_the_next_one_of_its_region_keeps_its_tickets() {
    let mesh = Mesh::start(Options {
        at: "2026-06-02T20:50:00Z",
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;
    let ticket = us
        .create_ticket(create("The late shift takes it", &[]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // 21:10: the late shift. (Before the fix, the day shift's end handed
    // the ticket to apac-south, off shift until 23:00, whose sweep sent it
    // back.)
    mesh.clock
        .set("2026-06-02T21:10:00Z".parse::<Timestamp>().unwrap());
    let us_east = mesh
        .regions
        .iter()
        .find(|r| r.name.as_str() == "us-east")
        .unwrap();
    let store = Store::open(&us_east.db.config(), &us_east.name)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let summaries = store
            .shift_summaries(Some(&region("us-east")), 10)
            .await
            .unwrap();
        if let Some(summary) = summaries.into_iter().next() {
            break summary;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "us-east recorded no summary of its day shift"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    store.close().await;
    assert!(summary.handed_off.is_empty(), "{summary:?}");
    assert_eq!(summary.next_region, Some(region("us-east")));
    assert_eq!(
        summary.next_queue_owner.as_deref(),
        Some("us-east-late-lead")
    );
    assert_eq!(summary.kept.len(), 1, "{summary:?}");
    assert!(
        summary.kept[0]
            .1
            .contains("stays with us-east for its next shift"),
        "{summary:?}"
    );
    // Scans later, the ticket is still us-east's and was never offered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let now = us
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(now.owner.unwrap().owner_region, "us-east");
    assert_eq!(now.handoff_to, None, "no offer");
    mesh.check_invariants().await;
    mesh.stop().await;
}
