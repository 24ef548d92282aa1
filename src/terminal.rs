//! What the command prints to a terminal: text from the mesh (subjects,
//! notes, error messages) is someone else's input, and a control character
//! in it would act on the reader's terminal (`ESC [2J` clears it).

use std::borrow::Cow;

/// `text` with every control character except newline and tab shown as an
/// escape (`\u{1b}`), so printing it moves nothing but lines and columns.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            safe.push_str(&c.escape_unicode().to_string());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_are_escaped_but_lines_stay() {
        assert_eq!(terminal_safe("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            terminal_safe("\u{1b}[2J\u{1b}[31mred\u{7}\0\r"),
            "\\u{1b}[2J\\u{1b}[31mred\\u{7}\\u{0}\\u{d}"
        );
        assert_eq!(terminal_safe("c1\u{9b}"), "c1\\u{9b}");
    }
}
