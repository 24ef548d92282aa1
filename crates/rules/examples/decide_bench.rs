//! Routing decisions per second, in process.
//!
//! Build with `cargo test -p meridian-rules --release --no-run` (or
//! `cargo run -p meridian-rules --release --example decide_bench`) and run
//! `target/release/examples/decide_bench [RULES_FILE]`. It decides for a mix
//! of tickets at instants spread over a week (so on-shift, overlap and
//! out-of-hours paths all run), first on one thread, then on every core.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark binary: fail loudly.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use meridian_core::{Priority, RegionId, Skill, Tier};
use meridian_rules::{RegionHealth, RegionLoad, RouteRequest, Rules};

const DECISIONS_PER_THREAD: usize = 1_000_000;

fn main() {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(&path).unwrap(),
        None => include_str!("../../../deploy/rules.example.toml").to_owned(),
    };
    let rules = Rules::parse("rules.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let health: HashMap<RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let load: HashMap<RegionId, RegionLoad> = rules
        .regions()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.id.clone(),
                RegionLoad {
                    open_tickets: 50 * i as u32,
                },
            )
        })
        .collect();
    let skill = |s: &str| Skill::new(s).unwrap();
    let requests = [
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
    ];
    // 1,009 instants (a prime, so requests and instants do not stay in step)
    // spread over a week starting on a Monday.
    let start: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    let instants: Vec<Timestamp> = (0..1009)
        .map(|i| {
            start
                .checked_add(SignedDuration::from_secs(i * 7 * 86_400 / 1009))
                .unwrap()
        })
        .collect();

    let run = |offset: usize| {
        let mut chosen = 0usize;
        for i in 0..DECISIONS_PER_THREAD {
            let k = i + offset;
            let d = rules.decide(
                instants[k % instants.len()],
                &health,
                &load,
                &requests[k % requests.len()],
            );
            chosen += usize::from(black_box(&d).region.is_some());
        }
        chosen
    };

    let began = Instant::now();
    let chosen = run(0);
    let secs = began.elapsed().as_secs_f64();
    println!(
        "1 thread: {DECISIONS_PER_THREAD} decisions in {secs:.3} s = {:.0} decisions/s ({:.0} ns each; {chosen} routed)",
        DECISIONS_PER_THREAD as f64 / secs,
        secs * 1e9 / DECISIONS_PER_THREAD as f64
    );

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let began = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || run(t * 7919)))
            .collect();
        for h in handles {
            black_box(h.join().unwrap());
        }
    });
    let secs = began.elapsed().as_secs_f64();
    let total = DECISIONS_PER_THREAD * threads;
    println!(
        "{threads} threads: {total} decisions in {secs:.3} s = {:.0} decisions/s",
        total as f64 / secs
    );
}
