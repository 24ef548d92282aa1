//! Escalation that acts, through three real gateways on a manual clock
//! (example rules, Tuesday 2 June 2026, UTC times): us-east works
//! 12:00–01:00 (path eu-west, apac-south; on call us-east-pager), eu-west
//! 07:00–16:00 (path us-east; on call eu-west-pager), apac-south
//! 23:00–08:00 (path us-east, eu-west). Alerts go to an in-process target
//! that records them.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Mesh, Options};
use jiff::Timestamp;
use meridian_gateway::escalation::{Alert, AlertFuture, AlertKind, AlertSink, Alerts};
use meridian_proto::v1;

/// Records every alert it is given.
#[derive(Default)]
struct Recorded(Mutex<Vec<Alert>>);

impl Alerts for Recorded {
    fn notify(&self, alert: Alert) -> AlertFuture<'_> {
        self.0.lock().unwrap().push(alert);
        Box::pin(async { Ok(()) })
    }
}

impl Recorded {
    fn all(&self) -> Vec<Alert> {
        self.0.lock().unwrap().clone()
    }

    fn for_ticket(&self, id: &str, kind: AlertKind) -> Vec<Alert> {
        self.all()
            .into_iter()
            .filter(|a| a.ticket_id.to_string() == id && a.kind == kind)
            .collect()
    }
}

async fn start(at: &str) -> (Mesh, Arc<Recorded>) {
    let recorded = Arc::new(Recorded::default());
    let mesh = Mesh::start(Options {
        at,
        alerts: AlertSink::new(recorded.clone()),
        ..Options::default()
    })
    .await;
    (mesh, recorded)
}

fn create(subject: &str, skill: &str, tier: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: tier.into(),
        skills: vec![skill.into()],
        ..Default::default()
    }
}

async fn new_ticket(mesh: &Mesh, region: &str, request: v1::CreateTicketRequest) -> String {
    mesh.client(region)
        .await
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
        .id
}

async fn escalate(mesh: &Mesh, region: &str, id: &str) {
    mesh.client(region)
        .await
        .update_ticket(v1::UpdateTicketRequest {
            ticket_id: id.into(),
            status: Some(v1::Status::Escalated as i32),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn get(mesh: &Mesh, region: &str, id: &str) -> v1::GetTicketResponse {
    mesh.client(region)
        .await
        .get_ticket(v1::GetTicketRequest {
            ticket_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Until `check` holds of the alerts recorded so far.
async fn wait_alerts(recorded: &Recorded, what: &str, check: impl Fn(&[Alert]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check(&recorded.all()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}: {:#?}",
            recorded.all()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The notes Meridian wrote for escalations, as read in `region`.
async fn escalation_notes(mesh: &Mesh, region: &str, id: &str) -> Vec<String> {
    get(mesh, region, id)
        .await
        .notes
        .into_iter()
        .filter(|n| n.auto && n.body.contains("Escalation [escalation:"))
        .map(|n| n.body)
        .collect()
}

fn set(mesh: &Mesh, at: &str) {
    mesh.clock.set(at.parse::<Timestamp>().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalated_tickets_follow_the_path_step_by_step_and_only_once() {
    // 14:00Z: us-east and eu-west on shift, apac-south off.
    let (mesh, recorded) = start("2026-06-02T14:00:00Z").await;

    // Moved to `escalated` in us-east: its path starts with eu-west, on
    // shift, which covers `general`.
    let first = new_ticket(
        &mesh,
        "us-east",
        create("Export stuck", "general", "standard"),
    )
    .await;
    escalate(&mesh, "us-east", &first).await;
    mesh.wait_owner("us-east", &first, "eu-west").await;
    mesh.wait_quiet().await;
    let notes = escalation_notes(&mesh, "eu-west", &first).await;
    assert_eq!(notes.len(), 1, "one escalation step: {notes:#?}");
    assert!(
        notes[0].starts_with("Handoff us-east → eu-west (auto)"),
        "the escalation is a handoff with its note: {}",
        notes[0]
    );
    assert!(notes[0].contains("moved to escalated"), "{}", notes[0]);
    assert!(
        notes[0].contains("eu-west is on shift and may take it"),
        "{}",
        notes[0]
    );

    // No double escalation: eu-west sees the key in the note and does
    // not send the ticket on along its own path (back to us-east), scan
    // after scan.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(mesh.owner("us-east", &first).await, "eu-west");
    assert_eq!(escalation_notes(&mesh, "eu-west", &first).await.len(), 1);
    let notices = recorded.for_ticket(&first, AlertKind::Escalation);
    assert!(!notices.is_empty(), "the escalation was notified");
    let keys: std::collections::BTreeSet<&str> = notices.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys.len(), 1, "one key for one escalation: {keys:?}");
    assert!(notices.iter().all(|a| a.target.is_none()));

    // 23:40Z: us-east on its late shift, apac-south on shift. The path's
    // first region (eu-west) lacks `networking`, so the step goes on to
    // the second, and the note says why the first was skipped.
    set(&mesh, "2026-06-02T23:40:00Z");
    let second = new_ticket(
        &mesh,
        "us-east",
        create("VPN flapping", "networking", "standard"),
    )
    .await;
    escalate(&mesh, "us-east", &second).await;
    mesh.wait_owner("us-east", &second, "apac-south").await;
    mesh.wait_quiet().await;
    let notes = escalation_notes(&mesh, "apac-south", &second).await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0].contains("eu-west: missing skill"),
        "the skipped step says why: {}",
        notes[0]
    );
    assert!(
        notes[0].contains("apac-south is on shift and may take it"),
        "{}",
        notes[0]
    );

    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_warning_escalates_once_and_the_breach_does_not_again() {
    // 14:00Z: an enterprise ticket (first response in 30 minutes, 24x7)
    // in us-east; nobody answers.
    let (mesh, recorded) = start("2026-06-02T14:00:00Z").await;
    let id = new_ticket(
        &mesh,
        "us-east",
        create("Database down", "general", "enterprise"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mesh.owner("us-east", &id).await,
        "us-east",
        "nothing is due yet"
    );

    // 14:25Z: past the warning point (80%): us-east's path takes it to
    // eu-west, on shift.
    set(&mesh, "2026-06-02T14:25:00Z");
    mesh.wait_owner("us-east", &id, "eu-west").await;
    mesh.wait_quiet().await;
    let notes = escalation_notes(&mesh, "eu-west", &id).await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0]
            .contains("first response at risk (due 2026-06-02T14:30:00Z) and nobody has answered"),
        "{}",
        notes[0]
    );

    // 14:31Z: the same clock breaches in eu-west. The same clock is the
    // same trigger: no second escalation.
    set(&mesh, "2026-06-02T14:31:00Z");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mesh.owner("us-east", &id).await, "eu-west");
    assert_eq!(escalation_notes(&mesh, "eu-west", &id).await.len(), 1);
    let got = get(&mesh, "eu-west", &id).await.ticket.unwrap();
    assert_eq!(
        got.sla.unwrap().first_response.unwrap().state,
        v1::SlaState::Breached as i32,
        "the breach was recorded in eu-west"
    );
    let keys: std::collections::BTreeSet<String> = recorded
        .for_ticket(&id, AlertKind::Escalation)
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_region_of_the_path_on_shift_the_oncall_target_is_told_and_strandings_alerted_once()
{
    // 02:00Z Wednesday: us-east and eu-west off shift, apac-south on
    // shift without `billing`.
    let (mesh, recorded) = start("2026-06-03T02:00:00Z").await;
    let id = new_ticket(
        &mesh,
        "eu-west",
        create("Invoice wrong", "billing", "standard"),
    )
    .await;
    escalate(&mesh, "eu-west", &id).await;
    wait_alerts(&recorded, "the on-call escalation", |alerts| {
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::Escalation && a.ticket_id.to_string() == id)
    })
    .await;
    let oncall = recorded.for_ticket(&id, AlertKind::Escalation);
    assert_eq!(
        oncall[0].target.as_deref(),
        Some("eu-west-pager"),
        "eu-west's on-call target: {oncall:#?}"
    );
    assert!(
        oncall[0].text.contains("us-east: off shift until"),
        "{}",
        oncall[0].text
    );
    // The step is on the ticket: an auto note, and it stayed in eu-west.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let notes = loop {
        let notes = escalation_notes(&mesh, "eu-west", &id).await;
        if !notes.is_empty() || tokio::time::Instant::now() > deadline {
            break notes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0].contains("on-call target eu-west-pager notified; the ticket stays with eu-west"),
        "{}",
        notes[0]
    );
    assert_eq!(mesh.owner("us-east", &id).await, "eu-west");

    // A sweep period later the continuity sweep finds nobody on shift may
    // take it: one stranded alert, however many sweeps see it.
    set(&mesh, "2026-06-03T02:01:05Z");
    wait_alerts(&recorded, "the stranded alert", |alerts| {
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::Stranded && a.ticket_id.to_string() == id)
    })
    .await;
    set(&mesh, "2026-06-03T02:02:10Z");
    tokio::time::sleep(Duration::from_millis(300)).await;
    set(&mesh, "2026-06-03T02:03:15Z");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stranded = recorded.for_ticket(&id, AlertKind::Stranded);
    assert_eq!(stranded.len(), 1, "once per stranding: {stranded:#?}");
    assert!(stranded[0].key.starts_with(&format!("stranded:{id}:")));
    // Still one on-call escalation, scan after scan.
    let escalations = recorded.for_ticket(&id, AlertKind::Escalation);
    assert_eq!(escalations.len(), 1, "{escalations:#?}");

    mesh.check_invariants().await;
    mesh.stop().await;
}
