//! Anti-entropy over real mutual TLS on loopback, with real stores (SQLite
//! files, or PostgreSQL schemas when `DATABASE_URL` is set): a region's
//! events relayed to a region that never heard from it, after the region is
//! gone for good; an event tampered with in one replica, reported by every
//! region that compares with it and left as it is; and who may call the
//! service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::{EventEnvelope, EventKind, RegionId};
use meridian_proto::v1::{self, anti_entropy_service_client::AntiEntropyServiceClient};
use meridian_replication::{
    AntiEntropy, AntiEntropyConfig, AntiEntropyStats, Divergence, ReplicationConfig, Replicator,
    check_convergence,
};
use meridian_store::{EVENTS_PAGE_MAX, Store, SystemClock};
use meridian_test_support::{Backing, TestDatabase};
use meridian_tls::{MeshTls, Service};
use sqlx::{AnyConnection, Connection};
use support::proxy::{Mode, Proxy};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

/// Small buckets, so a few dozen events make several complete ones.
const BUCKET_EVENTS: u64 = 16;
const US: usize = 0;
const EU: usize = 1;
const APAC: usize = 2;

fn anti_entropy_config(interval: Duration) -> AntiEntropyConfig {
    let mut config = AntiEntropyConfig::new(interval);
    config.bucket_events = BUCKET_EVENTS;
    // Several pages per repair.
    config.fetch_events_max = 32;
    config.call_timeout = Duration::from_secs(5);
    config
}

fn postgres_available() -> bool {
    meridian_test_support::postgres_url().is_some()
}

// ---------------------------------------------------------------- harness

/// One region: its store, its replicator and anti-entropy, and the mesh
/// server that serves both.
struct Region {
    region: RegionId,
    store: Store,
    db: Option<TestDatabase>,
    addr: SocketAddr,
    replicator: Replicator,
    anti_entropy: AntiEntropy,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Region {
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    /// Starts the periodic anti-entropy task (the service runs from the start).
    fn start_anti_entropy(&mut self) {
        self.tasks
            .push(tokio::spawn(self.anti_entropy.clone().run(self.stopped())));
    }

    /// Stops the server, replication and anti-entropy; the store stays open
    /// for the test to read. The region is gone from the mesh.
    async fn stop(&mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            // Graceful shutdown waits for open connections; stop waiting
            // after a moment.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn stats(&self) -> AntiEntropyStats {
        self.anti_entropy.stats()
    }
}

struct Mesh {
    pki: Pki,
    regions: Vec<Region>,
    _proxies: Vec<Proxy>,
}

impl Mesh {
    /// The three regions of [`THREE`], replicating, each serving
    /// anti-entropy (its periodic task not started). With `cut`, us-east
    /// and apac-south reach each other only through proxies that refuse
    /// every connection, both ways: no stream, no anti-entropy call.
    async fn start(backing: Backing, cut: bool, interval: Duration) -> Mesh {
        let pki = Pki::new(&THREE);
        let ids: Vec<RegionId> = THREE.iter().map(|name| region(name)).collect();
        let mut listeners = Vec::new();
        for _ in THREE {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap())
            .collect();
        let mut peer_addr: BTreeMap<(usize, usize), String> = BTreeMap::new();
        for from in 0..THREE.len() {
            for to in (0..THREE.len()).filter(|to| *to != from) {
                peer_addr.insert((from, to), addrs[to].to_string());
            }
        }
        let mut proxies = Vec::new();
        if cut {
            for (from, to) in [(US, APAC), (APAC, US)] {
                let proxy = Proxy::start(addrs[to]).await;
                proxy.set_mode(Mode::Refuse);
                peer_addr.insert((from, to), proxy.addr.to_string());
                proxies.push(proxy);
            }
        }
        let mut regions = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (store, db) = open_store(backing, THREE[i]).await;
            let peers = (0..THREE.len())
                .filter(|j| *j != i)
                .map(|j| (ids[j].clone(), peer_addr[&(i, j)].clone()))
                .collect();
            let mut config = ReplicationConfig::new(ids[i].clone(), ids.clone(), peers);
            fast(&mut config);
            let tls = pki.tls(THREE[i], Service::Gateway);
            let replicator =
                Replicator::new(config, store.clone(), tls.clone(), Arc::new(SystemClock)).unwrap();
            let anti_entropy =
                AntiEntropy::new(&replicator, anti_entropy_config(interval)).unwrap();
            let (stop, _) = watch::channel(false);
            let mut region = Region {
                region: ids[i].clone(),
                store,
                db: Some(db),
                addr: addrs[i],
                replicator: replicator.clone(),
                anti_entropy: anti_entropy.clone(),
                stop,
                tasks: Vec::new(),
            };
            // Both services on one mutual-TLS port, as in a gateway.
            let server = tonic::transport::Server::builder()
                .add_service(replicator.service())
                .add_service(anti_entropy.service())
                .serve_with_incoming_shutdown(tls.incoming(listener), region.stopped());
            region.tasks.push(tokio::spawn(async move {
                let _ = server.await;
            }));
            region
                .tasks
                .push(tokio::spawn(replicator.run(region.stopped())));
            regions.push(region);
        }
        Mesh {
            pki,
            regions,
            _proxies: proxies,
        }
    }

    async fn shutdown(mut self) {
        for region in &mut self.regions {
            region.stop().await;
        }
        for region in &mut self.regions {
            region.store.close().await;
            if let Some(db) = region.db.take() {
                db.drop_now().await;
            }
        }
    }
}

/// `origin`'s whole log as `store` holds it.
async fn read_log(store: &Store, origin: &RegionId) -> Vec<EventEnvelope> {
    let mut log = Vec::new();
    loop {
        let after = log
            .last()
            .map_or(0, |event: &EventEnvelope| event.origin_seq);
        let page = store
            .events_after(origin, after, EVENTS_PAGE_MAX)
            .await
            .unwrap();
        if page.is_empty() {
            return log;
        }
        log.extend(page);
    }
}

/// Waits until each of `regions` has applied every other one's whole log.
async fn wait_caught_up(regions: &[&Region], what: &str) {
    wait_until(Duration::from_secs(15), what, || async {
        for origin in regions {
            let head = origin.store.local_head().await.unwrap();
            for replica in regions
                .iter()
                .filter(|replica| replica.region != origin.region)
            {
                if replica.store.cursor(&origin.region).await.unwrap() != head {
                    return false;
                }
            }
        }
        true
    })
    .await;
}

// ------------------------------------------------------------------ relay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_regions_events_are_relayed_by_the_region_that_has_them_sqlite() {
    relay(Backing::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_regions_events_are_relayed_by_the_region_that_has_them_postgres() {
    if postgres_available() {
        relay(Backing::Postgres).await;
    }
}

/// us-east (O) reaches eu-west (X) but never apac-south (Y). Its writes
/// are peer-durable on X; then O is gone for good. Anti-entropy brings Y
/// all of O's events from X, in pages, and X and Y converge, holding
/// exactly O's own log.
async fn relay(backing: Backing) {
    let mut mesh = Mesh::start(backing, true, Duration::from_millis(100)).await;
    let origin = mesh.regions[US].region.clone();

    // 100 events: 6 complete buckets and a tail, fetched in 4 pages.
    let mut written = write_burst(&mesh.regions[US].store, 0, 99, 8).await;
    let updated = written
        .iter()
        .find(|event| matches!(event.kind, EventKind::TicketCreated { .. }))
        .unwrap()
        .ticket_id;
    let record = mesh.regions[US]
        .store
        .get_ticket(updated)
        .await
        .unwrap()
        .unwrap();
    let (_, update) = mesh.regions[US]
        .store
        .update_ticket(updated, opened(record.ticket.owner.epoch), meta())
        .await
        .unwrap();
    written.push(update);
    let head = written.len() as u64;
    assert_eq!(head, 100);
    // The `peer` durability tier's promise: another region holds it all.
    let durable_at = mesh.regions[US]
        .replicator
        .wait_peer_durable(head, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(durable_at, mesh.regions[EU].region);
    wait_until(
        Duration::from_secs(15),
        "eu-west applied us-east's whole log",
        || async { mesh.regions[EU].store.cursor(&origin).await.unwrap() == head },
    )
    .await;
    assert_eq!(
        mesh.regions[APAC].store.cursor(&origin).await.unwrap(),
        0,
        "us-east ↔ apac-south is cut"
    );

    // eu-west and apac-south go on writing and replicating with each other.
    write_burst(&mesh.regions[EU].store, 1, 8, 4).await;
    write_burst(&mesh.regions[APAC].store, 2, 8, 4).await;
    wait_caught_up(
        &[&mesh.regions[EU], &mesh.regions[APAC]],
        "eu-west and apac-south have each other's logs",
    )
    .await;

    // us-east is lost for good.
    mesh.regions[US].stop().await;
    assert_eq!(mesh.regions[APAC].store.cursor(&origin).await.unwrap(), 0);

    mesh.regions[EU].start_anti_entropy();
    mesh.regions[APAC].start_anti_entropy();
    wait_until(
        Duration::from_secs(20),
        "apac-south holds us-east's whole log",
        || async { mesh.regions[APAC].store.cursor(&origin).await.unwrap() == head },
    )
    .await;

    let (eu, apac) = (&mesh.regions[EU], &mesh.regions[APAC]);
    let report = check_convergence(&[eu.store.clone(), apac.store.clone()])
        .await
        .unwrap();
    assert!(report.is_converged(), "{report}");
    // Every ticket us-east created (25) is compared too, as are eu-west's
    // and apac-south's (2 each).
    assert_eq!(report.tickets_checked, 29, "{report}");
    // Both hold exactly us-east's own log: the convergence check above
    // cannot see it, having no store of us-east.
    let own = read_log(&mesh.regions[US].store, &origin).await;
    assert_eq!(own.len() as u64, head);
    assert_eq!(read_log(&eu.store, &origin).await, own);
    assert_eq!(read_log(&apac.store, &origin).await, own);

    // Every one of them came through anti-entropy, none compared differently.
    let stats = apac.stats();
    assert_eq!(stats.repaired_events, head, "{stats:?}");
    assert_eq!(stats.divergent_buckets, 0, "{stats:?}");
    assert_eq!(eu.stats().repaired_events, 0, "{:?}", eu.stats());
    let applied = apac
        .replicator
        .status()
        .into_iter()
        .find(|peer| peer.region == origin)
        .unwrap()
        .applied_seq;
    assert_eq!(
        applied, head,
        "the replication status shows the repaired cursor"
    );
    // us-east cannot be asked: each round says so, and goes on with eu-west.
    wait_until(
        Duration::from_secs(10),
        "a round named unreachable us-east",
        || async {
            let stats = apac.stats();
            stats.rounds >= 1
                && stats
                    .last_error
                    .as_deref()
                    .is_some_and(|error| error.contains("us-east"))
        },
    )
    .await;
    assert!(apac.stats().last_run_at.is_some());
    logs()
        .wait_for_line(&[
            "anti-entropy applied missing events",
            "peer=eu-west",
            "origin=us-east",
            "events=100",
        ])
        .await;
    mesh.shutdown().await;
}

// ------------------------------------------------------------- divergence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_event_is_reported_by_every_region_and_left_alone_sqlite() {
    divergence(Backing::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_event_is_reported_by_every_region_and_left_alone_postgres() {
    if postgres_available() {
        divergence(Backing::Postgres).await;
    }
}

/// us-east writes 40 events (buckets 1..=16, 17..=32, tail 33..=40), all
/// replicated. Then one note's payload is changed in apac-south's database
/// behind the store's back. Each region that compares with apac-south
/// reports bucket 17..=32 of us-east's log, once, and nothing is rewritten.
async fn divergence(backing: Backing) {
    let mut mesh = Mesh::start(backing, false, Duration::from_millis(100)).await;
    let origin = mesh.regions[US].region.clone();
    let written = write_burst(&mesh.regions[US].store, 0, 40, 4).await;
    let tampered_seq = 20;
    assert!(matches!(
        written[tampered_seq as usize - 1].kind,
        EventKind::NoteAdded { .. }
    ));
    wait_caught_up(
        &mesh.regions.iter().collect::<Vec<_>>(),
        "every region has us-east's log",
    )
    .await;

    let url = mesh.regions[APAC].db.as_ref().unwrap().config().url;
    let mut raw = AnyConnection::connect(&url).await.unwrap();
    let done = sqlx::query(
        "UPDATE events SET payload = replace(payload, 'still on fire', 'put out') WHERE origin_region = $1 AND origin_seq = $2",
    )
    .bind(origin.as_str())
    .bind(tampered_seq as i64)
    .execute(&mut raw)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);

    for region in &mut mesh.regions {
        region.start_anti_entropy();
    }
    // apac-south differs from both others; each other differs only from it.
    let expected: [(usize, Vec<usize>); 3] =
        [(US, vec![APAC]), (EU, vec![APAC]), (APAC, vec![US, EU])];
    wait_until(
        Duration::from_secs(15),
        "every region reported the tampered bucket",
        || async {
            expected.iter().all(|(at, peers)| {
                mesh.regions[*at].stats().divergent_buckets >= peers.len() as u64
            })
        },
    )
    .await;
    // A few more rounds: the same difference is not counted again.
    let rounds: Vec<u64> = mesh
        .regions
        .iter()
        .map(|region| region.stats().rounds)
        .collect();
    wait_until(
        Duration::from_secs(15),
        "three more rounds everywhere",
        || async {
            mesh.regions
                .iter()
                .zip(&rounds)
                .all(|(region, before)| region.stats().rounds >= before + 3)
        },
    )
    .await;
    for (at, peers) in &expected {
        let stats = mesh.regions[*at].stats();
        let mut found: Vec<(RegionId, RegionId, u64, u64)> = stats
            .divergences
            .iter()
            .map(|d| (d.peer.clone(), d.origin.clone(), d.first_seq, d.last_seq))
            .collect();
        let mut wanted: Vec<(RegionId, RegionId, u64, u64)> = peers
            .iter()
            .map(|peer| (mesh.regions[*peer].region.clone(), origin.clone(), 17, 32))
            .collect();
        // In whatever order the peers answered.
        found.sort();
        wanted.sort();
        assert_eq!(found, wanted, "{}: {stats:?}", mesh.regions[*at].region);
        assert_eq!(stats.divergent_buckets, peers.len() as u64, "{stats:?}");
        assert_eq!(stats.repaired_events, 0, "{stats:?}");
        assert!(
            stats
                .divergences
                .iter()
                .all(|d| d.local_digest != d.peer_digest),
            "{stats:?}"
        );
    }
    // What eu-west sees of apac-south's bucket is what apac-south computed.
    let eu_view = mesh.regions[EU].stats().divergences[0].clone();
    let apac_own = mesh.regions[APAC]
        .stats()
        .divergences
        .iter()
        .find(|d| d.peer == mesh.regions[EU].region)
        .cloned()
        .unwrap();
    assert_eq!(
        (eu_view.peer_digest, eu_view.local_digest),
        (apac_own.local_digest, apac_own.peer_digest)
    );
    logs()
        .wait_for_line(&[
            "log digests differ",
            "peer=apac-south",
            "origin=us-east",
            "first_seq=17",
            "last_seq=32",
        ])
        .await;

    // Nothing was overwritten: apac-south still holds its (wrong) copy, and
    // the convergence check finds exactly that event.
    let copy = mesh.regions[APAC]
        .store
        .events_after(&origin, tampered_seq - 1, 1)
        .await
        .unwrap();
    match &copy[0].kind {
        EventKind::NoteAdded { note } => assert_eq!(note.body, "put out"),
        other => panic!("event {tampered_seq} is {other:?}"),
    }
    let report = check_convergence(
        &mesh
            .regions
            .iter()
            .map(|region| region.store.clone())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.problems,
        vec![Divergence::Differs {
            store: mesh.regions[APAC].region.clone(),
            origin: origin.clone(),
            seq: tampered_seq
        }],
        "{report}"
    );
    raw.close().await.unwrap();
    mesh.shutdown().await;
}

// ---------------------------------------------------------- who may call

/// Only gateways of the mesh's other regions are answered; a fetch names
/// what is wrong with it; a peer gets any origin's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateways_of_other_regions_may_compare_logs() {
    let mesh = Mesh::start(Backing::Sqlite, false, Duration::from_secs(3600)).await;
    write_burst(&mesh.regions[US].store, 0, 20, 4).await;
    wait_caught_up(
        &mesh.regions.iter().collect::<Vec<_>>(),
        "every region has us-east's log",
    )
    .await;
    let eu = &mesh.regions[EU];
    let client = |tls: MeshTls| {
        let addr = eu.addr.to_string();
        async move {
            let channel = tls.connect(&addr, gateway_id("eu-west")).await.unwrap();
            AntiEntropyServiceClient::new(channel)
        }
    };

    let mut router = client(mesh.pki.tls("us-east", Service::Router)).await;
    let status = router
        .log_summary(v1::LogSummaryRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut itself = client(mesh.pki.tls("eu-west", Service::Gateway)).await;
    let status = itself
        .fetch_log(v1::FetchLogRequest {
            origin: "us-east".into(),
            after_seq: 0,
            limit: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not a gateway of another region"),
        "{status:?}"
    );

    let mut peer = client(mesh.pki.tls("apac-south", Service::Gateway)).await;
    let summary = peer
        .log_summary(v1::LogSummaryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.region, "eu-west");
    assert_eq!(summary.bucket_events, BUCKET_EVENTS);
    /// An origin's name, head and bucket ranges.
    type Held = (String, u64, Vec<(u64, u64)>);
    let heads: Vec<Held> = summary
        .origins
        .iter()
        .map(|o| {
            (
                o.origin.clone(),
                o.max_seq,
                o.buckets
                    .iter()
                    .map(|b| (b.first_seq, b.last_seq))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        heads,
        vec![
            ("us-east".to_owned(), 20, vec![(1, 16), (17, 20)]),
            ("eu-west".to_owned(), 0, vec![]),
            ("apac-south".to_owned(), 0, vec![]),
        ]
    );
    // eu-west serves us-east's events: the relay.
    let fetched = peer
        .fetch_log(v1::FetchLogRequest {
            origin: "us-east".into(),
            after_seq: 15,
            limit: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.max_seq, 20);
    assert_eq!(
        fetched
            .events
            .iter()
            .map(|e| (e.origin_region.as_str(), e.origin_seq))
            .collect::<Vec<_>>(),
        [("us-east", 16), ("us-east", 17), ("us-east", 18)]
    );
    let past_head = peer
        .fetch_log(v1::FetchLogRequest {
            origin: "us-east".into(),
            after_seq: 20,
            limit: 0,
        })
        .await
        .unwrap();
    assert!(past_head.into_inner().events.is_empty());
    let status = peer
        .fetch_log(v1::FetchLogRequest {
            origin: "sa-east".into(),
            after_seq: 0,
            limit: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("origin: sa-east is not a region of this mesh"),
        "{status:?}"
    );
    let status = peer
        .fetch_log(v1::FetchLogRequest {
            origin: "US".into(),
            after_seq: 0,
            limit: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("origin:"), "{status:?}");
    mesh.shutdown().await;
}

// -------------------------------------------------------------- residency

/// A ticket pinned to us-east and apac-south, with us-east ↔ apac-south
/// cut. eu-west, outside the set, holds only the redacted copies of its
/// events (no subject, no note text), and its anti-entropy answers to
/// apac-south stop before them: apac-south stays short of them rather than
/// keep a redacted copy, and once the link heals holds the full events
/// from us-east. The digests of a full and a redacted log agree, and the
/// convergence check takes the redacted copy outside the set for the event
/// it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_redacted_copy_is_relayed_into_a_tickets_residency() {
    let mut mesh = Mesh::start(Backing::Sqlite, true, Duration::from_millis(100)).await;
    let origin = mesh.regions[US].region.clone();
    let us = mesh.regions[US].store.clone();
    // An unpinned ticket and three notes, the pinned ticket and its note,
    // then four more unpinned events.
    write_burst(&us, 0, 4, 2).await;
    let mut pinned = ticket(&origin, 0);
    pinned.residency = [origin.clone(), mesh.regions[APAC].region.clone()].into();
    us.create_ticket(pinned.clone(), meta()).await.unwrap();
    us.add_note(
        note(pinned.id, &origin, "passport number 123456789"),
        meta(),
    )
    .await
    .unwrap();
    write_burst(&us, 0, 4, 2).await;
    let head = us.local_head().await.unwrap();
    assert_eq!(head, 10);
    let eu = &mesh.regions[EU];
    wait_until(
        Duration::from_secs(15),
        "eu-west applied us-east's log",
        || async { eu.store.cursor(&origin).await.unwrap() == head },
    )
    .await;

    let eu_log = read_log(&eu.store, &origin).await;
    assert!(
        eu_log[4..6]
            .iter()
            .all(|e| meridian_core::residency::is_redacted(&e.kind)),
        "{:?}",
        &eu_log[4..6]
    );
    let dump = format!("{eu_log:?}");
    assert!(
        !dump.contains(&pinned.subject) && !dump.contains("passport"),
        "{dump}"
    );
    let copy = eu.store.get_ticket(pinned.id).await.unwrap().unwrap();
    assert_eq!(
        (
            copy.ticket.subject.as_str(),
            copy.ticket.body.as_str(),
            copy.ticket.customer.as_str()
        ),
        ("", "", "")
    );
    assert_eq!(
        (copy.ticket.owner.clone(), copy.ticket.residency.clone()),
        (pinned.owner.clone(), pinned.residency.clone())
    );
    assert_eq!(copy.notes.len(), 1);
    assert_eq!(
        (copy.notes[0].body.as_str(), copy.notes[0].author.as_str()),
        ("", "")
    );

    mesh.regions[EU].start_anti_entropy();
    mesh.regions[APAC].start_anti_entropy();
    let (eu, apac) = (&mesh.regions[EU], &mesh.regions[APAC]);
    wait_until(
        Duration::from_secs(15),
        "apac-south got the events before the pinned ticket",
        || async { apac.store.cursor(&origin).await.unwrap() == 4 },
    )
    .await;
    let rounds = apac.stats().rounds;
    wait_until(Duration::from_secs(15), "three more rounds", || async {
        apac.stats().rounds >= rounds + 3
    })
    .await;
    assert_eq!(
        apac.store.cursor(&origin).await.unwrap(),
        4,
        "eu-west relayed past a redacted copy"
    );
    assert!(apac.store.get_ticket(pinned.id).await.unwrap().is_none());

    // The link heals: us-east's stream brings the full events.
    for proxy in &mesh._proxies {
        proxy.set_mode(Mode::Forward);
    }
    wait_until(
        Duration::from_secs(30),
        "apac-south holds us-east's whole log",
        || async { apac.store.cursor(&origin).await.unwrap() == head },
    )
    .await;
    assert_eq!(
        read_log(&apac.store, &origin).await,
        read_log(&us, &origin).await
    );
    let full = apac.store.get_ticket(pinned.id).await.unwrap().unwrap();
    assert_eq!(full.ticket.subject, pinned.subject);
    assert_eq!(full.notes[0].body, "passport number 123456789");

    // eu-west (redacted) and apac-south (full) compare the same digests.
    let rounds = (eu.stats().rounds, apac.stats().rounds);
    wait_until(
        Duration::from_secs(15),
        "three more rounds on both",
        || async { eu.stats().rounds >= rounds.0 + 3 && apac.stats().rounds >= rounds.1 + 3 },
    )
    .await;
    assert_eq!(eu.stats().divergent_buckets, 0, "{:?}", eu.stats());
    assert_eq!(apac.stats().divergent_buckets, 0, "{:?}", apac.stats());
    let stores: Vec<Store> = mesh
        .regions
        .iter()
        .map(|region| region.store.clone())
        .collect();
    let report = check_convergence(&stores).await.unwrap();
    assert!(report.is_converged(), "{report}");

    // And the check still sees a redacted copy inside the set, or the text
    // outside it, as the divergence it is.
    let url = apac.db.as_ref().unwrap().config().url;
    let mut raw = AnyConnection::connect(&url).await.unwrap();
    let redacted_note = eu_log[5].kind.payload_json().unwrap();
    sqlx::query("UPDATE events SET payload = $1 WHERE origin_region = $2 AND origin_seq = 6")
        .bind(redacted_note)
        .bind(origin.as_str())
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    let report = check_convergence(&stores).await.unwrap();
    assert_eq!(
        report.problems,
        vec![Divergence::Differs {
            store: apac.region.clone(),
            origin: origin.clone(),
            seq: 6
        }],
        "{report}"
    );
    mesh.shutdown().await;
}
