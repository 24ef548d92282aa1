//! Clients' tokens on the public services, black box: a gateway (and a
//! router in front of it) serving TLS with `[auth]`, called over real TLS on
//! loopback with tokens minted by the same code `meridian up` and `meridian
//! token mint` use. Missing, expired, badly signed, wrong-role and
//! wrong-region tokens are refused with the right code and a reason; each
//! role does what it may; a rotated JWKS is picked up without a restart.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use meridian_auth::{AuthSettings, Claims, Role, SigningKey, jwks::write_jwks};
use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, REGION_HEADER, TlsFiles};
use meridian_proto::v1::{
    self, router_service_client::RouterServiceClient, ticket_service_client::TicketServiceClient,
    watch_events_request::Scope,
};
use meridian_test_support::{Backing, TestDatabase};
use meridian_tls::{DevPkiPlan, Service, TrustDomain, Validity, write_dev_pki};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];

/// Rules with us-east on shift around the clock: the router's decision is
/// then always the one gateway the test runs.
const ALWAYS_US_EAST: &str = r#"
version = "auth-test"
overlap_minutes = 30

[[regions]]
id = "us-east"
index = 0
time_zone = "UTC"
skills = ["networking"]
capacity = 100
preference = 50

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "00:00"
end = "12:00"
queue_owner = "east-day"

[[regions.shifts]]
name = "night"
days = ["mon-sun"]
start = "12:00"
end = "00:00"
queue_owner = "east-night"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480
"#;

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A PKI and a signing key in a temporary directory.
struct Keys {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let plan = DevPkiPlan {
            trust_domain: TrustDomain::new("meridian.test").unwrap(),
            regions: REGIONS.iter().map(|r| region(r)).collect(),
            services: Service::ALL.to_vec(),
            ca_validity: Validity::days_from(SystemTime::now(), 30),
            cert_validity: Validity::days_from(SystemTime::now(), 30),
            replace_ca: false,
        };
        write_dev_pki(dir.path(), &plan).unwrap();
        let key = SigningKey::generate("key-1").unwrap();
        write_jwks(&dir.path().join("jwks.json"), &[key.public_jwk()]).unwrap();
        Keys { dir, key }
    }

    fn jwks(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn auth(&self) -> AuthSettings {
        let mut settings = AuthSettings::new(self.jwks());
        // Fast polls, so the rotation test need not wait long.
        settings.reload_interval_ms = Some(50);
        settings
    }

    /// A token for `role` (of `region` if given), valid for an hour.
    fn token(&self, role: Role, region: Option<&str>) -> String {
        let region = region.map(self::region);
        self.key.mint(&Claims::new(
            format!("{role}-tester"),
            role,
            region.as_ref(),
            now(),
            3600,
        ))
    }
}

struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<meridian_gateway::Result<()>>,
    db: TestDatabase,
    ca: PathBuf,
}

impl Gateway {
    async fn start(keys: &Keys) -> Gateway {
        let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let regions: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
        let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
        let files =
            meridian_tls::TlsFiles::dev(keys.dir.path(), &region("us-east"), Service::Gateway);
        config.tls = Some(TlsFiles {
            cert: files.cert,
            key: files.key,
        });
        config.auth = Some(keys.auth());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(meridian_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            stop: Some(stop),
            task,
            db,
            ca: keys.ca(),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn channel(&self) -> Channel {
        tls_channel(&self.url(), &self.ca).await
    }

    async fn client(&self) -> TicketServiceClient<Channel> {
        TicketServiceClient::new(self.channel().await)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
        self.db.drop_now().await;
    }
}

async fn tls_channel(url: &str, ca: &Path) -> Channel {
    let pem = std::fs::read(ca).unwrap();
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never accepted a TLS connection");
}

/// `message` with `authorization: Bearer token` (none for `None`).
fn with<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn create_request(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "it broke".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        language: "en".into(),
        residency: vec![],
        priority: v1::Priority::High.into(),
        idempotency_key: String::new(),
    }
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(reason),
        "expected {reason:?} in {:?}",
        status.message()
    );
}

/// A ticket created by a us-east agent; its id.
async fn us_ticket(client: &mut TicketServiceClient<Channel>, keys: &Keys) -> String {
    let agent = keys.token(Role::Agent, Some("us-east"));
    let created = client
        .create_ticket(with(Some(&agent), create_request("VPN down")))
        .await
        .unwrap()
        .into_inner();
    created.ticket.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_token_is_unauthenticated_but_health_stays_open() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    assert_refused(
        client.create_ticket(with(None, create_request("x"))).await,
        Code::Unauthenticated,
        "no bearer token",
    );
    assert_refused(
        client.get_status(with(None, v1::GetStatusRequest {})).await,
        Code::Unauthenticated,
        "no bearer token",
    );
    // A scheme other than Bearer is no token either.
    let mut basic = Request::new(v1::GetStatusRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic YWRtaW46YWRtaW4=".parse().unwrap());
    assert_refused(
        client.get_status(basic).await,
        Code::Unauthenticated,
        "expected Bearer",
    );

    // Kubernetes probes and tools use health and reflection without a token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(gw.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "meridian.v1.TicketService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_not_yet_valid_token_is_unauthenticated() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    // Expired two minutes ago: past the 30 s leeway.
    let expired = keys.key.mint(&Claims::new(
        "old",
        Role::Admin,
        None,
        now() - 3600,
        3600 - 120,
    ));
    assert_refused(
        client
            .get_status(with(Some(&expired), v1::GetStatusRequest {}))
            .await,
        Code::Unauthenticated,
        "expired",
    );
    let mut early = Claims::new("early", Role::Admin, None, now(), 3600);
    early.nbf = Some(now() + 600);
    let early = keys.key.mint(&early);
    assert_refused(
        client
            .get_status(with(Some(&early), v1::GetStatusRequest {}))
            .await,
        Code::Unauthenticated,
        "not valid before",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_wrong_signature_is_unauthenticated() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let status = || v1::GetStatusRequest {};

    // Another key under the JWKS's key id: the signature does not verify.
    let impostor = SigningKey::generate("key-1").unwrap();
    let forged = impostor.mint(&Claims::new("mallory", Role::Admin, None, now(), 3600));
    assert_refused(
        client.get_status(with(Some(&forged), status())).await,
        Code::Unauthenticated,
        "signature does not verify",
    );

    // A key id the JWKS does not have.
    let stranger = SigningKey::generate("key-x").unwrap();
    let unknown = stranger.mint(&Claims::new("mallory", Role::Admin, None, now(), 3600));
    assert_refused(
        client.get_status(with(Some(&unknown), status())).await,
        Code::Unauthenticated,
        "unknown key id",
    );

    // A genuine sre token with its role raised to admin in the payload.
    let genuine = keys.token(Role::Sre, None);
    let parts: Vec<&str> = genuine.split('.').collect();
    let payload = String::from_utf8(base64_url_decode(parts[1]))
        .unwrap()
        .replace("\"sre\"", "\"admin\"");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64_url_encode(payload.as_bytes()),
        parts[2]
    );
    assert_refused(
        client
            .update_ticket(with(Some(&tampered), v1::UpdateTicketRequest::default()))
            .await,
        Code::Unauthenticated,
        "signature does not verify",
    );

    // alg none, the classic: refused before any key is looked at.
    let none = format!(
        "{}.{}.",
        base64_url_encode(br#"{"alg":"none","kid":"key-1"}"#),
        parts[1]
    );
    assert_refused(
        client.get_status(with(Some(&none), status())).await,
        Code::Unauthenticated,
        "only EdDSA",
    );
    assert_refused(
        client.get_status(with(Some("not-a-jwt"), status())).await,
        Code::Unauthenticated,
        "malformed",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_call_a_method_is_permission_denied() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let id = us_ticket(&mut client, &keys).await;
    let sre = keys.token(Role::Sre, None);
    let operator = keys.token(Role::Operator, None);
    let agent = keys.token(Role::Agent, Some("us-east"));

    let update = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    };
    assert_refused(
        client.update_ticket(with(Some(&sre), update.clone())).await,
        Code::PermissionDenied,
        "role sre may not call /meridian.v1.TicketService/UpdateTicket; allowed: agent, admin",
    );
    assert_refused(
        client
            .get_ticket(with(
                Some(&operator),
                v1::GetTicketRequest {
                    ticket_id: id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "role operator may not call /meridian.v1.TicketService/GetTicket",
    );
    assert_refused(
        client
            .get_status(with(Some(&agent), v1::GetStatusRequest {}))
            .await,
        Code::PermissionDenied,
        "role agent may not call /meridian.v1.TicketService/GetStatus; allowed: sre, admin",
    );
    // An agent token without a region is no valid token at all.
    let regionless = keys
        .key
        .mint(&Claims::new("drifter", Role::Agent, None, now(), 3600));
    assert_refused(
        client
            .get_ticket(with(
                Some(&regionless),
                v1::GetTicketRequest {
                    ticket_id: id.clone(),
                },
            ))
            .await,
        Code::Unauthenticated,
        "an agent token needs a region claim",
    );
    // Nothing was changed by the refused update.
    let admin = keys.token(Role::Admin, None);
    let got = client
        .get_ticket(with(Some(&admin), v1::GetTicketRequest { ticket_id: id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ticket.unwrap().status, v1::Status::New as i32);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_region_is_permission_denied() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let id = us_ticket(&mut client, &keys).await;
    let eu = keys.token(Role::Agent, Some("eu-west"));
    let eu = Some(eu.as_str());

    let update = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    };
    assert_refused(
        client.update_ticket(with(eu, update.clone())).await,
        Code::PermissionDenied,
        &format!(
            "agent agent-tester of eu-west may not update ticket {id}: it is owned by us-east"
        ),
    );
    assert_refused(
        client
            .get_ticket(with(
                eu,
                v1::GetTicketRequest {
                    ticket_id: id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "owned by us-east",
    );
    let note = v1::AddNoteRequest {
        ticket_id: id.clone(),
        author: String::new(),
        body: "hi".into(),
        visibility: 0,
        note_id: String::new(),
    };
    assert_refused(
        client.add_note(with(eu, note)).await,
        Code::PermissionDenied,
        "owned by us-east",
    );
    let note = v1::HandoffNote {
        current_status: v1::Status::New.into(),
        last_action: "looked".into(),
        next_action: "take it".into(),
        deadline: None,
        text: String::new(),
        author: String::new(),
    };
    let handoff = v1::HandoffRequest {
        ticket_id: id.clone(),
        to_region: "eu-west".into(),
        note: Some(note),
    };
    assert_refused(
        client.handoff(with(eu, handoff)).await,
        Code::PermissionDenied,
        "owned by us-east",
    );
    let list = v1::ListTicketsRequest {
        owner_region: "us-east".into(),
        ..Default::default()
    };
    assert_refused(
        client.list_tickets(with(eu, list)).await,
        Code::PermissionDenied,
        "may not list tickets owned by us-east",
    );
    // Search is refused and scoped exactly as list is.
    let search = v1::SearchTicketsRequest {
        query: "vpn".into(),
        owner_region: "us-east".into(),
        ..Default::default()
    };
    assert_refused(
        client.search_tickets(with(eu, search.clone())).await,
        Code::PermissionDenied,
        "agent agent-tester of eu-west may not search tickets owned by us-east",
    );
    let unscoped = v1::SearchTicketsRequest {
        owner_region: String::new(),
        ..search.clone()
    };
    let mine = client
        .search_tickets(with(eu, unscoped.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        mine.tickets.is_empty(),
        "eu-west owns nothing here: {mine:?}"
    );
    let us_agent = keys.token(Role::Agent, Some("us-east"));
    let theirs = client
        .search_tickets(with(Some(&us_agent), unscoped))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        theirs.tickets.iter().map(|t| &t.id).collect::<Vec<_>>(),
        [&id],
        "us-east's agent finds its region's ticket"
    );
    let operator = keys.token(Role::Operator, None);
    assert_refused(
        client.search_tickets(with(Some(&operator), search)).await,
        Code::PermissionDenied,
        "role operator may not call /meridian.v1.TicketService/SearchTickets; allowed: agent, sre, admin",
    );
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::TicketId(id.clone())),
        after_seq: 0,
    };
    assert_refused(
        client.watch_events(with(eu, watch)).await,
        Code::PermissionDenied,
        "owned by us-east",
    );
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 0,
    };
    assert_refused(
        client.watch_events(with(eu, watch)).await,
        Code::PermissionDenied,
        "event log of us-east",
    );
    // Without an owner filter, an agent's list is its own region's: empty.
    let mine = client
        .list_tickets(with(eu, v1::ListTicketsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        mine.tickets.is_empty(),
        "eu-west owns nothing here: {mine:?}"
    );

    // The region header cannot lift an agent into another region.
    let mut spoofed = with(eu, update);
    spoofed
        .metadata_mut()
        .insert(REGION_HEADER, "us-east".parse().unwrap());
    assert_refused(
        client.update_ticket(spoofed).await,
        Code::PermissionDenied,
        "agent agent-tester of eu-west may not act for us-east",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_may() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let agent = keys.token(Role::Agent, Some("us-east"));
    let sre = keys.token(Role::Sre, None);
    let admin = keys.token(Role::Admin, None);
    let operator = keys.token(Role::Operator, None);

    // The agent of the owning region: create, read, update, note, list, watch.
    let id = us_ticket(&mut client, &keys).await;
    let got = client
        .get_ticket(with(
            Some(&agent),
            v1::GetTicketRequest {
                ticket_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(got.into_inner().ticket.unwrap().subject, "VPN down");
    let update = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    };
    let updated = client
        .update_ticket(with(Some(&agent), update))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.ticket.unwrap().status, v1::Status::Open as i32);
    let note = v1::AddNoteRequest {
        ticket_id: id.clone(),
        author: String::new(),
        body: "looking".into(),
        visibility: 0,
        note_id: String::new(),
    };
    client.add_note(with(Some(&agent), note)).await.unwrap();
    let listed = client
        .list_tickets(with(Some(&agent), v1::ListTicketsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), 1);
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::TicketId(id.clone())),
        after_seq: 0,
    };
    let mut events = client
        .watch_events(with(Some(&agent), watch))
        .await
        .unwrap()
        .into_inner();
    assert!(
        events.message().await.unwrap().is_some(),
        "the agent's watch streams the ticket's events"
    );
    // Its own region named in the header is fine.
    let assign = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        assignee: Some("ana".into()),
        ..Default::default()
    };
    let mut own = with(Some(&agent), assign);
    own.metadata_mut()
        .insert(REGION_HEADER, "us-east".parse().unwrap());
    client.update_ticket(own).await.unwrap();

    // The sre reads everything, including status.
    let status = client
        .get_status(with(Some(&sre), v1::GetStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.region, "us-east");
    let got = client
        .get_ticket(with(
            Some(&sre),
            v1::GetTicketRequest {
                ticket_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(got.into_inner().notes.len(), 1);

    // The admin writes any ticket; the operator may file one.
    let update = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        status: Some(v1::Status::Pending.into()),
        ..Default::default()
    };
    client
        .update_ticket(with(Some(&admin), update))
        .await
        .unwrap();
    client
        .create_ticket(with(Some(&operator), create_request("filed by ops")))
        .await
        .unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_is_picked_up_without_a_restart() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let old = keys.token(Role::Sre, None);
    client
        .get_status(with(Some(&old), v1::GetStatusRequest {}))
        .await
        .unwrap();

    // Rotate: the new key replaces the old one in the file.
    let new_key = SigningKey::generate("key-2").unwrap();
    write_jwks(&keys.jwks(), &[new_key.public_jwk()]).unwrap();
    let new = new_key.mint(&Claims::new("sre-2", Role::Sre, None, now(), 3600));
    // An unknown kid makes the gateway re-read the file at once.
    client
        .get_status(with(Some(&new), v1::GetStatusRequest {}))
        .await
        .unwrap();
    // The removed key stops working once the poll has seen the file.
    let mut refused = None;
    for _ in 0..100 {
        match client
            .get_status(with(Some(&old), v1::GetStatusRequest {}))
            .await
        {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let refused = refused.expect("a token of the removed key must be refused after the rotation");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("unknown key id \"key-1\""),
        "{refused:?}"
    );

    // A broken file leaves the keys in force.
    std::fs::write(keys.jwks(), "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .get_status(with(Some(&new), v1::GetStatusRequest {}))
        .await
        .unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_checks_tokens_and_forwards_the_callers_to_the_gateway() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let rules = keys.dir.path().join("rules.toml");
    std::fs::write(&rules, ALWAYS_US_EAST).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let mut config =
        meridian_router::RouterConfig::new(router_addr, &rules, [(region("us-east"), gw.url())])
            .unwrap();
    let files = meridian_tls::TlsFiles::dev(keys.dir.path(), &region("us-east"), Service::Router);
    config.tls = Some(meridian_router::PublicTls {
        cert: files.cert,
        key: files.key,
    });
    config.gateway_ca = Some(keys.ca());
    config.auth = Some(keys.auth());
    config.health.probe_interval = Duration::from_millis(50);
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tokio::spawn(meridian_router::run(config, listener, async {
        let _ = stopped.await;
    }));
    let mut client =
        RouterServiceClient::new(tls_channel(&format!("https://{router_addr}"), &keys.ca()).await);
    let mut ticket = create_request("via the router");
    ticket.tier = "standard".into();
    let submit = v1::SubmitTicketRequest {
        ticket: Some(ticket),
    };

    assert_refused(
        client.submit_ticket(with(None, submit.clone())).await,
        Code::Unauthenticated,
        "no bearer token",
    );
    let sre = keys.token(Role::Sre, None);
    assert_refused(
        client.submit_ticket(with(Some(&sre), submit.clone())).await,
        Code::PermissionDenied,
        "role sre may not call /meridian.v1.RouterService/SubmitTicket",
    );
    let agent = keys.token(Role::Agent, Some("eu-west"));
    assert_refused(
        client
            .explain(with(Some(&agent), v1::ExplainRequest::default()))
            .await,
        Code::PermissionDenied,
        "role agent may not call /meridian.v1.RouterService/Explain",
    );

    // An agent's submission reaches the gateway (over TLS, with the agent's
    // token) once the router has seen the gateway healthy. The router's
    // mesh is its rules' one region, so the agent is one of us-east.
    let agent = keys.token(Role::Agent, Some("us-east"));
    let mut submitted = None;
    for _ in 0..100 {
        match client
            .submit_ticket(with(Some(&agent), submit.clone()))
            .await
        {
            Ok(answer) => {
                submitted = Some(answer.into_inner());
                break;
            }
            Err(status)
                if status.code() == Code::Unavailable
                    || status.code() == Code::FailedPrecondition =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("submit refused: {status:?}"),
        }
    }
    let submitted = submitted.expect("the router never forwarded the ticket");
    assert_eq!(submitted.region, "us-east");
    let _ = stop.send(());
    router.await.unwrap().unwrap();
    gw.stop().await;
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn base64_url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_region_outside_the_mesh_is_refused() {
    let keys = Keys::new();
    let gw = Gateway::start(&keys).await;
    let mut client = gw.client().await;
    let id = us_ticket(&mut client, &keys).await;
    for role in [Role::Agent, Role::Admin] {
        let mars = keys.token(role, Some("mars"));
        let mars = Some(mars.as_str());
        let expected =
            "names region mars, which is not a region of this mesh (us-east, eu-west, apac-south)";
        assert_refused(
            client
                .create_ticket(with(mars, create_request("from mars")))
                .await,
            Code::PermissionDenied,
            expected,
        );
        let get = v1::GetTicketRequest {
            ticket_id: id.clone(),
        };
        assert_refused(
            client.get_ticket(with(mars, get)).await,
            Code::PermissionDenied,
            expected,
        );
    }
    // The mesh's own regions still work.
    let us = keys.token(Role::Agent, Some("us-east"));
    client
        .create_ticket(with(Some(us.as_str()), create_request("from here")))
        .await
        .unwrap();
    gw.stop().await;
}
