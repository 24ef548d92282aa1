//! What one client may hold of the console: a real router with `[auth]`
//! and `[tls]` (`run_with_console`), its console asked over real HTTPS on
//! loopback. Slow clients come from several loopback addresses
//! (127.0.0.x), since connections are capped per client address.
//!
//! - 200 slow clients (idle TCP, request heads sent a byte a second, and
//!   `POST /login` bodies sent a byte every two seconds) do not keep a
//!   logged-in user out, and each is cut off by its timeout;
//! - connections past the per-address cap are closed at once, and another
//!   address is still served;
//! - one principal's live stream past its cap gets 429 with the reason,
//!   while another user's stream is served, and a closed stream frees its
//!   slot;
//! - every answer carries the security headers (HSTS only over TLS).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod console_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use console_support::{Answer, Console, Slow, slow_client};
use http_body_util::BodyExt;
use meridian_auth::Role;
use meridian_router::STREAMS_PER_PRINCIPAL_MAX;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The console's per-address cap (docs/console.md).
const PER_ADDRESS_MAX: usize = 32;
/// How long any slow client may live before the test calls it not cut off:
/// the longest timeout (a whole body, 10 s after its head) with room for a
/// loaded machine. Unchecked, they would live for half an hour.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_user_is_served_while_200_slow_clients_hold_connections() {
    let console = Arc::new(Console::start(true).await);
    let sre = console.token("sre-tester", Role::Sre);
    let bearer = format!("Bearer {sre}");
    let cookie = format!("meridian_console={sre}");

    // 200 slow clients from 127.0.0.2 ..= 127.0.0.9: 25 per address, under
    // the per-address cap, so each is admitted and held until its timeout.
    // The longest-lived kind (slow bodies) opens first, idle TCP last.
    let holding = Arc::new(AtomicUsize::new(0));
    let mut slow = tokio::task::JoinSet::new();
    let kinds = [(Slow::LoginBody, 70), (Slow::Head, 65), (Slow::IdleTcp, 65)];
    let mut n = 0u8;
    for (kind, count) in kinds {
        for _ in 0..count {
            let from = Ipv4Addr::new(127, 0, 0, 2 + n % 8);
            n = n.wrapping_add(1);
            slow.spawn(slow_client(
                console.clone(),
                kind,
                from,
                holding.clone(),
                CUT_OFF_WITHIN,
            ));
        }
    }

    // Once all 200 hold their connections, the logged-in user asks a page
    // and an API again and again until the last slow client is cut off;
    // each answer comes within a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while holding.load(Ordering::SeqCst) < 200 {
        assert!(
            Instant::now() < deadline,
            "only {} slow clients got a connection",
            holding.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served_beside_all = 0;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while holding.load(Ordering::SeqCst) > 0 {
        let held_before = holding.load(Ordering::SeqCst);
        for (path, credential) in [
            ("/", ("cookie", cookie.as_str())),
            ("/api/session", ("authorization", bearer.as_str())),
        ] {
            let asked = Instant::now();
            let answer = console
                .get(path, &[credential])
                .await
                .expect("the console answers");
            let took = asked.elapsed();
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            assert!(
                took < Duration::from_secs(1),
                "{path} took {took:?} beside {held_before} slow clients"
            );
            slowest = slowest.max(took);
        }
        if held_before == 200 && holding.load(Ordering::SeqCst) == 200 {
            served_beside_all += 1;
        }
        assert!(
            started.elapsed() < CUT_OFF_WITHIN + Duration::from_secs(5),
            "the slow clients outlived their timeouts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served_beside_all > 0,
        "the user was never asked while all 200 slow clients held connections"
    );
    eprintln!(
        "served the user {served_beside_all} times beside 200 held slow clients; slowest request {slowest:?}"
    );

    // Each slow client was cut off by its timeout, well before it would
    // have finished (a 1,000-byte form at a byte every 2 s takes 33 min).
    let mut longest = std::collections::BTreeMap::new();
    while let Some(cut) = slow.join_next().await {
        let cut = cut
            .unwrap()
            .expect("every slow client is cut off by its timeout");
        let longest = longest
            .entry(format!("{:?}", cut.kind))
            .or_insert(Duration::ZERO);
        *longest = (*longest).max(cut.held);
        if cut.kind == Slow::LoginBody {
            assert!(
                cut.answer.starts_with("HTTP/1.1 408"),
                "a slow login form is answered 408: {}",
                cut.answer
            );
            assert!(
                cut.answer.contains("did not arrive within 10 s"),
                "{}",
                cut.answer
            );
        }
        if cut.kind == Slow::LoginBody {
            assert!(
                cut.held >= Duration::from_secs(4),
                "a slow body is cut by its timeout, not at once: {:?}",
                cut.held
            );
        }
    }
    eprintln!("slow clients held their connections at most: {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_closed_at_once() {
    let console = Console::start(true).await;
    let from = Ipv4Addr::new(127, 0, 0, 20);
    // Idle connections (no TLS hello) from one address: the cap's worth are
    // held; the console closes the rest before reading anything.
    let mut held = Vec::new();
    for _ in 0..PER_ADDRESS_MAX {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
        held.push(
            socket
                .connect(SocketAddr::from(([127, 0, 0, 1], console.port)))
                .await
                .unwrap(),
        );
    }
    // The accept loop takes them in order; give it a moment to count them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..4 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
        let mut extra = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], console.port)))
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a connection past the cap of {PER_ADDRESS_MAX} from {from} is closed at once: {read:?}"
        );
    }
    // The held ones are still open, and other addresses are served.
    let mut byte = [0u8; 1];
    let still_open =
        tokio::time::timeout(Duration::from_millis(200), held[0].read(&mut byte)).await;
    assert!(
        still_open.is_err(),
        "a connection under the cap is held until its timeout: {still_open:?}"
    );
    let sre = console.token("sre-tester", Role::Sre);
    let answer = console
        .get(
            "/api/session",
            &[("authorization", &format!("Bearer {sre}"))],
        )
        .await;
    assert_eq!(
        answer.map(|a| a.status),
        Some(200),
        "127.0.0.1 is served beside the capped address"
    );
    let mut second = console
        .connect_from(Ipv4Addr::new(127, 0, 0, 21))
        .await
        .unwrap();
    second
        .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    second.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_holds_at_most_its_cap_of_live_streams() {
    let console = Console::start(true).await;
    let sre = console.token("sre-tester", Role::Sre);
    let mut streams = Vec::new();
    for n in 0..STREAMS_PER_PRINCIPAL_MAX {
        let path = if n % 2 == 0 {
            "/api/now/events"
        } else {
            "/api/handoffs/events"
        };
        let (status, body, stream) = console.stream(path, &sre).await;
        assert_eq!(status, 200, "stream {n}: {body}");
        streams.push(stream.unwrap());
    }
    for path in ["/api/now/events", "/api/handoffs/events"] {
        let (status, body, _) = console.stream(path, &sre).await;
        assert_eq!(status, 429, "{path}: {body}");
        assert!(
            body.contains(&format!(
                "sre-tester already has {STREAMS_PER_PRINCIPAL_MAX} live streams open"
            )),
            "{body}"
        );
    }
    // Pages and APIs other than streams are still the sre's.
    let answer = console
        .get("/api/now", &[("authorization", &format!("Bearer {sre}"))])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Another user is not locked out.
    let operator = console.token("operator-tester", Role::Operator);
    let (status, body, stream) = console.stream("/api/now/events", &operator).await;
    assert_eq!(status, 200, "{body}");
    let mut stream = stream.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.into_data().unwrap().starts_with(b"data: "),
        "the other user's stream sends the Now state"
    );

    // A stream that ends gives its slot back (the Now stream notices a
    // closed connection at its next tick, every second).
    drop(streams.swap_remove(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, stream) = console.stream("/api/now/events", &sre).await;
        if status == 200 {
            streams.push(stream.unwrap());
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            Instant::now() < deadline,
            "a closed stream did not free its slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn assert_security_headers(what: &str, answer: &Answer, tls: bool) {
    let csp = header(answer, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.split("; ").any(|d| d == directive),
            "{what}: {directive} in {csp:?}"
        );
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        header(answer, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(answer, "x-frame-options"), "DENY", "{what}");
    // Not `no-referrer`: a browser would post the login form with
    // `Origin: null`, which the CSRF check refuses.
    assert_eq!(header(answer, "referrer-policy"), "same-origin", "{what}");
    let hsts = header(answer, "strict-transport-security");
    if tls {
        assert_eq!(hsts, "max-age=31536000", "{what}");
    } else {
        assert_eq!(hsts, "", "{what}: no HSTS over plain HTTP");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let console = Console::start(true).await;
    let sre = console.token("sre-tester", Role::Sre);
    let bearer = format!("Bearer {sre}");
    let cookie = format!("meridian_console={sre}");
    // What, path, request headers, expected status.
    type Ask<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let asks: [Ask; 8] = [
        ("login page", "/login", vec![], 200),
        ("page", "/handoffs", vec![("cookie", &cookie)], 200),
        ("page without a login", "/rules", vec![], 303),
        ("script", "/console.js", vec![], 200),
        ("API", "/api/now", vec![("authorization", &bearer)], 200),
        ("API without a token", "/api/now", vec![], 401),
        (
            "journey API",
            "/api/journey/not-a-ticket",
            vec![("authorization", &bearer)],
            400,
        ),
        (
            "unknown path",
            "/nope",
            vec![("authorization", &bearer)],
            404,
        ),
    ];
    for (what, path, headers, status) in asks {
        let answer = console.get(path, &headers).await.unwrap();
        assert_eq!(answer.status, status, "{what} {path}: {}", answer.body);
        assert_security_headers(what, &answer, true);
    }

    // Local-only over plain HTTP: the same headers, and no HSTS.
    let local = Console::start(false).await;
    for path in ["/", "/api/rules", "/console.css"] {
        let answer = local.get(path, &[]).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_security_headers(path, &answer, false);
    }
}
