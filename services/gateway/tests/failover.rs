//! Failover across three regions, black box: gateways with real SQLite
//! files, real mutual TLS and replication, the router, and a coordinator
//! that is a real etcd member on loopback (skipped loudly when etcd is not
//! installed, a failure under `MERIDIAN_REQUIRE_ALL=1`) or the in-process
//! one. Each scenario ends with the design's invariants: one writer per
//! epoch, every event everywhere exactly once, every region's projection
//! of every ticket the same, every note everywhere.
//!
//! The scenarios run one at a time: they measure takeover latency against
//! the lease's ttl, and three meshes at once on a 2-core machine would
//! measure the scheduler instead.

// A test stops on the spot when something it relies on fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod failover_support;

use std::time::{Duration, Instant};

use failover_support::{Kind, LEASE_TTL, Mesh, PATIENCE, SAFETY_MARGIN, TAKEOVER_MARGIN, region};
use meridian_proto::v1::{
    self, mesh_service_client::MeshServiceClient, ticket_service_client::TicketServiceClient,
};
use meridian_tls::{MeshTls, PeerIdentity, Service, TlsFiles};
use tonic::{Code, transport::Channel};

/// Held by each scenario for its whole run (an async mutex: it is held
/// across awaits, and a failed scenario must not poison it for the next).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn create(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: "premium".into(),
        ..Default::default()
    }
}

fn set_status(id: &str, status: v1::Status) -> v1::UpdateTicketRequest {
    v1::UpdateTicketRequest {
        ticket_id: id.into(),
        status: Some(status.into()),
        ..Default::default()
    }
}

fn note(id: &str, body: &str) -> v1::AddNoteRequest {
    v1::AddNoteRequest {
        ticket_id: id.into(),
        author: "ana".into(),
        body: body.into(),
        visibility: 0,
        note_id: String::new(),
    }
}

async fn get(client: &mut TicketServiceClient<Channel>, id: &str) -> v1::GetTicketResponse {
    client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn owner(ticket: &v1::Ticket) -> (String, u64) {
    let owner = ticket.owner.clone().unwrap();
    (owner.owner_region, owner.epoch)
}

/// Ids of the tickets `owner_region` owns, as `client`'s region sees them.
async fn owned_by(client: &mut TicketServiceClient<Channel>, owner_region: &str) -> Vec<String> {
    let request = v1::ListTicketsRequest {
        owner_region: owner_region.into(),
        page_size: 500,
        ..Default::default()
    };
    let page = client.list_tickets(request).await.unwrap().into_inner();
    page.tickets
        .into_iter()
        .filter(|t| t.status != v1::Status::Closed as i32)
        .map(|t| t.id)
        .collect()
}

/// Tries an owner-scoped write until the region refuses it as fenced;
/// returns when that happened, measured from `since`.
async fn wait_fenced(
    client: &mut TicketServiceClient<Channel>,
    id: &str,
    since: Instant,
    within: Duration,
) -> Duration {
    let mut priority = v1::Priority::Low;
    loop {
        priority = if priority == v1::Priority::Low {
            v1::Priority::Normal
        } else {
            v1::Priority::Low
        };
        let update = v1::UpdateTicketRequest {
            ticket_id: id.into(),
            priority: Some(priority.into()),
            ..Default::default()
        };
        match client.update_ticket(update).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::Unavailable => {
                assert!(status.message().contains("fenced"), "{status:?}");
                return since.elapsed();
            }
            Err(other) => panic!("an owner-scoped write failed otherwise than fenced: {other:?}"),
        }
        assert!(
            since.elapsed() < within,
            "not fenced {within:?} after its keep-alive stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Until `successor` owns every ticket of `ids` as `client`'s region sees
/// it; returns when, measured from `since`, failing after `within`.
async fn wait_owned(
    client: &mut TicketServiceClient<Channel>,
    successor: &str,
    ids: &[String],
    since: Instant,
    within: Duration,
) -> Duration {
    loop {
        let owned = owned_by(client, successor).await;
        if ids.iter().all(|id| owned.contains(id)) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() <= within,
            "{successor} did not own {ids:?} within {within:?}; it owns {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A region killed (keep-alive stopped, then its gateway stopped) fences
/// itself before its lease can expire; its open tickets are owned by the
/// successor, at epochs the successor owns above the old ones, within
/// `lease_ttl + margin`; the region comes back, learns the takeover,
/// acknowledges it and leases again.
async fn a_killed_region_is_taken_over(kind: Kind) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = Mesh::start(kind, true).await else {
        return;
    };
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let mut ap = mesh.client("apac-south").await;
    let mut ours = Vec::new();
    for subject in ["VPN down", "Mail slow", "Printer on fire"] {
        ours.push(
            us.create_ticket(create(subject))
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap(),
        );
    }
    us.update_ticket(set_status(&ours[0].id, v1::Status::Open))
        .await
        .unwrap();
    let closed = us
        .create_ticket(create("Old news"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.update_ticket(set_status(&closed.id, v1::Status::Solved))
        .await
        .unwrap();
    us.update_ticket(set_status(&closed.id, v1::Status::Closed))
        .await
        .unwrap();
    let theirs = ap
        .create_ticket(create("Badge reader"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    mesh.wait_quiet().await;
    let ids: Vec<String> = ours.iter().map(|t| t.id.clone()).collect();

    // The keep-alive stops: us-east fences itself while its lease is
    // still live in the coordinator.
    mesh.cut_coordinator("us-east");
    let killed_at = Instant::now();
    let fenced_after = wait_fenced(&mut us, &ids[1], killed_at, LEASE_TTL).await;
    assert!(
        mesh.region_status("us-east").await.is_live(),
        "us-east's lease expired before it fenced itself"
    );
    assert!(
        fenced_after <= LEASE_TTL - SAFETY_MARGIN + Duration::from_millis(300),
        "fenced {fenced_after:?} after the keep-alive stopped, later than ttl - margin"
    );
    // Notes are never fenced.
    us.add_note(note(&ids[1], "written while fenced"))
        .await
        .unwrap();
    // Then the process dies.
    mesh.kill_gateway("us-east").await;

    let taken_after = wait_owned(
        &mut eu,
        "eu-west",
        &ids,
        killed_at,
        LEASE_TTL + TAKEOVER_MARGIN,
    )
    .await;
    eprintln!(
        "[{kind:?}] us-east fenced {fenced_after:?} and its tickets were taken over {taken_after:?} after its keep-alive \
         stopped (lease_ttl {LEASE_TTL:?} + margin {TAKEOVER_MARGIN:?})"
    );
    let takeover = mesh
        .region_status("us-east")
        .await
        .takeover
        .expect("a pending takeover of us-east");
    assert_eq!(takeover.successor, region("eu-west"));
    assert_eq!(
        takeover.also,
        [region("apac-south")],
        "every other live region is listed after the primary"
    );
    for (before, id) in ours.iter().zip(&ids) {
        let (_, old_epoch) = owner(before);
        for client in [&mut eu, &mut ap] {
            let deadline = Instant::now() + PATIENCE;
            let ticket = loop {
                let ticket = get(client, id).await.ticket.unwrap();
                if owner(&ticket).0 == "eu-west" || Instant::now() > deadline {
                    break ticket;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let (owner_region, epoch) = owner(&ticket);
            assert_eq!(owner_region, "eu-west");
            assert!(
                epoch > old_epoch,
                "the successor's epoch {epoch} is not above {old_epoch}"
            );
            assert_eq!(
                epoch % meridian_core::EPOCH_STRIDE,
                1,
                "epoch {epoch} is not one eu-west (index 1) owns"
            );
        }
    }
    // Closed tickets stay where they were; other regions' are untouched.
    assert_eq!(
        owner(&get(&mut eu, &closed.id).await.ticket.unwrap()).0,
        "us-east"
    );
    assert_eq!(
        owner(&get(&mut eu, &theirs.id).await.ticket.unwrap()),
        owner(&theirs)
    );
    // The successor writes them.
    eu.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ids[2].clone(),
        assignee: Some("bo".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    // us-east returns: it learns the takeover, acknowledges it and leases.
    mesh.heal_coordinator("us-east");
    mesh.restart_gateway("us-east").await;
    let back_after = mesh.wait_leased("us-east").await;
    eprintln!("[{kind:?}] the returning us-east leased again {back_after:?} after it restarted");
    let status = mesh.region_status("us-east").await;
    assert!(status.takeover.is_none() && status.is_live(), "{status:?}");
    assert_eq!(status.acknowledged, Some(takeover.fencing_token));
    let mut us = mesh.client("us-east").await;
    let refused = us
        .update_ticket(set_status(&ids[1], v1::Status::Pending))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().starts_with("ticket is owned by eu-west"),
        "{refused:?}"
    );
    let fresh = us
        .create_ticket(create("After the storm"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(owner(&fresh).0, "us-east");

    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_region_is_taken_over_within_lease_ttl_plus_margin_etcd() {
    a_killed_region_is_taken_over(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_region_is_taken_over_within_lease_ttl_plus_margin_local() {
    a_killed_region_is_taken_over(Kind::Local).await;
}

/// us-east is partitioned from its peers and then from the coordinator.
/// An owner-scoped write that slipped in before it fenced stays behind the
/// partition; eu-west takes the tickets over; notes are written on both
/// sides. When the partition heals, us-east learns the takeover before it
/// leases again, and its late write reaches the others at a stale epoch:
/// a Conflict shown on the ticket, while the notes merge everywhere.
async fn a_partitioned_region_returns(kind: Kind) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mesh) = Mesh::start(kind, true).await else {
        return;
    };
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let mut ap = mesh.client("apac-south").await;
    let first = us
        .create_ticket(create("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let second = us
        .create_ticket(create("Mail slow"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.update_ticket(set_status(&first.id, v1::Status::Open))
        .await
        .unwrap();
    mesh.wait_quiet().await;
    let ids = vec![first.id.clone(), second.id.clone()];

    // Cut off from its peers, us-east still holds its lease: a write
    // slips in and waits behind the partition.
    mesh.cut_peers("us-east");
    let stale = us
        .update_ticket(set_status(&first.id, v1::Status::Pending))
        .await
        .unwrap()
        .into_inner();
    let stale_epoch = owner(stale.ticket.as_ref().unwrap()).1;
    us.add_note(note(&first.id, "us-east: before the fence"))
        .await
        .unwrap();

    mesh.cut_coordinator("us-east");
    let cut_at = Instant::now();
    // Watched through the status, not by writing: every write that got
    // through now would be one more late write behind the partition.
    let fenced_after = loop {
        if mesh.status("us-east").await.fenced {
            break cut_at.elapsed();
        }
        assert!(cut_at.elapsed() < LEASE_TTL, "us-east never fenced itself");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        mesh.region_status("us-east").await.is_live(),
        "us-east's lease expired before it fenced itself"
    );
    let refused = us
        .update_ticket(set_status(&second.id, v1::Status::Open))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("fenced"), "{refused:?}");
    us.add_note(note(&first.id, "us-east: while fenced"))
        .await
        .unwrap();
    let taken_after = wait_owned(
        &mut eu,
        "eu-west",
        &ids,
        cut_at,
        LEASE_TTL + TAKEOVER_MARGIN,
    )
    .await;
    eprintln!(
        "[{kind:?}] partitioned us-east fenced after {fenced_after:?}, taken over after {taken_after:?}"
    );
    let takeover = mesh
        .region_status("us-east")
        .await
        .takeover
        .expect("a pending takeover of us-east");
    let successor_epoch = owner(&get(&mut eu, &first.id).await.ticket.unwrap()).1;
    eu.update_ticket(v1::UpdateTicketRequest {
        ticket_id: second.id.clone(),
        assignee: Some("bo".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    eu.add_note(note(&first.id, "eu-west: picked it up"))
        .await
        .unwrap();
    // Still partitioned, us-east stays fenced (its lease is gone).
    let refused = us
        .update_ticket(set_status(&second.id, v1::Status::Open))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // The partition heals.
    mesh.heal_peers("us-east");
    mesh.heal_coordinator("us-east");
    let healed_at = Instant::now();
    mesh.wait_leased("us-east").await;
    eprintln!(
        "[{kind:?}] us-east learnt the takeover and leased again {:?} after the partition healed",
        healed_at.elapsed()
    );
    let status = mesh.region_status("us-east").await;
    assert!(status.takeover.is_none(), "{status:?}");
    assert_eq!(status.acknowledged, Some(takeover.fencing_token));
    mesh.wait_quiet().await;

    // The late write is a Conflict wherever it arrived after the takeover,
    // and the successor's values stand.
    for (name, client) in [("eu-west", &mut eu), ("apac-south", &mut ap)] {
        let record = get(client, &first.id).await;
        let ticket = record.ticket.unwrap();
        assert_eq!(
            owner(&ticket),
            ("eu-west".to_owned(), successor_epoch),
            "in {name}"
        );
        assert_eq!(
            ticket.status,
            v1::Status::Open as i32,
            "in {name}: the higher epoch wins"
        );
        assert_eq!(
            record.conflicts.len(),
            1,
            "in {name}: {:?}",
            record.conflicts
        );
        let conflict = &record.conflicts[0];
        assert_eq!(conflict.origin_region, "us-east");
        assert_eq!(conflict.origin_seq, stale.origin_seq);
        assert_eq!(conflict.stale_epoch, stale_epoch);
        assert_eq!(conflict.current_epoch, successor_epoch);
        assert!(
            conflict.changes_json.contains("pending"),
            "{}",
            conflict.changes_json
        );
    }
    // Notes merge: every one is everywhere.
    for (name, client) in [
        ("us-east", &mut us),
        ("eu-west", &mut eu),
        ("apac-south", &mut ap),
    ] {
        let notes: Vec<String> = get(client, &first.id)
            .await
            .notes
            .into_iter()
            .map(|n| n.body)
            .collect();
        for body in [
            "us-east: before the fence",
            "us-east: while fenced",
            "eu-west: picked it up",
        ] {
            assert!(
                notes.iter().any(|n| n == body),
                "{name} lacks note {body:?}: {notes:?}"
            );
        }
    }
    // us-east writes again, but not what it lost.
    let refused = us
        .update_ticket(set_status(&first.id, v1::Status::Solved))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    us.create_ticket(create("After the partition"))
        .await
        .unwrap();

    // us-east applied its own late write when it made it; eu-west's
    // TakenOver says eu-west had not seen it, so us-east takes it back too.
    let record = get(&mut us, &first.id).await;
    assert_eq!(
        record.ticket.unwrap().status,
        v1::Status::Open as i32,
        "in us-east: the late write is taken back"
    );
    assert_eq!(
        record
            .conflicts
            .iter()
            .map(|c| c.origin_seq)
            .collect::<Vec<_>>(),
        [stale.origin_seq]
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_region_returns_and_its_stale_write_is_a_conflict_etcd() {
    a_partitioned_region_returns(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_region_returns_and_its_stale_write_is_a_conflict_local() {
    a_partitioned_region_returns(Kind::Local).await;
}

/// Every region's view of `id`'s owner, once `expected` owns it in all
/// of them (or after `PATIENCE`, to fail with what each shows).
async fn owner_everywhere(
    clients: &mut [(&str, &mut TicketServiceClient<Channel>)],
    id: &str,
    expected: &str,
) -> Vec<(String, u64)> {
    let mut owners = Vec::new();
    for (name, client) in clients.iter_mut() {
        let deadline = Instant::now() + PATIENCE;
        let found = loop {
            let found = owner(&get(client, id).await.ticket.unwrap());
            if found.0 == expected || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(found.0, expected, "in {name}: {id} is owned by {found:?}");
        owners.push(found);
    }
    owners
}

/// us-east dies with open tickets: unpinned, pinned to a set with
/// apac-south but without eu-west (the primary successor), pinned to a
/// set with eu-west, and pinned to us-east alone. The router's takeover
/// lists eu-west then apac-south; eu-west takes the unpinned and its
/// pinned ones, apac-south the one only it may hold, each at an epoch of
/// its own, every ticket once; the one pinned to us-east alone stays home.
/// us-east returns, learns both successors' epochs and leases again.
async fn pinned_tickets_fail_over_inside_their_residency(kind: Kind) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = Mesh::start(kind, true).await else {
        return;
    };
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let mut ap = mesh.client("apac-south").await;
    let pinned = |subject: &str, set: &[&str]| v1::CreateTicketRequest {
        residency: set.iter().map(|r| (*r).to_owned()).collect(),
        ..create(subject)
    };
    let free = us
        .create_ticket(create("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let with_ap = us
        .create_ticket(pinned("Payroll export", &["us-east", "apac-south"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let with_eu = us
        .create_ticket(pinned("GDPR request", &["us-east", "eu-west"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let home = us
        .create_ticket(pinned("Stays home", &["us-east"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.update_ticket(set_status(&with_ap.id, v1::Status::Open))
        .await
        .unwrap();
    mesh.wait_quiet().await;

    mesh.cut_coordinator("us-east");
    let killed_at = Instant::now();
    mesh.kill_gateway("us-east").await;
    let within = LEASE_TTL + TAKEOVER_MARGIN;
    let taken_after = wait_owned(
        &mut ap,
        "apac-south",
        std::slice::from_ref(&with_ap.id),
        killed_at,
        within,
    )
    .await;
    let by_eu = [free.id.clone(), with_eu.id.clone()];
    let eu_after = wait_owned(&mut eu, "eu-west", &by_eu, killed_at, within).await;
    eprintln!(
        "[{kind:?}] us-east's pinned ticket was taken over by apac-south {taken_after:?}, its others by eu-west {eu_after:?} \
         after its keep-alive stopped (lease_ttl {LEASE_TTL:?} + margin {TAKEOVER_MARGIN:?})"
    );
    let takeover = mesh
        .region_status("us-east")
        .await
        .takeover
        .expect("a pending takeover of us-east");
    assert_eq!(takeover.successor, region("eu-west"));
    assert_eq!(takeover.also, [region("apac-south")]);

    // Owner and epoch, as every live region sees them.
    for (ticket, taker, index) in [
        (&free, "eu-west", 1),
        (&with_eu, "eu-west", 1),
        (&with_ap, "apac-south", 2),
    ] {
        let owners = owner_everywhere(
            &mut [("eu-west", &mut eu), ("apac-south", &mut ap)],
            &ticket.id,
            taker,
        )
        .await;
        for (_, epoch) in owners {
            assert!(
                epoch > owner(ticket).1,
                "{}: epoch {epoch} is not above {}",
                ticket.id,
                owner(ticket).1
            );
            assert_eq!(
                epoch % meridian_core::EPOCH_STRIDE,
                index,
                "{}: epoch {epoch} is not one {taker} owns",
                ticket.id
            );
        }
    }
    for (name, client) in [("eu-west", &mut eu), ("apac-south", &mut ap)] {
        assert_eq!(
            owner(&get(client, &home.id).await.ticket.unwrap()),
            owner(&home),
            "in {name}: the home-only ticket moved"
        );
    }
    // Asking again takes nothing new, at either successor.
    let router_tls = MeshTls::load(TlsFiles::dev(
        mesh.pki.path(),
        &region("eu-west"),
        Service::Router,
    ))
    .unwrap();
    for name in ["eu-west", "apac-south"] {
        let identity = PeerIdentity::new(
            router_tls.identity().trust_domain().clone(),
            region(name),
            Service::Gateway,
        );
        let channel = router_tls
            .connect(&mesh.node(name).mesh_addr.to_string(), identity)
            .await
            .unwrap();
        let ask = v1::TakeOverRequest {
            failed_region: "us-east".into(),
            fencing_token: takeover.fencing_token.get(),
        };
        let again = MeshServiceClient::new(channel)
            .take_over(ask)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.tickets_taken, 0, "{name} took something twice");
    }
    // apac-south owns its share: it writes it.
    ap.update_ticket(v1::UpdateTicketRequest {
        ticket_id: with_ap.id.clone(),
        assignee: Some("kei".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    mesh.wait_quiet_among(&["eu-west", "apac-south"]).await;
    // Nobody took a ticket twice: one TakenOver per moved ticket, in every
    // live region's copy of both successors' logs.
    let stores = mesh.stores().await;
    for (store, name) in stores.iter().zip(failover_support::REGIONS) {
        if name == "us-east" {
            continue;
        }
        let mut taken: Vec<(String, String)> = Vec::new();
        for origin in ["eu-west", "apac-south"] {
            for event in store
                .events_after(&region(origin), 0, 10_000)
                .await
                .unwrap()
            {
                if matches!(event.kind, meridian_core::EventKind::TakenOver { .. }) {
                    taken.push((event.ticket_id.to_string(), origin.to_owned()));
                }
            }
        }
        taken.sort();
        let mut expected = vec![
            (free.id.clone(), "eu-west".to_owned()),
            (with_ap.id.clone(), "apac-south".to_owned()),
            (with_eu.id.clone(), "eu-west".to_owned()),
        ];
        expected.sort();
        assert_eq!(taken, expected, "in {name}");
    }
    for store in stores {
        store.close().await;
    }

    // us-east returns: it learns both successors' epochs before it leases.
    mesh.heal_coordinator("us-east");
    mesh.restart_gateway("us-east").await;
    let back_after = mesh.wait_leased("us-east").await;
    eprintln!(
        "[{kind:?}] the returning us-east learnt two successors and leased again {back_after:?} after it restarted"
    );
    let status = mesh.region_status("us-east").await;
    assert!(status.takeover.is_none() && status.is_live(), "{status:?}");
    assert_eq!(status.acknowledged, Some(takeover.fencing_token));
    let mut us = mesh.client("us-east").await;
    for (id, taker) in [
        (&with_ap.id, "apac-south"),
        (&free.id, "eu-west"),
        (&with_eu.id, "eu-west"),
    ] {
        let refused = us
            .update_ticket(set_status(id, v1::Status::Pending))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused
                .message()
                .starts_with(&format!("ticket is owned by {taker}")),
            "{refused:?}"
        );
    }
    // What us-east learnt before leasing: apac-south's write is there.
    assert_eq!(
        get(&mut us, &with_ap.id)
            .await
            .ticket
            .unwrap()
            .assignee
            .as_deref(),
        Some("kei")
    );
    // The ticket no successor could hold is still us-east's to work.
    us.update_ticket(set_status(&home.id, v1::Status::Open))
        .await
        .unwrap();
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_tickets_fail_over_inside_their_residency_etcd() {
    pinned_tickets_fail_over_inside_their_residency(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_tickets_fail_over_inside_their_residency_local() {
    pinned_tickets_fail_over_inside_their_residency(Kind::Local).await;
}

/// us-east is taken over by eu-west and apac-south, then apac-south dies
/// too before us-east returns. With `owes`, apac-south took a ticket of
/// us-east (pinned to us-east and apac-south): us-east must learn its
/// epoch, so it stays fenced until apac-south is back, then learns and
/// leases. Without, apac-south took nothing of us-east's: the returning
/// us-east passes over the silent successor and leases at once.
async fn a_successor_dies_before_the_region_returns(kind: Kind, owes: bool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = Mesh::start(kind, true).await else {
        return;
    };
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let mut ap = mesh.client("apac-south").await;
    let free = us
        .create_ticket(create("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let with_ap = if owes {
        let pinned = v1::CreateTicketRequest {
            residency: vec!["us-east".into(), "apac-south".into()],
            ..create("Payroll")
        };
        Some(
            us.create_ticket(pinned)
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap(),
        )
    } else {
        None
    };
    mesh.wait_quiet().await;

    mesh.cut_coordinator("us-east");
    let killed_at = Instant::now();
    mesh.kill_gateway("us-east").await;
    let within = LEASE_TTL + TAKEOVER_MARGIN;
    wait_owned(
        &mut eu,
        "eu-west",
        std::slice::from_ref(&free.id),
        killed_at,
        within,
    )
    .await;
    if let Some(with_ap) = &with_ap {
        wait_owned(
            &mut ap,
            "apac-south",
            std::slice::from_ref(&with_ap.id),
            killed_at,
            within,
        )
        .await;
    }
    let takeover = mesh
        .region_status("us-east")
        .await
        .takeover
        .expect("a pending takeover of us-east");
    assert_eq!(
        takeover
            .successors()
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
        ["eu-west", "apac-south"]
    );
    mesh.wait_quiet_among(&["eu-west", "apac-south"]).await;

    // apac-south dies; the router hands it to eu-west, the only live region.
    mesh.cut_coordinator("apac-south");
    mesh.kill_gateway("apac-south").await;
    let deadline = Instant::now() + PATIENCE;
    while mesh.region_status("apac-south").await.takeover.is_none() {
        assert!(Instant::now() < deadline, "apac-south was never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    mesh.heal_coordinator("us-east");
    mesh.restart_gateway("us-east").await;
    if owes {
        // It cannot learn apac-south's epoch for the pinned ticket: it waits.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = mesh.status("us-east").await;
            assert!(
                status.fenced,
                "us-east leased without learning apac-south's takeover epochs"
            );
            if status
                .fenced_reason
                .contains("was taken over by eu-west, apac-south")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "us-east never started learning its takeover: {}",
                status.fenced_reason
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waiting_since = Instant::now();
        while waiting_since.elapsed() < LEASE_TTL + Duration::from_secs(1) {
            let status = mesh.status("us-east").await;
            assert!(
                status.fenced,
                "us-east leased without learning apac-south's takeover epochs"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            mesh.region_status("us-east").await.takeover,
            Some(takeover.clone())
        );
        mesh.heal_coordinator("apac-south");
        mesh.restart_gateway("apac-south").await;
        mesh.wait_leased("apac-south").await;
    }
    let back_after = mesh.wait_leased("us-east").await;
    eprintln!(
        "[{kind:?}] owes={owes}: us-east leased again {back_after:?} after it restarted (or apac-south was back)"
    );
    let status = mesh.region_status("us-east").await;
    assert!(status.takeover.is_none() && status.is_live(), "{status:?}");
    assert_eq!(status.acknowledged, Some(takeover.fencing_token));
    let mut us = mesh.client("us-east").await;
    let mut taken = vec![(free.id.clone(), "eu-west")];
    taken.extend(with_ap.iter().map(|t| (t.id.clone(), "apac-south")));
    for (id, taker) in taken {
        let refused = us
            .update_ticket(set_status(&id, v1::Status::Pending))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused
                .message()
                .starts_with(&format!("ticket is owned by {taker}")),
            "{refused:?}"
        );
    }
    if !owes {
        mesh.heal_coordinator("apac-south");
        mesh.restart_gateway("apac-south").await;
        mesh.wait_leased("apac-south").await;
    }
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_successor_that_took_a_pinned_ticket_holds_the_return_until_it_is_back_etcd() {
    a_successor_dies_before_the_region_returns(Kind::Etcd, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_successor_that_took_a_pinned_ticket_holds_the_return_until_it_is_back_local() {
    a_successor_dies_before_the_region_returns(Kind::Local, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_successor_that_took_nothing_of_the_region_is_passed_over_etcd() {
    a_successor_dies_before_the_region_returns(Kind::Etcd, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_successor_that_took_nothing_of_the_region_is_passed_over_local() {
    a_successor_dies_before_the_region_returns(Kind::Local, false).await;
}

/// `meridian region failover` without a router: refused while the region
/// is alive, then recorded and carried out; running it again takes
/// nothing new. The successor checks who asks and for which takeover.
async fn a_takeover_by_hand(kind: Kind) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = Mesh::start(kind, false).await else {
        return;
    };
    let mut us = mesh.client("us-east").await;
    let mut ids = Vec::new();
    for subject in ["VPN down", "Mail slow"] {
        ids.push(
            us.create_ticket(create(subject))
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap()
                .id,
        );
    }
    // Residency keeps this one from apac-south: it waits for us-east.
    let pinned = v1::CreateTicketRequest {
        residency: vec!["us-east".into()],
        ..create("Stays home")
    };
    let pinned = us
        .create_ticket(pinned)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
        .id;
    mesh.wait_quiet().await;
    let (us_east, apac) = (region("us-east"), region("apac-south"));
    let apac_addr = mesh.node("apac-south").mesh_addr.to_string();
    let router_tls = MeshTls::load(TlsFiles::dev(
        mesh.pki.path(),
        &region("us-east"),
        Service::Router,
    ))
    .unwrap();
    let observer = mesh.observer.clone();
    let by_hand = || {
        meridian_router::failover::failover_by_hand(
            observer.as_ref(),
            &router_tls,
            &us_east,
            &apac,
            &apac_addr,
            Duration::from_secs(10),
        )
    };

    let alive = by_hand().await.unwrap_err();
    assert!(
        matches!(
            alive,
            meridian_router::failover::FailoverError::Coordinator(
                meridian_coord::Error::RegionAlive { .. }
            )
        ),
        "{alive}"
    );

    mesh.cut_coordinator("us-east");
    mesh.kill_gateway("us-east").await;
    let deadline = Instant::now() + LEASE_TTL + TAKEOVER_MARGIN;
    while mesh.region_status("us-east").await.is_live() {
        assert!(Instant::now() < deadline, "us-east's lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not recorded yet: the successor refuses to act on its own say.
    let gateway_tls = MeshTls::load(TlsFiles::dev(
        mesh.pki.path(),
        &region("eu-west"),
        Service::Gateway,
    ))
    .unwrap();
    let apac_identity = PeerIdentity::new(
        gateway_tls.identity().trust_domain().clone(),
        apac.clone(),
        Service::Gateway,
    );
    let ask = |token| v1::TakeOverRequest {
        failed_region: "us-east".into(),
        fencing_token: token,
    };
    let mut as_router = MeshServiceClient::new(
        router_tls
            .connect(&apac_addr, apac_identity.clone())
            .await
            .unwrap(),
    );
    let none = as_router.take_over(ask(7)).await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");

    let first = by_hand().await.unwrap();
    assert!(first.recorded_now);
    assert_eq!(first.answer.tickets_taken, 2);
    let token = first.takeover.fencing_token.get();
    // A gateway may ask only for its own region's takeover.
    let mut as_eu = MeshServiceClient::new(
        gateway_tls
            .connect(&apac_addr, apac_identity)
            .await
            .unwrap(),
    );
    let denied = as_eu.take_over(ask(token)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let wrong = as_router.take_over(ask(token + 1)).await.unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");

    let again = by_hand().await.unwrap();
    assert!(!again.recorded_now);
    assert_eq!(again.takeover, first.takeover);
    assert_eq!(
        again.answer.tickets_taken, 0,
        "a second call takes nothing new"
    );
    assert!(again.answer.through_seq >= first.answer.through_seq);
    let mut ap = mesh.client("apac-south").await;
    let owned = owned_by(&mut ap, "apac-south").await;
    assert!(ids.iter().all(|id| owned.contains(id)), "{owned:?}");
    assert!(
        !owned.contains(&pinned),
        "a successor outside the ticket's residency does not take it: {owned:?}"
    );
    let waiting = ap
        .get_ticket(v1::GetTicketRequest {
            ticket_id: pinned.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(waiting.owner.unwrap().owner_region, "us-east");

    mesh.heal_coordinator("us-east");
    mesh.restart_gateway("us-east").await;
    mesh.wait_leased("us-east").await;
    assert_eq!(
        mesh.region_status("us-east").await.acknowledged,
        Some(first.takeover.fencing_token)
    );
    mesh.check_invariants().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_by_hand_is_checked_and_idempotent_etcd() {
    a_takeover_by_hand(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_by_hand_is_checked_and_idempotent_local() {
    a_takeover_by_hand(Kind::Local).await;
}
