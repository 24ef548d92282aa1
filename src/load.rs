//! `meridian load`: drives `CreateTicket` over gRPC at given concurrencies
//! and reports throughput and latency percentiles next to baselines measured
//! in the same run, because on a shared 2-core machine a number means
//! something only beside its floor:
//!
//! - `echo`: `grpc.health.v1.Health/Check` on a bare tonic server with
//!   nothing else on it, on loopback. The floor of any unary gRPC call here
//!   (tonic, HTTP/2, loopback TCP, and the client sharing the cores).
//! - `insert`: one small row per sqlx `INSERT`, each its own implicit
//!   transaction, from `N` tasks over a pool of `min(N, 8)` connections, on
//!   the gateway's backend (SQLite WAL + `synchronous=FULL`, or PostgreSQL).
//!   What durable writes cost without group commit. Only with `--spawn`:
//!   an already running `--target`'s database is unknown here.
//! - `fsync`: write 4 KiB and `fdatasync`, in a loop, once per run: the
//!   disk's floor for one commit per write.
//!
//! Each scenario runs a warm-up, then `--rounds` rounds of `--duration`; the
//! report shows the median round. Workers run a closed loop (one call in
//! flight each); every loop ends at its deadline and every call has a
//! timeout. Failures are counted, never fatal. All traffic stays on loopback.
//!
//! Module map: `driver` (the timed worker loop, histograms, CPU and queue
//! sampling), `targets` (the gateway, the baselines and their operations),
//! `report` (rows, table and JSON).

mod driver;
mod report;

pub use self::driver::{CpuUse, QueueDepth};
pub use self::report::{GroupCommit, Report, Row, Scenario};
mod targets;

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use self::{
    driver::{Hooks, Op, Round, drive, drive_blocking},
    targets::{
        Backing, CreateOp, EchoOp, EchoServer, FsyncProbe, InsertPool, SpawnedGateway, StoreOp,
        TempDir, connect,
    },
};

/// The most workers one scenario may run.
pub const CONCURRENCY_MAX: u32 = 4096;
/// The longest round or warm-up accepted.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
pub const ROUNDS_MAX: u32 = 100;
pub const CONNECTIONS_MAX: u32 = 64;
/// The bare insert's pool: as many connections as workers, up to the
/// store's own pool size.
const INSERT_POOL_MAX: u32 = meridian_store::MAX_CONNECTIONS_DEFAULT;

/// The database a spawned gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpawnBackend {
    /// A SQLite file in a temporary directory (WAL, synchronous=FULL).
    Sqlite,
    /// A fresh schema in DATABASE_URL's database, dropped afterwards.
    Postgres,
}

impl SpawnBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnBackend::Sqlite => "sqlite",
            SpawnBackend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadOutput {
    /// Text for people.
    Table,
    /// Exactly one JSON object.
    Json,
}

/// Drive `CreateTicket` at given concurrencies and compare with bare
/// baselines measured in the same run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// An already running gateway on this machine, e.g.
    /// https://127.0.0.1:7101 (`meridian up`'s first region). Its database
    /// is unknown here, so the store and insert scenarios are skipped. An
    /// explicit --spawn overrides MERIDIAN_TARGET.
    #[arg(long, env = "MERIDIAN_TARGET", value_name = "URL")]
    pub target: Option<String>,
    /// PEM file of the CA that signed an https --target's certificate
    /// (`meridian up` with auth: DATA_DIR/pki/ca.pem).
    #[arg(long, env = "MERIDIAN_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// The bearer token (JWT) every call to --target carries: an agent's of
    /// the target's region, or an admin's (`meridian up` writes them under
    /// DATA_DIR/tokens). Not sent to a --spawn gateway, which has no [auth].
    #[arg(
        long,
        env = "MERIDIAN_TOKEN",
        hide_env_values = true,
        value_name = "JWT"
    )]
    pub token: Option<String>,
    /// Benchmark a gateway of this process's own instead, started on a
    /// loopback port over this backend (postgres reads DATABASE_URL): the
    /// self-contained benchmark. Either this or --target is needed.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub spawn: Option<SpawnBackend>,
    /// Concurrent callers, one call in flight each; repeat the flag or give a
    /// comma list.
    #[arg(long, value_name = "N", value_delimiter = ',', default_values_t = [1, 16, 64])]
    pub concurrency: Vec<u32>,
    /// Length of each measured round, e.g. 10s, 500ms, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured run before each scenario's rounds.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Measured rounds per scenario and concurrency; the median is reported.
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub rounds: u32,
    /// HTTP/2 connections per gRPC scenario (never more than the concurrency).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,
    /// Override the spawned store's group-commit cap (StoreConfig::batch_max).
    #[arg(long, value_name = "N")]
    pub batch_max: Option<usize>,
    /// Which scenarios to run (comma list). By default all that apply:
    /// store and insert need --spawn.
    #[arg(long, value_enum, value_name = "SCENARIO", value_delimiter = ',')]
    pub scenarios: Option<Vec<Scenario>>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// table for people, json for one JSON object on stdout (errors too).
    #[arg(long, value_enum, default_value_t = LoadOutput::Table)]
    pub output: LoadOutput,
}

/// Where the creates go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Url(String),
    Spawn(SpawnBackend),
}

/// Validated arguments.
#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    concurrency: Vec<u32>,
    duration: Duration,
    warmup: Duration,
    rounds: u32,
    connections: u32,
    batch_max: Option<usize>,
    scenarios: Vec<Scenario>,
    progress: bool,
    /// For a --target only.
    ca: Option<std::path::PathBuf>,
    token: meridian_auth::BearerToken,
}

impl Plan {
    fn new(args: &LoadArgs) -> anyhow::Result<Self> {
        // clap cannot say whether --target came from MERIDIAN_TARGET: an
        // explicit --spawn wins over the environment, not over the flag.
        let from_env = std::env::var("MERIDIAN_TARGET").ok();
        let target = match (&args.target, args.spawn) {
            (Some(url), Some(spawn)) if from_env.as_deref() == Some(url.as_str()) => {
                Target::Spawn(spawn)
            }
            (Some(_), Some(_)) => bail!("give either --target or --spawn, not both"),
            (Some(url), None) => Target::Url(url.clone()),
            (None, Some(spawn)) => Target::Spawn(spawn),
            (None, None) => bail!(
                "no gateway to drive: give --target URL (or set MERIDIAN_TARGET, as \
                 `source DATA_DIR/env` does), or --spawn sqlite|postgres to benchmark a \
                 gateway of this process's own"
            ),
        };
        if args.concurrency.is_empty() {
            bail!("--concurrency needs at least one value");
        }
        let mut concurrency = Vec::new();
        for &n in &args.concurrency {
            if n == 0 || n > CONCURRENCY_MAX {
                bail!("--concurrency {n}: must be between 1 and {CONCURRENCY_MAX}");
            }
            if !concurrency.contains(&n) {
                concurrency.push(n);
            }
        }
        if args.duration.is_zero() || args.duration > DURATION_MAX {
            bail!(
                "--duration {:?}: must be more than 0 and at most {} s",
                args.duration,
                DURATION_MAX.as_secs()
            );
        }
        if args.warmup > DURATION_MAX {
            bail!(
                "--warmup {:?}: must be at most {} s",
                args.warmup,
                DURATION_MAX.as_secs()
            );
        }
        let spawn_only =
            |scenario: &Scenario| matches!(scenario, Scenario::Store | Scenario::Insert);
        let scenarios = match (&args.scenarios, &target) {
            (None, Target::Spawn(_)) => Scenario::ALL.to_vec(),
            (None, Target::Url(_)) => Scenario::ALL
                .into_iter()
                .filter(|s| !spawn_only(s))
                .collect(),
            (Some(chosen), _) if chosen.is_empty() => {
                bail!("--scenarios needs at least one of create, store, echo, insert, fsync")
            }
            (Some(chosen), Target::Url(_)) if chosen.iter().any(spawn_only) => {
                let scenario = chosen
                    .iter()
                    .find(|s| spawn_only(s))
                    .map_or("", |s| s.as_str());
                bail!("--scenarios {scenario}: needs a gateway started with --spawn, not --target")
            }
            (Some(chosen), _) => chosen.clone(),
        };
        if args.rounds == 0 || args.rounds > ROUNDS_MAX {
            bail!(
                "--rounds {}: must be between 1 and {ROUNDS_MAX}",
                args.rounds
            );
        }
        if args.connections == 0 || args.connections > CONNECTIONS_MAX {
            bail!(
                "--connections {}: must be between 1 and {CONNECTIONS_MAX}",
                args.connections
            );
        }
        match (args.batch_max, &target) {
            (Some(0), _) => bail!("--batch-max 0: must be at least 1"),
            (Some(_), Target::Url(_)) => {
                bail!("--batch-max applies only to a gateway started with --spawn")
            }
            _ => {}
        }
        Ok(Self {
            target,
            concurrency,
            duration: args.duration,
            warmup: args.warmup,
            rounds: args.rounds,
            connections: args.connections,
            batch_max: args.batch_max,
            scenarios,
            progress: !args.quiet,
            ca: args.ca.clone(),
            token: meridian_auth::BearerToken::new(args.token.as_deref())
                .map_err(|e| anyhow!("--token: {e}"))?,
        })
    }

    fn runs(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            progress: self.progress,
            queue_depth: None,
        }
    }
}

/// Parses `10s`, `500ms`, `1.5s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration such as 10s, 500ms or 2m");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Runs the load test and prints the report on stdout.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let output = args.output;
    let report = measure_report(&args).await?;
    match output {
        LoadOutput::Table => print!("{}", report.to_table()),
        LoadOutput::Json => println!("{}", report.to_json()?),
    }
    Ok(())
}

/// Runs the load test and returns what it measured, printing only
/// progress (on stderr): the benchmark suite's intake scenarios.
pub async fn measure_report(args: &LoadArgs) -> anyhow::Result<Report> {
    execute(&Plan::new(args)?).await
}

/// Sets up, measures everything the plan asks for, and always tears down
/// what it set up (servers, temporary files, the PostgreSQL schema), also
/// when interrupted with Ctrl-C.
async fn execute(plan: &Plan) -> anyhow::Result<Report> {
    // Refuse a bad target before starting anything.
    let target_endpoint = match &plan.target {
        Target::Url(url) => Some(targets::require_loopback_url(url, plan.ca.as_deref()).await?),
        Target::Spawn(_) => None,
    };
    let echo = if plan.runs(Scenario::Echo) {
        Some(EchoServer::start().await?)
    } else {
        None
    };
    let backing = match plan.target {
        Target::Spawn(backend) => match Backing::create(backend).await {
            Ok(backing) => Some(backing),
            Err(error) => {
                if let Some(echo) = echo {
                    // The setup error is the one worth reporting.
                    let _ = echo.stop().await;
                }
                return Err(error);
            }
        },
        Target::Url(_) => None,
    };
    let measured = tokio::select! {
        measured = measure_all(plan, target_endpoint, echo.as_ref(), backing.as_ref()) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let mut teardown = Vec::new();
    if let Some(echo) = echo {
        teardown.push(echo.stop().await);
    }
    if let Some(backing) = backing {
        teardown.push(backing.remove().await);
    }
    let report = measured?;
    teardown.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(report)
}

async fn measure_all(
    plan: &Plan,
    target_endpoint: Option<tonic::transport::Endpoint>,
    echo: Option<&EchoServer>,
    backing: Option<&Backing>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        target: match &plan.target {
            Target::Url(url) => url.clone(),
            Target::Spawn(_) => "spawn".to_owned(),
        },
        backend: backing.map(Backing::backend),
        durability: backing.map(Backing::durability),
        duration_s: plan.duration.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        rounds: plan.rounds,
        connections: plan.connections,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rows: Vec::new(),
    };

    if plan.runs(Scenario::Fsync) {
        report.rows.push(measure_fsync(plan, backing).await?);
    }

    let gateway = match backing {
        Some(backing) => Some(SpawnedGateway::start(backing.store_config(), plan.batch_max).await?),
        None => None,
    };
    let measured = async {
        let (endpoint, token) = match (&gateway, target_endpoint) {
            (Some(gateway), _) => (
                gateway.endpoint.clone(),
                meridian_auth::BearerToken::default(),
            ),
            (None, Some(endpoint)) => {
                let channel = connect(&endpoint, 1).await.context("gateway")?.remove(0);
                targets::check_access(channel, plan.token.clone(), &report.target).await?;
                (endpoint, plan.token.clone())
            }
            (None, None) => bail!("no gateway to drive"),
        };
        for &concurrency in &plan.concurrency {
            let connections = plan.connections.min(concurrency);
            if let Some(echo) = echo {
                let channels = connect(&echo.endpoint, connections)
                    .await
                    .context("echo server")?;
                let ops = || pick(&channels, concurrency).map(EchoOp::new).collect();
                report
                    .rows
                    .push(measure(plan, Scenario::Echo, concurrency, ops, None).await?);
            }
            if plan.runs(Scenario::Insert)
                && let Some(backing) = backing
            {
                let pool = InsertPool::open(backing, concurrency.min(INSERT_POOL_MAX)).await?;
                let ops = || (0..concurrency).map(|_| pool.clone()).collect();
                let row = measure(plan, Scenario::Insert, concurrency, ops, None).await;
                pool.close().await;
                report.rows.push(row?);
            }
            let channels = connect(&endpoint, connections).await.context("gateway")?;
            let ops = || {
                pick(&channels, concurrency)
                    .zip(0..)
                    .map(|(channel, worker)| CreateOp::new(channel, worker, token.clone()))
                    .collect()
            };
            report
                .rows
                .push(measure(plan, Scenario::Create, concurrency, ops, gateway.as_ref()).await?);
            if plan.runs(Scenario::Store)
                && let Some(gateway) = &gateway
            {
                let template = StoreOp::new(gateway)?;
                let ops = || {
                    (0..concurrency)
                        .map(|worker| template.for_worker(worker))
                        .collect()
                };
                report
                    .rows
                    .push(measure(plan, Scenario::Store, concurrency, ops, Some(gateway)).await?);
            }
        }
        Ok(())
    }
    .await;
    if let Some(gateway) = gateway {
        let stopped = gateway.stop().await;
        measured?;
        stopped?;
    } else {
        measured?;
    }
    report.compute_ratios();
    Ok(report)
}

/// `concurrency` channels taken round-robin from `channels`.
fn pick(
    channels: &[tonic::transport::Channel],
    concurrency: u32,
) -> impl Iterator<Item = tonic::transport::Channel> {
    channels.iter().cycle().take(concurrency as usize).cloned()
}

/// Warm-up, then the rounds of one scenario at one concurrency.
async fn measure<O: Op>(
    plan: &Plan,
    scenario: Scenario,
    concurrency: u32,
    ops: impl Fn() -> Vec<O>,
    gateway: Option<&SpawnedGateway>,
) -> anyhow::Result<Row> {
    let mut hooks = plan.hooks();
    if let Some(gateway) = gateway {
        let store = gateway.store.clone();
        hooks.queue_depth = Some(std::sync::Arc::new(move || store.queued_writes()));
    }
    let name = scenario.as_str();
    if !plan.warmup.is_zero() {
        drive(
            &format!("{name} c={concurrency} warm-up"),
            ops(),
            plan.warmup,
            &hooks,
        )
        .await?;
    }
    let mut rounds: Vec<(Round, Option<GroupCommit>)> = Vec::new();
    for r in 1..=plan.rounds {
        let label = format!("{name} c={concurrency} round {r}/{}", plan.rounds);
        let before = gateway.map(SpawnedGateway::writer_stats);
        let round = drive(&label, ops(), plan.duration, &hooks).await?;
        let group = before
            .zip(gateway.map(SpawnedGateway::writer_stats))
            .map(|(b, a)| GroupCommit::between(b, a, &round));
        rounds.push((round, group));
    }
    Row::from_rounds(scenario, concurrency, rounds)
        .ok_or_else(|| anyhow!("{name}: no round was measured"))
}

/// The disk's write+fsync rate, once per run, next to the SQLite files (or
/// in the system's temporary directory).
async fn measure_fsync(plan: &Plan, backing: Option<&Backing>) -> anyhow::Result<Row> {
    let own_dir;
    let dir = match backing.and_then(Backing::scratch_dir) {
        Some(dir) => dir.to_path_buf(),
        None => {
            own_dir = TempDir::new()?;
            own_dir.path().to_path_buf()
        }
    };
    let hooks = plan.hooks();
    if !plan.warmup.is_zero() {
        let mut probe = FsyncProbe::create(&dir)?;
        drive_blocking(
            "fsync warm-up",
            move || probe.write_and_sync(),
            plan.warmup,
            &hooks,
        )
        .await?;
    }
    let mut rounds = Vec::new();
    for r in 1..=plan.rounds {
        let mut probe = FsyncProbe::create(&dir)?;
        let label = format!("fsync round {r}/{}", plan.rounds);
        rounds.push((
            drive_blocking(
                &label,
                move || probe.write_and_sync(),
                plan.duration,
                &hooks,
            )
            .await?,
            None,
        ));
    }
    Row::from_rounds(Scenario::Fsync, 1, rounds)
        .ok_or_else(|| anyhow!("fsync: no round was measured"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn args(argv: &[&str]) -> Result<LoadArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("load").chain(argv.iter().copied())).map(|cli| cli.load)
    }

    #[test]
    fn arguments_parse_with_defaults_and_lists() {
        let plan = Plan::new(&args(&["--spawn", "sqlite"]).unwrap()).unwrap();
        assert_eq!(plan.target, Target::Spawn(SpawnBackend::Sqlite));
        assert_eq!(plan.concurrency, vec![1, 16, 64]);
        assert_eq!(
            (plan.duration, plan.warmup, plan.rounds),
            (Duration::from_secs(10), Duration::from_secs(2), 3)
        );
        assert_eq!(plan.scenarios, Scenario::ALL.to_vec());
        let plan = Plan::new(&args(&["--target", "http://127.0.0.1:1"]).unwrap()).unwrap();
        assert_eq!(
            plan.scenarios,
            vec![Scenario::Create, Scenario::Echo, Scenario::Fsync]
        );
        let plan = Plan::new(&args(&["--spawn", "sqlite", "--scenarios", "create,store"]).unwrap());
        let plan = plan.unwrap();
        assert_eq!(plan.scenarios, vec![Scenario::Create, Scenario::Store]);

        let parsed = args(&[
            "--spawn",
            "postgres",
            "--concurrency",
            "1,16",
            "--concurrency",
            "64",
            "--duration",
            "500ms",
        ]);
        let plan = Plan::new(&parsed.unwrap()).unwrap();
        assert_eq!(plan.target, Target::Spawn(SpawnBackend::Postgres));
        assert_eq!(plan.concurrency, vec![1, 16, 64]);
        assert_eq!(plan.duration, Duration::from_millis(500));

        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_arguments_are_refused_by_name() {
        let err = Plan::new(&args(&["--spawn", "sqlite", "--concurrency", "16,0"]).unwrap());
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("--concurrency 0") && err.contains("between 1 and"),
            "{err}"
        );

        let err = args(&["--spawn", "mysql"]).unwrap_err().to_string();
        assert!(
            err.contains("mysql") && err.contains("sqlite") && err.contains("postgres"),
            "{err}"
        );

        let err = args(&["--duration", "ten"]).unwrap_err().to_string();
        assert!(err.contains("not a duration"), "{err}");

        let both = args(&["--target", "http://127.0.0.1:1", "--spawn", "sqlite"]).unwrap();
        let err = Plan::new(&both).unwrap_err().to_string();
        assert!(err.contains("--target") && err.contains("--spawn"), "{err}");

        for (argv, needle) in [
            (&[][..], "MERIDIAN_TARGET"),
            (&["--spawn", "sqlite", "--duration", "0s"][..], "--duration"),
            (&["--spawn", "sqlite", "--rounds", "0"][..], "--rounds"),
            (
                &["--spawn", "sqlite", "--connections", "0"][..],
                "--connections",
            ),
            (
                &["--target", "http://127.0.0.1:1", "--batch-max", "8"][..],
                "--batch-max",
            ),
            (
                &[
                    "--target",
                    "http://127.0.0.1:1",
                    "--scenarios",
                    "create,insert",
                ][..],
                "--scenarios insert",
            ),
        ] {
            let err = Plan::new(&args(argv).unwrap()).unwrap_err().to_string();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
    }

    #[tokio::test]
    async fn an_https_target_needs_its_ca() {
        let plan =
            Plan::new(&args(&["--target", "https://127.0.0.1:1", "--quiet"]).unwrap()).unwrap();
        let err = execute(&plan).await.unwrap_err().to_string();
        assert!(err.contains("is https: pass --ca FILE"), "{err}");
        let err = Plan::new(&args(&["--target", "http://127.0.0.1:1", "--token", "a\nb"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--token: "), "{err}");
    }

    #[tokio::test]
    async fn a_target_off_loopback_is_refused_before_any_traffic() {
        let plan =
            Plan::new(&args(&["--target", "http://192.0.2.1:50051", "--quiet"]).unwrap()).unwrap();
        let err = execute(&plan).await.unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_sqlite_gateway_reports_creates_and_baselines() {
        let plan = Plan::new(
            &args(&[
                "--spawn",
                "sqlite",
                "--concurrency",
                "4",
                "--duration",
                "400ms",
                "--warmup",
                "100ms",
                "--rounds",
                "1",
                "-q",
            ])
            .unwrap(),
        )
        .unwrap();
        let report = execute(&plan).await.unwrap();

        let create = report.find(Scenario::Create, 4).expect("a create row");
        assert!(create.ops > 0, "{create:?}");
        assert_eq!(create.errors, 0, "{create:?}");
        assert!(create.p50_ms > 0.0, "{create:?}");
        assert!(
            create.p50_ms <= create.p90_ms && create.p90_ms <= create.p99_ms,
            "{create:?}"
        );
        assert!(
            create.p99_ms <= create.p999_ms && create.p999_ms <= create.max_ms,
            "{create:?}"
        );
        let group = create
            .group_commit
            .expect("a spawned gateway reports its group commit");
        assert!(
            group.transactions > 0 && group.commands >= create.ops,
            "{group:?} {create:?}"
        );

        for scenario in [Scenario::Echo, Scenario::Insert, Scenario::Store] {
            let row = report
                .find(scenario, 4)
                .unwrap_or_else(|| panic!("a {scenario:?} row"));
            assert!(row.ops > 0 && row.errors == 0, "{row:?}");
            assert!(
                row.p50_ms <= row.p99_ms && row.p99_ms <= row.max_ms,
                "{row:?}"
            );
        }
        assert!(
            report
                .find(Scenario::Fsync, 1)
                .is_some_and(|row| row.ops > 0)
        );
        let ratio = create.ratio_to_echo.expect("a ratio to the echo floor");
        assert!(ratio > 0.0, "{ratio}");

        let table = report.to_table();
        assert!(
            table.contains("create") && table.contains("where the time goes"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["backend"], "sqlite");
        assert!(
            json["rows"].as_array().is_some_and(|rows| rows.len() == 5),
            "{json}"
        );
    }
}
