//! Reading a rules file: TOML into spanned raw structs, then every semantic
//! check, collecting all problems with their line and column.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use jiff::SignedDuration;
use jiff::civil::{Date, Weekday};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use meridian_core::{RegionId, Skill, SpikeConfig, Status, Tier, spike};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Collector, RulesErrors};
use crate::model::*;
use crate::schedule::{
    CivilRange, DayInterval, MINUTES_PER_DAY, Schedule, civil_at, weekday_index,
};
use crate::suggest::closest;
use crate::{ics, recur};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    version: Spanned<String>,
    #[serde(default)]
    overlap_minutes: Option<Spanned<i64>>,
    #[serde(default)]
    routing: Option<Spanned<RawRouting>>,
    #[serde(default)]
    regions: Vec<Spanned<RawRegion>>,
    #[serde(default)]
    calendars: BTreeMap<Spanned<String>, Spanned<RawCalendar>>,
    #[serde(default)]
    tiers: BTreeMap<Spanned<String>, Spanned<RawTier>>,
    #[serde(default)]
    residency: BTreeMap<Spanned<String>, Spanned<RawResidency>>,
    #[serde(default)]
    spike: Option<Spanned<RawSpike>>,
    #[serde(default)]
    customers: BTreeMap<Spanned<String>, Spanned<RawCustomer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomer {
    calendar: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpening {
    date: Spanned<String>,
    start: Spanned<String>,
    end: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    instead: bool,
    #[serde(default)]
    queue_owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpike {
    #[serde(default)]
    bucket: Option<Spanned<String>>,
    #[serde(default)]
    alpha: Option<Spanned<f64>>,
    #[serde(default)]
    threshold_sigmas: Option<Spanned<f64>>,
    #[serde(default)]
    clear_sigmas: Option<Spanned<f64>>,
    #[serde(default)]
    min_count: Option<Spanned<i64>>,
    #[serde(default)]
    warmup_buckets: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    out_of_hours: Option<Spanned<String>>,
    #[serde(default)]
    on_call_region: Option<Spanned<String>>,
    #[serde(default)]
    preference_weight: Option<Spanned<f64>>,
    #[serde(default)]
    load_weight: Option<Spanned<f64>>,
    #[serde(default)]
    headroom_weight: Option<Spanned<f64>>,
    #[serde(default)]
    language_weight: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    id: Spanned<String>,
    index: Spanned<i64>,
    time_zone: Spanned<String>,
    #[serde(default)]
    skills: Vec<Spanned<String>>,
    #[serde(default)]
    languages: Vec<Spanned<String>>,
    capacity: Spanned<i64>,
    #[serde(default)]
    preference: Option<Spanned<i64>>,
    #[serde(default)]
    escalation: Vec<Spanned<String>>,
    #[serde(default)]
    oncall: Option<Spanned<String>>,
    #[serde(default)]
    shifts: Vec<Spanned<RawShift>>,
    #[serde(default)]
    holidays: Vec<Spanned<RawHoliday>>,
    #[serde(default)]
    holidays_ics: Option<Spanned<String>>,
    #[serde(default)]
    openings: Vec<Spanned<RawOpening>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    #[serde(default)]
    name: Option<Spanned<String>>,
    days: Spanned<Vec<Spanned<String>>>,
    start: Spanned<String>,
    end: Spanned<String>,
    queue_owner: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    days: Spanned<Vec<Spanned<String>>>,
    start: Spanned<String>,
    end: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    #[serde(default)]
    date: Option<Spanned<String>>,
    #[serde(default)]
    every: Option<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<String>>,
    #[serde(default)]
    observed: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    end: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    #[serde(default)]
    regions: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    hours: Vec<Spanned<RawHours>>,
    #[serde(default)]
    holidays: Vec<Spanned<RawHoliday>>,
    #[serde(default)]
    holidays_ics: Option<Spanned<String>>,
    #[serde(default)]
    openings: Vec<Spanned<RawOpening>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    calendar: Spanned<String>,
    first_response_minutes: Spanned<i64>,
    next_response_minutes: Spanned<i64>,
    resolution_minutes: Spanned<i64>,
    #[serde(default)]
    pause_on: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResidency {
    regions: Spanned<Vec<Spanned<String>>>,
}

impl Rules {
    /// Parses and validates a rules file. `file_name` only labels errors; this
    /// crate never reads files. Returns every problem found, each with its
    /// line and column, or rules that are complete and consistent.
    pub fn parse(file_name: &str, text: &str) -> Result<Rules, RulesErrors> {
        Self::parse_with_files(file_name, text, &|name: &str| {
            Err(format!(
                "{name} is not read here: iCalendar feeds are read beside a rules file on disk"
            ))
        })
    }

    /// As [`Rules::parse`], reading each `holidays_ics` file through `read`
    /// (given the name as written; the caller resolves it beside the rules
    /// file). A problem in a feed is reported with the feed's name and line.
    pub fn parse_with_files(
        file_name: &str,
        text: &str,
        read: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Rules, RulesErrors> {
        let mut errors = Collector::new(file_name, text);
        let raw: RawRules = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                errors.at(e.span().unwrap_or(0..0), toml_message(e.message()));
                return Err(errors.finish());
            }
        };
        let db = TimeZoneDatabase::bundled();
        let mut builder = Builder {
            errors,
            db,
            file_name,
            text,
            read,
            ics_files: Vec::new(),
        };
        let rules = builder.build(raw);
        // Every check has run; only a file with no problem at all is accepted.
        if builder.errors.is_empty() {
            Ok(rules)
        } else {
            Err(builder.errors.finish())
        }
    }
}

/// The TOML parser's messages end with a newline and sometimes name serde's
/// types; keep the first line, which says what was wrong.
fn toml_message(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .trim()
        .to_owned()
}

/// FNV-1a over the file's bytes. Not cryptographic: it only has to tell two
/// rules files apart in responses and metrics, and it must be stable across
/// builds and machines (std's hasher is not).
fn content_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

struct Builder<'t> {
    errors: Collector<'t>,
    db: TimeZoneDatabase,
    file_name: &'t str,
    text: &'t str,
    read: &'t dyn Fn(&str) -> Result<String, String>,
    ics_files: Vec<String>,
}

/// Weekly hours as written, kept for the overlap check and the messages.
struct Written {
    label: String,
    line: usize,
    span: Range<usize>,
    days: Vec<Weekday>,
    start: WallTime,
    end: WallTime,
}

impl Written {
    /// Minutes after Monday 00:00 for each day, and the length.
    fn week_intervals(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let len = shift_length(self.start, self.end);
        self.days.iter().map(move |d| {
            let start = weekday_index(*d) as u32 * MINUTES_PER_DAY + self.start.0;
            (start, start + len)
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} {}–{})",
            self.label,
            days_text(&self.days),
            self.start,
            self.end
        )
    }
}

/// Days as an operator writes them: runs of three or more become ranges,
/// and a run may wrap the week ("fri-mon").
pub(crate) fn days_text(days: &[Weekday]) -> String {
    let mut present = [false; 7];
    for d in days {
        present[weekday_index(*d)] = true;
    }
    if present.iter().all(|p| *p) {
        return "mon-sun".to_owned();
    }
    // Start after a missing day so no run is split by the end of the week.
    let first = (0..7)
        .find(|&i| present[i] && !present[(i + 6) % 7])
        .unwrap_or(0);
    let mut parts = Vec::new();
    let mut k = 0;
    while k < 7 {
        let i = (first + k) % 7;
        if !present[i] {
            k += 1;
            continue;
        }
        let mut len = 1;
        while len < 7 && present[(i + len) % 7] {
            len += 1;
        }
        if len >= 3 {
            parts.push(format!(
                "{}-{}",
                DAY_NAMES[i].0,
                DAY_NAMES[(i + len - 1) % 7].0
            ));
        } else {
            parts.extend((0..len).map(|o| DAY_NAMES[(i + o) % 7].0.to_owned()));
        }
        k += len;
    }
    parts.join(",")
}

fn shift_length(start: WallTime, end: WallTime) -> u32 {
    if end.0 > start.0 {
        end.0 - start.0
    } else {
        end.0 + MINUTES_PER_DAY - start.0
    }
}

const WEEK_MINUTES: u32 = 7 * MINUTES_PER_DAY;

/// Do two weekly intervals overlap, counting the wrap from Sunday to Monday?
fn overlaps_weekly(a: (u32, u32), b: (u32, u32)) -> bool {
    let week = i64::from(WEEK_MINUTES);
    let (a0, a1, b0, b1) = (
        i64::from(a.0),
        i64::from(a.1),
        i64::from(b.0),
        i64::from(b.1),
    );
    [-week, 0, week].iter().any(|&k| a0 < b1 + k && b0 + k < a1)
}

const DAY_NAMES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn day(name: &str) -> Option<Weekday> {
    DAY_NAMES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

impl Builder<'_> {
    fn build(&mut self, raw: RawRules) -> Rules {
        let version = raw.version.get_ref().trim().to_owned();
        if version.is_empty() {
            self.errors.at(
                raw.version.span(),
                "version is empty; set it to a label you will recognise in logs, such as \"2026-06-01.1\"",
            );
        }
        let overlap_minutes = match &raw.overlap_minutes {
            None => 0,
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(v) if v <= OVERLAP_MINUTES_MAX => v,
                _ => {
                    self.errors.at(
                        m.span(),
                        format!(
                            "overlap_minutes is {}; use a number of minutes from 0 to {OVERLAP_MINUTES_MAX}",
                            m.get_ref()
                        ),
                    );
                    0
                }
            },
        };

        let (regions, built) = self.regions(&raw.regions);
        let region_pos: HashMap<String, usize> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str().to_owned(), i))
            .collect();
        let region_names: Vec<String> = region_pos.keys().cloned().collect();

        // Escalation paths name other regions; resolve them now that every
        // region is known.
        let mut regions = regions;
        let ids: Vec<RegionId> = regions.iter().map(|r| r.id.clone()).collect();
        for (raw_region, pos) in raw.regions.iter().zip(&built) {
            let Some(region) = pos.and_then(|p| regions.get_mut(p)) else {
                continue;
            };
            for entry in &raw_region.get_ref().escalation {
                match region_pos.get(entry.get_ref().as_str()) {
                    Some(_) if region.id.as_str() == entry.get_ref() => {
                        self.errors.at(
                            entry.span(),
                            format!(
                                "escalation path of region {:?} names the region itself; list the regions that take over when it is off shift",
                                region.id.as_str()
                            ),
                        );
                    }
                    Some(&i) => {
                        if region.escalation_pos.contains(&i) {
                            self.errors.at(
                                entry.span(),
                                format!(
                                    "region {:?} appears twice in this escalation path",
                                    entry.get_ref()
                                ),
                            );
                        } else {
                            region.escalation_pos.push(i);
                            region.escalation.push(ids[i].clone());
                        }
                    }
                    None => self.unknown_region(entry, &region_names, "escalation path"),
                }
            }
        }

        let mut skills: Vec<Skill> = Vec::new();
        let mut skill_bit: HashMap<String, u32> = HashMap::new();
        for (raw_region, pos) in raw.regions.iter().zip(&built) {
            let Some(region) = pos.and_then(|p| regions.get_mut(p)) else {
                continue;
            };
            for skill in &region.skills {
                if !skill_bit.contains_key(skill.as_str()) {
                    if skills.len() >= SKILLS_MAX {
                        self.errors.at(
                            raw_region.get_ref().id.span(),
                            format!("the rules name more than {SKILLS_MAX} distinct skills; merge some skills"),
                        );
                        break;
                    }
                    skill_bit.insert(skill.as_str().to_owned(), skills.len() as u32);
                    skills.push(skill.clone());
                }
                if let Some(bit) = skill_bit.get(skill.as_str()) {
                    region.skill_mask |= 1u64 << bit;
                }
            }
        }

        let calendars = self.calendars(&raw.calendars, &regions, &region_pos, &region_names);
        let calendar_names: Vec<String> = calendars.iter().map(|c| c.name.clone()).collect();
        // Calendars that are declared but invalid were reported already; a
        // tier naming one gets no second error.
        let declared: Vec<String> = raw.calendars.keys().map(|k| k.get_ref().clone()).collect();
        let (tiers, tier_pos) = self.tiers(&raw.tiers, &calendar_names, &declared);
        let customers = self.customers(&raw.customers, &calendar_names, &declared);
        let residency = self.residency(&raw.residency, &ids, &region_pos, &region_names);
        let routing = self.routing(raw.routing.as_ref(), &region_pos, &region_names);
        let spike = raw.spike.as_ref().map(|raw| self.spike(raw));

        if raw.regions.is_empty() {
            self.errors.at(
                0..0,
                "no regions are defined; add at least one [[regions]] table",
            );
        }
        if raw.tiers.is_empty() {
            self.errors.at(
                0..0,
                "no tiers are defined; add at least one [tiers.NAME] table with SLA targets",
            );
        }

        let mut residency_mask: HashMap<String, u64> = HashMap::new();
        for rule in &residency {
            let mask = rule
                .regions
                .iter()
                .filter_map(|id| region_pos.get(id.as_str()))
                .fold(0u64, |m, &i| m | (1u64 << i));
            residency_mask.insert(rule.name.clone(), mask);
        }
        // A region id names the region alone, even if a rule has its name.
        for (id, &i) in &region_pos {
            residency_mask.insert(id.clone(), 1u64 << i);
        }

        Rules {
            file_name: self.file_name.to_owned(),
            version,
            content_hash: content_hash(self.text),
            overlap_minutes,
            overlap: SignedDuration::from_mins(i64::from(overlap_minutes)),
            regions,
            region_pos,
            skills,
            skill_bit,
            calendars,
            tiers,
            tier_pos,
            residency,
            residency_mask,
            routing,
            spike,
            customers,
            ics_files: std::mem::take(&mut self.ics_files),
        }
    }

    /// An on-call target's name: it names a notification target of the
    /// gateways' configuration, so it is checked for shape only here.
    fn oncall(&mut self, name: &Spanned<String>) -> Option<String> {
        let text = name.get_ref().trim();
        let fine = !text.is_empty()
            && text.len() <= ONCALL_NAME_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if fine {
            Some(text.to_owned())
        } else {
            self.errors.at(
                name.span(),
                format!(
                    "oncall {:?} is not a target name; use 1 to {ONCALL_NAME_MAX} letters, digits, '-', '_' or '.', naming a notification target such as \"us-east-pager\"",
                    name.get_ref()
                ),
            );
            None
        }
    }

    fn unknown_region(&mut self, entry: &Spanned<String>, known: &[String], context: &str) {
        let hint = match closest(entry.get_ref(), known.iter().map(String::as_str)) {
            Some(s) => format!(" (did you mean {s:?}?)"),
            None => format!(
                "; the regions are {}",
                join_names(sorted(known).iter().map(String::as_str))
            ),
        };
        self.errors.at(
            entry.span(),
            format!("{context} names unknown region {:?}{hint}", entry.get_ref()),
        );
    }

    fn time_zone(&mut self, name: &Spanned<String>) -> Option<(TimeZone, String)> {
        let text = name.get_ref();
        // The bundled database matches names without regard to case; insist
        // on the exact spelling so files stay greppable, but say which.
        let canonical = self
            .db
            .available()
            .find(|n| n.as_str().eq_ignore_ascii_case(text))
            .map(|n| n.as_str().to_owned());
        match canonical {
            Some(c) if &c == text => match self.db.get(&c) {
                Ok(tz) => Some((tz, c)),
                Err(e) => {
                    self.errors.at(
                        name.span(),
                        format!("time zone {text:?} could not be loaded: {e}"),
                    );
                    None
                }
            },
            Some(c) => {
                self.errors.at(
                    name.span(),
                    format!("unknown time zone {text:?} (did you mean {c:?}?)"),
                );
                None
            }
            None => {
                let names: Vec<String> =
                    self.db.available().map(|n| n.as_str().to_owned()).collect();
                let hint = match closest(text, names.iter().map(String::as_str)) {
                    Some(s) => format!(" (did you mean {s:?}?)"),
                    None => "; use an IANA name such as \"Europe/London\"".to_owned(),
                };
                self.errors
                    .at(name.span(), format!("unknown time zone {text:?}{hint}"));
                None
            }
        }
    }

    fn days(&mut self, days: &Spanned<Vec<Spanned<String>>>) -> Vec<Weekday> {
        let mut out: Vec<Weekday> = Vec::new();
        if days.get_ref().is_empty() {
            self.errors.at(
                days.span(),
                "days is empty; list days such as [\"mon-fri\"] or [\"sat\", \"sun\"]",
            );
        }
        for entry in days.get_ref() {
            let text = entry.get_ref().trim();
            let parsed = match text.split_once('-') {
                Some((a, b)) => day(a).zip(day(b)).map(|(a, b)| {
                    // A range may wrap the week, as in "fri-mon".
                    let (a, b) = (weekday_index(a), weekday_index(b));
                    let len = (b + 7 - a) % 7;
                    (0..=len)
                        .map(|k| DAY_NAMES[(a + k) % 7].1)
                        .collect::<Vec<_>>()
                }),
                None => day(text).map(|d| vec![d]),
            };
            match parsed {
                Some(list) => {
                    for d in list {
                        if out.contains(&d) {
                            self.errors.at(entry.span(), format!("{} is listed more than once in days", weekday_name(d)));
                        } else {
                            out.push(d);
                        }
                    }
                }
                None => self.errors.at(
                    entry.span(),
                    format!("unknown day {text:?}; use mon, tue, wed, thu, fri, sat, sun or a range such as \"mon-fri\""),
                ),
            }
        }
        out.sort_by_key(|d| weekday_index(*d));
        out
    }

    fn wall_time(
        &mut self,
        text: &Spanned<String>,
        what: &str,
        allow_midnight_end: bool,
    ) -> Option<WallTime> {
        let parsed = WallTime::parse(text.get_ref(), allow_midnight_end);
        if parsed.is_none() {
            let also = if allow_midnight_end {
                " (or \"24:00\" for midnight at the end of the day)"
            } else {
                ""
            };
            self.errors.at(
                text.span(),
                format!(
                    "{what} {:?} is not a time of day; write it as HH:MM, such as \"09:00\"{also}",
                    text.get_ref()
                ),
            );
        }
        parsed
    }

    /// Checks weekly hours (a region's shifts or a calendar's hours) for empty
    /// and overlapping intervals, and turns them into the schedule's form.
    fn weekly(&mut self, written: &[Written]) -> [Vec<DayInterval>; 7] {
        let mut days: [Vec<DayInterval>; 7] = Default::default();
        for (i, w) in written.iter().enumerate() {
            for earlier in &written[..i] {
                let clash = w
                    .week_intervals()
                    .any(|a| earlier.week_intervals().any(|b| overlaps_weekly(a, b)));
                if clash {
                    self.errors.at(
                        w.span.clone(),
                        format!(
                            "{} overlaps {} at line {}; change the days or times so the two no longer overlap",
                            w.describe(),
                            earlier.describe(),
                            earlier.line
                        ),
                    );
                }
            }
            let len = shift_length(w.start, w.end);
            for d in &w.days {
                days[weekday_index(*d)].push(DayInterval {
                    start_min: w.start.0,
                    end_min: w.start.0 + len,
                    label: i as u32,
                });
            }
        }
        days
    }

    /// A `YYYY-MM-DD` field.
    fn date(&mut self, text: &Spanned<String>, what: &str) -> Option<Date> {
        match text.get_ref().parse::<Date>() {
            Ok(d) if text.get_ref().len() == 10 => Some(d),
            Ok(_) => {
                self.errors.at(
                    text.span(),
                    format!(
                        "{what} {:?} must be a date only, written YYYY-MM-DD",
                        text.get_ref()
                    ),
                );
                None
            }
            Err(e) => {
                let reason = e.to_string();
                let reason = reason
                    .strip_prefix("parsed date is not valid: ")
                    .unwrap_or(&reason)
                    .to_owned();
                self.errors.at(
                    text.span(),
                    format!(
                        "{what} {:?} is not a valid date: {reason}; write it as YYYY-MM-DD",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A start–end pair on a date; an end at or before the start runs past
    /// midnight (but not an empty one).
    fn day_hours(
        &mut self,
        start: &Spanned<String>,
        end: &Spanned<String>,
        what: &str,
    ) -> Option<(WallTime, WallTime)> {
        let s = self.wall_time(start, &format!("{what} start"), false);
        let e = self.wall_time(end, &format!("{what} end"), true);
        let (s, e) = (s?, e?);
        if s == e {
            self.errors.at(
                end.span(),
                format!("{what} starts and ends at {s}; an end before the start runs past midnight, \"24:00\" ends at midnight"),
            );
            return None;
        }
        Some((s, e))
    }

    /// Reads a region's or calendar's holidays: dated, ranges, recurring
    /// (with observed rules) and an `.ics` feed, expanded for
    /// [`recur::YEARS`]; returns them sorted, with their closures.
    fn holidays(
        &mut self,
        raw: &[Spanned<RawHoliday>],
        ics: Option<&Spanned<String>>,
    ) -> (Vec<Holiday>, Vec<CivilRange>) {
        // (first, last, name, hours, rule as written)
        let mut plain: Vec<(Date, Date, String, Hours, String)> = Vec::new();
        let mut observed: Vec<(recur::Occurrence, String, Hours, String)> = Vec::new();
        for h in raw {
            let span = h.span();
            let h = h.get_ref();
            // Checked first so a bad date is reported beside bad hours.
            let first = h.date.as_ref().map(|d| self.date(d, "holiday date"));
            let hours = match (&h.start, &h.end) {
                (None, None) => None,
                (Some(start), Some(end)) => match self.day_hours(start, end, "holiday") {
                    Some(hours) => Some(hours),
                    None => continue,
                },
                (Some(one), None) | (None, Some(one)) => {
                    self.errors.at(
                        one.span(),
                        "a partial holiday needs both start and end; remove both to close the whole day",
                    );
                    continue;
                }
            };
            let name = h.name.clone().unwrap_or_default();
            let observe = match &h.observed {
                None => recur::Observed::No,
                Some(o) => match o.get_ref().as_str() {
                    "next_weekday" => recur::Observed::NextWeekday,
                    "nearest_weekday" => recur::Observed::NearestWeekday,
                    "sunday_to_monday" => recur::Observed::SundayToMonday,
                    "no" => recur::Observed::No,
                    other => {
                        self.errors.at(
                            o.span(),
                            format!("unknown observed rule {other:?}; use \"next_weekday\" (weekend to the next free weekday), \"nearest_weekday\" (Saturday to Friday, Sunday to Monday) or \"sunday_to_monday\""),
                        );
                        continue;
                    }
                },
            };
            match (&h.date, &h.every) {
                (Some(_), None) => {
                    if let Some(o) = &h.observed {
                        self.errors.at(o.span(), "observed applies to recurring holidays (every = ...); a dated holiday is closed on its date");
                        continue;
                    }
                    let Some(Some(first)) = first else { continue };
                    let last = match &h.to {
                        None => first,
                        Some(to) => {
                            let Some(last) = self.date(to, "holiday to") else { continue };
                            let days = first.until(last).map(|s| s.get_days()).unwrap_or(-1);
                            if !(0..=366).contains(&days) {
                                self.errors.at(
                                    to.span(),
                                    format!("holiday to {last} must be on or after its date {first} and within 366 days of it"),
                                );
                                continue;
                            }
                            last
                        }
                    };
                    let rule = if last == first { first.to_string() } else { format!("{first} to {last}") };
                    plain.push((first, last, name, hours, rule));
                }
                (None, Some(every)) => {
                    let rule = match recur::Rule::parse(every.get_ref()) {
                        Ok(rule) => rule,
                        Err(message) => {
                            self.errors.at(every.span(), format!("holiday every {message}"));
                            continue;
                        }
                    };
                    let to = match &h.to {
                        None => None,
                        Some(to) => match (rule, recur::Rule::parse(to.get_ref())) {
                            (recur::Rule::Fixed { .. }, Ok(recur::Rule::Fixed { month, day })) => {
                                if h.observed.is_some() {
                                    self.errors.at(to.span(), "a range is not moved by an observed rule; remove observed or to");
                                    continue;
                                }
                                Some((month, day))
                            }
                            _ => {
                                self.errors.at(
                                    to.span(),
                                    format!("holiday to {:?}: a recurring range runs between two fixed dates, such as every = \"12-24\", to = \"01-02\"", to.get_ref()),
                                );
                                continue;
                            }
                        },
                    };
                    let text = match (&h.to, &h.observed) {
                        (Some(to), _) => format!("every {} to {}", every.get_ref().trim(), to.get_ref().trim()),
                        (None, Some(o)) if observe != recur::Observed::No => {
                            format!("every {}, observed {}", every.get_ref().trim(), o.get_ref())
                        }
                        _ => format!("every {}", every.get_ref().trim()),
                    };
                    for year in recur::YEARS {
                        let Some(first) = rule.in_year(year) else { continue };
                        if let Some((month, day)) = to {
                            // A range that ends before it starts ends next year.
                            let last = Date::new(year, month, day)
                                .ok()
                                .filter(|l| *l >= first)
                                .or_else(|| Date::new(year + 1, month, day).ok());
                            if let Some(last) = last {
                                plain.push((first, last, name.clone(), hours, text.clone()));
                            }
                        } else if observe == recur::Observed::No {
                            plain.push((first, first, name.clone(), hours, text.clone()));
                        } else {
                            observed.push((
                                recur::Occurrence { date: first, observed: observe },
                                name.clone(),
                                hours,
                                text.clone(),
                            ));
                        }
                    }
                }
                (Some(date), Some(_)) => self.errors.at(
                    date.span(),
                    "a holiday has either date (one date, or a range with to) or every (each year); not both",
                ),
                (None, None) => self.errors.at(
                    span,
                    "a holiday needs date = \"YYYY-MM-DD\" or every = \"MM-DD\" (or \"last mon of may\", \"easter+1\")",
                ),
            }
        }
        if let Some(ics) = ics {
            for h in self.ics(ics) {
                plain.push((h.first, h.last, h.name, None, h.rule));
            }
        }
        // Substitutes avoid every day that is already a holiday.
        let mut taken: std::collections::BTreeSet<Date> = std::collections::BTreeSet::new();
        for (first, last, _, hours, _) in &plain {
            if hours.is_none() {
                let mut d = *first;
                while d <= *last {
                    taken.insert(d);
                    let Ok(next) = d.tomorrow() else { break };
                    d = next;
                }
            }
        }
        taken.extend(observed.iter().map(|(o, ..)| o.date));
        let occurrences: Vec<recur::Occurrence> = observed
            .iter()
            .map(|(o, ..)| recur::Occurrence {
                date: o.date,
                observed: o.observed,
            })
            .collect();
        let moved = recur::observe(&occurrences, &mut taken);
        for ((_, name, hours, rule), date) in observed.into_iter().zip(moved) {
            plain.push((date, date, name, hours, rule));
        }
        plain.sort_by_key(|a| (a.0, a.1));

        let mut holidays = Vec::with_capacity(plain.len());
        let mut closures = Vec::with_capacity(plain.len());
        for (first, last, name, hours, rule) in plain {
            match hours {
                None => {
                    if let (Some(start), Some(end)) = (
                        civil_at(first, 0),
                        last.tomorrow().ok().and_then(|d| civil_at(d, 0)),
                    ) {
                        closures.push(CivilRange { start, end });
                    }
                }
                Some((s, e)) => {
                    let len = if e.0 > s.0 {
                        e.0 - s.0
                    } else {
                        e.0 + MINUTES_PER_DAY - s.0
                    };
                    let mut d = first;
                    while d <= last {
                        if let (Some(start), Some(end)) = (civil_at(d, s.0), civil_at(d, s.0 + len))
                        {
                            closures.push(CivilRange { start, end });
                        }
                        let Ok(next) = d.tomorrow() else { break };
                        d = next;
                    }
                }
            }
            holidays.push(Holiday {
                date: first,
                last,
                name,
                hours,
                rule,
            });
        }
        (holidays, closures)
    }

    /// Reads and parses an `.ics` feed named in the rules; problems are
    /// reported in the feed, at its line.
    fn ics(&mut self, name: &Spanned<String>) -> Vec<IcsRead> {
        let file = name.get_ref().trim();
        let plain = !file.is_empty()
            && !file.contains(['/', '\\'])
            && !file.starts_with('.')
            && file.ends_with(".ics");
        if !plain {
            self.errors.at(
                name.span(),
                format!("holidays_ics {file:?} must name a .ics file beside the rules file, such as \"england-and-wales.ics\" (no directories)"),
            );
            return Vec::new();
        }
        if !self.ics_files.iter().any(|f| f == file) {
            self.ics_files.push(file.to_owned());
        }
        let text = match (self.read)(file) {
            Ok(text) => text,
            Err(reason) => {
                self.errors.at(
                    name.span(),
                    format!("holidays_ics {file:?} cannot be read: {reason}"),
                );
                return Vec::new();
            }
        };
        let label = beside(self.file_name, file);
        match ics::parse(&text) {
            Ok(list) => list
                .into_iter()
                .map(|h| IcsRead {
                    first: h.first,
                    last: h.last,
                    name: h.name,
                    rule: format!(
                        "{file}:{}{}",
                        h.line,
                        if h.recurring { " (RRULE)" } else { "" }
                    ),
                })
                .collect(),
            Err(e) => {
                self.errors
                    .elsewhere(name.span(), &label, e.line, e.message);
                Vec::new()
            }
        }
    }

    /// Extra or replacement hours on dates; `label` numbers them after the
    /// shifts. Returns them sorted, with the open ranges and the closures
    /// that `instead` adds.
    fn openings(
        &mut self,
        raw: &[Spanned<RawOpening>],
        label_from: usize,
        region: bool,
    ) -> (Vec<Opening>, Vec<(CivilRange, u32)>, Vec<CivilRange>) {
        let mut list = Vec::new();
        for o in raw {
            let o = o.get_ref();
            let date = self.date(&o.date, "opening date");
            let hours = self.day_hours(&o.start, &o.end, "opening");
            let queue_owner = match (&o.queue_owner, region) {
                (Some(q), true) => q.get_ref().trim().to_owned(),
                (Some(q), false) => {
                    self.errors.at(q.span(), "queue_owner belongs to a region's opening; a calendar's opening only adds business time");
                    String::new()
                }
                (None, _) => String::new(),
            };
            let (Some(date), Some((start, end))) = (date, hours) else {
                continue;
            };
            list.push(Opening {
                date,
                name: o.name.clone().unwrap_or_default(),
                start,
                end,
                instead: o.instead,
                queue_owner,
            });
        }
        list.sort_by_key(|o| (o.date, o.start));
        let mut open = Vec::new();
        let mut closed = Vec::new();
        for (i, o) in list.iter().enumerate() {
            let len = if o.end.0 > o.start.0 {
                o.end.0 - o.start.0
            } else {
                o.end.0 + MINUTES_PER_DAY - o.start.0
            };
            if let (Some(start), Some(end)) = (
                civil_at(o.date, o.start.0),
                civil_at(o.date, o.start.0 + len),
            ) {
                open.push((CivilRange { start, end }, (label_from + i) as u32));
            }
            if o.instead
                && let (Some(start), Some(end)) =
                    (civil_at(o.date, 0), civil_at(o.date, MINUTES_PER_DAY))
            {
                closed.push(CivilRange { start, end });
            }
        }
        (list, open, closed)
    }

    fn customers(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawCustomer>>,
        calendar_names: &[String],
        declared: &[String],
    ) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (name, c) in raw {
            let calendar = &c.get_ref().calendar;
            match calendar_names.iter().position(|n| n == calendar.get_ref()) {
                Some(i) => {
                    out.insert(name.get_ref().trim().to_owned(), i);
                }
                None if declared.contains(calendar.get_ref()) => {}
                None => {
                    let hint = match closest(
                        calendar.get_ref(),
                        calendar_names.iter().map(String::as_str),
                    ) {
                        Some(s) => format!(" (did you mean {s:?}?)"),
                        None => String::new(),
                    };
                    self.errors.at(
                        calendar.span(),
                        format!(
                            "customer {:?} names calendar {:?}, which is not defined{hint}; define [calendars.{}] or use \"24x7\"",
                            name.get_ref(),
                            calendar.get_ref(),
                            calendar.get_ref()
                        ),
                    );
                }
            }
        }
        out
    }

    /// Builds the regions, returning them and, for each raw region, the
    /// position of the region built from it (none when its id is invalid).
    fn regions(&mut self, raw: &[Spanned<RawRegion>]) -> (Vec<Region>, Vec<Option<usize>>) {
        let mut regions = Vec::new();
        let mut built = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut indexes: HashMap<u16, (String, usize)> = HashMap::new();
        if raw.len() > REGIONS_MAX {
            self.errors.at(
                raw[REGIONS_MAX].span(),
                format!(
                    "more than {REGIONS_MAX} regions; one rules file holds at most {REGIONS_MAX}"
                ),
            );
        }
        for spanned in raw.iter().take(REGIONS_MAX) {
            let r = spanned.get_ref();
            let id = match RegionId::new(r.id.get_ref().clone()) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.errors.at(
                        r.id.span(),
                        format!("region id is not valid: {}", core_reason(&e)),
                    );
                    None
                }
            };
            if let Some(id) = &id {
                let line = self.errors.line_of(&r.id.span());
                if let Some(first) = ids.get(id.as_str()) {
                    self.errors.at(
                        r.id.span(),
                        format!("region id {:?} is already defined at line {first}; give each region a unique id", id.as_str()),
                    );
                } else {
                    ids.insert(id.as_str().to_owned(), line);
                }
            }
            let index = match u16::try_from(*r.index.get_ref()) {
                Ok(i) if u64::from(i) < meridian_core::EPOCH_STRIDE => Some(i),
                _ => {
                    self.errors.at(
                        r.index.span(),
                        format!(
                            "region index {} is out of range; use 0 to {} (it is encoded in ownership epochs)",
                            r.index.get_ref(),
                            meridian_core::EPOCH_STRIDE - 1
                        ),
                    );
                    None
                }
            };
            if let Some(index) = index {
                let line = self.errors.line_of(&r.index.span());
                if let Some((other, other_line)) = indexes.get(&index) {
                    self.errors.at(
                        r.index.span(),
                        format!("region index {index} is already used by region {other:?} at line {other_line}; give each region a unique index"),
                    );
                } else {
                    indexes.insert(index, (r.id.get_ref().clone(), line));
                }
            }
            let tz = self.time_zone(&r.time_zone);
            let mut skills: Vec<Skill> = Vec::new();
            for s in &r.skills {
                match Skill::new(s.get_ref().clone()) {
                    Ok(skill) if skills.contains(&skill) => self
                        .errors
                        .at(s.span(), format!("skill {:?} is listed twice", s.get_ref())),
                    Ok(skill) => skills.push(skill),
                    Err(e) => self
                        .errors
                        .at(s.span(), format!("skill is not valid: {}", core_reason(&e))),
                }
            }
            let mut languages: Vec<String> = Vec::new();
            for l in &r.languages {
                match primary_language(l.get_ref()) {
                    Ok(tag) if languages.contains(&tag) => self.errors.at(
                        l.span(),
                        format!("language {:?} is listed twice", l.get_ref()),
                    ),
                    Ok(tag) => languages.push(tag),
                    Err(why) => self.errors.at(l.span(), why),
                }
            }
            let capacity = match u32::try_from(*r.capacity.get_ref()) {
                Ok(c) if c >= 1 => c,
                _ => {
                    self.errors.at(
                        r.capacity.span(),
                        format!("capacity is {}; give the number of open tickets the region can hold, at least 1", r.capacity.get_ref()),
                    );
                    1
                }
            };
            let preference = match &r.preference {
                None => 50,
                Some(p) => match u32::try_from(*p.get_ref()) {
                    Ok(v) if v <= 100 => v,
                    _ => {
                        self.errors.at(
                            p.span(),
                            format!(
                                "preference is {}; use 0 to 100 (higher is preferred)",
                                p.get_ref()
                            ),
                        );
                        50
                    }
                },
            };

            // Shifts.
            let mut shifts = Vec::new();
            let mut written = Vec::new();
            if r.shifts.is_empty() {
                self.errors.at(
                    r.id.span(),
                    format!(
                        "region {:?} has no shifts; add at least one [[regions.shifts]] table",
                        r.id.get_ref()
                    ),
                );
            }
            for (i, s) in r.shifts.iter().enumerate() {
                let span = s.span();
                let s = s.get_ref();
                let days = self.days(&s.days);
                let start = self.wall_time(&s.start, "shift start", false);
                let end = self.wall_time(&s.end, "shift end", true);
                let name = s
                    .name
                    .as_ref()
                    .map_or_else(|| format!("shift {}", i + 1), |n| n.get_ref().clone());
                if s.queue_owner.get_ref().trim().is_empty() {
                    self.errors.at(s.queue_owner.span(), "queue_owner is empty; name the person or team that owns the queue during this shift");
                }
                let (Some(start), Some(end)) = (start, end) else {
                    continue;
                };
                if start.0 == end.0 {
                    self.errors.at(
                        s.end.span(),
                        format!(
                            "shift {name:?} is empty: it starts and ends at {start}; change its end (an end before the start runs past midnight, \"24:00\" ends at midnight)"
                        ),
                    );
                    continue;
                }
                if days.is_empty() {
                    continue;
                }
                let line = self.errors.line_of(&span);
                written.push(Written {
                    label: format!("shift {name:?}"),
                    line,
                    span,
                    days: days.clone(),
                    start,
                    end,
                });
                shifts.push(Shift {
                    name,
                    days,
                    start,
                    end,
                    queue_owner: s.queue_owner.get_ref().trim().to_owned(),
                });
            }
            let week = self.weekly(&written);
            let (holidays, mut closures) = self.holidays(&r.holidays, r.holidays_ics.as_ref());
            let (openings, open, instead) = self.openings(&r.openings, shifts.len(), true);
            closures.extend(instead);
            // An opening without its own queue owner is owned by the
            // region's first shift's.
            let default_owner = shifts
                .first()
                .map(|s| s.queue_owner.clone())
                .unwrap_or_default();
            let opening_shifts: Vec<Shift> = openings
                .iter()
                .map(|o| Shift {
                    name: if o.name.is_empty() {
                        format!("opening {}", o.date)
                    } else {
                        o.name.clone()
                    },
                    days: vec![o.date.weekday()],
                    start: o.start,
                    end: o.end,
                    queue_owner: if o.queue_owner.is_empty() {
                        default_owner.clone()
                    } else {
                        o.queue_owner.clone()
                    },
                })
                .collect();

            // A region with a bad time zone or index is still built (with a
            // placeholder), so references to it do not produce a cascade of
            // "unknown region" errors; the file is refused all the same.
            let (tz, tz_name) = tz.unwrap_or((TimeZone::UTC, String::new()));
            let index = index.unwrap_or(0);
            built.push(id.as_ref().map(|_| regions.len()));
            if let Some(id) = id {
                let schedule = Schedule::new(tz.clone(), week, closures, open);
                regions.push(Region {
                    id,
                    index,
                    time_zone: tz,
                    time_zone_name: tz_name,
                    skills,
                    skill_mask: 0,
                    languages,
                    capacity,
                    preference,
                    escalation: Vec::new(),
                    escalation_pos: Vec::new(),
                    oncall: r.oncall.as_ref().and_then(|o| self.oncall(o)),
                    shifts,
                    holidays,
                    openings,
                    holidays_ics: r
                        .holidays_ics
                        .as_ref()
                        .map(|f| f.get_ref().trim().to_owned()),
                    opening_shifts,
                    schedule,
                });
            }
        }
        (regions, built)
    }

    fn calendars(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawCalendar>>,
        regions: &[Region],
        region_pos: &HashMap<String, usize>,
        region_names: &[String],
    ) -> Vec<Calendar> {
        let mut out = vec![Calendar {
            name: CALENDAR_24X7.to_owned(),
            time_zone: TimeZone::UTC,
            holidays: Vec::new(),
            openings: Vec::new(),
            holidays_ics: None,
            own_hours: false,
            kind: CalendarKind::Always,
        }];
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (name, cal) in entries {
            let cal = cal.get_ref();
            if name.get_ref() == CALENDAR_24X7 {
                self.errors.at(
                    name.span(),
                    "calendar name \"24x7\" is built in (round-the-clock time); pick another name",
                );
                continue;
            }
            match (&cal.regions, &cal.time_zone) {
                (Some(list), None) => {
                    if !cal.hours.is_empty()
                        || !cal.holidays.is_empty()
                        || !cal.openings.is_empty()
                        || cal.holidays_ics.is_some()
                    {
                        self.errors.at(
                            list.span(),
                            format!(
                                "calendar {:?} takes its hours, holidays and openings from its regions; remove them here (give them to the regions), or replace regions with time_zone",
                                name.get_ref()
                            ),
                        );
                    }
                    if list.get_ref().is_empty() {
                        self.errors.at(list.span(), format!("calendar {:?} names no region; list at least one", name.get_ref()));
                    }
                    let mut schedules = Vec::new();
                    let mut holidays = Vec::new();
                    let mut openings = Vec::new();
                    for entry in list.get_ref() {
                        match region_pos.get(entry.get_ref().as_str()).and_then(|&i| regions.get(i)) {
                            Some(region) => {
                                schedules.push(region.schedule.clone());
                                holidays.extend(region.holidays.iter().cloned().map(|mut h| {
                                    h.name = format!("{} ({})", h.name, region.id);
                                    h
                                }));
                                openings.extend(region.openings.iter().cloned());
                            }
                            None => self.unknown_region(entry, region_names, &format!("calendar {:?}", name.get_ref())),
                        }
                    }
                    if let Some(first) = schedules.first() {
                        let tz = first.tz.clone();
                        holidays.sort_by_key(|h: &Holiday| (h.date, h.last));
                        openings.sort_by_key(|o: &Opening| (o.date, o.start));
                        out.push(Calendar {
                            name: name.get_ref().clone(),
                            time_zone: tz,
                            holidays,
                            openings,
                            holidays_ics: None,
                            own_hours: false,
                            kind: CalendarKind::Business(schedules),
                        });
                    }
                }
                (None, Some(tz_name)) => {
                    let tz = self.time_zone(tz_name);
                    if cal.hours.is_empty() {
                        self.errors.at(
                            tz_name.span(),
                            format!("calendar {:?} has no hours; add [[calendars.{}.hours]] with days, start and end", name.get_ref(), name.get_ref()),
                        );
                    }
                    let mut written = Vec::new();
                    for (i, h) in cal.hours.iter().enumerate() {
                        let span = h.span();
                        let h = h.get_ref();
                        let days = self.days(&h.days);
                        let start = self.wall_time(&h.start, "hours start", false);
                        let end = self.wall_time(&h.end, "hours end", true);
                        let (Some(start), Some(end)) = (start, end) else { continue };
                        if start == end {
                            self.errors.at(
                                h.end.span(),
                                format!("hours are empty: they start and end at {start}; change the end (\"24:00\" ends at midnight)"),
                            );
                            continue;
                        }
                        let line = self.errors.line_of(&span);
                        written.push(Written { label: format!("hours {}", i + 1), line, span, days, start, end });
                    }
                    let week = self.weekly(&written);
                    let (holidays, mut closures) = self.holidays(&cal.holidays, cal.holidays_ics.as_ref());
                    let (openings, open, instead) = self.openings(&cal.openings, 0, false);
                    closures.extend(instead);
                    if let Some((tz, _)) = tz {
                        let schedule = Schedule::new(tz.clone(), week, closures, open);
                        out.push(Calendar {
                            name: name.get_ref().clone(),
                            time_zone: tz,
                            holidays,
                            openings,
                            holidays_ics: cal.holidays_ics.as_ref().map(|f| f.get_ref().trim().to_owned()),
                            own_hours: true,
                            kind: CalendarKind::Business(vec![schedule]),
                        });
                    }
                }
                (Some(list), Some(_)) => self.errors.at(
                    list.span(),
                    format!("calendar {:?} has both regions and time_zone; keep one (regions borrows their shifts, time_zone needs hours)", name.get_ref()),
                ),
                (None, None) => self.errors.at(
                    name.span(),
                    format!("calendar {:?} needs regions = [...] or time_zone with hours", name.get_ref()),
                ),
            }
        }
        out
    }

    fn tiers(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawTier>>,
        calendar_names: &[String],
        declared: &[String],
    ) -> (Vec<TierPolicy>, HashMap<String, usize>) {
        let mut tiers = Vec::new();
        let mut pos = HashMap::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (name, t) in entries {
            let t = t.get_ref();
            let tier = match Tier::new(name.get_ref().clone()) {
                Ok(tier) => Some(tier),
                Err(e) => {
                    self.errors.at(
                        name.span(),
                        format!("tier name is not valid: {}", core_reason(&e)),
                    );
                    None
                }
            };
            let calendar = calendar_names
                .iter()
                .position(|c| c == t.calendar.get_ref());
            if calendar.is_none() && !declared.contains(t.calendar.get_ref()) {
                let hint = match closest(
                    t.calendar.get_ref(),
                    calendar_names.iter().map(String::as_str),
                ) {
                    Some(s) => format!(" (did you mean {s:?}?)"),
                    None => String::new(),
                };
                self.errors.at(
                    t.calendar.span(),
                    format!(
                        "tier {:?} names calendar {:?}, which is not defined{hint}; define [calendars.{}] or use \"24x7\"",
                        name.get_ref(),
                        t.calendar.get_ref(),
                        t.calendar.get_ref()
                    ),
                );
            }
            let mut minutes = |m: &Spanned<i64>, field: &str| match u32::try_from(*m.get_ref()) {
                Ok(v) if (1..=SLA_MINUTES_MAX).contains(&v) => v,
                _ => {
                    self.errors.at(
                        m.span(),
                        format!(
                            "{field} is {}; use a number of minutes from 1 to {SLA_MINUTES_MAX}",
                            m.get_ref()
                        ),
                    );
                    1
                }
            };
            let first = minutes(&t.first_response_minutes, "first_response_minutes");
            let next = minutes(&t.next_response_minutes, "next_response_minutes");
            let resolution = minutes(&t.resolution_minutes, "resolution_minutes");
            let mut pause_on = Vec::new();
            for s in &t.pause_on {
                match s.get_ref().parse::<Status>() {
                    Ok(status) if !pause_on.contains(&status) => pause_on.push(status),
                    Ok(_) => self.errors.at(s.span(), format!("status {:?} is listed twice in pause_on", s.get_ref())),
                    Err(_) => self.errors.at(
                        s.span(),
                        format!("unknown status {:?} in pause_on; use new, open, pending, escalated, solved or closed", s.get_ref()),
                    ),
                }
            }
            if let (Some(tier), Some(calendar)) = (tier, calendar) {
                pos.insert(tier.as_str().to_owned(), tiers.len());
                tiers.push(TierPolicy {
                    tier,
                    calendar,
                    first_response_minutes: first,
                    next_response_minutes: next,
                    resolution_minutes: resolution,
                    pause_on,
                });
            }
        }
        (tiers, pos)
    }

    fn residency(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawResidency>>,
        ids: &[RegionId],
        region_pos: &HashMap<String, usize>,
        region_names: &[String],
    ) -> Vec<ResidencyRule> {
        let mut out = Vec::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (name, r) in entries {
            let list = &r.get_ref().regions;
            if list.get_ref().is_empty() {
                self.errors.at(
                    list.span(),
                    format!(
                        "residency {:?} names no region; list the regions its data may stay in, such as regions = [\"eu-west\"]",
                        name.get_ref()
                    ),
                );
                continue;
            }
            let mut regions = Vec::new();
            for entry in list.get_ref() {
                match region_pos.get(entry.get_ref().as_str()) {
                    Some(&i) => regions.push(ids[i].clone()),
                    None => self.unknown_region(
                        entry,
                        region_names,
                        &format!("residency {:?}", name.get_ref()),
                    ),
                }
            }
            out.push(ResidencyRule {
                name: name.get_ref().clone(),
                regions,
            });
        }
        out
    }

    fn routing(
        &mut self,
        raw: Option<&Spanned<RawRouting>>,
        region_pos: &HashMap<String, usize>,
        region_names: &[String],
    ) -> Routing {
        let mut routing = Routing {
            out_of_hours: OutOfHoursKind::NextOnShift,
            on_call: None,
            preference_weight: 1.0,
            load_weight: 1.0,
            headroom_weight: 1.0,
            language_weight: LANGUAGE_WEIGHT_DEFAULT,
        };
        let Some(raw) = raw else { return routing };
        let raw = raw.get_ref();
        if let Some(policy) = &raw.out_of_hours {
            routing.out_of_hours = match policy.get_ref().as_str() {
                "next_on_shift" => OutOfHoursKind::NextOnShift,
                "on_call" => OutOfHoursKind::OnCall,
                "escalation" => OutOfHoursKind::Escalation,
                other => {
                    self.errors.at(
                        policy.span(),
                        format!("unknown out_of_hours policy {other:?}; use \"next_on_shift\", \"on_call\" or \"escalation\""),
                    );
                    OutOfHoursKind::NextOnShift
                }
            };
        }
        match (&raw.on_call_region, routing.out_of_hours) {
            (Some(region), OutOfHoursKind::OnCall) => match region_pos.get(region.get_ref().as_str()) {
                Some(&i) => routing.on_call = Some(i),
                None => self.unknown_region(region, region_names, "on_call_region"),
            },
            (None, OutOfHoursKind::OnCall) => {
                let span = raw.out_of_hours.as_ref().map_or(0..0, |p| p.span());
                self.errors.at(span, "out_of_hours = \"on_call\" needs on_call_region = \"REGION\" in [routing]");
            }
            (Some(region), _) => self.errors.at(
                region.span(),
                "on_call_region is set but out_of_hours is not \"on_call\"; remove it or set out_of_hours = \"on_call\"",
            ),
            (None, _) => {}
        }
        for (weight, field, target) in [
            (
                &raw.preference_weight,
                "preference_weight",
                &mut routing.preference_weight,
            ),
            (&raw.load_weight, "load_weight", &mut routing.load_weight),
            (
                &raw.headroom_weight,
                "headroom_weight",
                &mut routing.headroom_weight,
            ),
            (
                &raw.language_weight,
                "language_weight",
                &mut routing.language_weight,
            ),
        ] {
            if let Some(w) = weight {
                let v = *w.get_ref();
                if v.is_finite() && (0.0..=100.0).contains(&v) {
                    *target = v;
                } else {
                    self.errors.at(
                        w.span(),
                        format!("{field} is {v}; use a number from 0 to 100"),
                    );
                }
            }
        }
        routing
    }
}

impl Builder<'_> {
    /// The `[spike]` table: every key optional, defaults from the core.
    fn spike(&mut self, raw: &Spanned<RawSpike>) -> SpikeConfig {
        let mut config = SpikeConfig::default();
        let table = raw.span();
        let raw = raw.get_ref();
        if let Some(bucket) = &raw.bucket {
            match parse_bucket(bucket.get_ref()) {
                Some(d) if (spike::BUCKET_MIN..=spike::BUCKET_MAX).contains(&d) => config.bucket = d,
                _ => self.errors.at(
                    bucket.span(),
                    format!(
                        "spike bucket is {:?}; use a whole number of seconds, minutes or hours from \"1s\" to \"24h\", such as \"1m\"",
                        bucket.get_ref()
                    ),
                ),
            }
        }
        if let Some(alpha) = &raw.alpha {
            let v = *alpha.get_ref();
            if v > 0.0 && v <= 1.0 {
                config.alpha = v;
            } else {
                self.errors.at(
                    alpha.span(),
                    format!("spike alpha is {v}; use a number above 0 and at most 1 (the weight of the newest bucket in the baseline, such as 0.1)"),
                );
            }
        }
        if let Some(sigmas) = &raw.threshold_sigmas {
            let v = *sigmas.get_ref();
            if v.is_finite() && v > 0.0 && v <= 100.0 {
                config.threshold_sigmas = v;
            } else {
                self.errors.at(
                    sigmas.span(),
                    format!("spike threshold_sigmas is {v}; use a number above 0 and at most 100"),
                );
            }
        }
        if let Some(sigmas) = &raw.clear_sigmas {
            let v = *sigmas.get_ref();
            if v.is_finite() && v >= 0.0 {
                config.clear_sigmas = v;
            } else {
                self.errors.at(
                    sigmas.span(),
                    format!(
                        "spike clear_sigmas is {v}; use a number from 0 up to threshold_sigmas"
                    ),
                );
            }
        }
        // Hysteresis needs the clear line below the raise line.
        if config.clear_sigmas >= config.threshold_sigmas {
            let span = raw
                .clear_sigmas
                .as_ref()
                .or(raw.threshold_sigmas.as_ref())
                .map_or(table, |s| s.span());
            self.errors.at(
                span,
                format!(
                    "spike clear_sigmas ({}) must be below threshold_sigmas ({}), or an alert could never stay raised",
                    config.clear_sigmas, config.threshold_sigmas
                ),
            );
        }
        for (value, field, target) in [
            (&raw.min_count, "min_count", &mut config.min_count),
            (
                &raw.warmup_buckets,
                "warmup_buckets",
                &mut config.warmup_buckets,
            ),
        ] {
            if let Some(n) = value {
                match u32::try_from(*n.get_ref()) {
                    Ok(v) if (1..=SPIKE_COUNT_MAX).contains(&v) => *target = v,
                    _ => self.errors.at(
                        n.span(),
                        format!(
                            "spike {field} is {}; use a whole number from 1 to {SPIKE_COUNT_MAX}",
                            n.get_ref()
                        ),
                    ),
                }
            }
        }
        config
    }
}

/// Largest `min_count` or `warmup_buckets`.
const SPIKE_COUNT_MAX: u32 = 1_000_000;

/// A bucket length as written: a whole number and `s`, `m` or `h`.
fn parse_bucket(text: &str) -> Option<SignedDuration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if n <= 0 {
        return None;
    }
    match unit {
        's' => Some(SignedDuration::from_secs(n)),
        'm' => n.checked_mul(60).map(SignedDuration::from_secs),
        'h' => n.checked_mul(3600).map(SignedDuration::from_secs),
        _ => None,
    }
}

/// The closed part of each day of a holiday; `None` is the whole day.
type Hours = Option<(WallTime, WallTime)>;

/// One holiday read from a feed, with where it came from.
struct IcsRead {
    first: Date,
    last: Date,
    name: String,
    rule: String,
}

/// The path of `file` beside the rules file, for messages.
fn beside(rules_file: &str, file: &str) -> String {
    match std::path::Path::new(rules_file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(file).display().to_string(),
        _ => file.to_owned(),
    }
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}

/// The reason part of a core validation error, without its field prefix.
fn core_reason(e: &meridian_core::Error) -> String {
    match e {
        meridian_core::Error::InvalidField { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// The default weight of speaking the ticket's language: above the most the
/// other parts can add up to with default weights (preference 1, load 1,
/// headroom 1 doubled for urgent tickets: 4), so among the eligible regions
/// one that speaks the language wins unless the operator lowers it.
pub(crate) const LANGUAGE_WEIGHT_DEFAULT: f64 = 4.5;

/// A region's language: a BCP 47 primary language subtag (ISO 639, two or
/// three letters), taken case-insensitively and kept lowercase.
fn primary_language(raw: &str) -> Result<String, String> {
    let tag = raw.trim();
    let is_letters = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
    if (2..=3).contains(&tag.len()) && is_letters(tag) {
        return Ok(tag.to_ascii_lowercase());
    }
    match tag.split(['-', '_']).next() {
        Some(primary)
            if primary.len() != tag.len()
                && (2..=3).contains(&primary.len())
                && is_letters(primary) =>
        {
            Err(format!(
                "language {raw:?} is a full language tag; regions declare primary language subtags only, such as {:?}",
                primary.to_ascii_lowercase()
            ))
        }
        _ => Err(format!(
            "language {raw:?} is not a BCP 47 primary language subtag; use two or three letters such as \"en\", \"de\" or \"yue\""
        )),
    }
}
