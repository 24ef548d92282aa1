//! Turns the core's plans ([`meridian_core::plan`]) into SQL, mechanically:
//! a [`Guard`] becomes the `WHERE` clause of the one statement that makes
//! the [`Set`], so the compare-and-set happens in the database. Nothing
//! here decides whether a change may be made; each guard term has exactly
//! one SQL form.

use meridian_core::{
    RegionId, TicketId,
    plan::{EpochGuard, Guard, HandoffGuard, Set},
};

use crate::{
    Error, Result,
    codec::{self, Bind, SqlBuilder, TICKET_COLUMNS, millis, to_db},
};

/// `UPDATE tickets SET <set> WHERE ticket_id = .. AND <guard> RETURNING
/// <ticket>`. `updated_at` only moves forward, so every replica derives the
/// same projection from the event alone.
pub(crate) fn guarded_update(
    ticket_id: TicketId,
    set: &Set<'_>,
    guard: &Guard,
) -> Result<SqlBuilder> {
    let mut sql = SqlBuilder::new("UPDATE tickets SET ");
    if let Some(fields) = set.fields {
        if let Some(status) = fields.status {
            sql.push("status = ")
                .bind(Bind::Text(status.as_str().to_owned()))
                .push(", ");
        }
        if let Some(assignee) = &fields.assignee {
            sql.push("assignee = ")
                .bind(Bind::OptText(assignee.clone()))
                .push(", ");
        }
        if let Some(priority) = fields.priority {
            sql.push("priority = ")
                .bind(Bind::Text(priority.as_str().to_owned()))
                .push(", ");
        }
        if let Some(sla) = &fields.sla {
            let (sla_json, check_at, at_risk) = codec::sla_columns(sla)?;
            sql.push("sla = ")
                .bind(Bind::Text(sla_json))
                .push(", sla_check_at = ");
            match check_at {
                Some(at) => sql.bind(Bind::Int(at)),
                None => sql.push("NULL"),
            };
            sql.push(", sla_at_risk = ")
                .bind(Bind::Int(at_risk))
                .push(", ");
        }
    }
    if let Some(owner) = &set.owner {
        sql.push("owner_region = ")
            .bind(region(&owner.owner_region))
            .push(", owner_epoch = ")
            .bind(Bind::Int(to_db(owner.epoch.raw(), "epoch")?))
            .push(", ");
    }
    if let Some(handoff_to) = &set.handoff_to {
        match handoff_to {
            Some(to) => sql.push("handoff_to = ").bind(region(to)),
            None => sql.push("handoff_to = NULL"),
        };
        sql.push(", ");
    }
    if set.clears_assignee {
        sql.push("assignee = NULL, ");
    }
    let at = millis(set.touched_at);
    sql.push("updated_at = CASE WHEN updated_at > ")
        .bind(Bind::Int(at))
        .push(" THEN updated_at ELSE ")
        .bind(Bind::Int(at))
        .push(" END WHERE ticket_id = ")
        .bind(Bind::Text(ticket_id.to_string()));
    where_guard(&mut sql, guard)?;
    sql.push(" RETURNING ").push(TICKET_COLUMNS);
    Ok(sql)
}

/// Appends ` AND <term>` for each term of the guard.
fn where_guard(sql: &mut SqlBuilder, guard: &Guard) -> Result<()> {
    let (op, epoch) = match guard.epoch {
        EpochGuard::Equal(epoch) => (" AND owner_epoch = ", epoch),
        EpochGuard::Below(epoch) => (" AND owner_epoch < ", epoch),
    };
    sql.push(op).bind(Bind::Int(to_db(epoch.raw(), "epoch")?));
    if let Some(owner) = &guard.owner {
        sql.push(" AND owner_region = ").bind(region(owner));
    }
    match &guard.handoff {
        HandoffGuard::Any => {}
        HandoffGuard::Absent => {
            sql.push(" AND handoff_to IS NULL");
        }
        HandoffGuard::To(to) => {
            sql.push(" AND handoff_to = ").bind(region(to));
        }
    }
    if let Some(statuses) = &guard.statuses {
        if statuses.is_empty() {
            // No status allows the change: a guard that can never hold.
            sql.push(" AND 1 = 0");
            return Ok(());
        }
        sql.push(" AND status IN (");
        for (i, status) in statuses.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Bind::Text(status.as_str().to_owned()));
        }
        sql.push(")");
    }
    Ok(())
}

fn region(region: &RegionId) -> Bind {
    Bind::Text(region.as_str().to_owned())
}

/// The store's error for a refusal the core named.
pub(crate) fn refusal_error(refusal: meridian_core::plan::Refusal, what: &str) -> Error {
    use meridian_core::plan::Refusal;
    match refusal {
        Refusal::NotFound(id) => Error::TicketNotFound(id),
        Refusal::Duplicate => Error::Duplicate(what.to_owned()),
        Refusal::Fenced { owner, epoch } => Error::Fenced { owner, epoch },
        Refusal::Invalid(e) => Error::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::{
        Epoch, EventEnvelope, EventKind, HlcTimestamp, Status, TicketChanges,
        plan::{Change, Source, plan},
    };

    fn update_event(origin: &str) -> EventEnvelope {
        EventEnvelope {
            origin_region: RegionId::new(origin).unwrap(),
            origin_seq: 3,
            ticket_id: "01900000-0000-7000-8000-000000000000".parse().unwrap(),
            epoch: Epoch::from_raw(2048),
            hlc_time: HlcTimestamp::new(5, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::TicketUpdated {
                changes: TicketChanges {
                    epoch: Epoch::from_raw(2048),
                    status: Some(Status::Closed),
                    assignee: Some(None),
                    priority: None,
                    sla: None,
                },
            },
        }
    }

    fn sql_of(event: &EventEnvelope, source: Source) -> String {
        let plan = plan(event, source).unwrap();
        let Change::Update { set, guard } = &plan.change else {
            panic!("an update plans an update");
        };
        guarded_update(event.ticket_id, set, guard).unwrap().sql
    }

    #[test]
    fn a_guard_becomes_the_where_clause() {
        let event = update_event("us-east");
        let local = sql_of(&event, Source::Local);
        assert!(
            local.starts_with(
                "UPDATE tickets SET status = $1, assignee = $2, updated_at = CASE WHEN updated_at > $3 THEN updated_at \
             ELSE $4 END WHERE ticket_id = $5 AND owner_epoch = $6 AND owner_region = $7 AND handoff_to IS NULL \
             AND status IN ($8, $9)"
            ),
            "{local}"
        );
        let remote = sql_of(&event, Source::Replica);
        assert!(
            remote.contains("AND owner_epoch = $6 RETURNING"),
            "{remote}"
        );
    }
}
