//! `meridian-sim`: runs many seeds of the deterministic simulation and
//! prints a summary.
//!
//! ```text
//! cargo run -p meridian-sim --release -- --seeds 1000 [--from 0] [--work-ms 5000] [--verbose]
//! ```
//!
//! Exits with status 1 if any seed broke an invariant, naming the seed and
//! the command that replays it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use meridian_sim::{SimOptions, run_seed};

struct Args {
    seeds: u64,
    from: u64,
    options: SimOptions,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { seeds: 100, from: 0, options: SimOptions::default() };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = iter.next().ok_or_else(|| format!("{name} needs a number"))?;
            value.parse().map_err(|_| format!("{name}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--from" => args.from = number("--from")?,
            "--work-ms" => args.options.work = Duration::from_millis(number("--work-ms")?),
            "--verbose" => args.options.verbose = true,
            "--help" | "-h" => {
                return Err("usage: meridian-sim [--seeds N] [--from S] [--work-ms MS] [--verbose]".to_owned());
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
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut events, mut acked, mut tickets, mut stale, mut takeovers, mut writes, mut refused) = (0, 0, 0, 0, 0, 0, 0);
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
            eprintln!("{done}/{} seeds, {} failed, {:.1}s", args.seeds, failed.len(), started.elapsed().as_secs_f64());
        }
    }
    let elapsed = started.elapsed();
    println!("seeds                   {} (from {})", args.seeds, args.from);
    println!("wall time               {:.1}s ({:.0} ms per seed)", elapsed.as_secs_f64(), elapsed.as_millis() as f64 / args.seeds.max(1) as f64);
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
    println!("violations              {} seeds {:?}", failed.len(), failed);
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
