//! `meridian-auth`: who a client of Meridian's public services is, and what
//! it may do.
//!
//! It owns:
//! - **tokens** ([`jwt`]): compact JWS verified by a [`Verifier`] with
//!   `jsonwebtoken` (signatures by `ring`): an allow-list of algorithms
//!   (RS256, ES256, EdDSA, …), `kid`, `exp`, `nbf` (with a small leeway),
//!   `iss`/`aud` when configured, and the principal read from claims as
//!   `[auth.claims]` maps them ([`ClaimMapping`]). The development tooling
//!   mints EdDSA tokens with a [`SigningKey`];
//! - **keys** ([`jwks`]): from a JWKS file that is re-read when it changes,
//!   or from an OIDC issuer ([`oidc`]: discovery, then the JWKS over HTTPS,
//!   cached as `Cache-Control` says); either is refreshed at once —
//!   rate-limited — when a token names an unknown `kid`, so keys rotate
//!   without a restart, and a failed refresh keeps the last good keys and
//!   shows in [`KeyStatus`];
//! - **roles and the per-RPC table** ([`Role`], [`Policy`]): which roles may
//!   call each method of the public services;
//! - **one tower layer** ([`AuthLayer`]): every request to a protected
//!   service is authenticated and authorized before it reaches the handler,
//!   which finds the verified [`Principal`] in the request's extensions.
//!   Refusals are `UNAUTHENTICATED` (no, bad or expired token) or
//!   `PERMISSION_DENIED` (the role may not call the method), each with the
//!   reason, and logged with `tracing::warn!` (never the token).
//!
//! Boundary: this crate knows tokens, keys and roles, not tickets. Checks
//! that need a ticket (an agent writes only tickets its region owns) are
//! made by the handlers with [`Principal::agent_region`]; they know the
//! owner. Service-to-service identity (mutual TLS, SPIFFE ids) is
//! `meridian-tls`'s.

#![forbid(unsafe_code)]

mod claims;
mod error;
pub mod jwks;
pub mod jwt;
mod layer;
pub mod oidc;
mod policy;
mod ring_provider;

use std::{fmt, str::FromStr};

use meridian_core::RegionId;

pub use claims::ClaimMapping;
pub use error::{AuthError, Result};
pub use jsonwebtoken::Algorithm;
pub use jwks::{JWKS_RELOAD_INTERVAL, Jwks, JwksSource, KeyStatus};
pub use jwt::{Claims, LEEWAY_SECS, SigningKey, Verifier, VerifierSettings};
pub use layer::{AuthLayer, AuthService};
pub use policy::{Access, Policy, gateway_policy, router_policy};

/// The health service name (`grpc.health.v1`) whose status is that of the
/// token keys: SERVING while they are fresh, NOT_SERVING while refreshing
/// them fails (the last good keys stay in force) or before any arrived.
pub const KEYS_HEALTH_SERVICE: &str = "meridian.auth.Keys";

/// Keeps the health of [`KEYS_HEALTH_SERVICE`] in step with
/// the token keys: NOT_SERVING while the latest read or fetch failed (the
/// last good keys still verify) or before any keys arrived. Runs until
/// the source is dropped; spawn it beside the service's health reporter.
pub async fn report_key_health(
    keys: std::sync::Arc<JwksSource>,
    health: tonic_health::server::HealthReporter,
) {
    use tonic_health::ServingStatus;
    let mut status = keys.subscribe();
    let mut reported = None;
    loop {
        let now = status.borrow_and_update().clone();
        if reported != Some(now.healthy()) {
            reported = Some(now.healthy());
            let serving = if now.healthy() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if let Some(error) = &now.last_error {
                tracing::warn!(origin = %keys.origin(), %error, failures = now.failures, "token keys: refresh failing; the last good keys stay in force");
            }
            health
                .set_service_status(KEYS_HEALTH_SERVICE, serving)
                .await;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// The header a client sends its token in: `authorization: Bearer <jwt>`.
pub const AUTHORIZATION: &str = "authorization";

/// What a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    // Declared narrowest first: when a token maps to several roles the
    // broadest (greatest) counts.
    /// A system that brings customers' words in (a region's mail loop, a
    /// web form): creates tickets and adds customer messages, reads a
    /// ticket to find its owner, and nothing else.
    Intake,
    /// Reads and writes the tickets of its own region.
    Agent,
    /// Changes and tries the follow-the-sun rules.
    Operator,
    /// Reads everything: tickets, traces, status.
    Sre,
    /// Everything, including failover and certificates.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Agent,
        Role::Operator,
        Role::Sre,
        Role::Admin,
        Role::Intake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Sre => "sre",
            Role::Admin => "admin",
            Role::Intake => "intake",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                AuthError::Claim(format!(
                    "role {s:?} is not one of agent, operator, sre, admin, intake"
                ))
            })
    }
}

/// A verified caller: put in the request's extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: who, for logs and audit.
    pub subject: String,
    pub role: Role,
    /// The token's `region`: required for agents, optional (global) for the
    /// other roles.
    pub region: Option<RegionId>,
}

impl Principal {
    /// The region an agent acts for; `None` for the other roles, which are
    /// not bound to a region.
    pub fn agent_region(&self) -> Option<&RegionId> {
        match self.role {
            Role::Agent => self.region.as_ref(),
            _ => None,
        }
    }

    /// `PERMISSION_DENIED` unless this principal may touch a ticket owned
    /// by `owner`: agents only their region's, every other role that got
    /// past the layer any. `what` says what was tried ("update ticket X").
    pub fn check_owner(
        &self,
        owner: &RegionId,
        what: &str,
    ) -> std::result::Result<(), tonic::Status> {
        match self.agent_region() {
            Some(region) if region != owner => {
                let reason = format!(
                    "agent {} of {region} may not {what}: it is owned by {owner}",
                    self.subject
                );
                tracing::warn!(subject = %self.subject, role = %self.role, %reason, "call refused: permission denied");
                Err(tonic::Status::permission_denied(reason))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.region {
            Some(region) => write!(f, "{} ({} of {region})", self.subject, self.role),
            None => write!(f, "{} ({})", self.subject, self.role),
        }
    }
}

/// The verified caller of `request`, if the service runs behind an
/// [`AuthLayer`] with authentication on.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// `[auth]` of a service's config file, checked (see [`AuthTable`] for the
/// keys as a file spells them, and docs/auth.md).
///
/// ```toml
/// [auth]
/// jwks = "/etc/meridian/jwks.json"   # keys from a JWKS file, re-read when it changes
/// issuer = "https://idp.example"     # required `iss`; without `jwks`, the OIDC issuer
///                                    # whose keys are discovered and fetched over HTTPS
/// audience = "meridian"              # optional: required member of `aud`
/// algorithms = ["RS256", "ES256"]    # optional allow-list (default: EdDSA for a
///                                    # file, RS256 for an issuer)
/// ca = "/etc/meridian/idp-ca.pem"    # optional: the only CA trusted for the issuer
/// reload_interval_ms = 2000          # optional: file poll / issuer refresh without max-age
///
/// [auth.claims]                      # optional: where the principal is read
/// subject = "sub"
/// role = "groups"
/// region = "region"
/// roles = { "meridian-sre" = "sre", "support-eu" = "agent" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The JWKS file; `None` takes the keys from `issuer` instead.
    pub jwks: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub reload_interval_ms: Option<u64>,
    /// The algorithms tokens may be signed with; `None` is the default of
    /// the key source ([`AuthSettings::algorithms`]).
    pub algorithms: Option<Vec<Algorithm>>,
    /// PEM file of the CA(s) trusted for the issuer's HTTPS (a private
    /// issuer); `None` trusts the public web PKI.
    pub ca: Option<std::path::PathBuf>,
    pub claims: ClaimMapping,
}

impl AuthSettings {
    /// Keys from the JWKS file `jwks` (EdDSA unless `algorithms` says
    /// otherwise): what `meridian up` and the tests configure.
    pub fn new(jwks: impl Into<std::path::PathBuf>) -> Self {
        Self {
            jwks: Some(jwks.into()),
            ..Self::from_issuer("")
        }
    }

    /// Keys discovered from the OIDC issuer at `issuer` (an https URL).
    pub fn from_issuer(issuer: impl Into<String>) -> Self {
        let issuer: String = issuer.into();
        Self {
            jwks: None,
            issuer: Some(issuer).filter(|i| !i.is_empty()),
            audience: None,
            reload_interval_ms: None,
            algorithms: None,
            ca: None,
            claims: ClaimMapping::default(),
        }
    }

    /// The allow-list in force: as configured, else EdDSA for a file (the
    /// development tokens) and RS256 for an issuer (the one algorithm every
    /// OpenID provider must offer).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        match (&self.algorithms, &self.jwks) {
            (Some(algorithms), _) => algorithms.clone(),
            (None, Some(_)) => vec![Algorithm::EdDSA],
            (None, None) => vec![Algorithm::RS256],
        }
    }

    /// Loads the keys and builds the layer for `policy`; the returned task
    /// keeps the keys fresh until it is dropped.
    pub fn start(
        &self,
        policy: Policy,
        clock: std::sync::Arc<dyn meridian_core::Clock>,
    ) -> Result<(AuthLayer, jwks::ReloadTask)> {
        let (verifier, reload) = self.start_verifier(clock)?;
        Ok((AuthLayer::new(verifier, policy), reload))
    }

    /// Loads the keys and builds a verifier, for a service that checks
    /// tokens in more than one place (the router's layer and its console);
    /// the returned task keeps the keys fresh (polls the file, or fetches
    /// from the issuer) until it is dropped. An issuer's first fetch runs
    /// in that task: this returns at once.
    pub fn start_verifier(
        &self,
        clock: std::sync::Arc<dyn meridian_core::Clock>,
    ) -> Result<(Verifier, jwks::ReloadTask)> {
        let algorithms = self.algorithms();
        let (source, default_interval) = match (&self.jwks, &self.issuer) {
            (Some(path), _) => (
                JwksSource::load_with(path, &algorithms)?,
                JWKS_RELOAD_INTERVAL,
            ),
            (None, Some(issuer)) => (
                JwksSource::issuer(issuer, self.ca.as_deref(), &algorithms)?,
                jwks::ISSUER_REFRESH_DEFAULT,
            ),
            (None, None) => {
                return Err(AuthError::Config(
                    "auth: name jwks (a JWKS file) or issuer (an OIDC issuer URL)".into(),
                ));
            }
        };
        let source = std::sync::Arc::new(source);
        let interval = self
            .reload_interval_ms
            .map_or(default_interval, std::time::Duration::from_millis);
        let reload = source.spawn_reload(interval.max(std::time::Duration::from_millis(10)));
        let settings = VerifierSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        };
        Ok((
            Verifier::new(source, settings, clock).with_claims(self.claims.clone()),
            reload,
        ))
    }
}

/// `[auth]` as a service's config file spells it: the keys of
/// [`AuthSettings`], or `disabled = true` to serve without tokens on purpose
/// (the opt-out of [`check_public_listener`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthTable {
    pub jwks: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub reload_interval_ms: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    #[serde(default)]
    pub claims: Option<ClaimsTable>,
}

/// `[auth.claims]` as a config file spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsTable {
    pub subject: Option<String>,
    pub role: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
}

/// What an `[auth]` table asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
// Made once per config load: the size is of no consequence.
#[allow(clippy::large_enum_variant)]
pub enum AuthChoice {
    /// `disabled = true`.
    Disabled,
    Enabled(AuthSettings),
}

/// The algorithms `[auth] algorithms` may name: the public-key ones.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl AuthTable {
    /// Whether any key besides `disabled` is set.
    fn has_keys(&self) -> bool {
        let Self {
            jwks,
            issuer,
            audience,
            reload_interval_ms,
            disabled: _,
            algorithms,
            ca,
            claims,
        } = self;
        jwks.is_some()
            || issuer.is_some()
            || audience.is_some()
            || reload_interval_ms.is_some()
            || algorithms.is_some()
            || ca.is_some()
            || claims.is_some()
    }

    /// The table's choice, or why it is contradictory or incomplete.
    /// `kept` names the service's own keys of the table (the router's
    /// `gateway_token_file`), which `disabled = true` leaves in force.
    pub fn into_choice(self, file: &str, kept: &[&str]) -> std::result::Result<AuthChoice, String> {
        const KEYS: &str = "jwks, issuer, audience, algorithms, ca, claims, reload_interval_ms";
        if self.disabled {
            return match (self.has_keys(), kept.is_empty()) {
                (false, _) => Ok(AuthChoice::Disabled),
                (true, true) => Err(format!(
                    "{file}: auth: disabled = true takes no other key ({KEYS}); keep one or the other"
                )),
                (true, false) => Err(format!(
                    "{file}: auth: disabled = true takes no jwks, issuer, audience, algorithms, ca, claims \
                     or reload_interval_ms ({} may stay); keep one or the other",
                    kept.join(", ")
                )),
            };
        }
        if self.jwks.is_none() && self.issuer.is_none() {
            return Err(format!(
                "{file}: auth.jwks is missing: name the JWKS file of the token issuer's public keys, \
                 or auth.issuer (an OIDC issuer's https URL) to fetch its keys, \
                 or set disabled = true to serve without tokens"
            ));
        }
        if self.ca.is_some() && self.jwks.is_some() {
            return Err(format!(
                "{file}: auth.ca is the CA of the issuer's HTTPS, and keys come from auth.jwks (a file): \
                 drop one of them"
            ));
        }
        let algorithms = self
            .algorithms
            .map(|names| parse_algorithms(file, &names))
            .transpose()?;
        let claims = self
            .claims
            .map(|table| table.into_mapping(file))
            .transpose()?
            .unwrap_or_default();
        Ok(AuthChoice::Enabled(AuthSettings {
            jwks: self.jwks,
            issuer: self.issuer,
            audience: self.audience,
            reload_interval_ms: self.reload_interval_ms,
            algorithms,
            ca: self.ca,
            claims,
        }))
    }
}

fn parse_algorithms(file: &str, names: &[String]) -> std::result::Result<Vec<Algorithm>, String> {
    let known = || {
        ALGORITHMS
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!(
            "{file}: auth.algorithms is empty: name at least one of {}",
            known()
        ));
    }
    names
        .iter()
        .map(|name| match name.parse::<Algorithm>() {
            Ok(alg) if ALGORITHMS.contains(&alg) => Ok(alg),
            Ok(_) => Err(format!(
                "{file}: auth.algorithms: {name} is HMAC (a shared secret); only public-key algorithms are taken: {}",
                known()
            )),
            Err(_) => Err(format!("{file}: auth.algorithms: {name:?} is not one of {}", known())),
        })
        .collect()
}

impl ClaimsTable {
    fn into_mapping(self, file: &str) -> std::result::Result<ClaimMapping, String> {
        let defaults = ClaimMapping::default();
        let name = |value: Option<String>, key: &str, default: String| match value {
            Some(v) if v.trim().is_empty() => {
                Err(format!("{file}: auth.claims.{key} is empty: name a claim"))
            }
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let roles = self
            .roles
            .into_iter()
            .map(|(group, role)| {
                let role = role
                    .parse::<Role>()
                    .map_err(|_| format!("{file}: auth.claims.roles.{group:?}: {role:?} is not one of agent, operator, sre, admin"))?;
                Ok((group, role))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(ClaimMapping {
            subject: name(self.subject, "subject", defaults.subject)?,
            role: name(self.role, "role", defaults.role)?,
            region: name(self.region, "region", defaults.region)?,
            roles,
        })
    }
}

/// How a config file protects its service's public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerProtection {
    /// The file has `[auth]` (a `jwks` or `issuer`, or `disabled = true`).
    pub auth_section: bool,
    /// `[auth]` names keys: the listener takes bearer tokens.
    pub tokens: bool,
    /// `[tls]` names a certificate and key.
    pub tls: bool,
    /// `[tls] disabled = true`.
    pub tls_disabled: bool,
}

/// Secure by default, for the gateway's and the router's loaders alike: a
/// public listener that is not loopback serves only with `[auth]`, and an
/// authenticated one only over `[tls]` (bearer tokens never cross a network
/// in clear text), unless the file opts out with `[auth] disabled = true`
/// or `[tls] disabled = true`. Loopback listeners are development and
/// tests, and keep working without either. The error names `file` and the
/// table to add.
pub fn check_public_listener(
    file: &str,
    listen: std::net::SocketAddr,
    protection: ListenerProtection,
) -> std::result::Result<(), String> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !protection.auth_section {
        return Err(format!(
            "{file}: [auth] is missing: the public listener {listen} is not loopback; \
             add [auth] jwks = \"FILE\", or set [auth] disabled = true to serve without tokens"
        ));
    }
    if protection.tokens && !protection.tls && !protection.tls_disabled {
        return Err(format!(
            "{file}: [tls] is missing: the public listener {listen} is not loopback and [auth] takes bearer \
             tokens, which must not cross the network in clear text; add [tls] cert = \"FILE\" and key = \"FILE\", \
             or set [tls] disabled = true if a proxy in front terminates TLS"
        ));
    }
    Ok(())
}

/// Logs, loudly, that a public listener serves without authentication.
/// On loopback that is development; elsewhere anyone who reaches the port
/// can read and write, which the log says in so many words.
pub fn warn_unauthenticated(service: &str, addr: std::net::SocketAddr) {
    if addr.ip().is_loopback() {
        tracing::warn!(%service, %addr, "public listener has no [auth]: any local process may call it without a token (development only)");
    } else {
        tracing::error!(%service, %addr, "public listener is NOT loopback and has no [auth]: anyone who reaches it can read and write tickets; configure [auth] and [tls]");
    }
}

/// A tonic client interceptor that sends `authorization: Bearer <token>`
/// on every call (none when built from `None`): the CLI's, and the
/// router's own calls to the gateways.
#[derive(Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token itself.
        f.write_str(if self.0.is_some() {
            "BearerToken(set)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl BearerToken {
    /// `token` is the bare JWT; `Err` if it cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Self> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Self(None)),
            Some(token) => format!("Bearer {token}")
                .parse()
                .map(|value| Self(Some(value)))
                .map_err(|_| {
                    AuthError::Malformed("the token has characters a header cannot carry".into())
                }),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Adds the header to one request.
    pub fn apply<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        self.apply(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::{
        Algorithm, AuthChoice, AuthTable, ListenerProtection, Role, check_public_listener,
    };

    fn table(toml: &str) -> Result<AuthChoice, String> {
        let table: AuthTable = toml::from_str(toml).map_err(|e| e.to_string())?;
        table.into_choice("g.toml", &[])
    }

    #[test]
    fn the_auth_table_takes_an_issuer_an_allow_list_and_a_claim_mapping() {
        let choice = table(
            "issuer = \"https://idp\"\nalgorithms = [\"RS256\", \"ES256\"]\n\
             [claims]\nrole = \"groups\"\nroles = { \"Ops\" = \"operator\" }\n",
        )
        .unwrap();
        let AuthChoice::Enabled(settings) = choice else {
            panic!("disabled")
        };
        assert_eq!(
            (settings.jwks.as_ref(), settings.issuer.as_deref()),
            (None, Some("https://idp"))
        );
        assert_eq!(settings.algorithms(), [Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(settings.claims.role, "groups");
        assert_eq!(settings.claims.roles.get("Ops"), Some(&Role::Operator));
        let AuthChoice::Enabled(file) = table("jwks = \"/k.json\"").unwrap() else {
            panic!("disabled")
        };
        assert_eq!(
            file.algorithms(),
            [Algorithm::EdDSA],
            "the development tokens' default"
        );
        let AuthChoice::Enabled(idp) = table("issuer = \"https://idp\"").unwrap() else {
            panic!("disabled")
        };
        assert_eq!(
            idp.algorithms(),
            [Algorithm::RS256],
            "OIDC's mandatory algorithm"
        );

        let err = |toml: &str| table(toml).unwrap_err();
        assert!(
            err("issuer = \"https://i\"\nalgorithms = [\"HS256\"]")
                .contains("auth.algorithms: HS256 is HMAC")
        );
        assert!(
            err("issuer = \"https://i\"\nalgorithms = [\"XY\"]")
                .contains("auth.algorithms: \"XY\" is not one of RS256")
        );
        assert!(
            err("issuer = \"https://i\"\nalgorithms = []").contains("auth.algorithms is empty")
        );
        assert!(
            err("jwks = \"/k\"\nca = \"/ca.pem\"")
                .contains("auth.ca is the CA of the issuer's HTTPS")
        );
        let bad_role = err("issuer = \"https://i\"\n[claims]\nroles = { \"g\" = \"root\" }");
        assert!(
            bad_role.contains("auth.claims.roles.\"g\": \"root\" is not one of agent"),
            "{bad_role}"
        );
        assert!(err("audience = \"m\"").starts_with("g.toml: auth.jwks is missing"));
        assert!(
            err("disabled = true\nissuer = \"https://i\"")
                .contains("disabled = true takes no other key")
        );
    }

    const NONE: ListenerProtection = ListenerProtection {
        auth_section: false,
        tokens: false,
        tls: false,
        tls_disabled: false,
    };

    #[test]
    fn only_loopback_or_an_explicit_opt_out_serves_without_tokens_and_tls() {
        let public = "0.0.0.0:7101".parse().unwrap();
        assert_eq!(
            check_public_listener("g.toml", "127.0.0.1:7101".parse().unwrap(), NONE),
            Ok(())
        );
        assert_eq!(
            check_public_listener("g.toml", "[::1]:7101".parse().unwrap(), NONE),
            Ok(())
        );

        let missing = check_public_listener("g.toml", public, NONE).unwrap_err();
        assert!(
            missing.starts_with("g.toml: [auth] is missing") && missing.contains("0.0.0.0:7101"),
            "{missing}"
        );

        let tokens = ListenerProtection {
            auth_section: true,
            tokens: true,
            ..NONE
        };
        let plaintext = check_public_listener("g.toml", public, tokens).unwrap_err();
        assert!(
            plaintext.starts_with("g.toml: [tls] is missing"),
            "{plaintext}"
        );
        assert_eq!(
            check_public_listener(
                "g.toml",
                public,
                ListenerProtection {
                    tls: true,
                    ..tokens
                }
            ),
            Ok(())
        );
        assert_eq!(
            check_public_listener(
                "g.toml",
                public,
                ListenerProtection {
                    tls_disabled: true,
                    ..tokens
                }
            ),
            Ok(())
        );

        // `[auth] disabled = true` is the file saying so.
        assert_eq!(
            check_public_listener(
                "g.toml",
                public,
                ListenerProtection {
                    auth_section: true,
                    ..NONE
                }
            ),
            Ok(())
        );
    }
}
