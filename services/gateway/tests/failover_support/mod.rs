//! The failover harness: three gateways (real SQLite files, real mutual TLS
//! with a generated development CA, real replication) and the router, all
//! sharing one coordinator: a real etcd member on loopback ports, or the
//! in-process coordinator. Every region reaches the coordinator and its
//! peers through links the test can cut, so a region can be partitioned
//! (or killed) and healed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub use meridian_test_support::proxy;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use meridian_coord::{
    Coordinator, EtcdConfig, EtcdCoordinator, Lease, LocalConfig, LocalCoordinator, RegionStatus,
    RegionView, Revision, Takeover,
};
use meridian_core::{Clock, EventKind, ManualClock, RegionId};
use meridian_gateway::{
    GatewayConfig, Listeners, MeshSettings,
    failover::{CoordinatorBackend, CoordinatorSettings},
};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_router::failover::{CoordinatorChoice, FailoverSettings};
use meridian_store::Store;
use meridian_test_support::{Backing, TestDatabase};
use meridian_tls::{DevPkiPlan, Service, TlsFiles, TrustDomain, Validity, write_dev_pki};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::Channel;

use self::proxy::{Mode, Proxy};

pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];
/// A Tuesday, 14:00 UTC: us-east and eu-west are on shift under the
/// example rules, apac-south is not; so eu-west succeeds us-east.
pub const AFTERNOON_UTC: &str = "2026-06-02T14:00:00Z";
/// etcd rounds a lease's ttl up to whole seconds; 2 s leaves a loaded
/// 2-core machine room to renew (every (ttl - margin) / 3 = 467 ms).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
pub const SAFETY_MARGIN: Duration = Duration::from_millis(600);
/// What invariant 4 allows on top of the lease's ttl: the coordinator
/// noticing the expiry (etcd's lessor looks every 500 ms, then revokes
/// through raft, then the watch reports it), the router recording the
/// takeover, and the successor writing the takeover events.
pub const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);
/// How long a test waits for anything else the mesh does in the background.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

/// The in-process variants keep us-east, the region every scenario fails,
/// on PostgreSQL whenever it is available: its fencing and its return (the
/// fold that takes back its late writes) run on both backends.
fn backing_for(kind: Kind, index: usize) -> Backing {
    if kind == Kind::Local && index == 0 && Backing::available().contains(&Backing::Postgres) {
        Backing::Postgres
    } else {
        Backing::Sqlite
    }
}

/// Which coordinator the mesh shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Local,
}

/// How one region reaches the coordinator, cuttable.
enum CoordinatorLink {
    /// The region's etcd client talks through this proxy.
    Etcd(Proxy),
    Local(Arc<Cuttable>),
}

pub struct RegionNode {
    pub name: RegionId,
    pub db: TestDatabase,
    pub url: String,
    /// The gateway's internal address (what the router and `failover_by_hand` call).
    pub mesh_addr: SocketAddr,
    /// This region's links to each peer's internal address: the region
    /// dials through them (replication, handoffs, learning a takeover).
    peer_links: BTreeMap<RegionId, Proxy>,
    coordinator: CoordinatorLink,
    running: Option<(
        watch::Sender<bool>,
        JoinHandle<meridian_gateway::Result<()>>,
    )>,
}

pub struct Mesh {
    pub kind: Kind,
    pub regions: Vec<RegionNode>,
    /// The test's own client of the coordinator.
    pub observer: Arc<dyn Coordinator>,
    pub pki: tempfile::TempDir,
    clock: Arc<ManualClock>,
    etcd: Option<Etcd>,
    local: Option<LocalCoordinator>,
    router: Option<(watch::Sender<bool>, JoinHandle<meridian_router::Result<()>>)>,
}

impl Mesh {
    /// Starts the coordinator, three gateways and (with `router`) the
    /// router, and waits until every gateway holds its lease and every
    /// replication stream is open. `None` when etcd is wanted but absent
    /// (after saying so; a failure under `MERIDIAN_REQUIRE_ALL=1`).
    pub async fn start(kind: Kind, router: bool) -> Option<Mesh> {
        // Logs of the failover machinery, shown for failing tests only
        // (RUST_LOG overrides).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "warn,meridian_router::failover=info,meridian_gateway::failover=info",
            )
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let (etcd, local, observer): (
            Option<Etcd>,
            Option<LocalCoordinator>,
            Arc<dyn Coordinator>,
        ) = match kind {
            Kind::Etcd => {
                let etcd = Etcd::start().await?;
                let observer = EtcdCoordinator::connect(etcd.config(etcd.url.clone()))
                    .await
                    .unwrap();
                (Some(etcd), None, Arc::new(observer))
            }
            Kind::Local => {
                // Leases run on real time: the gateways' manual clock only
                // drives the domain (HLC, SLA, shifts).
                let config = LocalConfig {
                    safety_margin: SAFETY_MARGIN,
                    tick: Duration::from_millis(20),
                };
                let local = LocalCoordinator::new(Arc::new(meridian_gateway::SystemClock), config);
                (None, Some(local.clone()), Arc::new(local))
            }
        };
        let pki = tempfile::tempdir().unwrap();
        let names: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
        let now = std::time::SystemTime::now();
        let plan = DevPkiPlan {
            trust_domain: TrustDomain::new("meridian.test").unwrap(),
            regions: names.clone(),
            services: vec![Service::Gateway, Service::Router],
            ca_validity: Validity::days_from(now, 30),
            cert_validity: Validity::days_from(now, 30),
            replace_ca: false,
        };
        write_dev_pki(pki.path(), &plan).unwrap();
        let clock = Arc::new(ManualClock::new(
            AFTERNOON_UTC.parse::<Timestamp>().unwrap(),
        ));

        // Every internal address first, so each region's links to its
        // peers can be made before any gateway starts.
        let mut mesh_listeners = Vec::new();
        for _ in &names {
            mesh_listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let mesh_addrs: Vec<SocketAddr> = mesh_listeners
            .iter()
            .map(|l| l.local_addr().unwrap())
            .collect();
        let mut regions = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let mut peer_links = BTreeMap::new();
            for (peer_index, peer) in names.iter().enumerate() {
                if peer_index != index {
                    peer_links.insert(peer.clone(), Proxy::start(mesh_addrs[peer_index]).await);
                }
            }
            let coordinator = match (&etcd, &local) {
                (Some(etcd), _) => CoordinatorLink::Etcd(Proxy::start(etcd.addr).await),
                (None, Some(local)) => {
                    CoordinatorLink::Local(Arc::new(Cuttable::new(local.clone(), name.clone())))
                }
                (None, None) => unreachable!(),
            };
            regions.push(RegionNode {
                name: name.clone(),
                db: TestDatabase::new(backing_for(kind, index)).await.unwrap(),
                url: String::new(),
                mesh_addr: mesh_addrs[index],
                peer_links,
                coordinator,
                running: None,
            });
        }
        let mut mesh = Mesh {
            kind,
            regions,
            observer,
            pki,
            clock,
            etcd,
            local,
            router: None,
        };
        for (index, listener) in mesh_listeners.into_iter().enumerate() {
            mesh.start_gateway_on(index, listener).await;
        }
        if router {
            mesh.start_router().await;
        }
        for name in REGIONS {
            mesh.wait_leased(name).await;
        }
        for name in REGIONS {
            mesh.wait_connected(name).await;
        }
        Some(mesh)
    }

    fn index(&self, name: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r.name.as_str() == name)
            .unwrap()
    }

    pub fn node(&self, name: &str) -> &RegionNode {
        &self.regions[self.index(name)]
    }

    fn gateway_config(&self, index: usize, public: SocketAddr, mesh: SocketAddr) -> GatewayConfig {
        let node = &self.regions[index];
        let names: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
        let mut config = GatewayConfig::new(node.name.clone(), names, public, node.db.config());
        config.mesh = Some(MeshSettings {
            listen: mesh,
            tls: TlsFiles::dev(self.pki.path(), &node.name, Service::Gateway),
            peers: node
                .peer_links
                .iter()
                .map(|(peer, link)| (peer.clone(), link.addr.to_string()))
                .collect(),
            handoff_timeout: Duration::from_secs(5),
            peer_durability_tiers: Vec::new(),
        });
        let backend = match (&node.coordinator, &self.etcd) {
            (CoordinatorLink::Etcd(proxy), Some(_)) => CoordinatorBackend::Etcd {
                endpoints: vec![format!("http://{}", proxy.addr)],
                key_prefix: None,
                safety_margin: SAFETY_MARGIN,
                rpc_timeout: Duration::from_secs(1),
            },
            (CoordinatorLink::Local(cuttable), _) => {
                let shared: Arc<dyn Coordinator> = cuttable.clone();
                CoordinatorSettings::shared(shared).backend
            }
            (CoordinatorLink::Etcd(_), None) => unreachable!(),
        };
        config.coordinator = Some(CoordinatorSettings {
            backend,
            lease_ttl: LEASE_TTL,
            catch_up_timeout: Duration::from_secs(5),
        });
        config
    }

    async fn start_gateway_on(&mut self, index: usize, mesh_listener: TcpListener) {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_addr = public.local_addr().unwrap();
        let config = self.gateway_config(index, public_addr, mesh_listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let task = tokio::spawn(meridian_gateway::run_listeners(
            config,
            Listeners {
                public,
                mesh: Some(mesh_listener),
            },
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            clock,
        ));
        let node = &mut self.regions[index];
        node.url = format!("http://{public_addr}");
        node.running = Some((stop, task));
    }

    /// Starts `name`'s gateway again on the same database and internal
    /// address (a restarted process).
    pub async fn restart_gateway(&mut self, name: &str) {
        let index = self.index(name);
        assert!(self.regions[index].running.is_none(), "{name} is running");
        let addr = self.regions[index].mesh_addr;
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(bound) => {
                    listener = Some(bound);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener
            .unwrap_or_else(|| panic!("cannot bind {name}'s internal address {addr} again"));
        self.start_gateway_on(index, listener).await;
    }

    /// Stops `name`'s gateway: its lease handle goes with it, so renewals
    /// stop and the lease expires on its own, as for a crashed process.
    pub async fn kill_gateway(&mut self, name: &str) {
        let index = self.index(name);
        let (stop, task) = self.regions[index].running.take().unwrap();
        stop.send(true).unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("gateway stops")
            .unwrap()
            .unwrap();
    }

    async fn start_router(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
        let public: Vec<(RegionId, String)> = self
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.url.clone()))
            .collect();
        let mut config =
            meridian_router::RouterConfig::new(listener.local_addr().unwrap(), rules, public)
                .unwrap();
        let gateways: BTreeMap<RegionId, String> = self
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.mesh_addr.to_string()))
            .collect();
        let tls = TlsFiles::dev(self.pki.path(), &region("eu-west"), Service::Router);
        let coordinator = match (&self.etcd, &self.local) {
            (Some(etcd), _) => CoordinatorChoice::Etcd {
                endpoints: vec![etcd.url.clone()],
                key_prefix: None,
                rpc_timeout: Duration::from_secs(1),
            },
            (None, Some(local)) => {
                let shared: Arc<dyn Coordinator> = Arc::new(local.clone());
                FailoverSettings::shared(shared, tls.clone(), BTreeMap::new()).coordinator
            }
            (None, None) => unreachable!(),
        };
        config.failover = Some(FailoverSettings {
            coordinator,
            tls,
            gateways,
            takeover_timeout: Duration::from_secs(10),
            takeover_grace: Duration::from_secs(2),
        });
        let (stop, mut stopped) = watch::channel(false);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let task = tokio::spawn(meridian_router::run_with_clock(
            config,
            listener,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            clock,
        ));
        self.router = Some((stop, task));
    }

    pub async fn client(&self, name: &str) -> TicketServiceClient<Channel> {
        let url = self.node(name).url.clone();
        for _ in 0..250 {
            if let Ok(client) = TicketServiceClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway {name} at {url} never accepted a connection");
    }

    pub async fn status(&self, name: &str) -> v1::GetStatusResponse {
        self.client(name)
            .await
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Until `name`'s gateway holds its lease (owner-scoped writes open).
    pub async fn wait_leased(&self, name: &str) -> Duration {
        let started = Instant::now();
        loop {
            let status = self.status(name).await;
            if !status.fenced {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{name} never leased: {}",
                status.fenced_reason
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Until every replication stream of `name` is open.
    pub async fn wait_connected(&self, name: &str) {
        let started = Instant::now();
        loop {
            let status = self.status(name).await;
            if status.peers.len() == 2 && status.peers.iter().all(|p| p.connected) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{name}'s replication streams never all connected: {:?}",
                status.peers
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Until every running region has applied every other region's whole
    /// log (all three must be running).
    pub async fn wait_quiet(&self) {
        let started = Instant::now();
        loop {
            let mut heads = BTreeMap::new();
            let mut applied = BTreeMap::new();
            for r in &self.regions {
                let status = self.status(r.name.as_str()).await;
                heads.insert(status.region.clone(), status.local_head);
                for p in status.peers {
                    applied.insert((status.region.clone(), p.region), p.applied_seq);
                }
            }
            if applied
                .iter()
                .all(|((_, origin), seq)| heads.get(origin) == Some(seq))
            {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the mesh never quiesced: heads {heads:?}, applied {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Until each of the regions `names` has applied the others' whole logs
    /// (for when a region is down).
    pub async fn wait_quiet_among(&self, names: &[&str]) {
        let started = Instant::now();
        loop {
            let mut heads = BTreeMap::new();
            let mut applied = BTreeMap::new();
            for name in names {
                let status = self.status(name).await;
                heads.insert(status.region.clone(), status.local_head);
                for p in status
                    .peers
                    .into_iter()
                    .filter(|p| names.contains(&p.region.as_str()))
                {
                    applied.insert((status.region.clone(), p.region), p.applied_seq);
                }
            }
            if applied
                .iter()
                .all(|((_, origin), seq)| heads.get(origin) == Some(seq))
            {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{names:?} never quiesced: heads {heads:?}, applied {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts `name` off the coordinator: its lease is no longer renewed
    /// (and it can neither read nor write there) until healed.
    pub fn cut_coordinator(&self, name: &str) {
        match &self.node(name).coordinator {
            CoordinatorLink::Etcd(proxy) => {
                proxy.set_mode(Mode::Refuse);
                proxy.cut();
            }
            CoordinatorLink::Local(cuttable) => cuttable.cut(),
        }
    }

    pub fn heal_coordinator(&self, name: &str) {
        match &self.node(name).coordinator {
            CoordinatorLink::Etcd(proxy) => proxy.set_mode(Mode::Forward),
            CoordinatorLink::Local(cuttable) => cuttable.heal(),
        }
    }

    /// Cuts every link `name` dials its peers over (replication included:
    /// us-east, first in the mesh, dials both others).
    pub fn cut_peers(&self, name: &str) {
        for link in self.node(name).peer_links.values() {
            link.set_mode(Mode::Refuse);
            link.cut();
        }
    }

    pub fn heal_peers(&self, name: &str) {
        for link in self.node(name).peer_links.values() {
            link.set_mode(Mode::Forward);
        }
    }

    pub async fn region_status(&self, name: &str) -> RegionStatus {
        self.observer.region_status(&region(name)).await.unwrap()
    }

    /// Opens every region's store beside its gateway.
    pub async fn stores(&self) -> Vec<Store> {
        let mut stores = Vec::new();
        for r in &self.regions {
            stores.push(Store::open(&r.db.config(), &r.name).await.unwrap());
        }
        stores
    }

    /// The invariants every scenario ends with: every event of every
    /// origin exactly once in every region and the same projection of
    /// every ticket everywhere (`meridian-replication`'s convergence
    /// check), except the `known` differences a scenario names; and one
    /// writer per epoch, in every region's copy of every log.
    pub async fn check_invariants(&self) {
        self.wait_quiet().await;
        let stores = self.stores().await;
        let report = meridian_replication::check_convergence(&stores)
            .await
            .unwrap();
        assert!(report.is_converged(), "regions diverge: {report}");
        for store in &stores {
            for origin in REGIONS {
                let events = store
                    .events_after(&region(origin), 0, 10_000)
                    .await
                    .unwrap();
                for e in events.iter().filter(|e| {
                    e.kind.is_owner_scoped() && !matches!(e.kind, EventKind::TicketCreated { .. })
                }) {
                    let index = REGIONS
                        .iter()
                        .position(|r| *r == e.origin_region.as_str())
                        .unwrap() as u16;
                    assert_eq!(
                        e.epoch.owner_index(),
                        index,
                        "{} wrote {} at epoch {}",
                        e.origin_region,
                        e.kind.name(),
                        e.epoch
                    );
                }
            }
        }
        for store in stores {
            store.close().await;
        }
    }

    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.router.take() {
            stop.send(true).unwrap();
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("router stops")
                .unwrap()
                .unwrap();
        }
        for node in &mut self.regions {
            if let Some((stop, task)) = node.running.take() {
                stop.send(true).unwrap();
                tokio::time::timeout(PATIENCE, task)
                    .await
                    .expect("gateway stops")
                    .unwrap()
                    .unwrap();
            }
        }
        for node in self.regions {
            node.db.drop_now().await;
        }
    }
}

/// The in-process coordinator as one region sees it, with a switch that
/// partitions that region from it: while cut, the region's lease is not
/// renewed and every call fails as a lost etcd connection would.
pub struct Cuttable {
    inner: LocalCoordinator,
    region: RegionId,
    cut: AtomicBool,
}

impl Cuttable {
    fn new(inner: LocalCoordinator, region: RegionId) -> Self {
        Cuttable {
            inner,
            region,
            cut: AtomicBool::new(false),
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.inner.kill(&self.region);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> meridian_coord::Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(meridian_coord::Error::Etcd {
                rpc: "partitioned",
                attempts: 1,
                status: Box::new(tonic::Status::unavailable(
                    "the test partitioned this region from the coordinator",
                )),
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Coordinator for Cuttable {
    async fn acquire_lease(
        &self,
        region: &RegionId,
        ttl: Duration,
    ) -> meridian_coord::Result<Lease> {
        self.check()?;
        self.inner.acquire_lease(region, ttl).await
    }

    async fn region_status(&self, region: &RegionId) -> meridian_coord::Result<RegionStatus> {
        self.check()?;
        self.inner.region_status(region).await
    }

    async fn watch_regions(&self) -> meridian_coord::Result<watch::Receiver<RegionView>> {
        self.check()?;
        self.inner.watch_regions().await
    }

    async fn record_takeover(
        &self,
        failed_region: &RegionId,
        successors: &[RegionId],
        expected_revision: Revision,
    ) -> meridian_coord::Result<Takeover> {
        self.check()?;
        self.inner
            .record_takeover(failed_region, successors, expected_revision)
            .await
    }

    async fn takeover_of(&self, region: &RegionId) -> meridian_coord::Result<Option<Takeover>> {
        self.check()?;
        self.inner.takeover_of(region).await
    }

    async fn acknowledge_takeover(
        &self,
        region: &RegionId,
        fencing_token: Revision,
    ) -> meridian_coord::Result<()> {
        self.check()?;
        self.inner.acknowledge_takeover(region, fencing_token).await
    }
}

/// One real etcd member on free loopback ports, killed on drop. Debian's
/// `etcd-server` (`/usr/bin/etcd`) or `MERIDIAN_ETCD_BIN`.
pub struct Etcd {
    pub url: String,
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// `None` (after a loud SKIPPED line) when etcd is not installed; a
    /// failure instead under `MERIDIAN_REQUIRE_ALL=1`.
    pub async fn start() -> Option<Etcd> {
        let binary = meridian_test_support::etcd_binary("failover tests on etcd")?;
        let mut last_failure = String::new();
        // A port picked as free can be taken before etcd binds it: retry.
        for _ in 0..3 {
            let mut etcd = Etcd::spawn(&binary);
            match etcd.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => return Some(etcd),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    fn spawn(binary: &Path) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        // A 50 ms heartbeat and 500 ms election timeout lower etcd's
        // minimum lease ttl to 1 s and keep expiry prompt.
        let child = Command::new(binary)
            .args([
                "--name",
                "m0",
                "--data-dir",
                &dir.path().join("m0").display().to_string(),
            ])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args([
                "--initial-cluster",
                &format!("m0={peer_url}"),
                "--initial-cluster-state",
                "new",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Etcd {
            url,
            addr: SocketAddr::from(([127, 0, 0, 1], client_port)),
            child,
            dir,
        }
    }

    fn config(&self, endpoint: String) -> EtcdConfig {
        EtcdConfig {
            safety_margin: SAFETY_MARGIN,
            rpc_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            retry_attempts_max: 6,
            retry_budget: Duration::from_secs(5),
            ..EtcdConfig::new([endpoint])
        }
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let config = EtcdConfig {
            retry_attempts_max: 1,
            ..self.config(self.url.clone())
        };
        let probe = EtcdCoordinator::connect(config)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if probe.region_status(&region("probe")).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("etcd exited with {exit}:\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not ready within {within:?}:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
