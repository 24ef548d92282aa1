//! Certificate verifiers that check SPIFFE identities on top of the chain
//! checks rustls and webpki do.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::{PeerIdentity, TrustDomain};

/// Why a peer's identity was refused; travels inside a rustls error and is
/// what the refusal log line says.
#[derive(Debug)]
pub(crate) struct IdentityRefused(pub String);

impl std::fmt::Display for IdentityRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityRefused {}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRefused(reason),
    ))))
}

/// The peer's identity from its (already chain-verified) certificate.
fn presented_identity(end_entity: &CertificateDer<'_>) -> Result<PeerIdentity, rustls::Error> {
    PeerIdentity::from_cert_der(end_entity).map_err(|e| refuse(e.to_string()))
}

/// The server's check of a client: the chain (rustls's webpki verifier:
/// signed by a CA in the bundle, in its validity period, usable for client
/// auth), then a SPIFFE identity in our trust domain. Which services may
/// call what is decided per service, after the handshake ([`crate::require`]).
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    pub(crate) chain: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: TrustDomain,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = presented_identity(end_entity)?;
        if identity.trust_domain() != &self.trust_domain {
            return Err(refuse(format!(
                "client {identity} is not in trust domain {}",
                self.trust_domain
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A client's check of the server it dialled: the chain against the CA
/// bundle, then exactly the SPIFFE identity it meant to reach. Host names
/// are not checked: in the mesh a name or address says where a peer is,
/// the SPIFFE id says who it is.
pub(crate) struct SpiffeServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: PeerIdentity,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let identity = presented_identity(end_entity)?;
        if identity != self.expected {
            return Err(refuse(format!(
                "server is {identity}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A handshake error as a sentence for the refusal log line.
pub(crate) fn refusal_reason(error: &std::io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "peer certificate is not signed by a CA in the trust bundle (UnknownIssuer)".to_owned()
        }
        // A CA of the same name is in the bundle, but it did not sign this
        // certificate: development CAs of one trust domain share a name.
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "peer certificate is not signed by a CA in the trust bundle (BadSignature)".to_owned()
        }
        rustls::Error::NoCertificatesPresented => "peer presented no certificate".to_owned(),
        rustls::Error::AlertReceived(alert) => {
            format!("peer refused the handshake: alert {alert:?}")
        }
        other => other.to_string(),
    }
}
