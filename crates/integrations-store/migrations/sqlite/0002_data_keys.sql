-- Data keys seal credentials; each is stored wrapped by a master key (or an external key
-- provider) and never in plaintext.
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY NOT NULL,
    wrapped BLOB NOT NULL,
    wrapping_key_id TEXT NOT NULL,
    is_primary INTEGER NOT NULL CHECK (is_primary IN (0, 1)),
    state TEXT NOT NULL CHECK (state IN ('active', 'rotating')),
    created_at TEXT NOT NULL
);

-- New writes use one primary data key, whichever process adds it.
CREATE UNIQUE INDEX data_keys_one_primary ON data_keys (is_primary) WHERE is_primary = 1;

-- At most one rotation is unfinished, so two rotate-key runs cannot both add a key.
CREATE UNIQUE INDEX data_keys_one_rotating ON data_keys (state) WHERE state = 'rotating';
