-- Idempotency keys of ticket creations (issue 17). A row is written in the
-- same transaction as the creation it names, so a committed ticket always
-- has its key and a key never outlives a rolled-back creation. The caller's
-- scope and key, and the validated request, are kept only as SHA-256
-- digests (hex): no customer text is stored twice. Rows older than the
-- retention (24 hours, see ARCHITECTURE.md) are deleted in small batches,
-- through the created_at index.
CREATE TABLE idempotency_keys (
    key_digest     TEXT NOT NULL PRIMARY KEY,
    request_digest TEXT NOT NULL,
    ticket_id      TEXT NOT NULL,
    origin_region  TEXT NOT NULL,
    origin_seq     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
