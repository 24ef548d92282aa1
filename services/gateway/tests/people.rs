//! People, black box (issue 16): three gateways with rosters and bearer
//! tokens, over real gRPC with replication between them and the rules'
//! manual clock. Presence is read through the shift and lapses when it
//! ends; claims and assignments are checked against the roster (region,
//! skills, capacity); unknown subjects are refused with the reason;
//! automatic assignment spreads a burst evenly and never over a limit; a
//! handoff leaves the ticket to the receiving shift's queue; and every
//! event names its actor, the same on every region.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{Mesh, Options, region};
use futures::StreamExt;
use meridian_auth::{AuthSettings, Claims, Role, SigningKey, jwks::write_jwks};
use meridian_proto::v1::{
    self, agent_service_client::AgentServiceClient, ticket_service_client::TicketServiceClient,
    watch_events_request::Scope,
};
use tonic::{Code, Request, Status, transport::Channel};

const US_ROSTER: &str = r#"region = "us-east"

[[agents]]
id = "ana"
name = "Ana Souza"
skills = ["networking", "general"]
languages = ["en", "pt"]
max_open = 2
shifts = ["day"]

[[agents]]
id = "bo"
skills = ["billing"]
max_open = 5
shifts = ["day", "late"]
"#;

const EU_ROSTER: &str = r#"region = "eu-west"

[[agents]]
id = "eve"
skills = ["general", "billing"]
max_open = 5
shifts = ["day"]
"#;

/// Signs tokens the gateways accept.
struct Tokens {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Tokens {
    fn new() -> Tokens {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("people-key").unwrap();
        write_jwks(&dir.path().join("jwks.json"), &[key.public_jwk()]).unwrap();
        Tokens { dir, key }
    }

    fn settings(&self) -> AuthSettings {
        AuthSettings::new(self.dir.path().join("jwks.json"))
    }

    /// A token for `subject` as `role` (of `region` if given), for an hour
    /// of real time (token lifetimes ignore the rules' manual clock).
    fn mint(&self, subject: &str, role: Role, region: Option<&str>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let region = region.map(self::region);
        self.key.mint(&Claims::new(
            subject.to_owned(),
            role,
            region.as_ref(),
            i64::try_from(now).unwrap(),
            3600,
        ))
    }

    fn agent(&self, subject: &str, region: &str) -> String {
        self.mint(subject, Role::Agent, Some(region))
    }
}

fn with<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn start(tokens: &Tokens, us_roster: &str) -> Mesh {
    Mesh::start(Options {
        auth: Some(tokens.settings()),
        harness_token: Some(tokens.mint("harness", Role::Sre, None)),
        rosters: vec![
            ("us-east", us_roster.to_owned()),
            ("eu-west", EU_ROSTER.to_owned()),
        ],
        ..Options::default()
    })
    .await
}

async fn agents(mesh: &Mesh, name: &str) -> AgentServiceClient<Channel> {
    let channel = Channel::from_shared(mesh.region(name).url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentServiceClient::new(channel)
}

async fn list(mesh: &Mesh, name: &str, token: &str) -> v1::ListAgentsResponse {
    agents(mesh, name)
        .await
        .list_agents(with(token, v1::ListAgentsRequest {}))
        .await
        .unwrap()
        .into_inner()
}

fn agent<'a>(list: &'a v1::ListAgentsResponse, id: &str) -> &'a v1::AgentStatus {
    list.agents.iter().find(|a| a.id == id).unwrap()
}

async fn set_presence(
    mesh: &Mesh,
    name: &str,
    token: &str,
    presence: v1::Presence,
) -> Result<v1::AgentStatus, Status> {
    agents(mesh, name)
        .await
        .set_presence(with(
            token,
            v1::SetPresenceRequest {
                presence: presence.into(),
                agent: String::new(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn new_ticket(subject: &str, skills: &[&str]) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "the tunnel drops every hour".into(),
        customer: "acme".into(),
        tier: "standard".into(),
        skills: skills.iter().map(|s| (*s).to_owned()).collect(),
        language: "en".into(),
        ..Default::default()
    }
}

async fn create(
    client: &mut TicketServiceClient<Channel>,
    token: &str,
    subject: &str,
    skills: &[&str],
) -> v1::Ticket {
    client
        .create_ticket(with(token, new_ticket(subject, skills)))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
}

async fn assign(
    client: &mut TicketServiceClient<Channel>,
    token: &str,
    ticket: &str,
    agent: &str,
    unassign: bool,
) -> Result<v1::Ticket, Status> {
    client
        .assign_ticket(with(
            token,
            v1::AssignTicketRequest {
                ticket_id: ticket.into(),
                agent: agent.into(),
                unassign,
            },
        ))
        .await
        .map(|r| r.into_inner().ticket.unwrap())
}

fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(reason),
        "expected {reason:?} in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_read_through_the_shift_and_lapses_when_it_ends() {
    let tokens = Tokens::new();
    let mesh = start(&tokens, US_ROSTER).await;
    let ana = tokens.agent("ana", "us-east");
    let sre = tokens.mint("sam", Role::Sre, None);

    // 10:00 in New York: the day shift, which ana works. Nobody set a
    // presence yet, so she is offline.
    let before = list(&mesh, "us-east", &sre).await;
    assert_eq!(before.region, "us-east");
    assert_eq!(before.auto_assign, "off");
    assert_eq!(before.queue_owner, "us-east-day-lead");
    assert!(before.roster_problems.is_empty());
    let row = agent(&before, "ana");
    assert_eq!(
        (row.name.as_str(), row.on_shift.as_str()),
        ("Ana Souza", "day")
    );
    assert_eq!(row.presence(), v1::Presence::Offline);

    let set = set_presence(&mesh, "us-east", &ana, v1::Presence::Available)
        .await
        .unwrap();
    assert_eq!(set.presence(), v1::Presence::Available);
    assert_eq!(
        agent(&list(&mesh, "us-east", &sre).await, "ana").presence(),
        v1::Presence::Available
    );

    // 17:30 in New York: the late shift, which ana does not work.
    mesh.clock.set("2026-06-02T21:30:00Z".parse().unwrap());
    let late = list(&mesh, "us-east", &sre).await;
    assert_eq!(agent(&late, "ana").presence(), v1::Presence::Offline);
    assert_eq!(agent(&late, "ana").on_shift, "");
    assert_eq!(agent(&late, "bo").on_shift, "late");
    refused(
        set_presence(&mesh, "us-east", &ana, v1::Presence::Available).await,
        Code::FailedPrecondition,
        "ana is not on shift now (they work day)",
    );

    // The next day shift: what she set yesterday has lapsed.
    mesh.clock.set("2026-06-03T13:00:00Z".parse().unwrap());
    let next = list(&mesh, "us-east", &sre).await;
    assert_eq!(agent(&next, "ana").on_shift, "day");
    assert_eq!(agent(&next, "ana").presence(), v1::Presence::Offline);

    // Only the agent (or an admin) sets their presence, and only a roster
    // agent has one.
    let stranger = tokens.agent("zed", "us-east");
    refused(
        set_presence(&mesh, "us-east", &stranger, v1::Presence::Away).await,
        Code::PermissionDenied,
        "\"zed\" is not an agent of us-east's roster",
    );
    let bo = tokens.agent("bo", "us-east");
    let mut client = agents(&mesh, "us-east").await;
    refused(
        client
            .set_presence(with(
                &bo,
                v1::SetPresenceRequest {
                    presence: v1::Presence::Away.into(),
                    agent: "ana".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "may set only their own presence",
    );
    // apac-south keeps no roster.
    let mut apac = agents(&mesh, "apac-south").await;
    refused(
        apac.list_agents(with(&sre, v1::ListAgentsRequest {})).await,
        Code::FailedPrecondition,
        "apac-south keeps no roster",
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_assignments_keep_to_the_roster() {
    let tokens = Tokens::new();
    let mesh = start(&tokens, US_ROSTER).await;
    let (ana, bo) = (
        tokens.agent("ana", "us-east"),
        tokens.agent("bo", "us-east"),
    );
    let mut us = mesh.client("us-east").await;
    let first = create(&mut us, &ana, "VPN drops", &["networking"]).await;
    assert_eq!(first.assignee, None, "auto-assignment is off");

    // Claim: "assign to me".
    let claimed = assign(&mut us, &ana, &first.id, "", false).await.unwrap();
    assert_eq!(claimed.assignee.as_deref(), Some("ana"));
    // bo lacks the skill; zed is nobody.
    refused(
        assign(&mut us, &ana, &first.id, "bo", false).await,
        Code::FailedPrecondition,
        "bo lacks the skill networking the ticket needs",
    );
    let zed = tokens.agent("zed", "us-east");
    refused(
        assign(&mut us, &zed, &first.id, "", false).await,
        Code::FailedPrecondition,
        "\"zed\" is not an agent of us-east's roster",
    );
    // The free-text field of UpdateTicket is held to the same roster.
    refused(
        us.update_ticket(with(
            &ana,
            v1::UpdateTicketRequest {
                ticket_id: first.id.clone(),
                assignee: Some("anna".into()),
                ..Default::default()
            },
        ))
        .await,
        Code::FailedPrecondition,
        "did you mean \"ana\"?",
    );

    // Capacity: ana may hold two open tickets.
    let second = create(&mut us, &bo, "VPN slow", &["networking"]).await;
    assign(&mut us, &bo, &second.id, "ana", false)
        .await
        .unwrap();
    let third = create(&mut us, &bo, "VPN gone", &["networking"]).await;
    refused(
        assign(&mut us, &bo, &third.id, "ana", false).await,
        Code::FailedPrecondition,
        "ana holds 2 open tickets, their limit",
    );
    // A solved ticket frees a place.
    us.update_ticket(with(
        &ana,
        v1::UpdateTicketRequest {
            ticket_id: second.id.clone(),
            status: Some(v1::Status::Solved.into()),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let third = assign(&mut us, &bo, &third.id, "ana", false).await.unwrap();
    assert_eq!(third.assignee.as_deref(), Some("ana"));

    // An agent of another region assigns nothing here.
    let eve = tokens.agent("eve", "eu-west");
    refused(
        assign(&mut us, &eve, &first.id, "", false).await,
        Code::PermissionDenied,
        "eve",
    );
    // Unassign.
    let freed = assign(&mut us, &ana, &first.id, "", true).await.unwrap();
    assert_eq!(freed.assignee, None);
    refused(
        assign(&mut us, &ana, &first.id, "bo", true).await,
        Code::InvalidArgument,
        "agent: must be empty with unassign",
    );
    let sre = tokens.mint("sam", Role::Sre, None);
    let now = list(&mesh, "us-east", &sre).await;
    assert_eq!(agent(&now, "ana").open_tickets, 1);
    assert_eq!(now.unassigned_open, 1, "the first ticket, unassigned again");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_assignment_spreads_a_burst_evenly_and_never_over_a_limit() {
    const TICKETS: usize = 1_000;
    let roster = r#"region = "us-east"
[assignment]
auto = "least_loaded"
[[agents]]
id = "a1"
skills = ["networking"]
max_open = 1000
shifts = ["day"]
[[agents]]
id = "a2"
skills = ["networking", "billing"]
max_open = 1000
shifts = ["day"]
[[agents]]
id = "a3"
skills = ["networking"]
max_open = 1000
shifts = ["day", "late"]
[[agents]]
id = "a4"
skills = ["networking"]
max_open = 1000
shifts = ["day"]
[[agents]]
id = "capped"
skills = ["networking"]
max_open = 50
shifts = ["day"]
[[agents]]
id = "away"
skills = ["networking"]
max_open = 1000
shifts = ["day"]
[[agents]]
id = "unskilled"
skills = ["billing"]
max_open = 1000
shifts = ["day"]
[[agents]]
id = "off-shift"
skills = ["networking"]
max_open = 1000
shifts = ["late"]
"#;
    let tokens = Tokens::new();
    let mesh = start(&tokens, roster).await;
    for (id, presence) in [
        ("a1", v1::Presence::Available),
        ("a2", v1::Presence::Available),
        ("a3", v1::Presence::Available),
        ("a4", v1::Presence::Available),
        ("capped", v1::Presence::Available),
        ("away", v1::Presence::Away),
        ("unskilled", v1::Presence::Available),
    ] {
        set_presence(&mesh, "us-east", &tokens.agent(id, "us-east"), presence)
            .await
            .unwrap();
    }
    // A burst from eight concurrent callers.
    let intake = tokens.mint("web-form", Role::Intake, None);
    let mut callers = Vec::new();
    for caller in 0..8 {
        let mut client = mesh.client("us-east").await;
        let intake = intake.clone();
        callers.push(tokio::spawn(async move {
            let mut assignees = Vec::new();
            for i in (caller..TICKETS).step_by(8) {
                let ticket =
                    create(&mut client, &intake, &format!("burst {i}"), &["networking"]).await;
                assignees.push(ticket.assignee.expect("every ticket finds an agent"));
            }
            assignees
        }));
    }
    let mut given: BTreeMap<String, usize> = BTreeMap::new();
    for caller in callers {
        for assignee in caller.await.unwrap() {
            *given.entry(assignee).or_default() += 1;
        }
    }
    assert_eq!(given.values().sum::<usize>(), TICKETS);
    assert_eq!(
        given.get("capped"),
        Some(&50),
        "filled to its limit, not over: {given:?}"
    );
    for nobody in ["away", "unskilled", "off-shift"] {
        assert_eq!(given.get(nobody), None, "{nobody} got work: {given:?}");
    }
    let spread: Vec<usize> = ["a1", "a2", "a3", "a4"].iter().map(|a| given[*a]).collect();
    let (lo, hi) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
    assert!(hi - lo <= 1, "not within one of even: {given:?}");
    // The store agrees with the answers.
    let sre = tokens.mint("sam", Role::Sre, None);
    let now = list(&mesh, "us-east", &sre).await;
    for (id, n) in &given {
        assert_eq!(agent(&now, id).open_tickets as usize, *n, "{id}");
    }
    assert_eq!(now.unassigned_open, 0);
    mesh.stop().await;
}

/// Every event of `ticket` that `name` holds, read with WatchEvents.
async fn events_of(
    mesh: &Mesh,
    name: &str,
    token: &str,
    ticket: &str,
    count: usize,
) -> Vec<v1::Event> {
    let mut client = mesh.client(name).await;
    let mut stream = client
        .watch_events(with(
            token,
            v1::WatchEventsRequest {
                scope: Some(Scope::TicketId(ticket.into())),
                after_seq: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            other => panic!("{name}: {} of {count} events, then {other:?}", events.len()),
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_names_its_actor_on_every_region_and_a_handoff_leaves_the_ticket_unassigned() {
    let tokens = Tokens::new();
    let mesh = start(&tokens, US_ROSTER).await;
    let ana = tokens.agent("ana", "us-east");
    let mut us = mesh.client("us-east").await;
    let ticket = create(&mut us, &ana, "printer on fire", &["general"]).await;
    assign(&mut us, &ana, &ticket.id, "", false).await.unwrap();
    us.update_ticket(with(
        &ana,
        v1::UpdateTicketRequest {
            ticket_id: ticket.id.clone(),
            status: Some(v1::Status::Open.into()),
            priority: Some(v1::Priority::High.into()),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let note = |author: &str, visibility: v1::Visibility| v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: author.into(),
        body: "looked at it".into(),
        visibility: visibility.into(),
        note_id: String::new(),
    };
    // Callers no longer choose an author: ana writes as ana ...
    let written = us
        .add_note(with(&ana, note("", v1::Visibility::Internal)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.note.unwrap().author, "ana");
    us.add_note(with(&ana, note("ana", v1::Visibility::Public)))
        .await
        .unwrap();
    refused(
        us.add_note(with(&ana, note("bo", v1::Visibility::Internal)))
            .await,
        Code::PermissionDenied,
        "only an admin import or an intake system names another author",
    );
    // ... and an admin import names one, recorded under the admin.
    let admin = tokens.mint("importer", Role::Admin, None);
    let imported = us
        .add_note(with(&admin, note("legacy-desk", v1::Visibility::Internal)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.note.unwrap().author, "legacy-desk");

    // ana hands it to eu-west (on shift at 14:00 UTC) with the form's note.
    let handed = us
        .handoff(with(
            &ana,
            v1::HandoffRequest {
                ticket_id: ticket.id.clone(),
                to_region: "eu-west".into(),
                note: Some(v1::HandoffNote {
                    current_status: v1::Status::Open.into(),
                    last_action: "reseated the fuser".into(),
                    next_action: "call the customer at 09:00".into(),
                    text: String::new(),
                    author: String::new(),
                    deadline: None,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let after = handed.ticket.unwrap();
    assert_eq!(after.owner.unwrap().owner_region, "eu-west");
    assert_eq!(after.assignee, None, "a handoff clears the assignee");

    // The receiving shift's queue owner is accountable for it now.
    let sre = tokens.mint("sam", Role::Sre, None);
    let eu = list(&mesh, "eu-west", &sre).await;
    assert_eq!(eu.unassigned_open, 1);
    assert_eq!(eu.queue_owner, "eu-west-day-lead");
    let eve = tokens.agent("eve", "eu-west");
    let mut eu_client = mesh.client("eu-west").await;
    assign(&mut eu_client, &eve, &ticket.id, "", false)
        .await
        .unwrap();

    // created, assigned, updated, 3 notes (the reply also updates the
    // clocks), imported note, offer, acceptance, eve's claim.
    let expected = [
        ("ticket_created", "ana", "agent"),
        ("ticket_updated", "ana", "agent"),
        ("ticket_updated", "ana", "agent"),
        ("note_added", "ana", "agent"),
        ("note_added", "ana", "agent"),
        ("ticket_updated", "ana", "agent"),
        ("note_added", "importer", "admin"),
        ("handoff_offered", "ana", "agent"),
        ("handoff_accepted", "ana", "agent"),
        ("ticket_updated", "eve", "agent"),
    ];
    for name in ["us-east", "eu-west", "apac-south"] {
        let events = events_of(&mesh, name, &sre, &ticket.id, expected.len()).await;
        let mut seen: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.kind.clone(),
                    e.actor_subject.clone(),
                    e.actor_role.clone(),
                )
            })
            .collect();
        let mut want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(k, s, r)| ((*k).to_owned(), (*s).to_owned(), (*r).to_owned()))
            .collect();
        // Events of two origins interleave by HLC; compare as sets.
        seen.sort();
        want.sort();
        assert_eq!(seen, want, "{name}");
    }
    mesh.stop().await;
}
