//! The verification keys (RFC 7517 JWKS: RSA, EC P-256/P-384 and Ed25519
//! public keys), from a file or from an OIDC issuer, kept fresh so keys
//! rotate without a restart.
//!
//! **Issuer** ([`JwksSource::issuer`]): discovery then the JWKS over HTTPS
//! ([`crate::oidc`]), fetched again when the response's `Cache-Control:
//! max-age` runs out, and at once — at most once per
//! [`UNKNOWN_KID_REFRESH_MIN`] — when a token names a `kid` the set lacks
//! (the issuer rotated). A failed fetch keeps the last good keys, and shows
//! in [`KeyStatus`] (metrics, health) and the log.
//!
//! **File** rotation is: add the new key to the file, start minting with it, and
//! remove the old key once its tokens have expired. Two paths pick changes
//! up: a poll (every [`JWKS_RELOAD_INTERVAL`]) that re-reads the small file
//! and swaps the key set when its bytes differ — this is what makes a
//! removed key stop working — and an immediate re-read when a token names
//! a `kid` the current set lacks, at most once per [`UNKNOWN_KID_RELOAD_MIN`]
//! so a stream of garbage tokens cannot turn into a stream of file reads.
//! A file that does not parse, or has no usable key, is logged and the old
//! set stays in force.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use tokio::sync::watch;

use crate::{AuthError, Result, oidc::Issuer};

/// How often a service re-reads its JWKS file by default.
pub const JWKS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest time between two re-reads caused by unknown key ids.
pub const UNKNOWN_KID_RELOAD_MIN: Duration = Duration::from_secs(1);
/// The shortest time between two fetches from an issuer caused by unknown
/// key ids: a stream of forged `kid`s cannot become a stream of requests.
pub const UNKNOWN_KID_REFRESH_MIN: Duration = Duration::from_secs(30);
/// Bounds on the issuer's `Cache-Control: max-age`.
pub const ISSUER_REFRESH_MIN: Duration = Duration::from_secs(1);
pub const ISSUER_REFRESH_MAX: Duration = Duration::from_secs(24 * 3600);
/// How often an issuer's keys are fetched when it sends no `max-age`.
pub const ISSUER_REFRESH_DEFAULT: Duration = Duration::from_secs(300);
/// The wait after a failed fetch before the next.
pub const ISSUER_RETRY: Duration = Duration::from_secs(30);
/// A JWKS larger than this is refused: it is a handful of keys.
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;

/// A set of public keys by key id, each with the algorithms it may verify.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, Key>,
}

/// One verification key of a [`Jwks`].
#[derive(Debug, Clone)]
pub struct Key {
    pub(crate) decoding: DecodingKey,
    /// The algorithms this key verifies: those of its type (or its `alg`)
    /// that the allow-list admits.
    pub(crate) algorithms: Vec<Algorithm>,
}

impl Key {
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Parses a JWKS document, keeping the keys usable with `allowed`.
    /// Keys for other algorithms, for encryption (`use: enc`, which
    /// Keycloak publishes beside its signing keys) or with bad material are
    /// skipped with a log line; a document with no usable key is an error,
    /// since serving with it would refuse every caller.
    pub fn parse(text: &str, allowed: &[Algorithm]) -> std::result::Result<Self, String> {
        let document: Document =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        for (i, jwk) in document.keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(serde_json::Value::as_str);
            let Some(kid) = kid else {
                return Err(format!("keys[{i}]: no kid"));
            };
            match usable_key(jwk, allowed) {
                Ok(key) => {
                    if keys.insert(kid.to_owned(), key).is_some() {
                        return Err(format!("keys[{i}]: kid {kid:?} appears twice"));
                    }
                }
                Err(reason) => {
                    tracing::warn!(kid, %reason, "JWKS key skipped");
                    skipped.push(format!("keys[{i}] ({kid}): {reason}"));
                }
            }
        }
        if keys.is_empty() {
            skipped.push(format!("no usable key ({})", usable_kinds(allowed)));
            return Err(skipped.join("; "));
        }
        Ok(Self { keys })
    }

    /// The JWKS document holding these public JWKs (from
    /// [`crate::SigningKey::public_jwk`]).
    pub fn document(public_jwks: &[serde_json::Value]) -> String {
        serde_json::to_string_pretty(&serde_json::json!({ "keys": public_jwks }))
            .unwrap_or_default()
    }

    pub fn key(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }
}

/// What kinds of key `allowed` can use, for the error of a JWKS with none.
fn usable_kinds(allowed: &[Algorithm]) -> String {
    let mut kinds = Vec::new();
    if allowed.iter().any(|a| a.family() == AlgorithmFamily::Rsa) {
        kinds.push("RSA");
    }
    if allowed.contains(&Algorithm::ES256) {
        kinds.push("EC P-256");
    }
    if allowed.contains(&Algorithm::ES384) {
        kinds.push("EC P-384");
    }
    if allowed.contains(&Algorithm::EdDSA) {
        kinds.push("OKP Ed25519");
    }
    kinds.join(", ")
}

/// The key of one JWK, or why it cannot verify any allowed algorithm.
fn usable_key(jwk: &serde_json::Value, allowed: &[Algorithm]) -> std::result::Result<Key, String> {
    let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
    if let Some(usage) = field("use")
        && usage != "sig"
    {
        return Err(format!("use {usage:?}: only signing keys verify tokens"));
    }
    let b64 = |name: &str| -> std::result::Result<Vec<u8>, String> {
        let value = field(name).ok_or_else(|| format!("no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|e| format!("{name}: {e}"))
    };
    let (kind, decoding) = match (field("kty"), field("crv")) {
        (Some("RSA"), _) => {
            let (mut n, e) = (b64("n")?, b64("e")?);
            // The minimal big-endian form ring takes; some issuers pad.
            let zeros = n.iter().take_while(|b| **b == 0).count();
            n.drain(..zeros);
            // ring refuses smaller moduli at every check; say so once here.
            if n.len() < 256 {
                return Err(format!(
                    "n is {} bits; RSA keys of at least 2048 bits are taken",
                    n.len() * 8
                ));
            }
            ("RSA", DecodingKey::from_rsa_raw_components(&n, &e))
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (b64("x")?, b64("y")?);
            let size = if crv == "P-256" { 32 } else { 48 };
            if x.len() != size || y.len() != size {
                return Err(format!("x and y of a {crv} key are {size} bytes each"));
            }
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            (crv, DecodingKey::from_ec_der(&point))
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = b64("x")?;
            if x.len() != 32 {
                return Err(format!("x is {} bytes; an Ed25519 key is 32", x.len()));
            }
            ("Ed25519", DecodingKey::from_ed_der(&x))
        }
        (kty, crv) => {
            return Err(format!(
                "kty {} crv {}: not a key type Meridian verifies",
                kty.unwrap_or("-"),
                crv.unwrap_or("-")
            ));
        }
    };
    let of_kind: &[Algorithm] = match kind {
        "RSA" => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        "P-256" => &[Algorithm::ES256],
        "P-384" => &[Algorithm::ES384],
        _ => &[Algorithm::EdDSA],
    };
    let mut algorithms: Vec<Algorithm> = of_kind
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect();
    if let Some(alg) = field("alg") {
        match alg.parse::<Algorithm>() {
            Ok(alg) if of_kind.contains(&alg) => algorithms.retain(|a| *a == alg),
            _ => return Err(format!("alg {alg:?} does not sign with a {kind} key")),
        }
    }
    if algorithms.is_empty() {
        return Err(format!(
            "a {kind} key, and auth.algorithms allows none of its algorithms"
        ));
    }
    Ok(Key {
        decoding,
        algorithms,
    })
}

/// Where the verification keys come from — a JWKS file or an OIDC
/// issuer — and the set last taken from there.
pub struct JwksSource {
    origin: Origin,
    /// The allow-list the keys are read for.
    allowed: Vec<Algorithm>,
    current: RwLock<Loaded>,
    last_unknown_reload: Mutex<Option<Instant>>,
    status: watch::Sender<KeyStatus>,
    /// One issuer fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Wakes the issuer's refresh task early (a token named an unknown kid).
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Origin {
    File(PathBuf),
    Issuer(Issuer),
}

#[derive(Debug)]
struct Loaded {
    jwks: Arc<Jwks>,
    bytes: Vec<u8>,
}

/// How the keys are faring: for metrics (`meridian_auth_keys_age_seconds`,
/// `meridian_auth_keys_refresh_failures_total`) and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStatus {
    /// When the keys in force were last read or fetched and found good
    /// (an unchanged file counts); `None` before the first success.
    pub confirmed_at: Option<Instant>,
    /// Failed reads or fetches since the start.
    pub failures: u64,
    /// Why the latest read or fetch failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

impl KeyStatus {
    /// Keys in force, and the latest attempt to refresh them succeeded.
    pub fn healthy(&self) -> bool {
        self.confirmed_at.is_some() && self.last_error.is_none()
    }

    /// Seconds since the keys were last confirmed.
    pub fn age(&self) -> Option<Duration> {
        self.confirmed_at.map(|at| at.elapsed())
    }
}

impl JwksSource {
    /// Reads an EdDSA JWKS file (the development tooling's); an unreadable
    /// or unusable file is an error (a service should not start without
    /// keys).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        Self::load_with(path, &[Algorithm::EdDSA])
    }

    /// Reads a JWKS file, keeping the keys usable with `allowed`.
    pub fn load_with(path: impl Into<PathBuf>, allowed: &[Algorithm]) -> Result<Self> {
        let path = path.into();
        let (jwks, bytes) = read(&path, allowed)?;
        tracing::info!(path = %path.display(), kids = ?jwks.kids(), "JWKS loaded");
        let status = KeyStatus {
            confirmed_at: Some(Instant::now()),
            ..KeyStatus::default()
        };
        Ok(Self::new(
            Origin::File(path),
            allowed,
            Loaded {
                jwks: Arc::new(jwks),
                bytes,
            },
            status,
        ))
    }

    /// Keys from an OIDC issuer, fetched by the task of
    /// [`JwksSource::spawn_reload`] (at once, then as the issuer's
    /// `Cache-Control` says). Until the first fetch succeeds there are no
    /// keys and every token is refused; the service still starts, so an
    /// identity provider that is down does not take Meridian down with it.
    /// `ca`: see [`crate::AuthSettings::ca`].
    pub fn issuer(issuer: &str, ca: Option<&Path>, allowed: &[Algorithm]) -> Result<Self> {
        let issuer = Issuer::new(issuer, ca)?;
        let empty = Loaded {
            jwks: Arc::new(Jwks::default()),
            bytes: Vec::new(),
        };
        Ok(Self::new(
            Origin::Issuer(issuer),
            allowed,
            empty,
            KeyStatus::default(),
        ))
    }

    fn new(origin: Origin, allowed: &[Algorithm], loaded: Loaded, status: KeyStatus) -> Self {
        Self {
            origin,
            allowed: allowed.to_vec(),
            current: RwLock::new(loaded),
            last_unknown_reload: Mutex::new(None),
            status: watch::Sender::new(status),
            fetching: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The algorithms tokens may be signed with (`[auth] algorithms`).
    pub fn allowed(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// The file, for a file source.
    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(path) => Some(path),
            Origin::Issuer(_) => None,
        }
    }

    /// Where the keys come from, for logs and health: the file or the issuer.
    pub fn origin(&self) -> String {
        match &self.origin {
            Origin::File(path) => path.display().to_string(),
            Origin::Issuer(issuer) => issuer.url().to_owned(),
        }
    }

    /// The key set in force.
    pub fn current(&self) -> Arc<Jwks> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .jwks
            .clone()
    }

    /// How the keys are faring now.
    pub fn status(&self) -> KeyStatus {
        self.status.borrow().clone()
    }

    /// The status, each time it changes.
    pub fn subscribe(&self) -> watch::Receiver<KeyStatus> {
        self.status.subscribe()
    }

    fn unknown_kid_min(&self) -> Duration {
        match self.origin {
            Origin::File(_) => UNKNOWN_KID_RELOAD_MIN,
            Origin::Issuer(_) => UNKNOWN_KID_REFRESH_MIN,
        }
    }

    /// Whether a token naming an unknown kid may cause a re-read now (and
    /// if so, the re-read is counted from now).
    fn unknown_kid_reload_allowed(&self) -> bool {
        let mut last = self
            .last_unknown_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < self.unknown_kid_min()) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The key `kid`. When the set in force lacks it, a file is re-read at
    /// once (rate-limited), so a token minted with a just-added key works
    /// before the next poll; an issuer's refresh task is woken (also
    /// rate-limited), and [`JwksSource::key_async`] is the call that waits
    /// for it.
    pub fn key(&self, kid: &str) -> Option<Key> {
        if let Some(key) = self.current().key(kid) {
            return Some(key.clone());
        }
        if !self.unknown_kid_reload_allowed() {
            return None;
        }
        match &self.origin {
            Origin::File(_) => {
                self.reload();
                self.current().key(kid).cloned()
            }
            Origin::Issuer(_) => {
                self.wake.notify_one();
                None
            }
        }
    }

    /// [`JwksSource::key`], fetching from the issuer first (rate-limited)
    /// when the set in force lacks `kid`: the issuer rotated its keys.
    pub async fn key_async(&self, kid: &str) -> Option<Key> {
        if !matches!(self.origin, Origin::Issuer(_)) {
            return self.key(kid);
        }
        if let Some(key) = self.current().key(kid) {
            return Some(key.clone());
        }
        if !self.unknown_kid_reload_allowed() {
            return None;
        }
        tracing::info!(kid, issuer = %self.origin(), "token names an unknown kid: fetching the issuer's keys");
        let _ = self.refresh().await;
        self.current().key(kid).cloned()
    }

    /// Re-reads the file and swaps the key set if its content changed and
    /// parses. Returns whether the set changed. Never fails: a bad file is
    /// logged and the old keys stay. An issuer source is refreshed by its
    /// task instead; here it does nothing.
    pub fn reload(&self) -> bool {
        let Origin::File(path) = &self.origin else {
            return false;
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "JWKS unreadable; keeping the keys in force");
                self.failed(format!("{}: {error}", path.display()));
                return false;
            }
        };
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
            == bytes
        {
            // Unchanged: good keys stay confirmed, a bad file stays bad.
            if self.status.borrow().last_error.is_none() {
                self.confirmed();
            }
            return false;
        }
        self.take(path.display().to_string(), bytes)
    }

    /// Swaps in the key set of `bytes` if they parse; otherwise logs, and
    /// remembers the bytes so the same bad document is logged once.
    fn take(&self, origin: String, bytes: Vec<u8>) -> bool {
        match parse(&origin, &bytes, &self.allowed) {
            Ok(jwks) => {
                tracing::info!(%origin, kids = ?jwks.kids(), "JWKS reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded {
                    jwks: Arc::new(jwks),
                    bytes,
                };
                self.confirmed();
                true
            }
            Err(error) => {
                tracing::warn!(%error, "JWKS refused; keeping the keys in force");
                self.current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bytes = bytes;
                self.failed(error.to_string());
                false
            }
        }
    }

    fn confirmed(&self) {
        self.status.send_modify(|status| {
            status.confirmed_at = Some(Instant::now());
            status.last_error = None;
        });
    }

    fn failed(&self, error: String) {
        self.status.send_modify(|status| {
            status.failures += 1;
            status.last_error = Some(error);
        });
    }

    /// Fetches the issuer's keys once (one fetch at a time) and swaps them
    /// in if they changed and parse; on any failure the keys in force stay.
    /// Returns how long the issuer lets the keys be cached.
    async fn refresh(&self) -> std::result::Result<Option<Duration>, ()> {
        let Origin::Issuer(issuer) = &self.origin else {
            return Err(());
        };
        let _one = self.fetching.lock().await;
        match issuer.fetch().await {
            Ok(fetched) => {
                let unchanged = self
                    .current
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bytes
                    == fetched.bytes;
                if unchanged {
                    if self.status.borrow().last_error.is_none() || !self.current().is_empty() {
                        self.confirmed();
                    }
                } else if !self.take(issuer.url().to_owned(), fetched.bytes) {
                    return Err(());
                }
                Ok(fetched.max_age)
            }
            Err(error) => {
                let kept = self.current().kids();
                tracing::warn!(issuer = issuer.url(), %error, ?kept, "issuer's keys unreachable; keeping the keys in force");
                self.failed(error);
                Err(())
            }
        }
    }

    /// Keeps the keys fresh until the returned task is dropped: a file is
    /// polled every `interval`; an issuer is fetched at once, then again
    /// when its `Cache-Control: max-age` runs out (`interval` when it sends
    /// none; between [`ISSUER_REFRESH_MIN`] and [`ISSUER_REFRESH_MAX`]),
    /// after [`ISSUER_RETRY`] (or `interval`, if shorter) when a fetch
    /// fails, and early when a token names an unknown kid.
    pub fn spawn_reload(self: &Arc<Self>, interval: Duration) -> ReloadTask {
        let source = Arc::downgrade(self);
        let issuer = matches!(self.origin, Origin::Issuer(_));
        ReloadTask(tokio::spawn(async move {
            if issuer {
                loop {
                    let Some(strong) = source.upgrade() else {
                        return;
                    };
                    let wait = match strong.refresh().await {
                        Ok(max_age) => max_age
                            .unwrap_or(interval)
                            .clamp(ISSUER_REFRESH_MIN, ISSUER_REFRESH_MAX),
                        Err(()) => ISSUER_RETRY.min(interval),
                    };
                    let woken = async {
                        strong.wake.notified().await;
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken => {}
                    }
                }
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(source) = source.upgrade() else {
                    return;
                };
                source.reload();
            }
        }))
    }

    /// Registers `meridian.auth.keys.age` (seconds since the keys were last
    /// confirmed; exported as `meridian_auth_keys_age_seconds`) and
    /// `meridian.auth.keys.refresh.failures` (a counter) on `meter`. The
    /// callbacks hold a weak reference; keep the returned value alive.
    pub fn observe(self: &Arc<Self>, meter: &opentelemetry::metrics::Meter) -> KeyMetrics {
        let origin = opentelemetry::KeyValue::new("origin", self.origin());
        let (weak, o) = (Arc::downgrade(self), origin.clone());
        let age = meter
            .f64_observable_gauge("meridian.auth.keys.age")
            .with_description(
                "Seconds since the token verification keys were last read or fetched successfully",
            )
            .with_unit("s")
            .with_callback(move |observer| {
                if let Some(age) = weak.upgrade().and_then(|s| s.status().age()) {
                    observer.observe(age.as_secs_f64(), std::slice::from_ref(&o));
                }
            })
            .build();
        let weak = Arc::downgrade(self);
        let failures = meter
            .u64_observable_counter("meridian.auth.keys.refresh.failures")
            .with_description(
                "Failed reads or fetches of the token verification keys (the keys in force stay)",
            )
            .with_callback(move |observer| {
                if let Some(source) = weak.upgrade() {
                    observer.observe(source.status().failures, std::slice::from_ref(&origin));
                }
            })
            .build();
        KeyMetrics {
            _age: age,
            _failures: failures,
        }
    }
}

/// The instruments of [`JwksSource::observe`].
pub struct KeyMetrics {
    _age: opentelemetry::metrics::ObservableGauge<f64>,
    _failures: opentelemetry::metrics::ObservableCounter<u64>,
}

/// The JWKS poll; stops when dropped.
#[derive(Debug)]
pub struct ReloadTask(tokio::task::JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn read(path: &Path, allowed: &[Algorithm]) -> Result<(Jwks, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| AuthError::Jwks {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((parse(&path.display().to_string(), &bytes, allowed)?, bytes))
}

fn parse(origin: &str, bytes: &[u8], allowed: &[Algorithm]) -> Result<Jwks> {
    let err = |reason: String| AuthError::Jwks {
        path: origin.to_owned(),
        reason,
    };
    if bytes.len() > JWKS_BYTES_MAX {
        return Err(err(format!(
            "{} bytes; the limit is {JWKS_BYTES_MAX}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
    Jwks::parse(text, allowed).map_err(err)
}

/// Writes a JWKS document to `path` through a temporary file and a rename,
/// so a service polling the file never reads half of it.
pub fn write_jwks(path: &Path, public_jwks: &[serde_json::Value]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, Jwks::document(public_jwks))?;
    std::fs::rename(&tmp, path)
}
