//! Conversions between protobuf messages and core types. Incoming messages
//! are validated here field by field, so a handler never sees a malformed
//! core value and every refusal names the field.

use std::collections::BTreeSet;

use jiff::Timestamp;
use meridian_core as core;
use prost_types::Timestamp as ProtoTimestamp;

use crate::v1;

/// A request field that could not become a core value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub reason: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<core::Error> for ConvertError {
    fn from(err: core::Error) -> Self {
        match err {
            core::Error::InvalidField { field, reason } => Self::new(field, reason),
            other => Self::new("request", other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, ConvertError>;

pub fn timestamp_to_proto(at: Timestamp) -> ProtoTimestamp {
    ProtoTimestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

pub fn timestamp_from_proto(field: &str, at: &ProtoTimestamp) -> Result<Timestamp> {
    Timestamp::new(at.seconds, at.nanos)
        .map_err(|e| ConvertError::new(field, format!("is not a valid instant: {e}")))
}

pub fn status_to_proto(status: core::Status) -> v1::Status {
    match status {
        core::Status::New => v1::Status::New,
        core::Status::Open => v1::Status::Open,
        core::Status::Pending => v1::Status::Pending,
        core::Status::Escalated => v1::Status::Escalated,
        core::Status::Solved => v1::Status::Solved,
        core::Status::Closed => v1::Status::Closed,
    }
}

/// Reads a status; `STATUS_UNSPECIFIED` is `None`.
pub fn status_from_proto(field: &str, raw: i32) -> Result<Option<core::Status>> {
    let status = v1::Status::try_from(raw)
        .map_err(|_| ConvertError::new(field, format!("{raw} is not a status")))?;
    Ok(match status {
        v1::Status::Unspecified => None,
        v1::Status::New => Some(core::Status::New),
        v1::Status::Open => Some(core::Status::Open),
        v1::Status::Pending => Some(core::Status::Pending),
        v1::Status::Escalated => Some(core::Status::Escalated),
        v1::Status::Solved => Some(core::Status::Solved),
        v1::Status::Closed => Some(core::Status::Closed),
    })
}

pub fn priority_to_proto(priority: core::Priority) -> v1::Priority {
    match priority {
        core::Priority::Low => v1::Priority::Low,
        core::Priority::Normal => v1::Priority::Normal,
        core::Priority::High => v1::Priority::High,
        core::Priority::Urgent => v1::Priority::Urgent,
    }
}

/// Reads a priority; `PRIORITY_UNSPECIFIED` is `None`.
pub fn priority_from_proto(field: &str, raw: i32) -> Result<Option<core::Priority>> {
    let priority = v1::Priority::try_from(raw)
        .map_err(|_| ConvertError::new(field, format!("{raw} is not a priority")))?;
    Ok(match priority {
        v1::Priority::Unspecified => None,
        v1::Priority::Low => Some(core::Priority::Low),
        v1::Priority::Normal => Some(core::Priority::Normal),
        v1::Priority::High => Some(core::Priority::High),
        v1::Priority::Urgent => Some(core::Priority::Urgent),
    })
}

pub fn ticket_to_proto(ticket: &core::Ticket) -> v1::Ticket {
    v1::Ticket {
        id: ticket.id.to_string(),
        subject: ticket.subject.clone(),
        body: ticket.body.clone(),
        customer: ticket.customer.clone(),
        tier: ticket.tier.to_string(),
        skills: ticket.skills.iter().map(ToString::to_string).collect(),
        language: ticket.language.clone(),
        residency: ticket.residency.iter().map(ToString::to_string).collect(),
        status: status_to_proto(ticket.status).into(),
        assignee: ticket.assignee.clone(),
        priority: priority_to_proto(ticket.priority).into(),
        owner: Some(v1::Ownership {
            owner_region: ticket.owner.owner_region.to_string(),
            epoch: ticket.owner.epoch.raw(),
        }),
        sla: Some(sla_to_proto(&ticket.sla)),
        created_at: Some(timestamp_to_proto(ticket.created_at)),
        updated_at: Some(timestamp_to_proto(ticket.updated_at)),
        handoff_to: ticket.handoff_to.as_ref().map(ToString::to_string),
    }
}

pub fn sla_state_to_proto(state: core::SlaState) -> v1::SlaState {
    match state {
        core::SlaState::Running => v1::SlaState::Running,
        core::SlaState::Paused => v1::SlaState::Paused,
        core::SlaState::AtRisk => v1::SlaState::AtRisk,
        core::SlaState::Breached => v1::SlaState::Breached,
        core::SlaState::Met => v1::SlaState::Met,
    }
}

fn clock_to_proto(clock: &core::SlaClock) -> v1::SlaClock {
    v1::SlaClock {
        due: Some(timestamp_to_proto(clock.due)),
        warn_at: Some(timestamp_to_proto(clock.warn_at)),
        state: sla_state_to_proto(clock.state).into(),
    }
}

pub fn sla_to_proto(sla: &core::SlaDeadlines) -> v1::SlaDeadlines {
    v1::SlaDeadlines {
        first_response_due: sla.first_response.map(|c| timestamp_to_proto(c.due)),
        resolution_due: sla.resolution.map(|c| timestamp_to_proto(c.due)),
        first_response: sla.first_response.as_ref().map(clock_to_proto),
        resolution: sla.resolution.as_ref().map(clock_to_proto),
        at_risk: sla.is_at_risk(),
        next_response: sla.next_response.as_ref().map(clock_to_proto),
    }
}

pub fn visibility_to_proto(visibility: core::Visibility) -> v1::Visibility {
    match visibility {
        core::Visibility::Internal => v1::Visibility::Internal,
        core::Visibility::Public => v1::Visibility::Public,
        core::Visibility::Inbound => v1::Visibility::Inbound,
    }
}

/// A request's visibility; an unknown number is refused, naming the field.
pub fn visibility_from_proto(field: &'static str, raw: i32) -> Result<core::Visibility> {
    match v1::Visibility::try_from(raw) {
        Ok(v1::Visibility::Internal) => Ok(core::Visibility::Internal),
        Ok(v1::Visibility::Public) => Ok(core::Visibility::Public),
        Ok(v1::Visibility::Inbound) => Ok(core::Visibility::Inbound),
        Err(_) => Err(ConvertError::new(
            field,
            format!("{raw} is not a visibility; use internal (0), public (1) or inbound (2)"),
        )),
    }
}

pub fn note_to_proto(note: &core::Note) -> v1::Note {
    v1::Note {
        id: note.id.to_string(),
        ticket_id: note.ticket_id.to_string(),
        region: note.region.to_string(),
        author: note.author.clone(),
        body: note.body.clone(),
        created_at: Some(timestamp_to_proto(note.created_at)),
        visibility: visibility_to_proto(note.visibility).into(),
        auto: note.auto,
    }
}

pub fn event_to_proto(event: &core::EventEnvelope) -> v1::Event {
    v1::Event {
        origin_region: event.origin_region.to_string(),
        origin_seq: event.origin_seq,
        ticket_id: event.ticket_id.to_string(),
        epoch: event.epoch.raw(),
        hlc_time: event.hlc_time.0,
        traceparent: event.traceparent.clone().unwrap_or_default(),
        kind: event.kind.name().to_owned(),
        payload_json: event
            .kind
            .payload_json()
            .unwrap_or_else(|_| "null".to_owned()),
        actor_subject: event
            .actor
            .as_ref()
            .map(|a| a.subject.clone())
            .unwrap_or_default(),
        actor_role: event
            .actor
            .as_ref()
            .map(|a| a.role.clone())
            .unwrap_or_default(),
    }
}

pub fn ticket_id(field: &str, raw: &str) -> Result<core::TicketId> {
    if raw.is_empty() {
        return Err(ConvertError::new(field, "is required"));
    }
    raw.parse::<core::TicketId>()
        .map_err(|e| ConvertError::new(field, strip_field(e)))
}

pub fn note_id(field: &str, raw: &str) -> Result<core::NoteId> {
    if raw.is_empty() {
        return Err(ConvertError::new(field, "is required"));
    }
    raw.parse::<core::NoteId>()
        .map_err(|e| ConvertError::new(field, strip_field(e)))
}

pub fn region_id(field: &str, raw: &str) -> Result<core::RegionId> {
    core::RegionId::new(raw).map_err(|e| ConvertError::new(field, strip_field(e)))
}

/// The reason of a core field error, without the core's own field name (the
/// request's field name replaces it).
fn strip_field(err: core::Error) -> String {
    match err {
        core::Error::InvalidField { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn slug_set<T: Ord>(
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> core::Result<T>,
) -> Result<BTreeSet<T>> {
    raw.iter()
        .enumerate()
        .map(|(i, value)| {
            parse(value).map_err(|e| ConvertError::new(format!("{field}[{i}]"), strip_field(e)))
        })
        .collect()
}

/// Reads an idempotency key: empty is none, anything else must be a valid
/// [`core::IdempotencyKey`].
pub fn idempotency_key(field: &str, raw: &str) -> Result<Option<core::IdempotencyKey>> {
    if raw.is_empty() {
        return Ok(None);
    }
    core::IdempotencyKey::new(raw)
        .map(Some)
        .map_err(|e| ConvertError::new(field, strip_field(e)))
}

/// Reads a create request: the new ticket and its idempotency key, if any.
pub fn create_from_proto(
    mut req: v1::CreateTicketRequest,
) -> Result<(core::NewTicket, Option<core::IdempotencyKey>)> {
    let key = idempotency_key("idempotency_key", &std::mem::take(&mut req.idempotency_key))?;
    Ok((core::NewTicket::try_from(req)?, key))
}

/// Validates every field but the idempotency key (see
/// [`create_from_proto`], which reads both).
impl TryFrom<v1::CreateTicketRequest> for core::NewTicket {
    type Error = ConvertError;

    fn try_from(req: v1::CreateTicketRequest) -> Result<Self> {
        let tier = if req.tier.is_empty() {
            "standard".to_owned()
        } else {
            req.tier
        };
        let new = core::NewTicket {
            subject: req.subject,
            body: req.body,
            customer: req.customer,
            tier: core::Tier::new(tier).map_err(|e| ConvertError::new("tier", strip_field(e)))?,
            skills: slug_set("skills", &req.skills, |s| core::Skill::new(s))?,
            language: if req.language.is_empty() {
                "en".to_owned()
            } else {
                req.language
            },
            residency: slug_set("residency", &req.residency, |s| core::RegionId::new(s))?,
            priority: priority_from_proto("priority", req.priority)?.unwrap_or_default(),
        };
        new.validate()?;
        Ok(new)
    }
}

/// Reads a handoff request: the ticket, the target and the note, every
/// field checked. `author` defaults the note's author when it names none.
pub fn handoff_from_proto(
    req: &v1::HandoffRequest,
) -> Result<(core::TicketId, core::RegionId, core::HandoffNote)> {
    let id = ticket_id("ticket_id", &req.ticket_id)?;
    if req.to_region.is_empty() {
        return Err(ConvertError::new("to_region", "is required"));
    }
    let to = region_id("to_region", &req.to_region)?;
    let Some(note) = &req.note else {
        return Err(ConvertError::new(
            "note",
            "is required: every handoff carries a note (status, last action, next action)",
        ));
    };
    let current_status = status_from_proto("note.current_status", note.current_status)?
        .ok_or_else(|| ConvertError::new("note.current_status", "is required"))?;
    let deadline = note
        .deadline
        .as_ref()
        .map(|d| timestamp_from_proto("note.deadline", d))
        .transpose()?;
    let handoff = core::HandoffNote {
        current_status,
        last_action: note.last_action.clone(),
        next_action: note.next_action.clone(),
        deadline,
        text: note.text.clone(),
        author: note.author.clone(),
        auto: false,
    };
    handoff.validate().map_err(|e| match e {
        core::Error::InvalidField {
            field: "author",
            reason,
        } => ConvertError::new("note.author", reason),
        other => ConvertError::from(other),
    })?;
    Ok((id, to, handoff))
}

/// Reads an update request into the ticket id and the patch it asks for.
pub fn update_from_proto(
    req: &v1::UpdateTicketRequest,
) -> Result<(core::TicketId, core::TicketPatch)> {
    let id = ticket_id("ticket_id", &req.ticket_id)?;
    let status = match req.status {
        Some(raw) => Some(
            status_from_proto("status", raw)?
                .ok_or_else(|| ConvertError::new("status", "must not be STATUS_UNSPECIFIED"))?,
        ),
        None => None,
    };
    let priority = match req.priority {
        Some(raw) => Some(
            priority_from_proto("priority", raw)?
                .ok_or_else(|| ConvertError::new("priority", "must not be PRIORITY_UNSPECIFIED"))?,
        ),
        None => None,
    };
    let assignee = match (&req.assignee, req.clear_assignee) {
        (Some(_), true) => {
            return Err(ConvertError::new(
                "clear_assignee",
                "cannot be combined with assignee",
            ));
        }
        (Some(name), false) => Some(Some(name.clone())),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let patch = core::TicketPatch {
        status,
        assignee,
        priority,
    };
    patch.validate()?;
    Ok((id, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> v1::CreateTicketRequest {
        v1::CreateTicketRequest {
            subject: "VPN down".into(),
            body: "since 9am".into(),
            customer: "acme".into(),
            tier: "premium".into(),
            skills: vec!["networking".into()],
            language: String::new(),
            residency: vec!["eu-west".into()],
            priority: v1::Priority::Urgent.into(),
            idempotency_key: String::new(),
        }
    }

    #[test]
    fn idempotency_key_is_optional_and_checked_by_name() {
        let (_, key) = create_from_proto(create()).unwrap();
        assert_eq!(key, None, "empty means no key");
        let mut keyed = create();
        keyed.idempotency_key = "order-42".into();
        let (new, key) = create_from_proto(keyed).unwrap();
        assert_eq!(key.as_ref().map(|k| k.as_str()), Some("order-42"));
        assert_eq!(new, core::NewTicket::try_from(create()).unwrap());
        for bad in ["x".repeat(129), "caf\u{e9}".to_owned(), "a\tb".to_owned()] {
            let mut req = create();
            req.idempotency_key = bad.clone();
            let err = create_from_proto(req).unwrap_err();
            assert_eq!(err.field, "idempotency_key", "{bad:?}: {err}");
        }
    }

    #[test]
    fn create_request_becomes_a_validated_new_ticket() {
        let new = core::NewTicket::try_from(create()).unwrap();
        assert_eq!(new.language, "en");
        assert_eq!(new.priority, core::Priority::Urgent);
        assert_eq!(new.residency.len(), 1);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut req = create();
        req.skills.push("Bad Skill".into());
        let err = core::NewTicket::try_from(req).unwrap_err();
        assert_eq!(err.field, "skills[1]");

        let mut req = create();
        req.priority = 42;
        assert_eq!(
            core::NewTicket::try_from(req).unwrap_err().field,
            "priority"
        );

        let mut req = create();
        req.subject.clear();
        assert_eq!(
            core::NewTicket::try_from(req).unwrap_err().to_string(),
            "subject: must not be empty"
        );

        let update = v1::UpdateTicketRequest {
            ticket_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(update_from_proto(&update).unwrap_err().field, "ticket_id");
    }

    #[test]
    fn unassign_and_assign_conflict() {
        let id = core::TicketId::new_v7(Timestamp::UNIX_EPOCH, [3; 10]).to_string();
        let req = v1::UpdateTicketRequest {
            ticket_id: id.clone(),
            assignee: Some("bo".into()),
            clear_assignee: true,
            ..Default::default()
        };
        assert_eq!(update_from_proto(&req).unwrap_err().field, "clear_assignee");
        let req = v1::UpdateTicketRequest {
            ticket_id: id,
            clear_assignee: true,
            ..Default::default()
        };
        assert_eq!(update_from_proto(&req).unwrap().1.assignee, Some(None));
    }
}
