-- Hash chain over the audit log: `hash` is SHA-256 over `prev_hash` and the event's fields, as
-- integrations_core::audit_chain defines it. Rows written before this migration have NULL
-- hashes until the store chains them, once, when it opens the database.
ALTER TABLE audit_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;
-- Lowercased, trimmed `project` filter, for case-insensitive project searches.
ALTER TABLE audit_events ADD COLUMN project_key TEXT;

CREATE INDEX audit_events_by_actor ON audit_events (actor_subject, at DESC, seq DESC);
CREATE INDEX audit_events_by_action ON audit_events (action, at DESC, seq DESC);
CREATE INDEX audit_events_by_project ON audit_events (project_key, at DESC, seq DESC);

-- The newest event written before the chain existed. The store chains unchained rows up to it
-- and no further, so a row whose hash was cleared later is never chained again.
CREATE TABLE audit_chain_origin (last_unchained_seq BIGINT NOT NULL);
INSERT INTO audit_chain_origin (last_unchained_seq)
    SELECT COALESCE(MAX(seq), 0) FROM audit_events;
