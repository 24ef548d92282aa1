//! Three regional gateways as a mesh: real SQLite files (PostgreSQL for one
//! region when `DATABASE_URL` is set), real mutual TLS with a generated
//! development CA, replication over it, handoffs between regions. Each
//! scenario ends by checking the design's invariants across every region's
//! store: every event exactly once everywhere, the same projection of every
//! ticket everywhere, one writer per epoch.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Mesh, Options, REGIONS};
use meridian_proto::v1;
use tokio_stream::StreamExt;
use tonic::Code;

fn create(subject: &str, tier: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest { subject: subject.into(), customer: "acme".into(), tier: tier.into(), ..Default::default() }
}

fn note() -> v1::HandoffNote {
    v1::HandoffNote {
        current_status: v1::Status::Open.into(),
        last_action: "rebooted the edge router".into(),
        next_action: "confirm with the customer at 09:00 their time".into(),
        deadline: None,
        text: "customer prefers email".into(),
        author: "ana".into(),
    }
}

async fn handoff_accepted_moves_ownership_everywhere(postgres_for: Option<&str>) {
    let mesh = Mesh::start(Options { postgres_for, ..Options::default() }).await;
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let ticket = us.create_ticket(create("VPN down", "premium")).await.unwrap().into_inner().ticket.unwrap();
    us.update_ticket(v1::UpdateTicketRequest { ticket_id: ticket.id.clone(), status: Some(v1::Status::Open.into()), ..Default::default() })
        .await
        .unwrap();
    let request = v1::HandoffRequest { ticket_id: ticket.id.clone(), to_region: "eu-west".into(), note: Some(note()) };
    let handed = us.handoff(request).await.unwrap().into_inner();
    let moved = handed.ticket.unwrap();
    let owner = moved.owner.clone().unwrap();
    assert_eq!(owner.owner_region, "eu-west", "the answer already shows the new owner");
    assert_eq!(owner.epoch, 1, "eu-west (index 1) mints the smallest epoch above 0 that it owns");
    assert_eq!(moved.handoff_to, None);
    assert!(handed.accept_seq > 0);

    // The old owner is fenced; the new one writes.
    let refused = us
        .update_ticket(v1::UpdateTicketRequest { ticket_id: ticket.id.clone(), priority: Some(v1::Priority::Urgent.into()), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "ticket is owned by eu-west at epoch 1");
    eu.update_ticket(v1::UpdateTicketRequest { ticket_id: ticket.id.clone(), assignee: Some("bo".into()), ..Default::default() })
        .await
        .unwrap();
    eu.add_note(v1::AddNoteRequest { ticket_id: ticket.id.clone(), author: "bo".into(), body: "picked up".into() }).await.unwrap();

    mesh.wait_quiet().await;
    for name in REGIONS {
        let got = mesh.client(name).await.get_ticket(v1::GetTicketRequest { ticket_id: ticket.id.clone() }).await.unwrap().into_inner();
        let t = got.ticket.unwrap();
        assert_eq!(t.owner.unwrap().owner_region, "eu-west", "{name}");
        assert_eq!(t.assignee.as_deref(), Some("bo"), "{name}");
        assert_eq!(got.notes.len(), 2, "{name}: the handoff note and eu-west's note");
        let handoff_note = got.notes.iter().find(|n| n.body.starts_with("Handoff us-east → eu-west")).unwrap();
        assert!(handoff_note.body.contains("next action: confirm with the customer"), "{}", handoff_note.body);
        assert!(got.conflicts.is_empty(), "{name}");
    }
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_accepted_moves_ownership_everywhere_on_sqlite() {
    handoff_accepted_moves_ownership_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_accepted_moves_ownership_everywhere_with_a_postgres_region() {
    if meridian_test_support::postgres_url().is_none() {
        return;
    }
    handoff_accepted_moves_ownership_everywhere(Some("eu-west")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_refused_leaves_the_ticket_with_its_owner() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let ticket = us.create_ticket(create("Mail slow", "standard")).await.unwrap().into_inner().ticket.unwrap();

    let request = v1::HandoffRequest { ticket_id: ticket.id.clone(), to_region: "apac-south".into(), note: Some(note()) };
    let refused = us.handoff(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("apac-south refused the handoff: apac-south is not on shift at 2026-06-02T14:00:00Z"),
        "{}",
        refused.message()
    );
    let got = us.get_ticket(v1::GetTicketRequest { ticket_id: ticket.id.clone() }).await.unwrap().into_inner().ticket.unwrap();
    assert_eq!(got.owner.unwrap().owner_region, "us-east");
    assert_eq!(got.handoff_to, None, "the refusal clears the pending offer");
    // The owner may write again.
    us.update_ticket(v1::UpdateTicketRequest { ticket_id: ticket.id.clone(), status: Some(v1::Status::Open.into()), ..Default::default() })
        .await
        .unwrap();

    // No note: refused before anything is written.
    let request = v1::HandoffRequest { ticket_id: ticket.id.clone(), to_region: "eu-west".into(), note: None };
    let err = us.handoff(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("note: is required"), "{}", err.message());
    let mut empty = note();
    empty.last_action.clear();
    let request = v1::HandoffRequest { ticket_id: ticket.id.clone(), to_region: "eu-west".into(), note: Some(empty) };
    let err = us.handoff(request).await.unwrap_err();
    assert!(err.message().starts_with("note.last_action: must not be empty"), "{}", err.message());
    let request = v1::HandoffRequest { ticket_id: ticket.id.clone(), to_region: "us-east".into(), note: Some(note()) };
    let err = us.handoff(request).await.unwrap_err();
    assert_eq!(err.message(), "to_region: us-east is this gateway's own region; hand off to another");

    mesh.wait_quiet().await;
    let events = mesh
        .client("eu-west")
        .await
        .watch_events(v1::WatchEventsRequest {
            scope: Some(v1::watch_events_request::Scope::TicketId(ticket.id.clone())),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<String> = events.take(4).map(|e| e.unwrap().kind).collect().await;
    assert_eq!(kinds, ["ticket_created", "handoff_offered", "handoff_refused", "ticket_updated"], "the refusal is an event, replicated");
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_durable_tier_and_status_report_replication() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    // enterprise is a `peer` durability tier: acknowledged only once another
    // region has applied it.
    let created = us.create_ticket(create("Outage", "enterprise")).await.unwrap().into_inner();
    let status = us.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.region, "us-east");
    assert!(status.local_head >= created.origin_seq);
    assert!(
        status.peers.iter().any(|p| p.acked_seq >= created.origin_seq),
        "a peer acknowledged the write before it was answered: {:?}",
        status.peers
    );
    assert!(status.rules_version.starts_with("2026.06-1+"), "{}", status.rules_version);
    mesh.check_invariants().await;
    mesh.stop().await;
}
