//! The one rule for free text a person or a client writes (subjects, note
//! bodies, handoff fields, names): what it may contain, and how much of a
//! bad value an error may echo back.
//!
//! Control characters are refused at the edge rather than escaped on
//! output alone: they would be stored, replicated to every region and
//! printed by every reader (`ESC [2J` clears a terminal). Bodies keep the
//! two that text needs, newline and tab, and a carriage return only as
//! part of a CRLF line end (mail bodies arrive that way).

use crate::{Error, Result};

/// Which kind of free text a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: no control character at all.
    Line,
    /// Several lines: newline, tab and CRLF, but no other control character.
    Body,
}

/// Refuses `value` if it holds a control character its kind does not
/// allow, naming the field, the character and where it is.
pub fn check_free_text(field: &'static str, value: &str, kind: TextKind) -> Result<()> {
    let mut chars = value.chars().enumerate().peekable();
    while let Some((at, c)) = chars.next() {
        if !c.is_control() {
            continue;
        }
        let allowed = match kind {
            TextKind::Line => false,
            TextKind::Body => {
                c == '\n'
                    || c == '\t'
                    || (c == '\r' && chars.peek().is_some_and(|(_, next)| *next == '\n'))
            }
        };
        if !allowed {
            let rule = match kind {
                TextKind::Line => "a single line may hold no control characters",
                TextKind::Body => "only newline and tab are allowed",
            };
            return Err(Error::invalid(
                field,
                format!(
                    "contains control character U+{:04X} at character {at}; {rule}",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// How many characters of a bad value an error message repeats.
pub const ECHO_CHARS_MAX: usize = 64;

/// A bad value as an error message may quote it: debug-escaped (so control
/// characters show as escapes) and cut to [`ECHO_CHARS_MAX`] characters,
/// with its full length when cut. A 250,000-character id would otherwise
/// come back as a 250 KB `grpc-message`, which clients refuse.
pub fn echo(value: &str) -> String {
    let total = value.chars().count();
    if total <= ECHO_CHARS_MAX {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(ECHO_CHARS_MAX).collect();
    format!("{head:?}… ({total} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_every_control_character() {
        for bad in [
            "a\nb",
            "a\tb",
            "\u{1b}[2J",
            "nul\0",
            "bel\u{7}",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let err = check_free_text("subject", bad, TextKind::Line).unwrap_err();
            assert!(err.to_string().contains("subject"), "{err}");
        }
        check_free_text("subject", "VPN down — café ☕", TextKind::Line).unwrap();
    }

    #[test]
    fn bodies_keep_newline_tab_and_crlf_only() {
        check_free_text("body", "line one\r\n\tline two\n", TextKind::Body).unwrap();
        for bad in ["\u{1b}[31mred", "a\rb", "end\r", "nul\0", "bel\u{7}"] {
            let err = check_free_text("body", bad, TextKind::Body).unwrap_err();
            assert!(err.to_string().contains("control character"), "{err}");
        }
        let err = check_free_text("note.text", "ok\u{1b}", TextKind::Body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "note.text: contains control character U+001B at character 2; only newline and tab are allowed"
        );
    }

    #[test]
    fn echo_is_bounded() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = "x".repeat(250_000);
        let echoed = echo(&long);
        assert!(echoed.len() < 100, "{echoed}");
        assert!(echoed.ends_with("(250000 characters)"), "{echoed}");
        assert_eq!(echo("\u{1b}"), "\"\\u{1b}\"");
    }
}
