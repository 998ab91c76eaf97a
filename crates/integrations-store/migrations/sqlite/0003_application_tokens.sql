-- Application tokens. Only the SHA-256 hash of each secret is stored; times are RFC 3339 text in
-- UTC with a fixed width, as in 0001, so text order is time order.

CREATE TABLE application_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    CONSTRAINT application_tokens_hash_length CHECK (length(token_hash) = 32)
);

-- Authentication looks a token up by its hash on every request.
CREATE UNIQUE INDEX application_tokens_by_hash ON application_tokens (token_hash);

CREATE INDEX application_tokens_order ON application_tokens (created_at, id);
