//! The three-region mesh harness shared by the gateway's mesh tests: real
//! SQLite files (PostgreSQL for one region on request), real mutual TLS
//! with a generated development CA, replication, a manual clock, and the
//! invariant checks every scenario ends with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use jiff::Timestamp;
use meridian_core::{EventKind, ManualClock, RegionId};
use meridian_gateway::{GatewayConfig, Listeners, MeshSettings, RulesSettings};
use meridian_proto::v1::{
    self, mesh_service_client::MeshServiceClient, ticket_service_client::TicketServiceClient,
};
use meridian_store::Store;
use meridian_test_support::{Backing, TestDatabase, proxy::Proxy};
use meridian_tls::{
    DevPkiPlan, MeshTls, PeerIdentity, Service, TlsFiles, TrustDomain, Validity, write_dev_pki,
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// How a test wants its mesh.
pub struct Options<'a> {
    /// Run this region on PostgreSQL.
    pub postgres_for: Option<&'a str>,
    /// The manual clock's start.
    pub at: &'a str,
    pub webhooks: Vec<String>,
    /// Route every gateway-to-gateway connection (replication streams and
    /// mesh calls) through a proxy of its own, one per dialling region and
    /// target, so a test can slow, cut or freeze one link.
    pub proxied_links: bool,
    /// Every gateway reports to these metrics (one `/metrics` for the
    /// mesh, as in `meridian up`), counting queues every 50 ms.
    pub metrics: Option<meridian_telemetry::Metrics>,
    /// Where every gateway's escalation and stranded-ticket alerts go.
    pub alerts: meridian_gateway::escalation::AlertSink,
    /// Every gateway checks bearer tokens with these settings.
    pub auth: Option<meridian_auth::AuthSettings>,
    /// A roster (TOML text) for each region named, written beside the PKI.
    pub rosters: Vec<(&'a str, String)>,
    /// With `auth`: the token the harness's own status calls carry.
    pub harness_token: Option<String>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            postgres_for: None,
            at: AFTERNOON_UTC,
            webhooks: Vec::new(),
            proxied_links: false,
            metrics: None,
            alerts: Default::default(),
            auth: None,
            rosters: Vec::new(),
            harness_token: None,
        }
    }
}

pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];
/// The trust domain of the mesh's development PKI.
pub const TRUST_DOMAIN: &str = "meridian.test";
/// us-east and eu-west are on shift, apac-south is not (example rules).
pub const AFTERNOON_UTC: &str = "2026-06-02T14:00:00Z";

pub struct Region {
    pub name: RegionId,
    pub url: String,
    pub db: TestDatabase,
    /// The gateway's own mesh (mutual TLS) listener, not a proxy.
    pub mesh_addr: std::net::SocketAddr,
}

pub struct Mesh {
    pub regions: Vec<Region>,
    pub clock: Arc<ManualClock>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<meridian_gateway::Result<()>>>,
    _pki: tempfile::TempDir,
    /// With `proxied_links`: the proxy each (dialling region, target) pair
    /// goes through.
    links: BTreeMap<(RegionId, RegionId), Proxy>,
    harness_token: Option<String>,
}

pub fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

/// The workspace's example rules, which every mesh runs.
pub fn example_rules() -> meridian_rules::Rules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
    meridian_rules::Rules::parse(
        "rules.example.toml",
        &std::fs::read_to_string(path).unwrap(),
    )
    .unwrap()
}

/// Moves a ticket to `status` through `client`'s region; the ticket after.
pub async fn set_status(
    client: &mut TicketServiceClient<Channel>,
    id: &str,
    status: v1::Status,
) -> v1::Ticket {
    client
        .update_ticket(v1::UpdateTicketRequest {
            ticket_id: id.into(),
            status: Some(status.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
}

/// A ticket with its notes and conflicts, as `client`'s region holds it.
pub async fn get_ticket(
    client: &mut TicketServiceClient<Channel>,
    id: &str,
) -> v1::GetTicketResponse {
    client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

impl Mesh {
    /// Starts three gateways.
    pub async fn start(options: Options<'_>) -> Mesh {
        let postgres_for = options.postgres_for;
        let pki = tempfile::tempdir().unwrap();
        let names: Vec<RegionId> = REGIONS.iter().map(|r| region(r)).collect();
        let now = std::time::SystemTime::now();
        let plan = DevPkiPlan {
            trust_domain: TrustDomain::new(TRUST_DOMAIN).unwrap(),
            regions: names.clone(),
            services: vec![Service::Gateway],
            ca_validity: Validity::days_from(now, 30),
            cert_validity: Validity::days_from(now, 30),
            replace_ca: false,
        };
        write_dev_pki(pki.path(), &plan).unwrap();
        let clock = Arc::new(ManualClock::new(options.at.parse::<Timestamp>().unwrap()));
        // The workspace's example rules, from this crate or from the
        // benchmark suite, which shares this harness.
        let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("deploy/rules.example.toml"))
            .find(|path| path.exists())
            .unwrap();

        let mut bound = Vec::new();
        for name in &names {
            let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.push((name.clone(), public, mesh));
        }
        let mesh_addrs: BTreeMap<RegionId, String> = bound
            .iter()
            .map(|(r, _, m)| (r.clone(), m.local_addr().unwrap().to_string()))
            .collect();
        let mut links = BTreeMap::new();
        if options.proxied_links {
            for from in &names {
                for to in names.iter().filter(|to| *to != from) {
                    links.insert(
                        (from.clone(), to.clone()),
                        Proxy::start(mesh_addrs[to].parse().unwrap()).await,
                    );
                }
            }
        }
        // Where `from` dials `to`: through its proxy when links are proxied.
        let peer_addr =
            |from: &RegionId, to: &RegionId| match links.get(&(from.clone(), to.clone())) {
                Some(proxy) => proxy.addr.to_string(),
                None => mesh_addrs[to].clone(),
            };

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut regions = Vec::new();
        let mut tasks = Vec::new();
        for (name, public, mesh) in bound {
            let backing = if postgres_for == Some(name.as_str()) {
                Backing::Postgres
            } else {
                Backing::Sqlite
            };
            let db = TestDatabase::new(backing).await.unwrap();
            let public_addr = public.local_addr().unwrap();
            let mesh_addr = mesh.local_addr().unwrap();
            let mut config =
                GatewayConfig::new(name.clone(), names.clone(), public_addr, db.config());
            let mut settings = RulesSettings::new(rules.clone());
            settings.shift_check_interval = Duration::from_millis(20);
            settings.sla_scan_interval = Duration::from_millis(20);
            settings.webhooks = options.webhooks.clone();
            settings.alerts = options.alerts.clone();
            settings.reload_interval = Duration::from_millis(50);
            if let Some((_, roster)) = options.rosters.iter().find(|(r, _)| *r == name.as_str()) {
                let path = pki.path().join(format!("roster.{name}.toml"));
                std::fs::write(&path, roster).unwrap();
                settings.roster = Some(path);
            }
            config.rules = Some(settings);
            config.auth = options.auth.clone();
            if let Some(metrics) = &options.metrics {
                config.metrics = Some(metrics.clone());
                config.telemetry.queue_scan_interval = Duration::from_millis(50);
            }
            config.mesh = Some(MeshSettings {
                listen: mesh.local_addr().unwrap(),
                tls: TlsFiles::dev(pki.path(), &name, Service::Gateway),
                peers: names
                    .iter()
                    .filter(|r| **r != name)
                    .map(|r| (r.clone(), peer_addr(&name, r)))
                    .collect(),
                handoff_timeout: Duration::from_secs(10),
                peer_durability_tiers: vec![meridian_core::Tier::new("enterprise").unwrap()],
            });
            let mut stopped = stopped.clone();
            let gateway_clock: Arc<dyn meridian_core::Clock> = clock.clone();
            tasks.push(tokio::spawn(meridian_gateway::run_listeners(
                config,
                Listeners {
                    public,
                    mesh: Some(mesh),
                },
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
                gateway_clock,
            )));
            regions.push(Region {
                name,
                url: format!("http://{public_addr}"),
                db,
                mesh_addr,
            });
        }
        let mesh = Mesh {
            regions,
            clock,
            stop,
            tasks,
            _pki: pki,
            links,
            harness_token: options.harness_token.clone(),
        };
        for r in &mesh.regions {
            mesh.wait_connected(r.name.as_str()).await;
        }
        mesh
    }

    /// The development PKI the gateways' mesh certificates come from
    /// (`ca.pem`, `ca-key.pem`, `<region>-gateway.pem`, …).
    pub fn pki_dir(&self) -> &Path {
        self._pki.path()
    }

    /// The certificate, key and CA bundle region `name`'s gateway reads
    /// (and reloads) for the mesh.
    pub fn tls_files(&self, name: &str) -> TlsFiles {
        TlsFiles::dev(self.pki_dir(), &region(name), Service::Gateway)
    }

    pub fn region(&self, name: &str) -> &Region {
        self.regions
            .iter()
            .find(|r| r.name.as_str() == name)
            .unwrap()
    }

    /// A client of `to`'s mesh port at `addr` (its listener, or a proxy in
    /// front of it) presenting `tls`'s certificate, which must prove `to`'s
    /// gateway identity; connects now.
    pub async fn mesh_client_with(
        &self,
        tls: &MeshTls,
        to: &str,
        addr: &str,
    ) -> MeshServiceClient<Channel> {
        let expected = PeerIdentity::new(
            TrustDomain::new(TRUST_DOMAIN).unwrap(),
            region(to),
            Service::Gateway,
        );
        MeshServiceClient::new(tls.connect(addr, expected).await.unwrap())
    }

    /// A client of `to`'s mesh port, straight to its listener, that speaks
    /// as `as_region`'s gateway (with its certificate from the PKI).
    pub async fn mesh_client(&self, as_region: &str, to: &str) -> MeshServiceClient<Channel> {
        let tls = MeshTls::load(self.tls_files(as_region)).unwrap();
        self.mesh_client_with(&tls, to, &self.region(to).mesh_addr.to_string())
            .await
    }

    /// The proxy `from`'s connections to `to` go through (`proxied_links`).
    pub fn link(&self, from: &str, to: &str) -> &Proxy {
        self.links
            .get(&(region(from), region(to)))
            .expect("the mesh was started with proxied_links")
    }

    /// Adds `delay` each way to every link between regions (`proxied_links`).
    pub fn set_link_delay(&self, delay: Duration) {
        assert!(
            !self.links.is_empty(),
            "the mesh was started without proxied_links"
        );
        for proxy in self.links.values() {
            proxy.set_delay(delay);
        }
    }

    pub async fn client(&self, name: &str) -> TicketServiceClient<Channel> {
        let url = &self
            .regions
            .iter()
            .find(|r| r.name.as_str() == name)
            .unwrap()
            .url;
        for _ in 0..200 {
            if let Ok(client) = TicketServiceClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway {name} at {url} never accepted a connection");
    }

    /// The region that owns ticket `id`, as `reader` sees it.
    pub async fn owner(&self, reader: &str, id: &str) -> String {
        let got = self
            .client(reader)
            .await
            .get_ticket(v1::GetTicketRequest {
                ticket_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        got.ticket.unwrap().owner.unwrap().owner_region
    }

    /// Until `reader` sees `region` own ticket `id` (at most 20 s).
    pub async fn wait_owner(&self, reader: &str, id: &str, region: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let owner = self.owner(reader, id).await;
            if owner == region {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never reached {region}: owned by {owner}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A status request, with the harness's token when the mesh checks them.
    fn status_request(&self) -> tonic::Request<v1::GetStatusRequest> {
        let mut request = tonic::Request::new(v1::GetStatusRequest {});
        if let Some(token) = &self.harness_token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    /// Until every replication stream of `name` is open.
    pub async fn wait_connected(&self, name: &str) {
        let mut client = self.client(name).await;
        for _ in 0..500 {
            let status = client
                .get_status(self.status_request())
                .await
                .unwrap()
                .into_inner();
            if status.peers.len() == 2 && status.peers.iter().all(|p| p.connected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{name}'s replication streams never all connected");
    }

    /// Until every region has applied every other region's whole log.
    pub async fn wait_quiet(&self) {
        for _ in 0..500 {
            let mut heads = BTreeMap::new();
            let mut applied = BTreeMap::new();
            for r in &self.regions {
                let status = self
                    .client(r.name.as_str())
                    .await
                    .get_status(self.status_request())
                    .await
                    .unwrap()
                    .into_inner();
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the mesh never quiesced");
    }

    /// Checks the invariants on every region's store, opened beside the
    /// running gateway.
    pub async fn check_invariants(&self) {
        self.wait_quiet().await;
        let mut stores = Vec::new();
        for r in &self.regions {
            stores.push(Store::open(&r.db.config(), &r.name).await.unwrap());
        }
        let report = meridian_replication::check_convergence(&stores)
            .await
            .unwrap();
        assert!(report.is_converged(), "regions diverge: {report:?}");
        // One writer per epoch: every owner-scoped event at an epoch was
        // written by the region that epoch encodes.
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

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
        for r in self.regions {
            r.db.drop_now().await;
        }
    }
}
