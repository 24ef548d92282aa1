//! A development PKI made with `rcgen`: one CA per trust domain and one
//! certificate per region and service, written as PEM files.
//!
//! Production certificates come from elsewhere (cert-manager, a real CA);
//! this module only makes the files that `meridian up`, the tests and a
//! first-time user need. The files have the same shape either way.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use meridian_core::RegionId;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{Error, PeerIdentity, Result, Service, TlsFiles, TrustDomain};

/// How far back a new certificate's `not_before` goes, so that a peer whose
/// clock is a little behind ours still accepts it.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// The file names of a development PKI inside its directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// When a certificate is valid. Time is passed in, never read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from a few minutes before `now` (clock skew between regions)
    /// for `days` days after `now`.
    pub fn days_from(now: SystemTime, days: u32) -> Self {
        let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
        let not_after = now
            .checked_add(Duration::from_secs(u64::from(days) * SECONDS_PER_DAY))
            .unwrap_or(now);
        Self {
            not_before,
            not_after,
        }
    }
}

/// A development certificate authority for one trust domain: its
/// certificate and the key it signs with.
pub struct DevCa {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Takes up a CA that [`dev_ca`] made earlier (its `ca.pem` and
    /// `ca-key.pem`), so that new certificates chain to the CA peers already
    /// trust. Fails if the key does not belong to the certificate or the
    /// certificate is not a development CA of this crate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let bad = |reason: String| Error::CertificateIdentity(format!("development CA: {reason}"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("no PEM certificate: {e}")))?;
        let parsed = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| bad(format!("cannot parse the certificate: {e}")))?;
        // The CA names its trust domain in a URI SAN `spiffe://<trust-domain>`.
        let trust_domain = parsed
            .valid_uri_names()
            .find_map(|uri| {
                uri.strip_prefix("spiffe://")
                    .filter(|rest| !rest.contains('/'))
            })
            .ok_or_else(|| bad("the certificate has no spiffe://<trust-domain> URI SAN".to_owned()))
            .and_then(TrustDomain::new)?;
        let key = KeyPair::from_pem(key_pem)?;
        if key.subject_public_key_info() != parsed.subject_public_key_info().as_ref() {
            return Err(bad("the key does not belong to the certificate".to_owned()));
        }
        // Rebuild the parameters the CA was made with; a certificate signed
        // with them names the same issuer, so it must have the same subject.
        let params = ca_params(
            &trust_domain,
            Validity {
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
            },
        )?;
        let rebuilt = params.self_signed(&key)?;
        let rebuilt = webpki::EndEntityCert::try_from(rebuilt.der())
            .map_err(|e| bad(format!("cannot parse the rebuilt certificate: {e}")))?;
        if rebuilt.subject() != parsed.subject() {
            return Err(bad(
                "the certificate's subject is not that of a Meridian development CA".to_owned(),
            ));
        }
        Ok(Self {
            trust_domain,
            issuer: Issuer::new(params, key),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }
}

fn ca_params(trust_domain: &TrustDomain, validity: Validity) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain.as_str());
    name.push(DnType::CommonName, "Meridian development CA");
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(format!(
        "spiffe://{trust_domain}"
    ))?)];
    // Leaves only: the development PKI has no intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    Ok(params)
}

/// Makes a new development CA for `trust_domain` with a fresh key.
pub fn dev_ca(trust_domain: &TrustDomain, validity: Validity) -> Result<DevCa> {
    let params = ca_params(trust_domain, validity)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(DevCa {
        trust_domain: trust_domain.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub identity: PeerIdentity,
    pub cert_pem: String,
    pub key_pem: String,
    pub validity: Validity,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("IssuedCert")
            .field("identity", &self.identity)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// Issues a certificate for `identity`, signed by `ca`, with a fresh key
/// (so a fresh serial number). It carries the SPIFFE URI SAN plus
/// `localhost`, `127.0.0.1` and `::1`, and may serve as both client and server.
///
/// The identity's trust domain is not checked against the CA's, so tests
/// can make the certificates peers must refuse.
pub fn issue(ca: &DevCa, identity: &PeerIdentity, validity: Validity) -> Result<IssuedCert> {
    let common_name = format!("{} {}", identity.region(), identity.service());
    let (cert_pem, key_pem) = issue_pem(
        ca,
        identity.trust_domain().as_str(),
        &common_name,
        &identity.to_string(),
        validity,
    )?;
    Ok(IssuedCert {
        identity: identity.clone(),
        cert_pem,
        key_pem,
        validity,
    })
}

/// Issues a certificate and key (PEM) whose URI SAN is `uri` verbatim, a
/// SPIFFE id or not: for tests that peers refuse certificates of the
/// right CA that name no valid Meridian identity.
pub fn issue_with_uri(ca: &DevCa, uri: &str, validity: Validity) -> Result<(String, String)> {
    issue_pem(
        ca,
        ca.trust_domain.as_str(),
        "not a meridian identity",
        uri,
        validity,
    )
}

/// Issues a server-only certificate and key (PEM) for a public port:
/// `dns_names` plus `localhost`, `127.0.0.1` and `::1`, and no SPIFFE id,
/// so the mesh never takes it for a peer (its verifier wants exactly one
/// Meridian URI) and it cannot act as a client.
pub fn issue_server(
    ca: &DevCa,
    dns_names: &[String],
    validity: Validity,
) -> Result<(String, String)> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ca.trust_domain.as_str());
    name.push(
        DnType::CommonName,
        dns_names.first().map_or("localhost", String::as_str),
    );
    params.distinguished_name = name;
    let mut sans = Vec::new();
    for dns in dns_names.iter().map(String::as_str).chain(["localhost"]) {
        let san = SanType::DnsName(Ia5String::try_from(dns.to_owned())?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params.subject_alt_names = sans;
    sign_leaf(
        params,
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        ca,
        validity,
    )
}

fn issue_pem(
    ca: &DevCa,
    organization: &str,
    common_name: &str,
    uri: &str,
    validity: Validity,
) -> Result<(String, String)> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.subject_alt_names = vec![
        SanType::URI(Ia5String::try_from(uri.to_owned())?),
        SanType::DnsName(Ia5String::try_from("localhost")?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    sign_leaf(
        params,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        ca,
        validity,
    )
}

/// Signs a leaf certificate for `params`' names with a new key: a
/// signature key with `usages`, valid for `validity`, naming its issuer.
/// Returns (certificate PEM, key PEM).
fn sign_leaf(
    mut params: CertificateParams,
    usages: Vec<ExtendedKeyUsagePurpose>,
    ca: &DevCa,
    validity: Validity,
) -> Result<(String, String)> {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What to write with [`write_dev_pki`].
#[derive(Debug, Clone)]
pub struct DevPkiPlan {
    pub trust_domain: TrustDomain,
    pub regions: Vec<RegionId>,
    pub services: Vec<Service>,
    pub ca_validity: Validity,
    pub cert_validity: Validity,
    /// Make a new CA even if the directory holds one. Peers that trust the
    /// old CA refuse certificates of the new one until they get its `ca.pem`.
    pub replace_ca: bool,
}

/// One file of a development PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkiFile {
    CaCert,
    CaKey,
    Cert(PeerIdentity),
    Key(PeerIdentity),
}

/// A file [`write_dev_pki`] wrote, or kept.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub file: PkiFile,
    /// `None` for keys, and for a CA that was kept as it was.
    pub not_after: Option<SystemTime>,
    /// The file was already there and was left alone (a CA being reused).
    pub kept: bool,
}

impl TlsFiles {
    /// The files of `region`'s `service` in a development PKI directory.
    pub fn dev(dir: &Path, region: &RegionId, service: Service) -> Self {
        Self {
            cert: dir.join(format!("{region}-{service}.pem")),
            key: dir.join(format!("{region}-{service}-key.pem")),
            ca: dir.join(CA_CERT_FILE),
        }
    }
}

/// Writes a development PKI into `dir`: `ca.pem`, `ca-key.pem`, and
/// `<region>-<service>.pem` with `<region>-<service>-key.pem` for every
/// region and service. Keys are mode 0600. Each file is written to a
/// temporary name and renamed, so a process polling the files never reads
/// half of one.
///
/// If `dir` already holds a CA and `plan.replace_ca` is false, that CA is
/// kept and only the service certificates are issued anew: running
/// services pick them up on their next reload, which is a certificate
/// rotation.
pub fn write_dev_pki(dir: &Path, plan: &DevPkiPlan) -> Result<Vec<WrittenFile>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let mut written = Vec::new();

    let ca = if ca_cert_path.exists() && !plan.replace_ca {
        let cert_pem = read_to_string(&ca_cert_path)?;
        let key_pem = read_to_string(&ca_key_path)?;
        let ca = DevCa::from_pem(&cert_pem, &key_pem).map_err(|e| Error::BadFile {
            path: ca_cert_path.clone(),
            reason: e.to_string(),
        })?;
        if ca.trust_domain() != &plan.trust_domain {
            return Err(Error::BadFile {
                path: ca_cert_path,
                reason: format!(
                    "the existing CA is for trust domain {}, not {}; changing trust domains needs a new CA",
                    ca.trust_domain(),
                    plan.trust_domain
                ),
            });
        }
        written.push(WrittenFile {
            path: ca_cert_path,
            file: PkiFile::CaCert,
            not_after: None,
            kept: true,
        });
        written.push(WrittenFile {
            path: ca_key_path,
            file: PkiFile::CaKey,
            not_after: None,
            kept: true,
        });
        ca
    } else {
        let ca = dev_ca(&plan.trust_domain, plan.ca_validity)?;
        write_atomically(&ca_key_path, ca.key_pem().as_bytes(), KEY_MODE)?;
        write_atomically(&ca_cert_path, ca.cert_pem().as_bytes(), CERT_MODE)?;
        written.push(WrittenFile {
            path: ca_cert_path,
            file: PkiFile::CaCert,
            not_after: Some(plan.ca_validity.not_after),
            kept: false,
        });
        written.push(WrittenFile {
            path: ca_key_path,
            file: PkiFile::CaKey,
            not_after: None,
            kept: false,
        });
        ca
    };

    for region in &plan.regions {
        for &service in &plan.services {
            let identity = PeerIdentity::new(plan.trust_domain.clone(), region.clone(), service);
            let issued = issue(&ca, &identity, plan.cert_validity)?;
            let files = TlsFiles::dev(dir, region, service);
            // Key first: a poller that sees the new key with the old
            // certificate refuses the pair and retries; the reverse order
            // would do the same, but this keeps the window to one file.
            write_atomically(&files.key, issued.key_pem.as_bytes(), KEY_MODE)?;
            write_atomically(&files.cert, issued.cert_pem.as_bytes(), CERT_MODE)?;
            written.push(WrittenFile {
                path: files.cert,
                file: PkiFile::Cert(identity.clone()),
                not_after: Some(plan.cert_validity.not_after),
                kept: false,
            });
            written.push(WrittenFile {
                path: files.key,
                file: PkiFile::Key(identity),
                not_after: None,
                kept: false,
            });
        }
    }
    Ok(written)
}

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory and a rename; the file has `mode` (on Unix) from the start.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| Error::BadFile {
        path: path.to_owned(),
        reason: "not a file path".to_owned(),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io)?;
    // A leftover temporary file keeps the mode it was made with; set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}
