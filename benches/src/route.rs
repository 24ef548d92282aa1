//! How fast the router decides, in process and over gRPC.
//!
//! 1. In process: `Rules::decide` on the example rules for a mix of tickets
//!    at instants spread over a week, alone and with the conversion to the
//!    protobuf answer (what every `Route` call does), on one thread and on
//!    every core.
//! 2. Over gRPC on loopback: three real gateways (SQLite in a temporary
//!    directory) and the router in this process; 32 concurrent callers
//!    over one HTTP/2 connection call `Route`
//!    for a fixed time, and the same callers call
//!    the standard health `Check` as a baseline (a no-op gRPC call: what
//!    the transport alone costs). Latencies go into an HDR histogram.
//!
//! Each measurement runs several rounds; the medians over rounds are
//! reported. Client and server share this process and its cores, as they
//! do in `meridian up`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: fail loudly.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use jiff::{SignedDuration, Timestamp};
use meridian_core::{ManualClock, Priority, RegionId, Skill, Tier};
use meridian_gateway::GatewayConfig;
use meridian_proto::v1;
use meridian_proto::v1::router_service_client::RouterServiceClient;
use meridian_router::RouterConfig;
use meridian_rules::{RegionHealth, RegionLoad, RouteRequest, Rules};
use meridian_store::StoreConfig;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{
    Sizes,
    progress::Progress,
    report::{Chart, Row, ScenarioReport, Series},
};

pub(crate) const RULES: &str = include_str!("../../deploy/rules.example.toml");
/// Decisions per thread per round at full size.
const DECISIONS_PER_ROUND: usize = 400_000;
const CONCURRENCY: usize = 32;
/// A Monday 14:00 UTC: us-east and eu-west on shift.
pub(crate) const BENCH_INSTANT: &str = "2026-06-08T14:00:00Z";

/// How big this run is.
struct Plan {
    rounds: usize,
    decisions: usize,
    grpc_warmup: Duration,
    grpc_round: Duration,
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let plan = if sizes.smoke {
        Plan {
            rounds: 1,
            decisions: 2_000,
            grpc_warmup: Duration::from_millis(50),
            grpc_round: Duration::from_millis(200),
        }
    } else {
        Plan {
            rounds: sizes.rounds as usize + 2,
            decisions: DECISIONS_PER_ROUND,
            grpc_warmup: Duration::from_millis(500),
            grpc_round: Duration::from_secs(2),
        }
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut report = ScenarioReport::new(
        "route",
        format!(
            "example rules; in process: {} decisions per thread x {} rounds; gRPC: {CONCURRENCY} callers on one connection, {} rounds of {:?}",
            plan.decisions, plan.rounds, plan.rounds, plan.grpc_round
        ),
    );
    progress.say("in process");
    let decisions = plan.decisions;
    let rounds = plan.rounds;
    let in_process =
        tokio::task::spawn_blocking(move || in_process(threads, decisions, rounds)).await?;
    for (label, one, all) in &in_process {
        report.row(Row::new(format!("{label}, 1 thread"), *one, "decisions/s"));
        report.row(Row::new(
            format!("{label}, {threads} threads"),
            *all,
            "decisions/s",
        ));
    }
    if let Some((_, _, all)) = in_process.first() {
        report.target(
            &format!("decisions/s in process ({threads} threads)"),
            500_000.0,
            *all,
            "decisions/s",
            true,
        );
    }
    progress.say("over gRPC");
    let grpc = over_grpc(&plan).await;
    let check = grpc.iter().find(|g| g.call == Call::HealthCheck).map(|g| {
        report.row(
            Row::new("gRPC health Check (no-op call)", g.rate, "calls/s")
                .latency(g.p50_us / 1000.0, g.p99_us / 1000.0)
                .baseline(),
        )
    });
    if let Some(route) = grpc.iter().find(|g| g.call == Call::Route) {
        let mut row = Row::new("gRPC Route", route.rate, "calls/s")
            .latency(route.p50_us / 1000.0, route.p99_us / 1000.0);
        if let Some(check) = &check {
            row = row.against(check);
        }
        report.row(row);
        report.target(
            "Route p99 over gRPC",
            1.0,
            route.p99_us / 1000.0,
            "ms",
            false,
        );
    }
    report.charts.push(Chart {
        name: "route-grpc-latency".into(),
        title: format!("Route over gRPC: latency distribution ({CONCURRENCY} callers)"),
        x_label: "percentile".into(),
        y_label: "latency (ms)".into(),
        log_x: false,
        log_y: false,
        x_ticks: PERCENTILES
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, (*p).to_owned()))
            .collect(),
        series: grpc
            .iter()
            .map(|g| Series {
                name: g.call.label().to_owned(),
                points: g
                    .curve_us
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, v / 1000.0))
                    .collect(),
            })
            .collect(),
    });
    Ok(report)
}

const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ─── in process ──────────────────────────────────────────────────────────────

fn requests() -> Vec<RouteRequest> {
    let skill = |s: &str| Skill::new(s).unwrap();
    vec![
        RouteRequest {
            tier: Some(Tier::new("premium").unwrap()),
            skills: vec![skill("billing")],
            residency: vec![],
            priority: Priority::Normal,
            language: None,
        },
        RouteRequest {
            tier: Some(Tier::new("enterprise").unwrap()),
            skills: vec![skill("database")],
            residency: vec![],
            priority: Priority::Urgent,
            language: None,
        },
        RouteRequest {
            tier: Some(Tier::new("standard").unwrap()),
            skills: vec![],
            residency: vec!["eu-only".into()],
            priority: Priority::Low,
            language: None,
        },
        RouteRequest {
            tier: None,
            skills: vec![skill("networking"), skill("general")],
            residency: vec![],
            priority: Priority::High,
            language: None,
        },
    ]
}

/// (label, decisions/s on one thread, decisions/s on every thread).
fn in_process(threads: usize, decisions: usize, rounds: usize) -> Vec<(&'static str, f64, f64)> {
    let rules = Rules::parse("rules.example.toml", RULES).unwrap_or_else(|e| panic!("{e}"));
    let health: HashMap<RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let load: HashMap<RegionId, RegionLoad> = HashMap::new();
    let requests = requests();
    // 1,009 instants (a prime, so requests and instants do not stay in
    // step) over a week: on-shift, overlap and out-of-hours paths all run.
    let start: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    let instants: Vec<Timestamp> = (0..1009)
        .map(|i| {
            start
                .checked_add(SignedDuration::from_secs(i * 7 * 86_400 / 1009))
                .unwrap()
        })
        .collect();
    let run = |offset: usize, encode: bool| {
        let mut routed = 0usize;
        for i in 0..decisions {
            let k = i + offset;
            let d = rules.decide(
                instants[k % instants.len()],
                &health,
                &load,
                &requests[k % requests.len()],
            );
            if encode {
                let answer = meridian_proto::router::decision_to_proto(&d);
                routed += usize::from(!black_box(&answer).region.is_empty());
            } else {
                routed += usize::from(black_box(&d).region.is_some());
            }
        }
        routed
    };
    let mut figures = Vec::new();
    for (label, encode) in [("decide", false), ("decide + protobuf answer", true)] {
        let mut one = Vec::new();
        let mut all = Vec::new();
        for _ in 0..rounds {
            let began = Instant::now();
            black_box(run(0, encode));
            one.push(decisions as f64 / began.elapsed().as_secs_f64());

            let began = Instant::now();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| scope.spawn(move || run(t * 7919, encode)))
                    .collect();
                for h in handles {
                    black_box(h.join().unwrap());
                }
            });
            all.push((decisions * threads) as f64 / began.elapsed().as_secs_f64());
        }
        figures.push((label, median(&mut one), median(&mut all)));
    }
    figures
}

// ─── over gRPC ───────────────────────────────────────────────────────────────

struct Mesh {
    router: SocketAddr,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start_mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let rules = Rules::parse("rules.example.toml", RULES).unwrap_or_else(|e| panic!("{e}"));
    let regions: Vec<RegionId> = rules.regions().iter().map(|r| r.id.clone()).collect();
    let mut stops = Vec::new();
    let mut endpoints = BTreeMap::new();
    for region in &regions {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = StoreConfig::sqlite_file(&dir.path().join(format!("{region}.db")));
        let config = GatewayConfig::new(region.clone(), regions.clone(), addr, store);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(meridian_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        stops.push(stop);
        endpoints.insert(region.clone(), format!("http://{addr}"));
    }
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, RULES).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = listener.local_addr().unwrap();
    let mut config = RouterConfig::new(router, &rules_path, endpoints).unwrap();
    config.health.probe_interval = Duration::from_millis(200);
    let clock = Arc::new(ManualClock::new(BENCH_INSTANT.parse().unwrap()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(meridian_router::run_with_clock(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
        clock,
    ));
    stops.push(stop);
    Mesh {
        router,
        stops,
        _dir: dir,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Route,
    HealthCheck,
}

impl Call {
    fn label(self) -> &'static str {
        match self {
            Call::Route => "Route",
            Call::HealthCheck => "health Check (baseline)",
        }
    }
}

/// `CONCURRENCY` callers spread over `channels` for `duration`; the merged
/// latency histogram and the number of calls.
async fn round(channels: &[Channel], call: Call, duration: Duration) -> (Histogram<u64>, u64) {
    let until = Instant::now() + duration;
    let mut callers = Vec::new();
    for i in 0..CONCURRENCY {
        let channel = channels[i % channels.len()].clone();
        callers.push(tokio::spawn(async move {
            let mut router = RouterServiceClient::new(channel.clone());
            let mut health = HealthClient::new(channel);
            let attributes = [
                v1::TicketAttributes {
                    tier: "premium".into(),
                    skills: vec!["billing".into()],
                    ..Default::default()
                },
                v1::TicketAttributes {
                    tier: "enterprise".into(),
                    skills: vec!["database".into()],
                    priority: v1::Priority::Urgent.into(),
                    ..Default::default()
                },
                v1::TicketAttributes {
                    tier: "standard".into(),
                    residency: vec!["eu-only".into()],
                    ..Default::default()
                },
            ];
            // Microseconds, up to 10 s, 3 significant digits.
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
            let mut k = i;
            while Instant::now() < until {
                let began = Instant::now();
                match call {
                    Call::Route => {
                        let ticket = Some(attributes[k % attributes.len()].clone());
                        let answer = router
                            .route(v1::RouteRequest { ticket })
                            .await
                            .unwrap()
                            .into_inner();
                        assert!(
                            answer.decision.is_some_and(|d| !d.region.is_empty()),
                            "a route must choose a region"
                        );
                    }
                    Call::HealthCheck => {
                        health
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .unwrap();
                    }
                }
                histogram
                    .record(began.elapsed().as_micros().max(1) as u64)
                    .unwrap();
                k += 1;
            }
            histogram
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for caller in callers {
        merged.add(caller.await.unwrap()).unwrap();
    }
    let calls = merged.len();
    (merged, calls)
}

/// One gRPC call's figures: medians over rounds.
struct GrpcFigures {
    call: Call,
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// p50, p90, p99, p99.9 and max of the median round.
    curve_us: Vec<f64>,
}

async fn over_grpc(plan: &Plan) -> Vec<GrpcFigures> {
    let connections = 1;
    let mesh = start_mesh().await;
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let endpoint = Endpoint::from_shared(format!("http://{}", mesh.router)).unwrap();
        channels.push(endpoint.connect().await.unwrap());
    }
    let channel = channels[0].clone();
    // Wait until the router has heard from every gateway.
    let mut router = RouterServiceClient::new(channel.clone());
    let began = Instant::now();
    loop {
        let explained = router
            .explain(v1::ExplainRequest {
                ticket: Some(v1::TicketAttributes::default()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let decision = explained.decision.unwrap();
        if decision.candidates.iter().all(|c| {
            !matches!(
                c.filtered(),
                v1::FilterReason::Down | v1::FilterReason::NoHealthReport
            )
        }) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "gateways never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut figures = Vec::new();
    for call in [Call::HealthCheck, Call::Route] {
        round(&channels, call, plan.grpc_warmup).await;
        let mut rounds = Vec::new();
        for _ in 0..plan.rounds {
            let (histogram, calls) = round(&channels, call, plan.grpc_round).await;
            rounds.push((histogram, calls as f64 / plan.grpc_round.as_secs_f64()));
        }
        let (mut p50s, mut p99s, mut rates): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            rounds
                .iter()
                .map(|(h, _)| h.value_at_quantile(0.5) as f64)
                .collect(),
            rounds
                .iter()
                .map(|(h, _)| h.value_at_quantile(0.99) as f64)
                .collect(),
            rounds.iter().map(|(_, rate)| *rate).collect(),
        );
        let p99 = median(&mut p99s);
        // The curve of the round whose p99 is the median one.
        let curve_us = rounds
            .iter()
            .find(|(h, _)| h.value_at_quantile(0.99) as f64 == p99)
            .map(|(h, _)| {
                [0.5, 0.9, 0.99, 0.999]
                    .iter()
                    .map(|q| h.value_at_quantile(*q) as f64)
                    .chain([h.max() as f64])
                    .collect()
            })
            .unwrap_or_default();
        figures.push(GrpcFigures {
            call,
            rate: median(&mut rates),
            p50_us: median(&mut p50s),
            p99_us: p99,
            curve_us,
        });
    }
    for stop in mesh.stops {
        let _ = stop.send(());
    }
    figures
}
