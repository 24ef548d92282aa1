//! Bearer tokens (compact JWS): verification for the services with
//! `jsonwebtoken` — RS256/384/512, PS256/384/512, ES256/384 and EdDSA, as
//! the allow-list of `[auth] algorithms` admits — and Ed25519 minting for
//! the development tooling and tests.
//!
//! Minting stays here (a few lines on ring): the development tokens are
//! one algorithm, and the verifier reads them like any issuer's.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use meridian_core::{Clock, RegionId};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::{
    AuthError, Principal, Result, Role,
    claims::ClaimMapping,
    jwks::{JwksSource, Key},
};

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
    pub fn new(
        sub: impl Into<String>,
        role: Role,
        region: Option<&RegionId>,
        now: i64,
        ttl_secs: i64,
    ) -> Self {
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
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
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
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| AuthError::Key(e.to_string()))?;
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
        let jwk: PrivateJwk = serde_json::from_str(text)
            .map_err(|e| AuthError::Key(format!("not a private JWK: {e}")))?;
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return Err(AuthError::Key(format!(
                "kty {} crv {}: only OKP Ed25519 keys are supported",
                jwk.kty, jwk.crv
            )));
        }
        let seed = URL_SAFE_NO_PAD
            .decode(&jwk.d)
            .map_err(|e| AuthError::Key(format!("d: {e}")))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| AuthError::Key("d: not 32 bytes".into()))?;
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
        let header = Header {
            alg: ALG.into(),
            typ: Some("JWT".into()),
            kid: Some(self.kid.clone()),
        };
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = self.pair.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
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
    claims: Arc<ClaimMapping>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.origin())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of the algorithms `keys` was read for, reading the
    /// principal from `sub`, `role` and `region`.
    pub fn new(keys: Arc<JwksSource>, settings: VerifierSettings, clock: Arc<dyn Clock>) -> Self {
        crate::ring_provider::install();
        Self {
            keys,
            settings,
            claims: Arc::new(ClaimMapping::default()),
            clock,
        }
    }

    /// Reads the principal from the claims `mapping` names.
    pub fn with_claims(mut self, mapping: ClaimMapping) -> Self {
        self.claims = Arc::new(mapping);
        self
    }

    pub fn keys(&self) -> &Arc<JwksSource> {
        &self.keys
    }

    /// The principal of a valid token, or why it is not valid. A token
    /// naming a key an issuer has not yet been asked for is refused here
    /// (the fetch starts, rate-limited, in the background);
    /// [`Verifier::verify_async`] waits for that fetch instead.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let header = self.header(token)?;
        let key = self
            .keys
            .key(&header.kid)
            .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
        self.check(token, header.alg, &key)
    }

    /// [`Verifier::verify`], fetching the issuer's keys first (rate-limited)
    /// when the token names a key id the set in force lacks: the first
    /// token after an issuer rotates its keys is accepted, not refused.
    pub async fn verify_async(&self, token: &str) -> Result<Principal> {
        let header = self.header(token)?;
        let key = self
            .keys
            .key_async(&header.kid)
            .await
            .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
        self.check(token, header.alg, &key)
    }

    /// The token's `alg` (which must be allowed) and `kid`; nothing in it
    /// is trusted yet.
    fn header(&self, token: &str) -> Result<TokenHeader> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::Malformed(format!(
                "longer than {TOKEN_BYTES_MAX} bytes"
            )));
        }
        if token.split('.').count() != 3 {
            return Err(AuthError::Malformed(
                "not three dot-separated segments".into(),
            ));
        }
        // The allow-list first, on the raw `alg`: `none`, HMAC and anything
        // unlisted are refused before any key is looked at.
        let allowed = self.keys.allowed();
        let alg = raw_alg(token)?;
        if !allowed.iter().any(|a| format!("{a:?}") == alg) {
            let names: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            return Err(AuthError::Algorithm(format!(
                "alg {alg:?}: only {} accepted (auth.algorithms)",
                names.join(", ")
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("header has no kid".into()))?;
        Ok(TokenHeader {
            alg: header.alg,
            kid,
        })
    }

    /// The signature (by `jsonwebtoken`, with ring), then the claims.
    fn check(&self, token: &str, alg: Algorithm, key: &Key) -> Result<Principal> {
        if !key.algorithms().contains(&alg) {
            return Err(AuthError::Algorithm(format!(
                "{alg:?} does not match the key the token names"
            )));
        }
        // jsonwebtoken checks the signature and the algorithm; time,
        // issuer and audience are checked below against the service's
        // clock (tests and the simulation run on a manual one).
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            _ => AuthError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        let seconds = |name: &str| -> Result<Option<i64>> {
            match claims.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                // NumericDate may carry a fraction (RFC 7519 §2).
                Some(value) => value
                    .as_i64()
                    .or_else(|| value.as_f64().map(|f| f as i64))
                    .map(Some)
                    .ok_or_else(|| AuthError::Claim(format!("{name} is not a number of seconds"))),
            }
        };
        let exp = seconds("exp")?
            .ok_or_else(|| AuthError::Claim("exp is missing: tokens must expire".into()))?;
        let now = self.clock.now().as_second();
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired {
                exp,
                now,
                leeway: LEEWAY_SECS,
            });
        }
        if let Some(nbf) = seconds("nbf")?
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        if let Some(expected) = &self.settings.issuer {
            let found = claims.get("iss").and_then(serde_json::Value::as_str);
            if found != Some(expected.as_str()) {
                return Err(AuthError::Issuer {
                    found: found.unwrap_or_default().to_owned(),
                    expected: expected.clone(),
                });
            }
        }
        if let Some(expected) = &self.settings.audience
            && !has_audience(claims.get("aud"), expected)
        {
            return Err(AuthError::Audience {
                expected: expected.clone(),
            });
        }
        self.claims.principal(&claims)
    }
}

/// The header's `alg`, as written.
fn raw_alg(token: &str) -> Result<String> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) => Ok(alg.clone()),
        _ => Err(AuthError::Malformed("header has no alg".into())),
    }
}

struct TokenHeader {
    alg: Algorithm,
    kid: String,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
fn has_audience(aud: Option<&serde_json::Value>, expected: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(aud)) => aud == expected,
        Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
        _ => false,
    }
}
