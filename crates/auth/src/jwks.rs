//! The verification keys: a JWKS file (RFC 7517) of Ed25519 public keys,
//! re-read when it changes so keys rotate without a restart.
//!
//! Rotation is: add the new key to the file, start minting with it, and
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
use serde::Deserialize;

use crate::{AuthError, Result};

/// How often a service re-reads its JWKS file by default.
pub const JWKS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest time between two re-reads caused by unknown key ids.
pub const UNKNOWN_KID_RELOAD_MIN: Duration = Duration::from_secs(1);
/// A JWKS larger than this is refused: it is a handful of keys.
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;

/// A set of Ed25519 public keys by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: HashMap<String, Vec<u8>>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Parses a JWKS document. Keys of other types (RSA, EC) are skipped
    /// with a log line; a document with no usable key is an error, since
    /// serving with it would refuse every caller.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let document: Document = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for (i, key) in document.keys.iter().enumerate() {
            let field = |name: &str| key.get(name).and_then(serde_json::Value::as_str);
            let Some(kid) = field("kid") else { return Err(format!("keys[{i}]: no kid")) };
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                tracing::warn!(kid, "JWKS key skipped: only OKP Ed25519 keys are used");
                continue;
            }
            if let Some(alg) = field("alg")
                && alg != "EdDSA"
            {
                return Err(format!("keys[{i}] ({kid}): alg {alg:?} with an Ed25519 key; expected EdDSA"));
            }
            let x = field("x").ok_or_else(|| format!("keys[{i}] ({kid}): no x"))?;
            let x = URL_SAFE_NO_PAD.decode(x).map_err(|e| format!("keys[{i}] ({kid}): x: {e}"))?;
            if x.len() != 32 {
                return Err(format!("keys[{i}] ({kid}): x is {} bytes; an Ed25519 key is 32", x.len()));
            }
            if keys.insert(kid.to_owned(), x).is_some() {
                return Err(format!("keys[{i}]: kid {kid:?} appears twice"));
            }
        }
        if keys.is_empty() {
            return Err("no usable key (OKP Ed25519)".into());
        }
        Ok(Self { keys })
    }

    /// The JWKS document holding these public JWKs (from
    /// [`crate::SigningKey::public_jwk`]).
    pub fn document(public_jwks: &[serde_json::Value]) -> String {
        serde_json::to_string_pretty(&serde_json::json!({ "keys": public_jwks })).unwrap_or_default()
    }

    pub fn key(&self, kid: &str) -> Option<&Vec<u8>> {
        self.keys.get(kid)
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }
}

/// A JWKS file and the key set last read from it.
#[derive(Debug)]
pub struct JwksSource {
    path: PathBuf,
    current: RwLock<Loaded>,
    last_unknown_reload: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Loaded {
    jwks: Arc<Jwks>,
    bytes: Vec<u8>,
}

impl JwksSource {
    /// Reads the file; an unreadable or unusable file is an error (a
    /// service should not start without keys).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (jwks, bytes) = read(&path)?;
        tracing::info!(path = %path.display(), kids = ?jwks.kids(), "JWKS loaded");
        Ok(Self {
            path,
            current: RwLock::new(Loaded { jwks: Arc::new(jwks), bytes }),
            last_unknown_reload: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key set in force.
    pub fn current(&self) -> Arc<Jwks> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).jwks.clone()
    }

    /// The public key `kid`, re-reading the file first (rate-limited) when
    /// the set in force lacks it: a token minted with a just-added key
    /// works before the next poll.
    pub fn key(&self, kid: &str) -> Option<Vec<u8>> {
        if let Some(key) = self.current().key(kid) {
            return Some(key.clone());
        }
        {
            let mut last = self.last_unknown_reload.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD_MIN) {
                return None;
            }
            *last = Some(Instant::now());
        }
        self.reload();
        self.current().key(kid).cloned()
    }

    /// Re-reads the file and swaps the key set if its content changed and
    /// parses. Returns whether the set changed. Never fails: a bad file is
    /// logged and the old keys stay.
    pub fn reload(&self) -> bool {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "JWKS unreadable; keeping the keys in force");
                return false;
            }
        };
        if self.current.read().unwrap_or_else(PoisonError::into_inner).bytes == bytes {
            return false;
        }
        match parse(&self.path, &bytes) {
            Ok(jwks) => {
                tracing::info!(path = %self.path.display(), kids = ?jwks.kids(), "JWKS reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded { jwks: Arc::new(jwks), bytes };
                true
            }
            Err(error) => {
                tracing::warn!(%error, "JWKS refused; keeping the keys in force");
                // Remember the bytes so the same bad file is logged once.
                self.current.write().unwrap_or_else(PoisonError::into_inner).bytes = bytes;
                false
            }
        }
    }

    /// Polls the file every `interval` until the returned task is aborted
    /// (or dropped, with [`ReloadTask`]).
    pub fn spawn_reload(self: &Arc<Self>, interval: Duration) -> ReloadTask {
        let source = Arc::downgrade(self);
        ReloadTask(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(source) = source.upgrade() else { return };
                source.reload();
            }
        }))
    }
}

/// The JWKS poll; stops when dropped.
#[derive(Debug)]
pub struct ReloadTask(tokio::task::JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn read(path: &Path) -> Result<(Jwks, Vec<u8>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| AuthError::Jwks { path: path.display().to_string(), reason: e.to_string() })?;
    Ok((parse(path, &bytes)?, bytes))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Jwks> {
    let err = |reason: String| AuthError::Jwks { path: path.display().to_string(), reason };
    if bytes.len() > JWKS_BYTES_MAX {
        return Err(err(format!("{} bytes; the limit is {JWKS_BYTES_MAX}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
    Jwks::parse(text).map_err(err)
}

/// Writes a JWKS document to `path` through a temporary file and a rename,
/// so a service polling the file never reads half of it.
pub fn write_jwks(path: &Path, public_jwks: &[serde_json::Value]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, Jwks::document(public_jwks))?;
    std::fs::rename(&tmp, path)
}
