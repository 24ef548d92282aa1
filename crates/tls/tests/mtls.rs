//! Real mutual TLS over loopback: a tonic server (the gRPC health service
//! behind `RequirePeer`) and clients with good and bad certificates,
//! certificate rotation on disk, and the development PKI's files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meridian_core::RegionId;
use meridian_tls::{
    DevCa, DevPkiPlan, Error, MeshTls, PeerIdentity, PkiFile, RequirePeer, Service, TlsFiles,
    TrustDomain, Validity, dev_ca, issue, peer_identity, write_atomically, write_dev_pki,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const TRUST_DOMAIN: &str = "meridian.test";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

// ---------------------------------------------------------------- fixtures

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), &plan(false)).unwrap();
        let ca = DevCa::from_pem(
            &read(&dir.path().join("ca.pem")),
            &read(&dir.path().join("ca-key.pem")),
        )
        .unwrap();
        Self { dir, ca }
    }

    fn files(&self, region: &str, service: Service) -> TlsFiles {
        TlsFiles::dev(self.dir.path(), &RegionId::new(region).unwrap(), service)
    }

    fn tls(&self, region: &str, service: Service) -> MeshTls {
        MeshTls::load(self.files(region, service)).unwrap()
    }

    /// Files for a client that does not come from the development PKI: its
    /// own certificate and key, and `ca_pem` as its trust bundle.
    fn custom_files(&self, name: &str, cert_pem: &str, key_pem: &str, ca_pem: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
            ca: self.dir.path().join(format!("{name}-ca.pem")),
        };
        write_atomically(&files.cert, cert_pem.as_bytes(), 0o644).unwrap();
        write_atomically(&files.key, key_pem.as_bytes(), 0o600).unwrap();
        write_atomically(&files.ca, ca_pem.as_bytes(), 0o644).unwrap();
        files
    }
}

fn plan(replace_ca: bool) -> DevPkiPlan {
    let now = SystemTime::now();
    DevPkiPlan {
        trust_domain: TrustDomain::new(TRUST_DOMAIN).unwrap(),
        regions: vec![
            RegionId::new("us-east").unwrap(),
            RegionId::new("eu-west").unwrap(),
        ],
        services: Service::ALL.to_vec(),
        ca_validity: Validity::days_from(now, 3650),
        cert_validity: Validity::days_from(now, 30),
        replace_ca,
    }
}

fn id(region: &str, service: Service) -> PeerIdentity {
    PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        RegionId::new(region).unwrap(),
        service,
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn valid_now() -> Validity {
    Validity::days_from(SystemTime::now(), 30)
}

/// What the server's interceptor saw of each call.
#[derive(Debug, Clone)]
struct Seen {
    identity: PeerIdentity,
    remote_addr: Option<SocketAddr>,
}

struct TestServer {
    addr: SocketAddr,
    /// `local_addr=…` as the server's refusal log lines say it.
    local: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestServer {
    /// Serves gRPC health over mutual TLS with `tls`, to callers whose
    /// service is in `allowed`.
    async fn start(tls: &MeshTls, allowed: &[Service]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let mut require = RequirePeer::new(allowed);
        let record = seen.clone();
        let service = InterceptedService::new(
            health,
            move |request: Request<()>| -> Result<Request<()>, Status> {
                let request = require.call(request)?;
                let identity = peer_identity(&request)?;
                record.lock().unwrap().push(Seen {
                    identity,
                    remote_addr: request.remote_addr(),
                });
                Ok(request)
            },
        );
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let incoming = tls.incoming(listener);
        tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            local: format!("local_addr={addr}"),
            seen,
            _shutdown: shutdown,
        }
    }

    fn last_seen(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

async fn health_check(channel: Channel) -> Result<ServingStatus, Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// The serial number (hex) of the certificate the server presents to a
/// new connection from `client`.
async fn served_serial(client: &MeshTls, server: &TestServer, expected: PeerIdentity) -> String {
    let stream = client
        .connector(expected)
        .connect_tls("127.0.0.1", server.addr.port())
        .await
        .unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let serial = webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .serial()
        .to_vec();
    serial.iter().map(|b| format!("{b:02x}")).collect()
}

/// A channel through a plain rustls client configuration, for clients the
/// library would never build: no certificate, an expired one.
fn raw_channel(addr: SocketAddr, ca_pem: &str, client_cert: Option<(&str, &str)>) -> Channel {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            builder
                .with_client_auth_cert(
                    chain,
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
                )
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = RawConnector(Arc::new(config));
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

#[derive(Clone)]
struct RawConnector(Arc<rustls::ClientConfig>);

impl tower_service::Service<tonic::codegen::http::Uri> for RawConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap())).await?;
            let server_name = ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

// ------------------------------------------------------------------- logs

/// Every log line of this test binary. One global subscriber, because
/// tracing caches per call site whether anyone listens, which a per-thread
/// subscriber cannot rely on while tests run in parallel; so each test looks
/// for lines only it can write (its server's port, its own paths).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .init();
        logs
    })
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (up to five seconds) for a log line containing every needle;
    /// the server logs a refusal in its own task, which may run after the
    /// client has already seen the failure.
    async fn wait_for(&self, needles: &[&str]) -> String {
        for _ in 0..500 {
            if let Some(line) = self
                .text()
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no log line with {needles:?} in:\n{}", self.text());
    }
}

/// A call refused during the TLS handshake: tonic reports the connection
/// error, which carries the TLS alert the server sent.
fn assert_refused_with_alert(status: &Status, alert: &str) {
    let text = format!("{status:?}");
    assert!(
        text.contains(&format!("received fatal alert: {alert}")),
        "{text}"
    );
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn gateway_calls_a_gateway_service_and_the_server_sees_its_identity() {
    let pki = Pki::new();
    let server_tls = pki.tls("us-east", Service::Gateway);
    let server = TestServer::start(&server_tls, &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);
    assert_eq!(client.identity(), id("eu-west", Service::Gateway));

    let channel = client
        .connect(&server.addr.to_string(), id("us-east", Service::Gateway))
        .await
        .unwrap();
    assert_eq!(health_check(channel).await.unwrap(), ServingStatus::Serving);

    let seen = server.last_seen();
    assert_eq!(seen.identity, id("eu-west", Service::Gateway));
    assert_eq!(seen.identity.region().as_str(), "eu-west");
    assert_eq!(seen.identity.service(), Service::Gateway);
    assert!(seen.remote_addr.is_some());
}

#[tokio::test]
async fn a_client_cert_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    // Same trust domain and identity, but another CA. The client trusts
    // both CAs, so only the server's check can refuse it.
    let other_ca = dev_ca(&TrustDomain::new(TRUST_DOMAIN).unwrap(), valid_now()).unwrap();
    let cert = issue(&other_ca, &id("eu-west", Service::Gateway), valid_now()).unwrap();
    let bundle = format!("{}{}", pki.ca.cert_pem(), other_ca.cert_pem());
    let client =
        MeshTls::load(pki.custom_files("other-ca", &cert.cert_pem, &cert.key_pem, &bundle))
            .unwrap();

    let channel = client
        .connect_lazy(&server.addr.to_string(), id("us-east", Service::Gateway))
        .unwrap();
    let status = health_check(channel).await.unwrap_err();
    // Both CAs are named for the trust domain, so webpki finds "the" issuer
    // and its signature does not match.
    assert_refused_with_alert(&status, "DecryptError");
    logs()
        .wait_for(&[
            "mtls handshake refused",
            &server.local,
            "not signed by a CA in the trust bundle (BadSignature)",
        ])
        .await;
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_client_cert_is_refused() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    let now = SystemTime::now();
    let expired = Validity {
        not_before: now - 10 * DAY,
        not_after: now - DAY,
    };
    let cert = issue(&pki.ca, &id("eu-west", Service::Gateway), expired).unwrap();

    // The library will not load an expired certificate of its own, so the
    // client is plain rustls.
    let load = MeshTls::load(pki.custom_files(
        "expired",
        &cert.cert_pem,
        &cert.key_pem,
        pki.ca.cert_pem(),
    ));
    assert!(
        load.unwrap_err()
            .to_string()
            .contains("certificate expired")
    );

    let channel = raw_channel(
        server.addr,
        pki.ca.cert_pem(),
        Some((&cert.cert_pem, &cert.key_pem)),
    );
    let status = health_check(channel).await.unwrap_err();
    assert_refused_with_alert(&status, "CertificateExpired");
    logs()
        .wait_for(&[
            "mtls handshake refused",
            &server.local,
            "certificate expired",
        ])
        .await;
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_without_a_cert_is_refused() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;

    let channel = raw_channel(server.addr, pki.ca.cert_pem(), None);
    let status = health_check(channel).await.unwrap_err();
    assert_refused_with_alert(&status, "CertificateRequired");
    logs()
        .wait_for(&[
            "mtls handshake refused",
            &server.local,
            "peer presented no certificate",
        ])
        .await;
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_from_another_trust_domain_is_refused() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    // Signed by the right CA, but for another trust domain.
    let stranger = PeerIdentity::new(
        TrustDomain::new("other.test").unwrap(),
        RegionId::new("eu-west").unwrap(),
        Service::Gateway,
    );
    let cert = issue(&pki.ca, &stranger, valid_now()).unwrap();
    let client = MeshTls::load(pki.custom_files(
        "stranger",
        &cert.cert_pem,
        &cert.key_pem,
        pki.ca.cert_pem(),
    ))
    .unwrap();

    let channel = client
        .connect_lazy(&server.addr.to_string(), id("us-east", Service::Gateway))
        .unwrap();
    let status = health_check(channel).await.unwrap_err();
    assert_refused_with_alert(&status, "CertificateUnknown");
    logs()
        .wait_for(&[
            "mtls handshake refused",
            &server.local,
            "client spiffe://other.test/region/eu-west/gateway is not in trust domain meridian.test",
        ])
        .await;
}

#[tokio::test]
async fn a_client_cert_of_our_ca_with_a_wrong_spiffe_id_is_refused() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    // Signed by the mesh's own CA, but naming no Meridian identity: an
    // unknown service, a path outside the region/<r>/<service> scheme, and
    // a URI that is not a SPIFFE id at all.
    let cases = [
        (
            "spiffe://meridian.test/region/eu-west/billing",
            "spiffe://meridian.test/region/eu-west/billing",
        ),
        (
            "spiffe://meridian.test/tenant/acme",
            "spiffe://meridian.test/tenant/acme",
        ),
        (
            "https://meridian.test/region/eu-west/gateway",
            "no spiffe:// URI SAN",
        ),
    ];
    for (uri, logged) in cases {
        let (cert_pem, key_pem) = meridian_tls::issue_with_uri(&pki.ca, uri, valid_now()).unwrap();
        // The library will not load a certificate without a valid identity
        // of its own, so the client is plain rustls.
        let channel = raw_channel(server.addr, pki.ca.cert_pem(), Some((&cert_pem, &key_pem)));
        let status = health_check(channel).await.unwrap_err();
        assert_refused_with_alert(&status, "CertificateUnknown");
        logs()
            .wait_for(&["mtls handshake refused", &server.local, logged])
            .await;
    }
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "no call with a wrong SPIFFE id reached the service"
    );
}

#[tokio::test]
async fn a_router_calling_a_gateway_only_service_is_denied() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    let router = pki.tls("us-east", Service::Router);

    let channel = router
        .connect(&server.addr.to_string(), id("us-east", Service::Gateway))
        .await
        .unwrap();
    let status = health_check(channel).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "spiffe://meridian.test/region/us-east/router is a router; this service accepts only gateway"
    );
    logs()
        .wait_for(&[
            "call refused: permission denied",
            "peer=spiffe://meridian.test/region/us-east/router",
        ])
        .await;
}

#[tokio::test]
async fn a_client_expecting_another_server_identity_refuses_the_server() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);

    // The server is us-east's gateway; the client wants us-east's router.
    let err = client
        .connect(&server.addr.to_string(), id("us-east", Service::Router))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    logs().wait_for(&[
        "mtls connection refused",
        &format!("addr={}", server.addr),
        "server is spiffe://meridian.test/region/us-east/gateway, expected spiffe://meridian.test/region/us-east/router",
    ])
    .await;
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_server_cert_from_another_ca_is_refused_by_the_client() {
    let pki = Pki::new();
    let other_ca = dev_ca(&TrustDomain::new(TRUST_DOMAIN).unwrap(), valid_now()).unwrap();
    let cert = issue(&other_ca, &id("us-east", Service::Gateway), valid_now()).unwrap();
    let bundle = format!("{}{}", pki.ca.cert_pem(), other_ca.cert_pem());
    let impostor =
        MeshTls::load(pki.custom_files("impostor", &cert.cert_pem, &cert.key_pem, &bundle))
            .unwrap();
    let server = TestServer::start(&impostor, &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);

    let err = client
        .connect(&server.addr.to_string(), id("us-east", Service::Gateway))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    logs()
        .wait_for(&[
            "mtls connection refused",
            &format!("addr={}", server.addr),
            "not signed by a CA in the trust bundle (BadSignature)",
        ])
        .await;
}

#[tokio::test]
async fn a_rotated_server_cert_serves_new_connections_and_old_ones_carry_on() {
    let pki = Pki::new();
    let files = pki.files("us-east", Service::Gateway);
    let server_tls = pki.tls("us-east", Service::Gateway);
    let server = TestServer::start(&server_tls, &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);
    let gateway = id("us-east", Service::Gateway);

    let old_serial = served_serial(&client, &server, gateway.clone()).await;
    assert_eq!(old_serial, server_tls.serial_hex());
    let old_channel = client
        .connect(&server.addr.to_string(), gateway.clone())
        .await
        .unwrap();
    health_check(old_channel.clone()).await.unwrap();
    let old_connection = server.last_seen().remote_addr;

    // Rotate: a new certificate and key for the same identity, on disk.
    let renewed = issue(
        &pki.ca,
        &gateway,
        Validity::days_from(SystemTime::now(), 60),
    )
    .unwrap();
    write_atomically(&files.key, renewed.key_pem.as_bytes(), 0o600).unwrap();
    write_atomically(&files.cert, renewed.cert_pem.as_bytes(), 0o644).unwrap();
    let reloaded = server_tls.reload().unwrap();
    assert_ne!(reloaded.serial_hex, old_serial);
    assert_eq!(reloaded.identity, gateway);
    logs()
        .wait_for(&["tls certificates reloaded", &reloaded.serial_hex])
        .await;

    // A new connection gets the new certificate.
    assert_eq!(
        served_serial(&client, &server, gateway.clone()).await,
        reloaded.serial_hex
    );
    let new_channel = client
        .connect(&server.addr.to_string(), gateway.clone())
        .await
        .unwrap();
    health_check(new_channel).await.unwrap();
    assert_ne!(server.last_seen().remote_addr, old_connection);

    // The connection opened before the rotation is still the same one, and
    // still works.
    health_check(old_channel).await.unwrap();
    assert_eq!(server.last_seen().remote_addr, old_connection);
}

#[tokio::test]
async fn a_broken_replacement_leaves_the_old_cert_in_use() {
    let pki = Pki::new();
    let files = pki.files("us-east", Service::Gateway);
    let server_tls = pki.tls("us-east", Service::Gateway);
    let server = TestServer::start(&server_tls, &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);
    let gateway = id("us-east", Service::Gateway);
    let serial = server_tls.serial_hex();
    let good_cert = read(&files.cert);
    let good_key = read(&files.key);

    // Not PEM at all.
    write_atomically(
        &files.cert,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n",
        0o644,
    )
    .unwrap();
    let err = server_tls.reload().unwrap_err();
    assert!(matches!(err, Error::BadFile { .. }), "{err}");
    logs()
        .wait_for(&["refusing new tls files", &files.cert.display().to_string()])
        .await;

    // A good certificate whose key is not the one on disk.
    let renewed = issue(&pki.ca, &gateway, valid_now()).unwrap();
    write_atomically(&files.cert, renewed.cert_pem.as_bytes(), 0o644).unwrap();
    let err = server_tls.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("does not belong to this certificate"),
        "{err}"
    );

    // An expired certificate with its key.
    let now = SystemTime::now();
    let expired = issue(
        &pki.ca,
        &gateway,
        Validity {
            not_before: now - 10 * DAY,
            not_after: now - DAY,
        },
    )
    .unwrap();
    write_atomically(&files.key, expired.key_pem.as_bytes(), 0o600).unwrap();
    write_atomically(&files.cert, expired.cert_pem.as_bytes(), 0o644).unwrap();
    let err = server_tls.reload().unwrap_err();
    assert!(err.to_string().contains("certificate expired"), "{err}");

    // Another service's certificate: the process would change identity.
    write_atomically(
        &files.key,
        read(&pki.files("us-east", Service::Router).key).as_bytes(),
        0o600,
    )
    .unwrap();
    write_atomically(
        &files.cert,
        read(&pki.files("us-east", Service::Router).cert).as_bytes(),
        0o644,
    )
    .unwrap();
    let err = server_tls.reload().unwrap_err();
    assert!(matches!(err, Error::IdentityChanged { .. }), "{err}");

    // A CA bundle that is not PEM.
    write_atomically(&files.key, good_key.as_bytes(), 0o600).unwrap();
    write_atomically(&files.cert, good_cert.as_bytes(), 0o644).unwrap();
    write_atomically(&files.ca, b"garbage", 0o644).unwrap();
    let err = server_tls.reload().unwrap_err();
    assert!(
        err.to_string().contains("ca.pem: no CERTIFICATE block"),
        "{err}"
    );

    // Through all of it, the server kept its certificate and kept serving.
    assert_eq!(server_tls.serial_hex(), serial);
    assert_eq!(
        served_serial(&client, &server, gateway.clone()).await,
        serial
    );
    let channel = client
        .connect(&server.addr.to_string(), gateway)
        .await
        .unwrap();
    assert_eq!(health_check(channel).await.unwrap(), ServingStatus::Serving);
}

#[tokio::test]
async fn the_background_reload_picks_up_new_files_and_ignores_broken_ones() {
    let pki = Pki::new();
    let files = pki.files("us-east", Service::Gateway);
    let server_tls = pki.tls("us-east", Service::Gateway);
    let server = TestServer::start(&server_tls, &[Service::Gateway]).await;
    let client = pki.tls("eu-west", Service::Gateway);
    let gateway = id("us-east", Service::Gateway);
    let _reload = server_tls.spawn_reload(Duration::from_millis(20));
    let first = server_tls.serial_hex();

    let renewed = issue(&pki.ca, &gateway, valid_now()).unwrap();
    write_atomically(&files.key, renewed.key_pem.as_bytes(), 0o600).unwrap();
    write_atomically(&files.cert, renewed.cert_pem.as_bytes(), 0o644).unwrap();
    let mut served = first.clone();
    for _ in 0..250 {
        served = served_serial(&client, &server, gateway.clone()).await;
        if served != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(served, first, "the poller never loaded the new certificate");
    assert_eq!(served, server_tls.serial_hex());

    // A truncated file, as a careless copy would leave: refused, and the
    // renewed certificate stays.
    std::fs::write(&files.cert, &renewed.cert_pem.as_bytes()[..100]).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(served_serial(&client, &server, gateway).await, served);
}

#[tokio::test]
async fn a_reloaded_ca_bundle_admits_clients_of_the_new_ca() {
    let pki = Pki::new();
    let files = pki.files("us-east", Service::Gateway);
    let server_tls = pki.tls("us-east", Service::Gateway);
    let server = TestServer::start(&server_tls, &[Service::Gateway]).await;
    let gateway = id("us-east", Service::Gateway);

    // A client already moved to the next CA; it trusts both.
    let next_ca = dev_ca(&TrustDomain::new(TRUST_DOMAIN).unwrap(), valid_now()).unwrap();
    let cert = issue(&next_ca, &id("eu-west", Service::Gateway), valid_now()).unwrap();
    let bundle = format!("{}{}", pki.ca.cert_pem(), next_ca.cert_pem());
    let client =
        MeshTls::load(pki.custom_files("next-ca", &cert.cert_pem, &cert.key_pem, &bundle)).unwrap();
    let refused = client
        .connect_lazy(&server.addr.to_string(), gateway.clone())
        .unwrap();
    assert!(health_check(refused).await.is_err());

    // The server's bundle gains the next CA: new handshakes admit it.
    write_atomically(&files.ca, bundle.as_bytes(), 0o644).unwrap();
    server_tls.reload().unwrap();
    let channel = client
        .connect(&server.addr.to_string(), gateway)
        .await
        .unwrap();
    assert_eq!(health_check(channel).await.unwrap(), ServingStatus::Serving);
    assert_eq!(server.last_seen().identity, id("eu-west", Service::Gateway));
}

#[test]
fn the_dev_pki_has_one_cert_per_region_and_service_and_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_dev_pki(dir.path(), &plan(false)).unwrap();
    let mut names: Vec<String> = written
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca-key.pem",
            "ca.pem",
            "eu-west-gateway-key.pem",
            "eu-west-gateway.pem",
            "eu-west-router-key.pem",
            "eu-west-router.pem",
            "us-east-gateway-key.pem",
            "us-east-gateway.pem",
            "us-east-router-key.pem",
            "us-east-router.pem",
        ]
    );
    for file in &written {
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&file.path).unwrap().permissions().mode() & 0o777
        };
        match &file.file {
            PkiFile::CaKey | PkiFile::Key(_) => assert_eq!(mode, 0o600, "{}", file.path.display()),
            PkiFile::CaCert | PkiFile::Cert(_) => {
                assert_eq!(mode, 0o644, "{}", file.path.display())
            }
        }
        if let PkiFile::Cert(identity) = &file.file {
            let tls = MeshTls::load(TlsFiles::dev(
                dir.path(),
                identity.region(),
                identity.service(),
            ))
            .unwrap();
            assert_eq!(&tls.identity(), identity);
            // The certificate also names loopback, for tools such as grpcurl.
            let der = CertificateDer::from_pem_slice(read(&file.path).as_bytes()).unwrap();
            let cert = webpki::EndEntityCert::try_from(&der).unwrap();
            assert_eq!(cert.valid_dns_names().collect::<Vec<_>>(), ["localhost"]);
        }
    }
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10);
}

#[test]
fn writing_the_dev_pki_again_keeps_the_ca_and_renews_the_certs() {
    let dir = tempfile::tempdir().unwrap();
    write_dev_pki(dir.path(), &plan(false)).unwrap();
    let ca = read(&dir.path().join("ca.pem"));
    let cert = read(&dir.path().join("us-east-gateway.pem"));

    let written = write_dev_pki(dir.path(), &plan(false)).unwrap();
    assert!(written.iter().any(|f| f.file == PkiFile::CaCert && f.kept));
    assert_eq!(read(&dir.path().join("ca.pem")), ca);
    assert_ne!(read(&dir.path().join("us-east-gateway.pem")), cert);
    // The renewed certificates chain to the kept CA.
    MeshTls::load(TlsFiles::dev(
        dir.path(),
        &RegionId::new("us-east").unwrap(),
        Service::Gateway,
    ))
    .unwrap();

    write_dev_pki(dir.path(), &plan(true)).unwrap();
    assert_ne!(read(&dir.path().join("ca.pem")), ca);

    let mut other = plan(false);
    other.trust_domain = TrustDomain::new("other.test").unwrap();
    let err = write_dev_pki(dir.path(), &other).unwrap_err().to_string();
    assert!(
        err.contains(
            "the existing CA is for trust domain meridian.test, not other.test; changing trust domains needs a new CA"
        ),
        "{err}"
    );

    // A CA key that does not belong to the CA certificate is refused.
    let stranger = dev_ca(&TrustDomain::new(TRUST_DOMAIN).unwrap(), valid_now()).unwrap();
    write_atomically(
        &dir.path().join("ca-key.pem"),
        stranger.key_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    let err = write_dev_pki(dir.path(), &plan(false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the key does not belong to the certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_public_port_certificate_is_refused_at_the_mesh_port() {
    let pki = Pki::new();
    let server =
        TestServer::start(&pki.tls("us-east", Service::Gateway), &[Service::Gateway]).await;
    // What `meridian up` and `meridian certs server` give a public port:
    // signed by the same CA, server use only, no SPIFFE id. Anyone can
    // fetch it from the public port; it must never pass for a peer.
    let (cert_pem, key_pem) =
        meridian_tls::issue_server(&pki.ca, &["localhost".to_owned()], valid_now()).unwrap();
    let channel = raw_channel(server.addr, pki.ca.cert_pem(), Some((&cert_pem, &key_pem)));
    let status = health_check(channel).await.unwrap_err();
    assert!(
        format!("{status:?}").contains("received fatal alert"),
        "{status:?}"
    );
    logs()
        .wait_for(&["mtls handshake refused", &server.local])
        .await;
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "the public certificate reached a mesh service"
    );
}
