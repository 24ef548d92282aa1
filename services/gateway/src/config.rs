//! The gateway's configuration: a TOML file, then environment overrides.
//!
//! A bad file is refused at start with `FILE:LINE:COL: reason`; a bad
//! override names the variable. Unknown keys are errors, not silently
//! ignored, so a typo never leaves a setting at its default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use meridian_core::RegionId;
use meridian_store::{
    BATCH_MAX_DEFAULT, MAX_CONNECTIONS_DEFAULT, QUEUE_CAPACITY_DEFAULT, StoreConfig, Synchronous,
};
use serde::Deserialize;

use crate::{Error, Result};

/// The environment variables that override the file, and the key each one
/// replaces.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("MERIDIAN_REGION", "region"),
    ("MERIDIAN_LISTEN", "listen"),
    ("MERIDIAN_DATABASE_URL", "database.url"),
    ("MERIDIAN_TLS_CERT", "tls.cert"),
    ("MERIDIAN_TLS_KEY", "tls.key"),
    ("MERIDIAN_AUTH_JWKS", "auth.jwks"),
    ("MERIDIAN_RULES", "rules.file"),
    ("MERIDIAN_ROSTER", "rules.roster"),
    ("MERIDIAN_MESH_ANTI_ENTROPY", "mesh.anti_entropy"),
];

/// Everything one gateway process needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The region this gateway serves and owns tickets for.
    pub region: RegionId,
    /// Every region of the mesh, in order: a region's position is its epoch
    /// index, so the list must be the same on every gateway and only ever
    /// grow at the end.
    pub regions: Vec<RegionId>,
    pub listen: SocketAddr,
    pub store: StoreConfig,
    /// Serve clients over TLS with this certificate chain and key (PEM).
    pub tls: Option<TlsFiles>,
    /// `[auth]`: bearer tokens checked against a JWKS on every
    /// `TicketService` call. `None` serves without authentication (loudly
    /// logged; for loopback development and tests).
    pub auth: Option<meridian_auth::AuthSettings>,
    /// The follow-the-sun rules: SLA policies per tier. Without them
    /// tickets carry no SLA clocks.
    pub rules: Option<RulesSettings>,
    /// The other regions, over mutual TLS: handoffs (and replication).
    /// Without it the gateway serves its region alone.
    pub mesh: Option<MeshSettings>,
    pub limits: Limits,
    /// Fences owner-scoped writes (installed by the failover machinery);
    /// not read from the file. With a coordinator, the lease's gate
    /// replaces it.
    pub write_gate: crate::WriteGate,
    /// The region's lease and takeovers (`[coordinator]`); without it the
    /// region never fences itself and cannot take others over.
    pub coordinator: Option<crate::failover::CoordinatorSettings>,
    /// With a mesh, how often anti-entropy compares this region's logs with
    /// each peer's and fetches what is missing (`[mesh] anti_entropy`).
    /// Kept here rather than in [`MeshSettings`] so that code building
    /// `MeshSettings` field by field goes on compiling.
    pub anti_entropy_interval: Duration,
    /// `[telemetry]`: where `/metrics` is served and how often the queue
    /// gauges are counted.
    pub telemetry: TelemetrySettings,
    /// The metrics this gateway's instruments report to; not read from the
    /// file. `None` means the process's global meter provider (what
    /// `Telemetry::init` installs); tests pass their own.
    pub metrics: Option<meridian_telemetry::Metrics>,
    /// `[notify]`: webhook targets for notifications to people.
    pub notify: crate::notify_settings::NotifySettings,
    /// `[mail]`: the region's support mailbox and outgoing mail
    /// (docs/mail.md). Without it the region reads and sends no mail.
    pub mail: Option<crate::mail_settings::MailSettings>,
}

/// `[telemetry]` of a gateway file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Serve Prometheus metrics at `http://ADDR/metrics` (the
    /// `--metrics-listen` flag wins over this key).
    pub metrics_listen: Option<SocketAddr>,
    /// How often the queue-depth and SLA gauges are counted from the
    /// store: a scrape reads the last count, never the database.
    pub queue_scan_interval: Duration,
}

/// Default of `[telemetry] queue_scan_interval_ms`.
pub const QUEUE_SCAN_MS_DEFAULT: u64 = 5_000;

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            metrics_listen: None,
            queue_scan_interval: Duration::from_millis(QUEUE_SCAN_MS_DEFAULT),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetrySection {
    metrics_listen: Option<SocketAddr>,
    queue_scan_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesSettings {
    pub file: PathBuf,
    /// The region's roster (docs/people.md), checked against the rules and
    /// reloaded with the same interval; `None`: assignees are plain labels.
    pub roster: Option<PathBuf>,
    /// How often the file is checked for a new version.
    pub reload_interval: Duration,
    /// How often the SLA monitor looks for clocks that passed a warning or
    /// a deadline: the most an `SlaWarning` or `SlaBreached` can be late.
    pub sla_scan_interval: Duration,
    /// How often the shift-end task looks at the clock (with a mesh), and
    /// the intake-spike task closes its buckets.
    pub shift_check_interval: Duration,
    /// The continuity sweep's period, on the mesh's clock
    /// ([`SWEEP_MS_DEFAULT`]).
    pub sweep_interval: Duration,
    /// Legacy: each becomes a `json` notification target receiving shift
    /// summaries and volume spikes (`[notify]` is the full form).
    pub webhooks: Vec<String>,
    /// Where escalation and stranded-ticket alerts go (docs/escalation.md);
    /// by default they are only logged.
    pub alerts: crate::escalation::AlertSink,
}

/// How this gateway reaches the other regions' gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The internal port: mutual TLS, gateways only.
    pub listen: SocketAddr,
    pub tls: meridian_tls::TlsFiles,
    /// Each other region's internal `host:port`.
    pub peers: std::collections::BTreeMap<RegionId, String>,
    /// How long a handoff waits for the target's answer.
    pub handoff_timeout: Duration,
    /// Tiers whose writes are acknowledged only once another region has
    /// durably applied them (RPO 0 even if this region is lost); the rest
    /// are acknowledged on the local commit.
    pub peer_durability_tiers: Vec<meridian_core::Tier>,
}

pub const HANDOFF_TIMEOUT_MS_DEFAULT: u64 = 10_000;

pub const RULES_RELOAD_MS_DEFAULT: u64 = 5_000;
pub const SLA_SCAN_MS_DEFAULT: u64 = 1_000;
pub const SHIFT_CHECK_MS_DEFAULT: u64 = 1_000;
/// The continuity sweep's period on the mesh's clock: the longest an open
/// ticket stays with an off-shift region while one that may take it is on
/// shift (a shift start anywhere in the mesh sweeps at once).
pub const SWEEP_MS_DEFAULT: u64 = 60_000;

impl RulesSettings {
    pub fn new(file: PathBuf) -> Self {
        Self {
            file,
            roster: None,
            reload_interval: Duration::from_millis(RULES_RELOAD_MS_DEFAULT),
            sla_scan_interval: Duration::from_millis(SLA_SCAN_MS_DEFAULT),
            shift_check_interval: Duration::from_millis(SHIFT_CHECK_MS_DEFAULT),
            sweep_interval: Duration::from_millis(SWEEP_MS_DEFAULT),
            webhooks: Vec::new(),
            alerts: crate::escalation::AlertSink::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message accepted, in bytes.
    pub request_bytes_max: usize,
    /// Every unary call gets this deadline unless the client sets a shorter one.
    pub request_timeout: Duration,
    /// Concurrent requests per client connection.
    pub concurrency_per_connection_max: usize,
    /// Handshake deadline and connections per address of the public port
    /// (`meridian_tls::PublicLimits`; not read from the file).
    pub public: meridian_tls::PublicLimits,
    /// Open `WatchEvents` streams per principal (token subject, or client
    /// address without tokens).
    pub watch_streams_per_principal_max: usize,
    /// Open `WatchEvents` streams of the gateway.
    pub watch_streams_max: usize,
    /// How long a watch waits for a client that reads nothing before it
    /// ends the stream with `RESOURCE_EXHAUSTED` and a resume cursor.
    pub watch_stall_timeout: Duration,
}

pub const REQUEST_BYTES_MAX_DEFAULT: usize = 256 * 1024;
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const CONCURRENCY_PER_CONNECTION_MAX_DEFAULT: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            concurrency_per_connection_max: CONCURRENCY_PER_CONNECTION_MAX_DEFAULT,
            public: meridian_tls::PublicLimits::default(),
            watch_streams_per_principal_max: crate::watch::WATCH_STREAMS_PER_PRINCIPAL_MAX,
            watch_streams_max: crate::watch::WATCH_STREAMS_MAX,
            watch_stall_timeout: crate::watch::WATCH_STALL_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    region: RegionId,
    #[serde(default)]
    regions: Vec<RegionId>,
    listen: SocketAddr,
    database: DatabaseSection,
    tls: Option<TlsSection>,
    auth: Option<meridian_auth::AuthTable>,
    rules: Option<RulesSection>,
    mesh: Option<MeshSection>,
    #[serde(default)]
    limits: LimitsSection,
    coordinator: Option<crate::failover::CoordinatorSection>,
    #[serde(default)]
    telemetry: TelemetrySection,
    #[serde(default)]
    notify: crate::notify_settings::NotifySection,
    mail: Option<crate::mail_settings::MailSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshSection {
    listen: SocketAddr,
    /// A directory laid out by `meridian certs dev`; or the three files.
    tls_dir: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    #[serde(default)]
    peers: std::collections::BTreeMap<RegionId, String>,
    handoff_timeout_ms: Option<u64>,
    #[serde(default)]
    peer_durability_tiers: Vec<meridian_core::Tier>,
    anti_entropy: Option<Interval>,
}

/// A duration written for people: `"30s"`, `"500ms"`, `"2m"` (or ISO 8601,
/// `"PT30S"`), above zero. Parsed while the file is, so a bad value is
/// reported at its line and column.
#[derive(Debug, Clone, Copy)]
struct Interval(Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = String::deserialize(deserializer)?;
        let parsed: jiff::SignedDuration = text.parse().map_err(|e| {
            D::Error::custom(format!(
                "{text:?} is not a duration such as \"30s\" or \"500ms\": {e}"
            ))
        })?;
        match Duration::try_from(parsed) {
            Ok(duration) if !duration.is_zero() => Ok(Interval(duration)),
            _ => Err(D::Error::custom(format!("{text:?}: must be above zero"))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesSection {
    file: PathBuf,
    roster: Option<PathBuf>,
    reload_interval_ms: Option<u64>,
    sla_scan_interval_ms: Option<u64>,
    shift_check_interval_ms: Option<u64>,
    sweep_interval_ms: Option<u64>,
    #[serde(default)]
    webhooks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: String,
    #[serde(default)]
    synchronous: SynchronousSetting,
    max_connections: Option<u32>,
    batch_max: Option<usize>,
    queue_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SynchronousSetting {
    Normal,
    #[default]
    Full,
    Extra,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Serve the public port in plaintext on purpose (e.g. behind a proxy
    /// that terminates TLS): the opt-out of [`meridian_auth::check_public_listener`].
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    request_bytes_max: Option<usize>,
    request_timeout_ms: Option<u64>,
    concurrency_per_connection_max: Option<usize>,
}

impl GatewayConfig {
    /// A config with default limits and no TLS, for `meridian up` and tests.
    pub fn new(
        region: RegionId,
        regions: Vec<RegionId>,
        listen: SocketAddr,
        store: StoreConfig,
    ) -> Self {
        Self {
            region,
            regions,
            listen,
            store,
            tls: None,
            auth: None,
            rules: None,
            mesh: None,
            limits: Limits::default(),
            write_gate: crate::WriteGate::default(),
            coordinator: None,
            anti_entropy_interval: meridian_replication::ANTI_ENTROPY_INTERVAL_DEFAULT,
            telemetry: TelemetrySettings::default(),
            metrics: None,
            notify: Default::default(),
            mail: None,
        }
    }

    /// Reads `path`, then applies the environment overrides.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &text, |name| {
            std::env::var(name).ok()
        })
    }

    /// Parses a config's text; `env` looks up override variables. `file`
    /// only labels errors.
    pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut raw: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(located(file, text, &e)))?;
        let applied: Vec<&str> = ENV_OVERRIDES
            .iter()
            .filter_map(|(var, key)| env(var).map(|value| (var, key, value)))
            .map(|(var, key, value)| {
                set_key(&mut raw, key, value);
                *var
            })
            .collect();
        let parsed: FileConfig = if applied.is_empty() {
            toml::from_str(text).map_err(|e| Error::Config(located(file, text, &e)))?
        } else {
            // An override has no line in the file, so errors are reported
            // against the variables that were applied.
            raw.try_into().map_err(|e: toml::de::Error| {
                Error::Config(format!(
                    "{file} with {}: {}",
                    applied.join(", "),
                    e.message().trim_end()
                ))
            })?
        };
        parsed.into_config(file)
    }

    /// The epoch index of `region`: its position in `regions`.
    pub fn region_index(&self, region: &RegionId) -> Option<u16> {
        self.regions
            .iter()
            .position(|r| r == region)
            .and_then(|i| u16::try_from(i).ok())
    }
}

impl FileConfig {
    fn into_config(self, file: &str) -> Result<GatewayConfig> {
        let mut regions = self.regions;
        if regions.is_empty() {
            regions.push(self.region.clone());
        }
        for (i, region) in regions.iter().enumerate() {
            if regions[..i].contains(region) {
                return Err(Error::Config(format!(
                    "{file}: regions: {region} is listed twice"
                )));
            }
        }
        if !regions.contains(&self.region) {
            return Err(Error::Config(format!(
                "{file}: region: {} is not in regions [{}]; add it there",
                self.region,
                regions
                    .iter()
                    .map(RegionId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if regions.len() > meridian_core::EPOCH_STRIDE as usize {
            return Err(Error::Config(format!(
                "{file}: regions: at most {} regions",
                meridian_core::EPOCH_STRIDE
            )));
        }
        let db = self.database;
        let mut store = StoreConfig::new(db.url);
        store.sqlite_synchronous = match db.synchronous {
            SynchronousSetting::Normal => Synchronous::Normal,
            SynchronousSetting::Full => Synchronous::Full,
            SynchronousSetting::Extra => Synchronous::Extra,
        };
        store.max_connections = positive(
            file,
            "database.max_connections",
            db.max_connections,
            MAX_CONNECTIONS_DEFAULT,
        )?;
        store.batch_max = positive(file, "database.batch_max", db.batch_max, BATCH_MAX_DEFAULT)?;
        store.queue_capacity = positive(
            file,
            "database.queue_capacity",
            db.queue_capacity,
            QUEUE_CAPACITY_DEFAULT,
        )?;
        let defaults = Limits::default();
        let limits = Limits {
            request_bytes_max: positive(
                file,
                "limits.request_bytes_max",
                self.limits.request_bytes_max,
                defaults.request_bytes_max,
            )?,
            request_timeout: Duration::from_millis(positive(
                file,
                "limits.request_timeout_ms",
                self.limits.request_timeout_ms,
                REQUEST_TIMEOUT_MS_DEFAULT,
            )?),
            concurrency_per_connection_max: positive(
                file,
                "limits.concurrency_per_connection_max",
                self.limits.concurrency_per_connection_max,
                defaults.concurrency_per_connection_max,
            )?,
            ..defaults
        };
        let rules = match self.rules {
            None => None,
            Some(section) => Some(RulesSettings {
                alerts: crate::escalation::AlertSink::default(),
                webhooks: {
                    for (i, url) in section.webhooks.iter().enumerate() {
                        crate::notify_settings::legacy_target(i, url).map_err(|reason| {
                            Error::Config(format!("{file}: rules.webhooks[{i}]: {reason}"))
                        })?;
                    }
                    section.webhooks
                },
                shift_check_interval: Duration::from_millis(positive(
                    file,
                    "rules.shift_check_interval_ms",
                    section.shift_check_interval_ms,
                    SHIFT_CHECK_MS_DEFAULT,
                )?),
                sweep_interval: Duration::from_millis(positive(
                    file,
                    "rules.sweep_interval_ms",
                    section.sweep_interval_ms,
                    SWEEP_MS_DEFAULT,
                )?),
                file: section.file,
                roster: section.roster,
                reload_interval: Duration::from_millis(positive(
                    file,
                    "rules.reload_interval_ms",
                    section.reload_interval_ms,
                    RULES_RELOAD_MS_DEFAULT,
                )?),
                sla_scan_interval: Duration::from_millis(positive(
                    file,
                    "rules.sla_scan_interval_ms",
                    section.sla_scan_interval_ms,
                    SLA_SCAN_MS_DEFAULT,
                )?),
            }),
        };
        let anti_entropy_interval = self
            .mesh
            .as_ref()
            .and_then(|mesh| mesh.anti_entropy)
            .map_or(
                meridian_replication::ANTI_ENTROPY_INTERVAL_DEFAULT,
                |interval| interval.0,
            );
        let mesh = match self.mesh {
            None => None,
            Some(section) => {
                let tls = match (section.tls_dir, section.cert, section.key, section.ca) {
                    (Some(dir), None, None, None) => meridian_tls::TlsFiles::dev(
                        &dir,
                        &self.region,
                        meridian_tls::Service::Gateway,
                    ),
                    (None, Some(cert), Some(key), Some(ca)) => {
                        meridian_tls::TlsFiles { cert, key, ca }
                    }
                    _ => {
                        return Err(Error::Config(format!(
                            "{file}: mesh: set either tls_dir, or all of cert, key and ca"
                        )));
                    }
                };
                for peer in section.peers.keys() {
                    if !regions.contains(peer) {
                        return Err(Error::Config(format!(
                            "{file}: mesh.peers: {peer} is not in regions"
                        )));
                    }
                    if peer == &self.region {
                        return Err(Error::Config(format!(
                            "{file}: mesh.peers: {peer} is this gateway's own region"
                        )));
                    }
                }
                let handoff_timeout = Duration::from_millis(positive(
                    file,
                    "mesh.handoff_timeout_ms",
                    section.handoff_timeout_ms,
                    HANDOFF_TIMEOUT_MS_DEFAULT,
                )?);
                Some(MeshSettings {
                    listen: section.listen,
                    tls,
                    peers: section.peers,
                    handoff_timeout,
                    peer_durability_tiers: section.peer_durability_tiers,
                })
            }
        };
        let (tls, tls_disabled) = match self.tls {
            None => (None, false),
            Some(TlsSection {
                cert: Some(cert),
                key: Some(key),
                disabled: false,
            }) => (Some(TlsFiles { cert, key }), false),
            Some(TlsSection {
                cert: None,
                key: None,
                disabled: true,
            }) => (None, true),
            Some(TlsSection { disabled: true, .. }) => {
                return Err(Error::Config(format!(
                    "{file}: tls: disabled = true takes no cert or key; remove one or the other"
                )));
            }
            Some(_) => return Err(Error::Config(format!("{file}: tls: set both cert and key"))),
        };
        let auth = self
            .auth
            .map(|table| table.into_choice(file, &[]))
            .transpose()
            .map_err(Error::Config)?;
        let protection = meridian_auth::ListenerProtection {
            auth_section: auth.is_some(),
            tokens: matches!(auth, Some(meridian_auth::AuthChoice::Enabled(_))),
            tls: tls.is_some(),
            tls_disabled,
        };
        meridian_auth::check_public_listener(file, self.listen, protection)
            .map_err(Error::Config)?;
        Ok(GatewayConfig {
            region: self.region,
            regions,
            listen: self.listen,
            store,
            tls,
            auth: match auth {
                Some(meridian_auth::AuthChoice::Enabled(settings)) => Some(settings),
                Some(meridian_auth::AuthChoice::Disabled) | None => None,
            },
            rules,
            mesh,
            limits,
            write_gate: crate::WriteGate::default(),
            coordinator: self
                .coordinator
                .map(|section| section.into_settings(file))
                .transpose()?,
            anti_entropy_interval,
            telemetry: TelemetrySettings {
                metrics_listen: self.telemetry.metrics_listen,
                queue_scan_interval: Duration::from_millis(positive(
                    file,
                    "telemetry.queue_scan_interval_ms",
                    self.telemetry.queue_scan_interval_ms,
                    QUEUE_SCAN_MS_DEFAULT,
                )?),
            },
            notify: self.notify.into_settings(file)?,
            mail: self.mail.map(|m| m.into_settings(file)).transpose()?,
            metrics: None,
        })
    }
}

fn positive<T: PartialEq + Default + Copy>(
    file: &str,
    key: &str,
    value: Option<T>,
    default: T,
) -> Result<T> {
    match value {
        Some(v) if v == T::default() => {
            Err(Error::Config(format!("{file}: {key}: must be at least 1")))
        }
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// Sets a dotted key in a TOML table, creating sections as needed.
fn set_key(table: &mut toml::Table, key: &str, value: String) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), toml::Value::String(value));
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_key(inner, rest, value);
            }
        }
    }
}

/// `FILE:LINE:COL: message` for a TOML error with a span.
pub fn located(file: &str, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let (line, col) = meridian_rules::line_column(text, span.start);
            format!("{file}:{line}:{col}: {message}")
        }
        None => format!("{file}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
region = "eu-west"
regions = ["us-east", "eu-west", "apac-south"]
listen = "127.0.0.1:7102"

[database]
url = "sqlite:/tmp/eu.db?mode=rwc"
batch_max = 64

[rules]
file = "/etc/meridian/rules.toml"
sla_scan_interval_ms = 250

[mesh]
listen = "127.0.0.1:7112"
tls_dir = "/etc/meridian/pki"

anti_entropy = "45s"

[mesh.peers]
us-east = "10.0.0.1:7111"
apac-south = "10.0.0.3:7111"

[limits]
request_timeout_ms = 2500
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reads_the_telemetry_section() {
        let config = GatewayConfig::parse("gw.toml", GOOD, no_env).unwrap();
        assert_eq!(
            config.telemetry,
            TelemetrySettings::default(),
            "no section, the defaults"
        );
        let with = format!(
            "{GOOD}\n[telemetry]\nmetrics_listen = \"127.0.0.1:9464\"\nqueue_scan_interval_ms = 1000\n"
        );
        let config = GatewayConfig::parse("gw.toml", &with, no_env).unwrap();
        assert_eq!(
            config.telemetry.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.telemetry.queue_scan_interval, Duration::from_secs(1));
        let zero = format!("{GOOD}\n[telemetry]\nqueue_scan_interval_ms = 0\n");
        let err = GatewayConfig::parse("gw.toml", &zero, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("telemetry.queue_scan_interval_ms: must be at least 1"),
            "{err}"
        );
        let bad = format!("{GOOD}\n[telemetry]\nmetrics_listen = \"nowhere\"\n");
        assert!(GatewayConfig::parse("gw.toml", &bad, no_env).is_err());
    }

    #[test]
    fn reads_a_good_file() {
        let config = GatewayConfig::parse("gw.toml", GOOD, no_env).unwrap();
        assert_eq!(config.region.as_str(), "eu-west");
        assert_eq!(config.region_index(&config.region), Some(1));
        assert_eq!(config.store.batch_max, 64);
        assert_eq!(config.store.sqlite_synchronous, Synchronous::Full);
        assert_eq!(config.limits.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.limits.request_bytes_max, REQUEST_BYTES_MAX_DEFAULT);
        assert!(config.tls.is_none());
        let rules = config.rules.unwrap();
        assert_eq!(rules.file, PathBuf::from("/etc/meridian/rules.toml"));
        assert_eq!(rules.sla_scan_interval, Duration::from_millis(250));
        assert_eq!(
            rules.reload_interval,
            Duration::from_millis(RULES_RELOAD_MS_DEFAULT)
        );
        let mesh = config.mesh.unwrap();
        assert_eq!(
            mesh.tls.cert,
            PathBuf::from("/etc/meridian/pki/eu-west-gateway.pem")
        );
        assert_eq!(mesh.peers.len(), 2);
        assert_eq!(
            mesh.handoff_timeout,
            Duration::from_millis(HANDOFF_TIMEOUT_MS_DEFAULT)
        );
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(45));
    }

    #[test]
    fn anti_entropy_interval_is_a_duration_above_zero() {
        let without = GOOD.replace("anti_entropy = \"45s\"\n", "");
        let config = GatewayConfig::parse("gw.toml", &without, no_env).unwrap();
        assert_eq!(
            config.anti_entropy_interval,
            meridian_replication::ANTI_ENTROPY_INTERVAL_DEFAULT
        );
        let fast = GOOD.replace("\"45s\"", "\"250ms\"");
        let config = GatewayConfig::parse("gw.toml", &fast, no_env).unwrap();
        assert_eq!(config.anti_entropy_interval, Duration::from_millis(250));

        let bad = GOOD.replace("\"45s\"", "\"soon\"");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gw.toml:18:16: \"soon\" is not a duration"),
            "{err}"
        );
        let zero = GOOD.replace("\"45s\"", "\"0s\"");
        let err = GatewayConfig::parse("gw.toml", &zero, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gw.toml:18:16: \"0s\": must be above zero"),
            "{err}"
        );

        let env = |name: &str| (name == "MERIDIAN_MESH_ANTI_ENTROPY").then(|| "2m".to_owned());
        let config = GatewayConfig::parse("gw.toml", GOOD, env).unwrap();
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(120));
        let env = |name: &str| (name == "MERIDIAN_MESH_ANTI_ENTROPY").then(|| "-5s".to_owned());
        let err = GatewayConfig::parse("gw.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gw.toml with MERIDIAN_MESH_ANTI_ENTROPY: "),
            "{err}"
        );
        assert!(err.contains("must be above zero"), "{err}");
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let bad = GOOD.replace("region = \"eu-west\"", "region = \"EU West\"");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config: gw.toml:2:10: "), "{err}");
        assert!(err.contains("must start with a lowercase letter"), "{err}");

        let bad = GOOD.replace("batch_max = 64", "batch_max = 64\nbatch_maxx = 1");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gw.toml:9:1: unknown field `batch_maxx`"),
            "{err}"
        );

        let bad = GOOD.replace("listen = \"127.0.0.1:7102\"", "listen = \"localhost\"");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config: gw.toml:4:10: "), "{err}");

        let bad = GOOD.replace("batch_max = 64", "batch_max = 0");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: gw.toml: database.batch_max: must be at least 1"
        );

        let bad = GOOD.replace("tls_dir = \"/etc/meridian/pki\"", "cert = \"/c.pem\"");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: gw.toml: mesh: set either tls_dir, or all of cert, key and ca"
        );

        let bad = GOOD.replace("us-east = \"10.0.0.1:7111\"", "eu-west = \"10.0.0.1:7111\"");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: gw.toml: mesh.peers: eu-west is this gateway's own region"
        );

        let bad = GOOD.replace("\"apac-south\"]", "\"apac-south\", \"eu-west\"]");
        let err = GatewayConfig::parse("gw.toml", &bad, no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "config: gw.toml: regions: eu-west is listed twice");
    }

    #[test]
    fn a_public_listener_off_loopback_needs_auth_and_tls_or_an_explicit_opt_out() {
        let public = GOOD.replace("listen = \"127.0.0.1:7102\"", "listen = \"0.0.0.0:7102\"");
        let err = GatewayConfig::parse("gateway.toml", &public, no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config: gateway.toml: [auth] is missing: the public listener 0.0.0.0:7102 is not loopback; \
             add [auth] jwks = \"FILE\", or set [auth] disabled = true to serve without tokens"
        );
        // MERIDIAN_LISTEN moves a loopback file off loopback: the same check.
        let env = |name: &str| (name == "MERIDIAN_LISTEN").then(|| "[::]:7102".to_owned());
        let err = GatewayConfig::parse("gateway.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[auth] is missing: the public listener [::]:7102 is not loopback"),
            "{err}"
        );

        // Tokens, but in clear text.
        let with_auth = format!("{public}\n[auth]\njwks = \"/etc/meridian/auth/jwks.json\"\n");
        let err = GatewayConfig::parse("gateway.toml", &with_auth, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "config: gateway.toml: [tls] is missing: the public listener 0.0.0.0:7102"
            ),
            "{err}"
        );
        assert!(err.contains("set [tls] disabled = true"), "{err}");

        // Both: starts, with the files named.
        let secure =
            format!("{with_auth}\n[tls]\ncert = \"/tls/tls.crt\"\nkey = \"/tls/tls.key\"\n");
        let config = GatewayConfig::parse("gateway.toml", &secure, no_env).unwrap();
        assert_eq!(
            config.auth.unwrap().jwks,
            Some(PathBuf::from("/etc/meridian/auth/jwks.json"))
        );
        assert_eq!(config.tls.unwrap().cert, PathBuf::from("/tls/tls.crt"));
        // The JWKS may come from the environment alone.
        let env = |name: &str| (name == "MERIDIAN_AUTH_JWKS").then(|| "/jwks.json".to_owned());
        let tls_only = format!("{public}\n[auth]\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n");
        assert_eq!(
            GatewayConfig::parse("gateway.toml", &tls_only, env)
                .unwrap()
                .auth
                .unwrap()
                .jwks,
            Some(PathBuf::from("/jwks.json"))
        );
        let err = GatewayConfig::parse("gateway.toml", &tls_only, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gateway.toml: auth.jwks is missing"),
            "{err}"
        );

        // The explicit opt-outs.
        let open = format!("{public}\n[auth]\ndisabled = true\n");
        let config = GatewayConfig::parse("gateway.toml", &open, no_env).unwrap();
        assert!(config.auth.is_none() && config.tls.is_none());
        let proxied = format!("{with_auth}\n[tls]\ndisabled = true\n");
        let config = GatewayConfig::parse("gateway.toml", &proxied, no_env).unwrap();
        assert!(config.auth.is_some() && config.tls.is_none());

        // An opt-out that contradicts itself is refused, not guessed at.
        let both = format!("{public}\n[auth]\ndisabled = true\njwks = \"/j.json\"\n");
        let err = GatewayConfig::parse("gateway.toml", &both, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth: disabled = true takes no other key"),
            "{err}"
        );
        let both = format!("{with_auth}\n[tls]\ndisabled = true\ncert = \"/c\"\n");
        let err = GatewayConfig::parse("gateway.toml", &both, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls: disabled = true takes no cert or key"),
            "{err}"
        );
        let half = format!("{with_auth}\n[tls]\ncert = \"/c\"\n");
        let err = GatewayConfig::parse("gateway.toml", &half, no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls: set both cert and key"), "{err}");

        // Loopback without either keeps working (development, tests).
        let config = GatewayConfig::parse("gateway.toml", GOOD, no_env).unwrap();
        assert!(config.auth.is_none() && config.tls.is_none());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "MERIDIAN_DATABASE_URL" => Some("postgres://postgres@127.0.0.1/test".to_owned()),
            "MERIDIAN_LISTEN" => Some("127.0.0.1:9999".to_owned()),
            _ => None,
        };
        let config = GatewayConfig::parse("gw.toml", GOOD, env).unwrap();
        assert_eq!(config.store.url, "postgres://postgres@127.0.0.1/test");
        assert_eq!(config.listen.port(), 9999);

        let env = |name: &str| (name == "MERIDIAN_REGION").then(|| "mars".to_owned());
        let err = GatewayConfig::parse("gw.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("region: mars is not in regions"), "{err}");

        let env = |name: &str| (name == "MERIDIAN_LISTEN").then(|| "nowhere".to_owned());
        let err = GatewayConfig::parse("gw.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: gw.toml with MERIDIAN_LISTEN: "),
            "{err}"
        );
    }
}
