//! Reading one service's certificate, key and CA bundle from disk, checking
//! that they fit together, and turning them into rustls configurations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};
use crate::{Error, PeerIdentity, Result};

/// gRPC runs over HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";
/// Distinct server identities one process dials; a bound on the cache of
/// client configurations, which is rebuilt on every reload anyway.
const CLIENT_CONFIGS_MAX: usize = 256;

/// Where one service's TLS files live: its certificate chain (leaf first),
/// its private key, and the CA bundle it trusts for peers. During a CA
/// rotation the bundle holds both the old and the new CA.
///
/// Every service both serves and dials, so its certificate must allow
/// both server and client authentication (extended key usage), as the
/// development PKI's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The bytes of the three files, as read at one moment.
#[derive(PartialEq, Eq)]
pub(crate) struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl FileContents {
    pub(crate) fn read(files: &TlsFiles) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            ca: read(&files.ca)?,
        })
    }
}

/// One consistent generation of TLS material: what a handshake uses.
pub(crate) struct Material {
    pub(crate) identity: PeerIdentity,
    pub(crate) serial_hex: String,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    pub(crate) server_config: Arc<ServerConfig>,
    client_configs: Mutex<HashMap<PeerIdentity, Arc<ClientConfig>>>,
}

impl Material {
    /// Parses and cross-checks the files: the key belongs to the
    /// certificate, the certificate carries a SPIFFE id, and it chains to
    /// the CA bundle and is valid at `now`. Anything less is refused here,
    /// before a peer could see it.
    pub(crate) fn build(
        files: &TlsFiles,
        contents: &FileContents,
        provider: &Arc<CryptoProvider>,
        now: UnixTime,
    ) -> Result<Self> {
        let bad = |path: &Path, reason: String| Error::BadFile {
            path: path.to_owned(),
            reason,
        };

        let chain = CertificateDer::pem_slice_iter(&contents.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&files.cert, format!("not a PEM certificate chain: {e}")))?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(bad(&files.cert, "no CERTIFICATE block".to_owned()));
        };
        let key = PrivateKeyDer::from_pem_slice(&contents.key)
            .map_err(|e| bad(&files.key, format!("not a PEM private key: {e}")))?;
        let ca_certs = CertificateDer::pem_slice_iter(&contents.ca)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&files.ca, format!("not a PEM certificate bundle: {e}")))?;
        if ca_certs.is_empty() {
            return Err(bad(&files.ca, "no CERTIFICATE block".to_owned()));
        }
        let mut roots = RootCertStore::empty();
        for (index, ca) in ca_certs.into_iter().enumerate() {
            roots
                .add(ca)
                .map_err(|e| bad(&files.ca, format!("CA certificate #{}: {e}", index + 1)))?;
        }
        let roots = Arc::new(roots);

        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(&files.key, format!("unusable private key: {e}")))?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        match certified_key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(Error::Inconsistent {
                    cert: files.cert.clone(),
                    reason: format!(
                        "the private key in {} does not belong to this certificate",
                        files.key.display()
                    ),
                });
            }
        }

        let identity =
            PeerIdentity::from_cert_der(&leaf).map_err(|e| bad(&files.cert, e.to_string()))?;
        let parsed =
            ParsedCertificate::try_from(&leaf).map_err(|e| bad(&files.cert, e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            now,
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| Error::Inconsistent {
            cert: files.cert.clone(),
            reason: format!(
                "does not verify against the CA bundle {}: {e}",
                files.ca.display()
            ),
        })?;
        let serial_hex = webpki::EndEntityCert::try_from(&leaf)
            .map(|cert| hex(cert.serial()))
            .map_err(|e| bad(&files.cert, e.to_string()))?;

        let certified_key = Arc::new(certified_key);
        let chain_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad(&files.ca, e.to_string()))?;
        let client_verifier = SpiffeClientVerifier {
            chain: chain_verifier,
            trust_domain: identity.trust_domain().clone(),
        };
        let mut server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(client_verifier))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key.clone())));
        server_config.alpn_protocols = vec![ALPN_H2.to_vec()];

        Ok(Self {
            identity,
            serial_hex,
            certified_key,
            roots,
            server_config: Arc::new(server_config),
            client_configs: Mutex::new(HashMap::new()),
        })
    }

    /// The client configuration for dialling `expected`, built once per
    /// generation and identity.
    pub(crate) fn client_config(
        &self,
        expected: &PeerIdentity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<ClientConfig>> {
        let mut cache = self
            .client_configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(config) = cache.get(expected) {
            return Ok(config.clone());
        }
        let verifier = SpiffeServerVerifier {
            roots: self.roots.clone(),
            expected: expected.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                self.certified_key.clone(),
            )));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        let config = Arc::new(config);
        if cache.len() >= CLIENT_CONFIGS_MAX {
            cache.clear();
        }
        cache.insert(expected.clone(), config.clone());
        Ok(config)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}
