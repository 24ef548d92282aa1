//! How fast the router decides, in process and over gRPC.
//!
//! `cargo run --release -p meridian-router --example route_bench [-- CONNECTIONS]`
//!
//! 1. In process: `Rules::decide` on the example rules for a mix of tickets
//!    at instants spread over a week, alone and with the conversion to the
//!    protobuf answer (what every `Route` call does), on one thread and on
//!    every core.
//! 2. Over gRPC on loopback: three real gateways (SQLite in a temporary
//!    directory) and the router in this process; 32 concurrent callers
//!    spread over CONNECTIONS HTTP/2 connections (default 1) call `Route`
//!    for a fixed time, and the same callers call
//!    the standard health `Check` as a baseline (a no-op gRPC call: what
//!    the transport alone costs). Latencies go into an HDR histogram.
//!
//! Each measurement runs several rounds; the medians over rounds are
//! reported. Client and server share this process and its cores, as they
//! do in `meridian up`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark binary: fail loudly.

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

const RULES: &str = include_str!("../../../deploy/rules.example.toml");
const ROUNDS: usize = 5;
const DECISIONS_PER_ROUND: usize = 400_000;
const CONCURRENCY: usize = 32;
const GRPC_WARMUP: Duration = Duration::from_millis(500);
const GRPC_ROUND: Duration = Duration::from_secs(2);
/// A Monday 14:00 UTC: us-east and eu-west on shift.
const BENCH_INSTANT: &str = "2026-06-08T14:00:00Z";

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("route_bench: {threads} cores, {ROUNDS} rounds, medians over rounds\n");
    in_process(threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let connections = std::env::args()
        .nth(1)
        .map_or(1, |n| n.parse().expect("CONNECTIONS must be a number"));
    runtime.block_on(over_grpc(connections));
}

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
        },
        RouteRequest {
            tier: Some(Tier::new("enterprise").unwrap()),
            skills: vec![skill("database")],
            residency: vec![],
            priority: Priority::Urgent,
        },
        RouteRequest {
            tier: Some(Tier::new("standard").unwrap()),
            skills: vec![],
            residency: vec!["eu-only".into()],
            priority: Priority::Low,
        },
        RouteRequest {
            tier: None,
            skills: vec![skill("networking"), skill("general")],
            residency: vec![],
            priority: Priority::High,
        },
    ]
}

fn in_process(threads: usize) {
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
        for i in 0..DECISIONS_PER_ROUND {
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
    for (label, encode) in [("decide", false), ("decide + protobuf answer", true)] {
        let mut one = Vec::new();
        let mut all = Vec::new();
        for _ in 0..ROUNDS {
            let began = Instant::now();
            black_box(run(0, encode));
            one.push(DECISIONS_PER_ROUND as f64 / began.elapsed().as_secs_f64());

            let began = Instant::now();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| scope.spawn(move || run(t * 7919, encode)))
                    .collect();
                for h in handles {
                    black_box(h.join().unwrap());
                }
            });
            all.push((DECISIONS_PER_ROUND * threads) as f64 / began.elapsed().as_secs_f64());
        }
        let one = median(&mut one);
        println!(
            "in process, {label}: {:>10.0} decisions/s on 1 thread ({:.0} ns each), {:>10.0} decisions/s on {threads} threads",
            one,
            1e9 / one,
            median(&mut all)
        );
    }
    println!();
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

#[derive(Clone, Copy)]
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

async fn over_grpc(connections: usize) {
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

    for call in [Call::HealthCheck, Call::Route] {
        round(&channels, call, GRPC_WARMUP).await;
        let (mut p50s, mut p99s, mut rates) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (histogram, calls) = round(&channels, call, GRPC_ROUND).await;
            p50s.push(histogram.value_at_quantile(0.50) as f64);
            p99s.push(histogram.value_at_quantile(0.99) as f64);
            rates.push(calls as f64 / GRPC_ROUND.as_secs_f64());
        }
        println!(
            "gRPC loopback, concurrency {CONCURRENCY}, {} connection(s), {:<24} p50 {:>5.0} µs  p99 {:>5.0} µs  {:>7.0} calls/s  (p99 per round: {})",
            channels.len(),
            call.label(),
            median(&mut p50s),
            median(&mut p99s.clone()),
            median(&mut rates),
            p99s.iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for stop in mesh.stops {
        let _ = stop.send(());
    }
}
