//! For the OIDC tests (crates/auth/tests/oidc.rs and, through `#[path]`,
//! services/gateway/tests/oidc.rs): a real HTTPS identity provider on
//! loopback — OIDC discovery and a JWKS, served by hyper over rustls with a
//! certificate from a development CA — and tokens minted by an independent
//! implementation, Python's PyJWT with `cryptography`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};

/// The PyJWT minter (see the script for its input and output).
const MINTER: &str = include_str!("pyjwt_minter.py");

/// Keys and tokens from PyJWT.
pub struct Minted {
    /// Public JWKs by kid.
    pub jwks: HashMap<String, Value>,
    pub tokens: Vec<String>,
}

impl Minted {
    /// A JWKS document of the keys `kids`.
    pub fn jwks_of(&self, kids: &[&str]) -> Value {
        json!({ "keys": kids.iter().map(|kid| self.jwks[*kid].clone()).collect::<Vec<_>>() })
    }
}

/// Makes `keys` (kid, "RSA" | "EC" | "OKP") and signs `tokens` (kid, alg,
/// claims) with PyJWT. `None`, said loudly, when python3 or PyJWT with
/// `cryptography` is missing; a failure under `MERIDIAN_REQUIRE_ALL=1`.
pub fn pyjwt(keys: &[(&str, &str)], tokens: &[(&str, &str, Value)]) -> Option<Minted> {
    let available = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        let message = "python3 with PyJWT and cryptography is not installed \
                       (pip install pyjwt cryptography): the OIDC test cannot mint its tokens";
        assert!(
            std::env::var("MERIDIAN_REQUIRE_ALL").as_deref() != Ok("1"),
            "{message}"
        );
        eprintln!("SKIPPED: {message}");
        return None;
    }
    let spec = json!({
        "keys": keys.iter().map(|(kid, kty)| json!({"kid": kid, "kty": kty})).collect::<Vec<_>>(),
        "tokens": tokens.iter().map(|(kid, alg, claims)| json!({"kid": kid, "alg": alg, "claims": claims})).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .args(["-c", MINTER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the PyJWT minter failed");
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    let jwks = out["jwks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tokens = out["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    Some(Minted { jwks, tokens })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

struct State {
    jwks: Value,
    cache_control: Option<String>,
    jwks_hits: u64,
}

/// An OIDC issuer at `https://localhost:PORT`: discovery at
/// `/.well-known/openid-configuration`, the JWKS at `/keys`.
pub struct TestIssuer {
    pub url: String,
    /// The PEM of the CA its certificate chains to (`[auth] ca`).
    pub ca: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestIssuer {
    pub async fn start(jwks: Value, cache_control: Option<&str>) -> TestIssuer {
        let dir = tempfile::tempdir().unwrap();
        let validity = meridian_tls::Validity::days_from(SystemTime::now(), 1);
        let ca = meridian_tls::dev_ca(
            &meridian_tls::TrustDomain::new("idp.test").unwrap(),
            validity,
        )
        .unwrap();
        let (cert_pem, key_pem) =
            meridian_tls::issue_server(&ca, &["localhost".to_owned()], validity).unwrap();
        let ca_path = dir.path().join("idp-ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();

        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let state = Arc::new(Mutex::new(State {
            jwks,
            cache_control: cache_control.map(str::to_owned),
            jwks_hits: 0,
        }));
        let (shared, issuer) = (state.clone(), url.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state, issuer) = (acceptor.clone(), shared.clone(), issuer.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let response = respond(&state, &issuer, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestIssuer {
            url,
            ca: ca_path,
            state,
            task,
            _dir: dir,
        }
    }

    /// Serves `jwks` from now on (the issuer rotated its keys).
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_hits(&self) -> u64 {
        self.state.lock().unwrap().jwks_hits
    }

    /// The issuer goes away: its port refuses connections from now on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(
    state: &Mutex<State>,
    issuer: &str,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    let (body, cache_control) = match request.uri().path() {
        "/.well-known/openid-configuration" => {
            let discovery = json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/keys"),
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            });
            (discovery, None)
        }
        "/keys" => {
            state.jwks_hits += 1;
            (state.jwks.clone(), state.cache_control.clone())
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found")));
            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
            return response;
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert("cache-control", value.parse().unwrap());
    }
    response
}

/// Waits until `check` holds, for at most `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
