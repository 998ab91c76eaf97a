-- Application tokens. Only the SHA-256 hash of each secret is stored.

CREATE TABLE application_tokens (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash BYTEA NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT application_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);

-- Authentication looks a token up by its hash on every request.
CREATE UNIQUE INDEX application_tokens_by_hash ON application_tokens (token_hash);

CREATE INDEX application_tokens_order ON application_tokens (created_at, id);
