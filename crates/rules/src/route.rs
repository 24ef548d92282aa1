//! The routing decision: a pure function of (rules, instant, region health,
//! region load, ticket attributes).
//!
//! 1. Filters, in this order, each candidate region: residency allows it; it
//!    is healthy; it covers every skill the ticket needs; it is on shift (or
//!    in the overlap window before its shift).
//! 2. Scores the survivors: preference, load against capacity, SLA
//!    headroom (how much of the tier's first-response target the region can
//!    still cover before its on-shift time ends), and language: a region
//!    that declares the ticket's language (its primary subtag) gets
//!    `language_weight` on top. Language is considered only when the ticket
//!    has one and some region declares languages; a preference, never a
//!    filter, so a ticket in a language nobody on shift speaks still lands.
//! 3. With no survivor, the out-of-hours policy decides and the decision says
//!    which policy applied. Nothing is dropped silently: when even the policy
//!    finds no region, the reason is `no_eligible_region` and every candidate
//!    says why it was filtered.
//!
//! The hot path does one allocation (the candidate list); skill and residency
//! sets are bit masks precomputed per rules version.

use std::collections::HashMap;

use jiff::Timestamp;
use meridian_core::{Priority, RegionId, Skill, Tier};
use serde::{Deserialize, Serialize};

use crate::model::{OutOfHoursKind, Rules};
use crate::shifts::{ShiftPosition, ShiftState};

/// A region's health as the router last heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionHealth {
    Up,
    Down,
}

/// A region's current load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionLoad {
    pub open_tickets: u32,
    /// Who is at work now, from a region that keeps a roster; `None`
    /// scores the load against the rules' `capacity`.
    #[serde(default)]
    pub staffing: Option<Staffing>,
}

/// A region's staffing now, from its roster and its agents' presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Staffing {
    pub agents_on_shift: u32,
    pub agents_available: u32,
    /// The open tickets the on-shift agents may hold (their limits
    /// summed): the capacity the load term scores against.
    pub capacity: u32,
    pub unassigned: u32,
    pub oldest_unassigned: Option<Timestamp>,
}

/// The ticket attributes routing looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RouteRequest {
    /// The ticket's tier; `None` scores without SLA headroom.
    pub tier: Option<Tier>,
    /// Every one of these must be covered by the chosen region.
    pub skills: Vec<Skill>,
    /// Region ids or residency rule names; the ticket may only go to a region
    /// one of them allows. Empty means anywhere.
    pub residency: Vec<String>,
    pub priority: Priority,
    /// The ticket's language tag (`de`, `pt-BR`); routing looks at its
    /// primary subtag. `None` or empty: no language preference.
    #[serde(default)]
    pub language: Option<String>,
}

/// Why the decision came out as it did. Machine-readable; also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The best eligible region is on shift.
    OnShift,
    /// The best eligible region is in the overlap window before its shift.
    Overlap,
    /// Nothing eligible is on shift; the region whose shift starts next.
    OutOfHoursNextOnShift,
    /// Nothing eligible is on shift; the configured on-call region.
    OutOfHoursOnCall,
    /// Nothing eligible is on shift; the escalation path's first usable region.
    Escalation,
    /// No region can take the ticket at all (residency, health or skills
    /// exclude every one); the candidates say why.
    NoEligibleRegion,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OnShift => "on_shift",
            Reason::Overlap => "overlap",
            Reason::OutOfHoursNextOnShift => "out_of_hours_next_on_shift",
            Reason::OutOfHoursOnCall => "out_of_hours_on_call",
            Reason::Escalation => "escalation",
            Reason::NoEligibleRegion => "no_eligible_region",
        }
    }
}

/// Why a candidate region was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterReason {
    /// The ticket's residency does not allow this region.
    Residency,
    /// The region is reported down.
    Down,
    /// No health report for the region: treated as down, because routing to
    /// a region nobody has heard from loses tickets.
    NoHealthReport,
    /// The region does not cover one of the ticket's skills.
    MissingSkill,
    /// Not on shift and not in its overlap window.
    OffShift,
}

impl FilterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::Residency => "residency",
            FilterReason::Down => "down",
            FilterReason::NoHealthReport => "no_health_report",
            FilterReason::MissingSkill => "missing_skill",
            FilterReason::OffShift => "off_shift",
        }
    }
}

/// Something odd about the request that did not stop the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// The tier is not in the rules; SLA headroom was not scored.
    UnknownTier,
    /// A skill no region covers; no region can be eligible.
    UnknownSkill,
    /// A residency entry that is neither a region nor a residency rule.
    UnknownResidency,
}

/// A candidate's score; each part is in 0..=1 before weighting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    pub total: f64,
    pub preference: f64,
    pub load: f64,
    pub headroom: f64,
    /// 1 when the region speaks the ticket's language, else 0 (and 0 when
    /// language was not considered).
    pub language: f64,
}

/// One region as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate<'r> {
    pub region: &'r RegionId,
    pub position: ShiftPosition,
    /// `None` when the region was kept.
    pub filtered: Option<FilterReason>,
    /// Present for kept regions.
    pub score: Option<Score>,
    pub chosen: bool,
    /// Whether the region speaks the ticket's language; `None` when
    /// language was not considered (see [`Decision::language`]).
    pub speaks_language: Option<bool>,
    /// Who owns the region's queue in its current (or next) shift.
    pub queue_owner: Option<&'r str>,
    pub open_tickets: u32,
    pub capacity: u32,
    /// When the region's current on-shift time ends (on shift only).
    pub shift_ends_at: Option<Timestamp>,
    /// When its next shift starts (overlap or off shift, within two weeks).
    pub next_shift_at: Option<Timestamp>,
}

/// The routing decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision<'r> {
    pub rules_version: &'r str,
    pub rules_hash: &'r str,
    pub at: Timestamp,
    /// The chosen region; `None` only with `no_eligible_region`.
    pub region: Option<&'r RegionId>,
    pub reason: Reason,
    /// Who owns the chosen region's queue for the shift the ticket lands in.
    pub queue_owner: Option<&'r str>,
    /// The configured out-of-hours policy, when it was consulted. When it
    /// differs from what `reason` says, the policy found no usable region
    /// and the router fell back to the next region on shift.
    pub out_of_hours_policy: Option<OutOfHoursKind>,
    /// For out-of-hours decisions: when the chosen region's shift starts.
    pub next_shift_at: Option<Timestamp>,
    /// For `escalation`: the region whose escalation path was followed.
    pub escalated_from: Option<&'r RegionId>,
    /// The ticket's primary language subtag when language was considered:
    /// the ticket has one and some region declares its languages.
    pub language: Option<String>,
    /// Kept regions by score (best first), then filtered ones in file order.
    pub candidates: Vec<Candidate<'r>>,
    pub warnings: Vec<Warning>,
}

impl Decision<'_> {
    /// When a person will answer the ticket, for the customer's
    /// acknowledgement: `now: our team in us-east is on shift`, or `when our
    /// next shift opens, Tuesday 8 December 09:00 UTC` when the ticket
    /// lands off shift. `None` when no region could take it.
    pub fn answer_when(&self) -> Option<String> {
        let region = self.region?;
        Some(match self.next_shift_at {
            None => format!("now: our team in {region} is on shift"),
            Some(opens) => format!(
                "when our next shift opens, {}",
                opens.strftime("%A %-d %B %H:%M UTC")
            ),
        })
    }

    /// The chosen region, then the other kept regions by score: the order the
    /// router tries gateways in when a forward fails.
    pub fn fallback_order(&self) -> impl Iterator<Item = &RegionId> {
        let chosen = self.region;
        chosen.into_iter().chain(
            self.candidates
                .iter()
                .filter(move |c| c.filtered.is_none() && Some(c.region) != chosen)
                .map(|c| c.region),
        )
    }
}

fn priority_factor(priority: Priority) -> f64 {
    // Urgent tickets care most about landing where the shift will last.
    match priority {
        Priority::Low => 0.5,
        Priority::Normal => 1.0,
        Priority::High => 1.5,
        Priority::Urgent => 2.0,
    }
}

/// The primary subtag of a language tag, lowercase: `pt` for `pt-BR`.
/// `None` for an empty or malformed tag (the ticket's tag was checked when
/// it was created; this only guards the routing hot path).
pub fn primary_subtag(tag: &str) -> Option<String> {
    let primary = tag.trim().split(['-', '_']).next()?;
    ((2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| primary.to_ascii_lowercase())
}

impl Rules {
    /// Decides where a ticket goes. Pure: the same inputs give the same
    /// decision on every router replica.
    ///
    /// A region missing from `health` counts as down; one missing from `load`
    /// counts as empty.
    pub fn decide<'r>(
        &'r self,
        now: Timestamp,
        health: &HashMap<RegionId, RegionHealth>,
        load: &HashMap<RegionId, RegionLoad>,
        ticket: &RouteRequest,
    ) -> Decision<'r> {
        let mut warnings = Vec::new();
        let policy = ticket.tier.as_ref().and_then(|t| self.tier(t.as_str()));
        if ticket.tier.is_some() && policy.is_none() {
            warnings.push(Warning::UnknownTier);
        }
        let mut needed: u64 = 0;
        let mut unknown_skill = false;
        for skill in &ticket.skills {
            match self.skill_bit.get(skill.as_str()) {
                Some(bit) => needed |= 1u64 << bit,
                None => unknown_skill = true,
            }
        }
        if unknown_skill {
            warnings.push(Warning::UnknownSkill);
        }
        let all_regions: u64 = if self.regions.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.regions.len()) - 1
        };
        let allowed: u64 = if ticket.residency.is_empty() {
            all_regions
        } else {
            let mut mask = 0;
            for name in &ticket.residency {
                match self.residency_mask.get(name.as_str()) {
                    Some(m) => mask |= m,
                    None => {
                        if !warnings.contains(&Warning::UnknownResidency) {
                            warnings.push(Warning::UnknownResidency);
                        }
                    }
                }
            }
            mask
        };
        let language = ticket
            .language
            .as_deref()
            .and_then(primary_subtag)
            .filter(|_| self.regions.iter().any(|r| !r.languages.is_empty()));
        let target_secs = policy.map(|p| f64::from(p.first_response_minutes) * 60.0);
        let routing = &self.routing;
        let headroom_weight = routing.headroom_weight * priority_factor(ticket.priority);

        let mut candidates: Vec<Candidate<'r>> = Vec::with_capacity(self.regions.len());
        // Regions the out-of-hours policies may use: residency allows them
        // and they are healthy.
        let mut usable: u64 = 0;
        for (i, region) in self.regions.iter().enumerate() {
            let state: ShiftState = region.shift_state(now, self.overlap);
            let open_tickets = load.get(&region.id).map_or(0, |l| l.open_tickets);
            // Staffed regions score against the agents on shift now (none:
            // full); the others against the rules' capacity.
            let capacity = load
                .get(&region.id)
                .and_then(|l| l.staffing)
                .map_or(region.capacity, |s| s.capacity);
            let filtered = if allowed & (1u64 << i) == 0 {
                Some(FilterReason::Residency)
            } else if let Some(h) = health.get(&region.id) {
                if *h == RegionHealth::Down {
                    Some(FilterReason::Down)
                } else {
                    None
                }
            } else {
                Some(FilterReason::NoHealthReport)
            };
            if filtered.is_none() {
                usable |= 1u64 << i;
            }
            let filtered = filtered.or_else(|| {
                if unknown_skill || region.skill_mask & needed != needed {
                    Some(FilterReason::MissingSkill)
                } else if state.position == ShiftPosition::OffShift {
                    Some(FilterReason::OffShift)
                } else {
                    None
                }
            });
            let (shift_ends_at, next_shift_at) = match state.position {
                ShiftPosition::OnShift => (state.covered_until, None),
                _ => (None, state.stretch.map(|s| s.start)),
            };
            let speaks_language = language
                .as_ref()
                .map(|l| region.languages.iter().any(|x| x == l));
            let score = if filtered.is_none() {
                let preference = f64::from(region.preference) / 100.0;
                let load_part = if capacity == 0 {
                    0.0
                } else {
                    1.0 - (f64::from(open_tickets) / f64::from(capacity)).min(1.0)
                };
                let remaining = match state.position {
                    ShiftPosition::OnShift => state.covered_until,
                    _ => state.stretch.map(|s| s.end),
                }
                .map_or(0.0, |end| end.duration_since(now).as_secs_f64().max(0.0));
                let headroom = target_secs.map_or(1.0, |t| {
                    if t > 0.0 {
                        (remaining / t).min(1.0)
                    } else {
                        1.0
                    }
                });
                let language_part = if speaks_language == Some(true) {
                    1.0
                } else {
                    0.0
                };
                let total = routing.preference_weight * preference
                    + routing.load_weight * load_part
                    + headroom_weight * headroom
                    + routing.language_weight * language_part;
                Some(Score {
                    total,
                    preference,
                    load: load_part,
                    headroom,
                    language: language_part,
                })
            } else {
                None
            };
            candidates.push(Candidate {
                region: &region.id,
                position: state.position,
                filtered,
                score,
                chosen: false,
                speaks_language,
                queue_owner: state
                    .stretch
                    .and_then(|s| region.shift_of(s.label))
                    .map(|s| s.queue_owner.as_str()),
                open_tickets,
                capacity,
                shift_ends_at,
                next_shift_at,
            });
        }

        // Kept first, best score first; ties and filtered ones in file order
        // (the sort is stable).
        candidates.sort_by(|a, b| match (a.score, b.score) {
            (Some(x), Some(y)) => y.total.total_cmp(&x.total),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });

        let mut decision = Decision {
            rules_version: &self.version,
            rules_hash: &self.content_hash,
            at: now,
            region: None,
            reason: Reason::NoEligibleRegion,
            queue_owner: None,
            out_of_hours_policy: None,
            next_shift_at: None,
            escalated_from: None,
            language,
            candidates,
            warnings,
        };

        if let Some(best) = decision
            .candidates
            .first_mut()
            .filter(|c| c.filtered.is_none())
        {
            best.chosen = true;
            decision.region = Some(best.region);
            decision.reason = if best.position == ShiftPosition::OnShift {
                Reason::OnShift
            } else {
                Reason::Overlap
            };
            decision.queue_owner = best.queue_owner;
            return decision;
        }

        // Out of hours. A region is usable by the policies when residency
        // allows it and it is healthy; on-call and escalation regions take
        // tickets whatever their skills (they are the fallback), the next
        // region on shift must cover the skills.
        decision.out_of_hours_policy = Some(routing.out_of_hours);
        let usable_pos = |pos: usize| pos < 64 && usable & (1u64 << pos) != 0;

        let mut chosen: Option<(usize, Reason)> = None;
        match routing.out_of_hours {
            OutOfHoursKind::OnCall => {
                if let Some(pos) = routing.on_call.filter(|&p| usable_pos(p)) {
                    chosen = Some((pos, Reason::OutOfHoursOnCall));
                }
            }
            OutOfHoursKind::Escalation => {
                // The escalation starts at the most preferred region the
                // ticket's residency allows (first in the file on a tie).
                let start = (0..self.regions.len())
                    .filter(|&i| allowed & (1u64 << i) != 0)
                    .max_by(|&a, &b| {
                        self.regions[a]
                            .preference
                            .cmp(&self.regions[b].preference)
                            .then(b.cmp(&a))
                    });
                if let Some(start) = start
                    && let Some(&pos) = self.regions[start]
                        .escalation_pos
                        .iter()
                        .find(|&&p| usable_pos(p))
                {
                    chosen = Some((pos, Reason::Escalation));
                    decision.escalated_from = Some(&self.regions[start].id);
                }
            }
            OutOfHoursKind::NextOnShift => {}
        }
        if chosen.is_none() {
            // The next region on shift: the policy itself, or the fallback
            // when on-call or escalation found no usable region.
            let next = decision
                .candidates
                .iter()
                .filter(|c| c.filtered == Some(FilterReason::OffShift))
                .filter_map(|c| c.next_shift_at.map(|at| (at, c.region)))
                .min_by(|a, b| {
                    a.0.cmp(&b.0).then_with(|| {
                        let pa = self.region(a.1.as_str()).map_or(0, |r| r.preference);
                        let pb = self.region(b.1.as_str()).map_or(0, |r| r.preference);
                        pb.cmp(&pa)
                    })
                });
            if let Some((_, id)) = next {
                chosen = self
                    .region_pos
                    .get(id.as_str())
                    .map(|&p| (p, Reason::OutOfHoursNextOnShift));
            }
        }
        if let Some((pos, reason)) = chosen {
            let id = &self.regions[pos].id;
            decision.region = Some(id);
            decision.reason = reason;
            if let Some(c) = decision.candidates.iter_mut().find(|c| c.region == id) {
                c.chosen = true;
                decision.next_shift_at = c.next_shift_at;
                if reason == Reason::OutOfHoursNextOnShift {
                    decision.queue_owner = c.queue_owner;
                }
            }
        }
        decision
    }
}
