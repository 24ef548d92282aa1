//! `meridian-auth`: who a client of Meridian's public services is, and what
//! it may do.
//!
//! It owns:
//! - **tokens** ([`jwt`]): compact JWS with `alg: EdDSA` (Ed25519, through
//!   `ring`), minted by the development tooling with a [`SigningKey`] and
//!   verified by a [`Verifier`]: signature, `kid`, `exp`, `nbf` (with a
//!   small leeway), `iss`/`aud` when configured, and the claims `sub`,
//!   `role` and `region`;
//! - **keys** ([`jwks`]): the verification keys come from a JWKS file that
//!   is re-read when it changes (mtime polled, and at once — rate-limited —
//!   when a token names an unknown `kid`), so keys rotate without a restart;
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

mod error;
pub mod jwks;
pub mod jwt;
mod layer;
mod policy;

use std::{fmt, str::FromStr};

use meridian_core::RegionId;

pub use error::{AuthError, Result};
pub use jwks::{JWKS_RELOAD_INTERVAL, Jwks, JwksSource};
pub use jwt::{Claims, LEEWAY_SECS, SigningKey, Verifier, VerifierSettings};
pub use layer::{AuthLayer, AuthService};
pub use policy::{Access, Policy, gateway_policy, router_policy};

/// The header a client sends its token in: `authorization: Bearer <jwt>`.
pub const AUTHORIZATION: &str = "authorization";

/// What a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
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
    pub const ALL: [Role; 4] = [Role::Agent, Role::Operator, Role::Sre, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Sre => "sre",
            Role::Admin => "admin",
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
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            AuthError::Claim(format!("role {s:?} is not one of agent, operator, sre, admin"))
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
    pub fn check_owner(&self, owner: &RegionId, what: &str) -> std::result::Result<(), tonic::Status> {
        match self.agent_region() {
            Some(region) if region != owner => {
                let reason = format!("agent {} of {region} may not {what}: it is owned by {owner}", self.subject);
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

/// `[auth]` of a service's config file.
///
/// ```toml
/// [auth]
/// jwks = "/etc/meridian/jwks.json"   # Ed25519 public keys (JWKS), re-read when it changes
/// issuer = "https://idp.example"     # optional: required `iss`
/// audience = "meridian"              # optional: required member of `aud`
/// reload_interval_ms = 2000          # optional: how often the JWKS is re-read
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwks: std::path::PathBuf,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub reload_interval_ms: Option<u64>,
}

impl AuthSettings {
    pub fn new(jwks: impl Into<std::path::PathBuf>) -> Self {
        Self { jwks: jwks.into(), issuer: None, audience: None, reload_interval_ms: None }
    }

    /// Loads the JWKS and builds the layer for `policy`; the returned task
    /// polls the JWKS file until it is dropped.
    pub fn start(&self, policy: Policy, clock: std::sync::Arc<dyn meridian_core::Clock>) -> Result<(AuthLayer, jwks::ReloadTask)> {
        let (verifier, reload) = self.start_verifier(clock)?;
        Ok((AuthLayer::new(verifier, policy), reload))
    }

    /// Loads the JWKS and builds a verifier, for a service that checks
    /// tokens in more than one place (the router's layer and its console);
    /// the returned task polls the JWKS file until it is dropped.
    pub fn start_verifier(&self, clock: std::sync::Arc<dyn meridian_core::Clock>) -> Result<(Verifier, jwks::ReloadTask)> {
        let source = std::sync::Arc::new(JwksSource::load(&self.jwks)?);
        let interval = self.reload_interval_ms.map_or(JWKS_RELOAD_INTERVAL, std::time::Duration::from_millis);
        let reload = source.spawn_reload(interval.max(std::time::Duration::from_millis(10)));
        let settings = VerifierSettings { issuer: self.issuer.clone(), audience: self.audience.clone() };
        Ok((Verifier::new(source, settings, clock), reload))
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
}

/// What an `[auth]` table asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChoice {
    /// `disabled = true`.
    Disabled,
    Enabled(AuthSettings),
}

impl AuthTable {
    /// The table's choice, or why it is contradictory or incomplete.
    /// `kept` names the service's own keys of the table (the router's
    /// `gateway_token_file`), which `disabled = true` leaves in force.
    pub fn into_choice(self, file: &str, kept: &[&str]) -> std::result::Result<AuthChoice, String> {
        match (self.disabled, self.jwks) {
            (true, None) if self.issuer.is_none() && self.audience.is_none() && self.reload_interval_ms.is_none() => {
                Ok(AuthChoice::Disabled)
            }
            (true, _) if kept.is_empty() => Err(format!(
                "{file}: auth: disabled = true takes no other key (jwks, issuer, audience, reload_interval_ms); keep one or the other"
            )),
            (true, _) => Err(format!(
                "{file}: auth: disabled = true takes no jwks, issuer, audience or reload_interval_ms \
                 ({} may stay); keep one or the other",
                kept.join(", ")
            )),
            (false, None) => Err(format!(
                "{file}: auth.jwks is missing: name the JWKS file of the token issuer's public keys, \
                 or set disabled = true to serve without tokens"
            )),
            (false, Some(jwks)) => Ok(AuthChoice::Enabled(AuthSettings {
                jwks,
                issuer: self.issuer,
                audience: self.audience,
                reload_interval_ms: self.reload_interval_ms,
            })),
        }
    }
}

/// How a config file protects its service's public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerProtection {
    /// The file has `[auth]` (a `jwks`, or `disabled = true`).
    pub auth_section: bool,
    /// `[auth]` names a JWKS: the listener takes bearer tokens.
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
pub fn check_public_listener(file: &str, listen: std::net::SocketAddr, protection: ListenerProtection) -> std::result::Result<(), String> {
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
        f.write_str(if self.0.is_some() { "BearerToken(set)" } else { "BearerToken(none)" })
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
                .map_err(|_| AuthError::Malformed("the token has characters a header cannot carry".into())),
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
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        self.apply(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{ListenerProtection, check_public_listener};

    const NONE: ListenerProtection = ListenerProtection { auth_section: false, tokens: false, tls: false, tls_disabled: false };

    #[test]
    fn only_loopback_or_an_explicit_opt_out_serves_without_tokens_and_tls() {
        let public = "0.0.0.0:7101".parse().unwrap();
        assert_eq!(check_public_listener("g.toml", "127.0.0.1:7101".parse().unwrap(), NONE), Ok(()));
        assert_eq!(check_public_listener("g.toml", "[::1]:7101".parse().unwrap(), NONE), Ok(()));

        let missing = check_public_listener("g.toml", public, NONE).unwrap_err();
        assert!(missing.starts_with("g.toml: [auth] is missing") && missing.contains("0.0.0.0:7101"), "{missing}");

        let tokens = ListenerProtection { auth_section: true, tokens: true, ..NONE };
        let plaintext = check_public_listener("g.toml", public, tokens).unwrap_err();
        assert!(plaintext.starts_with("g.toml: [tls] is missing"), "{plaintext}");
        assert_eq!(check_public_listener("g.toml", public, ListenerProtection { tls: true, ..tokens }), Ok(()));
        assert_eq!(check_public_listener("g.toml", public, ListenerProtection { tls_disabled: true, ..tokens }), Ok(()));

        // `[auth] disabled = true` is the file saying so.
        assert_eq!(check_public_listener("g.toml", public, ListenerProtection { auth_section: true, ..NONE }), Ok(()));
    }
}
