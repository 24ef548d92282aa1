//! The validated rules: what a parsed file means, with the lookups the router
//! needs precomputed once per rules version.

use std::collections::HashMap;
use std::fmt;

use jiff::SignedDuration;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use meridian_core::{RegionId, Skill, SpikeConfig, Status, Tier};
use serde::Serialize;

use crate::schedule::Schedule;

/// Most regions one rules file may define. Region sets are bit masks in the
/// routing hot path; epochs allow indexes up to 1023, but one mesh with more
/// than 64 regions is not a follow-the-sun mesh anyone runs.
pub const REGIONS_MAX: usize = 64;
/// Most distinct skills one rules file may name (skill sets are bit masks).
pub const SKILLS_MAX: usize = 64;
/// Largest overlap window between consecutive shifts.
pub const OVERLAP_MINUTES_MAX: u32 = 240;
/// Largest SLA target: one year of minutes.
pub const SLA_MINUTES_MAX: u32 = 366 * 24 * 60;
/// Longest on-call target name.
pub const ONCALL_NAME_MAX: usize = 64;
/// The name of the built-in round-the-clock calendar.
pub const CALENDAR_24X7: &str = "24x7";

/// A validated rules file. Cheap to share (`Arc<Rules>`); immutable.
#[derive(Debug, Clone)]
pub struct Rules {
    pub(crate) file_name: String,
    pub(crate) version: String,
    pub(crate) content_hash: String,
    pub(crate) overlap_minutes: u32,
    pub(crate) overlap: SignedDuration,
    pub(crate) regions: Vec<Region>,
    pub(crate) region_pos: HashMap<String, usize>,
    /// Every skill any region covers; a skill's position is its bit.
    pub(crate) skills: Vec<Skill>,
    pub(crate) skill_bit: HashMap<String, u32>,
    /// Position 0 is always the built-in `24x7` calendar.
    pub(crate) calendars: Vec<Calendar>,
    pub(crate) tiers: Vec<TierPolicy>,
    pub(crate) tier_pos: HashMap<String, usize>,
    pub(crate) residency: Vec<ResidencyRule>,
    /// Region ids and residency rule names to the set of regions (bit per
    /// region position) they allow.
    pub(crate) residency_mask: HashMap<String, u64>,
    pub(crate) routing: Routing,
    /// Volume-spike alerts (`[spike]`); `None` when the file has no table.
    pub(crate) spike: Option<SpikeConfig>,
    /// `[customers.NAME] calendar = ...`: customer to calendar position.
    pub(crate) customers: HashMap<String, usize>,
    /// `.ics` files the rules read, by the name written in the rules.
    pub(crate) ics_files: Vec<String>,
}

/// A wall-clock time of day, in minutes after midnight; `24:00` (1440) is
/// allowed as an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub(crate) u32);

impl WallTime {
    pub fn minutes(self) -> u32 {
        self.0
    }

    /// Parses `HH:MM`; `24:00` only when `allow_midnight_end`.
    pub(crate) fn parse(text: &str, allow_midnight_end: bool) -> Option<Self> {
        let (h, m) = text.split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: u32 = h.parse().ok()?;
        let m: u32 = m.parse().ok()?;
        match (h, m) {
            (0..=23, 0..=59) => Some(Self(h * 60 + m)),
            (24, 0) if allow_midnight_end => Some(Self(24 * 60)),
            _ => None,
        }
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for WallTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A region of the mesh.
#[derive(Debug, Clone)]
pub struct Region {
    pub id: RegionId,
    /// Encoded in ownership epochs; unique, below 1024.
    pub index: u16,
    pub time_zone: TimeZone,
    pub time_zone_name: String,
    pub skills: Vec<Skill>,
    pub(crate) skill_mask: u64,
    /// The languages the region serves: BCP 47 primary subtags, lowercase
    /// (`en`, `de`). Empty means not declared.
    pub languages: Vec<String>,
    /// Open tickets the region can hold at full staffing.
    pub capacity: u32,
    /// Routing preference, 0 to 100; higher is preferred.
    pub preference: u32,
    /// Where tickets go, in order, when nothing is on shift and this region
    /// starts the escalation.
    pub escalation: Vec<RegionId>,
    pub(crate) escalation_pos: Vec<usize>,
    /// The notification target told when an escalation from this region
    /// finds no region of its path on shift (`oncall = "NAME"`).
    pub oncall: Option<String>,
    pub shifts: Vec<Shift>,
    /// Every closure, expanded and sorted by date.
    pub holidays: Vec<Holiday>,
    /// Extra or replacement hours, sorted by date; open time labelled
    /// `shifts.len() + i` belongs to `openings[i]`.
    pub openings: Vec<Opening>,
    /// The `.ics` feed the holidays were read from, if any.
    pub holidays_ics: Option<String>,
    pub(crate) opening_shifts: Vec<Shift>,
    pub(crate) schedule: Schedule,
}

/// A weekly shift of a region, in the region's wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Shift {
    pub name: String,
    #[serde(serialize_with = "serialize_days")]
    pub days: Vec<Weekday>,
    pub start: WallTime,
    /// Before `start` means the shift crosses midnight into the next day.
    pub end: WallTime,
    pub queue_owner: String,
}

fn serialize_days<S: serde::Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(days.iter().map(|d| weekday_name(*d)))
}

pub(crate) fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// A closed day (or days, or part of each) in a region or calendar: one
/// occurrence, with recurring rules and `.ics` feeds already expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holiday {
    /// The first closed day (for an observed holiday, the day it moved to).
    pub date: Date,
    /// The last closed day, inclusive; `date` itself for one day.
    pub last: Date,
    pub name: String,
    /// `None` closes the whole of each day; otherwise the closed part of
    /// each. An end at or before the start runs past midnight.
    pub hours: Option<(WallTime, WallTime)>,
    /// Where it comes from, as written: `"2026-12-25"`, `"every last mon
    /// of may"`, `"england-and-wales.ics:12"`.
    pub rule: String,
}

/// Extra open time on one date in a region or calendar, or (`instead`)
/// the date's only open time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opening {
    pub date: Date,
    pub name: String,
    pub start: WallTime,
    /// At or before `start` runs past midnight.
    pub end: WallTime,
    /// These hours replace the date's regular hours (and close its holidays).
    pub instead: bool,
    /// Who owns the queue (regions only).
    pub queue_owner: String,
}

impl Holiday {
    /// Does it close some of `[from, to]` (dates, inclusive)?
    pub fn touches(&self, from: Date, to: Date) -> bool {
        self.last >= from && self.date <= to
    }
}

/// The holidays and openings of a region or calendar that touch
/// `[from, to]`, in date order.
fn between<'a>(
    holidays: &'a [Holiday],
    openings: &'a [Opening],
    from: Date,
    to: Date,
) -> (Vec<&'a Holiday>, Vec<&'a Opening>) {
    (
        holidays.iter().filter(|h| h.touches(from, to)).collect(),
        openings
            .iter()
            .filter(|o| o.date >= from && o.date <= to)
            .collect(),
    )
}

/// A named business calendar, or the built-in `24x7`.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub name: String,
    /// The zone deadlines are shown in.
    pub time_zone: TimeZone,
    /// A calendar with its own hours: its closures and extra hours (one
    /// built from regions carries its regions').
    pub holidays: Vec<Holiday>,
    pub openings: Vec<Opening>,
    pub holidays_ics: Option<String>,
    /// Has its own hours (`time_zone`), not its regions'.
    pub(crate) own_hours: bool,
    pub(crate) kind: CalendarKind,
}

impl Calendar {
    /// Holidays and openings that touch `[from, to]`.
    pub fn days_between(&self, from: Date, to: Date) -> (Vec<&Holiday>, Vec<&Opening>) {
        between(&self.holidays, &self.openings, from, to)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum CalendarKind {
    /// Every instant counts.
    Always,
    /// An instant counts when any of the schedules is open.
    Business(Vec<Schedule>),
}

/// Which SLA target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Metric {
    pub const ALL: [Metric; 3] = [
        Metric::FirstResponse,
        Metric::NextResponse,
        Metric::Resolution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FirstResponse => "first_response",
            Metric::NextResponse => "next_response",
            Metric::Resolution => "resolution",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown metric {s:?}; use first_response, next_response or resolution")
            })
    }
}

/// A tier's SLA policy.
#[derive(Debug, Clone)]
pub struct TierPolicy {
    pub tier: Tier,
    pub(crate) calendar: usize,
    pub first_response_minutes: u32,
    pub next_response_minutes: u32,
    pub resolution_minutes: u32,
    /// Statuses during which the SLA clock stops.
    pub pause_on: Vec<Status>,
}

impl TierPolicy {
    pub fn minutes(&self, metric: Metric) -> u32 {
        match metric {
            Metric::FirstResponse => self.first_response_minutes,
            Metric::NextResponse => self.next_response_minutes,
            Metric::Resolution => self.resolution_minutes,
        }
    }

    /// Does a ticket in `status` have its SLA clock stopped?
    pub fn pauses_on(&self, status: Status) -> bool {
        self.pause_on.contains(&status)
    }
}

/// A named set of regions a ticket's data may stay in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidencyRule {
    pub name: String,
    pub regions: Vec<RegionId>,
}

/// What happens to a ticket when no eligible region is on shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfHoursKind {
    /// The region whose next shift starts soonest.
    NextOnShift,
    /// A fixed on-call region.
    OnCall,
    /// The escalation path of the most preferred allowed region.
    Escalation,
}

impl OutOfHoursKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutOfHoursKind::NextOnShift => "next_on_shift",
            OutOfHoursKind::OnCall => "on_call",
            OutOfHoursKind::Escalation => "escalation",
        }
    }
}

/// Routing settings.
#[derive(Debug, Clone)]
pub struct Routing {
    pub out_of_hours: OutOfHoursKind,
    pub(crate) on_call: Option<usize>,
    pub preference_weight: f64,
    pub load_weight: f64,
    pub headroom_weight: f64,
    /// Added to the score of a region that speaks the ticket's language.
    pub language_weight: f64,
}

impl Rules {
    /// The version the operator wrote in the file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A hash of the file's exact bytes (FNV-1a, 64 bits, hex): two files with
    /// the same `version` string but different content are told apart.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// `version+hash`, the identifier shown in responses and metrics.
    pub fn version_id(&self) -> String {
        format!("{}+{}", self.version, self.content_hash)
    }

    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    pub fn overlap_minutes(&self) -> u32 {
        self.overlap_minutes
    }

    /// Regions in file order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn region(&self, id: &str) -> Option<&Region> {
        self.region_pos.get(id).map(|&i| &self.regions[i])
    }

    /// Every skill some region covers, in first-mentioned order.
    pub fn skills(&self) -> &[Skill] {
        &self.skills
    }

    /// Calendars, starting with the built-in `24x7`.
    pub fn calendars(&self) -> &[Calendar] {
        &self.calendars
    }

    pub fn calendar(&self, name: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.name == name)
    }

    pub fn tiers(&self) -> &[TierPolicy] {
        &self.tiers
    }

    pub fn tier(&self, name: &str) -> Option<&TierPolicy> {
        self.tier_pos.get(name).map(|&i| &self.tiers[i])
    }

    /// The calendar a tier's SLA is measured in.
    pub fn tier_calendar(&self, policy: &TierPolicy) -> &Calendar {
        // Built by the parser from a checked name; position 0 (24x7) always
        // exists, so fall back to it rather than fail.
        self.calendars
            .get(policy.calendar)
            .unwrap_or(&self.calendars[0])
    }

    /// The calendar a customer's SLA clocks follow: the customer's own
    /// (`[customers.NAME]`) when the rules give one, else the tier's.
    pub fn sla_calendar(&self, policy: &TierPolicy, customer: Option<&str>) -> &Calendar {
        customer
            .and_then(|c| self.customers.get(c.trim()))
            .and_then(|&i| self.calendars.get(i))
            .unwrap_or_else(|| self.tier_calendar(policy))
    }

    /// Customers with their own calendar, and its name, sorted.
    pub fn customer_calendars(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .customers
            .iter()
            .filter_map(|(c, &i)| Some((c.as_str(), self.calendars.get(i)?.name.as_str())))
            .collect();
        out.sort();
        out
    }

    /// The `.ics` files these rules read (names as written, beside the
    /// rules file): a reloader re-reads them with the rules.
    pub fn ics_files(&self) -> &[String] {
        &self.ics_files
    }

    pub fn residency_rules(&self) -> &[ResidencyRule] {
        &self.residency
    }

    /// The regions a residency name allows: a rule's regions, or the region
    /// itself when `name` is a region id.
    pub fn residency(&self, name: &str) -> Option<Vec<RegionId>> {
        if let Some(region) = self.region(name) {
            return Some(vec![region.id.clone()]);
        }
        self.residency
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.regions.clone())
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Volume-spike alert settings, when the file has a `[spike]` table:
    /// without one, gateways watch no intake.
    pub fn spike(&self) -> Option<&SpikeConfig> {
        self.spike.as_ref()
    }

    /// The on-call region, when the out-of-hours policy is `on_call`.
    pub fn on_call_region(&self) -> Option<&Region> {
        self.routing.on_call.map(|i| &self.regions[i])
    }

    pub(crate) fn known_tiers(&self) -> String {
        join_names(self.tiers.iter().map(|t| t.tier.as_str()))
    }
}

pub(crate) fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl Region {
    pub fn covers(&self, skill: &str) -> bool {
        self.skills.iter().any(|s| s.as_str() == skill)
    }

    /// Holidays and openings that touch `[from, to]`.
    pub fn days_between(&self, from: Date, to: Date) -> (Vec<&Holiday>, Vec<&Opening>) {
        between(&self.holidays, &self.openings, from, to)
    }

    /// The shift (or extra opening) an open stretch's label names.
    pub(crate) fn shift_of(&self, label: u32) -> Option<&Shift> {
        let label = label as usize;
        self.shifts.get(label).or_else(|| {
            self.opening_shifts
                .get(label.checked_sub(self.shifts.len())?)
        })
    }
}
