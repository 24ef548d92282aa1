//! Errors: a rules file that is refused (with file, line and column for each
//! problem) and the few ways a time computation can fail.

use std::fmt;
use std::ops::Range;

/// One problem in a rules file, located at a line and column (both 1-based,
/// the column counted in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RulesError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a rules file. A file is accepted only when this is
/// empty, so the running rules are never replaced by half of a new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesErrors {
    pub errors: Vec<RulesError>,
}

impl fmt::Display for RulesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesErrors {}

impl RulesErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RulesError> {
        self.errors.iter()
    }
}

/// Turns byte offsets into line and column numbers and collects errors in
/// file order.
pub(crate) struct Collector<'t> {
    file: &'t str,
    text: &'t str,
    errors: Vec<(usize, RulesError)>,
}

impl<'t> Collector<'t> {
    pub(crate) fn new(file: &'t str, text: &'t str) -> Self {
        Self {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records a problem at the start of `span` (a byte range into the text).
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let (line, column) = line_column(self.text, offset);
        self.errors.push((
            offset,
            RulesError {
                file: self.file.to_owned(),
                line,
                column,
                message: message.into(),
            },
        ));
    }

    /// Records a problem in another file (an `.ics` feed) at `line`, sorted
    /// with the problems at `anchor`, the rules' reference to that file.
    pub(crate) fn elsewhere(
        &mut self,
        anchor: Range<usize>,
        file: &str,
        line: usize,
        message: impl Into<String>,
    ) {
        self.errors.push((
            anchor.start.min(self.text.len()),
            RulesError {
                file: file.to_owned(),
                line,
                column: 1,
                message: message.into(),
            },
        ));
    }

    /// The 1-based line and column of a byte offset.
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        line_column(self.text, span.start.min(self.text.len())).0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn finish(mut self) -> RulesErrors {
        // Stable sort: problems at one position keep the order they were found in.
        self.errors.sort_by_key(|(offset, _)| *offset);
        RulesErrors {
            errors: self.errors.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

/// The one-based line and column (in characters) of a byte offset: how
/// every Meridian TOML error (rules, gateway and router configs) is located.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    // Offsets from the parser always fall on character boundaries; if one did
    // not, walk back to the nearest boundary rather than fail.
    let mut offset = offset.min(text.len());
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Why an SLA or business-time computation could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// A pause interval ends before it starts.
    #[error(
        "pause {index} ends ({until}) before it starts ({from}); give --paused-until after --paused-from"
    )]
    InvertedPause {
        index: usize,
        from: jiff::Timestamp,
        until: jiff::Timestamp,
    },
    /// The calendar has no open time within the search horizon, so no
    /// deadline exists (for example, every day is a holiday).
    #[error(
        "calendar {calendar:?} has no business time within {horizon_days} days of {from}; check its hours and holidays"
    )]
    NoBusinessTime {
        calendar: String,
        from: jiff::Timestamp,
        horizon_days: u32,
    },
    /// The calendar has open time, but less than the target within the
    /// search horizon: the target cannot be met there.
    #[error(
        "calendar {calendar:?} cannot meet a target of {target_minutes} business minutes within the search horizon: the {horizon_days} days after {from} hold only {open_minutes} open minutes; lower the target or give the calendar more hours"
    )]
    BeyondHorizon {
        calendar: String,
        from: jiff::Timestamp,
        horizon_days: u32,
        target_minutes: i64,
        open_minutes: i64,
    },
    /// The answer would fall outside the range of instants jiff can represent.
    #[error("the deadline falls outside the supported range of dates (years -9999 to 9999)")]
    OutOfRange,
    /// A tier that the rules do not define.
    #[error("unknown tier {tier:?}; the rules define {known}")]
    UnknownTier { tier: String, known: String },
    /// A region that the rules do not define.
    #[error("unknown region {region:?}; the rules define {known}")]
    UnknownRegion { region: String, known: String },
}

pub type Result<T, E = TimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\nzone = \"Été\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(
            line_column(text, text.find("Été").unwrap() + "Ét".len()),
            (2, 11)
        );
    }
}
