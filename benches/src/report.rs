//! What a run measured: one [`ScenarioReport`] per scenario, each with its
//! rows (a figure, its percentiles, and its ratio to the baseline measured
//! in the same run), the targets checked against them, and the
//! series its pictures are drawn from. Rendered as a table for people and
//! as one JSON object for tools.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The percentiles a latency chart shows, left to right.
pub const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// A latency histogram in microseconds, from 1 µs to a minute.
#[allow(clippy::expect_used)] // constant bounds, valid
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds as milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The percentiles of [`PERCENTILES`] of one measurement, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Quantiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl From<&Histogram<u64>> for Quantiles {
    fn from(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl Chart {
    /// Latency by percentile (log scale), one line per named measurement.
    pub fn percentiles(name: &str, title: &str, series: &[(String, Quantiles)]) -> Chart {
        Chart {
            name: name.into(),
            title: title.into(),
            x_label: "percentile".into(),
            y_label: "latency (ms)".into(),
            log_x: false,
            log_y: true,
            x_ticks: PERCENTILES
                .iter()
                .enumerate()
                .map(|(i, p)| (i as f64, (*p).to_owned()))
                .collect(),
            series: series
                .iter()
                .map(|(name, q)| Series {
                    name: name.clone(),
                    points: [q.p50, q.p90, q.p99, q.p999, q.max]
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, ms(*v)))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub value: f64,
    /// `ops/s`, `events/s`, `ms`, `MB`, `s`.
    pub unit: &'static str,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The label of the row this one is measured against.
    pub baseline: Option<String>,
    /// `value / baseline.value`.
    pub ratio: Option<f64>,
    /// Whether this row is itself a baseline.
    pub is_baseline: bool,
}

impl Row {
    pub fn new(label: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            label: label.into(),
            value,
            unit,
            p50_ms: None,
            p99_ms: None,
            baseline: None,
            ratio: None,
            is_baseline: false,
        }
    }

    pub fn latency(mut self, p50_ms: f64, p99_ms: f64) -> Self {
        self.p50_ms = Some(p50_ms);
        self.p99_ms = Some(p99_ms);
        self
    }

    pub fn baseline(mut self) -> Self {
        self.is_baseline = true;
        self
    }

    /// Measured against `baseline`: the ratio of the values.
    pub fn against(mut self, baseline: &Row) -> Self {
        self.baseline = Some(baseline.label.clone());
        self.ratio = (baseline.value > 0.0).then(|| self.value / baseline.value);
        self
    }
}

/// One of the targets, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// A line of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A picture drawn next to `BENCHMARKS.md`.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// File name without extension.
    pub name: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    /// Names for the x positions when they are categories (percentiles).
    pub x_ticks: Vec<(f64, String)>,
    pub series: Vec<Series>,
}

/// Everything one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    /// What was run, in a line: sizes, rounds, backend.
    pub setup: String,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub charts: Vec<Chart>,
    /// Why a target was missed, what the figure leaves out.
    pub notes: Vec<String>,
}

impl ScenarioReport {
    pub fn new(name: &'static str, setup: impl Into<String>) -> Self {
        Self {
            name,
            setup: setup.into(),
            seconds: 0.0,
            rows: Vec::new(),
            targets: Vec::new(),
            charts: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) -> Row {
        self.rows.push(row.clone());
        row
    }

    /// Checks `measured` against a target: `at_least` when higher is better.
    pub fn target(&mut self, what: &str, target: f64, measured: f64, unit: &str, at_least: bool) {
        let met = if at_least {
            measured >= target
        } else {
            measured <= target
        };
        let sign = if at_least { "≥" } else { "<" };
        self.targets.push(Target {
            what: what.to_owned(),
            target: format!("{sign} {} {unit}", number(target)),
            measured: format!("{} {unit}", number(measured)),
            met,
        });
    }
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// The 1-minute load average before the run: how shared the machine was.
    pub load_before: f64,
    pub load_after: f64,
    pub build: &'static str,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel,
            load_before: load_average(),
            load_after: 0.0,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            text.split_whitespace()
                .next()
                .and_then(|first| first.parse().ok())
        })
        .unwrap_or(0.0)
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub command: String,
    pub started: String,
    pub machine: Machine,
    pub scenarios: Vec<ScenarioReport>,
    /// Scenarios that could not run here, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// A figure with sensible precision for a table: 3 significant digits
/// below 1000, whole numbers with thousands separators above.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Report {
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "meridian-bench ({} mode, {} build) on {} cpus ({}), {:.0} GiB, Linux {}; load {:.2} before, {:.2} after",
            self.mode,
            m.build,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.load_before,
            m.load_after
        );
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "\n## {} ({:.0} s) — {}",
                scenario.name, scenario.seconds, scenario.setup
            );
            let _ = writeln!(
                out,
                "{:<44} {:>14} {:>9} {:>9}  {:>8}  baseline",
                "figure", "value", "p50 ms", "p99 ms", "ratio"
            );
            for row in &scenario.rows {
                let opt = |v: Option<f64>| v.map(number).unwrap_or_else(|| "-".to_owned());
                let label = if row.is_baseline {
                    format!("{} (baseline)", row.label)
                } else {
                    row.label.clone()
                };
                let _ = writeln!(
                    out,
                    "{:<44} {:>14} {:>9} {:>9}  {:>8}  {}",
                    label,
                    format!("{} {}", number(row.value), row.unit),
                    opt(row.p50_ms),
                    opt(row.p99_ms),
                    row.ratio
                        .map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "-".to_owned()),
                    row.baseline.as_deref().unwrap_or(""),
                );
            }
            for target in &scenario.targets {
                let mark = if target.met { "met" } else { "MISSED" };
                let _ = writeln!(
                    out,
                    "  target {}: {} — measured {} — {mark}",
                    target.what, target.target, target.measured
                );
            }
            for note in &scenario.notes {
                let _ = writeln!(out, "  note: {note}");
            }
        }
        for (name, reason) in &self.skipped {
            let _ = writeln!(out, "\nSKIPPED {name}: {reason}");
        }
        out
    }

    /// `BENCHMARKS.md`-ready markdown: the same tables, plus the pictures.
    pub fn to_markdown(&self, picture_dir: &str) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "Run {} on {} cpus ({}), {:.0} GiB RAM, Linux {}, {} build; 1-minute load average {:.2} before and {:.2} after.\n",
            self.started,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.build,
            m.load_before,
            m.load_after
        );
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "### {}\n\n{} ({:.0} s)\n",
                scenario.name, scenario.setup, scenario.seconds
            );
            let _ = writeln!(
                out,
                "| figure | value | p50 ms | p99 ms | ratio | against |\n|---|---:|---:|---:|---:|---|"
            );
            for row in &scenario.rows {
                let opt = |v: Option<f64>| v.map(number).unwrap_or_else(|| "–".to_owned());
                let label = if row.is_baseline {
                    format!("{} *(baseline)*", row.label)
                } else {
                    row.label.clone()
                };
                let _ = writeln!(
                    out,
                    "| {label} | {} {} | {} | {} | {} | {} |",
                    number(row.value),
                    row.unit,
                    opt(row.p50_ms),
                    opt(row.p99_ms),
                    row.ratio
                        .map(|r| format!("{r:.2}×"))
                        .unwrap_or_else(|| "–".to_owned()),
                    row.baseline.as_deref().unwrap_or("")
                );
            }
            if !scenario.targets.is_empty() {
                let _ = writeln!(out, "\n| target | wanted | measured | |\n|---|---|---|---|");
                for t in &scenario.targets {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} |",
                        t.what,
                        t.target,
                        t.measured,
                        if t.met { "met" } else { "**missed**" }
                    );
                }
            }
            for note in &scenario.notes {
                let _ = writeln!(out, "\n{note}");
            }
            for chart in &scenario.charts {
                let _ = writeln!(
                    out,
                    "\n![{}]({picture_dir}/{}.svg)",
                    chart.title, chart.name
                );
            }
            let _ = writeln!(out);
        }
        for (name, reason) in &self.skipped {
            let _ = writeln!(out, "**Skipped {name}:** {reason}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(999.4), "999");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(-4321.0), "-4,321");
        assert_eq!(number(f64::NAN), "-");
    }

    #[test]
    fn ratios_and_targets() {
        let mut report = ScenarioReport::new("x", "setup");
        let base = report.row(Row::new("echo", 200.0, "ops/s").baseline());
        let row = report.row(Row::new("create", 50.0, "ops/s").against(&base));
        assert_eq!(row.ratio, Some(0.25));
        report.target("throughput", 100.0, 50.0, "ops/s", true);
        report.target("p99", 10.0, 5.0, "ms", false);
        assert!(!report.targets[0].met);
        assert!(report.targets[1].met);
        assert_eq!(
            Row::new("a", 1.0, "ms")
                .against(&Row::new("b", 0.0, "ms"))
                .ratio,
            None
        );
    }
}
