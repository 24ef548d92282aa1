//! Anti-entropy as a gateway runs it: served on the mesh port, every
//! `[mesh] anti_entropy`. us-east and apac-south never reach each other
//! (every connection between them is refused, both ways). us-east's
//! tickets, acknowledged with `peer` durability, reach eu-west; then
//! us-east is gone for good, and apac-south gets them from eu-west.
//!
//! Its own small harness: the shared one in `common/` starts and stops the
//! three gateways together and connects every pair directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use meridian_core::{EventEnvelope, RegionId};
use meridian_gateway::{GatewayConfig, Listeners, MeshSettings, SystemClock};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_store::{EVENTS_PAGE_MAX, Store};
use meridian_test_support::{
    Backing, TestDatabase,
    proxy::{Mode, Proxy},
};
use meridian_tls::{DevPkiPlan, Service, TlsFiles, TrustDomain, Validity, write_dev_pki};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::Channel;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];
const US: usize = 0;
const EU: usize = 1;
const APAC: usize = 2;

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

struct Gateway {
    name: RegionId,
    public: SocketAddr,
    db: TestDatabase,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<meridian_gateway::Result<()>>>,
}

impl Gateway {
    async fn client(&self) -> TicketServiceClient<Channel> {
        let url = format!("http://{}", self.public);
        for _ in 0..250 {
            if let Ok(client) = TicketServiceClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway {} at {url} never accepted a connection", self.name);
    }

    async fn status(&self) -> v1::GetStatusResponse {
        self.client()
            .await
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// This gateway's applied cursor of `origin`'s log.
    async fn applied(&self, origin: &str) -> u64 {
        self.status()
            .await
            .peers
            .iter()
            .find(|peer| peer.region == origin)
            .unwrap()
            .applied_seq
    }

    async fn stop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the gateway stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// Polls `condition` every 20 ms until it holds; fails after `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {} ms waiting until {what}",
            timeout.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_log(store: &Store, origin: &RegionId) -> Vec<EventEnvelope> {
    let mut log: Vec<EventEnvelope> = Vec::new();
    loop {
        let after = log.last().map_or(0, |event| event.origin_seq);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_regions_tickets_reach_the_region_it_never_reached_sqlite() {
    relay(Backing::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_regions_tickets_reach_the_region_it_never_reached_postgres() {
    if meridian_test_support::postgres_url().is_some() {
        relay(Backing::Postgres).await;
    }
}

/// `backing` is apac-south's, the region that receives the relay; the
/// others run on SQLite.
async fn relay(backing: Backing) {
    let pki = tempfile::tempdir().unwrap();
    let names: Vec<RegionId> = REGIONS.iter().map(|name| region(name)).collect();
    let now = std::time::SystemTime::now();
    let plan = DevPkiPlan {
        trust_domain: TrustDomain::new("meridian.test").unwrap(),
        regions: names.clone(),
        services: vec![Service::Gateway],
        ca_validity: Validity::days_from(now, 30),
        cert_validity: Validity::days_from(now, 30),
        replace_ca: false,
    };
    write_dev_pki(pki.path(), &plan).unwrap();

    let mut bound = Vec::new();
    for _ in REGIONS {
        bound.push((
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ));
    }
    let mesh_addrs: Vec<String> = bound
        .iter()
        .map(|(_, mesh)| mesh.local_addr().unwrap().to_string())
        .collect();
    let mut proxies = BTreeMap::new();
    for (from, to) in [(US, APAC), (APAC, US)] {
        let proxy = Proxy::start(mesh_addrs[to].parse().unwrap()).await;
        proxy.set_mode(Mode::Refuse);
        proxies.insert((from, to), proxy);
    }

    let mut gateways = Vec::new();
    for (i, (public, mesh)) in bound.into_iter().enumerate() {
        let name = names[i].clone();
        let db = TestDatabase::new(if i == APAC { backing } else { Backing::Sqlite })
            .await
            .unwrap();
        let public_addr = public.local_addr().unwrap();
        let mut config = GatewayConfig::new(name.clone(), names.clone(), public_addr, db.config());
        let peers = (0..REGIONS.len())
            .filter(|j| *j != i)
            .map(|j| {
                let addr = proxies
                    .get(&(i, j))
                    .map_or_else(|| mesh_addrs[j].clone(), |proxy| proxy.addr.to_string());
                (names[j].clone(), addr)
            })
            .collect();
        config.mesh = Some(MeshSettings {
            listen: mesh.local_addr().unwrap(),
            tls: TlsFiles::dev(pki.path(), &name, Service::Gateway),
            peers,
            handoff_timeout: Duration::from_secs(10),
            peer_durability_tiers: vec![meridian_core::Tier::new("enterprise").unwrap()],
        });
        config.anti_entropy_interval = Duration::from_millis(250);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(meridian_gateway::run_listeners(
            config,
            Listeners {
                public,
                mesh: Some(mesh),
            },
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            Arc::new(SystemClock),
        ));
        gateways.push(Gateway {
            name,
            public: public_addr,
            db,
            stop,
            task: Some(task),
        });
    }

    wait_until(
        Duration::from_secs(15),
        "us-east streams to eu-west",
        || async {
            gateways[US]
                .status()
                .await
                .peers
                .iter()
                .any(|peer| peer.region == "eu-west" && peer.connected)
        },
    )
    .await;
    // Each creation is acknowledged only once eu-west has applied it.
    let mut us = gateways[US].client().await;
    let mut ids = Vec::new();
    let mut head = 0;
    for n in 0..12 {
        let request = v1::CreateTicketRequest {
            subject: format!("Billing export stuck #{n}"),
            customer: "acme".into(),
            tier: "enterprise".into(),
            ..Default::default()
        };
        let created = us.create_ticket(request).await.unwrap().into_inner();
        ids.push(created.ticket.unwrap().id);
        head = created.origin_seq;
    }
    assert_eq!(head, 12);
    assert_eq!(
        gateways[EU].applied("us-east").await,
        head,
        "peer durability: eu-west holds every acknowledged ticket"
    );
    let status = gateways[APAC].status().await;
    let us_seen_by_apac = status
        .peers
        .iter()
        .find(|peer| peer.region == "us-east")
        .unwrap();
    assert!(!us_seen_by_apac.connected, "us-east ↔ apac-south is cut");

    // us-east is lost for good.
    gateways[US].stop().await;

    wait_until(
        Duration::from_secs(20),
        "apac-south applied us-east's whole log",
        || async { gateways[APAC].applied("us-east").await == head },
    )
    .await;
    let mut apac = gateways[APAC].client().await;
    for id in &ids {
        let got = apac
            .get_ticket(v1::GetTicketRequest {
                ticket_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.ticket.unwrap().owner.unwrap().owner_region, "us-east");
    }

    // eu-west and apac-south converge, each holding exactly us-east's own log.
    let mut stores = Vec::new();
    for gateway in &gateways {
        stores.push(
            Store::open(&gateway.db.config(), &gateway.name)
                .await
                .unwrap(),
        );
    }
    let report = meridian_replication::check_convergence(&stores[EU..])
        .await
        .unwrap();
    assert!(report.is_converged(), "{report}");
    assert_eq!(report.tickets_checked, ids.len(), "{report}");
    let own = read_log(&stores[US], &names[US]).await;
    assert_eq!(own.len() as u64, head);
    assert_eq!(read_log(&stores[APAC], &names[US]).await, own);
    assert_eq!(read_log(&stores[EU], &names[US]).await, own);
    for store in stores {
        store.close().await;
    }

    for gateway in &mut gateways {
        gateway.stop().await;
    }
    for gateway in gateways {
        gateway.db.drop_now().await;
    }
}
