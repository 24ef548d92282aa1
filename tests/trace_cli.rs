//! `meridian trace` as an SRE runs it: a ticket created in one region,
//! handed to a second, refused by a third, then traced across all three
//! gateways of a `meridian up` mesh.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
};

const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");
/// A Tuesday at 10:00 UTC: eu-west (Dublin, 08:00–17:00) is on shift, so it
/// accepts a handoff; apac-south (Singapore, 07:00–16:00) is not, so it
/// refuses one.
const START: &str = "2026-06-02T10:00:00Z";

struct Mesh {
    child: Child,
    gateways: Vec<(String, String)>,
}

impl Mesh {
    fn up(data_dir: &Path) -> Mesh {
        let mut child = Command::new(MERIDIAN)
            // Plaintext without tokens: the trace command is the subject here.
            .args([
                "up",
                "--no-auth",
                "--base-port",
                "0",
                "--start",
                START,
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut gateways = Vec::new();
        for line in &mut lines {
            let line = line.unwrap();
            if line.starts_with("Ctrl-C") {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let ["gateway", region, url, ..] = fields[..]
                && url.starts_with("http://")
            {
                gateways.push((region.to_owned(), url.to_owned()));
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert_eq!(
            gateways.len(),
            3,
            "meridian up prints three gateways: {gateways:?}"
        );
        Mesh { child, gateways }
    }

    fn url(&self, region: &str) -> String {
        self.gateways
            .iter()
            .find(|(r, _)| r == region)
            .unwrap()
            .1
            .clone()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn meridian(args: &[&str]) -> Output {
    Command::new(MERIDIAN)
        .args(args)
        .env_remove("MERIDIAN_TRACE_URL")
        .env_remove("MERIDIAN_PEERS")
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn trace_shows_both_regions_the_handoff_note_the_refusal_and_the_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::up(dir.path());
    let (us, eu, apac) = (
        mesh.url("us-east"),
        mesh.url("eu-west"),
        mesh.url("apac-south"),
    );

    let created = ok(meridian(&[
        "ticket",
        "create",
        "--target",
        &us,
        "--subject",
        "VPN down",
        "--customer",
        "acme",
        "--output",
        "json",
    ]));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    ok(meridian(&[
        "ticket", "update", &id, "--target", &us, "--status", "open",
    ]));
    ok(meridian(&[
        "ticket",
        "handoff",
        &id,
        "--target",
        &us,
        "--to",
        "eu-west",
        "--last-action",
        "restarted the VPN concentrator",
        "--next-action",
        "call the customer at 09:00",
        "--text",
        "customer prefers email",
        "--author",
        "alice",
    ]));
    // apac-south is off shift and refuses; eu-west keeps the ticket.
    let refused = meridian(&[
        "ticket",
        "handoff",
        &id,
        "--target",
        &eu,
        "--to",
        "apac-south",
        "--last-action",
        "called the customer",
        "--next-action",
        "escalate",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let trace_id = id.replace('-', "");
    let template = "http://localhost:16686/trace/{trace_id}";
    let text = ok(meridian(&[
        "trace",
        &id,
        "--target",
        &us,
        "--peer",
        &eu,
        "--peer",
        &apac,
        "--trace-url",
        template,
    ]));
    assert!(text.contains(&format!("trace    {trace_id}\n")), "{text}");
    assert!(
        text.contains(&format!(
            "link     http://localhost:16686/trace/{trace_id}\n"
        )),
        "{text}"
    );
    assert!(text.contains("visited  us-east → eu-west\n"), "{text}");
    assert!(text.contains("owner    eu-west at epoch "), "{text}");
    let stay_lines: Vec<&str> = text.lines().filter(|l| l.contains("  held ")).collect();
    assert_eq!(stay_lines.len(), 2, "{text}");
    assert!(
        stay_lines[0].starts_with("us-east  held ") && stay_lines[0].ends_with(", created"),
        "{text}"
    );
    assert!(
        stay_lines[1].starts_with("eu-west  held ") && stay_lines[1].contains("→ now"),
        "{text}"
    );
    assert!(stay_lines[1].ends_with("handed over by us-east"), "{text}");
    for expected in [
        "handoff offered to eu-west at epoch 0",
        "note by alice: status open",
        "last action: restarted the VPN concentrator",
        "next action: call the customer at 09:00",
        "text:        customer prefers email",
        "handoff from us-east accepted by eu-west",
        "handoff to apac-south refused: ",
        "conflicts: none",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    for region in ["us-east", "eu-west", "apac-south"] {
        assert!(
            text.contains(&format!("\n  {region:<12} ")),
            "region {region} listed:\n{text}"
        );
    }

    // The same journey as one JSON object.
    let json = ok(meridian(&[
        "trace",
        &id,
        "--target",
        &eu,
        "--peer",
        &us,
        "--trace-url",
        template,
        "--output",
        "json",
    ]));
    let journey: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(journey["trace_id"], trace_id.as_str());
    assert_eq!(
        journey["trace_url"],
        format!("http://localhost:16686/trace/{trace_id}")
    );
    let stays: Vec<&str> = journey["stays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(stays, ["us-east", "eu-west"]);
    assert!(journey["stays"][0]["held_ms"].as_i64().unwrap() >= 0);
    let steps = journey["steps"].as_array().unwrap();
    let offer = steps
        .iter()
        .find(|s| s["type"] == "handoff_offered" && s["to"] == "eu-west")
        .unwrap();
    assert_eq!(offer["note"]["next_action"], "call the customer at 09:00");
    let accepted = steps
        .iter()
        .find(|s| s["type"] == "handoff_accepted")
        .unwrap();
    assert_eq!(accepted["origin_region"], "eu-west");
    assert!(accepted["after_offer_ms"].as_i64().is_some(), "{accepted}");
    assert!(
        steps
            .iter()
            .any(|s| s["type"] == "handoff_refused" && s["to"] == "apac-south")
    );
    // apac-south was not asked this time, and the output says so.
    assert_eq!(journey["not_asked"], serde_json::json!(["apac-south"]));
}

#[test]
fn trace_refuses_a_link_template_without_the_trace_id_and_a_bad_id() {
    let bad_url = meridian(&[
        "trace",
        "0196f0c4-8a2b-7cde-8f01-23456789abcd",
        "--target",
        "http://127.0.0.1:1",
        "--trace-url",
        "http://jaeger/trace/",
    ]);
    assert_eq!(bad_url.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_url.stderr);
    assert!(
        stderr.starts_with("error: --trace-url \"http://jaeger/trace/\" has no {trace_id}"),
        "{stderr}"
    );

    let bad_id = meridian(&["trace", "nope", "--target", "http://127.0.0.1:1"]);
    assert_eq!(bad_id.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_id.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: TICKET"), "{stderr}");

    let unreachable = meridian(&[
        "trace",
        "0196f0c4-8a2b-7cde-8f01-23456789abcd",
        "--target",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.starts_with("error: cannot reach the gateway at http://127.0.0.1:1"),
        "{stderr}"
    );
}
