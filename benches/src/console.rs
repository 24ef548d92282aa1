//! The console under slow clients: a logged-in user's requests (a fresh
//! HTTPS connection each, `GET /api/session` with a bearer token, as a
//! browser opening the console does) on an idle console, and the same
//! requests while 500 slow connections are held. The slow clients come
//! from 20 loopback addresses (25 each, under the per-address cap), a
//! third each idle TCP, request heads a byte a second and `POST /login`
//! forms a byte every two seconds; each reconnects at once when the
//! console cuts it off, so 500 are held throughout.
//!
//! Rounds alternate idle and loaded; the reported figure is the median of
//! the rounds' p99. The harness is the router tests' own
//! (`services/router/tests/console_support`).

// A benchmark stops loudly on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../services/router/tests/console_support/mod.rs"]
mod console_support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use console_support::{Console, Slow, slow_client};
use hdrhistogram::Histogram;
use meridian_auth::Role;

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport, ms},
};

/// Addresses the slow clients come from (127.0.0.2 onwards).
const SLOW_ADDRESSES: u8 = 20;

/// `requests` of the logged-in user, one after another; their latencies.
async fn user_requests(console: &Console, bearer: &str, requests: u32) -> Histogram<u64> {
    let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..requests {
        let started = Instant::now();
        let answer = console
            .get("/api/session", &[("authorization", bearer)])
            .await
            .expect("the console answers");
        assert_eq!(answer.status, 200, "{}", answer.body);
        times.record(started.elapsed().as_micros() as u64).unwrap();
    }
    times
}

/// Keeps `count` slow connections held until `stop`: each client
/// reconnects as soon as the console cuts it off.
fn hold_slow_connections(
    console: &Arc<Console>,
    count: usize,
    holding: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinSet<()> {
    let kinds = [Slow::LoginBody, Slow::Head, Slow::IdleTcp];
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..count {
        let kind = kinds[n % kinds.len()];
        let from = Ipv4Addr::new(127, 0, 0, 2 + (n % usize::from(SLOW_ADDRESSES)) as u8);
        let (console, holding, stop) = (console.clone(), holding.clone(), stop.clone());
        clients.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let cut = slow_client(
                    console.clone(),
                    kind,
                    from,
                    holding.clone(),
                    Duration::from_secs(60),
                )
                .await;
                assert!(
                    cut.is_some(),
                    "a slow {kind:?} client was not cut off within 60 s"
                );
            }
        });
    }
    clients
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (slow_count, requests) = if sizes.smoke { (30, 20) } else { (500, 300) };
    let console = Arc::new(Console::start(true).await);
    let bearer = format!("Bearer {}", console.token("sre-bench", Role::Sre));
    // Warm-up: TLS session setup paths, the verifier, the allocator.
    user_requests(&console, &bearer, requests / 10 + 1).await;

    let mut idle_p99 = Vec::new();
    let mut loaded_p99 = Vec::new();
    let mut idle_all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut loaded_all = idle_all.clone();
    let mut held_min = usize::MAX;
    for round in 1..=sizes.rounds {
        progress.say(&format!("round {round}/{}: idle console", sizes.rounds));
        let idle = user_requests(&console, &bearer, requests).await;
        idle_p99.push(idle.value_at_quantile(0.99));
        idle_all.add(&idle).unwrap();

        progress.say(&format!(
            "round {round}/{}: {slow_count} slow connections",
            sizes.rounds
        ));
        let holding = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = hold_slow_connections(&console, slow_count, &holding, &stop);
        let deadline = Instant::now() + Duration::from_secs(30);
        while holding.load(Ordering::SeqCst) < slow_count {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the slow clients did not all connect within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut loaded = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for _ in 0..requests {
            held_min = held_min.min(holding.load(Ordering::SeqCst));
            loaded
                .add(&user_requests(&console, &bearer, 1).await)
                .unwrap();
        }
        loaded_p99.push(loaded.value_at_quantile(0.99));
        loaded_all.add(&loaded).unwrap();
        stop.store(true, Ordering::SeqCst);
        clients.abort_all();
        while clients.join_next().await.is_some() {}
    }

    let median = |values: &mut Vec<u64>| {
        values.sort_unstable();
        values[values.len() / 2]
    };
    let mut report = ScenarioReport::new(
        "console",
        format!(
            "{requests} GET /api/session per round, each on a fresh HTTPS connection, {} rounds; \
             {slow_count} slow connections from {SLOW_ADDRESSES} addresses",
            sizes.rounds
        ),
    );
    let idle = report.row(
        Row::new("p99, idle console", ms(median(&mut idle_p99)), "ms")
            .latency(
                ms(idle_all.value_at_quantile(0.5)),
                ms(idle_all.value_at_quantile(0.99)),
            )
            .baseline(),
    );
    let loaded = Row::new(
        format!("p99, {slow_count} slow connections held"),
        ms(median(&mut loaded_p99)),
        "ms",
    )
    .latency(
        ms(loaded_all.value_at_quantile(0.5)),
        ms(loaded_all.value_at_quantile(0.99)),
    )
    .against(&idle);
    report.row(loaded.clone());
    report.target(
        "p99 beside the slow connections",
        1000.0,
        loaded.value,
        "ms",
        false,
    );
    report.notes.push(format!(
        "at least {held_min} of {slow_count} slow connections were held at every loaded request \
         (a cut-off client reconnects at once); the slow clients run in the benchmark's own process"
    ));
    Ok(report)
}
