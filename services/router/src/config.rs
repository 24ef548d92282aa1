//! The router's configuration: a TOML file, then environment overrides.
//!
//! A bad file is refused at start with `FILE:LINE:COL: reason`; a bad
//! override names the variable. Unknown keys are errors, not silently
//! ignored, so a typo never leaves a setting at its default.
//!
//! ```toml
//! listen = "127.0.0.1:7100"
//!
//! [rules]
//! path = "rules.toml"          # relative to this file
//! reload_interval_ms = 2000
//!
//! [gateways]                   # region id = the gateway's gRPC endpoint
//! us-east = "http://127.0.0.1:7101"
//! eu-west = "http://127.0.0.1:7102"
//!
//! [health]
//! probe_interval_ms = 1000     # grpc.health.v1 Check on every gateway
//! probe_deadline_ms = 1000     # one probe's deadline
//! timeout_ms = 5000            # healthy while the last good probe is younger
//!
//! [limits]
//! request_timeout_ms = 5000    # every call to the router
//! forward_timeout_ms = 2000    # each CreateTicket at a gateway
//! forward_attempts_max = 3     # gateways one SubmitTicket may try
//! request_bytes_max = 262144
//! concurrency_per_connection_max = 1024
//!
//! [console]                    # optional: the web console
//! listen = "127.0.0.1:7190"    # the default; with [auth] and [tls]: HTTPS, any peer with a token;
//!                              # with [auth] only: loopback addresses only; without [auth]: loopback peers only
//! tracing_ui = "http://localhost:16686/trace/{trace_id}"   # optional trace links
//!
//! [tls]                        # optional: serve clients over TLS
//! cert = "router.pem"
//! key = "router-key.pem"
//! gateway_ca = "ca.pem"        # needed for https:// gateway endpoints
//! # disabled = true            # instead of cert/key: plaintext on purpose (a proxy terminates TLS)
//!
//! [auth]                       # optional on loopback: bearer tokens (JWT, EdDSA)
//! jwks = "jwks.json"           # public keys, re-read when the file changes
//! gateway_token_file = "console.token"   # the console's own token (an sre's)
//! # disabled = true            # instead of jwks: serve without tokens on purpose
//! # (a listener that is not loopback needs [auth], and with jwks also [tls]
//! # or `[tls] disabled = true`; the router refuses to start otherwise)
//!
//! [failover]                   # optional: take over regions whose lease expires
//! kind = "etcd"
//! endpoints = ["http://127.0.0.1:2379"]
//! region = "us-east"           # this replica's router certificate in tls_dir
//! tls_dir = "pki"              # or cert, key and ca
//! takeover_timeout_ms = 15000  # each TakeOver call at a successor
//! takeover_grace_ms = 2000     # for regions not seen live since their last takeover
//!
//! [failover.gateways]          # each region's gateway internal (mesh) address
//! us-east = "127.0.0.1:7111"
//! eu-west = "127.0.0.1:7112"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_core::RegionId;
use serde::Deserialize;
use toml::Spanned;

use crate::{Error, Result};

/// The environment variables that override the file, and the key each one
/// replaces.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("MERIDIAN_LISTEN", "listen"),
    ("MERIDIAN_RULES", "rules.path"),
];

pub const RULES_RELOAD_INTERVAL_MS_DEFAULT: u64 = 2_000;
pub const PROBE_INTERVAL_MS_DEFAULT: u64 = 1_000;
pub const PROBE_DEADLINE_MS_DEFAULT: u64 = 1_000;
pub const HEALTH_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const FORWARD_TIMEOUT_MS_DEFAULT: u64 = 2_000;
pub const FORWARD_ATTEMPTS_MAX_DEFAULT: usize = 3;
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 256 * 1024;
pub const CONCURRENCY_PER_CONNECTION_MAX_DEFAULT: usize = 1024;
/// Where the console listens when `[console]` gives no `listen`.
pub const CONSOLE_LISTEN_DEFAULT: &str = "127.0.0.1:7190";
/// The placeholder a `tracing_ui` template must contain.
pub const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

/// Everything one router process needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Where `main` binds; [`crate::run`] serves on the listener it is given.
    pub listen: SocketAddr,
    /// The follow-the-sun rules file, re-read every `rules_reload_interval`.
    pub rules_path: PathBuf,
    pub rules_reload_interval: Duration,
    /// Each region's gateway endpoint (`http://HOST:PORT`). A region of the
    /// rules without one is never routed to (it has no health report).
    pub gateways: BTreeMap<RegionId, String>,
    pub health: HealthConfig,
    pub limits: Limits,
    /// Takes over regions whose lease expires (`[failover]`); without it
    /// the router only routes.
    pub failover: Option<crate::failover::FailoverSettings>,
    /// `[telemetry] metrics_listen`: serve Prometheus metrics at
    /// `http://ADDR/metrics` (the `--metrics-listen` flag wins).
    pub metrics_listen: Option<SocketAddr>,
    /// `[console]`: serve the web console; `None` serves none.
    pub console: Option<ConsoleConfig>,
    /// `[tls]`: serve clients over TLS with this certificate chain and
    /// key; `None` serves plaintext.
    pub tls: Option<PublicTls>,
    /// `[tls] gateway_ca`: the CA bundle (PEM) that `https://` gateway
    /// endpoints are verified against.
    pub gateway_ca: Option<PathBuf>,
    /// `[auth]`: bearer tokens on every `RouterService` call; `None` serves
    /// without authentication (loudly logged).
    pub auth: Option<meridian_auth::AuthSettings>,
    /// `[auth] gateway_token_file`: the token the router's own calls to the
    /// gateways carry (the console's reads); forwarded tickets carry the
    /// caller's token instead.
    pub gateway_token_file: Option<PathBuf>,
}

/// The router's certificate chain and key for its public listener (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The web console (`crate::console`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Where the console's HTTP server binds. With `[auth]` every request
    /// needs a token and any peer may ask (over HTTPS with `[tls]`; without
    /// `[tls]` only a loopback address may be bound); without `[auth]` only
    /// loopback peers are served.
    pub listen: SocketAddr,
    /// A tracing UI link template with `{trace_id}` (32 hex digits), e.g.
    /// `http://localhost:16686/trace/{trace_id}` for Jaeger.
    pub tracing_ui: Option<String>,
}

impl ConsoleConfig {
    /// A console on `listen` without trace links.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tracing_ui: None,
        }
    }
}

/// How the router learns which gateways are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often each gateway's `grpc.health.v1.Health/Check` is called.
    pub probe_interval: Duration,
    /// One probe's deadline (also the connect timeout).
    pub probe_deadline: Duration,
    /// A region is healthy while its last successful probe is younger than
    /// this; longer than `probe_interval`, so one lost probe is not an outage.
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(PROBE_INTERVAL_MS_DEFAULT),
            probe_deadline: Duration::from_millis(PROBE_DEADLINE_MS_DEFAULT),
            timeout: Duration::from_millis(HEALTH_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Every call to the router gets this deadline.
    pub request_timeout: Duration,
    /// Each CreateTicket forwarded to a gateway; shorter than
    /// `request_timeout` so a failed gateway leaves time for the next one.
    pub forward_timeout: Duration,
    /// How many gateways one SubmitTicket may try.
    pub forward_attempts_max: usize,
    /// The largest request message accepted, in bytes.
    pub request_bytes_max: usize,
    /// Concurrent requests per client connection.
    pub concurrency_per_connection_max: usize,
    /// Handshake deadline and connections per address of the public port
    /// (not read from the file).
    pub public: meridian_tls::PublicLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            forward_timeout: Duration::from_millis(FORWARD_TIMEOUT_MS_DEFAULT),
            forward_attempts_max: FORWARD_ATTEMPTS_MAX_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            concurrency_per_connection_max: CONCURRENCY_PER_CONNECTION_MAX_DEFAULT,
            public: meridian_tls::PublicLimits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: SocketAddr,
    rules: RulesSection,
    #[serde(default)]
    gateways: BTreeMap<RegionId, Spanned<String>>,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    limits: LimitsSection,
    failover: Option<crate::failover::FailoverSection>,
    #[serde(default)]
    telemetry: TelemetrySection,
    console: Option<ConsoleSection>,
    tls: Option<TlsSection>,
    auth: Option<AuthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    gateway_ca: Option<PathBuf>,
    /// Serve the public port in plaintext on purpose (e.g. behind a proxy
    /// that terminates TLS): the opt-out of [`meridian_auth::check_public_listener`].
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    jwks: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    reload_interval_ms: Option<u64>,
    algorithms: Option<Vec<String>>,
    ca: Option<PathBuf>,
    claims: Option<meridian_auth::ClaimsTable>,
    gateway_token_file: Option<PathBuf>,
    /// Serve without tokens on purpose: the opt-out of
    /// [`meridian_auth::check_public_listener`]. `gateway_token_file` still applies (the
    /// gateways may require tokens even if this router does not).
    #[serde(default)]
    disabled: bool,
}

/// What the file says about its public listener's protection, kept until
/// the environment overrides are applied (`MERIDIAN_LISTEN` may move the
/// listener off loopback).
#[derive(Debug, Clone, Copy)]
struct Protection {
    /// `[auth]` is present (with `disabled = true` or a `jwks`).
    auth_section: bool,
    /// `[tls] disabled = true`.
    tls_disabled: bool,
}

/// [`meridian_auth::check_public_listener`] on the listener as the
/// environment left it.
fn check_public_listener(file: &str, config: &RouterConfig, protection: Protection) -> Result<()> {
    let protection = meridian_auth::ListenerProtection {
        auth_section: protection.auth_section,
        tokens: config.auth.is_some(),
        tls: config.tls.is_some(),
        tls_disabled: protection.tls_disabled,
    };
    meridian_auth::check_public_listener(file, config.listen, protection).map_err(Error::Config)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleSection {
    listen: Option<SocketAddr>,
    tracing_ui: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetrySection {
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesSection {
    path: PathBuf,
    reload_interval_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    probe_interval_ms: Option<Spanned<u64>>,
    probe_deadline_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    request_timeout_ms: Option<Spanned<u64>>,
    forward_timeout_ms: Option<Spanned<u64>>,
    forward_attempts_max: Option<Spanned<usize>>,
    request_bytes_max: Option<Spanned<usize>>,
    concurrency_per_connection_max: Option<Spanned<usize>>,
}

impl RouterConfig {
    /// A config with default intervals and limits, for `meridian up` and
    /// tests. Refuses a gateway endpoint that is not an `http://` URI.
    pub fn new(
        listen: SocketAddr,
        rules_path: impl Into<PathBuf>,
        gateways: impl IntoIterator<Item = (RegionId, String)>,
    ) -> Result<Self> {
        let gateways: BTreeMap<RegionId, String> = gateways.into_iter().collect();
        for (region, url) in &gateways {
            check_endpoint(url)
                .map_err(|reason| Error::Config(format!("gateways.{region}: {reason}")))?;
        }
        Ok(Self {
            listen,
            rules_path: rules_path.into(),
            rules_reload_interval: Duration::from_millis(RULES_RELOAD_INTERVAL_MS_DEFAULT),
            gateways,
            health: HealthConfig::default(),
            limits: Limits::default(),
            failover: None,
            metrics_listen: None,
            console: None,
            tls: None,
            gateway_ca: None,
            auth: None,
            gateway_token_file: None,
        })
    }

    /// Reads `path`, then applies the environment overrides. A relative
    /// rules path is taken relative to the config file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        let mut config = Self::parse(&path.display().to_string(), &text, |name| {
            std::env::var(name).ok()
        })?;
        if config.rules_path.is_relative()
            && let Some(dir) = path.parent()
        {
            config.rules_path = dir.join(&config.rules_path);
        }
        Ok(config)
    }

    /// Parses a config's text; `env` looks up override variables. `file`
    /// only labels errors.
    pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let parsed: FileConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end();
            Error::Config(match e.span() {
                Some(span) => at(file, text, &span, message),
                None => format!("{file}: {message}"),
            })
        })?;
        let (mut config, protection) = parsed.into_config(file, text)?;
        // Overrides have no line in the file, so their errors name the
        // variable instead.
        for (var, key) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            match *key {
                "listen" => {
                    config.listen = value.parse().map_err(|e| {
                        Error::Config(format!(
                            "{var}: {value:?} is not a socket address (HOST:PORT): {e}"
                        ))
                    })?;
                }
                "rules.path" => {
                    if value.is_empty() {
                        return Err(Error::Config(format!("{var}: must not be empty")));
                    }
                    config.rules_path = PathBuf::from(value);
                }
                _ => {}
            }
        }
        check_public_listener(file, &config, protection)?;
        Ok(config)
    }
}

impl FileConfig {
    fn into_config(self, file: &str, text: &str) -> Result<(RouterConfig, Protection)> {
        let millis = |value: Option<Spanned<u64>>, key: &str, default: u64| -> Result<Duration> {
            Ok(Duration::from_millis(positive(
                file, text, key, value, default,
            )?))
        };
        let mut gateways = BTreeMap::new();
        for (region, url) in self.gateways {
            check_endpoint(url.get_ref()).map_err(|reason| {
                Error::Config(at(
                    file,
                    text,
                    &url.span(),
                    &format!("gateways.{region}: {reason}"),
                ))
            })?;
            gateways.insert(region, url.into_inner());
        }
        let health = HealthConfig {
            probe_interval: millis(
                self.health.probe_interval_ms,
                "health.probe_interval_ms",
                PROBE_INTERVAL_MS_DEFAULT,
            )?,
            probe_deadline: millis(
                self.health.probe_deadline_ms,
                "health.probe_deadline_ms",
                PROBE_DEADLINE_MS_DEFAULT,
            )?,
            timeout: millis(
                self.health.timeout_ms.clone(),
                "health.timeout_ms",
                HEALTH_TIMEOUT_MS_DEFAULT,
            )?,
        };
        if health.timeout <= health.probe_interval {
            let message = format!(
                "health.timeout_ms ({} ms) must be longer than health.probe_interval_ms ({} ms), \
                 or healthy gateways look down between two probes",
                health.timeout.as_millis(),
                health.probe_interval.as_millis()
            );
            return Err(Error::Config(located(
                file,
                text,
                self.health.timeout_ms.map(|s| s.span()),
                &message,
            )));
        }
        let limits = Limits {
            request_timeout: millis(
                self.limits.request_timeout_ms,
                "limits.request_timeout_ms",
                REQUEST_TIMEOUT_MS_DEFAULT,
            )?,
            forward_timeout: millis(
                self.limits.forward_timeout_ms.clone(),
                "limits.forward_timeout_ms",
                FORWARD_TIMEOUT_MS_DEFAULT,
            )?,
            forward_attempts_max: positive(
                file,
                text,
                "limits.forward_attempts_max",
                self.limits.forward_attempts_max,
                FORWARD_ATTEMPTS_MAX_DEFAULT,
            )?,
            request_bytes_max: positive(
                file,
                text,
                "limits.request_bytes_max",
                self.limits.request_bytes_max,
                REQUEST_BYTES_MAX_DEFAULT,
            )?,
            concurrency_per_connection_max: positive(
                file,
                text,
                "limits.concurrency_per_connection_max",
                self.limits.concurrency_per_connection_max,
                CONCURRENCY_PER_CONNECTION_MAX_DEFAULT,
            )?,
            public: meridian_tls::PublicLimits::default(),
        };
        if limits.forward_timeout >= limits.request_timeout {
            let message = format!(
                "limits.forward_timeout_ms ({} ms) must be shorter than limits.request_timeout_ms ({} ms), \
                 or a failed gateway leaves no time to try the next one",
                limits.forward_timeout.as_millis(),
                limits.request_timeout.as_millis()
            );
            return Err(Error::Config(located(
                file,
                text,
                self.limits.forward_timeout_ms.map(|s| s.span()),
                &message,
            )));
        }
        let console = match self.console {
            None => None,
            Some(section) => {
                let listen = match section.listen {
                    Some(listen) => listen,
                    None => CONSOLE_LISTEN_DEFAULT
                        .parse()
                        .map_err(|e| Error::Config(format!("console.listen default: {e}")))?,
                };
                if let Some(template) = &section.tracing_ui
                    && !template.get_ref().contains(TRACE_ID_PLACEHOLDER)
                {
                    return Err(Error::Config(at(
                        file,
                        text,
                        &template.span(),
                        &format!(
                            "console.tracing_ui: {:?} has no {TRACE_ID_PLACEHOLDER} to fill \
                             (e.g. http://localhost:16686/trace/{{trace_id}})",
                            template.get_ref()
                        ),
                    )));
                }
                Some(ConsoleConfig {
                    listen,
                    tracing_ui: section.tracing_ui.map(Spanned::into_inner),
                })
            }
        };
        let tls_disabled = self.tls.as_ref().is_some_and(|section| section.disabled);
        let (tls, gateway_ca) = match self.tls {
            None => (None, None),
            Some(TlsSection {
                cert: Some(cert),
                key: Some(key),
                gateway_ca,
                disabled: false,
            }) => (Some(PublicTls { cert, key }), gateway_ca),
            Some(TlsSection {
                cert: None,
                key: None,
                gateway_ca,
                ..
            }) => (None, gateway_ca),
            Some(TlsSection { disabled: true, .. }) => {
                return Err(Error::Config(format!(
                    "{file}: tls: disabled = true takes no cert or key (gateway_ca may stay); remove one or the other"
                )));
            }
            Some(_) => {
                return Err(Error::Config(format!(
                    "{file}: tls: set both cert and key, or neither"
                )));
            }
        };
        for (region, url) in &gateways {
            if url.starts_with("https://") && gateway_ca.is_none() {
                return Err(Error::Config(format!(
                    "{file}: gateways.{region}: {url:?} is https: set tls.gateway_ca (the CA of the gateways' certificates)"
                )));
            }
        }
        let auth_section = self.auth.is_some();
        let (auth, gateway_token_file) = match self.auth {
            None => (None, None),
            Some(section) => {
                let table = meridian_auth::AuthTable {
                    jwks: section.jwks,
                    issuer: section.issuer,
                    audience: section.audience,
                    reload_interval_ms: section.reload_interval_ms,
                    disabled: section.disabled,
                    algorithms: section.algorithms,
                    ca: section.ca,
                    claims: section.claims,
                };
                let auth = match table
                    .into_choice(file, &["gateway_token_file"])
                    .map_err(Error::Config)?
                {
                    meridian_auth::AuthChoice::Enabled(settings) => Some(settings),
                    meridian_auth::AuthChoice::Disabled => None,
                };
                (auth, section.gateway_token_file)
            }
        };
        if self.rules.path.as_os_str().is_empty() {
            return Err(Error::Config(format!(
                "{file}: rules.path: must not be empty"
            )));
        }
        let protection = Protection {
            auth_section,
            tls_disabled,
        };
        let config = RouterConfig {
            listen: self.listen,
            rules_path: self.rules.path,
            rules_reload_interval: millis(
                self.rules.reload_interval_ms,
                "rules.reload_interval_ms",
                RULES_RELOAD_INTERVAL_MS_DEFAULT,
            )?,
            gateways,
            health,
            limits,
            failover: self
                .failover
                .map(|section| section.into_settings(file))
                .transpose()?,
            metrics_listen: self.telemetry.metrics_listen,
            console,
            tls,
            gateway_ca,
            auth,
            gateway_token_file,
        };
        Ok((config, protection))
    }
}

/// A gateway endpoint must be a plain `http://HOST:PORT` or
/// `https://HOST:PORT` URI (https needs `tls.gateway_ca`); a path would be
/// ignored.
fn check_endpoint(url: &str) -> std::result::Result<(), String> {
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URI ({e}); write http://HOST:PORT"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{url:?} must start with http:// or https://"));
    }
    if uri.port_u16().is_none() {
        return Err(format!("{url:?} has no port; write http://HOST:PORT"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("{url:?} has a path; write http://HOST:PORT"));
    }
    Ok(())
}

fn positive<T: PartialEq + Default + Copy>(
    file: &str,
    text: &str,
    key: &str,
    value: Option<Spanned<T>>,
    default: T,
) -> Result<T> {
    match value {
        Some(v) if *v.get_ref() == T::default() => Err(Error::Config(at(
            file,
            text,
            &v.span(),
            &format!("{key}: must be at least 1"),
        ))),
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}

fn located(file: &str, text: &str, span: Option<Range<usize>>, message: &str) -> String {
    match span {
        Some(span) => at(file, text, &span, message),
        None => format!("{file}: {message}"),
    }
}

/// `FILE:LINE:COL: message`, the line and column (1-based, in characters)
/// of the span's start.
fn at(file: &str, text: &str, span: &Range<usize>, message: &str) -> String {
    let (line, column) = meridian_rules::line_column(text, span.start);
    format!("{file}:{line}:{column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7100"

[rules]
path = "rules.toml"
reload_interval_ms = 500

[gateways]
us-east = "http://127.0.0.1:7101"
eu-west = "http://127.0.0.1:7102"

[health]
probe_interval_ms = 200
timeout_ms = 1000

[limits]
forward_timeout_ms = 1500
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn error(text: &str) -> String {
        RouterConfig::parse("router.toml", text, no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_the_metrics_address() {
        assert_eq!(
            RouterConfig::parse("router.toml", GOOD, no_env)
                .unwrap()
                .metrics_listen,
            None
        );
        let with = format!("{GOOD}\n[telemetry]\nmetrics_listen = \"127.0.0.1:9465\"\n");
        let config = RouterConfig::parse("router.toml", &with, no_env).unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9465".parse().unwrap())
        );
    }

    #[test]
    fn reads_the_console_section() {
        assert_eq!(
            RouterConfig::parse("router.toml", GOOD, no_env)
                .unwrap()
                .console,
            None
        );
        let with = format!("{GOOD}\n[console]\n");
        let console = RouterConfig::parse("router.toml", &with, no_env)
            .unwrap()
            .console
            .unwrap();
        assert_eq!(console.listen, CONSOLE_LISTEN_DEFAULT.parse().unwrap());
        assert_eq!(console.tracing_ui, None);
        let with = format!(
            "{GOOD}\n[console]\nlisten = \"127.0.0.1:7300\"\ntracing_ui = \"http://localhost:16686/trace/{{trace_id}}\"\n"
        );
        let console = RouterConfig::parse("router.toml", &with, no_env)
            .unwrap()
            .console
            .unwrap();
        assert_eq!(console.listen.port(), 7300);
        assert_eq!(
            console.tracing_ui.as_deref(),
            Some("http://localhost:16686/trace/{trace_id}")
        );

        let bad = format!("{GOOD}\n[console]\ntracing_ui = \"http://localhost:16686/\"\n");
        let line = bad.lines().count();
        let err = error(&bad);
        assert!(
            err.starts_with(&format!(
                "config: router.toml:{line}:14: console.tracing_ui: "
            )),
            "{err}"
        );
        assert!(err.contains("has no {trace_id}"), "{err}");
    }

    #[test]
    fn reads_a_good_file() {
        let config = RouterConfig::parse("router.toml", GOOD, no_env).unwrap();
        assert_eq!(config.listen.port(), 7100);
        assert_eq!(config.rules_path, PathBuf::from("rules.toml"));
        assert_eq!(config.rules_reload_interval, Duration::from_millis(500));
        assert_eq!(config.gateways.len(), 2);
        assert_eq!(
            config.gateways[&RegionId::new("eu-west").unwrap()],
            "http://127.0.0.1:7102"
        );
        assert_eq!(config.health.probe_interval, Duration::from_millis(200));
        assert_eq!(
            config.health.probe_deadline,
            Duration::from_millis(PROBE_DEADLINE_MS_DEFAULT)
        );
        assert_eq!(config.health.timeout, Duration::from_secs(1));
        assert_eq!(config.limits.forward_timeout, Duration::from_millis(1500));
        assert_eq!(
            config.limits.forward_attempts_max,
            FORWARD_ATTEMPTS_MAX_DEFAULT
        );
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let err = error(&GOOD.replace("us-east = ", "US_East = "));
        assert!(err.starts_with("config: router.toml:9:1: "), "{err}");
        assert!(err.contains("must start with a lowercase letter"), "{err}");

        let err = error(&GOOD.replace(
            "reload_interval_ms = 500",
            "reload_interval_ms = 500\nreload = 1",
        ));
        assert!(
            err.starts_with("config: router.toml:7:1: unknown field `reload`"),
            "{err}"
        );

        let err = error(&GOOD.replace("\"http://127.0.0.1:7102\"", "\"ftp://eu.example:443\""));
        assert!(
            err.starts_with("config: router.toml:10:11: gateways.eu-west: "),
            "{err}"
        );
        assert!(err.contains("must start with http:// or https://"), "{err}");
        let err = error(&GOOD.replace("\"http://127.0.0.1:7102\"", "\"https://eu.example:443\""));
        assert!(err.contains("is https: set tls.gateway_ca"), "{err}");

        let err = error(&GOOD.replace("\"http://127.0.0.1:7102\"", "\"http://127.0.0.1\""));
        assert!(err.contains("has no port"), "{err}");

        let err = error(&GOOD.replace("timeout_ms = 1000", "timeout_ms = 100"));
        assert!(
            err.starts_with("config: router.toml:14:14: health.timeout_ms (100 ms) must be longer"),
            "{err}"
        );

        let err = error(&GOOD.replace("forward_timeout_ms = 1500", "forward_timeout_ms = 0"));
        assert_eq!(
            err,
            "config: router.toml:17:22: limits.forward_timeout_ms: must be at least 1"
        );

        let err = error(&GOOD.replace("forward_timeout_ms = 1500", "forward_timeout_ms = 9000"));
        assert!(
            err.contains("must be shorter than limits.request_timeout_ms (5000 ms)"),
            "{err}"
        );

        let err = error(&GOOD.replace("[rules]\npath = \"rules.toml\"\n", "[rules]\n"));
        assert!(err.contains("missing field `path`"), "{err}");
    }

    #[test]
    fn a_public_listener_off_loopback_needs_auth_and_tls_or_an_explicit_opt_out() {
        let public = GOOD.replace("listen = \"127.0.0.1:7100\"", "listen = \"0.0.0.0:7100\"");
        assert_eq!(
            error(&public),
            "config: router.toml: [auth] is missing: the public listener 0.0.0.0:7100 is not loopback; \
             add [auth] jwks = \"FILE\", or set [auth] disabled = true to serve without tokens"
        );
        // MERIDIAN_LISTEN moves a loopback file off loopback: the same check.
        let env = |name: &str| (name == "MERIDIAN_LISTEN").then(|| "10.1.2.3:7100".to_owned());
        let err = RouterConfig::parse("router.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[auth] is missing: the public listener 10.1.2.3:7100 is not loopback"),
            "{err}"
        );

        let with_auth = format!(
            "{public}\n[auth]\njwks = \"/auth/jwks.json\"\ngateway_token_file = \"/token/router.jwt\"\n"
        );
        let err = error(&with_auth);
        assert!(
            err.starts_with(
                "config: router.toml: [tls] is missing: the public listener 0.0.0.0:7100"
            ),
            "{err}"
        );
        // gateway_ca alone is the client side: still no TLS on the listener.
        let err = error(&format!("{with_auth}\n[tls]\ngateway_ca = \"/ca.pem\"\n"));
        assert!(err.contains("[tls] is missing"), "{err}");

        let secure = format!(
            "{with_auth}\n[tls]\ncert = \"/tls/tls.crt\"\nkey = \"/tls/tls.key\"\ngateway_ca = \"/ca.pem\"\n"
        );
        let config = RouterConfig::parse("router.toml", &secure, no_env).unwrap();
        assert_eq!(
            config.auth.unwrap().jwks,
            Some(PathBuf::from("/auth/jwks.json"))
        );
        assert_eq!(config.tls.unwrap().key, PathBuf::from("/tls/tls.key"));
        assert_eq!(
            config.gateway_token_file,
            Some(PathBuf::from("/token/router.jwt"))
        );

        let err = error(&format!(
            "{public}\n[auth]\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n"
        ));
        assert!(
            err.starts_with("config: router.toml: auth.jwks is missing"),
            "{err}"
        );

        // The explicit opt-outs; the gateways' token stays usable.
        let open = format!("{public}\n[auth]\ndisabled = true\ngateway_token_file = \"/t.jwt\"\n");
        let config = RouterConfig::parse("router.toml", &open, no_env).unwrap();
        assert!(config.auth.is_none() && config.tls.is_none());
        assert_eq!(config.gateway_token_file, Some(PathBuf::from("/t.jwt")));
        let proxied = format!("{with_auth}\n[tls]\ndisabled = true\ngateway_ca = \"/ca.pem\"\n");
        let config = RouterConfig::parse("router.toml", &proxied, no_env).unwrap();
        assert!(config.auth.is_some() && config.tls.is_none());
        assert_eq!(config.gateway_ca, Some(PathBuf::from("/ca.pem")));

        let err = error(&format!(
            "{public}\n[auth]\ndisabled = true\njwks = \"/j.json\"\n"
        ));
        assert!(err.contains("auth: disabled = true takes no jwks"), "{err}");
        let err = error(&format!(
            "{with_auth}\n[tls]\ndisabled = true\ncert = \"/c\"\nkey = \"/k\"\n"
        ));
        assert!(
            err.contains("tls: disabled = true takes no cert or key"),
            "{err}"
        );

        // Loopback without either keeps working (development, tests).
        let config = RouterConfig::parse("router.toml", GOOD, no_env).unwrap();
        assert!(config.auth.is_none() && config.tls.is_none());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "MERIDIAN_LISTEN" => Some("127.0.0.1:9999".to_owned()),
            "MERIDIAN_RULES" => Some("/etc/meridian/rules.toml".to_owned()),
            _ => None,
        };
        let config = RouterConfig::parse("router.toml", GOOD, env).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.rules_path, PathBuf::from("/etc/meridian/rules.toml"));

        let env = |name: &str| (name == "MERIDIAN_LISTEN").then(|| "nowhere".to_owned());
        let err = RouterConfig::parse("router.toml", GOOD, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config: MERIDIAN_LISTEN: \"nowhere\" is not a socket address"),
            "{err}"
        );
    }

    #[test]
    fn load_resolves_the_rules_path_next_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.toml");
        std::fs::write(&path, GOOD).unwrap();
        let config = RouterConfig::load(&path).unwrap();
        assert_eq!(config.rules_path, dir.path().join("rules.toml"));
    }

    #[test]
    fn new_checks_endpoints() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let east = RegionId::new("us-east").unwrap();
        let config = RouterConfig::new(
            listen,
            "rules.toml",
            [(east.clone(), "http://127.0.0.1:1".to_owned())],
        )
        .unwrap();
        assert_eq!(config.limits, Limits::default());
        let err = RouterConfig::new(listen, "rules.toml", [(east, "127.0.0.1:1".to_owned())])
            .unwrap_err();
        assert!(
            err.to_string().starts_with("config: gateways.us-east: "),
            "{err}"
        );
    }
}
