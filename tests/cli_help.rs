//! The `meridian` command line as a new user meets it, without a mesh:
//! every subcommand's `--help` documents every option, server flags stay
//! on server commands, `--output json` failures are one JSON object on
//! stdout, `--at now`, `rules what-if`, and `token mint` refusing a region
//! the rules do not define.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use serde_json::Value;

const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rules.example.toml");

/// `meridian ARGS` with none of the connection or server variables a
/// developer's shell may hold.
fn meridian(args: &[&str]) -> Output {
    let mut command = Command::new(MERIDIAN);
    command.args(args);
    for var in [
        "MERIDIAN_TARGET",
        "MERIDIAN_ROUTER",
        "MERIDIAN_CA",
        "MERIDIAN_TOKEN",
        "MERIDIAN_PEERS",
        "MERIDIAN_RULES",
        "MERIDIAN_METRICS_LISTEN",
        "MERIDIAN_OTLP_ENDPOINT",
    ] {
        command.env_remove(var);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The subcommand names listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next().filter(|n| *n != "help") {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// Options and positionals of a help text whose entry has no description:
/// clap prints such an entry as the bare flag with nothing after it.
fn undocumented(help: &str) -> Vec<String> {
    let mut bare = Vec::new();
    let mut section = "";
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        if !matches!(section, "Options:" | "Arguments:") {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // An entry: `  -s, --long`, `      --long` or `  <ARG>`.
        let entry = indent <= 6 && trimmed.starts_with(['-', '<', '[']);
        if !entry {
            continue;
        }
        // What follows the flag: on the same line after a gap of two
        // spaces, or on the next, deeper indented line. `[env: …]` or
        // `[default: …]` alone is no description.
        let same_line = trimmed.split_once("  ").map(|(_, rest)| rest.trim());
        let next_line = lines.get(i + 1).and_then(|next| {
            let t = next.trim_start();
            (!t.is_empty() && next.len() - t.len() > 6).then_some(t)
        });
        let description = same_line
            .filter(|d| !d.is_empty())
            .or(next_line)
            .unwrap_or("");
        if description.is_empty() || description.starts_with('[') {
            bare.push(trimmed.to_owned());
        }
    }
    bare
}

#[test]
fn every_subcommand_documents_every_option_and_argument() {
    let mut queue = vec![Vec::<String>::new()];
    let mut seen = 0;
    let mut missing = Vec::new();
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = meridian(&args);
        assert!(
            output.status.success(),
            "meridian {args:?}: {}",
            text(&output.stderr)
        );
        let help = text(&output.stdout);
        seen += 1;
        for entry in undocumented(&help) {
            missing.push(format!("meridian {}: {entry}", path.join(" ")));
        }
        for sub in subcommands(&help) {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(seen > 25, "walked only {seen} commands");
    assert!(
        missing.is_empty(),
        "options without help:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_help_walker_sees_a_bare_option() {
    let help = "Usage: x\n\nOptions:\n      --subject <SUBJECT>\n      --tier <TIER>  The tier\n  \
                    --ca <CA>  [env: MERIDIAN_CA=]\n  -h, --help\n          Print help\n";
    assert_eq!(
        undocumented(help),
        ["--subject <SUBJECT>", "--ca <CA>  [env: MERIDIAN_CA=]"]
    );
}

#[test]
fn server_flags_live_on_server_commands_only() {
    // As compose sets it: a client command must neither read it nor bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(MERIDIAN)
        .args(["rules", "check", RULES])
        .env("MERIDIAN_METRICS_LISTEN", &addr)
        .env("MERIDIAN_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("ok"),
        "{}",
        text(&output.stdout)
    );

    let rules_help = text(&meridian(&["rules", "check", "--help"]).stdout);
    assert!(!rules_help.contains("--metrics-listen"), "{rules_help}");
    assert!(!rules_help.contains("--otlp-endpoint"), "{rules_help}");
    for server in ["gateway", "router", "up"] {
        let help = text(&meridian(&[server, "--help"]).stdout);
        assert!(
            help.contains("--metrics-listen") && help.contains("--otlp-endpoint"),
            "{server}: {help}"
        );
    }
    // Connection flags name their variable and are not shown as required.
    let get = text(&meridian(&["ticket", "get", "--help"]).stdout);
    for var in ["MERIDIAN_TARGET", "MERIDIAN_CA", "MERIDIAN_TOKEN"] {
        assert!(get.contains(&format!("env: {var}")), "{var}: {get}");
    }
    let load = text(&meridian(&["load", "--help"]).stdout);
    assert!(load.contains("env: MERIDIAN_TARGET"), "{load}");
    let usage = load.lines().next().unwrap();
    assert!(!usage.contains("--target"), "shown as required: {usage}");
}

#[test]
fn errors_have_one_style_and_json_errors_are_one_object_on_stdout() {
    let missing = meridian(&["rules", "check", "/nonexistent/rules.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).starts_with("error: "),
        "{}",
        text(&missing.stderr)
    );

    let ticket = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "ticket",
            "get",
            ticket,
            "--target",
            "http://127.0.0.1:1",
            "--output",
            "json",
        ],
        vec![
            "trace",
            ticket,
            "--target",
            "http://127.0.0.1:1",
            "--output",
            "json",
        ],
        vec![
            "rules", "explain", RULES, "--tier", "nope", "--output", "json",
        ],
        vec![
            "rules",
            "active",
            RULES,
            "--at",
            "yesterday",
            "--output",
            "json",
        ],
        vec!["rules", "what-if", RULES, "--output", "json"],
        vec!["load", "--output", "json"],
        vec![
            "sla",
            "deadline",
            RULES,
            "--tier",
            "premium",
            "--metric",
            "resolution",
            "--output",
            "json",
        ],
    ];
    for args in cases {
        let output = meridian(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stdout = text(&output.stdout);
        let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("{args:?}: stdout is not one JSON object ({e}): {stdout:?}")
        });
        assert_eq!(value["ok"], false, "{args:?}: {value}");
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{args:?}: {value}"
        );
        assert!(
            text(&output.stderr).starts_with("error: "),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn at_and_from_default_to_now_and_accept_now() {
    for args in [
        vec!["rules", "active", RULES, "--output", "json"],
        vec!["rules", "active", RULES, "--at", "now", "--output", "json"],
        vec!["rules", "explain", RULES, "--at", "now", "--output", "json"],
        vec![
            "rules", "simulate", RULES, "--from", "now", "--days", "1", "--output", "json",
        ],
    ] {
        let output = meridian(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        let _: Value = serde_json::from_slice(&output.stdout).unwrap();
    }
    // The instant printed is the one precision of the CLI: milliseconds.
    let active: Value =
        serde_json::from_slice(&meridian(&["rules", "active", RULES, "--output", "json"]).stdout)
            .unwrap();
    let at = active["at"].as_str().unwrap();
    assert!(
        at.len() == "2026-06-01T11:31:07.005Z".len() && at.ends_with('Z'),
        "{at}"
    );
}

#[test]
fn what_if_compares_a_proposed_file_with_the_rules_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let text_in_force = std::fs::read_to_string(RULES).unwrap();
    let weekend = "start = \"10:00\"\nend = \"18:00\"";
    assert!(
        text_in_force.contains(weekend),
        "the example's us-east weekend shift moved"
    );
    let proposed = dir.path().join("proposed.toml");
    std::fs::write(
        &proposed,
        text_in_force.replacen(weekend, "start = \"09:00\"\nend = \"18:00\"", 1),
    )
    .unwrap();
    let proposed = proposed.to_str().unwrap();

    let output = meridian(&[
        "rules",
        "what-if",
        proposed,
        "--active",
        RULES,
        "--from",
        "2026-06-01",
        "--output",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let changed = answer["changed_cells"].as_array().unwrap();
    assert!(
        answer["changed_cells_total"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert!(
        changed
            .iter()
            .any(|c| c["name"] == "us-east" && c["at"] == "2026-06-06T13:00:00.000Z"),
        "{answer}"
    );

    // The same through MERIDIAN_RULES, as a table.
    let table = Command::new(MERIDIAN)
        .args(["rules", "what-if", proposed, "--from", "2026-06-01"])
        .env("MERIDIAN_RULES", RULES)
        .output()
        .unwrap();
    assert!(table.status.success(), "{}", text(&table.stderr));
    assert!(
        text(&table.stdout).contains("coverage cells change"),
        "{}",
        text(&table.stdout)
    );

    // An unchanged file changes nothing; a broken one is refused with its line.
    let same: Value = serde_json::from_slice(
        &meridian(&[
            "rules", "what-if", RULES, "--active", RULES, "--output", "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(same["changed_cells_total"], 0, "{same}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "version = ").unwrap();
    let refused = meridian(&[
        "rules",
        "what-if",
        broken.to_str().unwrap(),
        "--active",
        RULES,
        "--output",
        "json",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let refused: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["errors"][0]["line"], 1, "{refused}");
}

#[test]
fn token_mint_refuses_a_region_the_rules_do_not_define() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().to_str().unwrap();
    assert!(meridian(&["token", "dev", "--out", keys]).status.success());
    let key = dir.path().join("signing-key.json");
    let key = key.to_str().unwrap();
    let mint = [
        "token", "mint", "--key", key, "--role", "agent", "--rules", RULES, "--region",
    ];

    let typo = meridian(&[&mint[..], &["eu-wset"]].concat());
    assert_eq!(typo.status.code(), Some(1));
    let stderr = text(&typo.stderr);
    assert!(stderr.starts_with("error: --region eu-wset"), "{stderr}");
    assert!(stderr.contains("did you mean \"eu-west\"?"), "{stderr}");
    assert!(typo.stdout.is_empty(), "no token is printed");

    let good = meridian(&[&mint[..], &["eu-west"]].concat());
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert_eq!(text(&good.stdout).trim().matches('.').count(), 2, "a JWT");
}
