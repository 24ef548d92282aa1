//! The suite in smoke mode, as CI runs it: every scenario completes and
//! reports figures, targets and pictures. Never its speed: these machines
//! are shared, and speed is what `BENCHMARKS.md` reports from a full run.
//!
//! `intake-postgres` runs whenever `DATABASE_URL` is set; without it the
//! test says so loudly, and fails under `MERIDIAN_REQUIRE_ALL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

const ALWAYS: [&str; 13] = [
    "intake-sqlite",
    "handoff",
    "route",
    "catch-up",
    "trace-overhead",
    "tokens",
    "console",
    "scale",
    "stalled",
    "sweep",
    "notify",
    "assign",
    "search",
];

#[test]
fn every_scenario_completes_and_reports_in_smoke_mode() {
    let require_all = std::env::var("MERIDIAN_REQUIRE_ALL").is_ok_and(|v| v == "1");
    let postgres = std::env::var_os("DATABASE_URL").is_some();
    if !postgres {
        assert!(
            !require_all,
            "MERIDIAN_REQUIRE_ALL=1 but DATABASE_URL is not set: intake-postgres cannot run"
        );
        eprintln!("\n*** DATABASE_URL is not set: the smoke run skips intake-postgres ***\n");
    }
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(["--smoke", "--quiet", "--output", "json", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the smoke run failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stderr}"));
    assert_eq!(report["mode"], "smoke");
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);

    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ALWAYS.to_vec();
    if postgres {
        expected.insert(1, "intake-postgres");
    }
    // Needs dovecot; the bench fails by itself under MERIDIAN_REQUIRE_ALL=1
    // when it is missing.
    if std::path::Path::new("/usr/sbin/dovecot").is_file() {
        expected.push("mail-intake");
    } else {
        eprintln!("\n*** dovecot is not installed: the smoke run skips mail-intake ***\n");
    }
    assert_eq!(names, expected, "skipped: {}", report["skipped"]);

    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        let rows = scenario["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{name} reported no figures");
        for row in rows {
            let value = row["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {row} has no value"));
            assert!(value.is_finite() && value >= 0.0, "{name}: {row}");
            if let Some(baseline) = row["baseline"].as_str() {
                assert!(
                    rows.iter().any(|r| r["label"] == baseline),
                    "{name}: {row} names a baseline it did not measure"
                );
            }
        }
        // Each scenario checks the targets, met or not.
        assert!(
            !scenario["targets"].as_array().unwrap().is_empty(),
            "{name} checked no target"
        );
        for chart in scenario["charts"].as_array().unwrap() {
            let file = out
                .path()
                .join(format!("{}.svg", chart["name"].as_str().unwrap()));
            let svg = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                svg.starts_with("<svg") && svg.contains("<circle"),
                "{}: no point drawn",
                file.display()
            );
        }
    }
    // Every scenario with a baseline sets a figure against it.
    for name in [
        "intake-sqlite",
        "handoff",
        "route",
        "catch-up",
        "trace-overhead",
        "tokens",
        "scale",
        "notify",
    ] {
        let scenario = scenarios.iter().find(|s| s["name"] == name).unwrap();
        assert!(
            scenario["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["ratio"].is_number()),
            "{name} has no figure measured against its baseline"
        );
    }
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for name in &expected {
        assert!(
            markdown.contains(&format!("### {name}")),
            "report.md lacks {name}"
        );
    }
}

#[test]
fn one_scenario_runs_on_its_own_and_bad_arguments_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(["--smoke", "--quiet", "--output", "json", "route"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["route"]);

    let refused = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(["--smoke", "warp-drive"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("warp-drive"));
    let refused = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(["--rounds", "0", "route"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rounds 0"));
}
