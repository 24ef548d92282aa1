//! The crate's errors: why a token, a key file or a claim was refused.

/// Why authentication failed. Every variant's text is safe to send to the
/// caller and to log: none contains the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `authorization: Bearer <jwt>`")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signed with unknown key id {0:?} (not in the JWKS in force)")]
    UnknownKey(String),
    #[error("token algorithm: {0}")]
    Algorithm(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired { exp: i64, now: i64, leeway: i64 },
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("token issuer {found:?} is not {expected:?}")]
    Issuer { found: String, expected: String },
    #[error("token audience does not include {expected:?}")]
    Audience { expected: String },
    #[error("token claims: {0}")]
    Claim(String),
    #[error("JWKS {path}: {reason}")]
    Jwks { path: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("signing key: {0}")]
    Key(String),
}

pub type Result<T, E = AuthError> = std::result::Result<T, E>;
