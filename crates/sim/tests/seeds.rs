//! The deterministic simulation, seed after seed, with zero violations.
//!
//! - `cargo test -p meridian-sim --test seeds` runs 200 seeds (CI);
//!   `MERIDIAN_SIM_SEEDS=N` runs N, from `MERIDIAN_SIM_FROM` (default 0).
//! - `MERIDIAN_SEED=N cargo test -p meridian-sim --test seeds` runs seed N
//!   alone and prints its faults and coordinator decisions as they happen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use meridian_sim::{Outcome, SimOptions, run_seed};

/// One simulation at a time in this process: tokio task ids come from one
/// process-wide counter, and two simulations spawning side by side would
/// interleave them and so the order in which a crashed host's sockets close
/// (see `align_task_ids` in `run.rs`).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn explain(outcome: &Outcome) -> String {
    let mut text = format!(
        "seed {} failed: quiesced={} error={:?}, {} violations\nreplay: MERIDIAN_SEED={} cargo test -p meridian-sim --test seeds\n",
        outcome.seed,
        outcome.quiesced,
        outcome.error,
        outcome.report.violations.len(),
        outcome.seed
    );
    for violation in outcome.report.violations.iter().take(20) {
        text.push_str(&format!("  {violation}\n"));
    }
    text.push_str("trace (last 40):\n");
    for line in outcome.trace.iter().rev().take(40).rev() {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

/// The CI seeds, in two halves so that a test runner running tests side
/// by side (the README's `cargo nextest run`) runs them on both cores.
const CI_SEEDS: u64 = 200;

#[test]
fn seeds_hold_every_invariant() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(seed) = env_u64("MERIDIAN_SEED") {
        let outcome = run_seed(
            seed,
            &SimOptions {
                verbose: true,
                ..SimOptions::default()
            },
        );
        eprintln!(
            "seed {seed}: {} writes acknowledged, {} refused, {} takeovers, faults {:?}, {} event copies checked, {} stale writes, quiesced={} in {} simulated ms",
            outcome.writes_acked,
            outcome.writes_refused,
            outcome.takeovers,
            outcome.faults,
            outcome.report.events_checked,
            outcome.report.stale_writes,
            outcome.quiesced,
            outcome.sim_ms
        );
        assert!(outcome.is_clean(), "{}", explain(&outcome));
        return;
    }
    match (env_u64("MERIDIAN_SIM_SEEDS"), env_u64("MERIDIAN_SIM_FROM")) {
        (None, None) => run_seeds(0, CI_SEEDS / 2),
        (seeds, from) => run_seeds(from.unwrap_or(0), seeds.unwrap_or(CI_SEEDS)),
    }
}

#[test]
fn the_second_half_of_the_seeds_holds_every_invariant() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if ["MERIDIAN_SEED", "MERIDIAN_SIM_SEEDS", "MERIDIAN_SIM_FROM"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        eprintln!(
            "\n*** a seed or seed range was chosen: seeds_hold_every_invariant runs it, not the second half ***\n"
        );
        return;
    }
    run_seeds(CI_SEEDS / 2, CI_SEEDS - CI_SEEDS / 2);
}

/// Runs `seeds` seeds from `from`; fails naming every seed with a violation.
fn run_seeds(from: u64, seeds: u64) {
    let options = SimOptions::default();
    let started = std::time::Instant::now();
    let (mut events, mut faults, mut acked, mut by_later) = (0u64, 0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for seed in from..from + seeds {
        let outcome = run_seed(seed, &options);
        events += outcome.report.events_checked;
        faults += outcome.faults.values().sum::<u64>();
        acked += outcome.writes_acked;
        by_later += outcome.taken_by_later_successors;
        if !outcome.is_clean() {
            eprintln!("{}", explain(&outcome));
            failures.push(seed);
        }
    }
    eprintln!(
        "seeds {from}..{}: {seeds} in {:.1}s: {acked} writes acknowledged, {faults} faults, {events} event copies checked, \
         {by_later} pinned tickets taken over by a successor after the primary, {} failed",
        from + seeds,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seeds with violations: {failures:?} (replay one with MERIDIAN_SEED=N)"
    );
    // The workload pins tickets: over this many seeds some takeover must
    // have handed one to a region of its set after the primary (389 over
    // the 200 CI seeds when this was written).
    if seeds >= 50 {
        assert!(
            by_later > 0,
            "no pinned ticket was taken over by a later successor in {seeds} seeds"
        );
    }
}

/// The same seed twice: the same faults at the same simulated times;
/// built with `--cfg tokio_unstable` (see `EXACT_REPLAY`), also the same
/// coordinator decisions, the same acknowledged writes and the same final
/// logs.
/// Seeds 1, 8 and 42 crash or restart hosts early; 42 also takes a region
/// over. Before the fix in `align_task_ids`, each run after the first parted
/// from it within 30 ms of the first restart.
const REPLAYED: [u64; 3] = [1, 8, 42];

#[test]
fn a_seed_replays_exactly() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The probe adds every region's log lengths every 10 simulated ms, so
    // two runs that part are caught where they part.
    let options = SimOptions {
        probe: true,
        ..SimOptions::default()
    };
    for seed in REPLAYED {
        let first = run_seed(seed, &options);
        // Move the process-wide task-id counter off its alignment, as any
        // earlier test in this process might have.
        spawn_tasks(seed as usize % 4 + 1);
        let second = run_seed(seed, &options);
        assert!(first.fault_log.len() > 5, "{:?}", first.fault_log);
        assert!(
            first
                .fault_log
                .iter()
                .any(|f| f.contains("restart") || f.contains("crash")),
            "seed {seed}: {:?}",
            first.fault_log
        );
        assert_eq!(first.fault_log, second.fault_log);
        if meridian_sim::EXACT_REPLAY {
            if let Some(at) = first
                .trace
                .iter()
                .zip(&second.trace)
                .position(|(a, b)| a != b)
            {
                panic!(
                    "seed {seed}: the second run parts from the first at\n  first:  {}\n  second: {}",
                    first.trace[at], second.trace[at]
                );
            }
            assert_eq!(first.trace, second.trace, "seed {seed}");
            assert_eq!(first.fingerprint, second.fingerprint, "seed {seed}");
            assert_eq!(first.writes_acked, second.writes_acked, "seed {seed}");
            assert_eq!(first.report, second.report, "seed {seed}");
        } else {
            // The workspace's .cargo/config.toml sets the flag; a RUSTFLAGS
            // variable replaces it.
            let message = "a_seed_replays_exactly: built without --cfg tokio_unstable (a RUSTFLAGS variable overrides \
                           .cargo/config.toml), so only the fault schedules were compared";
            assert!(
                std::env::var_os("MERIDIAN_REQUIRE_ALL").is_none(),
                "{message}"
            );
            eprintln!("{message}");
        }
    }
    assert_ne!(
        run_seed(43, &SimOptions::default()).fault_log,
        run_seed(42, &SimOptions::default()).fault_log
    );
}

/// Spawns and finishes `count` tokio tasks on a runtime of their own.
fn spawn_tasks(count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..count {
            tokio::spawn(async {}).await.unwrap();
        }
    });
}
