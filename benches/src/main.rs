//! `meridian-bench`: Meridian's benchmark suite. Every scenario runs a
//! warm-up and several rounds, reports medians and percentiles, and sets
//! each figure beside a baseline measured in the same run on the same
//! machine, because these machines are shared and noisy:
//!
//! | scenario | measures | baseline |
//! |---|---|---|
//! | `intake-sqlite`, `intake-postgres` | durable `CreateTicket` at concurrency 1–256 | bare tonic echo, bare sqlx insert, fsync rate |
//! | `handoff` | handoff latency over mTLS, direct and with 40/150 ms delay | one mTLS round trip plus one durable commit |
//! | `route` | routing decisions in process and over gRPC | a no-op gRPC call |
//! | `catch-up` | events/s applied after a partition left N behind | `apply_remote` in batches with no network |
//! | `trace-overhead` | intake with export off, 100 % and 10 % | export off |
//! | `tokens` | bearer-token verifications/s: RS256, ES256, EdDSA | ring's bare signature check of the same token |
//! | `console` | a logged-in user's p99 while 500 slow connections are held | the same request on an idle console |
//! | `scale` | RSS and list latency at 1,000,000 tickets; a simulated week of ten regions | — |
//! | `stalled` | gateway RSS and `GetStatus` latency with 1,000 `WatchEvents` streams never read | the same gateway idle |
//! | `sweep` | one continuity sweep over 100,000 open tickets: wall time, CPU, share of one core at 60 s | listing the same tickets |
//! | `search` | text search p50/p99 at 1,000,000 tickets, SQLite and PostgreSQL | `list_tickets`' first page on the same store |
//! | `notify` | notification latency from the event's commit to an HTTPS receiver, one at a time and in a burst | a bare HTTPS POST on a fresh connection |
//!
//! `cargo run --release -p meridian-bench` runs all of them;
//! `cargo run --release -p meridian-bench -- handoff` runs one; `--smoke`
//! runs tiny sizes (CI checks that every scenario completes and reports,
//! never its speed); `--output json`; `--out DIR` writes the report as
//! JSON and markdown with one SVG per chart.

#![forbid(unsafe_code)]

mod assign;
mod catchup;
mod console;
mod handoff;
mod intake;
mod mail;
mod notify;
mod progress;
mod report;
mod route;
mod scale;
mod search;
mod stalled;
mod svg;
mod sweep;
mod tokens;
mod trace;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use crate::{
    progress::Progress,
    report::{Machine, Report, ScenarioReport},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    IntakeSqlite,
    IntakePostgres,
    Handoff,
    Route,
    CatchUp,
    TraceOverhead,
    Tokens,
    Console,
    Scale,
    Stalled,
    Sweep,
    Notify,
    MailIntake,
    Assign,
    Search,
}

impl Scenario {
    const ALL: [Scenario; 15] = [
        Scenario::IntakeSqlite,
        Scenario::IntakePostgres,
        Scenario::Handoff,
        Scenario::Route,
        Scenario::CatchUp,
        Scenario::TraceOverhead,
        Scenario::Tokens,
        Scenario::Console,
        Scenario::Scale,
        Scenario::Stalled,
        Scenario::Sweep,
        Scenario::Notify,
        Scenario::Assign,
        Scenario::Search,
        Scenario::MailIntake,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::IntakeSqlite => "intake-sqlite",
            Scenario::IntakePostgres => "intake-postgres",
            Scenario::Handoff => "handoff",
            Scenario::Route => "route",
            Scenario::CatchUp => "catch-up",
            Scenario::TraceOverhead => "trace-overhead",
            Scenario::Tokens => "tokens",
            Scenario::Console => "console",
            Scenario::Scale => "scale",
            Scenario::Stalled => "stalled",
            Scenario::MailIntake => "mail-intake",
            Scenario::Sweep => "sweep",
            Scenario::Notify => "notify",
            Scenario::Assign => "assign",
            Scenario::Search => "search",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Parser)]
#[command(
    name = "meridian-bench",
    about = "Meridian's benchmarks, each beside its baseline measured in the same run"
)]
struct Args {
    /// Scenarios to run (all when none is given).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Tiny sizes: checks that every scenario completes and reports.
    #[arg(long)]
    smoke: bool,
    /// Measured rounds per figure (the median is reported).
    #[arg(long, value_name = "R")]
    rounds: Option<u32>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write report.json, report.md and one SVG per chart here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Internal: serve one gateway from this config in this process (the
    /// scale scenario measures a gateway's memory in a process of its own).
    #[arg(long, hide = true, value_name = "CONFIG")]
    serve_gateway: Option<PathBuf>,
}

/// How big each scenario runs: the full suite or the CI smoke run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub smoke: bool,
    pub rounds: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(trace::CHILD_FLAG) {
        return match trace::child_main(&raw[2..]).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("trace child: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    // Logs of the services under test, on request (`RUST_LOG=info`).
    let _telemetry = match std::env::var_os("RUST_LOG") {
        Some(_) => meridian_telemetry::Telemetry::init(&meridian_telemetry::TelemetryConfig::new(
            "meridian-bench",
        ))
        .ok(),
        None => None,
    };
    if let Some(config) = &args.serve_gateway {
        return match scale::serve_gateway(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("gateway: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("meridian-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let chosen: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let rounds = args.rounds.unwrap_or(if args.smoke { 1 } else { 3 });
    if rounds == 0 || rounds > 20 {
        anyhow::bail!("--rounds {rounds}: must be between 1 and 20");
    }
    let sizes = Sizes {
        smoke: args.smoke,
        rounds,
    };
    let require_all = std::env::var("MERIDIAN_REQUIRE_ALL").is_ok_and(|v| v == "1");
    let progress = Progress::new(args.quiet, chosen.len());
    let mut report = Report {
        mode: if args.smoke { "smoke" } else { "full" },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        machine: Machine::read(),
        scenarios: Vec::new(),
        skipped: Vec::new(),
    };
    let mut failed = false;
    for (i, scenario) in chosen.iter().enumerate() {
        progress.scenario(i + 1, scenario.name());
        let started = Instant::now();
        let result: anyhow::Result<Option<ScenarioReport>> = match scenario {
            Scenario::IntakeSqlite => intake::run(intake::Backend::Sqlite, &sizes, &progress)
                .await
                .map(Some),
            Scenario::IntakePostgres => {
                if std::env::var_os("DATABASE_URL").is_none() && !require_all {
                    let reason = "DATABASE_URL is not set: no PostgreSQL to measure";
                    eprintln!("\n*** intake-postgres SKIPPED: {reason} ***");
                    report
                        .skipped
                        .push((scenario.name().to_owned(), reason.to_owned()));
                    Ok(None)
                } else {
                    intake::run(intake::Backend::Postgres, &sizes, &progress)
                        .await
                        .map(Some)
                }
            }
            Scenario::Handoff => handoff::run(&sizes, &progress).await.map(Some),
            Scenario::Route => route::run(&sizes, &progress).await.map(Some),
            Scenario::CatchUp => catchup::run(&sizes, &progress).await.map(Some),
            Scenario::TraceOverhead => trace::run(&sizes, &progress).await.map(Some),
            Scenario::Tokens => tokens::run(&sizes, &progress).await.map(Some),
            Scenario::Console => console::run(&sizes, &progress).await.map(Some),
            Scenario::Scale => scale::run(&sizes, &progress).await.map(Some),
            Scenario::Stalled => stalled::run(&sizes, &progress).await.map(Some),
            // Dovecot says SKIPPED itself, and fails under MERIDIAN_REQUIRE_ALL=1.
            Scenario::MailIntake => {
                match meridian_test_support::mail_servers::Dovecot::start("mail-intake") {
                    Some(server) => mail::run(&server, &sizes, &progress).await.map(Some),
                    None => {
                        report.skipped.push((
                            scenario.name().to_owned(),
                            "dovecot is not installed (apt-get install dovecot-imapd)".to_owned(),
                        ));
                        Ok(None)
                    }
                }
            }
            Scenario::Sweep => sweep::run(&sizes, &progress).await.map(Some),
            Scenario::Notify => notify::run(&sizes, &progress).await.map(Some),
            Scenario::Assign => assign::run(&sizes, &progress).await.map(Some),
            Scenario::Search => search::run(&sizes, &progress).await.map(Some),
        };
        match result {
            Ok(Some(mut scenario_report)) => {
                scenario_report.seconds = started.elapsed().as_secs_f64();
                report.scenarios.push(scenario_report);
            }
            Ok(None) => {}
            Err(error) => {
                eprintln!("\n{} failed: {error:#}", scenario.name());
                report
                    .skipped
                    .push((scenario.name().to_owned(), format!("failed: {error:#}")));
                failed = true;
            }
        }
    }
    progress.finish();
    report.machine.load_after = report::load_average();

    if let Some(dir) = &args.out {
        write_out(&report, dir)?;
    }
    match args.output {
        Output::Table => print!("{}", report.to_table()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Markdown => print!("{}", report.to_markdown(".")),
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// report.json, report.md and the pictures, side by side.
fn write_out(report: &Report, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("report.json", &serde_json::to_string_pretty(report)?)?;
    write("report.md", &report.to_markdown("."))?;
    for scenario in &report.scenarios {
        for chart in &scenario.charts {
            write(&format!("{}.svg", chart.name), &svg::render(chart)?)?;
        }
    }
    eprintln!("wrote {}", dir.display());
    Ok(())
}
