//! The console with the router's `[auth]`: a real router (`run_with_console`)
//! with `[auth]` and `[tls]`, its console bound to every address, asked over
//! real HTTPS on loopback (and on a non-loopback address of this host when
//! it has one) with tokens minted by a `SigningKey` whose public key is in
//! the JWKS file the router reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper_util::rt::TokioIo;
use meridian_auth::{AuthSettings, Claims, Role, SigningKey, jwks::write_jwks};
use meridian_core::RegionId;
use meridian_router::{ConsoleConfig, PublicTls, RouterConfig, SystemClock};
use meridian_tls::{TrustDomain, Validity, dev_ca, issue_with_uri};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};

const RULES: &str = include_str!("../../../deploy/rules.example.toml");
const JWKS_RELOAD_MS: u64 = 50;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

struct Console {
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    key: SigningKey,
    jwks: std::path::PathBuf,
    port: u16,
    connector: TlsConnector,
}

/// What one request got back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Console {
    async fn start() -> Console {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, RULES).unwrap();
        let key = SigningKey::generate("key-1").unwrap();
        let jwks = dir.path().join("jwks.json");
        write_jwks(&jwks, &[key.public_jwk()]).unwrap();
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

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Every address: peers other than loopback are served with [auth].
        let console_listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = console_listener.local_addr().unwrap().port();
        // A gateway that is not there: the console still answers, saying so.
        let gateways = [(
            RegionId::new("us-east").unwrap(),
            "http://127.0.0.1:9".to_owned(),
        )];
        let mut config =
            RouterConfig::new(listener.local_addr().unwrap(), &rules, gateways).unwrap();
        let mut auth = AuthSettings::new(&jwks);
        auth.reload_interval_ms = Some(JWKS_RELOAD_MS);
        config.auth = Some(auth);
        config.tls = Some(PublicTls {
            cert: cert_path,
            key: key_path,
        });
        config.console = Some(ConsoleConfig::new(console_listener.local_addr().unwrap()));
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

        let mut roots = RootCertStore::empty();
        let ca_der =
            rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let console = Console {
            _dir: dir,
            _stop: stop,
            key,
            jwks,
            port,
            connector: TlsConnector::from(Arc::new(client)),
        };
        // Up when the login page answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && console.get("/login", &[]).await.status == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "the console did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        console
    }

    fn token(&self, role: Role, ttl_secs: i64) -> String {
        let region = RegionId::new("us-east").unwrap();
        let region = (role == Role::Agent).then_some(&region);
        self.key.mint(&Claims::new(
            format!("{role}-tester"),
            role,
            region,
            now(),
            ttl_secs,
        ))
    }

    fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// One request over a fresh TLS connection to `ip` (the certificate
    /// names `localhost`, whichever address is dialled).
    async fn request_to(
        &self,
        ip: IpAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let tcp = TcpStream::connect(SocketAddr::new(ip, self.port))
            .await
            .unwrap();
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.port));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.request_to(IpAddr::from([127, 0, 0, 1]), method, path, headers, body)
            .await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.request("GET", path, headers, "").await
    }

    async fn login(&self, token: &str, next: &str) -> Answer {
        let origin = self.origin();
        let form = format!("token={token}&next={}", next.replace('/', "%2F"));
        self.request(
            "POST",
            "/login",
            &[
                ("origin", origin.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &form,
        )
        .await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

/// The `name=value` of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().trim()
}

fn max_age(set_cookie: &str) -> i64 {
    set_cookie
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_takes_tokens_of_readers_and_refuses_the_rest() {
    let console = Console::start().await;

    // ---- No token: pages go to the login page, APIs answer 401 ----
    let page = console.get("/", &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(header(&page, "location"), "/login");
    let page = console.get("/handoffs", &[]).await;
    assert_eq!(
        (page.status, header(&page, "location")),
        (303, "/login?next=/handoffs")
    );
    let api = console.get("/api/now", &[]).await;
    assert_eq!(api.status, 401, "{}", api.body);
    assert_eq!(header(&api, "www-authenticate"), "Bearer");
    assert!(api.body.contains("no bearer token"), "{}", api.body);
    let stream = console.get("/api/now/events", &[]).await;
    assert_eq!(stream.status, 401);
    // The login page and what it needs are open.
    let login = console.get("/login", &[]).await;
    assert!(login.body.contains("id=\"login-form\""), "{}", login.body);
    assert_eq!(console.get("/console.js", &[]).await.status, 200);

    // ---- Bad tokens: 401 with the reason ----
    let expired = console
        .key
        .mint(&Claims::new("old", Role::Sre, None, now() - 7200, 3600));
    let answer = console
        .get("/api/now", &[("authorization", &bearer(&expired))])
        .await;
    assert_eq!(answer.status, 401);
    assert!(answer.body.contains("expired"), "{}", answer.body);
    let impostor = SigningKey::generate("key-1").unwrap();
    let forged = impostor.mint(&Claims::new("mallory", Role::Admin, None, now(), 3600));
    let answer = console
        .get("/api/now", &[("authorization", &bearer(&forged))])
        .await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.body.contains("signature does not verify"),
        "{}",
        answer.body
    );
    let answer = console
        .get("/", &[("cookie", &format!("meridian_console={forged}"))])
        .await;
    assert_eq!(
        (answer.status, header(&answer, "location")),
        (303, "/login"),
        "a bad cookie is no login"
    );

    // ---- Roles ----
    let agent = console.token(Role::Agent, 3600);
    let answer = console
        .get("/api/now", &[("authorization", &bearer(&agent))])
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("role agent may not use the console"),
        "{}",
        answer.body
    );
    let page = console
        .get("/", &[("authorization", &bearer(&agent))])
        .await;
    assert_eq!(page.status, 403, "a page refuses an agent too");

    let sre = console.token(Role::Sre, 3600);
    let now_view = console
        .get("/api/now", &[("authorization", &bearer(&sre))])
        .await;
    assert_eq!(now_view.status, 200, "{}", now_view.body);
    let now_view: serde_json::Value = serde_json::from_str(&now_view.body).unwrap();
    assert!(
        now_view["regions"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{now_view}"
    );
    let session = console
        .get("/api/session", &[("authorization", &bearer(&sre))])
        .await;
    let session: serde_json::Value = serde_json::from_str(&session.body).unwrap();
    assert_eq!(
        session,
        serde_json::json!({ "auth": true, "subject": "sre-tester", "role": "sre", "what_if": false })
    );

    // The what-if: operators and admins; sres read only.
    let operator = console.token(Role::Operator, 3600);
    let origin = console.origin();
    let what_if = |token: String, origin: String| {
        let console = &console;
        async move {
            let auth = bearer(&token);
            console
                .request(
                    "POST",
                    "/api/rules/what-if",
                    &[
                        ("authorization", auth.as_str()),
                        ("origin", origin.as_str()),
                        ("content-type", "text/plain"),
                    ],
                    RULES,
                )
                .await
        }
    };
    let answer = what_if(operator.clone(), origin.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("\"changed_cells_total\":0"),
        "the same rules change nothing: {}",
        answer.body
    );
    let answer = what_if(console.token(Role::Admin, 3600), origin.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = what_if(sre.clone(), origin.clone()).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .body
            .contains("role sre may not run the what-if; allowed: operator, admin"),
        "{}",
        answer.body
    );

    // ---- CSRF: a POST from another origin is refused, whoever sends it ----
    let answer = what_if(operator.clone(), "https://evil.example".to_owned()).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("cross-origin request refused"),
        "{}",
        answer.body
    );
    let answer = console
        .request(
            "POST",
            "/login",
            &[("origin", "https://evil.example")],
            &format!("token={operator}"),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert!(answer.headers.get("set-cookie").is_none());

    // ---- Login: the cookie, then the cookie works ----
    let refused = console.login(&forged, "/").await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.get("set-cookie").is_none());
    assert!(
        refused.body.contains("id=\"login-error\"")
            && refused.body.contains("signature does not verify"),
        "{}",
        refused.body
    );
    let refused = console.login(&agent, "/").await;
    assert_eq!(refused.status, 403);
    assert!(refused.headers.get("set-cookie").is_none());

    let logged_in = console
        .login(&console.token(Role::Sre, 600), "/handoffs")
        .await;
    assert_eq!(logged_in.status, 303, "{}", logged_in.body);
    assert_eq!(header(&logged_in, "location"), "/handoffs");
    let set_cookie = header(&logged_in, "set-cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(
            set_cookie.split("; ").any(|a| a == attribute),
            "{attribute} in {set_cookie}"
        );
    }
    let age = max_age(&set_cookie);
    assert!(
        (590..=600).contains(&age),
        "Max-Age {age} is the token's remaining lifetime (600 s)"
    );
    let cookie = cookie_pair(&set_cookie).to_owned();
    assert!(cookie.starts_with("meridian_console=ey"), "{cookie}");
    let page = console.get("/handoffs", &[("cookie", &cookie)]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-page=\"handoffs\""));
    assert_eq!(
        console.get("/api/now", &[("cookie", &cookie)]).await.status,
        200
    );
    let foreign = console.login(&operator, "https://evil.example/").await;
    assert_eq!(
        header(&foreign, "location"),
        "/",
        "a login sends the browser only to this console"
    );

    // ---- Logout clears the cookie ----
    let logout = console
        .request(
            "POST",
            "/logout",
            &[("cookie", &cookie), ("origin", &origin)],
            "",
        )
        .await;
    assert_eq!(
        (logout.status, header(&logout, "location")),
        (303, "/login")
    );
    let cleared = header(&logout, "set-cookie");
    assert_eq!(cookie_pair(cleared), "meridian_console=");
    assert_eq!(max_age(cleared), 0);

    // ---- A peer that is not loopback is served (with a token) ----
    match non_loopback_address() {
        Some(ip) => {
            let answer = console
                .request_to(
                    ip,
                    "GET",
                    "/api/now",
                    &[("authorization", &bearer(&sre))],
                    "",
                )
                .await;
            assert_eq!(answer.status, 200, "from {ip}: {}", answer.body);
            let answer = console.request_to(ip, "GET", "/api/now", &[], "").await;
            assert_eq!(answer.status, 401, "from {ip}, without a token");
            eprintln!("served a peer at {ip}, not loopback");
        }
        None => eprintln!(
            "\n**********\nthis host has no non-loopback address: the console's peer rule is covered by its unit tests only\n**********\n"
        ),
    }

    // ---- A removed key stops a live stream and the cookie ----
    let tls = console
        .connector
        .connect(
            ServerName::try_from("localhost").unwrap(),
            TcpStream::connect(("127.0.0.1", console.port))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .uri("/api/now/events")
        .header(header::HOST, "localhost")
        .header(header::COOKIE, &cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.into_data().unwrap().starts_with(b"data: "),
        "the stream sends the Now state"
    );
    let rotated = SigningKey::generate("key-2").unwrap();
    write_jwks(&console.jwks, &[rotated.public_jwk()]).unwrap();
    let ended = Instant::now();
    // The stream re-verifies its token every 5 s; it must end well within 10.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(Ok(_)) = tokio::time::timeout_at(deadline, body.frame())
        .await
        .expect("the stream outlived its key by 10 s")
    {}
    eprintln!(
        "the live stream ended {:?} after its key left the JWKS",
        ended.elapsed()
    );
    let answer = console.get("/api/now", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.body.contains("unknown key id"), "{}", answer.body);
}

/// A non-loopback address of this host (the one a route out would use),
/// found without sending anything: connecting a UDP socket only picks the
/// source address.
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn a_console_with_auth_but_no_tls_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let key = SigningKey::generate("key-1").unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[key.public_jwk()]).unwrap();
    let start = |listen: &'static str| {
        let (rules, jwks) = (rules.clone(), jwks.clone());
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let console_listener = TcpListener::bind(listen).await.unwrap();
            let gateways = [(
                RegionId::new("us-east").unwrap(),
                "http://127.0.0.1:9".to_owned(),
            )];
            let mut config =
                RouterConfig::new(listener.local_addr().unwrap(), Path::new(&rules), gateways)
                    .unwrap();
            config.auth = Some(AuthSettings::new(&jwks));
            config.console = Some(ConsoleConfig::new(console_listener.local_addr().unwrap()));
            tokio::time::timeout(
                Duration::from_secs(2),
                meridian_router::run_with_console(
                    config,
                    listener,
                    Some(console_listener),
                    std::future::pending(),
                    Arc::new(SystemClock),
                ),
            )
            .await
        }
    };
    let refused = start("0.0.0.0:0")
        .await
        .expect("refused at once")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("console.listen 0.0.0.0:") && refused.contains("tls.cert"),
        "{refused}"
    );
    // On loopback, tokens stay on this host: served over plain HTTP.
    assert!(
        start("127.0.0.1:0").await.is_err(),
        "still serving after 2 s"
    );
}
