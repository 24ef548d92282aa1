//! One seeded run: the hosts, the workload, the faults, healing, and the
//! check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use meridian_core::{NewTicket, NoteId, Priority, RegionId, Status, TicketId, TicketPatch, Tier};
use meridian_replication::{AntiEntropy, AntiEntropyConfig, ReplicationConfig, Replicator};
use meridian_tls::TrustDomain;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::service::interceptor::InterceptedService;

use crate::check::{Acked, Report, check};
use crate::model::{ModelLog, RegionDb, SharedDb, lock, sim_now};
use crate::net::{SimTransport, identify, incoming};
use crate::rng::Rng;

/// Where replication and anti-entropy listen on each region host.
const MESH_PORT: u16 = 7100;
/// Where the router host's coordinator takes lease renewals.
const LEASE_PORT: u16 = 7200;
const ROUTER: &str = "router";
/// A region's lease lapses this long after its last renewal reached the
/// coordinator; the router then records a takeover.
const LEASE_TTL: Duration = Duration::from_millis(1_000);
/// A region stops owner-scoped writes this long after it *sent* its last
/// successful renewal: before the coordinator can let the lease lapse.
const LEASE_SAFE: Duration = Duration::from_millis(700);
const LEASE_RENEW: Duration = Duration::from_millis(150);
const LEASE_CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// How often a region accepts offers made to it and carries out takeovers
/// the router assigned it, and how often the router looks at leases.
const DUTY_INTERVAL: Duration = Duration::from_millis(50);
/// A shift: the on-shift region gets new tickets, and at its end hands its
/// open tickets to the next region.
const SHIFT: Duration = Duration::from_millis(1_500);
/// The simulated clock's start (2025-06-15T12:00:00Z).
const START_MS: i64 = 1_750_000_000_000;

/// What to run for a seed.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Simulated time of workload and faults.
    pub work: Duration,
    /// The most simulated time healing may take to converge.
    pub quiesce_max: Duration,
    /// Print each fault and coordinator decision as it happens.
    pub verbose: bool,
    /// Add every region's log lengths to the trace every 10 simulated ms:
    /// two runs of a seed that differ then differ near where it started.
    pub probe: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            work: Duration::from_secs(5),
            quiesce_max: Duration::from_secs(30),
            verbose: false,
            probe: false,
        }
    }
}

/// Tokio task ids come from one process-wide counter, and a runtime drops
/// its tasks shard by shard, a task's shard being its id modulo the shard
/// count (4 on a current-thread runtime). A crashed or restarted host's
/// tasks drop their sockets in that order, each drop sends a FIN or RST,
/// and each segment draws its latency from the simulation's one random
/// stream: so where the counter stood when a run began decided what
/// happened after the first crash. Every run starts at an id that is a
/// multiple of [`TASK_ID_ALIGN`], which makes the drop order, like
/// everything else, a function of the seed (within one run, one thread
/// spawns every task).
fn align_task_ids() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        for _ in 0..TASK_ID_ALIGN {
            let id: u64 = tokio::spawn(async {}).id().to_string().parse().map_err(|e| format!("tokio task id: {e}"))?;
            if (id + 1).is_multiple_of(TASK_ID_ALIGN) {
                return Ok(());
            }
        }
        Err(format!("tokio task ids did not reach a multiple of {TASK_ID_ALIGN}: is another thread spawning tasks?"))
    })
}

/// A multiple of every shard count tokio uses for a current-thread runtime.
const TASK_ID_ALIGN: u64 = 64;

/// What a seed did and what the checker found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    /// Every fault and coordinator decision, with its simulated time.
    pub trace: Vec<String>,
    /// The faults alone, with their simulated times: a function of the
    /// seed only.
    pub fault_log: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Local writes acknowledged, and refused (not owner, lease lost,
    /// host down: the answers a client would get).
    pub writes_acked: u64,
    pub writes_refused: u64,
    pub takeovers: u64,
    /// Tickets taken over by a successor after the primary: pinned tickets
    /// whose residency excludes the primary.
    pub taken_by_later_successors: u64,
    pub report: Report,
    /// Whether the logs converged before `quiesce_max` ran out.
    pub quiesced: bool,
    /// Simulated milliseconds, work and healing.
    pub sim_ms: u64,
    /// A hash of every region's final logs: equal for equal runs.
    pub fingerprint: u64,
    /// The simulation itself failed (a host returned an error).
    pub error: Option<String>,
}

impl Outcome {
    fn failed(seed: u64, error: String) -> Self {
        Self {
            seed,
            trace: Vec::new(),
            fault_log: Vec::new(),
            faults: BTreeMap::new(),
            writes_acked: 0,
            writes_refused: 0,
            takeovers: 0,
            taken_by_later_successors: 0,
            report: Report::default(),
            quiesced: false,
            sim_ms: 0,
            fingerprint: 0,
            error: Some(error),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.quiesced && self.report.is_clean()
    }
}

/// The coordinator, in memory on the router host: leases and takeovers.
/// (Production uses etcd; see ARCHITECTURE.md.)
#[derive(Default)]
struct Coordinator {
    /// When each region's last renewal reached the coordinator.
    renewed_at: BTreeMap<RegionId, Duration>,
    /// Takeovers not yet acknowledged by the failed region, by it.
    takeovers: BTreeMap<RegionId, Takeover>,
    next_token: u64,
    /// Tickets taken by a successor other than the primary.
    taken_by_later: u64,
}

#[derive(Debug, Clone)]
struct Takeover {
    /// Every live region, the primary first (production's successor list;
    /// each ticket goes to the first one its residency allows).
    successors: Vec<RegionId>,
    token: u64,
    /// Each successor's log head once it wrote its share of the takeover:
    /// what the failed region must have applied before it leases again.
    done_through: BTreeMap<RegionId, u64>,
}

impl Takeover {
    fn done(&self) -> bool {
        self.successors
            .iter()
            .all(|successor| self.done_through.contains_key(successor))
    }
}

/// Everything the hosts and the driver share; durable across crashes.
#[derive(Clone)]
struct Mesh {
    regions: Vec<RegionId>,
    dbs: Vec<SharedDb>,
    coordinator: Arc<Mutex<Coordinator>>,
    /// Until when each region may make owner-scoped writes (simulated
    /// time); cleared when its host (re)starts.
    leases: Vec<Arc<Mutex<Option<Duration>>>>,
    acked: Arc<Mutex<Vec<Acked>>>,
    trace: Arc<Mutex<Vec<String>>>,
    verbose: bool,
    seed: u64,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The residency of a new ticket created in region `home`, from draws the
/// creation branch does not otherwise use (so the draw count stays fixed):
/// a fifth are pinned to `home` and one other region (half the time the
/// next in mesh order, which succeeds `home` first, half the time the one
/// after), one in twenty to `home` alone, the rest anywhere.
fn pinned(regions: &[RegionId], home: usize, other_pick: usize, value: u64) -> BTreeSet<RegionId> {
    let n = regions.len();
    match value % 100 {
        0..20 => [
            regions[home].clone(),
            regions[(home + 1 + other_pick) % n].clone(),
        ]
        .into(),
        20..25 => [regions[home].clone()].into(),
        _ => BTreeSet::new(),
    }
}

fn start() -> Timestamp {
    Timestamp::from_millisecond(START_MS).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The simulated time inside a host.
fn host_elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

struct SimClock;

impl meridian_core::Clock for SimClock {
    fn now(&self) -> Timestamp {
        sim_now(start(), host_elapsed())
    }
}

impl Mesh {
    fn note(&self, at: Duration, line: String) {
        let line = format!("t={:>6}ms {line}", at.as_millis());
        if self.verbose {
            eprintln!("{line}");
        }
        guard(&self.trace).push(line);
    }

    fn ack(&self, events: &[meridian_core::EventEnvelope]) {
        let mut acked = guard(&self.acked);
        for event in events {
            acked.push(Acked {
                origin: event.origin_region.clone(),
                seq: event.origin_seq,
                ticket_id: event.ticket_id,
            });
        }
    }

    fn may_write(&self, index: usize, now: Duration) -> bool {
        guard(&self.leases[index]).is_some_and(|until| now < until)
    }
}

// ------------------------------------------------------------------ hosts

/// A region: the real replicator and anti-entropy over the model store,
/// served by tonic on simulated TCP, plus the gateway duties the mesh
/// depends on (its lease, accepting offers, carrying out takeovers).
async fn region_host(mesh: Mesh, index: usize) -> turmoil::Result {
    *guard(&mesh.leases[index]) = None;
    let region = mesh.regions[index].clone();
    let clock: Arc<dyn meridian_core::Clock> = Arc::new(SimClock);
    let log = Arc::new(ModelLog::new(mesh.dbs[index].clone(), clock.clone()));
    let transport = Arc::new(SimTransport::new(
        mesh.seed ^ ((index as u64 + 1) << 32) ^ host_elapsed().as_millis() as u64,
    ));
    let peers: BTreeMap<RegionId, String> = mesh
        .regions
        .iter()
        .filter(|r| **r != region)
        .map(|r| (r.clone(), format!("{r}:{MESH_PORT}")))
        .collect();
    let mut config = ReplicationConfig::new(region.clone(), mesh.regions.clone(), peers);
    config.batch_events_max = 32;
    config.heartbeat_interval = Duration::from_millis(100);
    config.peer_silence_max = Duration::from_millis(500);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(400);
    config.connect_timeout = Duration::from_millis(300);
    let replicator = Replicator::with_seams(config, log, transport, clock)?;
    let mut anti_entropy_config = AntiEntropyConfig::new(Duration::from_millis(400));
    anti_entropy_config.bucket_events = 16;
    anti_entropy_config.fetch_events_max = 64;
    anti_entropy_config.call_timeout = Duration::from_millis(400);
    let anti_entropy = AntiEntropy::new(&replicator, anti_entropy_config)?;
    let trust_domain = TrustDomain::new("sim.meridian")?;

    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", MESH_PORT)).await?;
    tokio::spawn(replicator.clone().run(std::future::pending()));
    tokio::spawn(anti_entropy.clone().run(std::future::pending()));
    tokio::spawn(lease_loop(mesh.clone(), index));
    tokio::spawn(duties(mesh.clone(), index));
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            replicator.service(),
            identify(trust_domain.clone()),
        ))
        .add_service(InterceptedService::new(
            anti_entropy.service(),
            identify(trust_domain),
        ))
        .serve_with_incoming(incoming(listener))
        .await?;
    Ok(())
}

/// Holds the region's lease with the coordinator over the simulated
/// network; learns a takeover of itself before leasing again.
async fn lease_loop(mesh: Mesh, index: usize) {
    let region = mesh.regions[index].clone();
    loop {
        let connected = tokio::time::timeout(
            LEASE_CALL_TIMEOUT,
            turmoil::net::TcpStream::connect((ROUTER, LEASE_PORT)),
        )
        .await;
        let Ok(Ok(stream)) = connected else {
            tokio::time::sleep(LEASE_RENEW).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        loop {
            if !learned_takeover(&mesh, index) {
                tokio::time::sleep(LEASE_RENEW).await;
                continue;
            }
            let sent_at = host_elapsed();
            let request = format!("renew {region}\n");
            let answer = tokio::time::timeout(LEASE_CALL_TIMEOUT, async {
                write.write_all(request.as_bytes()).await?;
                lines.next_line().await
            })
            .await;
            match answer {
                Ok(Ok(Some(line))) if line == "ok" => {
                    let mut lease = guard(&mesh.leases[index]);
                    *lease = Some(lease.map_or(sent_at + LEASE_SAFE, |until| {
                        until.max(sent_at + LEASE_SAFE)
                    }));
                }
                Ok(Ok(Some(_refused))) => {}
                // Broken or silent: a new connection.
                _ => break,
            }
            tokio::time::sleep(LEASE_RENEW).await;
        }
    }
}

/// Whether the region may lease: no takeover of it is pending, or the one
/// pending has been carried out and this region has applied the
/// successor's log that far (then it acknowledges it).
fn learned_takeover(mesh: &Mesh, index: usize) -> bool {
    let region = &mesh.regions[index];
    let mut coordinator = guard(&mesh.coordinator);
    let Some(takeover) = coordinator.takeovers.get(region).cloned() else {
        return true;
    };
    if !takeover.done() {
        return false;
    }
    let db = lock(&mesh.dbs[index]);
    if takeover
        .done_through
        .iter()
        .any(|(successor, through)| db.cursor(successor) < *through)
    {
        return false;
    }
    drop(db);
    coordinator.takeovers.remove(region);
    coordinator
        .renewed_at
        .insert(region.clone(), host_elapsed());
    drop(coordinator);
    mesh.note(
        host_elapsed(),
        format!(
            "{region} learned its takeover by {:?} (token {})",
            takeover.successors, takeover.token
        ),
    );
    true
}

/// Accepts offers made to this region and carries out takeovers assigned
/// to it, while it holds its lease.
async fn duties(mesh: Mesh, index: usize) {
    let region = mesh.regions[index].clone();
    loop {
        tokio::time::sleep(DUTY_INTERVAL).await;
        let now = host_elapsed();
        if !mesh.may_write(index, now) {
            continue;
        }
        let at = sim_now(start(), now);
        let mut coordinator = guard(&mesh.coordinator);
        let mut db = lock(&mesh.dbs[index]);
        let accepted = db.accept_pending(at);
        let mut taken = Vec::new();
        let mut by_later = 0;
        for (failed, takeover) in coordinator.takeovers.iter_mut() {
            if takeover.successors.contains(&region) && !takeover.done_through.contains_key(&region)
            {
                let share = db.take_over(failed, &takeover.successors, takeover.token, at);
                if takeover.successors.first() != Some(&region) {
                    by_later += share.len() as u64;
                }
                taken.extend(share);
                takeover.done_through.insert(region.clone(), db.head());
            }
        }
        coordinator.taken_by_later += by_later;
        drop(db);
        drop(coordinator);
        mesh.ack(&accepted);
        mesh.ack(&taken);
        if !taken.is_empty() {
            mesh.note(now, format!("{region} took over {} tickets", taken.len()));
        }
    }
}

/// The router: the coordinator's lease service, and the failover decision
/// (a region whose lease lapsed is taken over by the next live region).
async fn router_host(mesh: Mesh) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", LEASE_PORT)).await?;
    tokio::spawn(failover_loop(mesh.clone()));
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_leases(mesh.clone(), stream));
    }
}

async fn serve_leases(mesh: Mesh, stream: turmoil::net::TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(region) = line
            .strip_prefix("renew ")
            .and_then(|name| RegionId::new(name).ok())
        else {
            return;
        };
        let answer = {
            let mut coordinator = guard(&mesh.coordinator);
            if coordinator.takeovers.contains_key(&region) {
                "no\n"
            } else {
                coordinator.renewed_at.insert(region, host_elapsed());
                "ok\n"
            }
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn failover_loop(mesh: Mesh) {
    // After a (re)start, give every region one ttl to renew: the
    // coordinator's clock of renewals did not run while the router was down.
    tokio::time::sleep(LEASE_TTL).await;
    loop {
        tokio::time::sleep(DUTY_INTERVAL).await;
        let now = host_elapsed();
        let mut coordinator = guard(&mesh.coordinator);
        let fresh = |c: &Coordinator, r: &RegionId| {
            !c.takeovers.contains_key(r)
                && c.renewed_at
                    .get(r)
                    .is_some_and(|at| now.saturating_sub(*at) <= LEASE_TTL)
        };
        for (i, failed) in mesh.regions.iter().enumerate() {
            if coordinator.takeovers.contains_key(failed)
                || !coordinator.renewed_at.contains_key(failed)
                || fresh(&coordinator, failed)
            {
                continue;
            }
            let n = mesh.regions.len();
            let successors: Vec<RegionId> = (1..n)
                .map(|k| &mesh.regions[(i + k) % n])
                .filter(|r| fresh(&coordinator, r))
                .cloned()
                .collect();
            if successors.is_empty() {
                continue;
            }
            coordinator.next_token += 1;
            let token = coordinator.next_token;
            mesh.note(
                now,
                format!(
                    "router: {failed}'s lease lapsed; {successors:?} take over (token {token})"
                ),
            );
            coordinator.takeovers.insert(
                failed.clone(),
                Takeover {
                    successors,
                    token,
                    done_through: BTreeMap::new(),
                },
            );
        }
    }
}

// ----------------------------------------------------------------- driver

/// The faults the driver injects.
#[derive(Debug, Clone)]
enum Undo {
    Repair(String, String),
    RepairOneway(String, String),
    Release(String, String),
    Latency(String, String),
    Loss(String, String),
    Bounce(String),
}

struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    mesh: Mesh,
    /// Faults are drawn from their own generator, a fixed number of draws
    /// each, so the fault schedule depends on the seed alone.
    fault_rng: Rng,
    /// The workload's generator: also a fixed number of draws per request.
    rng: Rng,
    fault_log: Vec<String>,
    hosts: Vec<String>,
    crashed: BTreeSet<String>,
    undo: Vec<(Duration, Undo)>,
    faults: BTreeMap<&'static str, u64>,
    tickets: Vec<TicketId>,
    writes_refused: u64,
    base_latency: Duration,
    tier: Tier,
}

impl Driver<'_> {
    fn fault(&mut self, kind: &'static str, line: String) {
        *self.faults.entry(kind).or_default() += 1;
        self.fault_log
            .push(format!("t={:>6}ms {line}", self.sim.elapsed().as_millis()));
        self.mesh.note(self.sim.elapsed(), line);
    }

    fn inject(&mut self) {
        let now = self.sim.elapsed();
        let rng = &mut self.fault_rng;
        let (lasting, a, b, kind) = (
            rng.between(100, 1_500),
            rng.below(self.hosts.len() as u64),
            rng.below(self.hosts.len() as u64 - 1),
            rng.below(8),
        );
        let (max_latency, fail_percent) = (rng.between(20, 250), rng.between(1, 5));
        let lasting = Duration::from_millis(lasting);
        let until = now + lasting;
        let ms = lasting.as_millis();
        let (a, mut b) = (a as usize, b as usize);
        if b >= a {
            b += 1;
        }
        let (a, b) = (self.hosts[a].clone(), self.hosts[b].clone());
        match kind {
            0 | 1 => {
                self.sim.partition(a.as_str(), b.as_str());
                self.fault("partition", format!("partition {a} <-> {b} for {ms}ms"));
                self.undo.push((until, Undo::Repair(a, b)));
            }
            2 => {
                self.sim.partition_oneway(a.as_str(), b.as_str());
                self.fault(
                    "partition_oneway",
                    format!("partition one way {a} -> {b} for {ms}ms"),
                );
                self.undo.push((until, Undo::RepairOneway(a, b)));
            }
            3 => {
                self.sim.hold(a.as_str(), b.as_str());
                self.fault("hold", format!("hold {a} <-> {b} for {ms}ms"));
                self.undo.push((until, Undo::Release(a, b)));
            }
            4 => {
                let max = Duration::from_millis(max_latency);
                self.sim
                    .set_link_max_message_latency(a.as_str(), b.as_str(), max);
                self.fault(
                    "latency",
                    format!("latency {a} <-> {b} up to {}ms for {ms}ms", max.as_millis()),
                );
                self.undo.push((until, Undo::Latency(a, b)));
            }
            5 => {
                let rate = fail_percent as f64 / 100.0;
                self.sim.set_link_fail_rate(a.as_str(), b.as_str(), rate);
                self.fault(
                    "loss",
                    format!("flaky link {a} <-> {b} (fail rate {rate}) for {ms}ms"),
                );
                self.undo.push((until, Undo::Loss(a, b)));
            }
            6 => {
                if self.crashed.insert(a.clone()) {
                    self.sim.crash(a.as_str());
                    self.fault("crash", format!("crash {a} for {ms}ms"));
                    self.undo.push((until, Undo::Bounce(a)));
                }
            }
            _ => {
                if !self.crashed.contains(&a) {
                    self.sim.bounce(a.as_str());
                    self.fault("restart", format!("restart {a}"));
                }
            }
        }
    }

    fn undo_due(&mut self, all: bool) {
        let now = self.sim.elapsed();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.undo)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.undo = later;
        for (_, undo) in due {
            match undo {
                Undo::Repair(a, b) => self.sim.repair(a.as_str(), b.as_str()),
                Undo::RepairOneway(a, b) => self.sim.repair_oneway(a.as_str(), b.as_str()),
                Undo::Release(a, b) => self.sim.release(a.as_str(), b.as_str()),
                Undo::Latency(a, b) => {
                    self.sim
                        .set_link_max_message_latency(a.as_str(), b.as_str(), self.base_latency)
                }
                Undo::Loss(a, b) => {
                    self.sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                    self.sim.repair(a.as_str(), b.as_str());
                }
                Undo::Bounce(host) => {
                    self.crashed.remove(&host);
                    self.sim.bounce(host.as_str());
                    self.mesh
                        .note(now, format!("restart {host} after its crash"));
                }
            }
        }
    }

    /// Every link healthy, every host up.
    fn heal(&mut self) {
        self.undo_due(true);
        for a in &self.hosts {
            for b in &self.hosts {
                if a < b {
                    self.sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                    self.sim.repair(a.as_str(), b.as_str());
                    self.sim.release(a.as_str(), b.as_str());
                }
            }
        }
        self.mesh.note(
            self.sim.elapsed(),
            "heal: every link repaired, every host up".into(),
        );
    }

    fn region_up(&mut self, index: usize) -> bool {
        let name = self.mesh.regions[index].to_string();
        !self.crashed.contains(&name) && self.sim.is_host_running(name.as_str())
    }

    fn record(&mut self, outcome: Result<Option<meridian_core::EventEnvelope>, String>) {
        match outcome {
            Ok(Some(event)) => self.mesh.ack(std::slice::from_ref(&event)),
            Ok(None) => {}
            Err(_) => self.writes_refused += 1,
        }
    }

    /// One client request, to the region it goes to.
    fn workload_step(&mut self) {
        let now = self.sim.elapsed();
        let at = sim_now(start(), now);
        let n = self.mesh.regions.len();
        let rng = &mut self.rng;
        let (roll, pick, region_pick, other_pick, patch_kind, value, random) = (
            rng.below(100),
            rng.next_u64(),
            rng.below(n as u64) as usize,
            rng.below(n as u64 - 1) as usize,
            rng.below(3),
            rng.next_u64(),
            rng.bytes10(),
        );
        if roll < 35 || self.tickets.is_empty() {
            // The router sends a new ticket to the region on shift, or the
            // next one whose lease is fresh.
            let on_shift = (now.as_millis() / SHIFT.as_millis()) as usize % n;
            let routed = {
                let coordinator = guard(&self.mesh.coordinator);
                (0..n).map(|k| (on_shift + k) % n).find(|i| {
                    let r = &self.mesh.regions[*i];
                    !coordinator.takeovers.contains_key(r)
                        && coordinator
                            .renewed_at
                            .get(r)
                            .is_some_and(|t| now.saturating_sub(*t) <= LEASE_TTL)
                })
            };
            let Some(index) = routed else {
                self.writes_refused += 1;
                return;
            };
            let id = TicketId::new_v7(at, random);
            if !self.region_up(index) || !self.mesh.may_write(index, now) {
                self.writes_refused += 1;
                return;
            }
            let new = NewTicket {
                subject: format!("Case {}", self.tickets.len() + 1),
                body: "Something is broken.".into(),
                customer: "acme".into(),
                tier: self.tier.clone(),
                skills: BTreeSet::new(),
                language: "en".into(),
                residency: pinned(&self.mesh.regions, index, other_pick, value),
                priority: Priority::Normal,
            };
            let outcome = lock(&self.mesh.dbs[index]).create(id, new, at).map(Some);
            if outcome.is_ok() {
                self.tickets.push(id);
            }
            self.record(outcome);
            return;
        }
        let id = self.tickets[(pick % self.tickets.len() as u64) as usize];
        let index = region_pick;
        if !self.region_up(index) {
            self.writes_refused += 1;
            return;
        }
        let may_write = self.mesh.may_write(index, now);
        let db = self.mesh.dbs[index].clone();
        let outcome = if roll < 65 {
            if !may_write {
                Err("no lease".to_owned())
            } else {
                let statuses = [
                    Status::Open,
                    Status::Pending,
                    Status::Escalated,
                    Status::Solved,
                    Status::Open,
                ];
                let priorities = [Priority::Low, Priority::High, Priority::Urgent];
                let patch = match patch_kind {
                    0 => TicketPatch {
                        status: Some(statuses[(value % 5) as usize]),
                        ..TicketPatch::default()
                    },
                    1 => TicketPatch {
                        assignee: Some(Some(format!("agent{}", value % 5))),
                        ..TicketPatch::default()
                    },
                    _ => TicketPatch {
                        priority: Some(priorities[(value % 3) as usize]),
                        ..TicketPatch::default()
                    },
                };
                lock(&db).update(id, &patch, at)
            }
        } else if roll < 90 {
            let note_id = NoteId::new_v7(at, random);
            lock(&db)
                .note(id, note_id, format!("looked at it ({})", value % 1000), at)
                .map(Some)
        } else if !may_write {
            Err("no lease".to_owned())
        } else {
            let to = self.mesh.regions[(index + 1 + other_pick) % n].clone();
            let note_id = NoteId::new_v7(at, random);
            lock(&db).offer(id, &to, note_id, at).map(Some)
        };
        self.record(outcome);
    }

    /// The end of a shift: the outgoing region offers its open tickets to
    /// the incoming one and records its shift summary.
    fn shift_change(&mut self, shift: u64) {
        let now = self.sim.elapsed();
        let at = sim_now(start(), now);
        let n = self.mesh.regions.len();
        let outgoing = (shift as usize + n - 1) % n;
        let incoming = shift as usize % n;
        let next = self.mesh.regions[incoming].clone();
        if !self.region_up(outgoing) {
            self.mesh.note(
                now,
                format!(
                    "shift {shift}: {} is down; no handover",
                    self.mesh.regions[outgoing]
                ),
            );
            return;
        }
        let may_write = self.mesh.may_write(outgoing, now);
        let db = self.mesh.dbs[outgoing].clone();
        let mut handed = Vec::new();
        let ids = lock(&db).ticket_ids();
        for id in ids {
            let open_and_ours = lock(&db).ticket(id).is_some_and(|t| {
                t.status.is_open()
                    && t.owner.owner_region == self.mesh.regions[outgoing]
                    && t.handoff_to.is_none()
            });
            if !open_and_ours || !may_write {
                continue;
            }
            // The note's id from the ticket's own random bits: no draw whose
            // count depends on the state.
            let bits = id.as_u128().to_be_bytes();
            let mut random = [0u8; 10];
            random.copy_from_slice(&bits[6..]);
            random[0] ^= shift as u8;
            let note_id = NoteId::new_v7(at, random);
            let outcome = lock(&db).offer(id, &next, note_id, at);
            if outcome.is_ok() {
                handed.push((id, next.clone()));
            }
            self.record(outcome.map(Some));
        }
        let shift_start = sim_now(start(), now.saturating_sub(SHIFT));
        let summary = lock(&db).shift_summary(shift_start, at, handed.clone(), &next);
        self.record(summary.map(Some));
        self.mesh.note(
            now,
            format!(
                "shift {shift}: {} hands {} tickets to {next}",
                self.mesh.regions[outgoing],
                handed.len()
            ),
        );
    }

    /// Healed and quiet: every region up, every log the same length as its
    /// origin's, nothing owed (no takeover waiting, no offer to accept).
    /// Every region's log length per origin, into the trace (see
    /// [`SimOptions::probe`]).
    fn probe(&self) {
        let now = self.sim.elapsed();
        if now.as_millis() % 10 != 0 {
            return;
        }
        let lengths: Vec<String> = self
            .mesh
            .dbs
            .iter()
            .map(|db| {
                let db = lock(db);
                let cursors: Vec<String> = self
                    .mesh
                    .regions
                    .iter()
                    .map(|origin| db.cursor(origin).to_string())
                    .collect();
                format!("{}[{}]", db.region, cursors.join(","))
            })
            .collect();
        guard(&self.mesh.trace).push(format!(
            "t={:>6}ms probe {}",
            now.as_millis(),
            lengths.join(" ")
        ));
    }

    fn converged(&mut self) -> bool {
        for index in 0..self.mesh.regions.len() {
            if !self.region_up(index) {
                return false;
            }
        }
        if guard(&self.mesh.coordinator)
            .takeovers
            .values()
            .any(|t| !t.done())
        {
            return false;
        }
        let heads: Vec<u64> = self.mesh.dbs.iter().map(|db| lock(db).head()).collect();
        self.mesh.dbs.iter().all(|db| {
            let db = lock(db);
            self.mesh
                .regions
                .iter()
                .zip(&heads)
                .all(|(origin, head)| db.cursor(origin) == *head)
                && !db.handoff_pending()
        })
    }
}

/// Runs one seed: workload and faults for `options.work`, then heals and
/// runs until quiet (at most `options.quiesce_max`), then checks.
pub fn run_seed(seed: u64, options: &SimOptions) -> Outcome {
    if let Err(e) = align_task_ids() {
        return Outcome::failed(seed, e);
    }
    let regions: Vec<RegionId> = ["us-east", "eu-west", "ap-south"]
        .iter()
        .filter_map(|r| RegionId::new(*r).ok())
        .collect();
    let mesh = Mesh {
        dbs: regions
            .iter()
            .enumerate()
            .map(|(i, r)| RegionDb::new(r.clone(), i as u16))
            .collect(),
        regions: regions.clone(),
        coordinator: Arc::new(Mutex::new(Coordinator::default())),
        leases: regions.iter().map(|_| Arc::new(Mutex::new(None))).collect(),
        acked: Arc::new(Mutex::new(Vec::new())),
        trace: Arc::new(Mutex::new(Vec::new())),
        verbose: options.verbose,
        seed,
    };
    let tier = match Tier::new("standard") {
        Ok(tier) => tier,
        Err(e) => return Outcome::failed(seed, e.to_string()),
    };
    let base_latency = Duration::from_millis(10);
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_millis(START_MS as u64);
    let sim = turmoil::Builder::new()
        .simulation_duration(options.work + options.quiesce_max + Duration::from_secs(5))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(base_latency)
        .repair_rate(0.2)
        .epoch(epoch)
        .rng_seed(seed)
        .build();
    let mut driver = Driver {
        sim,
        mesh: mesh.clone(),
        fault_rng: Rng::new(seed),
        rng: Rng::new(seed ^ 0x5eed_0f10_ad00),
        fault_log: Vec::new(),
        hosts: regions
            .iter()
            .map(ToString::to_string)
            .chain([ROUTER.to_owned()])
            .collect(),
        crashed: BTreeSet::new(),
        undo: Vec::new(),
        faults: BTreeMap::new(),
        tickets: Vec::new(),
        writes_refused: 0,
        base_latency,
        tier,
    };
    for (index, region) in regions.iter().enumerate() {
        let mesh = mesh.clone();
        driver
            .sim
            .host(region.as_str(), move || region_host(mesh.clone(), index));
    }
    {
        let mesh = mesh.clone();
        driver.sim.host(ROUTER, move || router_host(mesh.clone()));
    }

    let mut error = None;
    let mut next_op = Duration::from_millis(300);
    let mut next_fault = Duration::from_millis(500);
    let mut shift = 0u64;
    while driver.sim.elapsed() < options.work {
        if let Err(e) = driver.sim.step() {
            error = Some(e.to_string());
            break;
        }
        if options.probe {
            driver.probe();
        }
        let now = driver.sim.elapsed();
        driver.undo_due(false);
        if now >= next_fault {
            driver.inject();
            next_fault = now + Duration::from_millis(driver.fault_rng.between(50, 500));
        }
        if now >= next_op {
            driver.workload_step();
            next_op = now + Duration::from_millis(driver.rng.between(3, 30));
        }
        let current_shift = (now.as_millis() / SHIFT.as_millis()) as u64;
        if current_shift > shift {
            shift = current_shift;
            driver.shift_change(shift);
        }
    }

    driver.heal();
    let heal_started = driver.sim.elapsed();
    let mut quiesced = false;
    let mut quiet_since: Option<Duration> = None;
    while error.is_none() && driver.sim.elapsed() < heal_started + options.quiesce_max {
        if let Err(e) = driver.sim.step() {
            error = Some(e.to_string());
            break;
        }
        if options.probe {
            driver.probe();
        }
        let now = driver.sim.elapsed();
        if now.as_millis() % 50 != 0 {
            continue;
        }
        if driver.converged() {
            // Quiet for a while: nothing still in flight changes the logs.
            let since = *quiet_since.get_or_insert(now);
            if now - since >= Duration::from_millis(1_000) {
                quiesced = true;
                break;
            }
        } else {
            quiet_since = None;
        }
    }
    let sim_ms = driver.sim.elapsed().as_millis() as u64;
    driver
        .mesh
        .note(driver.sim.elapsed(), format!("end: quiesced={quiesced}"));

    let snapshots: Vec<(
        RegionId,
        BTreeMap<RegionId, Vec<meridian_core::EventEnvelope>>,
    )> = mesh
        .dbs
        .iter()
        .map(|db| {
            let db = lock(db);
            (db.region.clone(), db.logs.clone())
        })
        .collect();
    // Each region's ticket records as the store would hold them.
    let views: Vec<meridian_replication::RegionView> = snapshots
        .iter()
        .map(|(region, logs)| crate::model::region_view(region, logs))
        .collect();
    let acked = guard(&mesh.acked).clone();
    let mut report = check(&regions, &views, &acked);
    // The real store of each region must hold what its log folds to.
    for (db, view) in mesh.dbs.iter().zip(&views) {
        report.violations.extend(lock(db).sql_divergences(view));
    }
    let (takeovers, taken_by_later_successors) = {
        let coordinator = guard(&mesh.coordinator);
        (coordinator.next_token, coordinator.taken_by_later)
    };
    let fingerprint = crate::model::fingerprint(&mesh.dbs);
    let faults = std::mem::take(&mut driver.faults);
    let fault_log = std::mem::take(&mut driver.fault_log);
    let (writes_acked, writes_refused) = (acked.len() as u64, driver.writes_refused);
    drop(driver);
    let trace = guard(&mesh.trace).clone();
    Outcome {
        seed,
        trace,
        fault_log,
        faults,
        writes_acked,
        writes_refused,
        takeovers,
        taken_by_later_successors,
        report,
        quiesced,
        sim_ms,
        fingerprint,
        error,
    }
}
