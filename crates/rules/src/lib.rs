//! Meridian's follow-the-sun rules: regions and their shifts, holidays,
//! overlap windows, business calendars, SLA policies per tier, residency,
//! the routing decision, coverage simulation and volume-spike settings.
//!
//! Boundary: this crate performs **no I/O** and never reads the wall clock.
//! A rules file arrives as text (`Rules::parse(file_name, text)`; the file
//! name only labels errors), time arrives as `jiff::Timestamp` arguments, and
//! region health and load arrive as maps. Time zones come from the tz
//! database bundled into the binary, never from the host's
//! `/usr/share/zoneinfo`, so every router replica and every test computes the
//! same answer. Everything here is a pure function of its arguments; the
//! router, the gateway and the CLI do the reading, the clock and the network.
//!
//! Semantics worth knowing before reading the code:
//! - **Wall-clock shifts.** Shift and business hours are local times in the
//!   region's (or calendar's) zone. Each boundary is the first instant at
//!   which the wall clock reads that time or later: in a DST gap that is the
//!   transition itself, in a DST fold the first occurrence. Consecutive
//!   shifts therefore never gap or overlap at a DST change; a shift that
//!   spans one is an hour shorter or longer in real time.
//! - **Holidays** close a local date (or part of it), cutting any shift that
//!   runs into it, including a shift that started the evening before.
//! - **Overlap window**: the `overlap_minutes` before a region's shift starts,
//!   when it already takes new tickets; the outgoing region is flagged as
//!   handing off for the same length of time before its shift ends.
//! - **Out of hours** never drops a ticket: the policy's choice, or a fallback
//!   to the next region on shift, or `no_eligible_region` with a reason for
//!   every candidate.
//!
//! Main entry points:
//! - [`Rules::parse`] → [`Rules`] or [`RulesErrors`] (every problem, each
//!   `FILE:LINE:COL: message`).
//! - [`Rules::active_at`], [`Rules::next_shift_change`]: who is on shift.
//! - [`Calendar::elapsed`], [`Calendar::deadline`], [`Rules::sla_deadline`]:
//!   business time and SLA deadlines, DST-correct, with [`Pauses`].
//! - [`Rules::decide`] → [`Decision`]: where a ticket goes and why.
//! - [`Rules::coverage`] → [`Coverage`], rendered by
//!   [`render::coverage_table`] and [`render::coverage_svg`].
//! - [`Rules::spike`] (the `[spike]` table, volume-spike alert settings)
//!   and [`Rules::queue_owner_at`]: who hears about a spike.

#![forbid(unsafe_code)]

mod calendar;
mod coverage;
mod error;
mod ics;
mod model;
mod parse;
mod recur;
pub mod render;
pub mod roster;
mod route;
mod schedule;
mod shifts;
mod sla;
mod suggest;

pub use calendar::{DEADLINE_HORIZON_DAYS, Pauses, SlaDeadline};
pub use recur::YEARS as RECURRING_YEARS;

pub use coverage::{
    COVERAGE_DAYS_MAX, CalendarDay, CalendarDayKind, Coverage, CoverageRow, CoverageRowKind,
    HourRange, SkillGaps,
};
pub use error::{Result, RulesError, RulesErrors, TimeError, line_column};
pub use model::{
    CALENDAR_24X7, Calendar, Holiday, Metric, ONCALL_NAME_MAX, OVERLAP_MINUTES_MAX, Opening,
    OutOfHoursKind, REGIONS_MAX, Region, ResidencyRule, Routing, Rules, SKILLS_MAX,
    SLA_MINUTES_MAX, Shift, TierPolicy, WallTime,
};
pub use roster::{Agent, AgentShift, Roster};
pub use route::{
    Candidate, Decision, FilterReason, Reason, RegionHealth, RegionLoad, RouteRequest, Score,
    Staffing, Warning, primary_subtag,
};
pub use shifts::{ActiveShift, ShiftChange, ShiftChangeKind, ShiftPosition};
pub use sla::{SLA_WARNING_PERCENT, pause_spans};
pub use suggest::closest;

/// Routers share one `Rules` across threads behind an `Arc`; keep it so.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Rules>();
};
