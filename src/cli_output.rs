//! What every command shares when it prints: the one error style
//! (`error: …` on stderr, lowercase, like clap's own), one JSON object on
//! stdout for a failure under `--output json`, and one precision for
//! instants (milliseconds, `2026-06-01T11:31:07.005Z`).

use std::process::ExitCode;

use clap::ArgMatches;
use jiff::Timestamp;
use serde_json::json;

/// Whether the innermost subcommand was asked for `--output json`.
pub fn wants_json(matches: &ArgMatches) -> bool {
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    // `try_get_raw`: commands without --output answer an error, not a panic.
    leaf.try_get_raw("output")
        .ok()
        .flatten()
        .is_some_and(|mut values| values.any(|v| v == "json"))
}

/// A failed command: the whole cause chain on one stderr line and, under
/// `--output json`, the same as one JSON object on stdout.
pub fn fail(error: &anyhow::Error, json: bool) -> ExitCode {
    let message = format!("{error:#}");
    // What the server said may carry control characters: escape them.
    eprintln!("error: {}", meridian::terminal_safe(&message));
    if json {
        println!("{}", json!({ "ok": false, "error": message }));
    }
    ExitCode::FAILURE
}

/// A command line clap refused. Help and version print as usual; a refusal
/// of a command line that asked for `--output json` is also one JSON
/// object on stdout (clap cannot tell us which command it was, so the raw
/// arguments are read).
pub fn usage_error(error: clap::Error) -> ExitCode {
    if error.use_stderr() && raw_args_want_json() {
        let text = error.to_string();
        let message = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        println!("{}", json!({ "ok": false, "error": message }));
    }
    let code = error.exit_code();
    let _ = error.print();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn raw_args_want_json() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json")
}

/// An instant as the CLI prints it everywhere: RFC 3339 in UTC with
/// exactly three fractional digits.
pub fn instant(at: Timestamp) -> String {
    format!("{at:.3}")
}

// The journey's JSON (`meridian trace`) serializes its instants in this
// same form, in `meridian_router::journey`, which both it and the console use.

/// Keys under which the rules crate's JSON (decisions, shifts, deadlines)
/// holds UTC instants.
const INSTANT_KEYS: [&str; 7] = [
    "at",
    "shift_ends_at",
    "next_shift_at",
    "start",
    "end",
    "deadline_at",
    "due",
];

/// Rewrites the UTC instants of a library type's JSON (found by key, and
/// only in the `…Z` form) to the CLI's one precision. Instants with a
/// local offset (an SLA deadline in its calendar's zone) keep theirs.
pub fn normalize_instants(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let instant_text = item.as_str().filter(|t| t.ends_with('Z'));
                let parsed = instant_text.and_then(|t| t.parse::<Timestamp>().ok());
                match parsed {
                    Some(at) if INSTANT_KEYS.contains(&key.as_str()) => *item = json!(instant(at)),
                    _ => normalize_instants(item),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalize_instants),
        _ => {}
    }
}

/// An instant given on the command line: RFC 3339, or `now` (to the
/// millisecond, the precision the CLI prints).
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        let now = Timestamp::now();
        return Ok(now.round(jiff::Unit::Millisecond).unwrap_or(now));
    }
    text.trim().parse::<Timestamp>().map_err(|e| {
        format!("{text:?} is not an RFC 3339 instant (such as 2026-06-01T14:00:00Z) or now: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_with_milliseconds_always() {
        let whole: Timestamp = "2026-06-01T11:31:07Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(instant(whole), "2026-06-01T11:31:07.000Z");
        let fine: Timestamp = "2026-06-01T11:31:07.99Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(instant(fine), "2026-06-01T11:31:07.990Z");
    }

    /// The whole clap tree: every option and positional of every command
    /// carries help text, and every command says what it does.
    #[test]
    fn every_argument_of_every_command_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{name} (no about)"));
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = crate::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "meridian", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn library_json_instants_get_the_one_precision_and_offsets_stay() {
        let mut value = json!({
            "at": "2026-06-01T14:00:00Z",
            "regions": [{ "shift_ends_at": "2026-06-01T17:00:00.5Z", "name": "2026-06-01T14:00:00Z" }],
            "deadline": { "deadline_at": "2026-06-02T09:00:00+01:00" },
        });
        normalize_instants(&mut value);
        assert_eq!(value["at"], "2026-06-01T14:00:00.000Z");
        assert_eq!(
            value["regions"][0]["shift_ends_at"],
            "2026-06-01T17:00:00.500Z"
        );
        assert_eq!(
            value["regions"][0]["name"], "2026-06-01T14:00:00Z",
            "not a time field"
        );
        assert_eq!(
            value["deadline"]["deadline_at"],
            "2026-06-02T09:00:00+01:00"
        );
    }

    #[test]
    fn now_is_an_instant_and_garbage_is_named() {
        assert!(parse_instant("now").is_ok());
        assert!(parse_instant("NOW").is_ok());
        let error = parse_instant("yesterday").unwrap_err();
        assert!(error.contains("\"yesterday\""), "{error}");
    }
}
