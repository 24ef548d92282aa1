//! The deterministic simulation, seed after seed, with zero violations.
//!
//! - `cargo test -p meridian-sim --test seeds` runs 200 seeds (CI);
//!   `MERIDIAN_SIM_SEEDS=N` runs N, from `MERIDIAN_SIM_FROM` (default 0).
//! - `MERIDIAN_SEED=N cargo test -p meridian-sim --test seeds` runs seed N
//!   alone and prints its faults and coordinator decisions as they happen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use meridian_sim::{Outcome, SimOptions, run_seed};

/// One simulation at a time in this process: run beside another, a seed's
/// interleaving has been seen to shift by one quiescence poll (cause not
/// yet found; see ARCHITECTURE.md, "Deterministic simulation"), and the two
/// would only share two cores anyway.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
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

#[test]
fn seeds_hold_every_invariant() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(seed) = env_u64("MERIDIAN_SEED") {
        let outcome = run_seed(seed, &SimOptions { verbose: true, ..SimOptions::default() });
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
    let seeds = env_u64("MERIDIAN_SIM_SEEDS").unwrap_or(200);
    let from = env_u64("MERIDIAN_SIM_FROM").unwrap_or(0);
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
        "{seeds} seeds in {:.1}s: {acked} writes acknowledged, {faults} faults, {events} event copies checked, \
         {by_later} pinned tickets taken over by a successor after the primary, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "seeds with violations: {failures:?} (replay one with MERIDIAN_SEED=N)");
    // The workload pins tickets: over this many seeds some takeover must
    // have handed one to a region of its set after the primary.
    if seeds >= 50 {
        assert!(by_later > 0, "no pinned ticket was taken over by a later successor in {seeds} seeds");
    }
}

/// The same seed twice: the same faults at the same simulated times;
/// built with `--cfg tokio_unstable` (see `EXACT_REPLAY`), also the same
/// coordinator decisions, the same acknowledged writes and the same final
/// logs.
#[test]
fn a_seed_replays_exactly() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let options = SimOptions::default();
    let first = run_seed(42, &options);
    let second = run_seed(42, &options);
    assert!(first.fault_log.len() > 5, "{:?}", first.fault_log);
    assert_eq!(first.fault_log, second.fault_log);
    assert_ne!(run_seed(43, &options).fault_log, first.fault_log);
    if meridian_sim::EXACT_REPLAY {
        assert_eq!(first.trace, second.trace);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.writes_acked, second.writes_acked);
        assert_eq!(first.report, second.report);
    } else {
        // The workspace's .cargo/config.toml sets the flag; a RUSTFLAGS
        // variable replaces it.
        let message = "a_seed_replays_exactly: built without --cfg tokio_unstable (a RUSTFLAGS variable overrides \
                       .cargo/config.toml), so only the fault schedules were compared";
        assert!(std::env::var_os("MERIDIAN_REQUIRE_ALL").is_none(), "{message}");
        eprintln!("{message}");
    }
}
