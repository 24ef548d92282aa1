//! Conversions for the router's API (`meridian.v1.RouterService`): ticket
//! attributes in, routing decisions and active shifts out.
//!
//! Incoming attributes are validated field by field here (slugs, enum
//! values, list lengths), so the router's handlers only ever hand the rules
//! a well-formed request. Whether a well-formed name is *known* to the rules
//! is the decision's business: it answers with a warning, not a refusal,
//! because the rules may change under a running client.

use jiff::Timestamp;
use meridian_core as core;
use meridian_rules as rules;
use prost_types::Timestamp as ProtoTimestamp;

use crate::convert::{ConvertError, priority_from_proto, timestamp_from_proto, timestamp_to_proto};
use crate::v1;

type Result<T> = std::result::Result<T, ConvertError>;

/// Most skills or residency entries one request may carry; the rules allow
/// at most 64 skills and 64 regions, so more can only be a mistake.
pub const ATTRIBUTES_MAX: usize = 64;

/// Nests a conversion error under `prefix`: `skills[1]` in a `ticket`
/// message becomes `ticket.skills[1]`.
pub fn within(prefix: &str, err: ConvertError) -> ConvertError {
    ConvertError {
        field: format!("{prefix}.{}", err.field),
        reason: err.reason,
    }
}

/// Reads the ticket attributes of a Route or Explain request; `field` names
/// the message in the request (`ticket`).
pub fn route_request_from_proto(
    field: &str,
    attributes: Option<&v1::TicketAttributes>,
) -> Result<rules::RouteRequest> {
    let Some(attributes) = attributes else {
        return Err(ConvertError::new(field, "is required"));
    };
    let tier = if attributes.tier.is_empty() {
        None
    } else {
        Some(
            core::Tier::new(attributes.tier.as_str())
                .map_err(|e| slug_error(format!("{field}.tier"), e))?,
        )
    };
    let skills = slugs(&format!("{field}.skills"), &attributes.skills, |s| {
        core::Skill::new(s)
    })?;
    // Residency entries are region ids or residency rule names; both are
    // slugs, so the region id check is the shape check for either.
    let residency = slugs(&format!("{field}.residency"), &attributes.residency, |s| {
        core::RegionId::new(s)
    })?
    .into_iter()
    .map(String::from)
    .collect();
    let priority =
        priority_from_proto(&format!("{field}.priority"), attributes.priority)?.unwrap_or_default();
    let language = match attributes.language.trim() {
        "" => None,
        tag => {
            if rules::primary_subtag(tag).is_none() {
                return Err(ConvertError::new(
                    format!("{field}.language"),
                    format!("{tag:?} is not a language tag such as en or pt-BR"),
                ));
            }
            Some(tag.to_owned())
        }
    };
    Ok(rules::RouteRequest {
        tier,
        skills,
        residency,
        priority,
        language,
    })
}

/// Reads a list of region ids, such as `assume_down`. Whether the rules
/// know them is for the caller to check.
pub fn region_ids(field: &str, raw: &[String]) -> Result<Vec<core::RegionId>> {
    slugs(field, raw, |s| core::RegionId::new(s))
}

/// An optional instant; `None` when the field is absent.
pub fn optional_instant(field: &str, at: Option<&ProtoTimestamp>) -> Result<Option<Timestamp>> {
    at.map(|at| timestamp_from_proto(field, at)).transpose()
}

fn slugs<T>(
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> core::Result<T>,
) -> Result<Vec<T>> {
    if raw.len() > ATTRIBUTES_MAX {
        return Err(ConvertError::new(
            field,
            format!("has {} entries; at most {ATTRIBUTES_MAX}", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, value)| parse(value).map_err(|e| slug_error(format!("{field}[{i}]"), e)))
        .collect()
}

fn slug_error(field: String, err: core::Error) -> ConvertError {
    // The core names its own field ("skill"); the request's name replaces it.
    let reason = match err {
        core::Error::InvalidField { reason, .. } => reason,
        other => other.to_string(),
    };
    ConvertError::new(field, reason)
}

pub fn reason_to_proto(reason: rules::Reason) -> v1::RouteReason {
    match reason {
        rules::Reason::OnShift => v1::RouteReason::OnShift,
        rules::Reason::Overlap => v1::RouteReason::Overlap,
        rules::Reason::OutOfHoursNextOnShift => v1::RouteReason::OutOfHoursNextOnShift,
        rules::Reason::OutOfHoursOnCall => v1::RouteReason::OutOfHoursOnCall,
        rules::Reason::Escalation => v1::RouteReason::Escalation,
        rules::Reason::NoEligibleRegion => v1::RouteReason::NoEligibleRegion,
    }
}

pub fn filter_reason_to_proto(reason: Option<rules::FilterReason>) -> v1::FilterReason {
    match reason {
        None => v1::FilterReason::Unspecified,
        Some(rules::FilterReason::Residency) => v1::FilterReason::Residency,
        Some(rules::FilterReason::Down) => v1::FilterReason::Down,
        Some(rules::FilterReason::NoHealthReport) => v1::FilterReason::NoHealthReport,
        Some(rules::FilterReason::MissingSkill) => v1::FilterReason::MissingSkill,
        Some(rules::FilterReason::OffShift) => v1::FilterReason::OffShift,
    }
}

pub fn position_to_proto(position: rules::ShiftPosition) -> v1::ShiftPosition {
    match position {
        rules::ShiftPosition::OnShift => v1::ShiftPosition::OnShift,
        rules::ShiftPosition::Overlap => v1::ShiftPosition::Overlap,
        rules::ShiftPosition::OffShift => v1::ShiftPosition::OffShift,
    }
}

pub fn out_of_hours_to_proto(policy: Option<rules::OutOfHoursKind>) -> v1::OutOfHoursPolicy {
    match policy {
        None => v1::OutOfHoursPolicy::Unspecified,
        Some(rules::OutOfHoursKind::NextOnShift) => v1::OutOfHoursPolicy::NextOnShift,
        Some(rules::OutOfHoursKind::OnCall) => v1::OutOfHoursPolicy::OnCall,
        Some(rules::OutOfHoursKind::Escalation) => v1::OutOfHoursPolicy::Escalation,
    }
}

pub fn warning_to_proto(warning: rules::Warning) -> v1::RouteWarning {
    match warning {
        rules::Warning::UnknownTier => v1::RouteWarning::UnknownTier,
        rules::Warning::UnknownSkill => v1::RouteWarning::UnknownSkill,
        rules::Warning::UnknownResidency => v1::RouteWarning::UnknownResidency,
    }
}

pub fn candidate_to_proto(candidate: &rules::Candidate<'_>) -> v1::RouteCandidate {
    v1::RouteCandidate {
        region: candidate.region.to_string(),
        position: position_to_proto(candidate.position).into(),
        filtered: filter_reason_to_proto(candidate.filtered).into(),
        score: candidate.score.map(|s| v1::RouteScore {
            total: s.total,
            preference: s.preference,
            load: s.load,
            headroom: s.headroom,
            language: s.language,
        }),
        speaks_language: candidate.speaks_language,
        chosen: candidate.chosen,
        queue_owner: candidate.queue_owner.unwrap_or_default().to_owned(),
        open_tickets: candidate.open_tickets,
        capacity: candidate.capacity,
        shift_ends_at: candidate.shift_ends_at.map(timestamp_to_proto),
        next_shift_at: candidate.next_shift_at.map(timestamp_to_proto),
    }
}

/// The decision, without its rules version: responses carry that once, at
/// their top level.
pub fn decision_to_proto(decision: &rules::Decision<'_>) -> v1::RoutingDecision {
    v1::RoutingDecision {
        at: Some(timestamp_to_proto(decision.at)),
        region: decision.region.map(ToString::to_string).unwrap_or_default(),
        reason: reason_to_proto(decision.reason).into(),
        queue_owner: decision.queue_owner.unwrap_or_default().to_owned(),
        out_of_hours_policy: out_of_hours_to_proto(decision.out_of_hours_policy).into(),
        next_shift_at: decision.next_shift_at.map(timestamp_to_proto),
        escalated_from: decision
            .escalated_from
            .map(ToString::to_string)
            .unwrap_or_default(),
        candidates: decision.candidates.iter().map(candidate_to_proto).collect(),
        language: decision.language.clone().unwrap_or_default(),
        warnings: decision
            .warnings
            .iter()
            .map(|w| warning_to_proto(*w).into())
            .collect(),
    }
}

/// An active shift, with the router's view of the region's health.
pub fn active_shift_to_proto(shift: &rules::ActiveShift, healthy: bool) -> v1::ActiveShift {
    v1::ActiveShift {
        region: shift.region.clone(),
        position: position_to_proto(shift.position).into(),
        shift: shift.shift.clone(),
        queue_owner: shift.queue_owner.clone(),
        time_zone: shift.time_zone.clone(),
        start: Some(timestamp_to_proto(shift.start)),
        end: Some(timestamp_to_proto(shift.end)),
        start_local: shift.start_local.clone(),
        end_local: shift.end_local.clone(),
        effective_start: Some(timestamp_to_proto(shift.effective_start)),
        effective_end: Some(timestamp_to_proto(shift.effective_end)),
        handing_off: shift.handing_off,
        healthy,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const RULES: &str = r#"
version = "t1"
overlap_minutes = 30

[[regions]]
id = "east"
index = 0
time_zone = "UTC"
skills = ["billing"]
capacity = 10
preference = 60

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "08:00"
end = "16:00"
queue_owner = "east-lead"

[[regions]]
id = "west"
index = 1
time_zone = "UTC"
skills = ["billing"]
capacity = 10
preference = 40

[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "16:00"
end = "08:00"
queue_owner = "west-lead"

[tiers.premium]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480
"#;

    fn attributes() -> v1::TicketAttributes {
        v1::TicketAttributes {
            tier: "premium".into(),
            skills: vec!["billing".into()],
            residency: vec!["eu-only".into()],
            priority: v1::Priority::High.into(),
            language: String::new(),
        }
    }

    #[test]
    fn attributes_become_a_route_request() {
        let req = route_request_from_proto("ticket", Some(&attributes())).unwrap();
        assert_eq!(req.tier.unwrap().as_str(), "premium");
        assert_eq!(req.skills.len(), 1);
        assert_eq!(req.residency, vec!["eu-only".to_owned()]);
        assert_eq!(req.priority, core::Priority::High);

        let empty =
            route_request_from_proto("ticket", Some(&v1::TicketAttributes::default())).unwrap();
        assert_eq!(empty.tier, None);
        assert_eq!(empty.priority, core::Priority::Normal);
    }

    #[test]
    fn bad_attributes_name_their_field() {
        let field = |attributes: v1::TicketAttributes| {
            route_request_from_proto("ticket", Some(&attributes))
                .unwrap_err()
                .field
        };
        assert_eq!(
            route_request_from_proto("ticket", None)
                .unwrap_err()
                .to_string(),
            "ticket: is required"
        );
        assert_eq!(
            field(v1::TicketAttributes {
                tier: "Gold!".into(),
                ..attributes()
            }),
            "ticket.tier"
        );
        assert_eq!(
            field(v1::TicketAttributes {
                skills: vec!["billing".into(), "Net Working".into()],
                ..attributes()
            }),
            "ticket.skills[1]"
        );
        assert_eq!(
            field(v1::TicketAttributes {
                residency: vec![String::new()],
                ..attributes()
            }),
            "ticket.residency[0]"
        );
        assert_eq!(
            field(v1::TicketAttributes {
                priority: 99,
                ..attributes()
            }),
            "ticket.priority"
        );
        let many = vec!["billing".to_owned(); ATTRIBUTES_MAX + 1];
        let err = route_request_from_proto(
            "ticket",
            Some(&v1::TicketAttributes {
                skills: many,
                ..attributes()
            }),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "ticket.skills: has 65 entries; at most 64");
        assert_eq!(
            region_ids("assume_down", &["ok".into(), "NO".into()])
                .unwrap_err()
                .field,
            "assume_down[1]"
        );
        let bad_instant = ProtoTimestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(
            optional_instant("at", Some(&bad_instant))
                .unwrap_err()
                .field,
            "at"
        );
        assert_eq!(optional_instant("at", None).unwrap(), None);
    }

    #[test]
    fn decisions_keep_region_reason_and_candidates() {
        let rules = rules::Rules::parse("rules.toml", RULES).unwrap();
        let at: Timestamp = "2026-06-02T12:00:00Z".parse().unwrap();
        let health: HashMap<_, _> = rules
            .regions()
            .iter()
            .map(|r| (r.id.clone(), rules::RegionHealth::Up))
            .collect();
        let request =
            route_request_from_proto("ticket", Some(&v1::TicketAttributes::default())).unwrap();
        let decision = decision_to_proto(&rules.decide(at, &health, &HashMap::new(), &request));
        assert_eq!(decision.region, "east");
        assert_eq!(decision.reason(), v1::RouteReason::OnShift);
        assert_eq!(decision.queue_owner, "east-lead");
        assert_eq!(
            decision.out_of_hours_policy(),
            v1::OutOfHoursPolicy::Unspecified
        );
        assert_eq!(decision.candidates.len(), 2);
        let east = &decision.candidates[0];
        assert!(east.chosen && east.score.is_some());
        assert_eq!(east.filtered(), v1::FilterReason::Unspecified);
        assert_eq!(
            east.shift_ends_at.unwrap().seconds,
            "2026-06-02T16:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        );
        let west = &decision.candidates[1];
        assert_eq!(west.filtered(), v1::FilterReason::OffShift);
        assert_eq!(west.position(), v1::ShiftPosition::OffShift);
        assert!(!west.chosen && west.score.is_none());

        let active = rules.active_at(at);
        let shift = active_shift_to_proto(&active[0], true);
        assert_eq!(
            (
                shift.region.as_str(),
                shift.queue_owner.as_str(),
                shift.healthy
            ),
            ("east", "east-lead", true)
        );
        assert_eq!(shift.position(), v1::ShiftPosition::OnShift);
    }

    #[test]
    fn nesting_prefixes_the_field() {
        let err = within("ticket", ConvertError::new("skills[0]", "bad"));
        assert_eq!(err.to_string(), "ticket.skills[0]: bad");
    }
}
