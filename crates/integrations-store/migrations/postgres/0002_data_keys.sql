-- Data keys seal credentials; each is stored wrapped by a master key (or an external key
-- provider) and never in plaintext.
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    wrapped BYTEA NOT NULL,
    wrapping_key_id TEXT NOT NULL,
    is_primary BOOLEAN NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'rotating')),
    created_at TIMESTAMPTZ NOT NULL
);

-- New writes use one primary data key, whichever process adds it.
CREATE UNIQUE INDEX data_keys_one_primary ON data_keys (is_primary) WHERE is_primary;

-- At most one rotation is unfinished, so two rotate-key runs cannot both add a key.
CREATE UNIQUE INDEX data_keys_one_rotating ON data_keys (state) WHERE state = 'rotating';
