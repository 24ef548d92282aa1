//! No input makes the parser panic: arbitrary text, and the example file with
//! bytes deleted, duplicated or replaced. Every refusal is located inside the
//! file. (`fuzz/fuzz_targets/rules_parse.rs` runs the same check under
//! cargo-fuzz for longer.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use common::*;
use meridian_rules::Rules;
use proptest::prelude::*;

fn check_never_panics(text: &str) {
    if let Err(errors) = Rules::parse("fuzz.toml", text) {
        assert!(!errors.is_empty());
        let lines = text.split('\n').count();
        for e in errors.iter() {
            assert!(
                e.line >= 1 && e.line <= lines,
                "{e} is outside the {lines}-line file"
            );
            assert!(e.column >= 1);
            assert!(!e.message.is_empty() && !e.message.contains('\n'), "{e:?}");
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Duplicate(usize, usize),
    Replace(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let len = EXAMPLE.len();
    prop_oneof![
        (0..len, 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (0..len, 1usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        (0..len, "[-0-9a-z\"=\\[\\]{},.:/ \n]{1,8}").prop_map(|(at, s)| Edit::Replace(at, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len();
        match e {
            Edit::Delete(at, n) => {
                let at = (*at).min(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Duplicate(at, n) => {
                let at = (*at).min(len);
                let chunk = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, chunk);
            }
            Edit::Replace(at, s) => {
                let at = (*at).min(len);
                bytes.splice(at..(at + s.len()).min(len), s.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,400}") {
        check_never_panics(&text);
    }

    #[test]
    fn mutated_example(edits in proptest::collection::vec(edit(), 1..4)) {
        check_never_panics(&apply(EXAMPLE, &edits));
    }
}

#[test]
fn extreme_values() {
    for text in [
        EXAMPLE.replace("index = 0", "index = -9223372036854775808"),
        EXAMPLE.replace("capacity = 400", "capacity = 99999999999"),
        EXAMPLE.replace("2026-01-01", "9999-12-31"),
        EXAMPLE.replace("2026-01-01", "-009999-01-01"),
        EXAMPLE.replace("overlap_minutes = 30", "overlap_minutes = 1e400"),
        EXAMPLE.replace("headroom_weight = 1.5", "headroom_weight = nan"),
        EXAMPLE.replace("\"mon-fri\"", "\"mon-mon\""),
        EXAMPLE
            .replace("start = \"08:00\"", "start = \"23:59\"")
            .replace("end = \"17:00\"", "end = \"24:00\""),
    ] {
        check_never_panics(&text);
    }
    // A holiday at the very end of the calendar is accepted and harmless.
    let rules = parse(&EXAMPLE.replace("2026-01-01", "9999-12-31"));
    let far = "9999-12-30T00:00:00Z".parse().unwrap();
    let _ = rules.active_at(far);
    let _ = rules.next_shift_change(far);
    let _ = rules.sla_deadline(
        "premium",
        meridian_rules::Metric::Resolution,
        far,
        &meridian_rules::Pauses::none(),
    );
}
