//! A router with its console on loopback for the console's black-box
//! tests and its benchmark: `[auth]` and `[tls]` (HTTPS, the console on
//! every address) or neither (plain HTTP on loopback), clients that connect
//! from a chosen loopback source address (127.0.0.x), and slow clients
//! that hold connections the ways an attacker would.

// Fixtures: a failure should stop the test loudly. Each user takes what it
// needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper_util::rt::TokioIo;
use meridian_auth::{AuthSettings, Claims, Role, SigningKey, jwks::write_jwks};
use meridian_core::RegionId;
use meridian_router::{ConsoleConfig, PublicTls, RouterConfig, SystemClock};
use meridian_tls::{TrustDomain, Validity, dev_ca, issue_with_uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};

const RULES: &str = include_str!("../../../../deploy/rules.example.toml");

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub struct Console {
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    key: SigningKey,
    pub port: u16,
    /// `None`: the console serves plain HTTP (no `[auth]`, loopback).
    connector: Option<TlsConnector>,
}

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// Either end of a console connection, TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Console {
    /// With `tls`: `[auth]` and `[tls]`, the console on every address.
    /// Without: no `[auth]`, the console on loopback over plain HTTP.
    pub async fn start(tls: bool) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, RULES).unwrap();
        let key = SigningKey::generate("key-1").unwrap();
        let jwks = dir.path().join("jwks.json");
        write_jwks(&jwks, &[key.public_jwk()]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console_listener = TcpListener::bind(if tls { "0.0.0.0:0" } else { "127.0.0.1:0" })
            .await
            .unwrap();
        let port = console_listener.local_addr().unwrap().port();
        // A gateway that is not there: the console still answers, saying so.
        let gateways = [(
            RegionId::new("us-east").unwrap(),
            "http://127.0.0.1:9".to_owned(),
        )];
        let mut config =
            RouterConfig::new(listener.local_addr().unwrap(), &rules, gateways).unwrap();
        config.console = Some(ConsoleConfig::new(console_listener.local_addr().unwrap()));
        let mut connector = None;
        if tls {
            let validity = Validity::days_from(SystemTime::now(), 1);
            let ca = dev_ca(&TrustDomain::new("meridian.local").unwrap(), validity).unwrap();
            let (cert, cert_key) = issue_with_uri(
                &ca,
                "spiffe://meridian.local/region/us-east/router",
                validity,
            )
            .unwrap();
            let (cert_path, key_path) = (
                dir.path().join("router.pem"),
                dir.path().join("router-key.pem"),
            );
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, cert_key).unwrap();
            config.auth = Some(AuthSettings::new(&jwks));
            config.tls = Some(PublicTls {
                cert: cert_path,
                key: key_path,
            });
            let mut roots = RootCertStore::empty();
            roots
                .add(
                    rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
                        .unwrap(),
                )
                .unwrap();
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            connector = Some(TlsConnector::from(Arc::new(client)));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            meridian_router::run_with_console(
                config,
                listener,
                Some(console_listener),
                shutdown,
                Arc::new(SystemClock),
            )
            .await
            .unwrap();
        });
        let console = Console {
            _dir: dir,
            _stop: stop,
            key,
            port,
            connector,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && console.get("/login", &[]).await.is_some()
            {
                break;
            }
            assert!(Instant::now() < deadline, "the console did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        console
    }

    pub fn token(&self, subject: &str, role: Role) -> String {
        self.key
            .mint(&Claims::new(subject, role, None, now(), 3600))
    }

    /// A connection from source address `from`, through TLS when the
    /// console serves it.
    pub async fn connect_from(&self, from: Ipv4Addr) -> std::io::Result<Box<dyn Io>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
        let tcp = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await?;
        match &self.connector {
            None => Ok(Box::new(tcp)),
            Some(connector) => Ok(Box::new(
                connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?,
            )),
        }
    }

    /// One request from 127.0.0.1 on a fresh connection; `None` when the
    /// console closed it unanswered.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<Answer> {
        let io = self.connect_from(Ipv4Addr::LOCALHOST).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .ok()?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.port));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .ok()?
            .ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
        self.request("GET", path, headers).await
    }

    /// A live stream from 127.0.0.1: its status, and its body while open.
    pub async fn stream(
        &self,
        path: &str,
        token: &str,
    ) -> (u16, String, Option<hyper::body::Incoming>) {
        let io = self.connect_from(Ipv4Addr::LOCALHOST).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            return (status, String::new(), Some(response.into_body()));
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// Connects and sends nothing (not even a TLS hello).
    IdleTcp,
    /// Completes TLS, then sends a request head a byte a second.
    Head,
    /// Sends a `POST /login` head, then its form a byte every two seconds.
    LoginBody,
}

/// How a slow client ended.
pub struct Cut {
    pub kind: Slow,
    /// From its first byte (or its connect, when idle) to the console
    /// closing the connection.
    pub held: Duration,
    /// What the console said before closing.
    pub answer: String,
}

/// One slow client from `from`; `holding` is counted up once it holds its
/// connection and down once the console closes it. `None` when the
/// console had not closed it after `give_up_after`.
pub async fn slow_client(
    console: Arc<Console>,
    kind: Slow,
    from: Ipv4Addr,
    holding: Arc<AtomicUsize>,
    give_up_after: Duration,
) -> Option<Cut> {
    let mut io: Box<dyn Io> = if kind == Slow::IdleTcp {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
        Box::new(
            socket
                .connect(SocketAddr::from(([127, 0, 0, 1], console.port)))
                .await
                .unwrap(),
        )
    } else {
        console.connect_from(from).await.unwrap()
    };
    let (head, trickle, every): (String, &[u8], Duration) = match kind {
        Slow::IdleTcp => (String::new(), b"", Duration::from_secs(3600)),
        Slow::Head => (
            "GET / HTTP/1.1\r\nHost: localhost\r\n".to_owned(),
            b"X",
            Duration::from_secs(1),
        ),
        Slow::LoginBody => (
            format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 content-length: 1000\r\n\r\ntoken=",
                console.port
            ),
            b"a",
            Duration::from_secs(2),
        ),
    };
    let started = Instant::now();
    io.write_all(head.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
    holding.fetch_add(1, Ordering::SeqCst);
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut answer = Vec::new();
    let read_to_end = reader.read_to_end(&mut answer);
    tokio::pin!(read_to_end);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let deadline = tokio::time::sleep(give_up_after);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut read_to_end => break,
            _ = tick.tick() => {
                // A write to a closed connection fails: that is a cut too.
                if writer.write_all(trickle).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            () = &mut deadline => {
                holding.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
        }
    }
    holding.fetch_sub(1, Ordering::SeqCst);
    Some(Cut {
        kind,
        held: started.elapsed(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
    })
}
