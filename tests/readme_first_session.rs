//! The README's first session, run verbatim against `meridian up`.
//!
//! The README marks the command that starts the mesh
//! (`<!-- first-session:up -->`, one fenced line) and the session itself
//! (the fenced blocks between `<!-- first-session:begin -->` and
//! `<!-- first-session:end -->`). This test starts `meridian up` with the
//! README's own arguments (plus `--base-port 0`, so it takes free ports on
//! a shared machine), in a fresh directory that holds `meridian-data`, then
//! runs every `$ ` command of the session, in order, in one `bash` with the
//! built `meridian` first on `PATH` — exactly as written, continuation lines
//! and shell variables included. Each command must succeed, unless the
//! README shows it failing (its output starts with `error:`): then it must
//! fail. Every output line the README shows must appear in what the command
//! printed, `…` standing for anything.
//!
//! The README pins the mesh's start instant (`up --start`), so who is on
//! shift, and so every routing and handoff outcome shown, does not depend
//! on the hour the test (or a reader) runs at. The test checks that too:
//! it refuses a session whose `up` line has no `--start`.
//!
//! Needs `bash` and `jq` (the session keeps a ticket's id with `jq -r .id`);
//! without them the test says so loudly and passes, and fails with
//! `MERIDIAN_REQUIRE_ALL=1`.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Killed, MERIDIAN, start_up};

mod support;
const UP_MARK: &str = "<!-- first-session:up -->";
const BEGIN_MARK: &str = "<!-- first-session:begin -->";
const END_MARK: &str = "<!-- first-session:end -->";

fn require_all() -> bool {
    std::env::var("MERIDIAN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// One `$ ` command of the session and the output the README shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// As written, continuation lines (`\` and newline) included.
    command: String,
    shown: Vec<String>,
}

impl Step {
    fn fails(&self) -> bool {
        self.shown.first().is_some_and(|l| l.starts_with("error:"))
    }
}

/// The lines of the fenced blocks in `text`, in order.
fn fenced_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            out.push(line);
        }
    }
    assert!(!inside, "a fenced block of the first session is not closed");
    out
}

/// The text after `mark`, up to `end` (or the end of the README).
fn after<'a>(readme: &'a str, mark: &str, end: Option<&str>) -> &'a str {
    let start = readme
        .find(mark)
        .unwrap_or_else(|| panic!("README.md has no {mark} marker"))
        + mark.len();
    let rest = &readme[start..];
    match end {
        Some(end) => {
            &rest[..rest
                .find(end)
                .unwrap_or_else(|| panic!("README.md has no {end} marker after {mark}"))]
        }
        None => rest,
    }
}

/// The arguments of the README's `meridian up` line.
fn up_args(readme: &str) -> Vec<String> {
    let block = after(readme, UP_MARK, Some("\n```\n"));
    let line = fenced_lines(&format!("{block}\n```\n"))
        .into_iter()
        .map(|l| l.trim().trim_start_matches("$ ").to_owned())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("the first-session:up block holds the `meridian up` line");
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        words.get(..2),
        Some(&["meridian".to_owned(), "up".to_owned()][..]),
        "the first-session:up block starts the mesh: {line}"
    );
    words[2..].to_vec()
}

/// The session's steps, from the blocks between the markers.
fn steps(readme: &str) -> Vec<Step> {
    let session = after(readme, BEGIN_MARK, Some(END_MARK));
    let mut steps: Vec<Step> = Vec::new();
    let mut continuing = false;
    for line in fenced_lines(session) {
        if continuing {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                shown: Vec::new(),
            });
            continuing = command.ends_with('\\');
        } else if line.trim().is_empty() || line.starts_with('#') {
            // Prose for people; a blank line ends a command's output.
            if let Some(step) = steps.last_mut()
                && !step.shown.is_empty()
            {
                step.shown.push(String::new());
            }
        } else if let Some(step) = steps.last_mut() {
            step.shown.push(line.to_owned());
        }
    }
    for step in &mut steps {
        step.shown.retain(|l| !l.is_empty() && l.trim() != "…");
    }
    steps
}

/// Does `line` match `shown`, where `…` in `shown` stands for anything?
fn matches(shown: &str, line: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut tail) = line.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

/// `meridian up ARGS --base-port 0` in `dir`, once it says it is ready.
fn up(dir: &Path, args: &[String]) -> Killed {
    let (up, banner) = start_up(
        Command::new(MERIDIAN)
            .arg("up")
            .args(args)
            .args(["--base-port", "0"])
            .current_dir(dir),
    );
    for line in banner {
        eprintln!("up: {line}");
    }
    up
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `steps` in one bash in `dir`; each step's exit code, stdout and
/// stderr.
fn run(dir: &Path, steps: &[Step]) -> Vec<(i32, String, String)> {
    let out = dir.join("steps");
    std::fs::create_dir_all(&out).unwrap();
    let mut script = String::from("set -o pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        // `{ …; }` keeps the command in this shell: `source` and `ID=$(…)`
        // last for the next steps, as in a reader's terminal.
        script.push_str(&format!(
            "{{ {command}\n}} >steps/{i}.out 2>steps/{i}.err </dev/null\necho $? >steps/{i}.rc\n",
            command = step.command
        ));
    }
    std::fs::write(dir.join("session.sh"), &script).unwrap();
    let bin = PathBuf::from(MERIDIAN);
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("bash")
        .arg("session.sh")
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("MERIDIAN_TARGET")
        .env_remove("MERIDIAN_TOKEN")
        .env_remove("MERIDIAN_ROUTER")
        .env_remove("MERIDIAN_CA")
        .status()
        .unwrap();
    assert!(status.success(), "the session script itself failed");
    (0..steps.len())
        .map(|i| {
            let read = |ext: &str| std::fs::read_to_string(out.join(format!("{i}.{ext}"))).unwrap();
            (read("rc").trim().parse().unwrap(), read("out"), read("err"))
        })
        .collect()
}

#[test]
fn the_readme_steps_parse_as_a_reader_sees_them() {
    let readme = format!(
        "text\n{UP_MARK}\n```sh\nmeridian up --start 2026-12-07T13:30:00Z\n```\n{BEGIN_MARK}\n```sh\n\
         # a comment\n$ source env\n\n$ ID=$(meridian ticket create --subject \"x\" \\\n    --output json | jq -r .id)\n\
         $ meridian ticket get \"$ID\"\nid          …\n…\nowner       us-east at epoch 0\n```\nprose\n```sh\n\
         $ meridian ticket update \"$ID\" --status solved\nerror: PERMISSION_DENIED: … owned by us-east\n```\n{END_MARK}\n"
    );
    assert_eq!(up_args(&readme), ["--start", "2026-12-07T13:30:00Z"]);
    let steps = steps(&readme);
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "source env",
            "ID=$(meridian ticket create --subject \"x\" \\\n    --output json | jq -r .id)",
            "meridian ticket get \"$ID\"",
            "meridian ticket update \"$ID\" --status solved",
        ]
    );
    assert_eq!(
        steps[2].shown,
        ["id          …", "owner       us-east at epoch 0"]
    );
    assert!(!steps[2].fails() && steps[3].fails());
    assert!(matches("id          …", "id          0193-…"));
    assert!(matches(
        "error: PERMISSION_DENIED: … owned by us-east",
        "error: PERMISSION_DENIED: agent x may not: it is owned by us-east"
    ));
    assert!(!matches(
        "owner       us-east at epoch 0",
        "owner       eu-west at epoch 1"
    ));
    assert!(!matches(
        "routed to   eu-west (rules …)",
        "routed to   us-east (rules v1)"
    ));
}

#[test]
fn the_readme_first_session_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let args = up_args(&readme);
    assert!(
        args.iter()
            .any(|a| a == "--start" || a.starts_with("--start=")),
        "the README pins the mesh's start instant, so the session does not depend on the hour: {args:?}"
    );
    let steps = steps(&readme);
    assert!(
        steps.len() >= 6,
        "the first session has its commands: {steps:?}"
    );
    let missing: Vec<&str> = ["bash", "jq"].into_iter().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        eprintln!(
            "\n**********\nSKIPPED the README first-session test: {} not installed (apt-get install jq)\n**********\n",
            missing.join(" and ")
        );
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but {missing:?} is not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _mesh = up(dir.path(), &args);
    let results = run(dir.path(), &steps);
    let mut problems = Vec::new();
    for (step, (code, stdout, stderr)) in steps.iter().zip(&results) {
        eprintln!("$ {}\n(exit {code})\n{stdout}{stderr}", step.command);
        if step.fails() != (*code != 0) {
            problems.push(format!(
                "`{}` exited {code}; the README shows it {}:\n{stdout}{stderr}",
                step.command,
                if step.fails() {
                    "failing"
                } else {
                    "succeeding"
                }
            ));
        }
        let printed: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        for shown in &step.shown {
            if !printed.iter().any(|line| matches(shown, line)) {
                problems.push(format!(
                    "`{}` did not print the README's line {shown:?}; it printed:\n{stdout}{stderr}",
                    step.command
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
