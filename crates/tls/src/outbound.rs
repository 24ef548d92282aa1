//! Trust for Meridian's outbound HTTPS clients (the OIDC issuer, webhook
//! targets): a configured CA bundle, or the bundled public web PKI (the
//! image has no system trust store). One place, so every client checks a
//! CA file alike.

use std::{fmt, path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// Why a client configuration could not be built; callers prefix it with
/// the setting that named the file.
#[derive(Debug)]
pub enum OutboundTlsError {
    /// The CA file could not be read, or one of its certificates not used.
    Ca(String),
    /// The rustls provider refused its protocol versions.
    Versions(String),
}

impl fmt::Display for OutboundTlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundTlsError::Ca(reason) | OutboundTlsError::Versions(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// A rustls client configuration trusting the certificates of `ca` (PEM,
/// one or more), or the public roots without one.
pub fn outbound_client_config(
    ca: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, OutboundTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad = OutboundTlsError::Ca;
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no certificate".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OutboundTlsError::Versions(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
