//! The web intake endpoint (issue 17), black box: two real gateways
//! (east, west) serving TLS with `[auth]` and the rules, replicating and
//! handing off to each other over mutual TLS, and a real router with
//! `[auth]`, `[tls]` and its console listener, all on loopback and one
//! manual clock; requests over real HTTPS with tokens minted by the same
//! code `meridian up` uses, their keys in the JWKS file every service reads.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use meridian_auth::{AuthSettings, Claims, Role, SigningKey, jwks::write_jwks};
use meridian_core::{ManualClock, RegionId};
use meridian_gateway::{GatewayConfig, Listeners, MeshSettings, RulesSettings, TlsFiles};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_router::{ConsoleConfig, PublicTls, RouterConfig};
use meridian_store::StoreConfig;
use meridian_tls::{DevPkiPlan, Service, TrustDomain, Validity, write_dev_pki};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

const REGIONS: [&str; 2] = ["east", "west"];
/// A Tuesday noon (UTC): east is on shift, west is not.
const NOON: &str = "2026-06-02T12:00:00Z";

/// East works 08:00–16:00 UTC, west the rest of the day.
const RULES: &str = r#"
version = "web-intake"
overlap_minutes = 30

[routing]
out_of_hours = "next_on_shift"

[[regions]]
id = "east"
index = 0
time_zone = "UTC"
skills = ["billing"]
capacity = 100
preference = 50

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "08:00"
end = "16:00"
queue_owner = "east-lead"

[[regions]]
id = "west"
index = 1
time_zone = "UTC"
skills = ["billing"]
capacity = 100
preference = 50

[[regions.shifts]]
name = "night"
days = ["mon-sun"]
start = "16:00"
end = "08:00"
queue_owner = "west-lead"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480
"#;

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

struct Gateway {
    region: String,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

struct Mesh {
    dir: tempfile::TempDir,
    key: SigningKey,
    gateways: Vec<Gateway>,
    console_port: u16,
    connector: TlsConnector,
    clock: Arc<ManualClock>,
    _router_stop: oneshot::Sender<()>,
}

/// What one request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    json: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }

    fn error_field(&self) -> &str {
        self.json["error"]["field"].as_str().unwrap_or("")
    }
}

impl Mesh {
    async fn start() -> Mesh {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let regions: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
        let plan = DevPkiPlan {
            trust_domain: TrustDomain::new("meridian.test").unwrap(),
            regions: regions.clone(),
            services: Service::ALL.to_vec(),
            ca_validity: Validity::days_from(SystemTime::now(), 30),
            cert_validity: Validity::days_from(SystemTime::now(), 30),
            replace_ca: false,
        };
        write_dev_pki(dir.path(), &plan).unwrap();
        let key = SigningKey::generate("key-1").unwrap();
        let jwks = dir.path().join("jwks.json");
        write_jwks(&jwks, &[key.public_jwk()]).unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, RULES).unwrap();
        let clock = Arc::new(ManualClock::new(NOON.parse().unwrap()));

        // Each gateway's public port (TLS, tokens) and mesh port (mutual
        // TLS with the region's SPIFFE identity, replication and handoffs).
        let mut bound = Vec::new();
        for r in &regions {
            let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.push((r.clone(), public, mesh));
        }
        let mesh_addrs: Vec<(RegionId, String)> = bound
            .iter()
            .map(|(r, _, m)| (r.clone(), m.local_addr().unwrap().to_string()))
            .collect();
        let mut gateways = Vec::new();
        for (r, public, mesh) in bound {
            let addr = public.local_addr().unwrap();
            let store = StoreConfig::sqlite_file(&dir.path().join(format!("{r}.db")));
            let mut config = GatewayConfig::new(r.clone(), regions.clone(), addr, store);
            let files = meridian_tls::TlsFiles::dev(dir.path(), &r, Service::Gateway);
            config.tls = Some(TlsFiles {
                cert: files.cert,
                key: files.key,
            });
            config.auth = Some(AuthSettings::new(&jwks));
            let mut settings = RulesSettings::new(rules.clone());
            settings.shift_check_interval = Duration::from_millis(20);
            settings.sla_scan_interval = Duration::from_millis(20);
            config.rules = Some(settings);
            config.mesh = Some(MeshSettings {
                listen: mesh.local_addr().unwrap(),
                tls: meridian_tls::TlsFiles::dev(dir.path(), &r, Service::Gateway),
                peers: mesh_addrs
                    .iter()
                    .filter(|(peer, _)| *peer != r)
                    .cloned()
                    .collect(),
                handoff_timeout: Duration::from_secs(10),
                peer_durability_tiers: Vec::new(),
            });
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(meridian_gateway::run_listeners(
                config,
                Listeners {
                    public,
                    mesh: Some(mesh),
                },
                async {
                    let _ = stopped.await;
                },
                clock.clone(),
            ));
            gateways.push(Gateway {
                region: r.to_string(),
                addr,
                _stop: stop,
            });
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console_port = console_listener.local_addr().unwrap().port();
        let endpoints = gateways
            .iter()
            .map(|g| (region(&g.region), format!("https://{}", g.addr)));
        let mut config =
            RouterConfig::new(listener.local_addr().unwrap(), &rules, endpoints).unwrap();
        config.health.probe_interval = Duration::from_millis(50);
        config.health.timeout = Duration::from_millis(1_000);
        config.gateway_ca = Some(dir.path().join("ca.pem"));
        config.auth = Some(AuthSettings::new(&jwks));
        let files = meridian_tls::TlsFiles::dev(dir.path(), &regions[0], Service::Router);
        config.tls = Some(PublicTls {
            cert: files.cert,
            key: files.key,
        });
        config.console = Some(ConsoleConfig::new(console_listener.local_addr().unwrap()));
        let (router_stop, stopped) = oneshot::channel::<()>();
        let router_clock = clock.clone();
        tokio::spawn(async move {
            meridian_router::run_with_console(
                config,
                listener,
                Some(console_listener),
                async {
                    let _ = stopped.await;
                },
                router_clock,
            )
            .await
            .unwrap();
        });

        let mut roots = RootCertStore::empty();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mesh = Mesh {
            dir,
            key,
            gateways,
            console_port,
            connector: TlsConnector::from(Arc::new(client)),
            clock,
            _router_stop: router_stop,
        };
        mesh.wait_until_routable().await;
        mesh
    }

    /// Until a create lands at east, the on-shift region: the router has
    /// heard from the gateways and they serve.
    async fn wait_until_routable(&self) {
        let token = self.token(Role::Admin, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.console_port))
                .await
                .is_ok()
                && let Some(answer) = self
                    .try_post(
                        "/intake/v1/tickets",
                        &[("authorization", &format!("Bearer {token}"))],
                        "application/json",
                        ticket("warm-up").to_string().into_bytes(),
                    )
                    .await
                && answer.status == 201
                && answer.json["region"] == "east"
            {
                return;
            }
            assert!(Instant::now() < deadline, "the mesh did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn token(&self, role: Role, region: Option<&str>) -> String {
        let region = region.map(self::region);
        self.key.mint(&Claims::new(
            format!("{role}-tester"),
            role,
            region.as_ref(),
            now_secs(),
            3600,
        ))
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A gateway's `TicketService` over TLS, each call with `token`.
    async fn gateway(&self, name: &str) -> TicketServiceClient<Channel> {
        let gateway = self.gateways.iter().find(|g| g.region == name).unwrap();
        let pem = std::fs::read(self.ca()).unwrap();
        let channel = Endpoint::from_shared(format!("https://{}", gateway.addr))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TicketServiceClient::new(channel)
    }

    async fn try_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Option<Answer> {
        let tcp = TcpStream::connect(("127.0.0.1", self.console_port))
            .await
            .ok()?;
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header(header::HOST, format!("localhost:{}", self.console_port))
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .ok()?
            .ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Some(Answer {
            status,
            headers,
            json,
        })
    }

    /// A JSON POST with `token` (none when empty) and extra headers.
    async fn post(&self, path: &str, token: &str, extra: &[(&str, &str)], body: &Value) -> Answer {
        self.post_raw(path, token, extra, "application/json", body.to_string())
            .await
    }

    async fn post_raw(
        &self,
        path: &str,
        token: &str,
        extra: &[(&str, &str)],
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Answer {
        let bearer = format!("Bearer {token}");
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if !token.is_empty() {
            headers.push(("authorization", &bearer));
        }
        self.try_post(path, &headers, content_type, body.into())
            .await
            .expect("the console answered")
    }
}

fn ticket(subject: &str) -> Value {
    json!({
        "subject": subject,
        "body": "the invoice total is wrong",
        "customer": "acme",
        "tier": "standard",
        "skills": ["billing"],
        "language": "en",
        "priority": "high",
    })
}

fn with_auth<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_form_creates_a_ticket_in_the_region_on_shift_and_a_key_makes_it_once() {
    let mesh = Mesh::start().await;
    let intake = mesh.token(Role::Intake, None);

    let created = mesh
        .post("/intake/v1/tickets", &intake, &[], &ticket("invoice wrong"))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = &created.json;
    assert_eq!(body["region"], "east", "east is on shift at noon: {body}");
    assert_eq!(body["status"], "new");
    assert_eq!(body["priority"], "high");
    assert_eq!(body["replayed"], false);
    let acknowledgement = body["acknowledgement"].as_str().unwrap();
    assert!(
        acknowledgement.starts_with("A person will answer now"),
        "{acknowledgement}"
    );
    assert_eq!(
        body["sla"]["first_response"]["due"], "2026-06-02T13:00:00Z",
        "an hour of the 24x7 calendar: {body}"
    );
    assert_eq!(body["sla"]["resolution"]["due"], "2026-06-02T20:00:00Z");

    // The same key twice (header): one ticket, the second a replay.
    let key = [("idempotency-key", "form-2026-06-02-0001")];
    let first = mesh
        .post(
            "/intake/v1/tickets",
            &intake,
            &key,
            &ticket("refund please"),
        )
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.json["replayed"], false);
    let again = mesh
        .post(
            "/intake/v1/tickets",
            &intake,
            &key,
            &ticket("refund please"),
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json["replayed"], true);
    assert_eq!(again.json["id"], first.json["id"], "the same ticket");

    // The key in the body names the same creation.
    let mut in_body = ticket("refund please");
    in_body["idempotency_key"] = json!("form-2026-06-02-0001");
    let by_field = mesh
        .post("/intake/v1/tickets", &intake, &[], &in_body)
        .await;
    assert_eq!(by_field.status, 200, "{by_field:?}");
    assert_eq!(by_field.json["id"], first.json["id"]);

    // The same key with another body: 409, naming the key.
    let other = mesh
        .post(
            "/intake/v1/tickets",
            &intake,
            &key,
            &ticket("something else"),
        )
        .await;
    assert_eq!(other.status, 409, "{other:?}");
    assert_eq!(other.error_code(), "already_exists");
    assert!(
        other.error_message().contains("form-2026-06-02-0001"),
        "{other:?}"
    );

    // Header and field disagreeing: refused, naming the field.
    let mut differing = ticket("refund please");
    differing["idempotency_key"] = json!("another-key");
    let both = mesh
        .post("/intake/v1/tickets", &intake, &key, &differing)
        .await;
    assert_eq!(both.status, 400, "{both:?}");
    assert_eq!(both.error_field(), "idempotency_key");

    // One ticket for the key in the whole mesh (each gateway lists its
    // own tickets and the copies it has replicated), owned by east.
    let admin = mesh.token(Role::Admin, None);
    let mut refunds = std::collections::BTreeSet::new();
    for name in REGIONS {
        let listed = mesh
            .gateway(name)
            .await
            .list_tickets(with_auth(
                v1::ListTicketsRequest {
                    page_size: 100,
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .tickets;
        for t in listed.iter().filter(|t| t.subject == "refund please") {
            assert_eq!(t.owner.as_ref().unwrap().owner_region, "east", "{t:?}");
            refunds.insert(t.id.clone());
        }
    }
    assert_eq!(refunds.len(), 1, "one ticket for one key: {refunds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_message_reaches_the_owner_and_starts_the_next_response_clock() {
    let mesh = Mesh::start().await;
    let intake = mesh.token(Role::Intake, None);
    let created = mesh
        .post("/intake/v1/tickets", &intake, &[], &ticket("cannot log in"))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json["id"].as_str().unwrap().to_owned();

    // An agent of east answers in public: the first response is met.
    mesh.clock.advance(jiff::SignedDuration::from_mins(10));
    let agent = mesh.token(Role::Agent, Some("east"));
    mesh.gateway("east")
        .await
        .add_note(with_auth(
            v1::AddNoteRequest {
                ticket_id: id.clone(),
                author: String::new(),
                body: "Could you try a password reset?".into(),
                visibility: v1::Visibility::Public.into(),
                note_id: String::new(),
            },
            &agent,
        ))
        .await
        .unwrap();

    // The customer writes back through the web: the message lands at east
    // and the next-response clock starts from it (two hours, 24x7).
    mesh.clock.advance(jiff::SignedDuration::from_mins(20));
    let path = format!("/intake/v1/tickets/{id}/messages");
    let message = json!({"body": "The reset mail never came.", "author": "customer@acme.test"});
    let added = mesh.post(&path, &intake, &[], &message).await;
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(added.json["note"]["visibility"], "inbound");
    assert_eq!(added.json["note"]["region"], "east");
    assert_eq!(added.json["note"]["author"], "customer@acme.test");
    let sla = &added.json["ticket"]["sla"];
    assert_eq!(sla["first_response"]["state"], "met", "{sla}");
    assert_eq!(
        sla["next_response"]["due"], "2026-06-02T14:30:00Z",
        "12:30 + 120 min: {sla}"
    );
    assert_eq!(sla["next_response"]["state"], "running", "{sla}");

    // An unknown ticket: 404; an id that is no id: 400 naming it.
    let unknown = mesh
        .post(
            "/intake/v1/tickets/01970000-0000-7000-8000-000000000000/messages",
            &intake,
            &[],
            &message,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let bad_id = mesh
        .post("/intake/v1/tickets/nope/messages", &intake, &[], &message)
        .await;
    assert_eq!(bad_id.status, 400, "{bad_id:?}");
    assert_eq!(bad_id.error_field(), "id");
    // An empty body is refused naming it, before anything is written.
    let empty = mesh
        .post(&path, &intake, &[], &json!({"body": " ", "author": "c"}))
        .await;
    assert_eq!(empty.status, 400, "{empty:?}");
    assert_eq!(empty.error_field(), "body");

    // An agent of west may not post to a ticket east owns.
    let west_agent = mesh.token(Role::Agent, Some("west"));
    let refused = mesh.post(&path, &west_agent, &[], &message).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.error_code(), "permission_denied");
    // An sre may read tickets but not bring customers' words in.
    let sre = mesh.token(Role::Sre, None);
    let sre_refused = mesh.post(&path, &sre, &[], &message).await;
    assert_eq!(sre_refused.status, 403, "{sre_refused:?}");

    // Evening: east's shift is over, so its continuity sweep hands the
    // open ticket to west. The next customer message follows it there.
    mesh.clock.set("2026-06-02T17:00:00Z".parse().unwrap());
    let admin = mesh.token(Role::Admin, None);
    let mut west = mesh.gateway("west").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owner = west
            .get_ticket(with_auth(
                v1::GetTicketRequest {
                    ticket_id: id.clone(),
                },
                &admin,
            ))
            .await
            .ok()
            .and_then(|t| t.into_inner().ticket)
            .and_then(|t| t.owner)
            .map(|o| o.owner_region);
        if owner.as_deref() == Some("west") {
            break;
        }
        assert!(Instant::now() < deadline, "no handoff to west: {owner:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = mesh.post(&path, &intake, &[], &message).await;
    assert_eq!(followed.status, 201, "{followed:?}");
    assert_eq!(followed.json["note"]["region"], "west");
    assert_eq!(followed.json["ticket"]["region"], "west");

    // A ticket made now lands at west; its customer message reaches it
    // whether or not east has its copy yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let evening = loop {
        // Until the router has heard from the gateways at the new time.
        let created = mesh
            .post("/intake/v1/tickets", &intake, &[], &ticket("evening"))
            .await;
        if created.status == 201 && created.json["region"] == "west" {
            break created;
        }
        assert!(Instant::now() < deadline, "{created:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = evening.json["id"].as_str().unwrap();
    let added = mesh
        .post(
            &format!("/intake/v1/tickets/{id}/messages"),
            &intake,
            &[],
            &message,
        )
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(added.json["note"]["region"], "west");
    assert_eq!(added.json["ticket"]["region"], "west");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_token_cannot_write_replies_or_internal_notes_over_grpc() {
    let mesh = Mesh::start().await;
    let intake = mesh.token(Role::Intake, None);
    let created = mesh
        .post(
            "/intake/v1/tickets",
            &intake,
            &[],
            &ticket("printer on fire"),
        )
        .await;
    let id = created.json["id"].as_str().unwrap().to_owned();
    let mut east = mesh.gateway("east").await;
    for visibility in [v1::Visibility::Public, v1::Visibility::Internal] {
        let refused = east
            .add_note(with_auth(
                v1::AddNoteRequest {
                    ticket_id: id.clone(),
                    author: "bot".into(),
                    body: "pretending to be the team".into(),
                    visibility: visibility.into(),
                    note_id: String::new(),
                },
                &intake,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{visibility:?}: {refused:?}"
        );
    }
    // It may read the ticket: that is how the endpoint finds the owner.
    east.get_ticket(with_auth(
        v1::GetTicketRequest {
            ticket_id: id.clone(),
        },
        &intake,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_json_errors_that_say_what_is_wrong() {
    let mesh = Mesh::start().await;
    let intake = mesh.token(Role::Intake, None);
    let path = "/intake/v1/tickets";

    let anonymous = mesh.post(path, "", &[], &ticket("x")).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.error_code(), "unauthenticated");
    assert_eq!(
        anonymous.headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    let forged = mesh.post(path, "a.b.c", &[], &ticket("x")).await;
    assert_eq!(forged.status, 401, "{forged:?}");
    // An sre may not create tickets, as over gRPC.
    let sre = mesh
        .post(path, &mesh.token(Role::Sre, None), &[], &ticket("x"))
        .await;
    assert_eq!(sre.status, 403, "{sre:?}");

    let broken = mesh
        .post_raw(
            path,
            &intake,
            &[],
            "application/json",
            "{\n  \"subject\": \"x\",\n  oops\n}",
        )
        .await;
    assert_eq!(broken.status, 400, "{broken:?}");
    assert_eq!(broken.error_code(), "invalid_argument");
    assert!(
        broken.error_message().contains("line 3 column 3"),
        "{broken:?}"
    );

    let mut unknown = ticket("x");
    unknown["colour"] = json!("red");
    let unknown = mesh.post(path, &intake, &[], &unknown).await;
    assert_eq!(unknown.status, 400, "{unknown:?}");
    assert!(unknown.error_message().contains("colour"), "{unknown:?}");
    assert_eq!(
        unknown.error_field(),
        "colour",
        "the unknown field is named in field"
    );

    let mut bad_priority = ticket("x");
    bad_priority["priority"] = json!("whenever");
    let bad_priority = mesh.post(path, &intake, &[], &bad_priority).await;
    assert_eq!(bad_priority.status, 400, "{bad_priority:?}");
    assert!(bad_priority.error_message().contains("whenever"));

    let mut no_subject = ticket("x");
    no_subject["subject"] = json!("");
    let no_subject = mesh.post(path, &intake, &[], &no_subject).await;
    assert_eq!(no_subject.status, 400, "{no_subject:?}");
    assert_eq!(no_subject.error_field(), "subject");

    let form = mesh
        .post_raw(
            path,
            &intake,
            &[],
            "application/x-www-form-urlencoded",
            "subject=x",
        )
        .await;
    assert_eq!(form.status, 415, "{form:?}");

    let mut huge = ticket("x");
    huge["body"] = json!("a".repeat(300 * 1024));
    let huge = mesh.post(path, &intake, &[], &huge).await;
    assert_eq!(huge.status, 413, "{huge:?}");
    assert_eq!(huge.error_code(), "payload_too_large");
}
