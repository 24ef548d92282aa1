-- People (issue 16). Every event records who made it: the caller's token
-- subject and role, or Meridian itself (role 'system'). Both NULL on
-- events written before this step.
ALTER TABLE events ADD COLUMN actor_subject TEXT;
ALTER TABLE events ADD COLUMN actor_role TEXT;
-- An agent's presence as they last set it, with when. Region-local: what
-- counts is read through the shift (a presence set in an earlier shift has
-- lapsed), and peers read it on the load path, not from the log.
CREATE TABLE agent_presence (
    agent    TEXT NOT NULL PRIMARY KEY,
    presence TEXT NOT NULL,
    set_at   BIGINT NOT NULL
);
-- Open tickets per assignee, for capacity checks and the load report.
CREATE INDEX tickets_owner_assignee ON tickets (owner_region, assignee);
