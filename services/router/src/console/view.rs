//! What the console's pages show, as JSON, from the rules and what the
//! gateways report. Pure: no I/O and no clock (the instant is a parameter),
//! so each shape is unit-tested here and the server only gathers inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use meridian_core::RegionId;
use meridian_proto::v1;
use meridian_rules::{
    CalendarDay, Coverage, CoverageRowKind, RegionHealth, RegionLoad, RouteRequest, Rules,
    RulesErrors,
};
use serde::Serialize;

/// One UTC day, the span of the Now page's bands.
const DAY: SignedDuration = SignedDuration::from_hours(24);
/// Days the coverage grid and the what-if compare.
pub const GRID_DAYS: u32 = 7;
/// Changed cells listed in one what-if answer; the total is always given.
const CHANGED_CELLS_MAX: usize = 500;
/// Tickets each of the Now page's lists shows; the total is always given.
pub const NOW_LIST_MAX: usize = 50;
/// The statuses of a ticket still being worked: what "held" and "at risk"
/// mean by open.
pub const OPEN_STATUSES: [v1::Status; 4] = [
    v1::Status::New,
    v1::Status::Open,
    v1::Status::Pending,
    v1::Status::Escalated,
];

/// A stretch of one region's band, as instants and as minutes into the day
/// (0 to 1440) so the page can place it without time-zone arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BandSpan {
    pub start: Timestamp,
    pub end: Timestamp,
    pub from_minute: i64,
    pub to_minute: i64,
    pub label: String,
}

/// A region's 24-hour band for the UTC day of `day_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Band {
    pub shifts: Vec<BandSpan>,
    /// The `overlap_minutes` before each shift starts.
    pub overlaps: Vec<BandSpan>,
    /// Closures: dated, recurring, ranges, from a feed.
    pub holidays: Vec<BandSpan>,
    /// Extra (or replacement) hours on the day.
    pub openings: Vec<BandSpan>,
}

/// The start (00:00 UTC) of the UTC day holding `at`.
pub(crate) fn utc_day_start(at: Timestamp) -> Timestamp {
    let date = at.to_zoned(TimeZone::UTC).date();
    TimeZone::UTC
        .to_timestamp(date.at(0, 0, 0, 0))
        .unwrap_or(at)
}

fn clip(day_start: Timestamp, start: Timestamp, end: Timestamp, label: String) -> Option<BandSpan> {
    let day_end = day_start.checked_add(DAY).ok()?;
    let (start, end) = (start.max(day_start), end.min(day_end));
    (start < end).then(|| BandSpan {
        start,
        end,
        from_minute: start.duration_since(day_start).as_mins(),
        to_minute: end.duration_since(day_start).as_mins(),
        label,
    })
}

/// Each region's band for the UTC day starting at `day_start`.
pub(crate) fn bands(rules: &Rules, day_start: Timestamp) -> BTreeMap<String, Band> {
    let overlap = SignedDuration::from_mins(i64::from(rules.overlap_minutes()));
    // Shifts that start just after midnight still show their overlap, and a
    // shift that started yesterday shows its part of today.
    let from = day_start.checked_sub(DAY).unwrap_or(day_start);
    let until = day_start
        .checked_add(DAY.saturating_mul(2))
        .unwrap_or(day_start);
    let mut out = BTreeMap::new();
    for region in rules.regions() {
        let mut band = Band {
            shifts: Vec::new(),
            overlaps: Vec::new(),
            holidays: Vec::new(),
            openings: Vec::new(),
        };
        for (start, end, name) in rules.shift_windows(region, from, until) {
            if let Some(span) = clip(day_start, start, end, name.clone()) {
                band.shifts.push(span);
            }
            if overlap.is_positive()
                && let Ok(overlap_start) = start.checked_sub(overlap)
                && let Some(span) = clip(
                    day_start,
                    overlap_start,
                    start,
                    format!("overlap before {name}"),
                )
            {
                band.overlaps.push(span);
            }
        }
        // The region's local days that can reach into this UTC day.
        let tz = &region.time_zone;
        let utc_date = day_start.to_zoned(TimeZone::UTC).date();
        let (Ok(first), Ok(last)) = (utc_date.yesterday(), utc_date.tomorrow()) else {
            continue;
        };
        let (holidays, openings) = region.days_between(first, last);
        let local = |date: Date, from: u32, to: u32| {
            // An end at or before the start runs past midnight.
            let to = if to <= from { to + 1440 } else { to };
            Some((
                tz.to_timestamp(wall(date, from)).ok()?,
                tz.to_timestamp(wall(date, to)).ok()?,
            ))
        };
        for holiday in holidays {
            let label = if holiday.name.is_empty() {
                holiday.rule.clone()
            } else {
                holiday.name.clone()
            };
            let mut date = holiday.date.max(first);
            while date <= holiday.last.min(last) {
                let (from, to) = holiday
                    .hours
                    .map_or((0, 1440), |(s, e)| (s.minutes(), e.minutes()));
                if let Some((start, end)) = local(date, from, to)
                    && let Some(span) = clip(day_start, start, end, label.clone())
                {
                    band.holidays.push(span);
                }
                let Ok(next) = date.tomorrow() else { break };
                date = next;
            }
        }
        for opening in openings {
            let label = format!(
                "{} (extra hours)",
                if opening.name.is_empty() {
                    "opening"
                } else {
                    &opening.name
                }
            );
            if let Some((start, end)) =
                local(opening.date, opening.start.minutes(), opening.end.minutes())
                && let Some(span) = clip(day_start, start, end, label)
            {
                band.openings.push(span);
            }
        }
        out.insert(region.id.to_string(), band);
    }
    out
}

/// `minutes` after midnight of `date` (1440 is the next midnight).
fn wall(date: Date, minutes: u32) -> jiff::civil::DateTime {
    let midnight = date.at(0, 0, 0, 0);
    midnight
        .checked_add(SignedDuration::from_mins(i64::from(minutes)))
        .unwrap_or(midnight)
}

/// What one gateway said when asked for its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GatewayView {
    pub reachable: bool,
    /// Why the gateway could not be asked, when it could not.
    pub error: Option<String>,
    pub fenced: bool,
    pub fenced_reason: String,
    pub local_head: u64,
    pub rules_version: String,
    pub queue_by_status: BTreeMap<String, u64>,
    /// Tickets neither solved nor closed: the queue the page shows.
    pub queue_open: u64,
    pub sla_at_risk: u64,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PeerView {
    pub region: String,
    pub connected: bool,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub last_error: String,
}

impl GatewayView {
    pub(crate) fn from_status(status: &v1::GetStatusResponse) -> Self {
        let queue_by_status: BTreeMap<String, u64> = status
            .queue_by_status
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let queue_open = queue_by_status
            .iter()
            .filter(|(status, _)| !matches!(status.as_str(), "solved" | "closed"))
            .map(|(_, n)| *n)
            .sum();
        Self {
            reachable: true,
            error: None,
            fenced: status.fenced,
            fenced_reason: status.fenced_reason.clone(),
            local_head: status.local_head,
            rules_version: status.rules_version.clone(),
            queue_by_status,
            queue_open,
            sla_at_risk: status.sla_at_risk,
            peers: status
                .peers
                .iter()
                .map(|p| PeerView {
                    region: p.region.clone(),
                    connected: p.connected,
                    lag_events: p.lag_events,
                    lag_seconds: p.lag_seconds,
                    last_error: p.last_error.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn unreachable(error: String) -> Self {
        Self {
            reachable: false,
            error: Some(error),
            fenced: false,
            fenced_reason: String::new(),
            local_head: 0,
            rules_version: String::new(),
            queue_by_status: BTreeMap::new(),
            queue_open: 0,
            sla_at_risk: 0,
            peers: Vec::new(),
        }
    }
}

/// One region on the Now page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RegionNow {
    pub id: String,
    pub time_zone: String,
    /// `on_shift`, `overlap` or `off_shift`, as ActiveRegions says.
    pub position: String,
    /// On shift (not only in its overlap window): ActiveRegions lists it.
    pub active: bool,
    pub shift: String,
    pub queue_owner: String,
    /// The router's health verdict; `None` before the first probe.
    pub healthy: Option<bool>,
    /// Off shift or in its overlap window: when its next shift starts (the
    /// routing decision's own figure; `None` when none starts within two
    /// weeks).
    pub next_shift_at: Option<Timestamp>,
    pub band: Band,
    /// `None` for a region without a gateway.
    pub gateway: Option<GatewayView>,
    /// Who is at work, from the gateway's load report; `None` for a region
    /// without a roster (or no fresh report).
    pub staffing: Option<StaffingView>,
}

/// A region's people now, as the Now page shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StaffingView {
    pub agents_on_shift: u32,
    pub agents_available: u32,
    /// Open tickets per available agent; `None` with nobody available.
    pub open_per_available: Option<f64>,
    pub unassigned: u32,
    pub oldest_unassigned: Option<Timestamp>,
}

impl StaffingView {
    fn new(load: &RegionLoad) -> Option<Self> {
        let staffing = load.staffing?;
        Some(StaffingView {
            agents_on_shift: staffing.agents_on_shift,
            agents_available: staffing.agents_available,
            open_per_available: (staffing.agents_available > 0).then(|| {
                (f64::from(load.open_tickets) / f64::from(staffing.agents_available) * 10.0).round()
                    / 10.0
            }),
            unassigned: staffing.unassigned,
            oldest_unassigned: staffing.oldest_unassigned,
        })
    }
}

/// The Now page's whole state at one instant; sent on every SSE tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NowView {
    pub at: Timestamp,
    pub day_start: Timestamp,
    pub rules_version: String,
    pub rules_refused: Vec<String>,
    /// Where a plain ticket (no tier, skills or residency) goes now, by the
    /// router's own decision.
    pub routes_to: Option<String>,
    pub route_reason: String,
    pub regions: Vec<RegionNow>,
    /// Open tickets owned by a region that is off shift, oldest first.
    pub held_off_shift: TicketList,
    /// Open tickets with an SLA clock at risk or breached, soonest due first.
    pub at_risk: TicketList,
}

/// One ticket in a Now list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TicketItem {
    pub id: String,
    /// [`meridian_core::TicketId::short`]: the random tail.
    pub short_id: String,
    pub subject: String,
    pub owner_region: String,
    pub status: String,
    pub tier: String,
    /// The deadline that matters (see [`due_clock`]); `None` without one.
    pub due: Option<Timestamp>,
    /// `first response` or `resolution`.
    pub due_clock: String,
    /// That clock's state: `running`, `at_risk` or `breached`.
    pub sla_state: String,
    pub journey_url: String,
}

/// A bounded list: at most [`NOW_LIST_MAX`] tickets of `total`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TicketList {
    /// How many tickets there are (the gateways' counts), listed or not.
    pub total: u64,
    pub tickets: Vec<TicketItem>,
    /// Regions whose tickets could not be listed, and why.
    pub errors: Vec<String>,
}

/// The earliest deadline among `ticket`'s clocks in one of `states`, with
/// the clock's name and state.
fn due_clock(
    ticket: &v1::Ticket,
    states: &[v1::SlaState],
) -> Option<(Timestamp, &'static str, v1::SlaState)> {
    let sla = ticket.sla.as_ref()?;
    [
        ("first response", sla.first_response.as_ref()),
        ("next response", sla.next_response.as_ref()),
        ("resolution", sla.resolution.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, clock)| {
        let clock = clock?;
        let state = v1::SlaState::try_from(clock.state).ok()?;
        let due = meridian_proto::timestamp_from_proto("due", clock.due.as_ref()?).ok()?;
        states.contains(&state).then_some((due, name, state))
    })
    .min_by_key(|(due, _, _)| *due)
}

fn sla_state_name(state: v1::SlaState) -> &'static str {
    match state {
        v1::SlaState::Running => "running",
        v1::SlaState::Paused => "paused",
        v1::SlaState::AtRisk => "at_risk",
        v1::SlaState::Breached => "breached",
        v1::SlaState::Met => "met",
        v1::SlaState::Unspecified => "unspecified",
    }
}

fn is_open(ticket: &v1::Ticket) -> bool {
    v1::Status::try_from(ticket.status).is_ok_and(|s| OPEN_STATUSES.contains(&s))
}

fn ticket_item(ticket: &v1::Ticket, states: &[v1::SlaState]) -> TicketItem {
    let due = due_clock(ticket, states);
    let short_id = ticket
        .id
        .parse::<meridian_core::TicketId>()
        .map_or_else(|_| ticket.id.clone(), |id| id.short());
    let status = v1::Status::try_from(ticket.status).map_or("unspecified", |s| {
        s.as_str_name()
            .strip_prefix("STATUS_")
            .unwrap_or("unspecified")
    });
    TicketItem {
        id: ticket.id.clone(),
        short_id,
        subject: ticket.subject.clone(),
        owner_region: ticket
            .owner
            .as_ref()
            .map(|o| o.owner_region.clone())
            .unwrap_or_default(),
        status: status.to_ascii_lowercase(),
        tier: ticket.tier.clone(),
        due: due.map(|(at, _, _)| at),
        due_clock: due.map(|(_, name, _)| name).unwrap_or_default().to_owned(),
        sla_state: due
            .map(|(_, _, state)| sla_state_name(state))
            .unwrap_or_default()
            .to_owned(),
        journey_url: format!("/journey/{}", ticket.id),
    }
}

/// The open tickets of off-shift regions, oldest first (UUIDv7 ids sort by
/// creation), at most [`NOW_LIST_MAX`]; `total` is what the gateways count.
pub(crate) fn held_off_shift(
    total: u64,
    mut tickets: Vec<v1::Ticket>,
    errors: Vec<String>,
) -> TicketList {
    tickets.retain(is_open);
    tickets.sort_by(|a, b| a.id.cmp(&b.id));
    tickets.dedup_by(|a, b| a.id == b.id);
    tickets.truncate(NOW_LIST_MAX);
    let running = [
        v1::SlaState::Running,
        v1::SlaState::AtRisk,
        v1::SlaState::Breached,
    ];
    TicketList {
        total,
        tickets: tickets.iter().map(|t| ticket_item(t, &running)).collect(),
        errors,
    }
}

/// The open tickets with a clock at risk or breached, the soonest (or
/// longest overdue) deadline first, at most [`NOW_LIST_MAX`].
pub(crate) fn at_risk(total: u64, mut tickets: Vec<v1::Ticket>, errors: Vec<String>) -> TicketList {
    let risky = [v1::SlaState::AtRisk, v1::SlaState::Breached];
    tickets.retain(|t| is_open(t) && due_clock(t, &risky).is_some());
    tickets.sort_by_key(|t| (due_clock(t, &risky).map(|(at, _, _)| at), t.id.clone()));
    tickets.dedup_by(|a, b| a.id == b.id);
    tickets.truncate(NOW_LIST_MAX);
    TicketList {
        total,
        tickets: tickets.iter().map(|t| ticket_item(t, &risky)).collect(),
        errors,
    }
}

/// Builds the Now page from the rules, the router's health table and each
/// gateway's status.
pub(crate) fn now_view(
    rules: &Rules,
    refused: Vec<String>,
    at: Timestamp,
    (health, loads): (
        &HashMap<RegionId, RegionHealth>,
        &HashMap<RegionId, RegionLoad>,
    ),
    statuses: &BTreeMap<String, GatewayView>,
    (held_off_shift, at_risk): (TicketList, TicketList),
) -> NowView {
    let day_start = utc_day_start(at);
    let mut bands = bands(rules, day_start);
    let active = rules.active_at(at);
    let decision = rules.decide(at, health, loads, &RouteRequest::default());
    let regions = rules
        .regions()
        .iter()
        .map(|region| {
            let shift = active.iter().find(|s| s.region == region.id.as_str());
            let position = shift.map_or("off_shift", |s| s.position.as_str());
            let next_shift_at = decision
                .candidates
                .iter()
                .find(|c| c.region == &region.id)
                .and_then(|c| c.next_shift_at);
            RegionNow {
                id: region.id.to_string(),
                time_zone: region.time_zone_name.clone(),
                position: position.to_owned(),
                active: position == "on_shift",
                shift: shift.map(|s| s.shift.clone()).unwrap_or_default(),
                queue_owner: shift.map(|s| s.queue_owner.clone()).unwrap_or_default(),
                healthy: health.get(&region.id).map(|h| *h == RegionHealth::Up),
                next_shift_at: (position != "on_shift").then_some(next_shift_at).flatten(),
                band: bands.remove(region.id.as_str()).unwrap_or(Band {
                    shifts: Vec::new(),
                    overlaps: Vec::new(),
                    holidays: Vec::new(),
                    openings: Vec::new(),
                }),
                gateway: statuses.get(region.id.as_str()).cloned(),
                staffing: loads.get(&region.id).and_then(StaffingView::new),
            }
        })
        .collect();
    NowView {
        at,
        day_start,
        rules_version: rules.version_id(),
        rules_refused: refused,
        routes_to: decision.region.map(ToString::to_string),
        route_reason: decision.reason.as_str().to_owned(),
        regions,
        held_off_shift,
        at_risk,
    }
}

/// The regions off shift at `at` (neither on shift nor in an overlap
/// window): those whose open tickets the Now page lists as held.
pub(crate) fn off_shift_regions(rules: &Rules, at: Timestamp) -> BTreeSet<String> {
    let active = rules.active_at(at);
    rules
        .regions()
        .iter()
        .map(|r| r.id.to_string())
        .filter(|id| !active.iter().any(|s| s.region == id.as_str()))
        .collect()
}

/// One row of the coverage grid, with each hour's minutes covered and a
/// mark for the hours to highlight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridRow {
    pub kind: CoverageRowKind,
    pub name: String,
    pub minutes: Vec<u8>,
    /// Per hour: `""`, `"gap"` (the `any` row, nobody fully on shift) or
    /// `"parity"` (a skill row: someone on shift, nobody with the skill).
    pub marks: Vec<&'static str>,
}

/// The coverage grid as the Rules page draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridView {
    pub rules_version: String,
    pub from: Date,
    pub days: u32,
    /// One per day of the grid, e.g. `Mon 7 Dec`: the axis the page draws
    /// over the cells (hours are UTC).
    pub day_labels: Vec<String>,
    pub rows: Vec<GridRow>,
    pub gap_hours: u32,
    pub parity_gap_hours: u32,
    /// The holidays, ranges and extra hours behind the grid, by date.
    pub calendar_days: Vec<CalendarDay>,
}

fn hour_index(from: Timestamp, at: Timestamp) -> usize {
    usize::try_from(at.duration_since(from).as_hours()).unwrap_or(0)
}

/// Sets `marks[from..to]`, clipped to the grid.
fn mark_hours(marks: &mut [bool], from: usize, to: usize) {
    let to = to.min(marks.len());
    if let Some(slice) = marks.get_mut(from.min(to)..to) {
        slice.fill(true);
    }
}

/// `Mon 7 Dec` for each of `days` days from `from`.
fn day_labels(from: Date, days: u32) -> Vec<String> {
    (0..i64::from(days))
        .filter_map(|n| from.checked_add(jiff::Span::new().days(n)).ok())
        .map(|date| date.strftime("%a %-d %b").to_string())
        .collect()
}

pub(crate) fn grid(coverage: &Coverage) -> GridView {
    let from = TimeZone::UTC
        .to_timestamp(coverage.from.at(0, 0, 0, 0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let hours = coverage.days as usize * 24;
    let mut gap = vec![false; hours];
    for range in &coverage.gaps {
        mark_hours(
            &mut gap,
            hour_index(from, range.start),
            hour_index(from, range.end),
        );
    }
    let mut parity: HashMap<&str, Vec<bool>> = HashMap::new();
    for skill in &coverage.parity_gaps {
        let marks = parity
            .entry(skill.skill.as_str())
            .or_insert_with(|| vec![false; hours]);
        for range in &skill.ranges {
            mark_hours(
                marks,
                hour_index(from, range.start),
                hour_index(from, range.end),
            );
        }
    }
    let rows = coverage
        .rows
        .iter()
        .map(|row| {
            let marks = (0..row.minutes.len())
                .map(|h| match row.kind {
                    CoverageRowKind::Any if gap.get(h).copied().unwrap_or(false) => "gap",
                    CoverageRowKind::Skill
                        if parity
                            .get(row.name.as_str())
                            .and_then(|m| m.get(h))
                            .copied()
                            .unwrap_or(false) =>
                    {
                        "parity"
                    }
                    _ => "",
                })
                .collect();
            GridRow {
                kind: row.kind,
                name: row.name.clone(),
                minutes: row.minutes.clone(),
                marks,
            }
        })
        .collect();
    GridView {
        rules_version: coverage.rules_version.clone(),
        from: coverage.from,
        days: coverage.days,
        day_labels: day_labels(coverage.from, coverage.days),
        rows,
        gap_hours: coverage.gaps.iter().map(|r| r.hours).sum(),
        parity_gap_hours: coverage
            .parity_gaps
            .iter()
            .flat_map(|s| &s.ranges)
            .map(|r| r.hours)
            .sum(),
        calendar_days: coverage.calendar_days.clone(),
    }
}

/// One problem of a refused what-if file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemView {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// `FILE:LINE:COL: message`, as `meridian rules check` prints it.
    pub text: String,
}

pub(crate) fn problems(errors: &RulesErrors) -> Vec<ProblemView> {
    errors
        .iter()
        .map(|e| ProblemView {
            line: e.line,
            column: e.column,
            message: e.message.clone(),
            text: e.to_string(),
        })
        .collect()
}

/// One hour of one row whose covered minutes the new rules change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedCell {
    pub kind: CoverageRowKind,
    pub name: String,
    pub hour: usize,
    pub at: Timestamp,
    /// Covered minutes under the active rules; `None` when the row is new.
    pub before: Option<u8>,
    /// Under the new rules; `None` when the row is gone.
    pub after: Option<u8>,
}

/// Every cell of the two grids (rows matched by kind and name) that differs.
pub(crate) fn changed_cells(before: &Coverage, after: &Coverage) -> Vec<ChangedCell> {
    let from = TimeZone::UTC
        .to_timestamp(after.from.at(0, 0, 0, 0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let key = |kind: CoverageRowKind, name: &str| (format!("{kind:?}"), name.to_owned());
    let old: BTreeMap<_, _> = before
        .rows
        .iter()
        .map(|r| (key(r.kind, &r.name), r))
        .collect();
    let new: BTreeMap<_, _> = after
        .rows
        .iter()
        .map(|r| (key(r.kind, &r.name), r))
        .collect();
    let keys: BTreeSet<_> = old.keys().chain(new.keys()).cloned().collect();
    let mut out = Vec::new();
    for k in keys {
        let (o, n) = (old.get(&k), new.get(&k));
        let Some(row) = n.or(o) else { continue };
        let hours = o
            .map_or(0, |r| r.minutes.len())
            .max(n.map_or(0, |r| r.minutes.len()));
        for hour in 0..hours {
            let b = o.and_then(|r| r.minutes.get(hour).copied());
            let a = n.and_then(|r| r.minutes.get(hour).copied());
            if a != b {
                out.push(ChangedCell {
                    kind: row.kind,
                    name: row.name.clone(),
                    hour,
                    at: from
                        .checked_add(SignedDuration::from_hours(hour as i64))
                        .unwrap_or(from),
                    before: b,
                    after: a,
                });
            }
        }
    }
    out
}

/// A ticket as the what-if re-routes it.
#[derive(Debug, Clone)]
pub struct PastTicket {
    pub id: String,
    pub created_at: Timestamp,
    pub owner_region: String,
    pub request: RouteRequest,
}

/// Where one ticket goes under each rules file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rerouted {
    pub ticket_id: String,
    pub created_at: Timestamp,
    /// Where it is now (it may have been handed off since).
    pub owner_region: String,
    pub active: Option<String>,
    pub active_reason: String,
    pub proposed: Option<String>,
    pub proposed_reason: String,
}

/// The what-if's answer for a file that parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    pub active_version: String,
    pub proposed_version: String,
    pub grid: GridView,
    pub changed_cells_total: usize,
    pub changed_cells: Vec<ChangedCell>,
    pub tickets_considered: usize,
    /// The tickets the new rules would have sent elsewhere.
    pub tickets_moved: Vec<Rerouted>,
    pub by_region_active: BTreeMap<String, usize>,
    pub by_region_proposed: BTreeMap<String, usize>,
}

/// Parses `text` as a rules file and compares it with `active`: coverage
/// from `from` for [`GRID_DAYS`] days, and where each of `tickets` would
/// have gone at its creation, with every region of `regions` healthy (the
/// router keeps no history of health). Applies nothing.
pub fn what_if(
    active: &Rules,
    text: &str,
    from: Date,
    tickets: &[PastTicket],
    regions: &BTreeSet<RegionId>,
    loads: &HashMap<RegionId, RegionLoad>,
) -> Result<WhatIf, Vec<ProblemView>> {
    let proposed = Rules::parse("what-if.toml", text).map_err(|e| problems(&e))?;
    let before = active.coverage(from, GRID_DAYS);
    let after = proposed.coverage(from, GRID_DAYS);
    let mut cells = changed_cells(&before, &after);
    let changed_cells_total = cells.len();
    cells.truncate(CHANGED_CELLS_MAX);
    let health: HashMap<RegionId, RegionHealth> = regions
        .iter()
        .map(|r| (r.clone(), RegionHealth::Up))
        .collect();
    let mut moved = Vec::new();
    let mut by_active: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_proposed: BTreeMap<String, usize> = BTreeMap::new();
    let none = "none".to_owned();
    for ticket in tickets {
        let a = active.decide(ticket.created_at, &health, loads, &ticket.request);
        let p = proposed.decide(ticket.created_at, &health, loads, &ticket.request);
        let (ar, pr) = (
            a.region.map(ToString::to_string),
            p.region.map(ToString::to_string),
        );
        *by_active
            .entry(ar.clone().unwrap_or_else(|| none.clone()))
            .or_default() += 1;
        *by_proposed
            .entry(pr.clone().unwrap_or_else(|| none.clone()))
            .or_default() += 1;
        if ar != pr {
            moved.push(Rerouted {
                ticket_id: ticket.id.clone(),
                created_at: ticket.created_at,
                owner_region: ticket.owner_region.clone(),
                active: ar,
                active_reason: a.reason.as_str().to_owned(),
                proposed: pr,
                proposed_reason: p.reason.as_str().to_owned(),
            });
        }
    }
    Ok(WhatIf {
        active_version: active.version_id(),
        proposed_version: proposed.version_id(),
        grid: grid(&after),
        changed_cells_total,
        changed_cells: cells,
        tickets_considered: tickets.len(),
        tickets_moved: moved,
        by_region_active: by_active,
        by_region_proposed: by_proposed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
version = "v1"
overlap_minutes = 30

[[regions]]
id = "east"
index = 0
time_zone = "UTC"
skills = ["billing"]
capacity = 10

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "08:00"
end = "16:00"
queue_owner = "east-lead"

[[regions.holidays]]
date = "2026-06-02"
name = "founders day"
start = "12:00"
end = "13:00"

[[regions]]
id = "west"
index = 1
time_zone = "UTC"
skills = ["billing"]
capacity = 10

[[regions.shifts]]
name = "late"
days = ["mon-sun"]
start = "16:00"
end = "23:00"
queue_owner = "west-lead"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480
"#;

    fn rules(text: &str) -> Rules {
        Rules::parse("rules.toml", text).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_band_holds_the_days_shifts_their_overlaps_and_holidays() {
        let rules = rules(RULES);
        let bands = bands(&rules, at("2026-06-02T00:00:00Z"));
        let east = &bands["east"];
        let spans: Vec<(i64, i64)> = east
            .shifts
            .iter()
            .map(|s| (s.from_minute, s.to_minute))
            .collect();
        // The holiday cuts the day shift in two.
        assert_eq!(spans, [(480, 720), (780, 960)]);
        assert_eq!(east.holidays.len(), 1);
        assert_eq!(
            (east.holidays[0].from_minute, east.holidays[0].to_minute),
            (720, 780)
        );
        assert!(
            east.overlaps
                .iter()
                .any(|o| (o.from_minute, o.to_minute) == (450, 480))
        );
        let west = &bands["west"];
        assert_eq!(
            west.shifts
                .iter()
                .map(|s| (s.from_minute, s.to_minute))
                .collect::<Vec<_>>(),
            [(960, 1380)]
        );
    }

    #[test]
    fn bands_and_the_grid_show_recurring_holidays_ranges_and_openings() {
        let text = RULES.replace(
            "[[regions]]\nid = \"west\"",
            "[[regions.holidays]]\nevery = \"last mon of may\"\nname = \"spring\"\n\
             [[regions.holidays]]\nevery = \"12-31\"\nto = \"01-01\"\nname = \"year end\"\n\
             [[regions.holidays]]\ndate = \"2026-06-03\"\nstart = \"22:00\"\nend = \"02:00\"\nname = \"upgrade\"\n\
             [[regions.openings]]\ndate = \"2026-06-06\"\nstart = \"18:00\"\nend = \"20:00\"\nname = \"release\"\n\n\
             [[regions]]\nid = \"west\"",
        );
        let rules = rules(&text);
        // Monday 25 May 2026 is the last Monday of May: closed all day.
        let may = bands(&rules, at("2026-05-25T00:00:00Z"));
        assert!(may["east"].shifts.is_empty());
        assert_eq!(
            may["east"]
                .holidays
                .iter()
                .map(|h| (h.from_minute, h.to_minute, h.label.as_str()))
                .collect::<Vec<_>>(),
            [(0, 1440, "spring")]
        );
        // The range crosses the year: 1 January 2027 is closed too.
        let jan = bands(&rules, at("2027-01-01T00:00:00Z"));
        assert_eq!(jan["east"].holidays.len(), 1);
        // A closure across midnight shows on both days.
        let night = bands(&rules, at("2026-06-04T00:00:00Z"));
        assert_eq!(
            night["east"]
                .holidays
                .iter()
                .map(|h| (h.from_minute, h.to_minute))
                .collect::<Vec<_>>(),
            [(0, 120)]
        );
        let evening = bands(&rules, at("2026-06-03T00:00:00Z"));
        assert_eq!(
            evening["east"]
                .holidays
                .iter()
                .map(|h| (h.from_minute, h.to_minute))
                .collect::<Vec<_>>(),
            [(1320, 1440)]
        );
        // The extra opening is a band of its own and is on shift.
        let saturday = bands(&rules, at("2026-06-06T00:00:00Z"));
        assert_eq!(
            saturday["east"]
                .openings
                .iter()
                .map(|o| (o.from_minute, o.to_minute))
                .collect::<Vec<_>>(),
            [(1080, 1200)]
        );
        assert!(
            saturday["east"]
                .shifts
                .iter()
                .any(|s| (s.from_minute, s.to_minute) == (1080, 1200))
        );
        // The grid lists what lies behind it.
        let view = grid(&rules.coverage(Date::new(2026, 6, 1).unwrap(), GRID_DAYS));
        let days: Vec<(String, String)> = view
            .calendar_days
            .iter()
            .map(|d| (d.date.to_string(), d.name.clone()))
            .collect();
        assert_eq!(
            days,
            [
                ("2026-06-02".to_owned(), "founders day".to_owned()),
                ("2026-06-03".to_owned(), "upgrade".to_owned()),
                ("2026-06-06".to_owned(), "release".to_owned()),
            ]
        );
    }

    #[test]
    fn now_names_the_active_region_and_each_gateways_queue() {
        let rules = rules(RULES);
        let mut statuses = BTreeMap::new();
        let status = v1::GetStatusResponse {
            region: "east".into(),
            queue_by_status: [
                ("open".to_owned(), 3),
                ("closed".to_owned(), 5),
                ("new".to_owned(), 1),
            ]
            .into(),
            sla_at_risk: 2,
            ..Default::default()
        };
        statuses.insert("east".to_owned(), GatewayView::from_status(&status));
        statuses.insert(
            "west".to_owned(),
            GatewayView::unreachable("connection refused".into()),
        );
        let health: HashMap<RegionId, RegionHealth> = [
            (RegionId::new("east").unwrap(), RegionHealth::Up),
            (RegionId::new("west").unwrap(), RegionHealth::Down),
        ]
        .into();
        let view = now_view(
            &rules,
            Vec::new(),
            at("2026-06-02T10:00:00Z"),
            (&health, &HashMap::new()),
            &statuses,
            Default::default(),
        );
        assert_eq!(view.routes_to.as_deref(), Some("east"));
        let east = &view.regions[0];
        assert!(east.active);
        assert_eq!(east.shift, "day");
        assert_eq!(east.healthy, Some(true));
        let gateway = east.gateway.as_ref().unwrap();
        assert_eq!((gateway.queue_open, gateway.sla_at_risk), (4, 2));
        let west = &view.regions[1];
        assert!(!west.active);
        assert_eq!(west.healthy, Some(false));
        assert!(!west.gateway.as_ref().unwrap().reachable);
    }

    #[test]
    fn bad_rules_in_a_what_if_name_line_and_column() {
        let active = rules(RULES);
        let bad = RULES.replace("time_zone = \"UTC\"\nskills = [\"billing\"]\ncapacity = 10\n\n[[regions.shifts]]\nname = \"late\"", "time_zone = \"Europe/Londn\"\nskills = [\"billing\"]\ncapacity = 10\n\n[[regions.shifts]]\nname = \"late\"");
        assert_ne!(bad, RULES, "the test must change the file");
        let date: Date = "2026-06-01".parse().unwrap();
        let errors =
            what_if(&active, &bad, date, &[], &BTreeSet::new(), &HashMap::new()).unwrap_err();
        assert!(!errors.is_empty());
        let line = bad
            .lines()
            .position(|l| l.contains("Europe/Londn"))
            .unwrap()
            + 1;
        assert_eq!(errors[0].line, line);
        assert_eq!(errors[0].column, 13, "{errors:?}");
        assert!(
            errors[0]
                .text
                .starts_with(&format!("what-if.toml:{line}:13: ")),
            "{}",
            errors[0].text
        );

        let errors = what_if(
            &active,
            "version = ",
            date,
            &[],
            &BTreeSet::new(),
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            (errors[0].line, errors[0].column > 0),
            (1, true),
            "{errors:?}"
        );
    }

    #[test]
    fn a_what_if_lists_changed_cells_and_tickets_that_would_move() {
        let active = rules(RULES);
        // West starts two hours earlier and is preferred.
        let proposed = RULES
            .replace("version = \"v1\"", "version = \"v2\"")
            .replace("start = \"16:00\"", "start = \"14:00\"")
            .replace(
                "capacity = 10\n\n[[regions.shifts]]\nname = \"late\"",
                "capacity = 10\npreference = 90\n\n[[regions.shifts]]\nname = \"late\"",
            );
        assert!(proposed.contains("preference = 90") && proposed.contains("\"14:00\""));
        let regions: BTreeSet<RegionId> = [
            RegionId::new("east").unwrap(),
            RegionId::new("west").unwrap(),
        ]
        .into();
        let ticket = |id: &str, t: &str| PastTicket {
            id: id.into(),
            created_at: at(t),
            owner_region: "east".into(),
            request: RouteRequest::default(),
        };
        let tickets = [
            ticket("a", "2026-06-02T09:00:00Z"),
            ticket("b", "2026-06-02T14:30:00Z"),
        ];
        let date: Date = "2026-06-01".parse().unwrap();
        let answer = what_if(
            &active,
            &proposed,
            date,
            &tickets,
            &regions,
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            answer.proposed_version.starts_with("v2+"),
            "{}",
            answer.proposed_version
        );
        // West's rows gain 14:00 and 15:00 on each of the seven days.
        let west: Vec<&ChangedCell> = answer
            .changed_cells
            .iter()
            .filter(|c| c.name == "west" && c.kind == CoverageRowKind::Region)
            .collect();
        assert_eq!(west.len(), 14, "{west:?}");
        assert_eq!(
            (west[0].hour, west[0].before, west[0].after),
            (14, Some(0), Some(60))
        );
        assert_eq!(answer.tickets_considered, 2);
        let moved: Vec<(&str, Option<&str>, Option<&str>)> = answer
            .tickets_moved
            .iter()
            .map(|m| {
                (
                    m.ticket_id.as_str(),
                    m.active.as_deref(),
                    m.proposed.as_deref(),
                )
            })
            .collect();
        assert_eq!(moved, [("b", Some("east"), Some("west"))]);
    }

    #[test]
    fn the_grid_names_its_days() {
        let rules = rules(RULES);
        let grid = grid(&rules.coverage("2026-12-27".parse().unwrap(), GRID_DAYS));
        assert_eq!(
            grid.day_labels,
            [
                "Sun 27 Dec",
                "Mon 28 Dec",
                "Tue 29 Dec",
                "Wed 30 Dec",
                "Thu 31 Dec",
                "Fri 1 Jan",
                "Sat 2 Jan"
            ]
        );
    }

    fn ticket(id: &str, status: v1::Status, clocks: [(&str, v1::SlaState); 2]) -> v1::Ticket {
        let clock = |(due, state): (&str, v1::SlaState)| v1::SlaClock {
            due: Some(meridian_proto::timestamp_to_proto(at(due))),
            warn_at: None,
            state: state.into(),
        };
        v1::Ticket {
            id: id.to_owned(),
            subject: format!("subject of {id}"),
            status: status.into(),
            owner: Some(v1::Ownership {
                owner_region: "west".into(),
                epoch: 1,
            }),
            sla: Some(v1::SlaDeadlines {
                first_response: Some(clock(clocks[0])),
                resolution: Some(clock(clocks[1])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn held_tickets_are_open_oldest_first_bounded_and_counted() {
        use v1::SlaState::{Met, Running};
        let far = [
            ("2026-06-02T12:00:00Z", Met),
            ("2026-06-03T12:00:00Z", Running),
        ];
        // Ids in creation order: 0190… before 0191….
        let mut tickets: Vec<v1::Ticket> = (0..60)
            .rev()
            .map(|n| {
                ticket(
                    &format!("01910000-0000-7000-8000-{n:012x}"),
                    v1::Status::Open,
                    far,
                )
            })
            .collect();
        tickets.push(ticket(
            "01900000-0000-7000-8000-00000000abcd",
            v1::Status::Solved,
            far,
        ));
        let list = held_off_shift(61, tickets, vec!["east: UNAVAILABLE".into()]);
        assert_eq!(list.total, 61);
        assert_eq!(list.tickets.len(), NOW_LIST_MAX);
        assert_eq!(list.tickets[0].id, "01910000-0000-7000-8000-000000000000");
        assert_eq!(list.tickets[0].short_id, "00000000");
        assert_eq!(list.tickets[1].short_id, "00000001");
        assert_eq!(list.tickets[0].status, "open");
        assert_eq!(list.tickets[0].owner_region, "west");
        assert_eq!(
            list.tickets[0].journey_url,
            "/journey/01910000-0000-7000-8000-000000000000"
        );
        // The met first response is done with: the resolution is what is due.
        assert_eq!(
            (
                list.tickets[0].due,
                list.tickets[0].due_clock.as_str(),
                list.tickets[0].sla_state.as_str()
            ),
            (Some(at("2026-06-03T12:00:00Z")), "resolution", "running")
        );
        assert_eq!(list.errors, ["east: UNAVAILABLE"]);
    }

    #[test]
    fn tickets_at_risk_come_soonest_due_first() {
        use v1::SlaState::{AtRisk, Breached, Met, Running};
        let tickets = vec![
            ticket(
                "01910000-0000-7000-8000-00000000000a",
                v1::Status::Open,
                [
                    ("2026-06-02T12:00:00Z", Met),
                    ("2026-06-02T15:00:00Z", AtRisk),
                ],
            ),
            ticket(
                "01910000-0000-7000-8000-00000000000b",
                v1::Status::Escalated,
                [
                    ("2026-06-02T09:00:00Z", Breached),
                    ("2026-06-02T08:00:00Z", Running),
                ],
            ),
            // Solved: not at risk any more, whatever its clocks say.
            ticket(
                "01910000-0000-7000-8000-00000000000c",
                v1::Status::Solved,
                [
                    ("2026-06-01T09:00:00Z", Breached),
                    ("2026-06-01T09:00:00Z", Breached),
                ],
            ),
        ];
        let list = at_risk(2, tickets, Vec::new());
        let got: Vec<(&str, &str, &str)> = list
            .tickets
            .iter()
            .map(|t| {
                (
                    t.short_id.as_str(),
                    t.due_clock.as_str(),
                    t.sla_state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("0000000b", "first response", "breached"),
                ("0000000a", "resolution", "at_risk")
            ]
        );
        assert_eq!(list.tickets[0].due, Some(at("2026-06-02T09:00:00Z")));
    }

    #[test]
    fn an_off_shift_region_says_when_its_next_shift_starts() {
        let rules = rules(RULES);
        let view = now_view(
            &rules,
            Vec::new(),
            at("2026-06-02T10:00:00Z"),
            (&HashMap::new(), &HashMap::new()),
            &BTreeMap::new(),
            Default::default(),
        );
        assert_eq!(view.regions[0].next_shift_at, None, "east is on shift");
        assert_eq!(
            view.regions[1].next_shift_at,
            Some(at("2026-06-02T16:00:00Z"))
        );
        assert_eq!(
            off_shift_regions(&rules, at("2026-06-02T10:00:00Z")),
            BTreeSet::from(["west".to_owned()])
        );
        // In its overlap window (30 minutes before 16:00) west is not off shift.
        assert!(off_shift_regions(&rules, at("2026-06-02T15:45:00Z")).is_empty());
    }

    #[test]
    fn the_grid_marks_gaps_on_the_any_row() {
        let rules = rules(RULES);
        let grid = grid(&rules.coverage("2026-06-01".parse().unwrap(), 1));
        let any = grid
            .rows
            .iter()
            .find(|r| r.kind == CoverageRowKind::Any)
            .unwrap();
        // Nobody from 23:00 to 08:00.
        assert_eq!(any.marks[3], "gap");
        assert_eq!(any.marks[10], "");
        assert_eq!(any.marks[23], "gap");
        assert!(grid.gap_hours >= 9);
    }
}
