//! SPIFFE identities of Meridian's services:
//! `spiffe://<trust-domain>/region/<region>/<service>`.

use std::fmt;
use std::str::FromStr;

use meridian_core::RegionId;
use rustls::pki_types::CertificateDer;

use crate::{Error, Result};

const SCHEME: &str = "spiffe://";
/// The SPIFFE specification caps a trust domain name at 255 characters.
const TRUST_DOMAIN_LEN_MAX: usize = 255;
/// The SPIFFE specification caps a whole SPIFFE id at 2048 bytes.
const SPIFFE_ID_LEN_MAX: usize = 2048;

/// A SPIFFE trust domain, such as `meridian.local`: lowercase letters,
/// digits, `.`, `-` and `_`, as the SPIFFE specification allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let reason = if value.is_empty() {
            Some("must not be empty".to_owned())
        } else if value.len() > TRUST_DOMAIN_LEN_MAX {
            Some(format!("is longer than {TRUST_DOMAIN_LEN_MAX} characters"))
        } else {
            value
                .chars()
                .find(|c| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
                })
                .map(|bad| {
                    format!("contains {bad:?}; use lowercase letters, digits, '.', '-' and '_'")
                })
        };
        match reason {
            Some(reason) => Err(Error::InvalidTrustDomain { value, reason }),
            None => Ok(Self(value)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// The kinds of service that talk to each other over mutual TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// A regional gateway: owns a region's queue, replicates with its peers.
    Gateway,
    /// The global router: sends new tickets to the region on shift.
    Router,
}

impl Service {
    /// Every service, in a stable order.
    pub const ALL: [Service; 2] = [Service::Gateway, Service::Router];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Router => "router",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Service {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Service::ALL
            .into_iter()
            .find(|service| service.as_str() == s)
            .ok_or_else(|| Error::UnknownService(s.to_owned()))
    }
}

/// Who a service is: the URI SAN `spiffe://<trust-domain>/region/<region>/<service>`
/// of its certificate. Peers are told apart by this and nothing else; DNS
/// names and addresses in certificates are for tools, never for
/// authorization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdentity {
    trust_domain: TrustDomain,
    region: RegionId,
    service: Service,
}

impl PeerIdentity {
    pub fn new(trust_domain: TrustDomain, region: RegionId, service: Service) -> Self {
        Self {
            trust_domain,
            region,
            service,
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// The identity in a DER certificate: its one `spiffe://` URI SAN.
    ///
    /// This only reads the certificate; it proves nothing unless the
    /// certificate was verified first (as the TLS handshake does).
    pub fn from_cert_der(cert: &CertificateDer<'_>) -> Result<Self> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| {
            Error::CertificateIdentity(format!("cannot parse the certificate: {e}"))
        })?;
        let mut spiffe_ids = parsed
            .valid_uri_names()
            .filter(|uri| uri.starts_with(SCHEME));
        let Some(first) = spiffe_ids.next() else {
            return Err(Error::CertificateIdentity(
                "the certificate has no spiffe:// URI SAN".to_owned(),
            ));
        };
        // An X.509 SVID carries exactly one SPIFFE id; two would make the
        // peer's identity ambiguous.
        if let Some(second) = spiffe_ids.next() {
            return Err(Error::CertificateIdentity(format!(
                "the certificate has more than one spiffe:// URI SAN ({first}, {second})"
            )));
        }
        first.parse()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/region/{}/{}",
            self.trust_domain, self.region, self.service
        )
    }
}

impl FromStr for PeerIdentity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSpiffeId {
            id: s.to_owned(),
            reason,
        };
        if s.len() > SPIFFE_ID_LEN_MAX {
            return Err(invalid(format!("is longer than {SPIFFE_ID_LEN_MAX} bytes")));
        }
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Err(invalid("must start with \"spiffe://\"".to_owned()));
        };
        if let Some(bad) = rest.chars().find(|c| matches!(c, '?' | '#' | '%')) {
            return Err(invalid(format!(
                "must not contain {bad:?} (no query, fragment or percent-encoding)"
            )));
        }
        let Some((trust_domain, path)) = rest.split_once('/') else {
            return Err(invalid(
                "has no path; expected /region/<region>/<service>".to_owned(),
            ));
        };
        let trust_domain = TrustDomain::new(trust_domain).map_err(|e| invalid(e.to_string()))?;
        let segments: Vec<&str> = path.split('/').collect();
        let [kind, region, service] = segments.as_slice() else {
            return Err(invalid(format!(
                "path {path:?} has {} segments; expected region/<region>/<service>",
                segments.len()
            )));
        };
        if *kind != "region" {
            return Err(invalid(format!(
                "path must start with \"region/\", not {kind:?}"
            )));
        }
        let region = RegionId::new(*region).map_err(|e| invalid(e.to_string()))?;
        let service = service
            .parse::<Service>()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            trust_domain,
            region,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let id: PeerIdentity = "spiffe://meridian.local/region/us-east/gateway"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain().as_str(), "meridian.local");
        assert_eq!(id.region().as_str(), "us-east");
        assert_eq!(id.service(), Service::Gateway);
        assert_eq!(
            id.to_string(),
            "spiffe://meridian.local/region/us-east/gateway"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = "spiffe://meridian.local/region/us-east/database"
            .parse::<PeerIdentity>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid SPIFFE id \"spiffe://meridian.local/region/us-east/database\": \
             unknown service \"database\"; expected gateway or router"
        );
    }
}
