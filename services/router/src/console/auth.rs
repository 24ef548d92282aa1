//! Who may use the console, when the router has `[auth]`.
//!
//! The console takes the same bearer tokens as the router's gRPC port,
//! checked by the same [`Verifier`] (same JWKS file and reload, same
//! issuer and audience). A browser logs in once on `/login` by pasting a
//! token, which the console verifies and keeps in an `HttpOnly;
//! SameSite=Strict` cookie; scripts send `authorization: Bearer <jwt>`.
//! Every request verifies the token again, so an expired token or a key
//! removed from the JWKS stops working at once.
//!
//! The pure decisions (which roles may do what, the cookie, the Origin
//! check, where a login may send the browser next) are functions here, unit
//! tested; `super::respond` applies them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Method;
use hyper::header::{self, HeaderMap};
use meridian_auth::{AuthError, Principal, Role, Verifier};

/// The cookie that carries the token.
pub(crate) const COOKIE: &str = "meridian_console";
/// Who may read the pages and their APIs. Agents may not: the console
/// shows every region's queue and tickets, and an agent's token is bound
/// to one region.
pub(crate) const READERS: &[Role] = &[Role::Operator, Role::Sre, Role::Admin];
/// Who may run the what-if. It applies nothing, but it is the operators'
/// tool for trying rules (as `Explain` and rule changes are theirs) and the
/// costliest request the console serves; sres read.
pub(crate) const WHAT_IF_ROLES: &[Role] = &[Role::Operator, Role::Admin];

/// What a request needs before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The login and logout pages, the static CSS and script (the login
    /// page needs them), and the favicon browsers ask for (there is none).
    Open,
    /// A reader's token: every page and read API, SSE streams included.
    Read,
    /// A token of a role that may run the what-if.
    WhatIf,
}

/// What `method path` needs. Unknown paths need a reader, so that nobody
/// learns what the console serves without a token.
pub(crate) fn need(method: &Method, path: &str) -> Need {
    match path {
        "/login" | "/logout" | "/console.css" | "/console.js" | "/favicon.ico" => Need::Open,
        "/api/rules/what-if" if method == Method::POST => Need::WhatIf,
        _ => Need::Read,
    }
}

/// Whether `role` may do what `need` asks; the reason (for the caller and
/// the log) when not.
pub(crate) fn allows(need: Need, role: Role) -> Result<(), String> {
    let (allowed, what) = match need {
        Need::Open => return Ok(()),
        Need::Read => (READERS, "use the console (it shows every region)"),
        Need::WhatIf => (WHAT_IF_ROLES, "run the what-if"),
    };
    if allowed.contains(&role) {
        return Ok(());
    }
    let roles = allowed
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!("role {role} may not {what}; allowed: {roles}"))
}

/// Whether the path is an API or stream (answered 401 when not logged in)
/// rather than a page (redirected to the login page).
pub(crate) fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The value of cookie `name` in the request's `cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The request's token: `authorization: Bearer` first (scripts), then the
/// login cookie (browsers).
pub(crate) fn token(headers: &HeaderMap) -> Result<&str, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("authorization header is not ASCII".into()))?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed(format!(
                "authorization scheme {scheme:?}; expected Bearer"
            )));
        }
        return Ok(token.trim());
    }
    cookie(headers, COOKIE).ok_or(AuthError::Missing)
}

/// `Set-Cookie` for a login: the token for `max_age_secs` (never longer
/// than the token lives), out of reach of scripts, never sent with
/// requests from other sites, and only over TLS when the console serves it.
pub(crate) fn login_cookie(token: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age_secs.max(0)
    )
}

/// `Set-Cookie` for a logout: the cookie emptied and expired.
pub(crate) fn logout_cookie(secure: bool) -> String {
    login_cookie("", 0, secure)
}

/// CSRF check of a state-changing request: a browser names the page that
/// sent it in `Origin`; it must be this console (`scheme://host`, the
/// `Host` the browser addressed). Clients that send no `Origin` (curl,
/// scripts) are not browsers acting for a third site. Together with
/// `SameSite=Strict` this is the console's CSRF protection.
pub(crate) fn origin_allows(
    origin: Option<&str>,
    host: Option<&str>,
    tls: bool,
) -> Result<(), String> {
    let Some(origin) = origin else { return Ok(()) };
    let scheme = if tls { "https" } else { "http" };
    match host {
        Some(host) if origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")) => Ok(()),
        Some(host) => Err(format!(
            "cross-origin request refused: Origin {origin:?} is not this console ({scheme}://{host})"
        )),
        None => Err(format!(
            "cross-origin request refused: Origin {origin:?} and no Host header to compare it with"
        )),
    }
}

/// Where a login may send the browser: a path on this console, made of
/// plain characters (no `//host`, no scheme, no query), never the login
/// page itself.
pub(crate) fn safe_next(next: &str) -> Option<&str> {
    let plain = next
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
    (plain
        && next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/login")
        && !next.starts_with("/logout"))
    .then_some(next)
}

/// The `exp` of a token whose signature was already verified.
pub(crate) fn expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<meridian_auth::Claims>(&bytes)
        .ok()
        .map(|claims| claims.exp)
}

/// One field of an `application/x-www-form-urlencoded` body, decoded.
pub(crate) fn form_value(body: &str, name: &str) -> Option<String> {
    let raw = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)?
        .1;
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => out.push(b' '),
            b'%' if tail.len() >= 2 => {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                rest = tail.get(2..)?;
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// Text safe to put between HTML tags.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The console's authentication when the router has `[auth]`.
#[derive(Clone)]
pub(crate) struct ConsoleAuth {
    pub(crate) verifier: Verifier,
    /// Served over TLS: the cookie is `Secure` and `Origin` is `https://`.
    pub(crate) tls: bool,
}

impl ConsoleAuth {
    /// The verified caller of a request, and its token; why not otherwise
    /// (safe to show and log: never the token).
    pub(crate) fn authenticate<'a>(
        &self,
        headers: &'a HeaderMap,
    ) -> Result<(Principal, &'a str), String> {
        let token = token(headers).map_err(|e| e.to_string())?;
        let principal = self.verifier.verify(token).map_err(|e| e.to_string())?;
        Ok((principal, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn readers_are_operators_sres_and_admins_and_the_what_if_is_for_operators_and_admins() {
        for role in Role::ALL {
            assert_eq!(allows(Need::Open, role), Ok(()));
        }
        assert!(allows(Need::Read, Role::Sre).is_ok());
        assert!(allows(Need::Read, Role::Operator).is_ok());
        assert!(allows(Need::Read, Role::Admin).is_ok());
        let refused = allows(Need::Read, Role::Agent).unwrap_err();
        assert_eq!(
            refused,
            "role agent may not use the console (it shows every region); allowed: operator, sre, admin"
        );
        assert!(allows(Need::WhatIf, Role::Operator).is_ok());
        assert!(allows(Need::WhatIf, Role::Admin).is_ok());
        assert_eq!(
            allows(Need::WhatIf, Role::Sre).unwrap_err(),
            "role sre may not run the what-if; allowed: operator, admin"
        );
        assert!(allows(Need::WhatIf, Role::Agent).is_err());
    }

    #[test]
    fn only_login_logout_and_static_files_are_open() {
        for open in [
            "/login",
            "/logout",
            "/console.css",
            "/console.js",
            "/favicon.ico",
        ] {
            assert_eq!(need(&Method::GET, open), Need::Open, "{open}");
        }
        assert_eq!(need(&Method::POST, "/login"), Need::Open);
        for read in [
            "/",
            "/now",
            "/handoffs",
            "/rules",
            "/journey/x",
            "/api/now",
            "/api/now/events",
            "/api/rules",
            "/nope",
        ] {
            assert_eq!(need(&Method::GET, read), Need::Read, "{read}");
        }
        assert_eq!(need(&Method::POST, "/api/rules/what-if"), Need::WhatIf);
        assert_eq!(need(&Method::GET, "/api/rules/what-if"), Need::Read);
        assert!(is_api("/api/now/events") && !is_api("/journey/api/"));
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(matches!(token(&headers), Err(AuthError::Missing)));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; meridian_console=abc.def.ghi; other=1"),
        );
        assert_eq!(token(&headers).unwrap(), "abc.def.ghi");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x.y.z"),
        );
        assert_eq!(token(&headers).unwrap(), "x.y.z", "the header wins");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert!(matches!(token(&headers), Err(AuthError::Malformed(_))));

        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("meridian_console=t"),
        );
        assert_eq!(
            cookie(&headers, COOKIE),
            Some("t"),
            "a second cookie header counts too"
        );
        assert_eq!(cookie(&headers, "meridian"), None, "names match exactly");
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("meridian_console="),
        );
        assert!(
            matches!(token(&headers), Err(AuthError::Missing)),
            "an emptied cookie is no token"
        );
    }

    #[test]
    fn the_cookie_is_http_only_same_site_strict_and_secure_over_tls() {
        assert_eq!(
            login_cookie("t.o.k", 3600, false),
            "meridian_console=t.o.k; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600"
        );
        assert_eq!(
            login_cookie("t.o.k", 60, true),
            "meridian_console=t.o.k; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
        );
        assert_eq!(
            login_cookie("t", -5, false),
            "meridian_console=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
        assert_eq!(
            logout_cookie(true),
            "meridian_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        );
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        assert!(
            origin_allows(None, Some("127.0.0.1:7120"), true).is_ok(),
            "no Origin: not a browser"
        );
        assert!(
            origin_allows(Some("https://127.0.0.1:7120"), Some("127.0.0.1:7120"), true).is_ok()
        );
        assert!(
            origin_allows(Some("http://localhost:7120"), Some("localhost:7120"), false).is_ok()
        );
        assert!(
            origin_allows(
                Some("HTTPS://Console.Example"),
                Some("console.example"),
                true
            )
            .is_ok()
        );
        let refused =
            origin_allows(Some("https://evil.example"), Some("127.0.0.1:7120"), true).unwrap_err();
        assert!(
            refused
                .contains("\"https://evil.example\" is not this console (https://127.0.0.1:7120)"),
            "{refused}"
        );
        assert!(
            origin_allows(Some("http://127.0.0.1:7120"), Some("127.0.0.1:7120"), true).is_err(),
            "scheme differs"
        );
        assert!(
            origin_allows(Some("https://127.0.0.1:7121"), Some("127.0.0.1:7120"), true).is_err(),
            "port differs"
        );
        assert!(origin_allows(Some("null"), Some("127.0.0.1:7120"), true).is_err());
        assert!(origin_allows(Some("https://127.0.0.1:7120"), None, true).is_err());
    }

    #[test]
    fn a_login_sends_the_browser_only_to_a_plain_local_path() {
        assert_eq!(safe_next("/handoffs"), Some("/handoffs"));
        assert_eq!(
            safe_next("/journey/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            Some("/journey/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        );
        for refused in [
            "",
            "//evil.example/",
            "https://evil.example/",
            "/login",
            "/logout",
            "/a?b=c",
            "/a\\b",
            "evil",
            "/%2F",
        ] {
            assert_eq!(safe_next(refused), None, "{refused}");
        }
    }

    #[test]
    fn form_fields_are_percent_decoded() {
        let body = "token=a.b-c_d&next=%2Fjourney%2Fx+y";
        assert_eq!(form_value(body, "token").as_deref(), Some("a.b-c_d"));
        assert_eq!(form_value(body, "next").as_deref(), Some("/journey/x y"));
        assert_eq!(form_value(body, "missing"), None);
        assert_eq!(
            form_value("token=%zz", "token"),
            None,
            "bad escapes are refused"
        );
        assert_eq!(
            form_value("token=%2", "token").as_deref(),
            Some("%2"),
            "a cut escape stays as it is"
        );
    }

    #[test]
    fn the_expiry_is_read_from_the_payload() {
        let key = meridian_auth::SigningKey::generate("k1").unwrap();
        let claims = meridian_auth::Claims::new("ana", Role::Sre, None, 1_000, 600);
        assert_eq!(expiry(&key.mint(&claims)), Some(1_600));
        assert_eq!(expiry("not-a-token"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
