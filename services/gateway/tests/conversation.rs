//! The customer conversation through the real gateways: SLA clocks that
//! measure answers. A status change is not an answer; the first public reply
//! meets the first response; a customer message after a reply starts the
//! next-response clock in the ticket's calendar, and the next reply meets
//! it, across a handoff to another region. Deadlines are checked against
//! business time computed by hand from the example rules.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Mesh, Options, example_rules as example, get_ticket as get, set_status};
use jiff::{SignedDuration, Timestamp};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_rules::{Metric, Pauses};
use tonic::{Code, transport::Channel};

fn at(t: &Option<prost_types::Timestamp>) -> Timestamp {
    let t = t.as_ref().unwrap();
    Timestamp::new(t.seconds, t.nanos).unwrap()
}

fn state(clock: &Option<v1::SlaClock>) -> v1::SlaState {
    v1::SlaState::try_from(clock.as_ref().expect("the clock exists").state).unwrap()
}

async fn message(
    client: &mut TicketServiceClient<Channel>,
    id: &str,
    visibility: v1::Visibility,
    body: &str,
) -> Result<v1::Ticket, tonic::Status> {
    let answer = client
        .add_note(v1::AddNoteRequest {
            ticket_id: id.into(),
            author: match visibility {
                v1::Visibility::Inbound => "customer@acme.example".into(),
                _ => "ana".into(),
            },
            body: body.into(),
            visibility: visibility.into(),
            note_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(answer.note.unwrap().visibility, visibility as i32);
    Ok(answer
        .ticket
        .expect("a reply or customer message answers with the ticket"))
}

async fn create(client: &mut TicketServiceClient<Channel>, tier: &str) -> v1::Ticket {
    client
        .create_ticket(v1::CreateTicketRequest {
            subject: "Invoice shows the wrong VAT".into(),
            customer: "acme".into(),
            tier: tier.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_meet_the_response_clocks_across_a_handoff() {
    // Tuesday 2 June 2026, 14:00Z: 10:00 in New York. The standard tier
    // counts in us-east's shifts (us-business: 08:00–21:00 New York on
    // weekdays, EDT = UTC-4).
    let mesh = Mesh::start(Options::default()).await;
    let start: Timestamp = common::AFTERNOON_UTC.parse().unwrap();
    let minutes = |m: i64| start + SignedDuration::from_mins(m);
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;

    let created = create(&mut us, "standard").await;
    let id = created.id.clone();
    let sla = created.sla.unwrap();
    // 480 business minutes from 10:00 New York: 18:00 the same day.
    assert_eq!(
        at(&sla.first_response.as_ref().unwrap().due),
        "2026-06-02T22:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert!(sla.next_response.is_none(), "nobody has written back yet");

    // Opening the ticket is not an answer.
    mesh.clock.set(minutes(5));
    let opened = set_status(&mut us, &id, v1::Status::Open).await;
    assert_eq!(
        state(&opened.sla.unwrap().first_response),
        v1::SlaState::Running,
        "a status change is not an answer"
    );

    // The customer writes again before anyone answered: the first-response
    // clock still measures that wait; no next-response clock yet.
    mesh.clock.set(minutes(10));
    let chased = message(&mut us, &id, v1::Visibility::Inbound, "Any news?")
        .await
        .unwrap();
    let sla = chased.sla.unwrap();
    assert_eq!(state(&sla.first_response), v1::SlaState::Running);
    assert!(sla.next_response.is_none());

    // An internal note answers nobody.
    us.add_note(v1::AddNoteRequest {
        ticket_id: id.clone(),
        author: "ana".into(),
        body: "checking the VAT table".into(),
        visibility: v1::Visibility::Internal.into(),
        note_id: String::new(),
    })
    .await
    .unwrap();
    let sla = get(&mut us, &id).await.ticket.unwrap().sla.unwrap();
    assert_eq!(state(&sla.first_response), v1::SlaState::Running);

    // Only the owner answers: a reply from eu-west is refused, naming it.
    let refused = message(&mut eu, &id, v1::Visibility::Public, "Hello")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("us-east"),
        "{}",
        refused.message()
    );

    // The first public reply meets the first response.
    mesh.clock.set(minutes(30));
    let replied = message(&mut us, &id, v1::Visibility::Public, "We are on it.")
        .await
        .unwrap();
    let sla = replied.sla.unwrap();
    assert_eq!(state(&sla.first_response), v1::SlaState::Met);
    assert!(sla.next_response.is_none());

    // 15:00Z (11:00 New York): the customer answers. 960 business minutes:
    // 600 until 21:00 today, 360 from 08:00 Wednesday: 14:00 New York.
    mesh.clock.set(minutes(60));
    let answered = message(&mut us, &id, v1::Visibility::Inbound, "Still wrong.")
        .await
        .unwrap();
    let next = answered.sla.unwrap().next_response.unwrap();
    assert_eq!(
        v1::SlaState::try_from(next.state).unwrap(),
        v1::SlaState::Running
    );
    let due: Timestamp = "2026-06-03T18:00:00Z".parse().unwrap();
    assert_eq!(at(&next.due), due);
    // 80% is 768 minutes: 600 today, 168 from 08:00: 10:48 New York.
    assert_eq!(
        at(&next.warn_at),
        "2026-06-03T14:48:00Z".parse::<Timestamp>().unwrap()
    );
    let by_rules = example()
        .sla_deadline_for(
            "standard",
            Some("acme"),
            Metric::NextResponse,
            minutes(60),
            &Pauses::none(),
        )
        .unwrap();
    assert_eq!(
        by_rules.deadline_at, due,
        "the hand count agrees with the rules"
    );

    // Hand the ticket to eu-west: the deadline does not move.
    let moved = us
        .handoff(v1::HandoffRequest {
            ticket_id: id.clone(),
            to_region: "eu-west".into(),
            note: Some(v1::HandoffNote {
                current_status: v1::Status::Open.into(),
                last_action: "asked finance for the VAT table".into(),
                next_action: "answer the customer with the corrected invoice".into(),
                deadline: None,
                text: String::new(),
                author: "ana".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(moved.owner.unwrap().owner_region, "eu-west");
    mesh.wait_owner("eu-west", &id, "eu-west").await;
    let there = get(&mut eu, &id).await.ticket.unwrap().sla.unwrap();
    assert_eq!(
        at(&there.next_response.as_ref().unwrap().due),
        due,
        "a handoff never moves a deadline"
    );
    assert_eq!(state(&there.next_response), v1::SlaState::Running);

    // us-east no longer owns it: its reply is refused, eu-west's meets it.
    let refused = message(&mut us, &id, v1::Visibility::Public, "late")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // (eu-west's day ends at 16:00Z; everything below happens before it
    // and its overlap, so its continuity sweep keeps the ticket.)
    mesh.clock.set(minutes(65));
    let met = message(
        &mut eu,
        &id,
        v1::Visibility::Public,
        "Corrected invoice attached.",
    )
    .await
    .unwrap();
    let sla = met.sla.unwrap();
    assert_eq!(state(&sla.next_response), v1::SlaState::Met);
    assert_eq!(state(&sla.first_response), v1::SlaState::Met);

    // 15:10Z (11:10 New York): a new message starts a new clock in the
    // ticket's calendar, whoever owns it: 590 minutes today, 370 from
    // 08:00 Wednesday: 14:10 New York.
    mesh.clock.set(minutes(70));
    let again = message(
        &mut eu,
        &id,
        v1::Visibility::Inbound,
        "Thanks, one more thing",
    )
    .await
    .unwrap();
    let next = again.sla.unwrap().next_response.unwrap();
    let due: Timestamp = "2026-06-03T18:10:00Z".parse().unwrap();
    assert_eq!(at(&next.due), due);

    // Pending pauses it; the customer's next message reopens the ticket
    // and resumes the same clock (still measured from the oldest unanswered
    // message), pushed back by the 10 paused business minutes.
    mesh.clock.set(minutes(75));
    let pending = set_status(&mut eu, &id, v1::Status::Pending).await;
    assert_eq!(
        state(&pending.sla.unwrap().next_response),
        v1::SlaState::Paused
    );
    mesh.clock.set(minutes(85));
    let reopened = message(&mut eu, &id, v1::Visibility::Inbound, "Hello? Anyone?")
        .await
        .unwrap();
    assert_eq!(
        reopened.status,
        v1::Status::Open as i32,
        "a customer message reopens"
    );
    let next = reopened.sla.unwrap().next_response.unwrap();
    assert_eq!(
        v1::SlaState::try_from(next.state).unwrap(),
        v1::SlaState::Running
    );
    assert_eq!(
        at(&next.due),
        due + SignedDuration::from_mins(10),
        "ten paused minutes push the deadline back ten minutes"
    );

    // Every region holds the same conversation and the same clocks.
    mesh.wait_quiet().await;
    let reference = get(&mut eu, &id).await;
    for region in common::REGIONS {
        let mut client = mesh.client(region).await;
        let copy = get(&mut client, &id).await;
        assert_eq!(
            copy.ticket.as_ref().unwrap().sla,
            reference.ticket.as_ref().unwrap().sla,
            "{region}"
        );
        let kinds: Vec<i32> = copy.notes.iter().map(|n| n.visibility).collect();
        let inbound = v1::Visibility::Inbound as i32;
        let public = v1::Visibility::Public as i32;
        assert_eq!(
            kinds.iter().filter(|v| **v == inbound).count(),
            4,
            "{region}: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|v| **v == public).count(),
            2,
            "{region}: {kinds:?}"
        );
    }
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ticket_takes_no_more_messages_and_bad_visibility_is_refused() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let ticket = create(&mut us, "enterprise").await;
    let err = us
        .add_note(v1::AddNoteRequest {
            ticket_id: ticket.id.clone(),
            author: "ana".into(),
            body: "b".into(),
            visibility: 7,
            note_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("visibility:"),
        "{}",
        err.message()
    );

    for status in [v1::Status::Solved, v1::Status::Closed] {
        set_status(&mut us, &ticket.id, status).await;
    }
    let before = get(&mut us, &ticket.id).await;
    for visibility in [v1::Visibility::Inbound, v1::Visibility::Public] {
        let err = message(&mut us, &ticket.id, visibility, "hello")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("closed"), "{}", err.message());
    }
    let after = get(&mut us, &ticket.id).await;
    assert_eq!(before, after, "nothing written");
    mesh.stop().await;
}
