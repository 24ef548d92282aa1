//! Holidays that recur every year: a fixed date, the nth (or last) weekday
//! of a month, a day relative to Western or Orthodox Easter, and the
//! "observed" rules that move a holiday off a weekend.
//!
//! Rules are expanded to dates once, when the rules are parsed, for every
//! year in [`YEARS`]: the schedule engine then sees plain dated closures.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};

/// The years recurring holidays (and `RRULE`s of an `.ics` feed) are
/// expanded for. Wide enough for any SLA deadline searched from today (the
/// horizon is ten years); narrow enough to parse in microseconds.
pub const YEARS: RangeInclusive<i16> = 2000..=2199;

/// When a recurring holiday falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The same month and day every year (a 29 February only in leap years).
    Fixed { month: i8, day: i8 },
    /// The nth weekday of a month; `nth` is 1 to 5, or -1 for the last.
    NthWeekday {
        nth: i8,
        weekday: Weekday,
        month: i8,
    },
    /// Days after (or before, when negative) Easter Sunday.
    Easter { orthodox: bool, offset: i32 },
}

/// How a holiday that falls on a weekend is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Observed {
    /// It stays where it falls.
    #[default]
    No,
    /// Saturday and Sunday move to the next weekday that is not already a
    /// holiday (the United Kingdom's "substitute day").
    NextWeekday,
    /// Saturday moves to Friday and Sunday to Monday (United States federal).
    NearestWeekday,
    /// Sunday moves to the next weekday that is not already a holiday;
    /// Saturday stays (as in Japan or Spain's regions).
    SundayToMonday,
}

pub(crate) const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

impl Rule {
    /// Parses what follows `every =`: `"12-25"`, `"last mon of may"`,
    /// `"4th thu of nov"`, `"easter+1"`, `"orthodox_easter-2"`.
    pub(crate) fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim().to_ascii_lowercase();
        for (prefix, orthodox) in [("orthodox_easter", true), ("easter", false)] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let offset = if rest.is_empty() {
                    0
                } else {
                    let digits = rest.strip_prefix('+').unwrap_or(rest);
                    match digits.parse::<i32>() {
                        Ok(n) if (-100..=100).contains(&n) => n,
                        _ => {
                            return Err(format!(
                                "{text:?}: write days from {prefix} as {prefix}+1 or {prefix}-2 \
                                 (within 100 days)"
                            ));
                        }
                    }
                };
                return Ok(Rule::Easter { orthodox, offset });
            }
        }
        if let Some((m, d)) = text.split_once('-')
            && m.len() == 2
            && d.len() == 2
        {
            let month: i8 = m.parse().map_err(|_| bad_every(&text))?;
            let day: i8 = d.parse().map_err(|_| bad_every(&text))?;
            // 2024 is a leap year: every month-day that exists in some year.
            if date_checked(2024, month, day).is_none() {
                return Err(format!(
                    "{text:?} is not a day of the year; write MM-DD, such as \"12-25\""
                ));
            }
            return Ok(Rule::Fixed { month, day });
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        if let [nth, weekday, "of", month] = words[..] {
            let nth = match nth {
                "1st" | "first" => 1,
                "2nd" | "second" => 2,
                "3rd" | "third" => 3,
                "4th" | "fourth" => 4,
                "5th" | "fifth" => 5,
                "last" => -1,
                _ => {
                    return Err(format!(
                        "{text:?}: {nth:?} is not 1st, 2nd, 3rd, 4th, 5th or last"
                    ));
                }
            };
            let weekday = weekday_named(weekday)
                .ok_or_else(|| format!("{text:?}: {weekday:?} is not a day; use mon to sun"))?;
            let month = month_named(month)
                .ok_or_else(|| format!("{text:?}: {month:?} is not a month; use jan to dec"))?;
            return Ok(Rule::NthWeekday {
                nth,
                weekday,
                month,
            });
        }
        Err(bad_every(&text))
    }

    /// The date in `year`, if the rule has one that year (a 5th Monday or a
    /// 29 February may not exist).
    pub(crate) fn in_year(self, year: i16) -> Option<Date> {
        match self {
            Rule::Fixed { month, day } => date_checked(year, month, day),
            Rule::NthWeekday {
                nth,
                weekday,
                month,
            } => {
                let first = date_checked(year, month, 1)?;
                if nth > 0 {
                    let found = first.nth_weekday_of_month(nth, weekday).ok()?;
                    (found.month() == month).then_some(found)
                } else {
                    first.nth_weekday_of_month(-1, weekday).ok()
                }
            }
            Rule::Easter { orthodox, offset } => {
                let sunday = if orthodox {
                    orthodox_easter(year)?
                } else {
                    easter(year)?
                };
                sunday.checked_add(i64::from(offset).days()).ok()
            }
        }
    }
}

fn bad_every(text: &str) -> String {
    format!(
        "{text:?} is not a recurring date; write \"12-25\" (every year), \
         \"last mon of may\", \"4th thu of nov\", \"easter+1\" or \"orthodox_easter-2\""
    )
}

fn date_checked(year: i16, month: i8, day: i8) -> Option<Date> {
    Date::new(year, month, day).ok()
}

fn weekday_named(name: &str) -> Option<Weekday> {
    const DAYS: [(&str, Weekday); 7] = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    let short = name.get(..3)?;
    DAYS.iter().find(|(n, _)| *n == short).map(|(_, d)| *d)
}

fn month_named(name: &str) -> Option<i8> {
    let short = name.get(..3)?;
    MONTHS.iter().position(|m| *m == short).map(|i| i as i8 + 1)
}

/// Western (Gregorian) Easter Sunday: the anonymous Gregorian algorithm
/// (Meeus, *Astronomical Algorithms*, ch. 8).
pub(crate) fn easter(year: i16) -> Option<Date> {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    date_checked(year, month as i8, day as i8)
}

/// Orthodox Easter Sunday: the Julian computus (Meeus), moved to the
/// Gregorian calendar by the century's Julian–Gregorian difference.
pub(crate) fn orthodox_easter(year: i16) -> Option<Date> {
    let y = i32::from(year);
    let a = y % 4;
    let b = y % 7;
    let c = y % 19;
    let d = (19 * c + 15) % 30;
    let e = (2 * a + 4 * b - d + 34) % 7;
    let month = (d + e + 114) / 31;
    let day = (d + e + 114) % 31 + 1;
    let julian_shift = y / 100 - y / 400 - 2;
    date_checked(year, month as i8, day as i8)?
        .checked_add(i64::from(julian_shift).days())
        .ok()
}

fn is_weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// One holiday occurrence before the observed rule moves it.
pub(crate) struct Occurrence {
    pub date: Date,
    pub observed: Observed,
}

/// Moves weekend occurrences by their observed rule. `taken` holds every
/// date that is already a holiday; substitutes avoid them (and each other),
/// earliest holiday first, so Christmas on a Saturday takes Monday and
/// Boxing Day on the Sunday takes Tuesday.
pub(crate) fn observe(occurrences: &[Occurrence], taken: &mut BTreeSet<Date>) -> Vec<Date> {
    let mut order: Vec<usize> = (0..occurrences.len()).collect();
    order.sort_by_key(|&i| occurrences[i].date);
    let mut out: Vec<Date> = occurrences.iter().map(|o| o.date).collect();
    for i in order {
        let o = &occurrences[i];
        let moved = match (o.observed, o.date.weekday()) {
            (Observed::No, _) => None,
            (Observed::NearestWeekday, Weekday::Saturday) => o.date.yesterday().ok(),
            (Observed::NearestWeekday, Weekday::Sunday) => o.date.tomorrow().ok(),
            (Observed::NextWeekday, Weekday::Saturday | Weekday::Sunday)
            | (Observed::SundayToMonday, Weekday::Sunday) => {
                let mut d = o.date;
                loop {
                    let Ok(next) = d.tomorrow() else { break None };
                    d = next;
                    if !is_weekend(d) && !taken.contains(&d) {
                        break Some(d);
                    }
                }
            }
            _ => None,
        };
        if let Some(d) = moved {
            taken.insert(d);
            out[i] = d;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn rules_parse_and_refuse() {
        assert_eq!(Rule::parse("12-25"), Ok(Rule::Fixed { month: 12, day: 25 }));
        assert_eq!(
            Rule::parse("Last Monday of May"),
            Ok(Rule::NthWeekday {
                nth: -1,
                weekday: Weekday::Monday,
                month: 5
            })
        );
        assert_eq!(
            Rule::parse("easter-2"),
            Ok(Rule::Easter {
                orthodox: false,
                offset: -2
            })
        );
        assert_eq!(
            Rule::parse("orthodox_easter"),
            Ok(Rule::Easter {
                orthodox: true,
                offset: 0
            })
        );
        assert!(Rule::parse("02-30").is_err());
        assert!(Rule::parse("6th mon of may").is_err());
        assert!(Rule::parse("easter+x").is_err());
    }

    #[test]
    fn a_fifth_weekday_is_skipped_in_years_without_one() {
        let rule = Rule::NthWeekday {
            nth: 5,
            weekday: Weekday::Friday,
            month: 2,
        };
        assert_eq!(rule.in_year(2026), None);
        assert_eq!(rule.in_year(2036), Some(date(2036, 2, 29)));
    }
}
