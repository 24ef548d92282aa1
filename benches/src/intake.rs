//! `intake-sqlite` and `intake-postgres`: durable `CreateTicket` throughput
//! and latency at concurrency 1, 16, 64 and 256, driven by the same code as
//! `meridian load` (one gateway in this process, on loopback), beside three
//! floors measured in the same run: a bare tonic unary echo, a bare sqlx
//! single-row insert on the same backend, and the disk's fsync rate.

use std::time::Duration;

use meridian::load::{self, LoadArgs, LoadOutput, Scenario as Load, SpawnBackend};

use crate::{
    Sizes,
    progress::Progress,
    report::{Chart, Row, ScenarioReport, Series},
};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub async fn run(
    backend: Backend,
    sizes: &Sizes,
    progress: &Progress,
) -> anyhow::Result<ScenarioReport> {
    let (spawn, name, target_per_s) = match backend {
        Backend::Sqlite => (SpawnBackend::Sqlite, "intake-sqlite", 20_000.0),
        Backend::Postgres => (SpawnBackend::Postgres, "intake-postgres", 8_000.0),
    };
    let concurrency = if sizes.smoke {
        vec![1, 4]
    } else {
        vec![1, 16, 64, 256]
    };
    let (duration, warmup) = if sizes.smoke {
        (Duration::from_millis(300), Duration::from_millis(100))
    } else {
        (Duration::from_secs(5), Duration::from_secs(2))
    };
    progress.say(&format!(
        "concurrency {concurrency:?}, {} rounds of {duration:?}",
        sizes.rounds
    ));
    let args = LoadArgs {
        target: None,
        ca: None,
        token: None,
        spawn: Some(spawn),
        concurrency: concurrency.clone(),
        duration,
        warmup,
        rounds: sizes.rounds,
        connections: 1,
        batch_max: None,
        scenarios: Some(vec![Load::Fsync, Load::Echo, Load::Insert, Load::Create]),
        // The driver's own per-round lines are the progress here.
        quiet: false,
        output: LoadOutput::Table,
    };
    let measured = load::measure_report(&args).await?;

    let mut report = ScenarioReport::new(
        name,
        format!(
            "{} rounds of {:?} after {:?} warm-up per concurrency, 1 HTTP/2 connection; {}",
            sizes.rounds,
            duration,
            warmup,
            measured.durability.clone().unwrap_or_default()
        ),
    );
    if let Some(fsync) = measured.find(Load::Fsync, 1) {
        report.row(
            Row::new("fsync (4 KiB write + fdatasync)", fsync.ops_per_s, "ops/s")
                .latency(fsync.p50_ms, fsync.p99_ms)
                .baseline(),
        );
    }
    let mut best_create: f64 = 0.0;
    let mut best_share: f64 = 0.0;
    for &c in &concurrency {
        let echo = measured.find(Load::Echo, c).map(|r| {
            report.row(
                Row::new(format!("echo c={c}"), r.ops_per_s, "ops/s")
                    .latency(r.p50_ms, r.p99_ms)
                    .baseline(),
            )
        });
        let insert = measured.find(Load::Insert, c).map(|r| {
            report.row(
                Row::new(format!("sqlx insert c={c}"), r.ops_per_s, "ops/s")
                    .latency(r.p50_ms, r.p99_ms)
                    .baseline(),
            )
        });
        if let Some(create) = measured.find(Load::Create, c) {
            let mut row = Row::new(format!("CreateTicket c={c}"), create.ops_per_s, "ops/s")
                .latency(create.p50_ms, create.p99_ms);
            if let Some(echo) = &echo {
                row = row.against(echo);
                best_share = best_share.max(row.ratio.unwrap_or(0.0));
            }
            report.row(row);
            if let Some(insert) = &insert {
                report.row(
                    Row::new(
                        format!("CreateTicket c={c} vs insert"),
                        create.ops_per_s,
                        "ops/s",
                    )
                    .against(insert),
                );
            }
            best_create = best_create.max(create.ops_per_s);
            if create.errors > 0 {
                report.notes.push(format!(
                    "c={c}: {} creates failed; first: {}",
                    create.errors,
                    create.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    report.target(
        "durable creates/s (best concurrency)",
        target_per_s,
        best_create,
        "creates/s",
        true,
    );
    report.target(
        "share of the bare echo's throughput (best concurrency)",
        0.5,
        best_share,
        "×",
        true,
    );

    let series = |scenario: Load, label: &str| Series {
        name: label.to_owned(),
        points: concurrency
            .iter()
            .filter_map(|&c| {
                measured
                    .find(scenario, c)
                    .map(|r| (f64::from(c), r.ops_per_s))
            })
            .collect(),
    };
    report.charts.push(Chart {
        name: format!("{name}-throughput"),
        title: format!("{name}: throughput by concurrency"),
        x_label: "concurrent callers".into(),
        y_label: "operations/s".into(),
        log_x: true,
        log_y: true,
        x_ticks: concurrency
            .iter()
            .map(|&c| (f64::from(c), c.to_string()))
            .collect(),
        series: vec![
            series(Load::Create, "CreateTicket"),
            series(Load::Echo, "echo (floor)"),
            series(Load::Insert, "sqlx insert"),
        ],
    });
    report.charts.push(Chart {
        name: format!("{name}-latency"),
        title: format!("{name}: CreateTicket latency distribution"),
        x_label: "percentile".into(),
        y_label: "latency (ms)".into(),
        log_x: false,
        log_y: true,
        x_ticks: PERCENTILES
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, p.to_string()))
            .collect(),
        series: concurrency
            .iter()
            .filter_map(|&c| {
                let r = measured.find(Load::Create, c)?;
                let values = [r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms];
                Some(Series {
                    name: format!("c={c}"),
                    points: values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, *v))
                        .collect(),
                })
            })
            .collect(),
    });
    Ok(report)
}

const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
