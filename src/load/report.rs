//! The report of a load run: one row per scenario and concurrency (the
//! median round), rendered as a table for people or one JSON object.

use std::fmt::Write as _;

use meridian_store::WriterStats;
use serde::Serialize;

use super::{
    SpawnBackend,
    driver::{CpuUse, QueueDepth, Round},
};

/// What a row measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `CreateTicket` on the gateway: the thing under test.
    Create,
    /// `Store::create_ticket` in-process on the spawned gateway's store: the
    /// same durable create without gRPC.
    Store,
    /// `grpc.health.v1.Health/Check` on a bare tonic server: the floor of
    /// any unary gRPC call on this machine.
    Echo,
    /// One sqlx `INSERT` of a small row per implicit transaction.
    Insert,
    /// One 4 KiB write and `fdatasync` of a file: the disk's commit floor.
    Fsync,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Create,
        Scenario::Store,
        Scenario::Echo,
        Scenario::Insert,
        Scenario::Fsync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Create => "create",
            Scenario::Store => "store",
            Scenario::Echo => "echo",
            Scenario::Insert => "insert",
            Scenario::Fsync => "fsync",
        }
    }
}

/// The store writer's group commit during a round (spawned gateways only).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GroupCommit {
    pub transactions: u64,
    pub commands: u64,
    /// The average batch: how many creates one commit (one fsync) carried.
    pub commands_per_transaction: f64,
    pub transactions_per_s: f64,
    /// Batches that failed as a whole and were retried one write at a time.
    pub batch_retries: u64,
}

impl GroupCommit {
    pub(crate) fn between(before: WriterStats, after: WriterStats, round: &Round) -> Self {
        let transactions = after.transactions.saturating_sub(before.transactions);
        let commands = after.commands.saturating_sub(before.commands);
        let secs = round.elapsed.as_secs_f64();
        Self {
            transactions,
            commands,
            commands_per_transaction: if transactions > 0 {
                commands as f64 / transactions as f64
            } else {
                0.0
            },
            transactions_per_s: if secs > 0.0 {
                transactions as f64 / secs
            } else {
                0.0
            },
            batch_retries: after.batch_retries.saturating_sub(before.batch_retries),
        }
    }
}

/// One scenario at one concurrency: the median of its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub concurrency: u32,
    /// Successful operations per second in the median round (by ops/s).
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Successful operations in the median round.
    pub ops: u64,
    /// Failed operations over all measured rounds.
    pub errors: u64,
    /// `ops_per_s` over the echo floor's at the same concurrency.
    pub ratio_to_echo: Option<f64>,
    pub rounds_ops_per_s: Vec<f64>,
    pub first_error: Option<String>,
    pub cpu: Option<CpuUse>,
    pub writer_queue: Option<QueueDepth>,
    pub group_commit: Option<GroupCommit>,
}

impl Row {
    /// The row of the median round; `rounds` must not be empty.
    pub(crate) fn from_rounds(
        scenario: Scenario,
        concurrency: u32,
        rounds: Vec<(Round, Option<GroupCommit>)>,
    ) -> Option<Self> {
        let errors = rounds.iter().map(|(round, _)| round.errors).sum();
        let first_error = rounds
            .iter()
            .find_map(|(round, _)| round.first_error.clone());
        let rounds_ops_per_s: Vec<f64> =
            rounds.iter().map(|(round, _)| round.ops_per_s()).collect();
        let mut order: Vec<usize> = (0..rounds.len()).collect();
        order.sort_by(|&a, &b| rounds_ops_per_s[a].total_cmp(&rounds_ops_per_s[b]));
        // For an even count, the upper of the two middle rounds.
        let median = *order.get(order.len() / 2)?;
        let (round, group_commit) = rounds.into_iter().nth(median)?;
        let ms = |quantile: f64| round.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
        Some(Self {
            scenario,
            concurrency,
            ops_per_s: round.ops_per_s(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: round.latency_us.max() as f64 / 1000.0,
            ops: round.ops,
            errors,
            ratio_to_echo: None,
            rounds_ops_per_s,
            first_error,
            cpu: round.cpu,
            writer_queue: round.queue_depth,
            group_commit,
        })
    }
}

/// Everything one `meridian load` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `spawn` or the URL of the gateway that was driven.
    pub target: String,
    pub backend: Option<SpawnBackend>,
    /// What an acknowledged create survives (spawned gateways only).
    pub durability: Option<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: u32,
    /// HTTP/2 connections per gRPC scenario (at most one per worker).
    pub connections: u32,
    pub cpus: usize,
    pub rows: Vec<Row>,
}

impl Report {
    /// Fills in every row's ratio to the echo floor at its concurrency.
    pub(crate) fn compute_ratios(&mut self) {
        let echo: Vec<(u32, f64)> = self
            .rows
            .iter()
            .filter(|row| row.scenario == Scenario::Echo)
            .map(|row| (row.concurrency, row.ops_per_s))
            .collect();
        for row in &mut self.rows {
            if matches!(
                row.scenario,
                Scenario::Create | Scenario::Store | Scenario::Insert
            ) {
                row.ratio_to_echo = echo
                    .iter()
                    .find(|(concurrency, _)| *concurrency == row.concurrency)
                    .filter(|(_, floor)| *floor > 0.0)
                    .map(|(_, floor)| row.ops_per_s / floor);
            }
        }
    }

    pub fn find(&self, scenario: Scenario, concurrency: u32) -> Option<&Row> {
        self.rows
            .iter()
            .find(|row| row.scenario == scenario && row.concurrency == concurrency)
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let backend = self
            .backend
            .map(|b| format!(" {}", b.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "meridian load: {}{backend}, {} s x {} rounds (median shown) after {} s warm-up, {} connection(s), {} cpus",
            self.target, self.duration_s, self.rounds, self.warmup_s, self.connections, self.cpus
        );
        if let Some(durability) = &self.durability {
            let _ = writeln!(out, "durability: {durability}");
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
            "scenario",
            "conc",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "x echo"
        );
        for row in &self.rows {
            let ratio = row
                .ratio_to_echo
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>7}",
                row.scenario.as_str(),
                row.concurrency,
                row.ops_per_s,
                row.p50_ms,
                row.p90_ms,
                row.p99_ms,
                row.p999_ms,
                row.max_ms,
                row.errors,
                ratio
            );
        }
        let _ = writeln!(
            out,
            "\necho = grpc.health.v1 Check on a bare tonic server on loopback (the floor of any unary call);\n\
             store = Store::create_ticket in-process on the gateway's store (the create without gRPC);\n\
             insert = one sqlx INSERT per implicit transaction on the same backend; \
             fsync = 4 KiB write + fdatasync (the disk's floor for one commit per write)."
        );

        let fsync = self
            .rows
            .iter()
            .find(|row| row.scenario == Scenario::Fsync)
            .map(|row| row.ops_per_s);
        let mut notes = Vec::new();
        for row in &self.rows {
            let mut parts = vec![format!(
                "{:.0} ops/s (rounds: {})",
                row.ops_per_s,
                row.rounds_ops_per_s
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            if row.scenario == Scenario::Create
                && let Some(insert) = self.find(Scenario::Insert, row.concurrency)
                && insert.ops_per_s > 0.0
            {
                parts.push(format!(
                    "{:.1}x the bare insert",
                    row.ops_per_s / insert.ops_per_s
                ));
            }
            if let Some(group) = &row.group_commit {
                let floor = fsync
                    .map(|f| format!(" (disk floor {f:.0} fsync/s)"))
                    .unwrap_or_default();
                parts.push(format!(
                    "group commit {:.1} creates per transaction, {:.0} commits/s{floor}",
                    group.commands_per_transaction, group.transactions_per_s
                ));
                if group.batch_retries > 0 {
                    parts.push(format!(
                        "{} batches retried one by one",
                        group.batch_retries
                    ));
                }
            }
            if let Some(queue) = &row.writer_queue {
                parts.push(format!(
                    "writer queue mean {:.1}, max {}",
                    queue.mean, queue.max
                ));
            }
            if let Some(cpu) = &row.cpu {
                parts.push(format!(
                    "this process {:.0}% CPU ({:.0} us per op), machine {:.0}% busy",
                    cpu.process_pct, cpu.process_us_per_op, cpu.machine_busy_pct
                ));
            }
            if let Some(error) = &row.first_error {
                parts.push(format!("first error: {error}"));
            }
            notes.push(format!(
                "  {} c={}: {}",
                row.scenario.as_str(),
                row.concurrency,
                parts.join("; ")
            ));
        }
        let _ = writeln!(out, "\nwhere the time goes:");
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}
