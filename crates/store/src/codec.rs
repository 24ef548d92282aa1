//! Conversions between core types and the store's columns. Columns are only
//! TEXT and BIGINT (the Any driver maps few types): instants are unix
//! milliseconds, flags are 0/1, sets are JSON arrays, ids are text.

use std::{collections::BTreeSet, str::FromStr};

use jiff::Timestamp;
use meridian_core::{
    Epoch, EventEnvelope, EventKind, HlcTimestamp, Note, NoteId, Ownership, Priority, RegionId,
    SlaDeadlines, Status, Ticket, TicketChanges, TicketId, Tier,
};
use sqlx::{
    Any, Row,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use crate::{ConflictRecord, Error, Result};

pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// Defines a table's columns once: the column list every statement selects
/// and inserts, its width (what multi-row `VALUES` are numbered by) and the
/// head of its insert. Binders and decoders below follow `COLUMNS`.
macro_rules! table {
    ($module:ident, $name:literal, [$first:literal $(, $rest:literal)* $(,)?]) => {
        pub(crate) mod $module {
            #[allow(dead_code)] // Not every table's statements name it.
            pub(crate) const NAME: &str = $name;
            pub(crate) const COLUMNS: &[&str] = &[$first $(, $rest)*];
            /// `COLUMNS` comma-separated, for `SELECT` and `INSERT`.
            pub(crate) const LIST: &str = concat!($first $(, ", ", $rest)*);
            pub(crate) const WIDTH: usize = COLUMNS.len();
            /// `INSERT INTO <table> (<columns>) VALUES `.
            pub(crate) const INSERT: &str = concat!("INSERT INTO ", $name, " (", $first $(, ", ", $rest)*, ") VALUES ");
        }
    };
}

table!(
    tickets,
    "tickets",
    [
        "ticket_id",
        "subject",
        "body",
        "customer",
        "tier",
        "skills",
        "language",
        "residency",
        "status",
        "assignee",
        "priority",
        "owner_region",
        "owner_epoch",
        "handoff_to",
        "sla",
        "sla_check_at",
        "sla_at_risk",
        "created_at",
        "updated_at",
    ]
);
table!(
    events,
    "events",
    [
        "origin_region",
        "origin_seq",
        "ticket_id",
        "epoch",
        "hlc_time",
        "traceparent",
        "kind",
        "payload",
        "actor_subject",
        "actor_role",
        "recorded_at",
    ]
);
table!(
    notes,
    "notes",
    [
        "note_id",
        "ticket_id",
        "region",
        "author",
        "body",
        "created_at",
        "auto",
        "visibility",
    ]
);
table!(
    conflicts,
    "conflicts",
    [
        "ticket_id",
        "origin_region",
        "origin_seq",
        "stale_epoch",
        "current_epoch",
        "changes",
        "recorded_at",
    ]
);

/// The ticket columns in the order [`ticket_from_row`] and [`bind_ticket`]
/// use.
pub(crate) const TICKET_COLUMNS: &str = tickets::LIST;
pub(crate) const EVENT_COLUMNS: &str = events::LIST;
pub(crate) const NOTE_COLUMNS: &str = notes::LIST;
pub(crate) const CONFLICT_COLUMNS: &str = conflicts::LIST;

// ---- values going in ----

/// A `u64` for a BIGINT column. Values past `i64::MAX` are refused rather
/// than wrapped, so the stored order is the real order.
pub(crate) fn to_db(value: u64, field: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::invalid(
            field,
            format!("{value} does not fit a signed 64-bit column"),
        )
    })
}

pub(crate) fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

/// The store keeps instants at millisecond precision; writes are truncated
/// up front so that an event's payload and the projection it produced agree.
pub(crate) fn truncate_ms(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)
}

pub(crate) fn truncate_ticket_times(ticket: &mut Ticket) {
    ticket.created_at = truncate_ms(ticket.created_at);
    ticket.updated_at = truncate_ms(ticket.updated_at);
    truncate_sla(&mut ticket.sla);
}

pub(crate) fn truncate_sla(sla: &mut SlaDeadlines) {
    for clock in sla
        .first_response
        .iter_mut()
        .chain(sla.next_response.iter_mut())
        .chain(sla.resolution.iter_mut())
    {
        clock.due = truncate_ms(clock.due);
        clock.warn_at = truncate_ms(clock.warn_at);
    }
}

/// The SLA columns of a ticket: the clocks, and the two values derived from
/// them that the monitor's scan and the at-risk filter use.
pub(crate) fn sla_columns(sla: &SlaDeadlines) -> Result<(String, Option<i64>, i64)> {
    Ok((
        json(sla, "sla")?,
        sla.check_at().map(millis),
        i64::from(sla.is_at_risk()),
    ))
}

fn json<T: serde::Serialize>(value: &T, field: &'static str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::invalid(field, format!("does not encode as JSON: {e}")))
}

/// Binds every ticket column, in [`TICKET_COLUMNS`] order.
pub(crate) fn bind_ticket<'q>(query: AnyQuery<'q>, ticket: &Ticket) -> Result<AnyQuery<'q>> {
    Ok(TicketRow::new(ticket)?.bind(query))
}

/// The columns of a ticket row, encoded and ready to bind: built before
/// any write, so a value that cannot be stored is found first.
pub(crate) struct TicketRow {
    ticket_id: String,
    subject: String,
    body: String,
    customer: String,
    tier: String,
    skills: String,
    language: String,
    residency: String,
    status: &'static str,
    assignee: Option<String>,
    priority: &'static str,
    owner_region: String,
    owner_epoch: i64,
    handoff_to: Option<String>,
    sla: String,
    sla_check_at: Option<i64>,
    sla_at_risk: i64,
    created_at: i64,
    updated_at: i64,
}

impl TicketRow {
    pub(crate) fn new(ticket: &Ticket) -> Result<Self> {
        let (sla, sla_check_at, sla_at_risk) = sla_columns(&ticket.sla)?;
        Ok(Self {
            ticket_id: ticket.id.to_string(),
            subject: ticket.subject.clone(),
            body: ticket.body.clone(),
            customer: ticket.customer.clone(),
            tier: ticket.tier.as_str().to_owned(),
            skills: json(&ticket.skills, "skills")?,
            language: ticket.language.clone(),
            residency: json(&ticket.residency, "residency")?,
            status: ticket.status.as_str(),
            assignee: ticket.assignee.clone(),
            priority: ticket.priority.as_str(),
            owner_region: ticket.owner.owner_region.as_str().to_owned(),
            owner_epoch: to_db(ticket.owner.epoch.raw(), "owner.epoch")?,
            handoff_to: ticket.handoff_to.as_ref().map(|r| r.as_str().to_owned()),
            sla,
            sla_check_at,
            sla_at_risk,
            created_at: millis(ticket.created_at),
            updated_at: millis(ticket.updated_at),
        })
    }

    /// Binds every column, in [`TICKET_COLUMNS`] order; the values move
    /// into the query rather than being copied again.
    pub(crate) fn bind<'q>(self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query
            .bind(self.ticket_id)
            .bind(self.subject)
            .bind(self.body)
            .bind(self.customer)
            .bind(self.tier)
            .bind(self.skills)
            .bind(self.language)
            .bind(self.residency)
            .bind(self.status)
            .bind(self.assignee)
            .bind(self.priority)
            .bind(self.owner_region)
            .bind(self.owner_epoch)
            .bind(self.handoff_to)
            .bind(self.sla)
            .bind(self.sla_check_at)
            .bind(self.sla_at_risk)
            .bind(self.created_at)
            .bind(self.updated_at)
    }
}

/// Binds every note column, in [`NOTE_COLUMNS`] order.
pub(crate) fn bind_note<'q>(query: AnyQuery<'q>, note: &Note) -> AnyQuery<'q> {
    query
        .bind(note.id.to_string())
        .bind(note.ticket_id.to_string())
        .bind(note.region.as_str().to_owned())
        .bind(note.author.clone())
        .bind(note.body.clone())
        .bind(millis(note.created_at))
        .bind(i64::from(note.auto))
        .bind(note.visibility.as_str())
}

/// The columns of an event row, ready to bind.
pub(crate) struct EventRow {
    pub origin_region: String,
    pub origin_seq: i64,
    pub ticket_id: String,
    pub epoch: i64,
    pub hlc_time: i64,
    pub traceparent: Option<String>,
    pub kind: &'static str,
    pub payload: String,
    pub actor: Option<meridian_core::Actor>,
}

impl EventRow {
    /// Binds the row's columns, then `recorded_at_ms`, in the order of the
    /// log's insert statements.
    pub(crate) fn bind<'q>(&'q self, query: AnyQuery<'q>, recorded_at_ms: i64) -> AnyQuery<'q> {
        query
            .bind(self.origin_region.as_str())
            .bind(self.origin_seq)
            .bind(self.ticket_id.as_str())
            .bind(self.epoch)
            .bind(self.hlc_time)
            .bind(self.traceparent.as_deref())
            .bind(self.kind)
            .bind(self.payload.as_str())
            .bind(self.actor.as_ref().map(|a| a.subject.as_str()))
            .bind(self.actor.as_ref().map(|a| a.role.as_str()))
            .bind(recorded_at_ms)
    }

    pub(crate) fn new(event: &EventEnvelope) -> Result<Self> {
        Ok(Self {
            origin_region: event.origin_region.as_str().to_owned(),
            origin_seq: to_db(event.origin_seq, "origin_seq")?,
            ticket_id: event.ticket_id.to_string(),
            epoch: to_db(event.epoch.raw(), "epoch")?,
            hlc_time: to_db(event.hlc_time.0, "hlc_time")?,
            traceparent: event.traceparent.clone(),
            kind: event.kind.name(),
            payload: event
                .kind
                .payload_json()
                .map_err(|e| Error::invalid("payload", format!("does not encode as JSON: {e}")))?,
            actor: event.actor.clone(),
        })
    }
}

/// Binds every conflict column, in [`conflicts::COLUMNS`] order.
pub(crate) fn bind_conflict<'q>(
    query: AnyQuery<'q>,
    ticket_id: TicketId,
    conflict: &ConflictRecord,
) -> Result<AnyQuery<'q>> {
    Ok(query
        .bind(ticket_id.to_string())
        .bind(conflict.origin_region.as_str().to_owned())
        .bind(to_db(conflict.origin_seq, "origin_seq")?)
        .bind(to_db(conflict.stale_epoch.raw(), "epoch")?)
        .bind(to_db(conflict.current_epoch.raw(), "epoch")?)
        .bind(changes_json(&conflict.changes)?)
        .bind(millis(conflict.recorded_at)))
}

pub(crate) fn changes_json(changes: &TicketChanges) -> Result<String> {
    json(changes, "changes")
}

// ---- values coming out ----

fn get<'r, T>(row: &'r AnyRow, table: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get::<T, _>(column)
        .map_err(|e| Error::corrupt(table, column, e))
}

pub(crate) fn text(row: &AnyRow, table: &str, column: &str) -> Result<String> {
    get::<String>(row, table, column)
}

pub(crate) fn opt_text(row: &AnyRow, table: &str, column: &str) -> Result<Option<String>> {
    get::<Option<String>>(row, table, column)
}

pub(crate) fn int(row: &AnyRow, table: &str, column: &str) -> Result<i64> {
    get::<i64>(row, table, column)
}

pub(crate) fn uint(row: &AnyRow, table: &str, column: &str) -> Result<u64> {
    let value = int(row, table, column)?;
    u64::try_from(value).map_err(|_| Error::corrupt(table, column, format!("{value} is negative")))
}

fn timestamp_of(value: i64, table: &str, column: &str) -> Result<Timestamp> {
    Timestamp::from_millisecond(value).map_err(|e| Error::corrupt(table, column, e))
}

pub(crate) fn timestamp(row: &AnyRow, table: &str, column: &str) -> Result<Timestamp> {
    timestamp_of(int(row, table, column)?, table, column)
}

/// Parses a text column with the type's own parser.
pub(crate) fn parsed<T>(row: &AnyRow, table: &str, column: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let raw = text(row, table, column)?;
    raw.parse::<T>()
        .map_err(|e| Error::corrupt(table, column, e))
}

pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    table: &str,
    column: &str,
) -> Result<T> {
    let raw = text(row, table, column)?;
    serde_json::from_str(&raw).map_err(|e| Error::corrupt(table, column, e))
}

pub(crate) fn epoch(row: &AnyRow, table: &str, column: &str) -> Result<Epoch> {
    Ok(Epoch::from_raw(uint(row, table, column)?))
}

/// A ticket from a row selected with [`TICKET_COLUMNS`].
pub(crate) fn ticket_from_row(row: &AnyRow) -> Result<Ticket> {
    const T: &str = "tickets";
    Ok(Ticket {
        id: parsed::<TicketId>(row, T, "ticket_id")?,
        subject: text(row, T, "subject")?,
        body: text(row, T, "body")?,
        customer: text(row, T, "customer")?,
        tier: parsed::<Tier>(row, T, "tier")?,
        skills: json_column::<BTreeSet<_>>(row, T, "skills")?,
        language: text(row, T, "language")?,
        residency: json_column::<BTreeSet<_>>(row, T, "residency")?,
        status: parsed::<Status>(row, T, "status")?,
        assignee: opt_text(row, T, "assignee")?,
        priority: parsed::<Priority>(row, T, "priority")?,
        owner: Ownership {
            owner_region: parsed::<RegionId>(row, T, "owner_region")?,
            epoch: epoch(row, T, "owner_epoch")?,
        },
        handoff_to: opt_text(row, T, "handoff_to")?
            .map(|r| {
                r.parse::<RegionId>()
                    .map_err(|e| Error::corrupt(T, "handoff_to", e))
            })
            .transpose()?,
        sla: json_column::<SlaDeadlines>(row, T, "sla")?,
        created_at: timestamp(row, T, "created_at")?,
        updated_at: timestamp(row, T, "updated_at")?,
    })
}

/// An event from a row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &AnyRow) -> Result<EventEnvelope> {
    const T: &str = "events";
    let kind = text(row, T, "kind")?;
    let payload = text(row, T, "payload")?;
    Ok(EventEnvelope {
        origin_region: parsed::<RegionId>(row, T, "origin_region")?,
        origin_seq: uint(row, T, "origin_seq")?,
        ticket_id: parsed::<TicketId>(row, T, "ticket_id")?,
        epoch: epoch(row, T, "epoch")?,
        hlc_time: HlcTimestamp(uint(row, T, "hlc_time")?),
        traceparent: opt_text(row, T, "traceparent")?,
        actor: match (
            opt_text(row, T, "actor_subject")?,
            opt_text(row, T, "actor_role")?,
        ) {
            (Some(subject), Some(role)) => Some(meridian_core::Actor { subject, role }),
            _ => None,
        },
        kind: EventKind::from_parts(&kind, &payload)
            .map_err(|e| Error::corrupt(T, "payload", e))?,
    })
}

/// A note from a row selected with [`NOTE_COLUMNS`].
pub(crate) fn note_from_row(row: &AnyRow) -> Result<Note> {
    const T: &str = "notes";
    let auto = int(row, T, "auto")?;
    Ok(Note {
        id: parsed::<NoteId>(row, T, "note_id")?,
        ticket_id: parsed::<TicketId>(row, T, "ticket_id")?,
        region: parsed::<RegionId>(row, T, "region")?,
        author: text(row, T, "author")?,
        body: text(row, T, "body")?,
        created_at: timestamp(row, T, "created_at")?,
        auto: match auto {
            0 => false,
            1 => true,
            other => return Err(Error::corrupt(T, "auto", format!("{other} is not 0 or 1"))),
        },
        visibility: parsed(row, T, "visibility")?,
    })
}

/// A conflict from a row selected with [`CONFLICT_COLUMNS`].
pub(crate) fn conflict_from_row(row: &AnyRow) -> Result<ConflictRecord> {
    const T: &str = "conflicts";
    Ok(ConflictRecord {
        origin_region: parsed::<RegionId>(row, T, "origin_region")?,
        origin_seq: uint(row, T, "origin_seq")?,
        stale_epoch: epoch(row, T, "stale_epoch")?,
        current_epoch: epoch(row, T, "current_epoch")?,
        changes: json_column::<TicketChanges>(row, T, "changes")?,
        recorded_at: timestamp(row, T, "recorded_at")?,
    })
}

/// A bind value for SQL assembled at run time. sqlx's `QueryBuilder` cannot
/// serve here: for the Any driver it writes `?` placeholders, which
/// PostgreSQL rejects, so dynamic statements number their own `$N`.
pub(crate) enum Bind {
    Text(String),
    /// Text or SQL NULL.
    OptText(Option<String>),
    Int(i64),
}

/// Dynamic SQL with numbered placeholders.
#[derive(Default)]
pub(crate) struct SqlBuilder {
    pub sql: String,
    binds: Vec<Bind>,
}

impl SqlBuilder {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            binds: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        self.sql.push('$');
        self.sql.push_str(&self.binds.len().to_string());
        self
    }

    pub(crate) fn query(&self) -> AnyQuery<'_> {
        let mut query = sqlx::query(&self.sql);
        for bind in &self.binds {
            query = match bind {
                Bind::Text(value) => query.bind(value.as_str()),
                Bind::OptText(value) => query.bind(value.as_deref()),
                Bind::Int(value) => query.bind(*value),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each binder binds exactly one value per column of its table's one
    /// definition, so a column added there and not bound fails here.
    #[test]
    fn binders_bind_one_value_per_column() {
        use sqlx::{Arguments, Execute};
        let region = RegionId::new("us-east").unwrap();
        let owner = Ownership::new(region.clone(), 0, Epoch::initial(0)).unwrap();
        let new = meridian_core::NewTicket {
            subject: "s".into(),
            body: "b".into(),
            customer: "c".into(),
            tier: Tier::new("standard").unwrap(),
            skills: BTreeSet::new(),
            language: "en".into(),
            residency: BTreeSet::new(),
            priority: Priority::Normal,
        };
        let id = TicketId::new_v7(Timestamp::UNIX_EPOCH, [1; 10]);
        let ticket = Ticket::create(id, new, owner, Timestamp::UNIX_EPOCH).unwrap();
        let count = |mut query: AnyQuery<'_>| query.take_arguments().unwrap().unwrap().len();
        assert_eq!(
            count(bind_ticket(sqlx::query("-"), &ticket).unwrap()),
            tickets::WIDTH
        );
        let note = Note {
            id: NoteId::new_v7(Timestamp::UNIX_EPOCH, [2; 10]),
            ticket_id: id,
            region: region.clone(),
            author: "a".into(),
            body: "b".into(),
            created_at: Timestamp::UNIX_EPOCH,
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        };
        assert_eq!(count(bind_note(sqlx::query("-"), &note)), notes::WIDTH);
        let conflict = ConflictRecord {
            origin_region: region,
            origin_seq: 1,
            stale_epoch: Epoch::initial(0),
            current_epoch: Epoch::initial(1),
            changes: TicketChanges::default(),
            recorded_at: Timestamp::UNIX_EPOCH,
        };
        let query = bind_conflict(sqlx::query("-"), id, &conflict).unwrap();
        assert_eq!(count(query), conflicts::WIDTH);
    }

    #[test]
    fn builder_numbers_placeholders() {
        let mut sql = SqlBuilder::new("SELECT 1 FROM t WHERE a = ");
        sql.bind(Bind::Text("x".into()))
            .push(" AND b IN (")
            .bind(Bind::Int(1))
            .push(", ")
            .bind(Bind::Int(2))
            .push(")");
        assert_eq!(sql.sql, "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3)");
    }

    #[test]
    fn out_of_range_values_are_refused_not_wrapped() {
        assert_eq!(to_db(7, "epoch").unwrap(), 7);
        let err = to_db(u64::MAX, "epoch").unwrap_err().to_string();
        assert!(err.starts_with("epoch: "), "{err}");
    }

    #[test]
    fn truncation_keeps_milliseconds() {
        let at = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(
            truncate_ms(at),
            Timestamp::new(1_700_000_000, 123_000_000).unwrap()
        );
    }
}
