//! Holidays from an iCalendar (`.ics`) feed: every all-day `VEVENT` closes
//! its dates, and an `RRULE` (with `EXDATE`/`RDATE`) is expanded for the
//! years in [`recur::YEARS`].
//!
//! Parsing is `icalendar`'s and expansion `rrule`'s (RFC 5545 is large;
//! neither is ours to get wrong). This module only maps their answers to
//! dates and every problem to a line of the file as written (before
//! unfolding).

use chrono::TimeZone as _;
use jiff::ToSpan;
use jiff::civil::Date;

use crate::recur;

/// Most dates one feed may expand to: a daily rule over the whole window
/// is a mistake, not a holiday list.
const DATES_MAX: u16 = 20_000;

/// One closed stretch of whole days from a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IcsHoliday {
    pub first: Date,
    /// Inclusive.
    pub last: Date,
    pub name: String,
    /// The line of the event's `DTSTART`, for messages.
    pub line: usize,
    /// Expanded from an `RRULE`.
    pub recurring: bool,
}

/// A problem in a feed, at a line of the file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IcsError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> IcsError {
    IcsError {
        line,
        message: message.into(),
    }
}

/// Maps lines of the unfolded text back to lines of the file: a folded
/// line (one starting with a space or tab) continues the one before it.
fn line_map(text: &str) -> Vec<usize> {
    let mut map = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !(line.starts_with(' ') || line.starts_with('\t')) || map.is_empty() {
            map.push(i + 1);
        }
    }
    map
}

/// The original line of a byte offset into the unfolded text.
fn line_at(unfolded: &str, map: &[usize], offset: usize) -> usize {
    let offset = offset.min(unfolded.len());
    let index = unfolded.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    map.get(index).copied().unwrap_or(index + 1)
}

/// Where a parsed value lies in `unfolded`: values borrow from the input,
/// so their address says where they came from.
fn offset_of(unfolded: &str, value: &str) -> Option<usize> {
    let base = unfolded.as_ptr() as usize;
    let at = value.as_ptr() as usize;
    (at >= base && at <= base + unfolded.len()).then(|| at - base)
}

/// Reads a feed. Every event must be all-day (`VALUE=DATE`): public
/// holiday feeds are, and a timed event's zone would be a second source
/// of truth beside the region's.
pub(crate) fn parse(text: &str) -> Result<Vec<IcsHoliday>, IcsError> {
    let unfolded = icalendar::parser::unfold(text);
    let map = line_map(text);
    let calendar = icalendar::parser::read_calendar(&unfolded).map_err(|e| {
        // "... at line N ..." counts unfolded lines.
        let line = e
            .split("at line ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(1, |n| map.get(n.saturating_sub(1)).copied().unwrap_or(n));
        err(
            line,
            "is not valid iCalendar (RFC 5545); check BEGIN/END pairs and NAME:VALUE lines",
        )
    })?;
    let mut out = Vec::new();
    let mut total: usize = 0;
    for event in calendar
        .components
        .iter()
        .filter(|c| c.name.as_str() == "VEVENT")
    {
        let line_of =
            |value: &str| offset_of(&unfolded, value).map_or(1, |o| line_at(&unfolded, &map, o));
        let Some(start) = event.find_prop("DTSTART") else {
            let line = event
                .properties
                .first()
                .map_or(1, |p| line_of(p.name.as_str()));
            return Err(err(
                line,
                "VEVENT has no DTSTART; give the holiday's date as DTSTART;VALUE=DATE:YYYYMMDD",
            ));
        };
        let line = line_of(start.name.as_str());
        let first = ics_date(start.val.as_str()).ok_or_else(|| {
            err(line, format!(
                "DTSTART {:?} is not a date; Meridian reads all-day events only (DTSTART;VALUE=DATE:YYYYMMDD)",
                start.val.as_str()
            ))
        })?;
        let days = match event.find_prop("DTEND") {
            None => 1,
            Some(end) => {
                let end_line = line_of(end.name.as_str());
                let end = ics_date(end.val.as_str()).ok_or_else(|| {
                    err(
                        end_line,
                        format!("DTEND {:?} is not a date (YYYYMMDD)", end.val.as_str()),
                    )
                })?;
                let days = first.until(end).map(|s| s.get_days()).unwrap_or(0);
                if days < 1 {
                    return Err(err(
                        end_line,
                        "DTEND is not after DTSTART; an all-day event ends on the day after its last",
                    ));
                }
                days
            }
        };
        let name = event
            .find_prop("SUMMARY")
            .map(|p| p.val.as_str().replace("\\,", ",").replace("\\;", ";"))
            .unwrap_or_default();
        let rules: Vec<_> = event
            .properties
            .iter()
            .filter(|p| p.name.as_str() == "RRULE")
            .collect();
        let dates = if rules.is_empty() {
            vec![first]
        } else {
            let mut spec = format!("DTSTART:{}T000000Z\n", compact(first));
            for rule in &rules {
                spec.push_str(&format!("RRULE:{}\n", until_as_utc(rule.val.as_str())));
            }
            for extra in event
                .properties
                .iter()
                .filter(|p| matches!(p.name.as_str(), "EXDATE" | "RDATE"))
            {
                let mut list = Vec::new();
                for value in extra.val.as_str().split(',') {
                    let d = ics_date(value).ok_or_else(|| {
                        err(
                            line_of(extra.name.as_str()),
                            format!("{} {value:?} is not a date (YYYYMMDD)", extra.name.as_str()),
                        )
                    })?;
                    list.push(format!("{}T000000Z", compact(d)));
                }
                spec.push_str(&format!("{}:{}\n", extra.name.as_str(), list.join(",")));
            }
            let rule_line = line_of(rules[0].name.as_str());
            expand(&spec).map_err(|m| err(rule_line, m))?
        };
        total += dates.len();
        if total > usize::from(DATES_MAX) {
            return Err(err(
                line,
                format!("the feed expands to more than {DATES_MAX} dates; is a rule daily?"),
            ));
        }
        for d in dates {
            let Ok(last) = d.checked_add((days - 1).days()) else {
                continue;
            };
            out.push(IcsHoliday {
                first: d,
                last,
                name: name.clone(),
                line,
                recurring: !rules.is_empty(),
            });
        }
    }
    out.sort_by_key(|h| (h.first, h.line));
    Ok(out)
}

/// `YYYYMMDD`, the form of an iCalendar DATE (a DATE-TIME is refused).
fn ics_date(text: &str) -> Option<Date> {
    let t = text.trim();
    if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Date::new(
        t[..4].parse().ok()?,
        t[4..6].parse().ok()?,
        t[6..].parse().ok()?,
    )
    .ok()
}

fn compact(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
}

/// Dates are expanded as UTC midnights, so a DATE `UNTIL` becomes the end
/// of its day in UTC (RFC 5545 wants UNTIL in DTSTART's form).
fn until_as_utc(rule: &str) -> String {
    rule.split(';')
        .map(|part| match part.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("UNTIL") && value.len() == 8 => {
                format!("UNTIL={value}T235959Z")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn expand(spec: &str) -> Result<Vec<Date>, String> {
    let set: rrule::RRuleSet = spec
        .parse()
        .map_err(|e: rrule::RRuleError| format!("RRULE is not valid: {e}"))?;
    let (Some(from), Some(until)) = (
        rrule::Tz::UTC
            .with_ymd_and_hms(i32::from(*recur::YEARS.start()), 1, 1, 0, 0, 0)
            .single(),
        rrule::Tz::UTC
            .with_ymd_and_hms(i32::from(*recur::YEARS.end()), 12, 31, 23, 59, 59)
            .single(),
    ) else {
        return Err("the expansion window is not representable".to_owned());
    };
    let result = set.after(from).before(until).all(DATES_MAX);
    if result.limited {
        return Err(format!(
            "RRULE expands to more than {DATES_MAX} dates; is it daily?"
        ));
    }
    Ok(result
        .dates
        .iter()
        .filter_map(|d| d.format("%Y-%m-%d").to_string().parse::<Date>().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn folded_lines_keep_their_file_line_and_rrule_expands() {
        let text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Christ\r\n mas\r\n\
                    DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=25;UNTIL=20281231\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\n";
        let got = parse(text).unwrap();
        let dates: Vec<Date> = got.iter().map(|h| h.first).collect();
        assert_eq!(
            dates,
            [date(2026, 12, 25), date(2027, 12, 25), date(2028, 12, 25)]
        );
        assert_eq!(
            (got[0].name.as_str(), got[0].line, got[0].recurring),
            ("Christmas", 6, true)
        );
    }

    #[test]
    fn a_timed_event_is_refused_at_its_line() {
        let text = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nDTSTART:20260101T090000Z\nEND:VEVENT\nEND:VCALENDAR\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4, "{e:?}");
        assert!(e.message.contains("all-day"), "{e:?}");
    }
}
