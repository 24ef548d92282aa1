//! Compact JWS tokens signed with Ed25519 (`alg: EdDSA`): minting for the
//! development tooling and tests, verification for the services.
//!
//! The JOSE subset is written here rather than taken from a JWT crate: one
//! algorithm, three base64url segments and a few claims are less code than
//! a dependency's configuration, and refusing every other `alg` (notably
//! `none` and HMAC with a public key) is then a matter of one comparison.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use meridian_core::{Clock, RegionId};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Principal, Result, Role, jwks::JwksSource};

/// How far `exp` and `nbf` may be off, for clock skew between the minting
/// host and the verifying one.
pub const LEEWAY_SECS: i64 = 30;
/// The longest token accepted: far above any real one, so a huge header
/// costs no base64 or JSON work.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
const ALG: &str = "EdDSA";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims Meridian reads. Unknown claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings, as RFC 7519 allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Seconds since the epoch; required.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

impl Claims {
    /// Claims for `role`, valid from `now` (seconds) for `ttl_secs`.
    pub fn new(sub: impl Into<String>, role: Role, region: Option<&RegionId>, now: i64, ttl_secs: i64) -> Self {
        Self {
            sub: sub.into(),
            role: role.as_str().to_owned(),
            region: region.map(ToString::to_string),
            iss: None,
            aud: None,
            exp: now.saturating_add(ttl_secs),
            nbf: Some(now),
            iat: Some(now),
        }
    }

    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.aud = Some(serde_json::Value::String(aud.into()));
        self
    }

    fn has_audience(&self, expected: &str) -> bool {
        match &self.aud {
            Some(serde_json::Value::String(aud)) => aud == expected,
            Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
            _ => false,
        }
    }

    /// The principal these claims describe, if they describe a valid one.
    fn principal(&self) -> Result<Principal> {
        if self.sub.is_empty() {
            return Err(AuthError::Claim("sub is empty".into()));
        }
        let role: Role = self.role.parse()?;
        let region = self
            .region
            .as_deref()
            .map(|r| RegionId::new(r).map_err(|e| AuthError::Claim(format!("region {r:?}: {e}"))))
            .transpose()?;
        if role == Role::Agent && region.is_none() {
            return Err(AuthError::Claim("an agent token needs a region claim".into()));
        }
        Ok(Principal { subject: self.sub.clone(), role, region })
    }
}

/// An Ed25519 signing key with its key id: the development tooling's, and
/// the tests'. Its public half goes into the JWKS the services read.
pub struct SigningKey {
    kid: String,
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: String,
    kid: String,
    x: String,
    d: String,
}

impl SigningKey {
    /// A new random key.
    pub fn generate(kid: impl Into<String>) -> Result<Self> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| AuthError::Key("no entropy for a new key".into()))?;
        Self::from_seed(kid.into(), seed)
    }

    fn from_seed(kid: String, seed: [u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self { kid, seed, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a private JWK (`kty: OKP`, `crv: Ed25519`, with `d`):
    /// what the dev tooling keeps on disk, mode 0600.
    pub fn to_private_jwk(&self) -> String {
        let jwk = PrivateJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            d: URL_SAFE_NO_PAD.encode(self.seed),
        };
        serde_json::to_string_pretty(&jwk).unwrap_or_default()
    }

    /// Reads a key written by [`SigningKey::to_private_jwk`].
    pub fn from_private_jwk(text: &str) -> Result<Self> {
        let jwk: PrivateJwk = serde_json::from_str(text).map_err(|e| AuthError::Key(format!("not a private JWK: {e}")))?;
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return Err(AuthError::Key(format!("kty {} crv {}: only OKP Ed25519 keys are supported", jwk.kty, jwk.crv)));
        }
        let seed = URL_SAFE_NO_PAD.decode(&jwk.d).map_err(|e| AuthError::Key(format!("d: {e}")))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| AuthError::Key("d: not 32 bytes".into()))?;
        Self::from_seed(jwk.kid, seed)
    }

    /// The public half, as one JWK of a JWKS.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": ALG,
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        })
    }

    /// A signed token carrying `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let header = Header { alg: ALG.into(), typ: Some("JWT".into()), kid: Some(self.kid.clone()) };
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = self.pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// What a verifier expects beyond a good signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifierSettings {
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required member of `aud`, if set.
    pub audience: Option<String>,
}

/// Checks tokens against the keys of a [`JwksSource`] and the clock.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<JwksSource>,
    settings: VerifierSettings,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    pub fn new(keys: Arc<JwksSource>, settings: VerifierSettings, clock: Arc<dyn Clock>) -> Self {
        Self { keys, settings, clock }
    }

    pub fn keys(&self) -> &Arc<JwksSource> {
        &self.keys
    }

    /// The principal of a valid token, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::Malformed(format!("longer than {TOKEN_BYTES_MAX} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated segments".into()));
        };
        let header: Header = decode_json(header, "header")?;
        if header.alg != ALG {
            return Err(AuthError::Malformed(format!("alg {:?}: only {ALG} is accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Malformed("header has no kid".into()))?;
        let key = self.keys.key(&kid).ok_or(AuthError::UnknownKey(kid))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| AuthError::Malformed(format!("signature: {e}")))?;
        let signed_len = header_len_plus_payload(token);
        let signing_input = token.get(..signed_len).ok_or_else(|| AuthError::Malformed("segments".into()))?;
        UnparsedPublicKey::new(&ED25519, key.as_slice())
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| AuthError::BadSignature)?;
        // Claims are read only once the signature holds.
        let claims: Claims = decode_json(payload, "payload")?;
        let now = self.clock.now().as_second();
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired { exp: claims.exp, now, leeway: LEEWAY_SECS });
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        if let Some(expected) = &self.settings.issuer
            && claims.iss.as_deref() != Some(expected.as_str())
        {
            return Err(AuthError::Issuer { found: claims.iss.unwrap_or_default(), expected: expected.clone() });
        }
        if let Some(expected) = &self.settings.audience
            && !claims.has_audience(expected)
        {
            return Err(AuthError::Audience { expected: expected.clone() });
        }
        claims.principal()
    }
}

/// Length of `header.payload` in a token known to have three segments.
fn header_len_plus_payload(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str, what: &str) -> Result<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|e| AuthError::Malformed(format!("{what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| AuthError::Malformed(format!("{what}: {e}")))
}
