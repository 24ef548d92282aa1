//! A webhook receiver over real HTTPS: a hyper server on loopback with a
//! certificate from a CA generated for the test (`meridian-tls`'s dev PKI,
//! rcgen underneath). It records every POST with its `Idempotency-Key`,
//! deduplicates by that key as a well-behaved receiver does, and can be
//! told to fail (answer an error status) or stall (never answer), to drive
//! retries and crashes between commit and delivery.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200, and the POST counts.
    Accept,
    /// This status; the POST is recorded as an attempt only.
    Fail(u16),
    /// No answer until the client gives up.
    Stall,
}

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    pub body: serde_json::Value,
    pub accepted: bool,
    /// When its body had been read: the benchmarks' end of a delivery.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    posts: Vec<Post>,
    /// Accepted POSTs per key: 1 for each key delivered exactly once.
    accepted: BTreeMap<String, usize>,
}

pub struct HttpsReceiver {
    /// `https://localhost:PORT`.
    pub base_url: String,
    /// The PEM of the CA its certificate chains to.
    pub ca: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl HttpsReceiver {
    pub async fn start(mode: Mode) -> HttpsReceiver {
        let dir = tempfile::tempdir().unwrap();
        let validity = meridian_tls::Validity::days_from(SystemTime::now(), 1);
        let ca = meridian_tls::dev_ca(
            &meridian_tls::TrustDomain::new("hooks.test").unwrap(),
            validity,
        )
        .unwrap();
        let (cert_pem, key_pem) =
            meridian_tls::issue_server(&ca, &["localhost".to_owned()], validity).unwrap();
        let ca_path = dir.path().join("hooks-ca.pem");
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
        let base_url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let state = Arc::new(Mutex::new(State {
            mode: Some(mode),
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As a real server does: without it, Nagle's algorithm holds
                // the answer for the client's delayed ACK (40 ms on Linux).
                let _ = tcp.set_nodelay(true);
                let (acceptor, state) = (acceptor.clone(), shared.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsReceiver {
            base_url,
            ca: ca_path,
            state,
            task,
            _dir: dir,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Every POST so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    /// Accepted POSTs per key.
    pub fn accepted(&self) -> BTreeMap<String, usize> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Waits until `check` holds on the accepted keys, for at most `timeout`.
    pub async fn wait_accepted(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> BTreeMap<String, usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if check(&accepted) {
                return accepted;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; accepted so far: {accepted:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    state: &Mutex<State>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let at = std::time::Instant::now();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let mode = {
        let state = state.lock().unwrap();
        state.mode.unwrap_or(Mode::Accept)
    };
    if mode == Mode::Stall {
        std::future::pending::<()>().await;
    }
    let accepted = mode == Mode::Accept;
    {
        let mut state = state.lock().unwrap();
        if accepted && let Some(key) = &key {
            *state.accepted.entry(key.clone()).or_default() += 1;
        }
        state.posts.push(Post {
            path,
            key,
            body,
            accepted,
            at,
        });
    }
    let status = match mode {
        Mode::Fail(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => StatusCode::OK,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    response
}
