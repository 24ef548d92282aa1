//! The web console in a real headless Chromium against `meridian up` with
//! its default authentication: tokens, and TLS on every public port and the
//! console.
//!
//! The test drives Debian's `chromium` through `chromedriver` with W3C
//! WebDriver (the `fantoccini` client): it
//! logs in with the one-click URL `meridian up` prints (as the sre), checks
//! that the token stays out of the page's reach, then loads each page, checks that what the pages show matches the gRPC API
//! (active regions, queue depths), that a handoff made through the API
//! appears on the Handoffs page without a reload, that the what-if names a
//! bad file's line and column, and that no page overflows a 390 px phone
//! screen (the login page included). The what-if is an operator's: the sre's page disables it, so the
//! test logs out and logs in again by typing the operator's token. Screenshots of each page (desktop and phone) are saved under
//! `target/console-screenshots/`.
//!
//! Without `chromium` or `chromedriver` the test says so loudly and passes;
//! with `MERIDIAN_REQUIRE_ALL=1` it fails instead. `MERIDIAN_CHROMIUM` and
//! `MERIDIAN_CHROMEDRIVER` name other binaries.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use meridian_auth::BearerToken;
use meridian_proto::v1::{
    self, router_service_client::RouterServiceClient, ticket_service_client::TicketServiceClient,
};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use support::{Killed, MERIDIAN, start_up};

mod support;
const PATIENCE: Duration = Duration::from_secs(20);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);
/// The mesh's clock starts on a Monday at 13:30 UTC: us-east (08:30 in New
/// York) and eu-west (13:30 in Dublin) are on shift, apac-south (21:30 in
/// Singapore) is off until 23:00 UTC. At [`SPEED`] the test has six real
/// minutes before eu-west's overlap window, and who is on shift does not
/// depend on the hour the test runs at.
const START: &str = "2026-12-07T13:30:00Z";
/// An enterprise ticket's first response (30 minutes, 24x7) is at risk
/// after 24 minutes: 48 seconds at this speed.
const SPEED: &str = "30";
/// apac-south's next shift from [`START`]: 07:00 in Singapore.
const APAC_NEXT_SHIFT: &str = "2026-12-07T23:00:00Z";

fn require_all() -> bool {
    std::env::var("MERIDIAN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

fn find(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(var) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

struct Mesh {
    _process: Killed,
    router: String,
    console: String,
    /// The printed one-click login (the sre's token in the fragment).
    console_login: String,
    gateways: Vec<(String, String)>,
    /// The printed development tokens by name (`operator`, `sre`, …).
    tokens: BTreeMap<String, String>,
    /// The development CA's certificate (PEM).
    ca: Vec<u8>,
}

fn up(data_dir: &Path) -> Mesh {
    let (process, banner) = start_up(
        Command::new(MERIDIAN)
            .args(["up", "--base-port", "0", "--start", START, "--speed", SPEED])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--tracing-ui", "http://localhost:16686/trace/{trace_id}"]),
    );
    let (mut router, mut console, mut console_login, mut gateways) =
        (String::new(), String::new(), String::new(), Vec::new());
    let mut tokens = BTreeMap::new();
    for line in &banner {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["gateway", region, url, ..] if url.starts_with("https://") => {
                gateways.push((region.to_owned(), url.to_owned()))
            }
            ["router", url, ..] if url.starts_with("https://") => router = url.to_owned(),
            ["console", url, ..] if url.starts_with("https://") => {
                console = url.trim_end_matches('/').to_owned()
            }
            [url] if url.contains("/login#token=") => console_login = url.to_owned(),
            [name, token] if token.starts_with("ey") && token.matches('.').count() == 2 => {
                tokens.insert(name.to_owned(), token.to_owned());
            }
            _ => {}
        }
    }
    assert!(
        console.starts_with("https://127.0.0.1:"),
        "meridian up prints the console's URL, https with auth"
    );
    assert_eq!(
        console_login,
        format!("{console}/login#token={}", tokens["sre"]),
        "the one-click login is the sre's"
    );
    assert_eq!(gateways.len(), 3);
    let ca = std::fs::read(data_dir.join("pki").join("ca.pem")).unwrap();
    Mesh {
        _process: process,
        router,
        console,
        console_login,
        gateways,
        tokens,
        ca,
    }
}

/// A W3C WebDriver session in chromedriver, driven by `fantoccini`.
struct Browser {
    client: fantoccini::Client,
    _driver: Killed,
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Killed(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // The console serves HTTPS with the mesh's development CA, which
        // this throwaway browser profile does not trust. Chromium has no flag
        // to add a CA; `--ignore-certificate-errors` is acceptable for a test
        // browser that only ever opens this console (TLS itself is checked by
        // the router's console_auth test, against the CA).
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage",
                         "--disable-gpu", "--ignore-certificate-errors", format!("--window-size={},{}", DESKTOP.0, DESKTOP.1)],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        // chromedriver drives no TLS: a plain HTTP connector is enough.
        let mut builder = fantoccini::ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        // Until chromedriver listens, a new session fails to connect.
        let client = loop {
            match builder.connect(&root).await {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver did not start a session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            _driver: driver,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn script(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// `fetch` from the page (with its cookie): the status and the body.
    async fn fetch(&self, method: &str, path: &str, body: Option<String>) -> (u64, String) {
        let script = format!(
            "return fetch({}, {{ method: {}, body: {}, headers: {{ 'content-type': 'text/plain' }} }})
                 .then(r => r.text().then(t => [r.status, t]));",
            json!(path),
            json!(method),
            body.map_or(Value::Null, Value::String)
        );
        let answer = self.script(&script).await;
        (
            answer[0].as_u64().unwrap(),
            answer[1].as_str().unwrap().to_owned(),
        )
    }

    async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    async fn size(&self, (width, height): (u32, u32)) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Polls `script` until it returns something other than null or false.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        self.wait_longer(what, script, PATIENCE).await
    }

    async fn wait_longer(&self, what: &str, script: &str, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let value = self.script(script).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready(&self) {
        self.wait_for(
            "the page to render",
            "return document.body.dataset.ready === 'true';",
        )
        .await;
    }

    async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// At phone width: no horizontal overflow, then a screenshot.
    async fn phone_check(&self, dir: &Path, name: &str) -> PathBuf {
        self.size(PHONE).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let widths = self
            .script("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await;
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            scroll <= inner,
            "{name}: the page is {scroll} px wide in a {inner} px window (horizontal overflow)"
        );
        let path = self.screenshot(dir, &format!("{name}-phone")).await;
        self.size(DESKTOP).await;
        path
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Authed = InterceptedService<Channel, BearerToken>;

/// A TLS channel to `url`, checked against the mesh's CA.
async fn channel(mesh: &Mesh, url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&mesh.ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The test's own gRPC calls are an admin's: it creates, hands off and
/// reads status across regions.
fn admin(mesh: &Mesh) -> BearerToken {
    BearerToken::new(Some(&mesh.tokens["admin"])).unwrap()
}

async fn gateway(mesh: &Mesh, url: &str) -> TicketServiceClient<Authed> {
    TicketServiceClient::with_interceptor(channel(mesh, url).await, admin(mesh))
}

/// Open tickets and tickets at SLA risk per region, as GetStatus reports
/// them (what the Now page shows).
async fn queues(mesh: &Mesh) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (region, url) in &mesh.gateways {
        let status = gateway(mesh, url)
            .await
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let open = status
            .queue_by_status
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "solved" | "closed"))
            .map(|(_, n)| n)
            .sum();
        out.insert(region.clone(), (open, status.sla_at_risk));
    }
    out
}

async fn active_regions(mesh: &Mesh) -> (String, BTreeSet<String>) {
    let mut router =
        RouterServiceClient::with_interceptor(channel(mesh, &mesh.router).await, admin(mesh));
    let answer = router
        .active_regions(v1::ActiveRegionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let on_shift = answer
        .regions
        .iter()
        .filter(|r| r.position() == v1::ShiftPosition::OnShift)
        .map(|r| r.region.clone())
        .collect();
    (answer.rules_version, on_shift)
}

fn create(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "the invoice total is wrong".into(),
        customer: "acme".into(),
        tier: "standard".into(),
        ..Default::default()
    }
}

fn short(id: &str) -> String {
    id.parse::<meridian_core::TicketId>().unwrap().short()
}

/// The Now page's lists: tickets held by off-shift apac-south (pinned there
/// by residency, so no sweep moves them), tickets at SLA risk, and when
/// apac-south's next shift starts.
async fn now_lists(mesh: &Mesh, browser: &Browser) {
    let url = |region: &str| {
        mesh.gateways
            .iter()
            .find(|(r, _)| r == region)
            .unwrap()
            .1
            .clone()
    };
    let mut apac = gateway(mesh, &url("apac-south")).await;
    let mut east = gateway(mesh, &url("us-east")).await;
    let mut held = Vec::new();
    for (subject, tier) in [("held printer", "standard"), ("held outage", "enterprise")] {
        let request = v1::CreateTicketRequest {
            tier: tier.into(),
            residency: vec!["apac-south".into()],
            ..create(subject)
        };
        let ticket = apac.create_ticket(request).await.unwrap().into_inner();
        held.push(ticket.ticket.unwrap().id);
    }
    let request = v1::CreateTicketRequest {
        tier: "enterprise".into(),
        ..create("east outage")
    };
    let east_risky = east
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
        .id;

    // Held: apac-south's open tickets, oldest first, each with its short id
    // (the random tail, as the CLI prints it) linking to its journey.
    let shown = browser
        .wait_for(
            "the held list",
            &format!(
                "const items = [...document.querySelectorAll('[data-tickets=held] li[data-ticket]')];
                 const ids = items.map(li => li.dataset.ticket);
                 return ids.length === {n} ? items.map(li => [li.dataset.ticket, li.dataset.short,
                     li.querySelector('a').getAttribute('href'), li.querySelector('a').textContent, li.textContent]) : null;",
                n = held.len()
            ),
        )
        .await;
    let rows = shown.as_array().unwrap();
    for (row, id) in rows.iter().zip(&held) {
        assert_eq!(row[0], json!(id), "oldest first: {shown}");
        assert_eq!(row[1], json!(short(id)));
        assert_eq!(row[3], json!(short(id)), "the link text is the short id");
        assert_eq!(row[2], json!(format!("/journey/{id}")));
        let text = row[4].as_str().unwrap();
        assert!(
            text.contains("held ") && text.contains("apac-south"),
            "subject and owner: {text}"
        );
    }
    // The enterprise ticket's first response runs on a 24x7 calendar.
    let text = rows[1][4].as_str().unwrap();
    assert!(
        text.contains("first response due 2026-12-07"),
        "its due time: {text}"
    );
    let queue = queues(mesh).await;
    let total = browser
        .script("return document.querySelector('[data-total=held]').dataset.count;")
        .await;
    assert_eq!(
        total,
        json!(queue["apac-south"].0.to_string()),
        "the held count is apac-south's open queue"
    );
    // The short ids tell tickets created in one burst apart.
    assert_ne!(short(&held[0]), short(&held[1]));

    // apac-south is off shift: it says when its next shift starts.
    let next = browser
        .script("const n = document.querySelector('[data-next-shift=\"apac-south\"]'); return n && [n.dataset.at, n.textContent];")
        .await;
    assert_eq!(next[0], json!(APAC_NEXT_SHIFT), "{next}");
    assert!(
        next[1].as_str().unwrap().contains("next shift starts"),
        "{next}"
    );
    let on_shift = browser
        .script("return document.querySelector('[data-next-shift=\"us-east\"]');")
        .await;
    assert_eq!(
        on_shift,
        Value::Null,
        "an on-shift region shows no next shift"
    );

    // At risk: the two enterprise tickets once 24 of their 30 minutes have
    // passed on the mesh's clock, the soonest due first.
    let risky = browser
        .wait_longer(
            "the enterprise tickets to be listed at SLA risk",
            &format!(
                "const items = [...document.querySelectorAll('[data-tickets=at-risk] li[data-ticket]')];
                 const ids = items.map(li => li.dataset.ticket);
                 return ids.includes({a}) && ids.includes({b}) ? items.map(li => [li.dataset.ticket, li.querySelector('[data-due]').dataset.due]) : null;",
                a = json!(held[1]),
                b = json!(east_risky)
            ),
            Duration::from_secs(120),
        )
        .await;
    let dues: Vec<&str> = risky
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap())
        .collect();
    let mut sorted = dues.clone();
    sorted.sort_by_key(|d| d.parse::<jiff::Timestamp>().unwrap());
    assert_eq!(dues, sorted, "soonest due first: {risky}");
    assert!(
        !risky
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == json!(held[0])),
        "a standard ticket with hours to go is not at risk: {risky}"
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let api: u64 = queues(mesh).await.values().map(|(_, risk)| risk).sum();
        let shown = browser
            .script("return document.querySelector('[data-total=\"at-risk\"]').dataset.count;")
            .await;
        if shown == json!(api.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the at-risk count {shown} is every gateway's sla_at_risk, {api}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The coverage grid's day and hour labels, readable on a phone: every day
/// named over its own 24 hours, none overlapping another, none smaller
/// than 10 px.
async fn grid_labels(browser: &Browser) {
    browser.size(PHONE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let labels = browser
        .script(
            "const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.right, r.width,
                 parseFloat(getComputedStyle(e).fontSize), e.innerText, getComputedStyle(e).visibility, e.scrollWidth <= e.clientWidth + 1]; };
             return { days: [...document.querySelectorAll('#grid .day-label')].map(box),
                      hours: [...document.querySelectorAll('#grid .hour-label')].map(box),
                      cells: document.querySelector('#grid .cells').getBoundingClientRect().width,
                      window: window.innerWidth };",
        )
        .await;
    browser.size(DESKTOP).await;
    let days = labels["days"].as_array().unwrap();
    assert_eq!(days.len(), 7, "a label per day: {labels}");
    assert_eq!(
        days[0][4],
        json!("Mon 7"),
        "the grid starts on the mesh's day; the month goes on a phone"
    );
    let visible = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .filter(|l| l[5] == json!("visible"))
            .cloned()
            .collect()
    };
    let hours = visible(labels["hours"].as_array().unwrap());
    assert_eq!(
        hours.len(),
        14,
        "00 and 12 of each day on a phone: {labels}"
    );
    for set in [days.clone(), hours] {
        for pair in set.windows(2) {
            assert!(
                pair[0][1].as_f64().unwrap() <= pair[1][0].as_f64().unwrap() + 0.5,
                "labels overlap: {pair:?}"
            );
        }
        for label in &set {
            assert!(
                label[3].as_f64().unwrap() >= 10.0,
                "a label of at least 10 px: {label}"
            );
            assert_eq!(
                label[6],
                json!(true),
                "a label's text fits its box: {label}"
            );
            assert!(
                label[1].as_f64().unwrap() <= labels["window"].as_f64().unwrap(),
                "on screen: {label}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_mesh_live_in_a_real_browser() {
    let chromium = find(
        "MERIDIAN_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let chromedriver = find("MERIDIAN_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        eprintln!(
            "\n**********\nSKIPPED the console browser test: chromium or chromedriver is not installed \
                   (apt-get install chromium chromium-driver, or set MERIDIAN_CHROMIUM / MERIDIAN_CHROMEDRIVER)\n**********\n"
        );
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but chromium or chromedriver is not installed"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let shots = screenshots_dir();
    let mut saved = Vec::new();

    // Something in the queues first, so the depths compared are not all 0.
    let (east_region, east_url) = mesh.gateways[0].clone();
    let mut east = gateway(&mesh, &east_url).await;
    for i in 0..3 {
        east.create_ticket(create(&format!("queued {i}")))
            .await
            .unwrap();
    }

    let browser = Browser::start(&chromium, &chromedriver).await;

    // ---- Login: not logged in, a page sends the browser to log in ----
    browser.goto(&format!("{}/handoffs", mesh.console)).await;
    browser.wait_for("the login page", "return document.body.dataset.page === 'login' && document.body.dataset.ready === 'true';").await;
    assert_eq!(
        browser.url().await,
        format!("{}/login?next=/handoffs", mesh.console)
    );
    let (status, _) = browser.fetch("GET", "/api/now", None).await;
    assert_eq!(status, 401, "no cookie yet");
    saved.push(browser.screenshot(&shots, "login-desktop").await);
    saved.push(browser.phone_check(&shots, "login").await);
    // The one-click URL that `meridian up` prints: the page posts the token
    // from the fragment and the console sends the browser home.
    browser.goto(&mesh.console_login).await;
    browser
        .wait_for(
            "the login to land on Now",
            "return document.body.dataset.page === 'now';",
        )
        .await;
    assert_eq!(
        browser.url().await,
        format!("{}/", mesh.console),
        "no token left in the address bar"
    );
    let back = browser.script("return history.length;").await;
    eprintln!("after the one-click login: history length {back}");
    let cookie = browser.script("return document.cookie;").await;
    assert!(
        !cookie.as_str().unwrap().contains(&mesh.tokens["sre"]),
        "the login cookie is HttpOnly: {cookie}"
    );
    browser
        .wait_for(
            "the session badge",
            "const s = document.querySelector('#session [data-role]'); return s && s.textContent;",
        )
        .await;
    let who = browser
        .script("return document.querySelector('#session [data-role]').textContent;")
        .await;
    assert_eq!(
        who,
        json!("dev-sre (sre)"),
        "the header names who is logged in"
    );

    // ---- Now: the active regions and queue depths match the API ----
    browser.goto(&format!("{}/", mesh.console)).await;
    browser.ready().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let shown = browser
            .script(
                "return { active: [...document.querySelectorAll('[data-region][data-active=true]')].map(e => e.dataset.region).sort(),
                          queues: Object.fromEntries([...document.querySelectorAll('[data-queue]')].map(e => [e.dataset.queue,
                              [Number(e.textContent), Number(document.querySelector(`[data-sla-risk='${e.dataset.queue}']`).textContent)]])),
                          version: document.getElementById('rules-version').textContent };",
            )
            .await;
        let (version, active) = active_regions(&mesh).await;
        let queues = queues(&mesh).await;
        let shown_active: BTreeSet<String> = shown["active"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let shown_queues: BTreeMap<String, (u64, u64)> = shown["queues"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (
                        v[0].as_u64().unwrap_or(u64::MAX),
                        v[1].as_u64().unwrap_or(u64::MAX),
                    ),
                )
            })
            .collect();
        if shown_active == active && shown_queues == queues && shown["version"] == json!(version) {
            assert_eq!(
                queues[&east_region].0, 3,
                "three tickets queued at {east_region}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Now page shows active {shown_active:?}, queues {shown_queues:?}, rules {}; the API says {active:?}, {queues:?}, {version}",
            shown["version"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Live: a new ticket shows up in the queue without a reload.
    browser
        .script("window.__sameDocument = 'now'; return null;")
        .await;
    east.create_ticket(create("one more")).await.unwrap();
    browser
        .wait_for(
            "the Now page to show the fourth ticket live",
            &format!("return window.__sameDocument === 'now' && document.querySelector('[data-queue=\"{east_region}\"]').textContent === '4';"),
        )
        .await;
    // Staffing, from the region's load report: the development roster's
    // three agents work every shift, nobody set a presence yet, and the
    // four tickets wait unassigned for the queue owner.
    browser
        .wait_for(
            "the Now page to show the active region's staffing",
            &format!(
                "return document.querySelector('[data-agents-on-shift=\"{east_region}\"]')?.textContent === '3'
                     && document.querySelector('[data-agents-available=\"{east_region}\"]').textContent === '0'
                     && document.querySelector('[data-unassigned=\"{east_region}\"]').textContent === '4';"
            ),
        )
        .await;
    now_lists(&mesh, &browser).await;
    saved.push(browser.screenshot(&shots, "now-desktop").await);
    saved.push(browser.phone_check(&shots, "now").await);

    // ---- Handoffs: one made through the API appears live ----
    browser.goto(&format!("{}/handoffs", mesh.console)).await;
    browser.ready().await;
    browser
        .script("window.__sameDocument = 'handoffs'; return null;")
        .await;
    let ticket = east
        .create_ticket(create("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    east.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let to = mesh.gateways[1].0.clone();
    let handoff = east
        .handoff(v1::HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_region: to.clone(),
            note: Some(v1::HandoffNote {
                current_status: v1::Status::Open.into(),
                last_action: "rebooted the edge router".into(),
                next_action: "confirm with the customer".into(),
                text: "customer prefers email".into(),
                ..Default::default()
            }),
        })
        .await;
    // Refused or accepted, the offer is in the owner's log either way.
    let expected = match &handoff {
        Ok(_) => "handoff_accepted",
        Err(status) => {
            eprintln!("the handoff to {to} was refused: {}", status.message());
            "handoff_refused"
        }
    };
    let shown = browser
        .wait_for(
            "the handoff to appear on the Handoffs page",
            &format!(
                "const kinds = [...document.querySelectorAll('li[data-ticket=\"{id}\"]')].map(e => e.dataset.kind);
                 return window.__sameDocument === 'handoffs' && kinds.includes('handoff_offered') && kinds.includes('{expected}') ? kinds : null;",
                id = ticket.id
            ),
        )
        .await;
    eprintln!("handoffs page shows {shown} for {}", ticket.id);
    let links = browser
        .script(&format!(
            "return [...document.querySelectorAll('li[data-ticket=\"{}\"][data-kind=handoff_offered] a')].map(a => a.getAttribute('href'));",
            ticket.id
        ))
        .await;
    let offered = browser
        .script(&format!("return document.querySelector('li[data-ticket=\"{}\"][data-kind=handoff_offered]').textContent;", ticket.id))
        .await;
    let offered = offered.as_str().unwrap();
    assert!(
        offered.contains(&format!("{east_region} → {to}"))
            && offered.contains("rebooted the edge router")
            && !offered.contains("undefined"),
        "the offer shows its regions and note: {offered}"
    );
    let trace_id = ticket.id.replace('-', "");
    assert_eq!(
        links,
        json!([
            format!("/journey/{}", ticket.id),
            format!("http://localhost:16686/trace/{trace_id}")
        ]),
        "each ticket links to its journey and its trace (the id's 128 bits)"
    );
    saved.push(browser.screenshot(&shots, "handoffs-desktop").await);
    saved.push(browser.phone_check(&shots, "handoffs").await);

    // ---- The ticket's journey ----
    browser
        .goto(&format!("{}/journey/{}", mesh.console, ticket.id))
        .await;
    browser.ready().await;
    let kinds = browser
        .script("return [...document.querySelectorAll('#steps li')].map(e => e.dataset.kind);")
        .await;
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        kinds.starts_with(&["ticket_created"]) && kinds.contains(&"handoff_offered"),
        "journey: {kinds:?}"
    );
    saved.push(browser.screenshot(&shots, "journey-desktop").await);
    saved.push(browser.phone_check(&shots, "journey").await);

    // ---- The what-if is an operator's: log out, log in as one by typing ----
    browser.goto(&format!("{}/rules", mesh.console)).await;
    browser.ready().await;
    browser
        .wait_for(
            "the sre's what-if button to be disabled",
            "return document.getElementById('what-if-run').disabled;",
        )
        .await;
    let (status, answer) = browser
        .fetch("POST", "/api/rules/what-if", Some("version = \"x\"".into()))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("role sre may not run the what-if"),
        "{answer}"
    );
    browser
        .wait_for(
            "the logout button",
            "return document.getElementById('logout') !== null;",
        )
        .await;
    browser
        .script("document.getElementById('logout').click(); return null;")
        .await;
    browser.wait_for("the login page after logout", "return document.body.dataset.page === 'login' && document.body.dataset.ready === 'true';").await;
    let (status, _) = browser.fetch("GET", "/api/now", None).await;
    assert_eq!(status, 401, "logged out");
    browser.goto(&format!("{}/rules", mesh.console)).await;
    browser.wait_for("the login page", "return document.body.dataset.page === 'login' && document.body.dataset.ready === 'true';").await;
    // A refused token says why, and logs nobody in.
    browser
        .script(&format!(
            "document.getElementById('login-token').value = {}; document.getElementById('login-submit').click(); return null;",
            json!(mesh.tokens["agent-us-east"])
        ))
        .await;
    let refusal = browser
        .wait_for(
            "the agent's refusal",
            "const e = document.getElementById('login-error'); return e && e.textContent;",
        )
        .await;
    assert!(
        refusal
            .as_str()
            .unwrap()
            .contains("role agent may not use the console"),
        "{refusal}"
    );
    browser.goto(&format!("{}/rules", mesh.console)).await;
    browser.wait_for("the login page", "return document.body.dataset.page === 'login' && document.body.dataset.ready === 'true';").await;
    browser
        .script(&format!(
            "document.getElementById('login-token').value = {}; document.getElementById('login-submit').click(); return null;",
            json!(mesh.tokens["operator"])
        ))
        .await;
    browser
        .wait_for(
            "the login to land on Rules",
            "return document.body.dataset.page === 'rules';",
        )
        .await;
    browser.ready().await;
    browser
        .wait_for(
            "the operator's session",
            "const s = document.querySelector('#session [data-role=operator]'); return s !== null;",
        )
        .await;
    assert_eq!(
        browser
            .script("return document.getElementById('what-if-run').disabled;")
            .await,
        json!(false)
    );

    // ---- Rules: the grid, and a what-if with a bad then a good file ----
    let (version, _) = active_regions(&mesh).await;
    let shown = browser
        .script("return [document.getElementById('rules-version').textContent, document.querySelectorAll('#grid .row').length];")
        .await;
    assert_eq!(shown[0], json!(version));
    assert!(
        shown[1].as_u64().unwrap() >= 4,
        "a row per region and an `any` row: {shown}"
    );
    let rules_text = std::fs::read_to_string(dir.path().join("rules.toml")).unwrap();
    let bad = format!(
        "{rules_text}\n[[regions]]\nid = \"mars\"\nindex = 9\ntime_zone = \"Mars/Olympus\"\n"
    );
    let set_and_run = |text: &str| {
        format!(
            "document.getElementById('what-if-result').replaceChildren();
             document.getElementById('what-if-text').value = {};
             document.getElementById('what-if-run').click(); return null;",
            serde_json::to_string(text).unwrap()
        )
    };
    browser.script(&set_and_run(&bad)).await;
    let problem = browser
        .wait_for(
            "the what-if to name the bad line",
            "const li = document.querySelector('#what-if-result li[data-line]'); return li ? [Number(li.dataset.line), li.textContent] : null;",
        )
        .await;
    eprintln!("what-if refused the bad file: {problem}");
    assert!(
        problem[1].as_str().unwrap().starts_with("what-if.toml:"),
        "{problem}"
    );
    // us-east's first shift starts two hours earlier.
    let good = rules_text
        .replacen("version = ", "version = \"what-if\"\n# was: ", 1)
        .replacen(
            "start = \"08:00\"\nend = \"17:00\"",
            "start = \"06:00\"\nend = \"17:00\"",
            1,
        );
    assert_ne!(
        good.matches("06:00").count(),
        rules_text.matches("06:00").count(),
        "the what-if file changes a shift"
    );
    browser.script(&set_and_run(&good)).await;
    browser
        .wait_for(
            "the what-if answer",
            "return document.querySelector('[data-what-if=ok]') !== null;",
        )
        .await;
    let changed = browser
        .script("return document.querySelectorAll('#what-if-grid i.changed').length;")
        .await;
    assert!(
        changed.as_u64().unwrap() > 0,
        "the earlier start changes cells of the grid"
    );
    let text = browser
        .script("return document.getElementById('what-if-result').textContent;")
        .await;
    assert!(!text.as_str().unwrap().contains("null"), "{text}");
    grid_labels(&browser).await;
    browser
        .script("document.getElementById('what-if-result').scrollIntoView(); return null;")
        .await;
    saved.push(browser.screenshot(&shots, "rules-desktop").await);
    saved.push(browser.phone_check(&shots, "rules").await);

    // ---- Bad input gets clear errors (asked from the logged-in page) ----
    let (status, answer) = browser
        .fetch(
            "GET",
            "/api/journey/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            None,
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("no gateway knows ticket"), "{answer}");
    let (status, answer) = browser
        .fetch("GET", "/api/journey/not-a-ticket", None)
        .await;
    assert_eq!(status, 400, "{answer}");
    let huge = "#".repeat(meridian_router::WHAT_IF_BYTES_MAX + 1);
    let (status, answer) = browser
        .fetch("POST", "/api/rules/what-if", Some(huge))
        .await;
    assert_eq!(status, 413, "{answer}");

    for path in &saved {
        println!("console screenshot: {}", path.display());
    }
}
