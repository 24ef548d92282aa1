//! The TLS client configuration both protocols share: rustls with ring,
//! trusting either a configured CA bundle (a private CA, or the tests'
//! generated one) or the bundled public roots.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{Error, Result};

/// Which certificates a mail server's certificate must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustRoots {
    /// The public web PKI (webpki-roots, bundled: the image has no system
    /// trust store).
    #[default]
    Public,
    /// Only these CA certificates (PEM, one or more).
    CaPem(Vec<u8>),
}

impl TrustRoots {
    /// The CA certificates, parsed; an error names what was wrong.
    pub(crate) fn ca_certificates(ca_pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Config(format!("CA bundle: not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(
                "CA bundle: no CERTIFICATE block found".to_owned(),
            ));
        }
        Ok(certs)
    }
}

/// A rustls client configuration trusting `roots`.
pub(crate) fn client_config(roots: &TrustRoots) -> Result<Arc<ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        TrustRoots::Public => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TrustRoots::CaPem(pem) => {
            for cert in TrustRoots::ca_certificates(pem)? {
                store
                    .add(cert)
                    .map_err(|e| Error::Config(format!("CA bundle: unusable certificate: {e}")))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
