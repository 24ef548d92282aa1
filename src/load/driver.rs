//! The measuring loop every scenario shares: `N` workers, each with one
//! operation in flight at a time (a closed loop), until the round's deadline.
//! Latencies go into one HdrHistogram per worker, merged at the end, so the
//! hot loop shares nothing but two relaxed counters for the progress line.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use std::io::IsTerminal as _;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The longest one operation may take before it counts as an error. It also
/// bounds how long a round can overrun its deadline.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies are recorded in microseconds, up to a minute, to 3 significant
/// figures (0.1% resolution).
const LATENCY_MAX_US: u64 = 60_000_000;
const LATENCY_SIGFIG: u8 = 3;
/// How often the writer queue depth is sampled during a round.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One kind of operation the load generator issues. Each worker owns one
/// value and calls it in a loop; an `Err` is counted, never fatal.
pub(crate) trait Op: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
        .context("cannot create a latency histogram")
}

/// What one round measured.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    /// Successful operations started before the deadline.
    pub ops: u64,
    pub errors: u64,
    /// From the start of the round until its last operation finished.
    pub elapsed: Duration,
    /// Latency of the successful operations, in microseconds.
    pub latency_us: Histogram<u64>,
    pub first_error: Option<String>,
    pub cpu: Option<CpuUse>,
    pub queue_depth: Option<QueueDepth>,
}

impl Round {
    pub(crate) fn ops_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Where the CPU went during a round (Linux `/proc`; `None` elsewhere).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuUse {
    /// This process (load generator, and the gateway when spawned), in
    /// percent of one core: 200 means both cores of a 2-core machine.
    pub process_pct: f64,
    /// The whole machine (every process, the database server included), in
    /// percent of all cores.
    pub machine_busy_pct: f64,
    /// This process's CPU time per successful operation, in microseconds.
    pub process_us_per_op: f64,
}

/// How many writes waited for the store's writer, sampled during a round.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct QueueDepth {
    pub mean: f64,
    pub max: usize,
}

/// What a round reports while it runs, and what it samples.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    /// Print a line per second on stderr.
    pub progress: bool,
    /// The store's queued writes, when the gateway runs in this process.
    pub queue_depth: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// What one worker saw.
struct Tally {
    ops: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ops: 0,
            errors: 0,
            latency_us: new_histogram()?,
            first_error: None,
        })
    }

    fn record(&mut self, started: Instant, outcome: Result<(), String>, counters: &Counters) {
        match outcome {
            Ok(()) => {
                self.latency_us.saturating_record(micros(started.elapsed()));
                self.ops += 1;
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs one round: every op in `ops` gets a worker task that loops until
/// `window` has passed since the start.
pub(crate) async fn drive<O: Op>(
    label: &str,
    ops: Vec<O>,
    window: Duration,
    hooks: &Hooks,
) -> anyhow::Result<Round> {
    let counters = Arc::new(Counters::default());
    let cpu_before = CpuTicks::read();
    let start = Instant::now();
    let deadline = start + window;
    let background = Background::start(label, start, &counters, hooks);

    let workers: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new()?;
                loop {
                    let started = Instant::now();
                    if started >= deadline {
                        break;
                    }
                    let outcome = match tokio::time::timeout(OP_TIMEOUT, op.call()).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(format!("no answer within {} s", OP_TIMEOUT.as_secs())),
                    };
                    tally.record(started, outcome, &counters);
                }
                Ok::<_, anyhow::Error>(tally)
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(workers.len());
    for worker in workers {
        tallies.push(worker.await.context("a load worker failed")??);
    }
    let elapsed = start.elapsed();
    let queue_depth = background.stop().await;
    merge(
        tallies,
        elapsed,
        CpuTicks::read()
            .zip(cpu_before)
            .map(|(after, before)| after.since(&before)),
        queue_depth,
    )
}

/// [`drive`] for a blocking operation (disk I/O) on one dedicated thread.
pub(crate) async fn drive_blocking<F>(
    label: &str,
    mut op: F,
    window: Duration,
    hooks: &Hooks,
) -> anyhow::Result<Round>
where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    let counters = Arc::new(Counters::default());
    let cpu_before = CpuTicks::read();
    let start = Instant::now();
    let deadline = start + window;
    let background = Background::start(label, start, &counters, hooks);
    let worker_counters = counters.clone();
    let tally = tokio::task::spawn_blocking(move || {
        let mut tally = Tally::new()?;
        loop {
            let started = Instant::now();
            if started >= deadline {
                break;
            }
            tally.record(started, op(), &worker_counters);
        }
        Ok::<_, anyhow::Error>(tally)
    })
    .await
    .context("the blocking load worker failed")??;
    let elapsed = start.elapsed();
    let queue_depth = background.stop().await;
    merge(
        vec![tally],
        elapsed,
        CpuTicks::read()
            .zip(cpu_before)
            .map(|(after, before)| after.since(&before)),
        queue_depth,
    )
}

fn merge(
    tallies: Vec<Tally>,
    elapsed: Duration,
    cpu: Option<CpuDelta>,
    queue_depth: Option<QueueDepth>,
) -> anyhow::Result<Round> {
    let mut round = Round {
        ops: 0,
        errors: 0,
        elapsed,
        latency_us: new_histogram()?,
        first_error: None,
        cpu: None,
        queue_depth,
    };
    for tally in tallies {
        round.ops += tally.ops;
        round.errors += tally.errors;
        round
            .latency_us
            .add(&tally.latency_us)
            .context("cannot merge latency histograms")?;
        if round.first_error.is_none() {
            round.first_error = tally.first_error;
        }
    }
    round.cpu = cpu.map(|delta| delta.usage(elapsed, round.ops));
    Ok(round)
}

/// The progress line and the queue sampler of one round.
struct Background {
    progress: Option<tokio::task::JoinHandle<()>>,
    sampler: Option<tokio::task::JoinHandle<QueueDepth>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Background {
    fn start(label: &str, start: Instant, counters: &Arc<Counters>, hooks: &Hooks) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let progress = hooks.progress.then(|| {
            let label = label.to_owned();
            let counters = counters.clone();
            let mut stopped = stopped.clone();
            // On a terminal one `indicatif` line redraws in place; elsewhere
            // (CI logs) a line a second, as indicatif would draw nothing.
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new_spinner();
                let style = ProgressStyle::with_template("load: {prefix}: {spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_prefix(label.clone());
                bar
            });
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + Duration::from_secs(1),
                    Duration::from_secs(1),
                );
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let line = format!(
                                "{:>5.1} s, {} ops, {} errors",
                                start.elapsed().as_secs_f64(),
                                counters.ok.load(Ordering::Relaxed),
                                counters.errors.load(Ordering::Relaxed),
                            );
                            match &bar {
                                Some(bar) => {
                                    bar.set_message(line);
                                    bar.tick();
                                }
                                None => eprintln!("load: {label}: {line}"),
                            }
                        }
                        _ = stopped.changed() => break,
                    }
                }
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
            })
        });
        let sampler = hooks.queue_depth.clone().map(|depth| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(QUEUE_SAMPLE_EVERY);
                let (mut sum, mut count, mut max) = (0usize, 0usize, 0usize);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let now = depth();
                            sum = sum.saturating_add(now);
                            count += 1;
                            max = max.max(now);
                        }
                        _ = stopped.changed() => break,
                    }
                }
                QueueDepth {
                    mean: if count > 0 {
                        sum as f64 / count as f64
                    } else {
                        0.0
                    },
                    max,
                }
            })
        });
        Self {
            progress,
            sampler,
            stop,
        }
    }

    async fn stop(self) -> Option<QueueDepth> {
        // Receivers may be gone already; either way the tasks end.
        let _ = self.stop.send(true);
        if let Some(progress) = self.progress {
            let _ = progress.await;
        }
        match self.sampler {
            Some(sampler) => sampler.await.ok(),
            None => None,
        }
    }
}

/// CPU counters from `/proc`, in `USER_HZ` ticks (100 per second on Linux,
/// whatever the kernel's own tick rate).
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    process: u64,
    machine_busy: u64,
    machine_total: u64,
}

struct CpuDelta {
    process: u64,
    machine_busy: u64,
    machine_total: u64,
}

const USER_HZ: f64 = 100.0;

impl CpuTicks {
    fn read() -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields are
        // counted from the last ')'. utime and stime are fields 14 and 15.
        let (_, after_name) = own.rsplit_once(')')?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;

        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let line = machine.lines().find(|line| line.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        if values.len() < 5 {
            return None;
        }
        let total: u64 = values.iter().sum();
        let idle = values[3] + values[4];
        Some(Self {
            process: utime + stime,
            machine_busy: total.saturating_sub(idle),
            machine_total: total,
        })
    }

    fn since(&self, before: &Self) -> CpuDelta {
        CpuDelta {
            process: self.process.saturating_sub(before.process),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
        }
    }
}

impl CpuDelta {
    fn usage(&self, elapsed: Duration, ops: u64) -> CpuUse {
        let process_s = self.process as f64 / USER_HZ;
        let wall_s = elapsed.as_secs_f64();
        CpuUse {
            process_pct: if wall_s > 0.0 {
                100.0 * process_s / wall_s
            } else {
                0.0
            },
            machine_busy_pct: if self.machine_total > 0 {
                100.0 * self.machine_busy as f64 / self.machine_total as f64
            } else {
                0.0
            },
            process_us_per_op: if ops > 0 {
                process_s * 1e6 / ops as f64
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy {
        calls: u64,
    }

    impl Op for Sleepy {
        fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
            self.calls += 1;
            let fail = self.calls.is_multiple_of(4);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if fail {
                    Err("every fourth call fails".to_owned())
                } else {
                    Ok(())
                }
            }
        }
    }

    #[tokio::test]
    async fn drive_counts_successes_and_errors_and_stops_at_the_deadline() {
        let window = Duration::from_millis(200);
        let ops = (0..3).map(|_| Sleepy { calls: 0 }).collect();
        let round = drive("test", ops, window, &Hooks::default()).await.unwrap();
        assert!(round.ops > 0, "{round:?}");
        // Three of every four calls succeed, per worker.
        assert!(round.errors > 0 && round.errors <= round.ops, "{round:?}");
        assert_eq!(
            round.first_error.as_deref(),
            Some("every fourth call fails")
        );
        assert_eq!(round.latency_us.len(), round.ops);
        assert!(
            round.latency_us.value_at_quantile(0.5) >= 2_000,
            "{round:?}"
        );
        assert!(
            round.elapsed >= window && round.elapsed < window + Duration::from_secs(1),
            "{round:?}"
        );
    }
}
