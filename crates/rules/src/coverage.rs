//! Coverage simulation: for a range of days, which UTC hours each region and
//! each skill is covered, where nobody is on shift (gaps), and where someone
//! is on shift but nobody with a given skill (knowledge-parity gaps).

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::model::{Holiday, Opening, Rules};

/// Most days one simulation covers.
pub const COVERAGE_DAYS_MAX: u32 = 366;

/// What a row of the grid stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageRowKind {
    Region,
    Skill,
    /// Any region at all.
    Any,
}

/// One region's or skill's coverage, hour by hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageRow {
    pub kind: CoverageRowKind,
    pub name: String,
    /// Covered minutes (0 to 60) of each UTC hour, `days × 24` entries, day
    /// by day.
    pub minutes: Vec<u8>,
}

/// A run of consecutive UTC hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourRange {
    pub start: Timestamp,
    pub end: Timestamp,
    pub hours: u32,
    /// True when some hour of the run is covered for part of the hour.
    pub partial: bool,
}

/// Knowledge-parity gaps of one skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillGaps {
    pub skill: String,
    pub ranges: Vec<HourRange>,
}

/// The result of [`Rules::coverage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub rules_version: String,
    /// First day (UTC).
    pub from: Date,
    pub days: u32,
    /// Regions in file order, then skills, then the `any` row.
    pub rows: Vec<CoverageRow>,
    /// Hours not fully covered by any region.
    pub gaps: Vec<HourRange>,
    /// Per skill, hours during which some region is on shift but no region
    /// with the skill is.
    pub parity_gaps: Vec<SkillGaps>,
    /// Holidays, ranges and extra or replacement hours of the regions and of
    /// calendars with their own hours that fall in the window, by date: why
    /// the grid looks the way it does on those days.
    pub calendar_days: Vec<CalendarDay>,
}

/// What a [`CalendarDay`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarDayKind {
    /// Closed (whole days or part of each).
    Holiday,
    /// Extra open hours.
    Opening,
    /// The date's only open hours.
    Hours,
}

/// A holiday or opening of a region or calendar, for the grid's legend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarDay {
    /// A region id, or `calendar NAME`.
    pub owner: String,
    pub kind: CalendarDayKind,
    pub date: Date,
    /// Inclusive.
    pub last: Date,
    pub name: String,
    /// `"22:00–02:00"`; `None` for whole days.
    pub hours: Option<String>,
    /// As written: `"every last mon of may"`, `"england-and-wales.ics:12"`.
    pub rule: String,
}

impl Rules {
    /// One sentence per region with no holiday in the year from `today`
    /// (`rules check` prints them): a region that works every public
    /// holiday is rare, and a feed that ran out is easy to miss.
    pub fn holiday_warnings(&self, today: Date) -> Vec<String> {
        let last = today
            .checked_add(jiff::Span::new().days(364))
            .unwrap_or(today);
        self.regions
            .iter()
            .filter(|r| !r.holidays.iter().any(|h| h.touches(today, last)))
            .map(|r| {
                let source = match &r.holidays_ics {
                    Some(file) => format!(" ({file} has none in it)"),
                    None => String::new(),
                };
                format!(
                    "warning: region {:?} has no holidays from {today} to {last}{source}; add [[regions.holidays]] (such as every = \"12-25\") or holidays_ics",
                    r.id.as_str()
                )
            })
            .collect()
    }

    /// Holidays and openings of every region, and of every calendar with its
    /// own hours, that touch `[from, to]` (dates, inclusive), by date.
    pub fn calendar_days(&self, from: Date, to: Date) -> Vec<CalendarDay> {
        let mut out = Vec::new();
        let mut add = |owner: String, holidays: Vec<&Holiday>, openings: Vec<&Opening>| {
            for h in holidays {
                out.push(CalendarDay {
                    owner: owner.clone(),
                    kind: CalendarDayKind::Holiday,
                    date: h.date,
                    last: h.last,
                    name: h.name.clone(),
                    hours: h.hours.map(|(s, e)| format!("{s}–{e}")),
                    rule: h.rule.clone(),
                });
            }
            for o in openings {
                out.push(CalendarDay {
                    owner: owner.clone(),
                    kind: if o.instead {
                        CalendarDayKind::Hours
                    } else {
                        CalendarDayKind::Opening
                    },
                    date: o.date,
                    last: o.date,
                    name: o.name.clone(),
                    hours: Some(format!("{}–{}", o.start, o.end)),
                    rule: o.date.to_string(),
                });
            }
        };
        for region in &self.regions {
            let (h, o) = region.days_between(from, to);
            add(region.id.to_string(), h, o);
        }
        for calendar in self.calendars.iter().filter(|c| c.own_hours) {
            let (h, o) = calendar.days_between(from, to);
            add(format!("calendar {}", calendar.name), h, o);
        }
        out.sort_by(|a, b| (a.date, &a.owner).cmp(&(b.date, &b.owner)));
        out
    }
}

/// A set of minutes, one bit each.
struct Minutes {
    bits: Vec<u64>,
}

impl Minutes {
    fn new(len: usize) -> Self {
        Self {
            bits: vec![0; len.div_ceil(64)],
        }
    }

    fn set_range(&mut self, from: usize, to: usize) {
        for m in from..to {
            if let Some(word) = self.bits.get_mut(m / 64) {
                *word |= 1u64 << (m % 64);
            }
        }
    }

    fn or(&mut self, other: &Minutes) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    fn has(&self, m: usize) -> bool {
        self.bits
            .get(m / 64)
            .is_some_and(|w| w & (1u64 << (m % 64)) != 0)
    }

    fn count(&self, from: usize, to: usize) -> u8 {
        // At most 60 minutes per hour, so the count fits in a u8.
        (from..to).filter(|&m| self.has(m)).count().min(60) as u8
    }

    /// Minutes of each hour in `self` but not in `other`.
    fn count_minus(&self, other: &Minutes, from: usize, to: usize) -> u8 {
        (from..to)
            .filter(|&m| self.has(m) && !other.has(m))
            .count()
            .min(60) as u8
    }
}

fn hour_ranges(from: Timestamp, flags: &[(bool, bool)]) -> Vec<HourRange> {
    // flags[h] = (in a gap, partly covered)
    let mut out = Vec::new();
    let mut h = 0;
    while h < flags.len() {
        if !flags[h].0 {
            h += 1;
            continue;
        }
        let start = h;
        let mut partial = false;
        while h < flags.len() && flags[h].0 {
            partial |= flags[h].1;
            h += 1;
        }
        let at = |hour: usize| {
            from.checked_add(SignedDuration::from_hours(hour as i64))
                .unwrap_or(Timestamp::MAX)
        };
        out.push(HourRange {
            start: at(start),
            end: at(h),
            hours: (h - start) as u32,
            partial,
        });
    }
    out
}

impl Rules {
    /// Simulates coverage for `days` days (at most [`COVERAGE_DAYS_MAX`])
    /// starting at 00:00 UTC on `from`.
    pub fn coverage(&self, from: Date, days: u32) -> Coverage {
        let days = days.clamp(1, COVERAGE_DAYS_MAX);
        let total = days as usize * 24 * 60;
        let start = TimeZone::UTC
            .to_timestamp(from.at(0, 0, 0, 0))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let until = start
            .checked_add(SignedDuration::from_mins(total as i64))
            .unwrap_or(Timestamp::MAX);
        let minute_of = |t: Timestamp| -> i64 { t.duration_since(start).as_secs().div_euclid(60) };

        let mut region_minutes = Vec::with_capacity(self.regions.len());
        for region in &self.regions {
            let mut set = Minutes::new(total);
            for open in region.schedule.open_from(start, until) {
                // Whole minutes only: round the start up and the end down.
                let secs_from = open.start.max(start).duration_since(start).as_secs();
                let m_from = (secs_from + 59).div_euclid(60).max(0) as usize;
                let m_to = minute_of(open.end.min(until)).clamp(0, total as i64) as usize;
                if m_from < m_to {
                    set.set_range(m_from, m_to);
                }
            }
            region_minutes.push(set);
        }
        let mut any = Minutes::new(total);
        for set in &region_minutes {
            any.or(set);
        }
        let skill_minutes: Vec<Minutes> = self
            .skills
            .iter()
            .map(|skill| {
                let mut set = Minutes::new(total);
                for (region, minutes) in self.regions.iter().zip(&region_minutes) {
                    if region.skills.contains(skill) {
                        set.or(minutes);
                    }
                }
                set
            })
            .collect();

        let hours = days as usize * 24;
        let grid = |set: &Minutes| -> Vec<u8> {
            (0..hours).map(|h| set.count(h * 60, h * 60 + 60)).collect()
        };
        let mut rows = Vec::new();
        for (region, set) in self.regions.iter().zip(&region_minutes) {
            rows.push(CoverageRow {
                kind: CoverageRowKind::Region,
                name: region.id.to_string(),
                minutes: grid(set),
            });
        }
        for (skill, set) in self.skills.iter().zip(&skill_minutes) {
            rows.push(CoverageRow {
                kind: CoverageRowKind::Skill,
                name: skill.to_string(),
                minutes: grid(set),
            });
        }
        let any_grid = grid(&any);
        let gap_flags: Vec<(bool, bool)> = any_grid.iter().map(|&m| (m < 60, m > 0)).collect();
        let gaps = hour_ranges(start, &gap_flags);
        rows.push(CoverageRow {
            kind: CoverageRowKind::Any,
            name: "any region".to_owned(),
            minutes: any_grid,
        });

        let mut parity_gaps = Vec::new();
        for (skill, set) in self.skills.iter().zip(&skill_minutes) {
            let flags: Vec<(bool, bool)> = (0..hours)
                .map(|h| {
                    let missing = any.count_minus(set, h * 60, h * 60 + 60);
                    let staffed = any.count(h * 60, h * 60 + 60);
                    (missing > 0, missing < staffed || staffed < 60)
                })
                .collect();
            let ranges = hour_ranges(start, &flags);
            if !ranges.is_empty() {
                parity_gaps.push(SkillGaps {
                    skill: skill.to_string(),
                    ranges,
                });
            }
        }

        let last = from
            .checked_add(jiff::Span::new().days(i64::from(days) - 1))
            .unwrap_or(from);
        Coverage {
            rules_version: self.version.clone(),
            from,
            days,
            rows,
            gaps,
            parity_gaps,
            calendar_days: self.calendar_days(from, last),
        }
    }
}
