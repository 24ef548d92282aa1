//! Harnesses that run one conformance suite against both coordinators, and
//! real etcd members on loopback ports for the etcd side.
//!
//! etcd comes from Debian's `etcd-server` package (`/usr/bin/etcd`), or from
//! `MERIDIAN_ETCD_BIN`. Without it the etcd tests print a loud SKIPPED line;
//! with `MERIDIAN_REQUIRE_ALL=1` they fail instead.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use meridian_coord::{
    Coordinator, EtcdConfig, EtcdCoordinator, Lease, LeaseState, LocalConfig, LocalCoordinator,
    RegionStatus,
};
use meridian_core::{Clock, ManualClock, RegionId};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

pub fn region(name: &str) -> RegionId {
    RegionId::new(name).expect("valid region name")
}

/// What the conformance suite needs from a backend.
#[allow(async_fn_in_trait)]
pub trait Harness {
    /// The coordinator under test (a router, say).
    fn coordinator(&self) -> &dyn Coordinator;
    /// A second, independent client of the same store (another router).
    fn peer(&self) -> &dyn Coordinator;
    /// The ttl the suite asks for, and the margin the coordinators fence by.
    fn ttl(&self) -> Duration;
    fn safety_margin(&self) -> Duration;
    /// How long after a lease's ttl the store may take to report it expired.
    fn expiry_slack(&self) -> Duration;
    /// Time on the coordinator's clock since the harness started.
    fn elapsed(&self) -> Duration;
    /// Lets `duration` of the coordinator's time pass.
    async fn pass(&self, duration: Duration);
    /// Kills the lease holder: its keep-alive stops, nothing is revoked.
    fn kill(&self, lease: &Lease);
}

/// The in-process coordinator on a manual clock, advanced in small steps.
pub struct LocalHarness {
    clock: Arc<ManualClock>,
    start: Timestamp,
    coordinator: LocalCoordinator,
    peer: LocalCoordinator,
}

impl LocalHarness {
    const STEP: Duration = Duration::from_millis(10);

    pub fn new() -> Self {
        let start = Timestamp::from_second(1_800_000_000).expect("valid timestamp");
        let clock = Arc::new(ManualClock::new(start));
        let config = LocalConfig {
            safety_margin: Duration::from_millis(300),
            tick: Duration::from_millis(5),
        };
        let coordinator = LocalCoordinator::new(clock.clone(), config);
        let peer = coordinator.clone();
        LocalHarness {
            clock,
            start,
            coordinator,
            peer,
        }
    }
}

impl Harness for LocalHarness {
    fn coordinator(&self) -> &dyn Coordinator {
        &self.coordinator
    }

    fn peer(&self) -> &dyn Coordinator {
        &self.peer
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn safety_margin(&self) -> Duration {
        Duration::from_millis(300)
    }

    fn expiry_slack(&self) -> Duration {
        Self::STEP
    }

    fn elapsed(&self) -> Duration {
        Duration::try_from(self.clock.now().duration_since(self.start)).unwrap_or_default()
    }

    async fn pass(&self, duration: Duration) {
        let mut left = duration;
        while !left.is_zero() {
            let step = left.min(Self::STEP);
            self.clock
                .advance(SignedDuration::try_from(step).expect("small step"));
            self.coordinator.evaluate();
            tokio::task::yield_now().await;
            left -= step;
        }
    }

    fn kill(&self, lease: &Lease) {
        assert!(
            self.coordinator.kill(lease.region()),
            "region {} holds no lease to kill",
            lease.region()
        );
    }
}

/// An etcd coordinator (and a second one, for a second router) against a
/// single-member etcd of its own.
pub struct EtcdHarness {
    pub cluster: EtcdCluster,
    started: Instant,
    coordinator: EtcdCoordinator,
    peer: EtcdCoordinator,
}

impl EtcdHarness {
    /// `None` (after saying so) when etcd is not installed.
    pub async fn start() -> Option<Self> {
        let cluster = EtcdCluster::start(1).await?;
        let coordinator = EtcdCoordinator::connect(etcd_config(&cluster))
            .await
            .expect("connect to etcd");
        let peer = EtcdCoordinator::connect(etcd_config(&cluster))
            .await
            .expect("connect to etcd");
        Some(EtcdHarness {
            cluster,
            started: Instant::now(),
            coordinator,
            peer,
        })
    }
}

/// Test settings: 1 s leases (the members' minimum, see [`EtcdCluster`]) with
/// a 300 ms margin, and short deadlines.
pub fn etcd_config(cluster: &EtcdCluster) -> EtcdConfig {
    EtcdConfig {
        safety_margin: Duration::from_millis(300),
        rpc_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        retry_attempts_max: 6,
        retry_budget: Duration::from_secs(5),
        ..EtcdConfig::new(cluster.endpoints())
    }
}

impl Harness for EtcdHarness {
    fn coordinator(&self) -> &dyn Coordinator {
        &self.coordinator
    }

    fn peer(&self) -> &dyn Coordinator {
        &self.peer
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn safety_margin(&self) -> Duration {
        Duration::from_millis(300)
    }

    /// etcd's lessor looks for expired leases every 500 ms, then revokes them
    /// through raft; the watch event follows. A loaded 2-core machine adds
    /// scheduling delay on top.
    fn expiry_slack(&self) -> Duration {
        Duration::from_millis(1_500)
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    async fn pass(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn kill(&self, lease: &Lease) {
        lease.stop_renewing();
    }
}

/// Records every state a lease publishes, for checks on its whole history.
pub struct StateLog {
    states: Arc<std::sync::Mutex<Vec<LeaseState>>>,
    task: JoinHandle<()>,
}

impl StateLog {
    pub fn follow(lease: &Lease) -> Self {
        let mut receiver: watch::Receiver<LeaseState> = lease.subscribe();
        let states = Arc::new(std::sync::Mutex::new(vec![*receiver.borrow_and_update()]));
        let sink = states.clone();
        let task = tokio::spawn(async move {
            while receiver.changed().await.is_ok() {
                let state = *receiver.borrow_and_update();
                sink.lock().expect("log lock").push(state);
            }
        });
        StateLog { states, task }
    }

    pub fn states(&self) -> Vec<LeaseState> {
        self.states.lock().expect("log lock").clone()
    }
}

impl Drop for StateLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `region`'s status, letting harness time pass, until `done` holds
/// or `within` has passed; returns the status and when it was seen.
pub async fn wait_for_status(
    harness: &impl Harness,
    region: &RegionId,
    within: Duration,
    done: impl Fn(&RegionStatus) -> bool,
) -> (RegionStatus, Duration) {
    let deadline = harness.elapsed() + within;
    loop {
        let status = harness
            .coordinator()
            .region_status(region)
            .await
            .expect("region status");
        if done(&status) {
            return (status, harness.elapsed());
        }
        assert!(
            harness.elapsed() < deadline,
            "region {region} did not reach the expected state within {within:?}: {status:?}"
        );
        harness.pass(Duration::from_millis(20)).await;
    }
}

/// Real etcd members on free loopback ports, each with a data directory in
/// one temporary directory; every member is killed when this is dropped.
///
/// Members run with a 50 ms heartbeat and a 500 ms election timeout, which
/// lowers etcd's minimum lease ttl (1.5 election timeouts, rounded up to a
/// second) from 2 s to 1 s and keeps failover quick.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_url: String,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each answers. `None` when etcd
    /// is not installed.
    pub async fn start(size: usize) -> Option<EtcdCluster> {
        let binary = meridian_test_support::etcd_binary("etcd tests")?;
        let mut last_failure = String::new();
        // A port picked as free can be taken before etcd binds it; retry.
        for _ in 0..3 {
            let mut cluster = EtcdCluster::spawn(&binary, size);
            match cluster.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => return Some(cluster),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    fn spawn(binary: &Path, size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports = free_ports(2 * size);
        let token = format!("meridian-test-{}", ports[0]);
        let names: Vec<String> = (0..size).map(|index| format!("m{index}")).collect();
        let peer_urls: Vec<String> = (0..size)
            .map(|index| format!("http://127.0.0.1:{}", ports[2 * index + 1]))
            .collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_urls)
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(size);
        for index in 0..size {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * index]);
            let log = std::fs::File::create(dir.path().join(format!("{}.log", names[index])))
                .expect("etcd log file");
            let child = Command::new(binary)
                .args(["--name", &names[index]])
                .args([
                    "--data-dir",
                    &dir.path().join(&names[index]).display().to_string(),
                ])
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_urls[index],
                    "--initial-advertise-peer-urls",
                    &peer_urls[index],
                ])
                .args([
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-token",
                    &token,
                ])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            members.push(Member {
                name: names[index].clone(),
                client_url,
                child: Some(child),
            });
        }
        EtcdCluster { members, dir }
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let probe = region("probe");
        for index in 0..self.members.len() {
            let config = EtcdConfig {
                rpc_timeout: Duration::from_millis(500),
                retry_attempts_max: 1,
                ..EtcdConfig::new([self.members[index].client_url.clone()])
            };
            let coordinator = EtcdCoordinator::connect(config)
                .await
                .map_err(|err| err.to_string())?;
            loop {
                if coordinator.region_status(&probe).await.is_ok() {
                    break;
                }
                let exited = self.members[index]
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                let name = &self.members[index].name;
                if let Some(exit) = exited {
                    return Err(format!(
                        "member {name} exited with {exit}:\n{}",
                        self.log_tail(index)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "member {name} not ready within {within:?}:\n{}",
                        self.log_tail(index)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    fn log_tail(&self, index: usize) -> String {
        let log = std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[index].name)),
        )
        .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.client_url.clone())
            .collect()
    }

    /// Kills member `index` at once (SIGKILL), as a crashed machine.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

fn free_ports(count: usize) -> Vec<u16> {
    // Hold every listener until all are picked so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect()
}
