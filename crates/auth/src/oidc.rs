//! Keys from an OpenID Connect issuer: discovery
//! (`{issuer}/.well-known/openid-configuration` names the `jwks_uri`), then
//! the JWKS, both over HTTPS (rustls with ring, hyper's HTTP/1 client). The
//! requests are rare (a refresh every few minutes, or on a new `kid` at
//! most once per [`crate::jwks::UNKNOWN_KID_REFRESH_MIN`]), so each one
//! takes a fresh connection: no pool to size or to go stale.

use std::{path::Path, time::Duration};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::{AuthError, Result, jwks::JWKS_BYTES_MAX};

/// The longest one request (connect, TLS, response) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An issuer and the HTTPS client that reaches it.
pub(crate) struct Issuer {
    /// As configured: what tokens' `iss` and the discovery document's
    /// `issuer` must equal.
    issuer: String,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A JWKS as served, with how long the issuer lets it be cached.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) max_age: Option<Duration>,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Issuer {
    /// `ca`: the PEM file of the CA(s) that alone are trusted for the
    /// issuer's certificates (a private issuer); without it, the public web
    /// PKI (Mozilla's roots, bundled by `webpki-roots`).
    pub(crate) fn new(issuer: &str, ca: Option<&Path>) -> Result<Self> {
        let bad = |reason: String| AuthError::Config(format!("auth.issuer {issuer:?}: {reason}"));
        let uri: http::Uri = issuer.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(bad(
                "must be an https:// URL (its keys are fetched over HTTPS)".into(),
            ));
        }
        let config = meridian_tls::outbound_client_config(ca).map_err(|e| match (e, ca) {
            (meridian_tls::OutboundTlsError::Ca(reason), Some(path)) => {
                AuthError::Config(format!("auth.ca {}: {reason}", path.display()))
            }
            (e, _) => bad(e.to_string()),
        })?;
        Ok(Self {
            issuer: issuer.to_owned(),
            tls: tokio_rustls::TlsConnector::from(config),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.issuer
    }

    /// Discovery, then the JWKS it names.
    pub(crate) async fn fetch(&self) -> std::result::Result<Fetched, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&discovery_url).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| format!("{discovery_url}: not a discovery document: {e}"))?;
        // OpenID Connect Discovery 1.0 §4.3: the document speaks for the
        // issuer it was fetched from, or for no one.
        if discovery.issuer != self.issuer {
            return Err(format!(
                "{discovery_url}: issuer is {:?}, not the configured {:?}",
                discovery.issuer, self.issuer
            ));
        }
        let (bytes, max_age) = self.get(&discovery.jwks_uri).await?;
        Ok(Fetched { bytes, max_age })
    }

    /// One HTTPS GET: the body (at most [`JWKS_BYTES_MAX`]) and the
    /// `Cache-Control: max-age` of a 200 response.
    async fn get(&self, url: &str) -> std::result::Result<(Vec<u8>, Option<Duration>), String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_inner(url))
            .await
            .map_err(|_| format!("{url}: no answer within {}s", FETCH_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))
    }

    async fn get_inner(
        &self,
        url: &str,
    ) -> std::result::Result<(Vec<u8>, Option<Duration>), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err("not https: keys are fetched only over HTTPS".into());
        }
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err("no host".into());
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("host {host:?}: {e}"))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "meridian-auth")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != http::StatusCode::OK {
                return Err(format!("HTTP {}", response.status()));
            }
            let max_age = response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| max_age(v.to_str().ok()?));
            let body = Limited::new(response.into_body(), JWKS_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((body.to_vec(), max_age))
        }
        .await;
        driver.abort();
        result
    }
}

/// The freshness lifetime a `Cache-Control` value gives (RFC 9111 §5.2.2):
/// `max-age=N`, or zero for `no-cache`/`no-store`; `None` when it says
/// neither.
pub(crate) fn max_age(value: &str) -> Option<Duration> {
    let mut found = None;
    for directive in value.split(',').map(str::trim) {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                found = arg
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::max_age;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age("max-age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
