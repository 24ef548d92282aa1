//! The replication tests' harness: a development PKI in a temporary
//! directory, regions with real stores (SQLite files, or PostgreSQL schemas
//! when `DATABASE_URL` is set) served over real mutual TLS on loopback,
//! proxies between them, fixtures and waits.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub use meridian_test_support::proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use jiff::Timestamp;
use meridian_core::{
    Clock, Epoch, EventEnvelope, HandoffNote, HlcTimestamp, Note, NoteId, Ownership, Priority,
    RegionId, Skill, SlaDeadlines, Status, Ticket, TicketChanges, TicketId, Tier,
};
use meridian_replication::{ReplicationConfig, Replicator, check_convergence};
use meridian_store::{Store, Synchronous, WriteMeta};
use meridian_test_support::{Backing, TestDatabase};
use meridian_tls::{
    DevPkiPlan, MeshTls, PeerIdentity, Service, TlsFiles, TrustDomain, Validity, write_dev_pki,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use proxy::Proxy;

pub const TRUST_DOMAIN: &str = "meridian.test";

pub fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

// ------------------------------------------------------------------- pki

pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(regions: &[&str]) -> Pki {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let plan = DevPkiPlan {
            trust_domain: TrustDomain::new(TRUST_DOMAIN).unwrap(),
            regions: regions.iter().map(|r| region(r)).collect(),
            services: Service::ALL.to_vec(),
            ca_validity: Validity::days_from(now, 365),
            cert_validity: Validity::days_from(now, 30),
            replace_ca: false,
        };
        write_dev_pki(dir.path(), &plan).unwrap();
        Pki { dir }
    }

    pub fn files(&self, region_name: &str, service: Service) -> TlsFiles {
        TlsFiles::dev(self.dir.path(), &region(region_name), service)
    }

    pub fn tls(&self, region_name: &str, service: Service) -> MeshTls {
        MeshTls::load(self.files(region_name, service)).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap()
    }
}

pub fn gateway_id(region_name: &str) -> PeerIdentity {
    PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region(region_name),
        Service::Gateway,
    )
}

// ----------------------------------------------------------------- stores

pub async fn open_store(backing: Backing, region_name: &str) -> (Store, TestDatabase) {
    let db = TestDatabase::new(backing)
        .await
        .expect("database for the backing");
    let mut config = db.config();
    // Durable against a crash of the process, which is all these tests
    // exercise; FULL would make every commit an fsync.
    config.sqlite_synchronous = Synchronous::Normal;
    let store = Store::open(&config, &region(region_name)).await.unwrap();
    (store, db)
}

// ------------------------------------------------------------------ nodes

/// Test timings: fast heartbeats and reconnects.
pub fn fast(config: &mut ReplicationConfig) {
    config.heartbeat_interval = Duration::from_millis(50);
    config.peer_silence_max = Duration::from_millis(1_000);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(250);
    config.connect_timeout = Duration::from_secs(2);
}

/// One region: its store and TLS material, and (while running) its
/// replicator and internal server.
pub struct Node {
    pub name: &'static str,
    pub region: RegionId,
    pub store: Store,
    pub tls: MeshTls,
    /// Its internal listener's address (the same across restarts).
    pub addr: SocketAddr,
    pub config: ReplicationConfig,
    pub clock: Arc<dyn Clock>,
    pub replicator: Option<Replicator>,
    running: Option<Running>,
    db: Option<TestDatabase>,
}

struct Running {
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    run: JoinHandle<()>,
}

impl Node {
    pub fn replicator(&self) -> &Replicator {
        self.replicator.as_ref().expect("node is running")
    }

    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "{} is already running", self.name);
        let listener = bind(self.addr).await;
        let replicator = Replicator::new(
            self.config.clone(),
            self.store.clone(),
            self.tls.clone(),
            self.clock.clone(),
        )
        .unwrap();
        let (stop, stopped) = watch::channel(false);
        let incoming = self.tls.incoming(listener);
        let service = replicator.service();
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = server_stop.wait_for(|stop| *stop).await;
                })
                .await;
        });
        let mut run_stop = stopped;
        let run = tokio::spawn(replicator.clone().run(async move {
            let _ = run_stop.wait_for(|stop| *stop).await;
        }));
        self.replicator = Some(replicator);
        self.running = Some(Running { stop, server, run });
    }

    /// Stops replication and the internal server; the store stays open.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), running.run)
            .await
            .expect("replication stops in time")
            .unwrap();
        // Graceful shutdown waits for open streams, which end with the
        // replicator; give it a moment, then stop waiting.
        let abort = running.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), running.server)
            .await
            .is_err()
        {
            abort.abort();
        }
        self.replicator = None;
    }

    pub fn running(&self) -> bool {
        self.running.is_some()
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("cannot bind {addr} again");
}

/// Regions on loopback. Of each pair the region listed first dials; a pair
/// may go through a [`Proxy`].
pub struct Mesh {
    pub pki: Pki,
    pub nodes: Vec<Node>,
    /// `(dialler index, acceptor index)` → the proxy between them.
    pub proxies: BTreeMap<(usize, usize), Proxy>,
}

pub struct MeshSpec {
    pub backing: Backing,
    pub regions: Vec<&'static str>,
    /// Pairs `(dialler, acceptor)` (indexes, dialler first) that go through a proxy.
    pub proxied: Vec<(usize, usize)>,
    pub tune: fn(&mut ReplicationConfig),
    pub clock: Arc<dyn Clock>,
    /// Start replication at once (else call `Node::start`).
    pub start: bool,
}

impl MeshSpec {
    pub fn new(backing: Backing, regions: &[&'static str]) -> Self {
        MeshSpec {
            backing,
            regions: regions.to_vec(),
            proxied: Vec::new(),
            tune: fast,
            clock: Arc::new(meridian_store::SystemClock),
            start: true,
        }
    }
}

pub const THREE: [&str; 3] = ["us-east", "eu-west", "apac-south"];

impl Mesh {
    pub async fn start(spec: MeshSpec) -> Mesh {
        let pki = Pki::new(&spec.regions);
        let region_ids: Vec<RegionId> = spec.regions.iter().map(|r| region(r)).collect();
        // Bind every listener first, so each region knows its peers' addresses.
        let mut addrs = Vec::new();
        for _ in &spec.regions {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
        }
        let mut proxies = BTreeMap::new();
        for &(dialler, acceptor) in &spec.proxied {
            assert!(dialler < acceptor, "the region listed first dials");
            proxies.insert((dialler, acceptor), Proxy::start(addrs[acceptor]).await);
        }
        let mut nodes = Vec::new();
        for (i, name) in spec.regions.iter().enumerate() {
            let (store, db) = open_store(spec.backing, name).await;
            let mut peers = BTreeMap::new();
            for (j, peer) in region_ids.iter().enumerate() {
                if j != i {
                    let addr = proxies
                        .get(&(i, j))
                        .map_or(addrs[j], |proxy: &Proxy| proxy.addr);
                    peers.insert(peer.clone(), addr.to_string());
                }
            }
            let mut config =
                ReplicationConfig::new(region_ids[i].clone(), region_ids.clone(), peers);
            (spec.tune)(&mut config);
            nodes.push(Node {
                name,
                region: region_ids[i].clone(),
                store,
                tls: pki.tls(name, Service::Gateway),
                addr: addrs[i],
                config,
                clock: spec.clock.clone(),
                replicator: None,
                running: None,
                db: Some(db),
            });
        }
        let mut mesh = Mesh {
            pki,
            nodes,
            proxies,
        };
        if spec.start {
            for node in &mut mesh.nodes {
                node.start().await;
            }
        }
        mesh
    }

    pub fn stores(&self) -> Vec<Store> {
        self.nodes.iter().map(|node| node.store.clone()).collect()
    }

    pub fn proxy(&self, dialler: usize, acceptor: usize) -> &Proxy {
        &self.proxies[&(dialler, acceptor)]
    }

    /// Waits until every region has applied every other region's whole log.
    pub async fn wait_caught_up(&self, timeout: Duration) {
        let stores = self.stores();
        wait_until(
            timeout,
            "every region applied every other region's log",
            || caught_up(&stores),
        )
        .await;
    }

    /// Checks invariants 2 and 3 across all regions, and that each origin's
    /// log has `expected` events (when given).
    pub async fn assert_converged(&self, expected: Option<&BTreeMap<RegionId, u64>>) {
        let report = check_convergence(&self.stores()).await.unwrap();
        assert!(report.is_converged(), "{report}");
        if let Some(expected) = expected {
            assert_eq!(&report.heads, expected, "{report}");
        }
    }

    pub async fn shutdown(mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
        for node in &mut self.nodes {
            node.store.close().await;
            if let Some(db) = node.db.take() {
                db.drop_now().await;
            }
        }
    }
}

/// Whether every store has applied every other store's whole log.
pub async fn caught_up(stores: &[Store]) -> bool {
    for origin in stores {
        let Ok(head) = origin.local_head().await else {
            return false;
        };
        for replica in stores
            .iter()
            .filter(|s| s.local_region() != origin.local_region())
        {
            if replica.cursor(origin.local_region()).await.ok() != Some(head) {
                return false;
            }
        }
    }
    true
}

/// Polls `condition` every 20 ms until it holds; fails the test after
/// `timeout`, saying what was awaited.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {} ms waiting until {what}",
            timeout.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --------------------------------------------------------------- fixtures

static NEXT: AtomicU64 = AtomicU64::new(1);

fn unique() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn random_bytes(tag: u8) -> [u8; 10] {
    let n = unique();
    let mut random = [tag; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    random
}

pub fn now_ms() -> u64 {
    u64::try_from(Timestamp::now().as_millisecond()).unwrap()
}

pub fn meta() -> WriteMeta {
    meta_at(now_ms())
}

/// Write metadata at an HLC time of `millis` (made unique by its counter).
pub fn meta_at(millis: u64) -> WriteMeta {
    WriteMeta {
        hlc_time: HlcTimestamp::new(millis, (unique() % 60_000) as u16),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        at: Timestamp::from_millisecond(i64::try_from(millis).unwrap()).unwrap(),
        actor: None,
    }
}

/// A new ticket owned by `owner`, the region at `index` in the mesh.
pub fn ticket(owner: &RegionId, index: u16) -> Ticket {
    let at = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    Ticket {
        id: TicketId::new_v7(at, random_bytes(1)),
        subject: format!("Printer on fire #{}", unique()),
        body: "It is on fire.\nSend help — ünïcode too.".into(),
        customer: "acme".into(),
        tier: Tier::new("standard").unwrap(),
        skills: BTreeSet::from([Skill::new("printers").unwrap()]),
        language: "en".into(),
        residency: BTreeSet::new(),
        status: Status::New,
        assignee: None,
        priority: Priority::Normal,
        owner: Ownership {
            owner_region: owner.clone(),
            epoch: Epoch::initial(index),
        },
        handoff_to: None,
        sla: SlaDeadlines::default(),
        created_at: at,
        updated_at: at,
    }
}

pub fn note(ticket_id: TicketId, region: &RegionId, body: &str) -> Note {
    let at = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    Note {
        id: NoteId::new_v7(at, random_bytes(2)),
        ticket_id,
        region: region.clone(),
        author: "ana".into(),
        body: body.into(),
        created_at: at,
        auto: false,
        visibility: meridian_core::Visibility::Internal,
    }
}

pub fn handoff_note() -> HandoffNote {
    HandoffNote {
        current_status: Status::Open,
        last_action: "restarted the sync job".into(),
        next_action: "confirm the import finished".into(),
        deadline: None,
        text: "customer is in Lisbon".into(),
        author: "ana".into(),
        auto: false,
    }
}

pub fn opened(epoch: Epoch) -> TicketChanges {
    TicketChanges {
        epoch,
        status: Some(Status::Open),
        assignee: Some(Some("bo".into())),
        ..TicketChanges::default()
    }
}

/// Writes `n` events into `store`'s own log, `concurrency` at a time: a
/// quarter ticket creations, the rest notes on those tickets. Returns the
/// events in the order they committed.
pub async fn write_burst(
    store: &Store,
    index: u16,
    n: usize,
    concurrency: usize,
) -> Vec<EventEnvelope> {
    let region = store.local_region().clone();
    let tickets: Vec<Ticket> = (0..n.div_ceil(4)).map(|_| ticket(&region, index)).collect();
    let mut events: Vec<EventEnvelope> = futures::stream::iter(tickets.clone())
        .map(|t| async { store.create_ticket(t, meta()).await.unwrap() })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let notes = n - tickets.len();
    let noted: Vec<EventEnvelope> = futures::stream::iter(0..notes)
        .map(|i| {
            let ticket_id = tickets[i % tickets.len()].id;
            let region = region.clone();
            async move {
                store
                    .add_note(note(ticket_id, &region, "still on fire"), meta())
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    events.extend(noted);
    events.sort_by_key(|event| event.origin_seq);
    events
}

/// Every region's log head, by region.
pub async fn heads(stores: &[Store]) -> BTreeMap<RegionId, u64> {
    let mut heads = BTreeMap::new();
    for store in stores {
        heads.insert(
            store.local_region().clone(),
            store.local_head().await.unwrap(),
        );
    }
    heads
}

// ------------------------------------------------------------------- logs

/// Every log line of the test binary, in memory: tests look for refusals
/// that only they can cause (their own ports, regions or reasons).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // REPLICATION_TEST_LOG=FILE copies every line there, for a look
        // after a failure.
        if let Ok(path) = std::env::var("REPLICATION_TEST_LOG")
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = file.write_all(buf);
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

pub fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let filter = tracing_subscriber::EnvFilter::new("info,meridian_replication=debug");
        let _ = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_env_filter(filter)
            .try_init();
        logs
    })
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (up to five seconds) for a line containing every needle.
    pub async fn wait_for_line(&self, needles: &[&str]) -> String {
        for _ in 0..250 {
            if let Some(line) = self
                .text()
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line with {needles:?}");
    }
}
