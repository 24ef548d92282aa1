-- The writer generation of a region's local log. A gateway that becomes the
-- region's active replica bumps it; every write transaction of that process
-- re-reads it under the same row lock that allocates origin_seq and refuses
-- to commit if it moved, so a stalled former active can never commit beside
-- its successor.
ALTER TABLE origins ADD COLUMN writer_generation BIGINT NOT NULL DEFAULT 0;
