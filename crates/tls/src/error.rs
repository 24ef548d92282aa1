use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the file or
/// identity at fault and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid SPIFFE id {id:?}: {reason}")]
    InvalidSpiffeId { id: String, reason: String },
    #[error("invalid trust domain {value:?}: {reason}")]
    InvalidTrustDomain { value: String, reason: String },
    #[error("unknown service {0:?}; expected gateway or router")]
    UnknownService(String),
    /// A certificate whose identity cannot be read.
    #[error("certificate identity: {0}")]
    CertificateIdentity(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate, key or CA file that cannot be used, and why.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// Certificate, key and CA files that each parse but do not fit together.
    #[error("{cert}: {reason}", cert = cert.display())]
    Inconsistent { cert: PathBuf, reason: String },
    /// A reload that would change who this process is.
    #[error("{}: identity would change from {from} to {to}; refusing (restart to change identity)", cert.display())]
    IdentityChanged {
        cert: PathBuf,
        from: String,
        to: String,
    },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The certificate or key of a public (client-facing) port.
    #[error("{0}")]
    Public(String),
    #[error("invalid endpoint {addr:?}: {reason}")]
    Endpoint { addr: String, reason: String },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
