//! The `meridian` binary as a user runs it: `meridian up` in a child
//! process, then `meridian ticket …`, `meridian load` and `meridian health`
//! against it over TLS with the development tokens `up` printed and wrote;
//! and `meridian gateway` / `meridian router` refusing to listen off
//! loopback without `[auth]`.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");

struct Mesh {
    child: Child,
    /// Region name → gateway URL, as `meridian up` printed them.
    gateways: Vec<(String, String)>,
    router: String,
    /// Token name (`admin`, `agent-eu-west`, …) → token, as printed.
    tokens: Vec<(String, String)>,
    ca: std::path::PathBuf,
}

impl Mesh {
    fn up(data_dir: &Path) -> Mesh {
        let mut child = Command::new(MERIDIAN)
            .args(["up", "--base-port", "0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut gateways = Vec::new();
        let mut router = String::new();
        let mut tokens = Vec::new();
        for line in &mut lines {
            let line = line.unwrap();
            if line.starts_with("Ctrl-C") {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                ["gateway", region, url, ..] if url.starts_with("https://") => {
                    gateways.push((region.to_owned(), url.to_owned()));
                }
                ["router", url, ..] if url.starts_with("https://") => router = url.to_owned(),
                [name, token] if token.starts_with("eyJ") => {
                    tokens.push((name.to_owned(), token.to_owned()))
                }
                _ => {}
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert_eq!(
            gateways.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
            ["us-east", "eu-west", "apac-south"]
        );
        assert!(
            router.starts_with("https://"),
            "meridian up prints the router's URL"
        );
        let names: Vec<&str> = tokens.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent-us-east",
                "agent-eu-west",
                "agent-apac-south",
                "operator",
                "sre",
                "admin"
            ]
        );
        Mesh {
            child,
            gateways,
            router,
            tokens,
            ca: data_dir.join("pki/ca.pem"),
        }
    }

    fn token(&self, name: &str) -> &str {
        &self.tokens.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// `meridian ARGS` with the mesh's CA and the token `token` (by name)
    /// in the environment, as `source DATA_DIR/env` would set them.
    fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(MERIDIAN)
            .args(args)
            .env("MERIDIAN_CA", &self.ca)
            .env("MERIDIAN_TOKEN", self.token(token))
            .output()
            .unwrap()
    }

    fn url(&self, region: &str) -> &str {
        &self.gateways.iter().find(|(r, _)| r == region).unwrap().1
    }

    /// Stops the mesh as Ctrl-C would and returns its exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meridian up did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The `export NAME=VALUE` lines of an env file, `$(cat FILE)` read as the
/// shell would.
fn env_exports(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(assignment) = line.strip_prefix("export ") else {
            continue;
        };
        let (name, value) = assignment.split_once('=').unwrap();
        let value = value.trim_matches('"');
        let value = match value
            .strip_prefix("$(cat ")
            .and_then(|v| v.strip_suffix(')'))
        {
            Some(file) => std::fs::read_to_string(file).unwrap().trim().to_owned(),
            None => value.to_owned(),
        };
        out.push((name.to_owned(), value));
    }
    out
}

fn meridian(args: &[&str]) -> Output {
    Command::new(MERIDIAN).args(args).output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn up_create_get_and_a_refused_non_owner_update() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::up(dir.path());
    let us = mesh.url("us-east").to_owned();

    // Without a token the gateway refuses, saying why.
    let anonymous = meridian(&[
        "ticket",
        "list",
        "--target",
        &us,
        "--ca",
        mesh.ca.to_str().unwrap(),
    ]);
    assert_eq!(anonymous.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        stderr
            .trim()
            .starts_with("error: UNAUTHENTICATED: no bearer token"),
        "{stderr}"
    );

    let created = json(&mesh.cli(
        "agent-us-east",
        &[
            "ticket",
            "create",
            "--target",
            &us,
            "--subject",
            "VPN down",
            "--customer",
            "acme",
            "--skill",
            "networking",
            "--priority",
            "high",
            "--output",
            "json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["owner"]["region"], "us-east");
    assert_eq!(created["status"], "new");
    assert_eq!(created["replayed"], false);

    // With --idempotency-key, running the command again answers the same
    // ticket (scoped to the token's subject) and says it was a replay.
    let keyed = |subject: &str| {
        mesh.cli(
            "agent-us-east",
            &[
                "ticket",
                "create",
                "--target",
                &us,
                "--subject",
                subject,
                "--customer",
                "acme",
                "--idempotency-key",
                "cli-order-7",
                "--output",
                "json",
            ],
        )
    };
    let first = json(&keyed("Printer jammed"));
    assert_eq!(first["replayed"], false, "{first}");
    let again = json(&keyed("Printer jammed"));
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    let other = keyed("Printer fixed itself");
    assert_eq!(other.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("ALREADY_EXISTS")
            && stderr.contains("cli-order-7")
            && stderr.contains(first["id"].as_str().unwrap()),
        "{stderr}"
    );

    let got = json(&mesh.cli(
        "agent-us-east",
        &["ticket", "get", &id, "--target", &us, "--output", "json"],
    ));
    assert_eq!(got["subject"], "VPN down");
    assert_eq!(got["priority"], "high");
    assert_eq!(got["skills"], serde_json::json!(["networking"]));

    // The owner's region may update; eu-west may not, and is told who owns
    // it: an admin acting for eu-west meets the owner check, an eu-west
    // agent the authorization check.
    let refused = mesh.cli(
        "admin",
        &[
            "ticket",
            "update",
            &id,
            "--target",
            &us,
            "--as-region",
            "eu-west",
            "--status",
            "open",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim(),
        "error: FAILED_PRECONDITION: ticket is owned by us-east at epoch 0"
    );
    let refused = mesh.cli(
        "agent-eu-west",
        &["ticket", "update", &id, "--target", &us, "--status", "open"],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "error: PERMISSION_DENIED: agent dev-agent-eu-west of eu-west may not update ticket {id}: it is owned by us-east"
        )
    );
    let updated = json(&mesh.cli(
        "agent-us-east",
        &[
            "ticket", "update", &id, "--target", &us, "--status", "open", "--output", "json",
        ],
    ));
    assert_eq!(updated["status"], "open");

    // Replication brings the ticket to eu-west, still owned by us-east.
    let mut replicated = serde_json::Value::Null;
    for _ in 0..100 {
        let eu = json(&mesh.cli(
            "sre",
            &[
                "ticket",
                "list",
                "--target",
                mesh.url("eu-west"),
                "--output",
                "json",
            ],
        ));
        if let Some(ticket) = eu["tickets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id.as_str()))
            && ticket["status"] == "open"
        {
            replicated = ticket.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        replicated["owner"]["region"], "us-east",
        "replicated to eu-west with its owner: {replicated}"
    );

    let table = mesh.cli("agent-us-east", &["ticket", "list", "--target", &us]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().next().unwrap().starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains("VPN down"), "{table}");

    // Search prints as list does: the same JSON and the same table.
    let found = json(&mesh.cli(
        "agent-us-east",
        &[
            "ticket", "search", "vpn", "--target", &us, "--status", "open", "--output", "json",
        ],
    ));
    let ids: Vec<&str> = found["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (ids, &found["next_page_token"]),
        (vec![id.as_str()], &serde_json::json!(""))
    );
    let table = mesh.cli(
        "agent-us-east",
        &[
            "ticket", "search", "VPN do", "--target", &us, "--region", "us-east",
        ],
    );
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().next().unwrap().starts_with("ID "), "{table}");
    assert!(table.contains(&id), "{table}");
    let refused = mesh.cli(
        "agent-us-east",
        &["ticket", "search", "?!", "--target", &us],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("INVALID_ARGUMENT: query: holds no letter or digit"),
        "{stderr}"
    );

    // Submitted through the router, a ticket lands in the region the router
    // names, and that region's gateway has it.
    let submitted = json(&mesh.cli(
        "agent-eu-west",
        &[
            "ticket",
            "submit",
            "--router",
            &mesh.router,
            "--subject",
            "Invoice wrong",
            "--customer",
            "acme",
            "--tier",
            "premium",
            "--output",
            "json",
        ],
    ));
    let routed_to = submitted["routed_to"].as_str().unwrap().to_owned();
    assert_eq!(submitted["owner"]["region"], routed_to.as_str());
    assert_eq!(submitted["replayed"], false);
    let submit_keyed = || {
        json(&mesh.cli(
            "agent-eu-west",
            &[
                "ticket",
                "submit",
                "--router",
                &mesh.router,
                "--subject",
                "Refund twice?",
                "--customer",
                "acme",
                "--idempotency-key",
                "refund-1",
                "--output",
                "json",
            ],
        ))
    };
    let first = submit_keyed();
    let again = submit_keyed();
    assert_eq!(
        (&first["replayed"], &again["replayed"]),
        (&false.into(), &true.into())
    );
    assert_eq!(first["id"], again["id"], "one ticket for one key");
    let at_gateway = json(&mesh.cli(
        "sre",
        &[
            "ticket",
            "get",
            submitted["id"].as_str().unwrap(),
            "--target",
            mesh.url(&routed_to),
            "--output",
            "json",
        ],
    ));
    assert_eq!(at_gateway["subject"], "Invoice wrong");
    assert!(
        at_gateway["sla"]["resolution"]["due"].is_string(),
        "premium tickets get SLA clocks: {at_gateway}"
    );

    // `meridian load` drives the authenticated gateway with the token and
    // CA from the environment (as `source DATA_DIR/env` sets them)...
    let load_args = [
        "load",
        "--target",
        &us,
        "--scenarios",
        "create",
        "--concurrency",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--rounds",
        "1",
        "--quiet",
        "--output",
        "json",
    ];
    let report = json(&mesh.cli("agent-us-east", &load_args));
    let create = &report["rows"].as_array().unwrap()[0];
    assert_eq!(create["scenario"], "create", "{report}");
    assert!(
        create["ops"].as_u64().unwrap() > 0 && create["errors"] == 0,
        "{report}"
    );
    // ...and without a token it stops at once with the gateway's reason,
    // instead of measuring refusals.
    let refused = Command::new(MERIDIAN)
        .args(load_args)
        .env("MERIDIAN_CA", &mesh.ca)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "{us} refused CreateTicket: Unauthenticated: no bearer token"
        )),
        "{stderr}"
    );
    // A role that may not create (an sre reads) is refused too, with the
    // reason.
    let wrong = mesh.cli("sre", &load_args);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("refused CreateTicket: PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    // With no --target, `meridian load` follows MERIDIAN_TARGET (here from
    // the env file `up` wrote) instead of benchmarking a gateway of its own.
    let env_file = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let exported = env_exports(&env_file);
    let mut load = Command::new(MERIDIAN);
    load.args(&load_args[..1])
        .args(&load_args[3..])
        .env_remove("MERIDIAN_TARGET");
    for (name, value) in &exported {
        load.env(name, value);
    }
    let followed = load.output().unwrap();
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&followed.stdout).unwrap();
    assert_eq!(report["target"], us.as_str(), "{report}");
    assert!(report["rows"][0]["ops"].as_u64().unwrap() > 0, "{report}");
    // The env file says how to act as each role: the sre's line carries
    // every gateway as a peer for `meridian trace`.
    let sre_line = env_file.lines().find(|l| l.contains("/sre.jwt")).unwrap();
    assert!(
        sre_line.starts_with("# export MERIDIAN_TOKEN="),
        "{env_file}"
    );
    for (_, url) in &mesh.gateways {
        assert!(sre_line.contains(url.as_str()), "{sre_line}");
    }
    for role in ["operator", "admin", "agent-eu-west", "agent-apac-south"] {
        assert!(
            env_file.contains(&format!("/{role}.jwt")),
            "no line for {role}: {env_file}"
        );
    }
    // Without a target anywhere, it asks for one rather than guessing.
    let nothing = Command::new(MERIDIAN)
        .args(&load_args[..1])
        .args(&load_args[3..])
        .env_remove("MERIDIAN_TARGET")
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&nothing.stdout).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("MERIDIAN_TARGET"),
        "{error}"
    );

    // `meridian health`, the Kubernetes probe: over TLS, no token needed.
    let health = Command::new(MERIDIAN)
        .args([
            "health",
            "--target",
            &us,
            "--service",
            "meridian.v1.TicketService",
            "--ca",
        ])
        .arg(&mesh.ca)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "meridian.v1.TicketService SERVING"
    );
    let unknown = Command::new(MERIDIAN)
        .args(["health", "--target", &us, "--service", "nope", "--ca"])
        .arg(&mesh.ca)
        .output()
        .unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "an unknown service is not healthy"
    );
    let no_ca = meridian(&["health", "--target", &mesh.router]);
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("is https: pass --ca FILE"),
        "{no_ca:?}"
    );

    let status = mesh.interrupt();
    assert!(
        status.success(),
        "meridian up exits 0 on Ctrl-C, got {status}"
    );
    assert!(
        dir.path().join("us-east.db").exists(),
        "each region keeps its SQLite file"
    );
    assert!(
        dir.path().join("pki/ca.pem").exists(),
        "up makes a development CA"
    );
    assert!(
        dir.path().join("auth/jwks.json").exists(),
        "up makes a development JWKS"
    );
    assert!(
        dir.path().join("tokens/admin.jwt").exists(),
        "up writes its tokens for scripts"
    );
    assert!(
        dir.path().join("rules.toml").exists(),
        "up writes the example rules to edit"
    );
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let bad_id = meridian(&["ticket", "get", "nope", "--target", "http://127.0.0.1:1"]);
    assert_eq!(bad_id.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_id.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach the gateway at http://127.0.0.1:1"),
        "{stderr}"
    );

    let bad_status = meridian(&["ticket", "update", "x", "--status", "done"]);
    let stderr = String::from_utf8_lossy(&bad_status.stderr);
    assert_eq!(bad_status.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: --status: \"done\" is not one of"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "region = \"us-east\"\nlisten = \"127.0.0.1:0\"\n[database]\nurl = 3\n",
    )
    .unwrap();
    let bad_config = meridian(&["gateway", "--config", config.to_str().unwrap()]);
    assert_eq!(bad_config.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_config.stderr);
    let expected = format!(
        "error: config: {}:4:7: invalid type: integer `3`, expected a string",
        config.display()
    );
    assert_eq!(stderr.trim(), expected);
}

/// Secure by default, as an operator meets it: a gateway or router whose
/// public listener is not loopback and whose file has no `[auth]` does not
/// start, and says which field to add; `[auth] disabled = true` is the
/// explicit way to serve without tokens anyway.
#[test]
fn a_gateway_or_router_off_loopback_refuses_to_start_without_auth_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let gateway = format!(
        "region = \"us-east\"\nlisten = \"0.0.0.0:0\"\n[database]\nurl = \"sqlite:{}?mode=rwc\"\n",
        db.display()
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, &gateway).unwrap();
    let refused = meridian(&["gateway", "--config", config.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "error: config: {}: [auth] is missing: the public listener 0.0.0.0:0 is not loopback; \
             add [auth] jwks = \"FILE\", or set [auth] disabled = true to serve without tokens",
            config.display()
        )
    );

    // The opt-out: it starts and serves.
    std::fs::write(&config, format!("{gateway}[auth]\ndisabled = true\n")).unwrap();
    let mut child = Command::new(MERIDIAN)
        .args(["gateway", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("MERIDIAN_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("gateway serving") {
                let _ = tx.send(line);
            }
        }
    });
    let serving = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let serving = serving.expect("the gateway with [auth] disabled = true starts and serves");
    // Without the log's colours.
    let mut plain = String::new();
    let mut rest = serving.as_str();
    while let Some(start) = rest.find('\u{1b}') {
        plain.push_str(&rest[..start]);
        rest = rest[start..].split_once('m').map_or("", |(_, after)| after);
    }
    plain.push_str(rest);
    assert!(
        plain.contains("addr=0.0.0.0:") && plain.contains("auth=false"),
        "{plain}"
    );

    // The router: the same rule, before it reads anything else.
    let router = dir.path().join("router.toml");
    std::fs::write(
        &router,
        "listen = \"0.0.0.0:0\"\n[rules]\npath = \"rules.toml\"\n",
    )
    .unwrap();
    let refused = meridian(&["router", "--config", router.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("[auth] is missing: the public listener 0.0.0.0:0 is not loopback"),
        "{stderr}"
    );
    std::fs::write(
        &router,
        "listen = \"0.0.0.0:0\"\n[rules]\npath = \"rules.toml\"\n[auth]\njwks = \"jwks.json\"\n",
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(
        &meridian(&["router", "--config", router.to_str().unwrap()]).stderr,
    )
    .into_owned();
    assert!(
        stderr.contains("[tls] is missing"),
        "tokens never cross the network in clear text: {stderr}"
    );
}
