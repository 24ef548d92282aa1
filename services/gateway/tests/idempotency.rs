//! Idempotent creation (issue 17), black box: real gateways over loopback
//! gRPC on the mesh harness, SQLite always and one PostgreSQL region when
//! `DATABASE_URL` is set. A create retried with its idempotency key answers
//! the ticket the first attempt created and creates nothing; the same key
//! with another request is refused, naming the key and the ticket.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Mesh, Options};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use tonic::{Code, transport::Channel};

fn create(subject: &str, customer: &str, key: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "the VPN drops every ten minutes".into(),
        customer: customer.into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn tickets(client: &mut TicketServiceClient<Channel>) -> Vec<v1::Ticket> {
    client
        .list_tickets(v1::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets
}

async fn retried_creates_make_one_ticket(postgres_for: Option<&str>) {
    let mesh = Mesh::start(Options {
        postgres_for,
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;

    let first = us
        .create_ticket(create("VPN down", "acme", "acme-order-42"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed, "the first create is no replay");
    let ticket = first.ticket.unwrap();

    // The retry: same key, same request.
    let again = us
        .create_ticket(create("VPN down", "acme", "acme-order-42"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed, "the retry says it was a replay");
    assert_eq!(
        again.origin_seq, first.origin_seq,
        "the same creation event"
    );
    let replayed = again.ticket.unwrap();
    assert_eq!(replayed.id, ticket.id, "the same ticket");
    assert_eq!(replayed.subject, ticket.subject);
    let listed = tickets(&mut us).await;
    assert_eq!(listed.len(), 1, "one ticket: {listed:?}");

    // The same key with another request: refused, naming key and ticket.
    let refused = us
        .create_ticket(create("VPN up again?", "acme", "acme-order-42"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("acme-order-42") && refused.message().contains(&ticket.id),
        "{}",
        refused.message()
    );
    assert_eq!(
        tickets(&mut us).await.len(),
        1,
        "the refusal created nothing"
    );

    // Another caller (here: another customer, no token) has keys of its
    // own, and no key means no deduplication.
    let theirs = us
        .create_ticket(create("VPN down", "globex", "acme-order-42"))
        .await
        .unwrap()
        .into_inner();
    assert!(!theirs.replayed);
    assert_ne!(theirs.ticket.unwrap().id, ticket.id);
    for _ in 0..2 {
        us.create_ticket(create("VPN down", "acme", ""))
            .await
            .unwrap();
    }
    assert_eq!(tickets(&mut us).await.len(), 4);

    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_creates_make_one_ticket_on_sqlite() {
    retried_creates_make_one_ticket(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_creates_make_one_ticket_on_postgres() {
    if meridian_test_support::postgres_url().is_none() {
        eprintln!("PostgreSQL case SKIPPED: DATABASE_URL not set");
        return;
    }
    retried_creates_make_one_ticket(Some("us-east")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_make_one_ticket() {
    let mesh = Mesh::start(Options::default()).await;
    let us = mesh.client("us-east").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = us.clone();
        tasks.push(tokio::spawn(async move {
            client
                .create_ticket(create("Printer on fire", "acme", "fire-1"))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        fresh += usize::from(!answer.replayed);
        ids.insert(answer.ticket.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(fresh, 1, "exactly one answer is the creation");
    assert_eq!(tickets(&mut us.clone()).await.len(), 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_refused_by_name() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    for bad in [
        "x".repeat(129),
        "caf\u{e9}".to_owned(),
        "new\nline".to_owned(),
    ] {
        let status = us
            .create_ticket(create("VPN down", "acme", &bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(
            status.message().contains("idempotency_key"),
            "{bad:?}: {}",
            status.message()
        );
    }
    assert!(tickets(&mut us).await.is_empty());
    mesh.stop().await;
}
