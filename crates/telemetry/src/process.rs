//! Metrics of the process itself, read from `/proc/self` at each
//! collection (Linux; elsewhere they report nothing), and the build.
//!
//! The names are the Prometheus client libraries' standard process
//! metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
//! which every Prometheus dashboard and alert already knows; the
//! OpenTelemetry process conventions are still in development.
//! `meridian_build_info{version, commit}` is 1; the commit is the one the
//! binary was built from (`build.rs`), never looked up at run time.

use opentelemetry::{
    KeyValue,
    metrics::{Meter, ObservableCounter, ObservableGauge},
};

/// The version of the build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the build was made from, or `unknown`.
pub const GIT_COMMIT: &str = env!("MERIDIAN_GIT_COMMIT");

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, which Linux
/// fixes at 100 for user space on every architecture it runs.
const USER_HZ: f64 = 100.0;

/// The registered instruments; their callbacks run at each collection.
pub(crate) struct ProcessInstruments {
    _cpu: ObservableCounter<f64>,
    _gauges: Vec<ObservableGauge<u64>>,
    _start: ObservableGauge<f64>,
}

impl std::fmt::Debug for ProcessInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessInstruments")
    }
}

pub(crate) fn register(meter: &Meter) -> ProcessInstruments {
    let cpu = meter
        .f64_observable_counter("process.cpu.seconds")
        .with_description("User and system CPU time the process has used")
        .with_unit("s")
        .with_callback(|observer| {
            if let Some(stat) = Stat::read() {
                observer.observe(stat.cpu_seconds, &[]);
            }
        })
        .build();
    let mut gauges = vec![
        meter
            .u64_observable_gauge("process.resident_memory")
            .with_description("Resident set size of the process")
            .with_unit("By")
            .with_callback(|observer| {
                if let Some(bytes) = resident_bytes() {
                    observer.observe(bytes, &[]);
                }
            })
            .build(),
        meter
            .u64_observable_gauge("process.open_fds")
            .with_description("File descriptors the process has open")
            .with_callback(|observer| {
                if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
                    observer.observe(entries.count() as u64, &[]);
                }
            })
            .build(),
        meter
            .u64_observable_gauge("process.max_fds")
            .with_description("The process's limit on open file descriptors")
            .with_callback(|observer| {
                if let Some(max) = max_fds() {
                    observer.observe(max, &[]);
                }
            })
            .build(),
    ];
    gauges.push(
        meter
            .u64_observable_gauge("meridian.build_info")
            .with_description("The build: version and git commit (value 1)")
            .with_callback(|observer| {
                observer.observe(
                    1,
                    &[
                        KeyValue::new("version", VERSION),
                        KeyValue::new("commit", GIT_COMMIT),
                    ],
                );
            })
            .build(),
    );
    let start = meter
        .f64_observable_gauge("process.start_time")
        .with_description("When the process started, in seconds since the Unix epoch")
        .with_unit("s")
        .with_callback(|observer| {
            if let Some(at) = start_time_s() {
                observer.observe(at, &[]);
            }
        })
        .build();
    ProcessInstruments {
        _cpu: cpu,
        _gauges: gauges,
        _start: start,
    }
}

/// The fields of `/proc/self/stat` used here.
struct Stat {
    cpu_seconds: f64,
    /// Clock ticks after boot at which the process started.
    start_ticks: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }
}

/// Fields after the command name (which may hold spaces and parentheses,
/// hence the last `)`): state is field 3, utime 14, stime 15, starttime 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after) = text.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    Some(Stat {
        cpu_seconds: ticks as f64 / USER_HZ,
        start_ticks: field(22)?,
    })
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn start_time_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot as f64 + Stat::read()?.start_ticks as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_a_command_name_with_spaces_and_parentheses() {
        let text =
            "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 12345 1000 200";
        let stat = parse_stat(text).unwrap();
        assert!(
            (stat.cpu_seconds - 3.0).abs() < 1e-9,
            "{}",
            stat.cpu_seconds
        );
        assert_eq!(stat.start_ticks, 12345);
        assert!(parse_stat("garbage").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_itself() {
        assert!(Stat::read().is_some());
        assert!(
            resident_bytes().is_some_and(|b| b > 1024 * 1024),
            "{:?}",
            resident_bytes()
        );
        assert!(max_fds().is_some_and(|m| m > 0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(start_time_s().is_some_and(|s| s <= now + 1.0 && s > now - 86_400.0 * 365.0));
    }
}
