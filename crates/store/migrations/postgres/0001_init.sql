-- Meridian store, PostgreSQL, version 1.
-- Only TEXT and BIGINT columns: the sqlx Any driver maps few types, so
-- booleans are 0/1, instants are unix milliseconds, ids are text and sets are
-- JSON arrays. Handoffs and shift summaries arrive in later migrations.
-- Id columns use the "C" collation so that text order is byte order: ticket
-- ids are UUIDv7 strings and list pagination relies on their order.

-- The append-only event log of every origin, local and remote. The primary
-- key makes replication apply idempotent.
CREATE TABLE events (
    origin_region TEXT COLLATE "C" NOT NULL,
    origin_seq    BIGINT NOT NULL,
    ticket_id     TEXT COLLATE "C" NOT NULL,
    epoch         BIGINT NOT NULL,
    hlc_time      BIGINT NOT NULL,
    traceparent   TEXT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (origin_region, origin_seq)
);
CREATE INDEX events_ticket_idx ON events (ticket_id, hlc_time);

-- The head of the local log: the last origin_seq this region allocated. Local
-- writers lock this row, so gateway replicas sharing one database still
-- produce one dense sequence.
CREATE TABLE origins (
    region   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- How far this region has applied each peer's log.
CREATE TABLE cursors (
    origin_region TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    applied_seq   BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- The current state of every ticket, projected from the log.
CREATE TABLE tickets (
    ticket_id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    subject                TEXT NOT NULL,
    body                   TEXT NOT NULL,
    customer               TEXT NOT NULL,
    tier                   TEXT COLLATE "C" NOT NULL,
    skills                 TEXT NOT NULL,
    language               TEXT NOT NULL,
    residency              TEXT NOT NULL,
    status                 TEXT COLLATE "C" NOT NULL,
    assignee               TEXT NULL,
    priority               TEXT NOT NULL,
    owner_region           TEXT COLLATE "C" NOT NULL,
    owner_epoch            BIGINT NOT NULL,
    -- Set while the owner's handoff offer to this region awaits its answer.
    handoff_to             TEXT NULL,
    -- The SLA clocks as JSON, and two columns derived from them at every
    -- write: when the SLA monitor must next look, and whether any clock is
    -- at risk or breached.
    sla                    TEXT NOT NULL,
    sla_check_at           BIGINT NULL,
    sla_at_risk            BIGINT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
-- Each list filter walks its index in ticket_id order, which is also the
-- pagination order.
CREATE INDEX tickets_status_idx   ON tickets (status, ticket_id);
CREATE INDEX tickets_owner_idx    ON tickets (owner_region, ticket_id);
CREATE INDEX tickets_assignee_idx ON tickets (assignee, ticket_id);
CREATE INDEX tickets_tier_idx     ON tickets (tier, ticket_id);
CREATE INDEX tickets_sla_risk_idx ON tickets (sla_at_risk, ticket_id);
-- The SLA monitor's scan: this region's tickets whose clocks need a look.
CREATE INDEX tickets_sla_check_idx ON tickets (owner_region, sla_check_at);

-- Notes merge from every region. No foreign key to tickets: a note replicated
-- from one origin may arrive before the ticket created by another.
CREATE TABLE notes (
    note_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    ticket_id  TEXT COLLATE "C" NOT NULL,
    region     TEXT NOT NULL,
    author     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    auto       BIGINT NOT NULL
);
CREATE INDEX notes_ticket_idx ON notes (ticket_id, created_at, note_id);

-- Owner-scoped writes that arrived at an epoch other than the current one.
-- Kept and shown on the ticket, never silently dropped; at most one per event.
CREATE TABLE conflicts (
    id            BIGSERIAL PRIMARY KEY,
    ticket_id     TEXT COLLATE "C" NOT NULL,
    origin_region TEXT COLLATE "C" NOT NULL,
    origin_seq    BIGINT NOT NULL,
    stale_epoch   BIGINT NOT NULL,
    current_epoch BIGINT NOT NULL,
    changes       TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    UNIQUE (origin_region, origin_seq)
);
CREATE INDEX conflicts_ticket_idx ON conflicts (ticket_id, id);

-- What each shift left the next: written by the outgoing region, replicated
-- like any event. summary_id is the summary event's ticket_id.
CREATE TABLE shift_summaries (
    summary_id TEXT NOT NULL PRIMARY KEY,
    region     TEXT NOT NULL,
    shift_end  BIGINT NOT NULL,
    summary    TEXT NOT NULL
);
CREATE INDEX shift_summaries_region_idx ON shift_summaries (region, shift_end);
