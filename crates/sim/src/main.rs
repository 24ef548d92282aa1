//! `meridian-sim`: runs many seeds of the deterministic simulation and
//! prints a summary.
//!
//! ```text
//! cargo run -p meridian-sim --release -- --seeds 1000 [--from 0] [--work-ms 5000] [--verbose]
//! ```
//!
//! Exits with status 1 if any seed broke an invariant, naming the seed and
//! the command that replays it.
//!
//! `--replay N` runs seed `--from` N times with the state probe on (every
//! region's log lengths every 10 simulated ms) and compares each run with
//! the first, printing the first line where they part.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use meridian_sim::{SimOptions, run_seed};

struct Args {
    seeds: u64,
    from: u64,
    options: SimOptions,
    replay: Option<u64>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        from: 0,
        options: SimOptions::default(),
        replay: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = iter
                .next()
                .ok_or_else(|| format!("{name} needs a number"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--from" => args.from = number("--from")?,
            "--work-ms" => args.options.work = Duration::from_millis(number("--work-ms")?),
            "--verbose" => args.options.verbose = true,
            "--replay" => args.replay = Some(number("--replay")?),
            "--help" | "-h" => {
                return Err(
                    "usage: meridian-sim [--seeds N] [--from S] [--work-ms MS] [--verbose] [--replay N]".to_owned()
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Some(runs) = args.replay {
        return replay(args.from, runs, &args.options);
    }
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut events, mut acked, mut tickets, mut stale, mut takeovers, mut writes, mut refused) =
        (0, 0, 0, 0, 0, 0, 0);
    let mut failed = Vec::new();
    for seed in args.from..args.from + args.seeds {
        let outcome = run_seed(seed, &args.options);
        for (kind, count) in &outcome.faults {
            *faults.entry(kind).or_default() += count;
        }
        events += outcome.report.events_checked;
        acked += outcome.report.acked_checked;
        tickets += outcome.report.tickets_checked;
        stale += outcome.report.stale_writes;
        takeovers += outcome.takeovers;
        writes += outcome.writes_acked;
        refused += outcome.writes_refused;
        if !outcome.is_clean() {
            eprintln!(
                "seed {seed}: FAILED (quiesced={}, error={:?}): {} violations; replay with MERIDIAN_SEED={seed} cargo test -p meridian-sim --test seeds",
                outcome.quiesced,
                outcome.error,
                outcome.report.violations.len()
            );
            for violation in outcome.report.violations.iter().take(10) {
                eprintln!("  {violation}");
            }
            failed.push(seed);
        }
        let done = seed - args.from + 1;
        if done % 10 == 0 || done == args.seeds {
            eprintln!(
                "{done}/{} seeds, {} failed, {:.1}s",
                args.seeds,
                failed.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    println!(
        "seeds                   {} (from {})",
        args.seeds, args.from
    );
    println!(
        "wall time               {:.1}s ({:.0} ms per seed)",
        elapsed.as_secs_f64(),
        elapsed.as_millis() as f64 / args.seeds.max(1) as f64
    );
    println!("writes acknowledged     {writes}");
    println!("writes refused          {refused}");
    println!("takeovers               {takeovers}");
    println!("event copies checked    {events}");
    println!("acked writes checked    {acked} (each looked for in every region)");
    println!("tickets checked         {tickets}");
    println!("stale writes (conflicts){stale:>6}");
    for (kind, count) in &faults {
        println!("faults: {kind:<17}{count}");
    }
    println!(
        "violations              {} seeds {:?}",
        failed.len(),
        failed
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `seed` `runs` times and reports where any run parts from the first.
fn replay(seed: u64, runs: u64, options: &SimOptions) -> ExitCode {
    let options = SimOptions {
        probe: true,
        ..options.clone()
    };
    let first = run_seed(seed, &options);
    eprintln!(
        "run 1: {} trace lines, fingerprint {:016x}",
        first.trace.len(),
        first.fingerprint
    );
    let mut parted = 0;
    for run in 2..=runs {
        let outcome = run_seed(seed, &options);
        let split = first
            .trace
            .iter()
            .zip(&outcome.trace)
            .position(|(a, b)| a != b);
        match split {
            None if first.trace.len() == outcome.trace.len()
                && first.fingerprint == outcome.fingerprint =>
            {
                eprintln!("run {run}: identical");
            }
            _ => {
                parted += 1;
                let at = split.unwrap_or(first.trace.len().min(outcome.trace.len()));
                eprintln!("run {run}: parts at trace line {at}");
                for line in at.saturating_sub(3)..(at + 1).min(first.trace.len()) {
                    eprintln!("  first: {}", first.trace[line]);
                }
                for line in at.saturating_sub(3)..(at + 1).min(outcome.trace.len()) {
                    eprintln!("  this:  {}", outcome.trace[line]);
                }
            }
        }
    }
    println!("seed {seed}: {runs} runs, {parted} parted from the first");
    if parted == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
