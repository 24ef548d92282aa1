//! SubmitTicket with an idempotency key (issue 17): real gateways and the
//! router on loopback. A resubmission with the same key answers the ticket
//! the first one created, at the region that holds it, and creates nothing.

// Test helpers outside `#[test]` functions: a failure should stop the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use meridian_proto::v1;
use support::*;
use tonic::Code;

fn keyed(subject: &str, key: &str) -> v1::SubmitTicketRequest {
    let mut ticket = create_request(subject);
    ticket.idempotency_key = key.into();
    v1::SubmitTicketRequest {
        ticket: Some(ticket),
    }
}

async fn tickets_at(mesh: &mut Mesh, region: &str) -> Vec<v1::Ticket> {
    mesh.gateway(region)
        .client()
        .await
        .list_tickets(v1::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_twice_with_one_key_makes_one_ticket() {
    let mut mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;

    let first = router
        .submit_ticket(keyed("invoice wrong", "inv-2026-06-001"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    assert_eq!(first.region, "east");
    let id = first.ticket.unwrap().id;

    let again = router
        .submit_ticket(keyed("invoice wrong", "inv-2026-06-001"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed, "the resubmission is a replay");
    assert_eq!(again.region, "east");
    assert_eq!(again.ticket.unwrap().id, id, "the same ticket");
    assert_eq!(again.attempts.len(), 1, "{:?}", again.attempts);

    let mut total = 0;
    for region in ["east", "west", "south"] {
        total += tickets_at(&mut mesh, region).await.len();
    }
    assert_eq!(total, 1, "one ticket in the whole mesh");

    // The same key with another body is refused as the gateway refused it,
    // and no other region is tried (it would not know the key).
    let refused = router
        .submit_ticket(keyed("invoice right after all", "inv-2026-06-001"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("inv-2026-06-001") && refused.message().contains(&id),
        "{}",
        refused.message()
    );
    let mut total = 0;
    for region in ["east", "west", "south"] {
        total += tickets_at(&mut mesh, region).await.len();
    }
    assert_eq!(total, 1, "the refusal created nothing anywhere");

    // A bad key is refused by the router itself, naming the field.
    let bad = router
        .submit_ticket(keyed("invoice wrong", "tab\there"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(
        bad.message().contains("ticket.idempotency_key"),
        "{}",
        bad.message()
    );
    mesh.stop().await;
}

/// The first forward commits but its answer arrives after the router's
/// forward timeout; the router retries the same gateway with the same key
/// and gets that ticket back, rather than creating a second one elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_that_timed_out_after_committing_is_answered_not_duplicated() {
    let mut mesh = Mesh::start_proxied(NOON, "east").await;
    let mut router = mesh.router().await;
    // One way 700 ms: the request reaches east at ~0.7 s and commits, the
    // answer would be back at ~1.4 s, past the 1 s forward timeout.
    mesh.proxy
        .as_ref()
        .unwrap()
        .set_delay(std::time::Duration::from_millis(700));
    let submit =
        tokio::spawn(async move { router.submit_ticket(keyed("invoice wrong", "slow-1")).await });
    // After east committed, before the router gives up: the retry's
    // bytes go straight through (the first answer's stay delayed).
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    mesh.proxy
        .as_ref()
        .unwrap()
        .set_delay(std::time::Duration::ZERO);
    let submitted = submit.await.unwrap().unwrap().into_inner();
    assert_eq!(submitted.region, "east", "{:?}", submitted.attempts);
    assert_eq!(submitted.attempts.len(), 2, "{:?}", submitted.attempts);
    let first = &submitted.attempts[0];
    // tonic's own deadline (CANCELLED) or the router's (DEADLINE_EXCEEDED),
    // whichever fires first.
    assert!(
        first.region == "east"
            && !first.created
            && matches!(first.error_code.as_str(), "Cancelled" | "DeadlineExceeded"),
        "{first:?}"
    );
    assert_eq!(submitted.attempts[1].region, "east");
    assert!(submitted.attempts[1].created);
    assert!(
        submitted.replayed,
        "the retry found the first attempt's ticket"
    );
    let mut total = 0;
    for region in ["east", "west", "south"] {
        total += tickets_at(&mut mesh, region).await.len();
    }
    assert_eq!(total, 1, "one ticket in the whole mesh");
    mesh.stop().await;
}
