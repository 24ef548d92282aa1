//! A customer's own calendar through the real gateways: a ticket of
//! `koala-freight` (whose SLA follows Sydney business hours in the example
//! rules) gets deadlines in that calendar, not its tier's; a handoff to
//! another region moves none of them; and a pause resumed in the new region
//! is measured in the customer's calendar there too.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Mesh, Options, example_rules as example, set_status};
use jiff::Timestamp;
use meridian_proto::v1;
use meridian_rules::{Metric, Pauses};

fn at(t: &Option<prost_types::Timestamp>) -> Timestamp {
    let t = t.as_ref().unwrap();
    Timestamp::new(t.seconds, t.nanos).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_calendar_overrides_the_tier_across_a_handoff() {
    // Tuesday 2 June 2026, 14:00Z: 10:00 in New York, 00:00 Wednesday in
    // Sydney (closed).
    let mesh = Mesh::start(Options::default()).await;
    let created_at: Timestamp = common::AFTERNOON_UTC.parse().unwrap();
    let rules = example();
    let tier = rules
        .sla_deadline_for(
            "standard",
            None,
            Metric::Resolution,
            created_at,
            &Pauses::none(),
        )
        .unwrap();
    let own = rules
        .sla_deadline_for(
            "standard",
            Some("koala-freight"),
            Metric::Resolution,
            created_at,
            &Pauses::none(),
        )
        .unwrap();
    assert_eq!(own.calendar, "sydney-business");
    assert_ne!(
        tier.deadline_at, own.deadline_at,
        "the two calendars must disagree for this test to mean anything"
    );
    // 2880 minutes = six 8-hour Sydney days from Wednesday 09:00 AEST:
    // Wed, Thu, Fri, Mon 8 June is the King's Birthday, Tue, Wed, Thu → ends
    // Thursday 11 June 17:00 AEST.
    assert_eq!(own.deadline, "2026-06-11T17:00:00+10:00");

    let mut us = mesh.client("us-east").await;
    let request = v1::CreateTicketRequest {
        subject: "Container stuck at Botany".into(),
        customer: "koala-freight".into(),
        tier: "standard".into(),
        ..Default::default()
    };
    let ticket = us
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let sla = ticket.sla.unwrap();
    let due = at(&sla.resolution.unwrap().due);
    assert_eq!(
        due, own.deadline_at,
        "created in us-east, measured in Sydney hours"
    );
    let first = at(&sla.first_response.unwrap().due);
    assert_eq!(
        first,
        rules
            .sla_deadline_for(
                "standard",
                Some("koala-freight"),
                Metric::FirstResponse,
                created_at,
                &Pauses::none()
            )
            .unwrap()
            .deadline_at
    );
    // Another customer of the same tier follows the tier's calendar.
    let other = v1::CreateTicketRequest {
        subject: "x".into(),
        customer: "acme".into(),
        tier: "standard".into(),
        ..Default::default()
    };
    let other = us
        .create_ticket(other)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        at(&other.sla.unwrap().resolution.unwrap().due),
        tier.deadline_at
    );

    set_status(&mut us, &ticket.id, v1::Status::Open).await;
    let note = v1::HandoffNote {
        current_status: v1::Status::Open.into(),
        last_action: "asked the port for the container's status".into(),
        next_action: "call the customer at 09:00 Sydney".into(),
        deadline: None,
        text: String::new(),
        author: "ana".into(),
    };
    let handoff = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: Some(note),
    };
    let moved = us
        .handoff(handoff)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(moved.owner.unwrap().owner_region, "eu-west");
    mesh.wait_quiet().await;
    let mut eu = mesh.client("eu-west").await;
    let there = eu
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        at(&there.sla.unwrap().resolution.unwrap().due),
        due,
        "a handoff never moves a deadline"
    );

    // eu-west pauses the ticket for an hour at Sydney's night (14:00–15:00Z
    // is 00:00–01:00 AEST): no business time lost in the customer's
    // calendar, so the deadline stays. In the tier's calendar (us-east's
    // shifts, on at 10:00 New York) the same hour would move it.
    set_status(&mut eu, &ticket.id, v1::Status::Pending).await;
    mesh.clock
        .set(created_at + jiff::SignedDuration::from_hours(1));
    let resumed = set_status(&mut eu, &ticket.id, v1::Status::Open).await;
    let resolution = resumed.sla.unwrap().resolution.unwrap();
    assert_eq!(resolution.state, v1::SlaState::Running as i32);
    assert_eq!(
        at(&resolution.due),
        due,
        "resumed in eu-west, still in Sydney hours"
    );
    let pauses =
        Pauses::new([(created_at, created_at + jiff::SignedDuration::from_hours(1))]).unwrap();
    let in_tier = rules
        .sla_deadline_for("standard", None, Metric::Resolution, created_at, &pauses)
        .unwrap();
    assert_ne!(
        in_tier.deadline_at, due,
        "the tier's calendar would have moved it"
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}
