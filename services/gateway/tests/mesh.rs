//! Three regional gateways as a mesh: real SQLite files (PostgreSQL for one
//! region when `DATABASE_URL` is set), real mutual TLS with a generated
//! development CA, replication over it, handoffs between regions. Each
//! scenario ends by checking the design's invariants across every region's
//! store: every event exactly once everywhere, the same projection of every
//! ticket everywhere, one writer per epoch.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Mesh, Options, REGIONS, TRUST_DOMAIN, region};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::proxy::Mode;
use meridian_tls::{
    DevPkiPlan, MeshTls, PeerIdentity, Service, TlsFiles, TrustDomain, Validity, dev_ca, issue,
    write_dev_pki,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};

fn create(subject: &str, tier: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: tier.into(),
        ..Default::default()
    }
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
    let mesh = Mesh::start(Options {
        postgres_for,
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let ticket = us
        .create_ticket(create("VPN down", "premium"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: Some(note()),
    };
    let handed = us.handoff(request).await.unwrap().into_inner();
    let moved = handed.ticket.unwrap();
    let owner = moved.owner.clone().unwrap();
    assert_eq!(
        owner.owner_region, "eu-west",
        "the answer already shows the new owner"
    );
    assert_eq!(
        owner.epoch, 1,
        "eu-west (index 1) mints the smallest epoch above 0 that it owns"
    );
    assert_eq!(moved.handoff_to, None);
    assert!(handed.accept_seq > 0);

    // The old owner is fenced; the new one writes.
    let refused = us
        .update_ticket(v1::UpdateTicketRequest {
            ticket_id: ticket.id.clone(),
            priority: Some(v1::Priority::Urgent.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "ticket is owned by eu-west at epoch 1");
    eu.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        assignee: Some("bo".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    eu.add_note(v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "bo".into(),
        body: "picked up".into(),
        visibility: 0,
        note_id: String::new(),
    })
    .await
    .unwrap();

    mesh.wait_quiet().await;
    for name in REGIONS {
        let got = mesh
            .client(name)
            .await
            .get_ticket(v1::GetTicketRequest {
                ticket_id: ticket.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let t = got.ticket.unwrap();
        assert_eq!(t.owner.unwrap().owner_region, "eu-west", "{name}");
        assert_eq!(t.assignee.as_deref(), Some("bo"), "{name}");
        assert_eq!(
            got.notes.len(),
            2,
            "{name}: the handoff note and eu-west's note"
        );
        let handoff_note = got
            .notes
            .iter()
            .find(|n| n.body.starts_with("Handoff us-east → eu-west"))
            .unwrap();
        assert!(
            handoff_note
                .body
                .contains("next action: confirm with the customer"),
            "{}",
            handoff_note.body
        );
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
    let ticket = us
        .create_ticket(create("Mail slow", "standard"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "apac-south".into(),
        note: Some(note()),
    };
    let refused = us.handoff(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with(
            "apac-south refused the handoff: apac-south is not on shift at 2026-06-02T14:00:00Z"
        ),
        "{}",
        refused.message()
    );
    let got = us
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(got.owner.unwrap().owner_region, "us-east");
    assert_eq!(got.handoff_to, None, "the refusal clears the pending offer");
    // The owner may write again.
    us.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    })
    .await
    .unwrap();

    // No note: refused before anything is written.
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: None,
    };
    let err = us.handoff(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("note: is required"),
        "{}",
        err.message()
    );
    let mut empty = note();
    empty.last_action.clear();
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: Some(empty),
    };
    let err = us.handoff(request).await.unwrap_err();
    assert!(
        err.message()
            .starts_with("note.last_action: must not be empty"),
        "{}",
        err.message()
    );
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "us-east".into(),
        note: Some(note()),
    };
    let err = us.handoff(request).await.unwrap_err();
    assert_eq!(
        err.message(),
        "to_region: us-east is this gateway's own region; hand off to another"
    );

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
    assert_eq!(
        kinds,
        [
            "ticket_created",
            "handoff_offered",
            "handoff_refused",
            "ticket_updated"
        ],
        "the refusal is an event, replicated"
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_durable_tier_and_status_report_replication() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    // enterprise is a `peer` durability tier: acknowledged only once another
    // region has applied it.
    let created = us
        .create_ticket(create("Outage", "enterprise"))
        .await
        .unwrap()
        .into_inner();
    let status = us
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.region, "us-east");
    assert!(status.local_head >= created.origin_seq);
    assert!(
        status
            .peers
            .iter()
            .any(|p| p.acked_seq >= created.origin_seq),
        "a peer acknowledged the write before it was answered: {:?}",
        status.peers
    );
    assert!(
        status.rules_version.starts_with("2026.06-1+"),
        "{}",
        status.rules_version
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}

/// The events of one ticket that `origin` wrote, as a gateway streams them
/// (`count` events of the ticket in all are awaited).
async fn events_of(
    client: &mut TicketServiceClient<Channel>,
    ticket_id: &str,
    count: usize,
    origin: &str,
) -> Vec<v1::Event> {
    let stream = client
        .watch_events(v1::WatchEventsRequest {
            scope: Some(v1::watch_events_request::Scope::TicketId(ticket_id.into())),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let events: Vec<v1::Event> = stream.take(count).map(|e| e.unwrap()).collect().await;
    events
        .into_iter()
        .filter(|e| e.origin_region == origin)
        .collect()
}

/// The `AcceptHandoff` us-east's gateway would send for the offer that
/// ends `carried`.
fn ask_for(ticket_id: &str, carried: &[v1::Event]) -> v1::AcceptHandoffRequest {
    let offer = carried.last().unwrap();
    assert_eq!(offer.kind, "handoff_offered");
    v1::AcceptHandoffRequest {
        ticket_id: ticket_id.into(),
        from_region: "us-east".into(),
        offer_seq: offer.origin_seq,
        previous_epoch: offer.epoch,
        offer_events: Some(v1::EventBatch {
            events: carried.to_vec(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_handoff_asked_again_with_the_offer_carried_answers_the_same_acceptance() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let ticket = us
        .create_ticket(create("Printer jam", "premium"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: Some(note()),
    };
    let handed = us.handoff(request).await.unwrap().into_inner();
    // The creation and the offer: what us-east carried to eu-west.
    let carried = events_of(&mut us, &ticket.id, 3, "us-east").await;
    assert_eq!(
        carried.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["ticket_created", "handoff_offered"]
    );
    assert_eq!(carried[1].origin_seq, handed.offer_seq);

    // The first answer lost, us-east asks again: the same acceptance, and
    // the events it carries (applied already, by the call and by
    // replication) are not applied twice.
    let mut eu_mesh = mesh.mesh_client("us-east", "eu-west").await;
    let ask = ask_for(&ticket.id, &carried);
    let again = eu_mesh
        .accept_handoff(ask.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(again.accepted, "{again:?}");
    assert_eq!((again.accept_seq, again.new_epoch), (handed.accept_seq, 1));
    assert_eq!(
        again.ticket, None,
        "an acceptance answered again carries no fresh record"
    );
    let carried_back = again.accept_events.unwrap().events;
    assert_eq!(
        carried_back.last().map(|e| (e.kind.as_str(), e.origin_seq)),
        Some(("handoff_accepted", handed.accept_seq))
    );

    // Carried events must end with the offer asked about.
    let mut malformed = ask.clone();
    malformed.offer_events = Some(v1::EventBatch {
        events: carried[..1].to_vec(),
    });
    let err = eu_mesh.accept_handoff(malformed).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("offer_events.events: ends with event"),
        "{}",
        err.message()
    );
    // And only us-east's gateway may carry us-east's log.
    let mut apac_as_us = mesh.mesh_client("apac-south", "eu-west").await;
    let err = apac_as_us.accept_handoff(ask).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    mesh.check_invariants().await;
    mesh.stop().await;
}

/// Offers `ticket_id` from us-east to eu-west while us-east's link to
/// eu-west is frozen: the offer is recorded, the call to eu-west hangs, and
/// the client gives up (the offer stays pending).
async fn offer_over_a_frozen_link(us: &mut TicketServiceClient<Channel>, ticket_id: &str) {
    let mut request = Request::new(v1::HandoffRequest {
        ticket_id: ticket_id.into(),
        to_region: "eu-west".into(),
        note: Some(note()),
    });
    request.set_timeout(Duration::from_millis(500));
    us.handoff(request).await.unwrap_err();
    let pending = us
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        pending.handoff_to.as_deref(),
        Some("eu-west"),
        "the offer is recorded and pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_offer_is_accepted_without_replication_and_a_gap_waits_for_it() {
    let mesh = Mesh::start(Options {
        proxied_links: true,
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;
    // us-east dials eu-west: its replication stream (and its calls) there
    // stall; eu-west's own mesh port stays reachable directly.
    mesh.link("us-east", "eu-west").set_mode(Mode::Freeze);
    let mut eu_mesh = mesh.mesh_client("us-east", "eu-west").await;

    // The carried events continue eu-west's copy of us-east's log: eu-west
    // accepts at once, though replication has brought it nothing.
    let first = us
        .create_ticket(create("Badge reader", "premium"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    offer_over_a_frozen_link(&mut us, &first.id).await;
    let carried = events_of(&mut us, &first.id, 2, "us-east").await;
    let answer = eu_mesh
        .accept_handoff(ask_for(&first.id, &carried))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(
        answer.ticket.unwrap().owner.unwrap().owner_region,
        "eu-west"
    );

    // A hole before the offer (another ticket's creation, not carried):
    // nothing is applied out of order; eu-west waits for replication.
    let second = us
        .create_ticket(create("Projector", "premium"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.create_ticket(create("Coffee machine", "premium"))
        .await
        .unwrap();
    offer_over_a_frozen_link(&mut us, &second.id).await;
    let carried = events_of(&mut us, &second.id, 2, "us-east").await;
    let ask = ask_for(&second.id, &carried);
    let mut waiting = tokio::spawn(async move { eu_mesh.accept_handoff(ask).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "eu-west answered before it had us-east's log up to the offer"
    );
    mesh.link("us-east", "eu-west").set_mode(Mode::Forward);
    let answer = waiting.await.unwrap().unwrap().into_inner();
    assert!(answer.accepted, "{answer:?}");

    mesh.check_invariants().await;
    for name in REGIONS {
        let mut client = mesh.client(name).await;
        for id in [&first.id, &second.id] {
            let t = client
                .get_ticket(v1::GetTicketRequest {
                    ticket_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap();
            assert_eq!(t.owner.unwrap().owner_region, "eu-west", "{name}");
        }
    }
    mesh.stop().await;
}

/// Decodes the first certificate of a PEM file (base64 between the armour
/// lines) to DER.
fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("{}: {:?} is not base64", path.display(), c as char),
    };
    let (mut der, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in body.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(sextet(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            der.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    der
}

/// The leaf certificate `name`'s mesh port presents to a fresh connection
/// (apac-south's identity dialling; a new client each time, so no TLS
/// session is resumed).
async fn presented_cert(mesh: &Mesh, name: &str) -> Vec<u8> {
    let observer = MeshTls::load(mesh.tls_files("apac-south")).unwrap();
    let expected = PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region(name),
        Service::Gateway,
    );
    let port = mesh.region(name).mesh_addr.port();
    let stream = observer
        .connector(expected)
        .connect_tls("127.0.0.1", port)
        .await
        .unwrap();
    let (_, connection) = stream.get_ref();
    connection.peer_certificates().unwrap()[0].to_vec()
}

/// Creates tickets round the regions until stopped, recording their ids.
fn keep_writing(
    mesh: &Mesh,
) -> (
    tokio::sync::watch::Sender<bool>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let written = Arc::new(Mutex::new(Vec::new()));
    let urls: Vec<String> = mesh.regions.iter().map(|r| r.url.clone()).collect();
    let record = written.clone();
    let task = tokio::spawn(async move {
        let mut clients = Vec::new();
        for url in urls {
            clients.push(TicketServiceClient::connect(url).await.unwrap());
        }
        for i in 0.. {
            if *stopped.borrow() {
                break;
            }
            let client = &mut clients[i % REGIONS.len()];
            let ticket = client
                .create_ticket(create(&format!("written while rotating {i}"), "premium"))
                .await
                .unwrap();
            record
                .lock()
                .unwrap()
                .push(ticket.into_inner().ticket.unwrap().id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (stop, written, task)
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotated_while_replication_streams_run() {
    let mesh = Mesh::start(Options {
        proxied_links: true,
        ..Options::default()
    })
    .await;
    let us_files = mesh.tls_files("us-east");
    let original = pem_der(&us_files.cert);
    assert_eq!(
        presented_cert(&mesh, "us-east").await,
        original,
        "us-east presents the certificate on disk"
    );

    let (stop, written, writer) = keep_writing(&mesh);
    let count = || written.lock().unwrap().len();
    wait_for(
        "writes before the rotation",
        Duration::from_secs(10),
        async || count() >= 10,
    )
    .await;

    // A new key and certificate for us-east from the same CA, replacing the
    // files under the running gateway.
    let now = std::time::SystemTime::now();
    let plan = DevPkiPlan {
        trust_domain: TrustDomain::new(TRUST_DOMAIN).unwrap(),
        regions: vec![region("us-east")],
        services: vec![Service::Gateway],
        ca_validity: Validity::days_from(now, 30),
        cert_validity: Validity::days_from(now, 30),
        replace_ca: false,
    };
    let rotated_at = count();
    write_dev_pki(mesh.pki_dir(), &plan).unwrap();
    let rotated = pem_der(&us_files.cert);
    assert_ne!(rotated, original);
    // New handshakes take it up at the next reload; the streams open now
    // keep the one they started with.
    wait_for(
        "us-east presents the new certificate",
        meridian_gateway::TLS_RELOAD_INTERVAL * 4,
        async || presented_cert(&mesh, "us-east").await == rotated,
    )
    .await;

    // Cut us-east's links: its replication streams dial again (us-east is
    // listed first, so it dials both peers) and the peers take the new
    // certificate as a client certificate too.
    let dialled = |to: &str| mesh.link("us-east", to).connections();
    let before = (dialled("eu-west"), dialled("apac-south"));
    for other in ["eu-west", "apac-south"] {
        mesh.link("us-east", other).cut();
        mesh.link(other, "us-east").cut();
    }
    wait_for(
        "us-east's streams dial again",
        Duration::from_secs(15),
        async || dialled("eu-west") > before.0 && dialled("apac-south") > before.1,
    )
    .await;
    for name in REGIONS {
        mesh.wait_connected(name).await;
    }
    assert!(count() > rotated_at, "writes went on during the rotation");

    // A handoff from us-east runs over a new handshake too.
    let mut us = mesh.client("us-east").await;
    let ticket = us
        .create_ticket(create("After rotation", "premium"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let request = v1::HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_region: "eu-west".into(),
        note: Some(note()),
    };
    assert_eq!(
        us.handoff(request)
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
            .owner
            .unwrap()
            .owner_region,
        "eu-west"
    );

    // A peer with a certificate from another CA is refused, though it
    // claims a mesh identity and trusts our CA (so it accepts us-east).
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_ca = dev_ca(
        &TrustDomain::new(TRUST_DOMAIN).unwrap(),
        Validity::days_from(now, 30),
    )
    .unwrap();
    let claimed = PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region("eu-west"),
        Service::Gateway,
    );
    let stranger_cert = issue(&stranger_ca, &claimed, Validity::days_from(now, 30)).unwrap();
    let stranger_files = TlsFiles {
        cert: stranger_dir.path().join("cert.pem"),
        key: stranger_dir.path().join("key.pem"),
        ca: stranger_dir.path().join("ca.pem"),
    };
    std::fs::write(&stranger_files.cert, &stranger_cert.cert_pem).unwrap();
    std::fs::write(&stranger_files.key, &stranger_cert.key_pem).unwrap();
    let our_ca = std::fs::read_to_string(&us_files.ca).unwrap();
    std::fs::write(
        &stranger_files.ca,
        format!("{our_ca}{}", stranger_ca.cert_pem()),
    )
    .unwrap();
    let stranger = MeshTls::load(stranger_files).unwrap();
    let us_mesh = mesh.region("us-east").mesh_addr.to_string();
    let us_identity = PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region("us-east"),
        Service::Gateway,
    );
    // In TLS 1.3 the client may finish its handshake before the server
    // has judged its certificate; the refusal then ends the first call.
    let refusal = match stranger.connect(&us_mesh, us_identity).await {
        Err(refused) => refused.to_string(),
        Ok(channel) => {
            let mut client = v1::mesh_service_client::MeshServiceClient::new(channel);
            let status = client
                .accept_handoff(v1::AcceptHandoffRequest::default())
                .await
                .unwrap_err();
            assert_ne!(
                status.code(),
                Code::InvalidArgument,
                "the stranger's call reached the handler: {status:?}"
            );
            status.to_string()
        }
    };
    // The same call with a certificate of our CA reaches the handler.
    let mut known = mesh.mesh_client("eu-west", "us-east").await;
    let status = known
        .accept_handoff(v1::AcceptHandoffRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{status:?} (the stranger got: {refusal})"
    );

    let after = count();
    wait_for(
        "writes after the rotation",
        Duration::from_secs(10),
        async || count() >= after + 10,
    )
    .await;
    stop.send(true).unwrap();
    writer.await.unwrap();

    // Every write, before, during and after, is in every region.
    mesh.wait_quiet().await;
    let written = written.lock().unwrap().clone();
    for name in REGIONS {
        let mut client = mesh.client(name).await;
        for id in &written {
            client
                .get_ticket(v1::GetTicketRequest {
                    ticket_id: id.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{name} lacks {id}: {e}"));
        }
    }
    mesh.check_invariants().await;
    mesh.stop().await;
}
