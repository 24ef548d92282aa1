//! What an SRE imports: the alert rules under `deploy/prometheus/` pass
//! `promtool check rules` and their unit tests, and a live `meridian up`,
//! after traffic through the CLI, serves RED series for every method
//! called (with the right status codes, errors included) and every metric
//! the Grafana dashboard and the alert rules name.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// promtool, or `None` after saying loudly why the check is skipped (and
/// failing under `MERIDIAN_REQUIRE_ALL=1`).
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    if found.is_none() {
        let why = "promtool is not installed (Debian package `prometheus`); the alert rules were NOT checked";
        assert!(
            std::env::var("MERIDIAN_REQUIRE_ALL").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("SKIPPED: {why}");
    }
    found
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "meridian-alerts.yaml"],
        ["test", "rules", "meridian-alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool {} failed:\n{text}",
            args.join(" ")
        );
        assert!(
            text.contains("SUCCESS"),
            "promtool {}:\n{text}",
            args.join(" ")
        );
    }
    // The unit tests cover every alert the file defines.
    let rules = std::fs::read_to_string(dir.join("meridian-alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("meridian-alerts.test.yaml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool unit test"
        );
    }
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges, strings and grouping clauses that are not functions
/// or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Keywords, and aggregations (which may stand before `by (…)` rather
    // than their parenthesis).
    const KEYWORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "le",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut skip_group) = (0, false);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => i = skip_string(&chars, i),
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i = if chars[i] == '"' {
                        skip_string(&chars, i)
                    } else {
                        i + 1
                    };
                }
                i += 1;
            }
            '(' if skip_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&word.as_str())
                {
                    skip_group = true;
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (5m, 1h): not a name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the string that starts at `start` (a `"`).
fn skip_string(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

#[test]
fn the_promql_reader_finds_metrics_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, rpc_method) (rate(x_bucket{a="b}"}[5m]))) / on(a) y offset 1h > bool 3 and z"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        ["x_bucket", "y", "z"]
    );
}

/// Every metric the dashboard's queries and variables and the alert rules
/// name, with where it was named.
fn named_metrics() -> Vec<(String, String)> {
    let mut named = Vec::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/meridian.json")).unwrap())
            .unwrap();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    let mut queries = 0;
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            named.extend(
                metric_names(expr)
                    .into_iter()
                    .map(|m| (m, format!("panel {:?}", panel["title"]))),
            );
        }
    }
    assert!(queries >= 15, "the dashboard has {queries} queries");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .unwrap();
            named.extend(
                metric_names(inner)
                    .into_iter()
                    .map(|m| (m, format!("variable {}", variable["name"]))),
            );
        }
    }
    let rules = std::fs::read_to_string(deploy("prometheus/meridian-alerts.yaml")).unwrap();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let mut expr = rest.trim().trim_start_matches('|').to_owned();
        let indent = line.len() - line.trim_start().len();
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        named.extend(
            metric_names(&expr)
                .into_iter()
                .map(|m| (m, "alert rules".to_owned())),
        );
    }
    named
}

/// `meridian up` in a child process, read until its banner says it is up.
struct Mesh {
    child: Child,
    router: String,
    gateways: Vec<(String, String)>,
    metrics: String,
    tokens: Vec<(String, String)>,
    ca: PathBuf,
}

impl Mesh {
    fn up(data_dir: &Path) -> Mesh {
        let mut child = Command::new(MERIDIAN)
            .args(["up", "--base-port", "0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("MERIDIAN_METRICS_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut router, mut metrics, mut gateways, mut tokens) =
            (String::new(), String::new(), Vec::new(), Vec::new());
        let mut first = None;
        for line in &mut lines {
            let line = line.unwrap();
            first.get_or_insert_with(|| line.clone());
            if line.starts_with("Ctrl-C") {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                ["gateway", region, url, ..] => gateways.push((region.to_owned(), url.to_owned())),
                ["router", url, ..] => router = url.to_owned(),
                ["metrics", url, ..] => metrics = url.to_owned(),
                [name, token] if token.starts_with("eyJ") => {
                    tokens.push((name.to_owned(), token.to_owned()))
                }
                _ => {}
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        assert!(
            first
                .unwrap_or_default()
                .starts_with("Meridian is starting"),
            "the banner comes first"
        );
        assert!(
            metrics.starts_with("http://127.0.0.1:") && metrics.ends_with("/metrics"),
            "banner names /metrics: {metrics:?}"
        );
        assert_eq!(gateways.len(), 3, "{gateways:?}");
        Mesh {
            child,
            router,
            gateways,
            metrics,
            tokens,
            ca: data_dir.join("pki/ca.pem"),
        }
    }

    fn cli(&self, token: &str, args: &[&str]) -> Output {
        let token = &self.tokens.iter().find(|(n, _)| n == token).unwrap().1;
        Command::new(MERIDIAN)
            .args(args)
            .env("MERIDIAN_CA", &self.ca)
            .env("MERIDIAN_TOKEN", token)
            .output()
            .unwrap()
    }

    fn url(&self, region: &str) -> &str {
        &self.gateways.iter().find(|(r, _)| r == region).unwrap().1
    }

    /// The body of `GET /metrics`.
    fn scrape(&self) -> String {
        let addr = self
            .metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn succeeded(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `rpc_server_call_duration_seconds_count` samples: (method, code,
/// server, region) → count.
fn red_series(text: &str) -> Vec<(String, String, String, String, f64)> {
    let label = |labels: &str, name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        Some(labels[start..].split('"').next()?.to_owned())
    };
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("rpc_server_call_duration_seconds_count{")?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((
                label(labels, "rpc_method")?,
                label(labels, "rpc_response_status_code")?,
                label(labels, "meridian_server")?,
                label(labels, "meridian_region").unwrap_or_default(),
                value.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn a_live_mesh_exports_red_series_per_method_and_every_metric_the_dashboard_and_alerts_name() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::up(dir.path());
    let us = mesh.url("us-east").to_owned();

    // Traffic: through the router, straight to a gateway, an error of each
    // kind (NOT_FOUND, UNAUTHENTICATED), and a handoff over the mesh.
    let submitted = succeeded(&mesh.cli(
        "agent-us-east",
        &[
            "ticket",
            "submit",
            "--router",
            &mesh.router,
            "--subject",
            "VPN down",
            "--customer",
            "acme",
            "--tier",
            "premium",
            "--output",
            "json",
        ],
    ));
    assert!(submitted["id"].is_string(), "{submitted}");
    let created = succeeded(&mesh.cli(
        "agent-us-east",
        &[
            "ticket",
            "create",
            "--target",
            &us,
            "--subject",
            "Printer",
            "--customer",
            "acme",
            "--output",
            "json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    succeeded(&mesh.cli(
        "agent-us-east",
        &["ticket", "get", &id, "--target", &us, "--output", "json"],
    ));
    let missing = "01890a5d-ac96-774b-bcce-b302099a8057";
    let not_found = mesh.cli(
        "agent-us-east",
        &["ticket", "get", missing, "--target", &us],
    );
    assert!(
        String::from_utf8_lossy(&not_found.stderr).contains("NOT_FOUND"),
        "{not_found:?}"
    );
    let anonymous = Command::new(MERIDIAN)
        .args(["ticket", "list", "--target", &us, "--ca"])
        .arg(&mesh.ca)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHENTICATED"),
        "{anonymous:?}"
    );
    succeeded(&mesh.cli(
        "agent-us-east",
        &["ticket", "list", "--target", &us, "--output", "json"],
    ));
    // Accepted or refused (eu-west may be off shift): either way the mesh's
    // AcceptHandoff is called and the handoff counted.
    let _ = mesh.cli(
        "agent-us-east",
        &[
            "ticket",
            "handoff",
            &id,
            "--target",
            &us,
            "--to",
            "eu-west",
            "--last-action",
            "checked the queue",
            "--next-action",
            "call the customer",
        ],
    );

    // The counts are recorded when each call ends; give the last a moment
    // and the queue count its first scan.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, red) = loop {
        let text = mesh.scrape();
        let red = red_series(&text);
        let seen = |method: &str| red.iter().any(|s| s.0.ends_with(method));
        let done = [
            "SubmitTicket",
            "CreateTicket",
            "GetTicket",
            "ListTickets",
            "Handoff",
            "AcceptHandoff",
        ]
        .into_iter()
        .all(seen)
            && text.contains("meridian_handoffs_total{");
        if done || Instant::now() > deadline {
            break (text, red);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let count = |method: &str, code: &str, server: &str, region: &str| {
        red.iter()
            .filter(|s| s.0 == method && s.1 == code && s.2 == server && s.3 == region)
            .map(|s| s.4)
            .sum::<f64>()
    };
    eprintln!("RED series seen in the scrape (method, code, server, region, count):");
    for series in &red {
        eprintln!("  {series:?}");
    }
    let tickets = "meridian.v1.TicketService";
    assert_eq!(
        count("meridian.v1.RouterService/SubmitTicket", "OK", "router", ""),
        1.0,
        "{red:?}"
    );
    assert!(
        count(
            &format!("{tickets}/CreateTicket"),
            "OK",
            "gateway",
            "us-east"
        ) >= 1.0,
        "{red:?}"
    );
    // `ticket get`, and `ticket handoff` reading the ticket first.
    assert!(
        count(&format!("{tickets}/GetTicket"), "OK", "gateway", "us-east") >= 1.0,
        "{red:?}"
    );
    assert_eq!(
        count(
            &format!("{tickets}/GetTicket"),
            "NOT_FOUND",
            "gateway",
            "us-east"
        ),
        1.0,
        "{red:?}"
    );
    assert_eq!(
        count(
            &format!("{tickets}/ListTickets"),
            "UNAUTHENTICATED",
            "gateway",
            "us-east"
        ),
        1.0,
        "{red:?}"
    );
    assert_eq!(
        count(
            &format!("{tickets}/ListTickets"),
            "OK",
            "gateway",
            "us-east"
        ),
        1.0,
        "{red:?}"
    );
    assert!(
        count(&format!("{tickets}/GetStatus"), "OK", "gateway", "us-east") >= 1.0,
        "up's readiness check: {red:?}"
    );
    let handoff: f64 = red
        .iter()
        .filter(|s| s.0 == format!("{tickets}/Handoff") && s.3 == "us-east")
        .map(|s| s.4)
        .sum();
    assert_eq!(handoff, 1.0, "{red:?}");
    let accept: f64 = red
        .iter()
        .filter(|s| {
            s.0 == "meridian.v1.MeshService/AcceptHandoff" && s.2 == "mesh" && s.3 == "eu-west"
        })
        .map(|s| s.4)
        .sum();
    assert!(
        accept >= 1.0,
        "eu-west's mesh port answered the offer: {red:?}"
    );
    // Every series is a known code name and names a method, with the
    // histogram's buckets beside its count.
    for (method, code, ..) in &red {
        assert!(method.contains('/') || method == "_OTHER", "{method}");
        assert!(
            code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{code}"
        );
    }
    assert!(
        text.contains(r#"rpc_server_call_duration_seconds_bucket{"#),
        "the duration histogram is exported"
    );
    assert!(text.contains(r#"rpc_system_name="grpc""#));

    // Zeros where zero is the truth, and one meaning for meridian_region.
    for region in ["us-east", "eu-west", "apac-south"] {
        for gauge in ["meridian_sla_at_risk", "meridian_sla_breached"] {
            let line = format!(r#"{gauge}{{meridian_region="{region}",tier="standard"}}"#);
            assert!(
                text.lines().any(|l| l.starts_with(&line)),
                "{line} missing:\n{text}"
            );
        }
        assert!(
            text.contains(&format!(
                r#"meridian_rules_refused{{meridian_region="{region}"}} 0"#
            )),
            "{text}"
        );
    }
    let decisions: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("meridian_routing_decisions_total{"))
        .collect();
    assert!(
        !decisions.is_empty()
            && decisions
                .iter()
                .all(|l| l.contains("chosen_region=") && !l.contains("meridian_region=")),
        "{decisions:?}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("meridian_rules_version{meridian_region=\"us-east\""))
            .count(),
        1
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("meridian_build_info{") && l.contains("version=\"")),
        "{text}"
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{process} "))),
            "{process} missing"
        );
    }

    // Every metric the dashboard and the rules name is exported.
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let named = named_metrics();
    let mut missing = Vec::new();
    for (metric, place) in &named {
        // `up` is Prometheus's own series for each scrape target.
        if metric != "up" && !exported.contains(metric.as_str()) {
            missing.push(format!("{metric} ({place})"));
        }
    }
    assert!(
        missing.is_empty(),
        "named but not exported: {missing:?}\nexported: {exported:?}"
    );
    eprintln!(
        "{} metric names in the dashboard and rules, all exported",
        named.iter().map(|n| &n.0).collect::<BTreeSet<_>>().len()
    );
}
