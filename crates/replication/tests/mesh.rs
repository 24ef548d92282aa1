//! Regions replicating over real mutual TLS on loopback, with real stores:
//! a three-region full mesh, a stream cut while a backlog ships, a hung and
//! a dead peer, peer durability, and lag reporting. Each scenario ends with
//! the convergence check (every event exactly once everywhere, the same
//! projections everywhere).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use meridian_core::{Clock, ManualClock, RegionId, Status, TicketChanges};
use meridian_replication::{Error, PeerStatus, Replicator};
use meridian_store::Store;
use meridian_test_support::Backing;
use support::proxy::Mode;
use support::*;

fn peer_status(replicator: &Replicator, peer: &RegionId) -> PeerStatus {
    replicator
        .status()
        .into_iter()
        .find(|status| &status.region == peer)
        .expect("peer in status")
}

fn postgres_available() -> bool {
    meridian_test_support::postgres_url().is_some()
}

// ------------------------------------------------------ three-region mesh

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_replicate_every_write_everywhere_sqlite() {
    three_regions(Backing::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_replicate_every_write_everywhere_postgres() {
    if postgres_available() {
        three_regions(Backing::Postgres).await;
    }
}

/// Creates, updates and notes on every region, notes from every region on
/// every other region's tickets, and a handoff: everything reaches
/// everywhere exactly once and every projection agrees.
async fn three_regions(backing: Backing) {
    let mesh = Mesh::start(MeshSpec::new(backing, &THREE)).await;
    let mut written: BTreeMap<RegionId, u64> = BTreeMap::new();
    let mut count = |region: &RegionId| *written.entry(region.clone()).or_insert(0) += 1;

    let mut owned = Vec::new();
    for (index, node) in mesh.nodes.iter().enumerate() {
        let mut tickets = Vec::new();
        for _ in 0..5 {
            let ticket = ticket(&node.region, index as u16);
            node.store
                .create_ticket(ticket.clone(), meta())
                .await
                .unwrap();
            count(&node.region);
            tickets.push(ticket);
        }
        for ticket in &tickets[..3] {
            node.store
                .update_ticket(ticket.id, opened(ticket.owner.epoch), meta())
                .await
                .unwrap();
            count(&node.region);
        }
        for ticket in &tickets {
            node.store
                .add_note(note(ticket.id, &node.region, "first look"), meta())
                .await
                .unwrap();
            count(&node.region);
        }
        owned.push(tickets);
    }
    mesh.wait_caught_up(Duration::from_secs(10)).await;

    // Notes from everywhere on everyone's tickets: they merge.
    for node in &mesh.nodes {
        for (owner, tickets) in owned.iter().enumerate() {
            if mesh.nodes[owner].region == node.region {
                continue;
            }
            for ticket in tickets {
                node.store
                    .add_note(
                        note(
                            ticket.id,
                            &node.region,
                            &format!("seen from {}", node.region),
                        ),
                        meta(),
                    )
                    .await
                    .unwrap();
                count(&node.region);
            }
        }
    }

    // A handoff us-east → eu-west: offer, acceptance where the offer has
    // arrived, and the acceptance arriving back.
    let (us, eu) = (&mesh.nodes[0], &mesh.nodes[1]);
    let handed = &owned[0][0];
    let offer_note = note(
        handed.id,
        &us.region,
        &handoff_note().render(&us.region, &eu.region),
    );
    let (_, offer) = us
        .store
        .offer_handoff(
            handed.id,
            handed.owner.epoch,
            eu.region.clone(),
            handoff_note(),
            offer_note,
            meta(),
        )
        .await
        .unwrap();
    count(&us.region);
    eu.replicator()
        .wait_applied(&us.region, offer.origin_seq, Duration::from_secs(5))
        .await
        .unwrap();
    let new_epoch = handed.owner.epoch.next_for(1);
    let (_, accepted) = eu
        .store
        .accept_handoff(
            handed.id,
            us.region.clone(),
            offer.origin_seq,
            handed.owner.epoch,
            new_epoch,
            meta(),
        )
        .await
        .unwrap();
    count(&eu.region);
    us.replicator()
        .wait_applied(&eu.region, accepted.origin_seq, Duration::from_secs(5))
        .await
        .unwrap();
    let pending = TicketChanges {
        epoch: new_epoch,
        status: Some(Status::Pending),
        ..TicketChanges::default()
    };
    eu.store
        .update_ticket(handed.id, pending, meta())
        .await
        .unwrap();
    count(&eu.region);

    mesh.wait_caught_up(Duration::from_secs(10)).await;
    mesh.assert_converged(Some(&written)).await;
    for node in &mesh.nodes {
        let record = node.store.get_ticket(handed.id).await.unwrap().unwrap();
        assert_eq!(
            (&record.ticket.owner.owner_region, record.ticket.owner.epoch),
            (&eu.region, new_epoch),
            "{}",
            node.region
        );
        assert_eq!(record.ticket.status, Status::Pending, "{}", node.region);
        // first look, one from each other region, and the handoff note.
        assert_eq!(record.notes.len(), 4, "{}: {:?}", node.region, record.notes);
    }
    // Every peer acknowledged everything, and says so in the status.
    for node in &mesh.nodes {
        let replicator = node.replicator();
        wait_until(
            Duration::from_secs(5),
            "every peer acknowledged every event",
            || async {
                replicator
                    .status()
                    .iter()
                    .all(|peer| peer.connected && peer.lag_events == 0 && peer.lag.is_zero())
            },
        )
        .await;
        for peer in replicator.status() {
            assert_eq!(
                peer.acked_seq,
                Some(written[&node.region]),
                "{} of {}",
                peer.region,
                node.region
            );
            assert_eq!(
                peer.applied_seq, written[&peer.region],
                "{} of {}",
                node.region, peer.region
            );
            assert!(peer.last_heartbeat_at.is_some(), "{peer:?}");
        }
    }
    mesh.shutdown().await;
}

// ------------------------------------------------- a stream cut mid-batch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_batch_resumes_with_no_gap_and_no_duplicate_sqlite() {
    cut_mid_batch(Backing::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_batch_resumes_with_no_gap_and_no_duplicate_postgres() {
    if postgres_available() {
        cut_mid_batch(Backing::Postgres).await;
    }
}

/// Both regions pile up a backlog while their link is down; then, while
/// the backlogs ship, the link is cut three times (both sockets closed,
/// mid-frame). Each reconnect resumes where each side is durable.
async fn cut_mid_batch(backing: Backing) {
    let mut spec = MeshSpec::new(backing, &["us-east", "eu-west"]);
    spec.proxied = vec![(0, 1)];
    spec.tune = |config| {
        fast(config);
        config.batch_events_max = 50;
    };
    let mesh = Mesh::start(spec).await;
    let proxy = mesh.proxy(0, 1);
    let (us, eu) = (&mesh.nodes[0], &mesh.nodes[1]);
    proxy.set_mode(Mode::Refuse);
    proxy.cut();

    let (us_events, eu_events) = tokio::join!(
        write_burst(&us.store, 0, 6_000, 64),
        write_burst(&eu.store, 1, 1_500, 64)
    );
    let us_head = us_events.len() as u64;
    let connections_before = proxy.connections();
    proxy.set_mode(Mode::Forward);
    for quarter in 1..=3 {
        let target = us_head * quarter / 4;
        wait_until(
            Duration::from_secs(15),
            &format!("eu-west applied {target} of us-east's events"),
            || async { eu.store.cursor(&us.region).await.unwrap() >= target },
        )
        .await;
        let bytes = proxy.bytes();
        proxy.cut();
        let cursor = eu.store.cursor(&us.region).await.unwrap();
        assert!(
            cursor < us_head,
            "the cut must come while the backlog ships (cursor {cursor} of {us_head}, {bytes} bytes)"
        );
    }
    mesh.wait_caught_up(Duration::from_secs(20)).await;
    assert!(
        proxy.connections() >= connections_before + 4,
        "{} connections",
        proxy.connections()
    );
    let expected = BTreeMap::from([
        (us.region.clone(), us_head),
        (eu.region.clone(), eu_events.len() as u64),
    ]);
    mesh.assert_converged(Some(&expected)).await;
    assert!(peer_status(us.replicator(), &eu.region).connects >= 4);
    mesh.shutdown().await;
}

// ------------------------------------------ a hung or dead peer never blocks

/// Writes `n` tickets one after another; each must commit within two
/// seconds whatever replication is doing. Returns the total time.
async fn timed_writes(store: &Store, index: u16, n: usize) -> Duration {
    let started = tokio::time::Instant::now();
    for _ in 0..n {
        let ticket = ticket(store.local_region(), index);
        tokio::time::timeout(Duration::from_secs(2), store.create_ticket(ticket, meta()))
            .await
            .expect("a local write waits on nothing but its commit")
            .unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_dead_peer_does_not_block_local_writes() {
    let mut spec = MeshSpec::new(Backing::Sqlite, &["us-east", "eu-west"]);
    spec.proxied = vec![(0, 1)];
    let mut mesh = Mesh::start(spec).await;
    let us_region = mesh.nodes[0].region.clone();
    let eu_region = mesh.nodes[1].region.clone();
    let us_store = mesh.nodes[0].store.clone();
    let us = mesh.nodes[0].replicator().clone();

    let baseline = timed_writes(&us_store, 0, 100).await;
    mesh.wait_caught_up(Duration::from_secs(10)).await;
    let budget = baseline * 3 + Duration::from_secs(1);

    // eu-west hangs: its connection stays open, but no byte moves.
    mesh.proxy(0, 1).set_mode(Mode::Freeze);
    let hung = timed_writes(&us_store, 0, 100).await;
    // More than the store's broadcast buffer: the stream must page them
    // from the log later, and the writer must not notice.
    let burst = tokio::time::timeout(
        Duration::from_secs(10),
        write_burst(&us_store, 0, 5_000, 64),
    )
    .await
    .expect("a burst commits while the peer hangs");
    assert_eq!(burst.len(), 5_000);

    // eu-west dies.
    mesh.nodes[1].stop().await;
    mesh.proxy(0, 1).set_mode(Mode::Refuse);
    mesh.proxy(0, 1).cut();
    let dead = timed_writes(&us_store, 0, 100).await;
    assert!(
        hung <= budget && dead <= budget,
        "writes slowed down: {baseline:?} with the peer up, {hung:?} hung, {dead:?} dead"
    );

    let head = us_store.local_head().await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the lag shows the unacknowledged writes",
        || async {
            let status = peer_status(&us, &eu_region);
            !status.connected
                && status.lag_events == head - status.acked_seq.unwrap_or(0)
                && status.lag_events >= 5_000
        },
    )
    .await;

    // eu-west returns: the lag drains.
    mesh.proxy(0, 1).set_mode(Mode::Forward);
    mesh.nodes[1].start().await;
    wait_until(Duration::from_secs(15), "the lag drains", || async {
        let status = peer_status(&us, &eu_region);
        status.connected && status.lag_events == 0 && status.acked_seq == Some(head)
    })
    .await;
    assert_eq!(mesh.nodes[1].store.cursor(&us_region).await.unwrap(), head);
    mesh.assert_converged(None).await;
    mesh.shutdown().await;
}

// ------------------------------------------------------- peer durability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_peer_durable_returns_only_once_a_peer_applied_the_event() {
    let mut spec = MeshSpec::new(Backing::Sqlite, &["us-east", "eu-west"]);
    spec.proxied = vec![(0, 1)];
    let mut mesh = Mesh::start(spec).await;
    let us_region = mesh.nodes[0].region.clone();
    let eu_region = mesh.nodes[1].region.clone();
    let us_store = mesh.nodes[0].store.clone();
    let eu_store = mesh.nodes[1].store.clone();
    let us = mesh.nodes[0].replicator().clone();
    let write = || async {
        us_store
            .create_ticket(ticket(&us_region, 0), meta())
            .await
            .unwrap()
            .origin_seq
    };

    let first = write().await;
    assert_eq!(
        us.wait_peer_durable(first, Duration::from_secs(5))
            .await
            .unwrap(),
        eu_region
    );
    assert!(eu_store.cursor(&us_region).await.unwrap() >= first);

    // A hung peer: the wait goes on until the peer has applied the event.
    mesh.proxy(0, 1).set_mode(Mode::Freeze);
    let second = write().await;
    let waiting = tokio::spawn({
        let us = us.clone();
        async move { us.wait_peer_durable(second, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "returned before any peer applied {second}"
    );
    assert!(eu_store.cursor(&us_region).await.unwrap() < second);
    mesh.proxy(0, 1).cut();
    mesh.proxy(0, 1).set_mode(Mode::Forward);
    assert_eq!(waiting.await.unwrap().unwrap(), eu_region);
    assert!(
        eu_store.cursor(&us_region).await.unwrap() >= second,
        "acknowledged means applied"
    );

    // Every peer down: it times out, naming the peers' acks.
    mesh.nodes[1].stop().await;
    mesh.proxy(0, 1).set_mode(Mode::Refuse);
    mesh.proxy(0, 1).cut();
    let third = write().await;
    let err = us
        .wait_peer_durable(third, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotPeerDurable { seq, .. } if seq == third),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("eu-west={second}")),
        "{err}"
    );
    mesh.shutdown().await;
}

// ------------------------------------------------------------------- lag

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_reported_in_events_and_seconds_while_a_peer_is_down() {
    let start = Timestamp::from_second(1_900_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let mut spec = MeshSpec::new(Backing::Sqlite, &["us-east", "eu-west"]);
    spec.clock = clock.clone();
    spec.start = false;
    let mut mesh = Mesh::start(spec).await;
    mesh.nodes[0].start().await;
    let us_region = mesh.nodes[0].region.clone();
    let eu_region = mesh.nodes[1].region.clone();
    let us = mesh.nodes[0].replicator().clone();

    // Ten writes at `start`, while eu-west has never been up.
    let start_ms = u64::try_from(start.as_millisecond()).unwrap();
    for _ in 0..10 {
        mesh.nodes[0]
            .store
            .create_ticket(ticket(&us_region, 0), meta_at(start_ms))
            .await
            .unwrap();
    }
    clock.advance(SignedDuration::from_secs(42));
    wait_until(
        Duration::from_secs(5),
        "a lag of 10 events and 42 s",
        || async {
            let status = peer_status(&us, &eu_region);
            status.lag_events == 10 && status.lag == Duration::from_secs(42)
        },
    )
    .await;
    let status = peer_status(&us, &eu_region);
    assert!(!status.connected && status.dials, "{status:?}");
    assert_eq!(status.acked_seq, None, "eu-west never said");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connect to eu-west"),
        "{status:?}"
    );
    clock.advance(SignedDuration::from_secs(8));
    wait_until(
        Duration::from_secs(5),
        "the lag grows with time",
        || async { peer_status(&us, &eu_region).lag == Duration::from_secs(50) },
    )
    .await;

    mesh.nodes[1].start().await;
    wait_until(
        Duration::from_secs(10),
        "no lag once eu-west caught up",
        || async {
            let status = peer_status(&us, &eu_region);
            status.connected
                && status.lag_events == 0
                && status.lag.is_zero()
                && status.acked_seq == Some(10)
        },
    )
    .await;
    assert_eq!(clock.now(), start + SignedDuration::from_secs(50));
    mesh.assert_converged(None).await;
    mesh.shutdown().await;
}

/// Residency on the stream's backlog path: us-east writes a ticket pinned
/// to it and eu-west, with a note and a handoff offer, before any stream
/// runs; once they start, eu-west gets every event whole and apac-south
/// redacted copies of the same events, and the mesh converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_ships_a_pinned_tickets_text_only_inside_its_residency() {
    let mut spec = MeshSpec::new(Backing::Sqlite, &THREE);
    spec.start = false;
    let mut mesh = Mesh::start(spec).await;
    let us = mesh.nodes[0].store.clone();
    let (us_east, eu_west) = (region("us-east"), region("eu-west"));
    let mut pinned = ticket(&us_east, 0);
    pinned.residency = [us_east.clone(), eu_west.clone()].into();
    us.create_ticket(pinned.clone(), meta()).await.unwrap();
    us.add_note(
        note(pinned.id, &us_east, "the customer's home address"),
        meta(),
    )
    .await
    .unwrap();
    let offer = note(
        pinned.id,
        &us_east,
        &handoff_note().render(&us_east, &eu_west),
    );
    us.offer_handoff(
        pinned.id,
        pinned.owner.epoch,
        eu_west.clone(),
        handoff_note(),
        offer,
        meta(),
    )
    .await
    .unwrap();
    let own = us.events_after(&us_east, 0, 100).await.unwrap();
    assert_eq!(own.len(), 3);
    for node in &mut mesh.nodes {
        node.start().await;
    }
    mesh.wait_caught_up(Duration::from_secs(15)).await;

    assert_eq!(
        mesh.nodes[1]
            .store
            .events_after(&us_east, 0, 100)
            .await
            .unwrap(),
        own,
        "eu-west is in the set"
    );
    let copies = mesh.nodes[2]
        .store
        .events_after(&us_east, 0, 100)
        .await
        .unwrap();
    let redacted: Vec<_> = own
        .iter()
        .map(meridian_core::residency::redact_event)
        .collect();
    assert_eq!(copies, redacted, "apac-south holds the redacted copies");
    let dump = format!("{copies:?}");
    for text in [
        pinned.subject.as_str(),
        "home address",
        "restarted the sync job",
        "customer is in Lisbon",
    ] {
        assert!(!dump.contains(text), "{text} reached apac-south: {dump}");
    }
    mesh.assert_converged(None).await;
    mesh.shutdown().await;
}
