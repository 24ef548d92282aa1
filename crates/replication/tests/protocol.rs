//! The replication protocol seen from a hand-driven peer over real mutual
//! TLS: gaps answered by one resend and never skipped, resend requests
//! rewinding the shipper, and the peers the service refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod support;

use std::time::{Duration, SystemTime};

use meridian_core::{EventEnvelope, RegionId};
use meridian_proto::convert::event_to_proto;
use meridian_proto::replication::{
    ReplicationMessage, batch_to_proto, frame_from_proto, heartbeat_to_proto, hello_to_proto,
    resend_to_proto,
};
use meridian_proto::v1::{self, replication_service_client::ReplicationServiceClient};
use meridian_replication::check_convergence;
use meridian_test_support::Backing;
use meridian_tls::{
    MeshTls, PeerIdentity, Service, TlsFiles, TrustDomain, Validity, dev_ca, issue,
    write_atomically,
};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// A peer driven by the test: sends what the test says, and reads frames.
struct RawPeer {
    send: mpsc::Sender<v1::ReplicationFrame>,
    frames: Streaming<v1::ReplicationFrame>,
    /// Events the node shipped to us, in arrival order.
    shipped: Vec<EventEnvelope>,
}

/// Opens a stream to `addr` as the holder of `tls`, sending `hello` first.
async fn open_raw(
    tls: &MeshTls,
    addr: &str,
    server: PeerIdentity,
    hello: v1::ReplicationFrame,
) -> Result<RawPeer, Status> {
    let channel = tls
        .connect(addr, server)
        .await
        .map_err(|e| Status::unavailable(format!("{e}: {:?}", std::error::Error::source(&e))))?;
    let mut client = ReplicationServiceClient::new(channel);
    let (send, requests) = mpsc::channel(16);
    send.send(hello).await.unwrap();
    let response = client.replicate(ReceiverStream::new(requests)).await?;
    Ok(RawPeer {
        send,
        frames: response.into_inner(),
        shipped: Vec::new(),
    })
}

impl RawPeer {
    async fn next(&mut self) -> ReplicationMessage {
        let frame = tokio::time::timeout(Duration::from_secs(5), self.frames.message())
            .await
            .expect("a frame within 5 s")
            .expect("the stream is healthy")
            .expect("the stream is open");
        frame_from_proto(frame).expect("the node sends valid frames")
    }

    /// The next ack or resend; heartbeats are skipped and batches kept.
    async fn next_control(&mut self) -> ReplicationMessage {
        loop {
            match self.next().await {
                ReplicationMessage::Heartbeat { .. } => {}
                ReplicationMessage::Batch(events) => self.shipped.extend(events),
                other => return other,
            }
        }
    }

    /// Reads until the node has shipped events up to `seq`.
    async fn shipped_up_to(&mut self, seq: u64) {
        while self
            .shipped
            .last()
            .is_none_or(|event| event.origin_seq < seq)
        {
            match self.next().await {
                ReplicationMessage::Batch(events) => self.shipped.extend(events),
                ReplicationMessage::Heartbeat { .. } | ReplicationMessage::Ack { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn send_events(&self, events: &[EventEnvelope]) {
        self.send
            .send(batch_to_proto(events.iter().map(event_to_proto).collect()))
            .await
            .unwrap();
    }
}

/// eu-west serving replication; a us-east store (no replicator of its own)
/// whose log the test ships by hand.
struct Fixture {
    mesh: Mesh,
    us_store: meridian_store::Store,
    _us_db: meridian_test_support::TestDatabase,
}

impl Fixture {
    async fn new() -> Fixture {
        let mut spec = MeshSpec::new(Backing::Sqlite, &["us-east", "eu-west"]);
        spec.start = false;
        let mut mesh = Mesh::start(spec).await;
        mesh.nodes[1].start().await;
        let (us_store, us_db) = open_store(Backing::Sqlite, "us-east").await;
        Fixture {
            mesh,
            us_store,
            _us_db: us_db,
        }
    }

    fn eu_addr(&self) -> String {
        self.mesh.nodes[1].addr.to_string()
    }

    async fn open_as_us(&self, cursor: u64) -> RawPeer {
        let tls = self.mesh.pki.tls("us-east", Service::Gateway);
        let head = self.us_store.local_head().await.unwrap();
        open_raw(
            &tls,
            &self.eu_addr(),
            gateway_id("eu-west"),
            hello_to_proto(&region("us-east"), cursor, head),
        )
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_answered_with_one_resend_and_nothing_is_skipped() {
    let fixture = Fixture::new().await;
    let us = region("us-east");
    let log = write_burst(&fixture.us_store, 0, 8, 1).await;
    let eu_store = fixture.mesh.nodes[1].store.clone();
    let mut peer = fixture.open_as_us(0).await;
    match peer.next().await {
        ReplicationMessage::Hello { region, cursor, .. } => {
            assert_eq!((region.as_str(), cursor), ("eu-west", 0))
        }
        other => panic!("the node's first frame must be its hello, not {other:?}"),
    }

    peer.send_events(&log[0..3]).await;
    assert_eq!(
        peer.next_control().await,
        ReplicationMessage::Ack { applied_seq: 3 }
    );
    // A batch with a hole (4 is missing), then a stale one behind it: one
    // resend request, for 4, and nothing applied past the hole.
    peer.send_events(&log[4..6]).await;
    peer.send_events(&log[6..7]).await;
    assert_eq!(
        peer.next_control().await,
        ReplicationMessage::Resend { from_seq: 4 }
    );
    assert_eq!(eu_store.cursor(&us).await.unwrap(), 3);
    assert_eq!(
        eu_store.events_after(&us, 0, 100).await.unwrap().len(),
        3,
        "nothing past the hole"
    );
    // The resend: applied, acknowledged, and no second resend before it.
    peer.send_events(&log[3..8]).await;
    assert_eq!(
        peer.next_control().await,
        ReplicationMessage::Ack { applied_seq: 8 }
    );
    assert_eq!(eu_store.events_after(&us, 0, 100).await.unwrap(), log);
    // Idempotent: the same events again change nothing.
    peer.send_events(&log[2..8]).await;
    assert_eq!(
        peer.next_control().await,
        ReplicationMessage::Ack { applied_seq: 8 }
    );
    assert_eq!(eu_store.events_after(&us, 0, 100).await.unwrap(), log);

    // A reconnect resumes from the durable cursor.
    drop(peer);
    let mut again = fixture.open_as_us(0).await;
    match again.next().await {
        ReplicationMessage::Hello { cursor, .. } => {
            assert_eq!(cursor, 8, "the hello carries the durable cursor")
        }
        other => panic!("{other:?}"),
    }
    let report = check_convergence(&[fixture.us_store.clone(), eu_store.clone()])
        .await
        .unwrap();
    assert!(report.is_converged(), "{report}");
    fixture.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_request_rewinds_the_shipper() {
    let fixture = Fixture::new().await;
    let eu_log = write_burst(&fixture.mesh.nodes[1].store, 1, 6, 1).await;
    let mut peer = fixture.open_as_us(0).await;
    assert!(matches!(
        peer.next().await,
        ReplicationMessage::Hello { head_seq: 6, .. }
    ));
    peer.shipped_up_to(6).await;
    assert_eq!(
        peer.shipped, eu_log,
        "after the hello, its log from our cursor"
    );
    // Ask again from 3: the node ships 3..=6 again, nothing before 3.
    peer.shipped.clear();
    peer.send.send(resend_to_proto(3)).await.unwrap();
    peer.shipped_up_to(6).await;
    assert_eq!(peer.shipped, eu_log[2..]);
    // Live events follow, in order.
    let more = write_burst(&fixture.mesh.nodes[1].store, 1, 4, 1).await;
    peer.shipped.clear();
    peer.shipped_up_to(10).await;
    assert_eq!(peer.shipped, more);
    // Our heartbeat shows in the node's status.
    peer.send
        .send(heartbeat_to_proto(42, jiff::Timestamp::now()))
        .await
        .unwrap();
    let eu = fixture.mesh.nodes[1].replicator().clone();
    wait_until(
        Duration::from_secs(5),
        "the node records our heartbeat",
        || async {
            eu.status().iter().any(|status| {
                status.region.as_str() == "us-east"
                    && status.peer_head == Some(42)
                    && status.connected
            })
        },
    )
    .await;
    fixture.mesh.shutdown().await;
}

// ------------------------------------------------------------ refusals

/// The status a refused stream ends with: at the call, or as the first
/// message.
async fn refusal(tls: &MeshTls, addr: &str, hello: v1::ReplicationFrame) -> Status {
    match open_raw(tls, addr, gateway_id("eu-west"), hello).await {
        Err(status) => status,
        Ok(mut peer) => match tokio::time::timeout(Duration::from_secs(5), peer.frames.message())
            .await
            .unwrap()
        {
            Err(status) => status,
            Ok(frame) => panic!("accepted: first frame {frame:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateways_speaking_for_their_own_region_are_accepted() {
    let fixture = Fixture::new().await;
    let addr = fixture.eu_addr();
    let pki = &fixture.mesh.pki;
    let us_gateway = pki.tls("us-east", Service::Gateway);

    // A us-east gateway claiming to be apac-south.
    let status = refusal(
        &us_gateway,
        &addr,
        hello_to_proto(&region("apac-south"), 0, 0),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("may not speak for region apac-south"),
        "{status:?}"
    );
    logs()
        .wait_for_line(&["call refused", "region/us-east/gateway", "apac-south"])
        .await;

    // The router, even for its own region.
    let router = pki.tls("us-east", Service::Router);
    let status = refusal(&router, &addr, hello_to_proto(&region("us-east"), 0, 0)).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("accepts only gateway"),
        "{status:?}"
    );
    logs()
        .wait_for_line(&["call refused", "region/us-east/router"])
        .await;

    // A region replicating with itself is no peer.
    let eu_gateway = pki.tls("eu-west", Service::Gateway);
    let status = refusal(&eu_gateway, &addr, hello_to_proto(&region("eu-west"), 0, 0)).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not a peer region"), "{status:?}");

    // Anything but a hello first.
    let status = refusal(&us_gateway, &addr, resend_to_proto(1)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("the first frame must be hello"),
        "{status:?}"
    );

    // A gateway certificate from another CA (the client trusts both CAs, so
    // it is the server that refuses): no stream at all.
    let rogue_ca = dev_ca(
        &TrustDomain::new(TRUST_DOMAIN).unwrap(),
        Validity::days_from(SystemTime::now(), 30),
    )
    .unwrap();
    let rogue = issue(
        &rogue_ca,
        &gateway_id("us-east"),
        Validity::days_from(SystemTime::now(), 30),
    )
    .unwrap();
    let dir = pki.dir.path();
    let files = TlsFiles {
        cert: dir.join("rogue.pem"),
        key: dir.join("rogue-key.pem"),
        ca: dir.join("rogue-ca.pem"),
    };
    write_atomically(&files.cert, rogue.cert_pem.as_bytes(), 0o644).unwrap();
    write_atomically(&files.key, rogue.key_pem.as_bytes(), 0o600).unwrap();
    write_atomically(
        &files.ca,
        format!("{}{}", pki.ca_pem(), rogue_ca.cert_pem()).as_bytes(),
        0o644,
    )
    .unwrap();
    let rogue_tls = MeshTls::load(files).unwrap();
    let status = refusal(&rogue_tls, &addr, hello_to_proto(&region("us-east"), 0, 0)).await;
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    logs()
        .wait_for_line(&["mtls handshake refused", &format!("local_addr={addr}")])
        .await;

    // Nothing of any of them reached the store.
    let eu_store = &fixture.mesh.nodes[1].store;
    for origin in ["us-east", "apac-south", "eu-west"] {
        assert_eq!(
            eu_store
                .cursor(&RegionId::new(origin).unwrap())
                .await
                .unwrap(),
            0
        );
    }
    fixture.mesh.shutdown().await;
}
