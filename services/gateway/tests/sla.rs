//! SLA clocks in the gateway, on a manual clock: deadlines from the tier's
//! policy at creation, `sla_warning` at 80% and `sla_breached` at 100% of a
//! target, the at-risk list filter, and a pausing status that pushes the
//! deadline back by the time spent paused.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use meridian_core::{ManualClock, RegionId};
use meridian_gateway::{GatewayConfig, RulesSettings};
use meridian_proto::v1::{
    self, ticket_service_client::TicketServiceClient, watch_events_request::Scope,
};
use meridian_test_support::{Backing, TestDatabase};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Code, Streaming, transport::Channel};

const START: &str = "2026-06-01T14:00:00Z";

struct Harness {
    clock: Arc<ManualClock>,
    client: TicketServiceClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<meridian_gateway::Result<()>>,
    _db: TestDatabase,
}

impl Harness {
    async fn start() -> Harness {
        let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let regions = ["us-east", "eu-west", "apac-south"]
            .map(|r| RegionId::new(r).unwrap())
            .to_vec();
        let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
        let mut settings = RulesSettings::new(rules);
        settings.sla_scan_interval = Duration::from_millis(20);
        config.rules = Some(settings);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(meridian_gateway::run_with_clock(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            clock.clone(),
        ));
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = TicketServiceClient::connect(format!("http://{addr}")).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Harness {
            clock,
            client: client.expect("gateway accepts connections"),
            stop,
            gateway,
            _db: db,
        }
    }

    fn advance_to(&self, minutes_after_start: i64) {
        let start: Timestamp = START.parse().unwrap();
        self.clock
            .set(start + SignedDuration::from_mins(minutes_after_start));
    }

    async fn create(&mut self, tier: &str) -> v1::Ticket {
        let request = v1::CreateTicketRequest {
            subject: "Checkout down".into(),
            customer: "acme".into(),
            tier: tier.into(),
            ..Default::default()
        };
        self.client
            .create_ticket(request)
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    async fn set_status(&mut self, id: &str, status: v1::Status) -> v1::Ticket {
        let request = v1::UpdateTicketRequest {
            ticket_id: id.into(),
            status: Some(status.into()),
            ..Default::default()
        };
        self.client
            .update_ticket(request)
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    async fn at_risk(&mut self) -> Vec<String> {
        let request = v1::ListTicketsRequest {
            sla_at_risk: true,
            ..Default::default()
        };
        self.client
            .list_tickets(request)
            .await
            .unwrap()
            .into_inner()
            .tickets
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.gateway.await.unwrap().unwrap();
    }
}

fn minutes(t: &Option<prost_types::Timestamp>) -> i64 {
    let start: Timestamp = START.parse().unwrap();
    let at = Timestamp::new(t.as_ref().unwrap().seconds, t.as_ref().unwrap().nanos).unwrap();
    at.duration_since(start).as_mins()
}

async fn next_event(events: &mut Streaming<v1::Event>) -> v1::Event {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_at_eighty_percent_then_breach() {
    let mut h = Harness::start().await;
    // enterprise: 24x7 calendar, first response in 30 minutes.
    let ticket = h.create("enterprise").await;
    let sla = ticket.sla.unwrap();
    let first = sla.first_response.unwrap();
    assert_eq!(minutes(&first.due), 30);
    assert_eq!(minutes(&first.warn_at), 24);
    assert_eq!(first.state, v1::SlaState::Running as i32);
    assert_eq!(minutes(&sla.resolution.unwrap().due), 480);

    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::TicketId(ticket.id.clone())),
        after_seq: 0,
    };
    let mut events = h.client.watch_events(watch).await.unwrap().into_inner();
    assert_eq!(next_event(&mut events).await.kind, "ticket_created");

    h.advance_to(23);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        h.at_risk().await.is_empty(),
        "nothing is at risk before 80%"
    );

    h.advance_to(24);
    let warning = next_event(&mut events).await;
    assert_eq!(warning.kind, "sla_warning");
    assert!(
        warning
            .payload_json
            .contains("\"metric\":\"first_response\""),
        "{}",
        warning.payload_json
    );
    assert_eq!(h.at_risk().await, std::slice::from_ref(&ticket.id));

    h.advance_to(31);
    // The warning of an unanswered first response also escalates
    // (escalation.rs): with no path, its auto note comes between.
    let breach = loop {
        let event = next_event(&mut events).await;
        if event.kind != "note_added" {
            break event;
        }
    };
    assert_eq!(breach.kind, "sla_breached");
    assert!(
        breach
            .payload_json
            .contains("\"metric\":\"first_response\""),
        "{}",
        breach.payload_json
    );
    let got = h
        .client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let sla = got.ticket.unwrap().sla.unwrap();
    assert_eq!(
        sla.first_response.unwrap().state,
        v1::SlaState::Breached as i32
    );
    assert!(sla.at_risk);

    // Answering late does not undo the breach; the resolution clock runs on.
    let opened = h.set_status(&ticket.id, v1::Status::Open).await;
    let sla = opened.sla.unwrap();
    assert_eq!(
        sla.first_response.unwrap().state,
        v1::SlaState::Breached as i32
    );
    assert_eq!(sla.resolution.unwrap().state, v1::SlaState::Running as i32);

    // No second alert for the same clock.
    h.advance_to(60);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Escalation auto notes may come between; the SLA events may not.
    let mut kinds: Vec<String> = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        if e.kind != "note_added" {
            kinds.push(e.kind);
        }
    }
    assert_eq!(kinds, ["ticket_updated"], "only the status change follows");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pauses_the_clock_and_pushes_the_deadline_back() {
    let mut h = Harness::start().await;
    let ticket = h.create("enterprise").await;
    let opened = h.set_status(&ticket.id, v1::Status::Open).await;
    assert_eq!(
        opened.sla.unwrap().first_response.unwrap().state,
        v1::SlaState::Running as i32,
        "a status change is not an answer"
    );
    let reply = v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "ana".into(),
        body: "Looking into it now.".into(),
        visibility: v1::Visibility::Public.into(),
        note_id: String::new(),
    };
    let replied = h.client.add_note(reply).await.unwrap().into_inner();
    let sla = replied.ticket.unwrap().sla.unwrap();
    assert_eq!(
        sla.first_response.unwrap().state,
        v1::SlaState::Met as i32,
        "the first reply meets the first response"
    );
    assert_eq!(minutes(&sla.resolution.unwrap().due), 480);

    h.advance_to(60);
    let pending = h.set_status(&ticket.id, v1::Status::Pending).await;
    assert_eq!(
        pending.sla.unwrap().resolution.unwrap().state,
        v1::SlaState::Paused as i32
    );

    // Paused well past the deadline: no alert while pending.
    h.advance_to(600);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(h.at_risk().await.is_empty());

    let resumed = h.set_status(&ticket.id, v1::Status::Open).await;
    let resolution = resumed.sla.unwrap().resolution.unwrap();
    assert_eq!(resolution.state, v1::SlaState::Running as i32);
    assert_eq!(
        minutes(&resolution.due),
        480 + 540,
        "nine hours pending push the deadline back nine hours"
    );
    assert_eq!(minutes(&resolution.warn_at), 384 + 540);
    h.stop().await;
}

#[tokio::test]
async fn a_tier_missing_from_the_rules_is_refused() {
    let mut h = Harness::start().await;
    let request = v1::CreateTicketRequest {
        subject: "s".into(),
        customer: "c".into(),
        tier: "platinum".into(),
        ..Default::default()
    };
    let err = h.client.create_ticket(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("tier: \"platinum\" is not a tier of rules 2026.06-1"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("standard, premium, enterprise"),
        "{}",
        err.message()
    );
    let listed = h
        .client
        .list_tickets(v1::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tickets.is_empty());
    h.stop().await;
}
