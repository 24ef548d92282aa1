//! A small mesh on loopback for the router's black-box tests: three real
//! gateways (`meridian_gateway::run`, SQLite in a temporary directory) and
//! the router (`meridian_router::run_with_clock`) with a manual clock and
//! short intervals.

// Fixtures: a failure should stop the test loudly. Each test binary
// (router.rs, idempotency.rs) uses part of the harness.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{ManualClock, RegionId};
use meridian_gateway::GatewayConfig;
use meridian_proto::v1::router_service_client::RouterServiceClient;
use meridian_proto::v1::ticket_service_client::TicketServiceClient;
use meridian_proto::v1::{self, FilterReason};
use meridian_router::RouterConfig;
use meridian_store::StoreConfig;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const REGIONS: [&str; 3] = ["east", "west", "south"];

/// A Tuesday noon (UTC): east and west are on shift, east preferred.
pub const NOON: &str = "2026-06-02T12:00:00Z";
/// The same Tuesday at 22:00: only south is on shift.
pub const NIGHT: &str = "2026-06-02T22:00:00Z";

pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(1_000);
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(50);
/// How long a test waits for something the router does in the background.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Rules with every region in UTC so the instants above read plainly.
pub fn rules_text(version: &str) -> String {
    format!(
        r#"
version = "{version}"
overlap_minutes = 30

[routing]
out_of_hours = "next_on_shift"

[[regions]]
id = "east"
index = 0
time_zone = "UTC"
skills = ["billing", "general"]
capacity = 100
preference = 60

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "08:00"
end = "16:00"
queue_owner = "east-day-lead"

[[regions]]
id = "west"
index = 1
time_zone = "UTC"
skills = ["billing", "general"]
capacity = 100
preference = 50

[[regions.shifts]]
name = "long-day"
days = ["mon-sun"]
start = "08:00"
end = "20:00"
queue_owner = "west-day-lead"

[[regions]]
id = "south"
index = 2
time_zone = "UTC"
skills = ["billing", "general"]
capacity = 100
preference = 40

[[regions.shifts]]
name = "night"
days = ["mon-sun"]
start = "20:00"
end = "08:00"
queue_owner = "south-night-lead"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480

[residency.west-only]
regions = ["west"]
"#
    )
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Replaces a file the way deploy tools do: write aside, then rename, so
/// the router never reads half a file.
pub fn replace_file(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

pub struct Gateway {
    pub region: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<meridian_gateway::Result<()>>>,
}

impl Gateway {
    pub async fn client(&self) -> TicketServiceClient<Channel> {
        TicketServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops the gateway and waits until its port is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("gateway did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

pub struct Mesh {
    _dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub gateways: Vec<Gateway>,
    pub rules_path: PathBuf,
    pub router_addr: SocketAddr,
    router_stop: Option<oneshot::Sender<()>>,
    router_task: Option<JoinHandle<meridian_router::Result<()>>>,
    /// With [`Mesh::start_proxied`]: the proxy the router reaches that
    /// region's gateway through.
    pub proxy: Option<meridian_test_support::proxy::Proxy>,
}

impl Mesh {
    /// Starts three gateways and a router at `at`, and waits until the
    /// router has heard from every gateway.
    pub async fn start(at: &str) -> Mesh {
        Self::start_with(at, None).await
    }

    /// [`Mesh::start`], with the router reaching `region`'s gateway
    /// through a proxy ([`Mesh::proxy`]) a test can slow down.
    pub async fn start_proxied(at: &str, region: &str) -> Mesh {
        Self::start_with(at, Some(region)).await
    }

    async fn start_with(at: &str, proxied: Option<&str>) -> Mesh {
        // Logs show up only for failing tests (the harness captures them).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let regions: Vec<RegionId> = REGIONS.iter().map(|r| RegionId::new(*r).unwrap()).collect();
        let mut gateways = Vec::new();
        for region in &regions {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let store = StoreConfig::sqlite_file(&dir.path().join(format!("{region}.db")));
            let config = GatewayConfig::new(region.clone(), regions.clone(), addr, store);
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(meridian_gateway::run(config, listener, async {
                let _ = stopped.await;
            }));
            gateways.push(Gateway {
                region: region.to_string(),
                addr,
                stop: Some(stop),
                task: Some(task),
            });
        }

        let rules_path = dir.path().join("rules.toml");
        std::fs::write(&rules_path, rules_text("t1")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router_addr = listener.local_addr().unwrap();
        let mut proxy = None;
        let mut endpoints = BTreeMap::new();
        for g in &gateways {
            let mut addr = g.addr;
            if proxied == Some(g.region.as_str()) {
                let started = meridian_test_support::proxy::Proxy::start(g.addr).await;
                addr = started.addr;
                proxy = Some(started);
            }
            endpoints.insert(
                RegionId::new(g.region.as_str()).unwrap(),
                format!("http://{addr}"),
            );
        }
        let mut config = RouterConfig::new(router_addr, &rules_path, endpoints).unwrap();
        config.rules_reload_interval = RELOAD_INTERVAL;
        config.health.probe_interval = PROBE_INTERVAL;
        // The probe deadline is also the HTTP/2 keepalive timeout of the
        // router's gateway channels: a proxied mesh slows a link past
        // 500 ms, and must not lose the connection to keepalive.
        config.health.probe_deadline = if proxied.is_some() {
            Duration::from_millis(2_000)
        } else {
            Duration::from_millis(500)
        };
        config.health.timeout = HEALTH_TIMEOUT;
        config.limits.forward_timeout = Duration::from_millis(1_000);
        let clock = Arc::new(ManualClock::new(ts(at)));
        let (router_stop, stopped) = oneshot::channel::<()>();
        let router_task = tokio::spawn(meridian_router::run_with_clock(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            clock.clone(),
        ));
        let mesh = Mesh {
            _dir: dir,
            clock,
            gateways,
            rules_path,
            router_addr,
            router_stop: Some(router_stop),
            router_task: Some(router_task),
            proxy,
        };
        mesh.wait_until_all_healthy().await;
        mesh
    }

    pub async fn router(&self) -> RouterServiceClient<Channel> {
        RouterServiceClient::connect(format!("http://{}", self.router_addr))
            .await
            .unwrap()
    }

    pub fn gateway(&mut self, region: &str) -> &mut Gateway {
        self.gateways
            .iter_mut()
            .find(|g| g.region == region)
            .unwrap()
    }

    /// Polls Explain until no region is down or unheard of.
    pub async fn wait_until_all_healthy(&self) {
        let router = self.router().await;
        eventually("every gateway healthy", || {
            let mut router = router.clone();
            async move {
                let decision = explain(&mut router, attributes()).await.decision.unwrap();
                let all = decision.candidates.iter().all(|c| {
                    !matches!(
                        c.filtered(),
                        FilterReason::Down | FilterReason::NoHealthReport
                    )
                });
                all.then_some(())
            }
        })
        .await;
    }

    /// Stops the router (checking it stops cleanly), then the gateways.
    pub async fn stop(mut self) {
        if let Some(stop) = self.router_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.router_task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("router did not stop")
                .unwrap()
                .unwrap();
        }
        for gateway in &mut self.gateways {
            gateway.stop().await;
        }
    }
}

/// Plain attributes every region can take.
pub fn attributes() -> v1::TicketAttributes {
    v1::TicketAttributes {
        tier: "standard".into(),
        skills: vec!["billing".into()],
        ..Default::default()
    }
}

pub fn create_request(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "the invoice total is wrong".into(),
        customer: "acme".into(),
        tier: "standard".into(),
        skills: vec!["billing".into()],
        priority: v1::Priority::High.into(),
        ..Default::default()
    }
}

pub async fn route(
    router: &mut RouterServiceClient<Channel>,
    ticket: v1::TicketAttributes,
) -> v1::RouteResponse {
    router
        .route(v1::RouteRequest {
            ticket: Some(ticket),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn explain(
    router: &mut RouterServiceClient<Channel>,
    ticket: v1::TicketAttributes,
) -> v1::ExplainResponse {
    router
        .explain(v1::ExplainRequest {
            ticket: Some(ticket),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn active(router: &mut RouterServiceClient<Channel>) -> v1::ActiveRegionsResponse {
    router
        .active_regions(v1::ActiveRegionsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Polls `check` until it gives a value, failing the test after
/// [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn candidate<'d>(decision: &'d v1::RoutingDecision, region: &str) -> &'d v1::RouteCandidate {
    decision
        .candidates
        .iter()
        .find(|c| c.region == region)
        .unwrap()
}
