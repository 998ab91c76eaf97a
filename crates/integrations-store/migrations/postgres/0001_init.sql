-- JSON columns are text rather than JSONB so that documents round-trip byte for byte.

CREATE TABLE projects (
    key TEXT PRIMARY KEY,
    identifier TEXT NOT NULL,
    remote_url TEXT NOT NULL,
    platform TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE integrations (
    id UUID PRIMARY KEY,
    provider TEXT NOT NULL,
    category TEXT NOT NULL,
    auth_type TEXT NOT NULL,
    is_global BOOLEAN NOT NULL,
    is_default BOOLEAN NOT NULL,
    config TEXT NOT NULL,
    credential_fields TEXT NOT NULL,
    sealed_credentials BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT integrations_default_is_global CHECK (NOT is_default OR is_global)
);

-- One default per category, whichever server process writes it.
CREATE UNIQUE INDEX integrations_one_default_per_category
    ON integrations (category) WHERE is_default;

CREATE INDEX integrations_order ON integrations (is_default DESC, created_at, id);

CREATE TABLE integration_projects (
    integration_id UUID NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    project_key TEXT NOT NULL REFERENCES projects (key) ON DELETE CASCADE,
    PRIMARY KEY (integration_id, project_key)
);

CREATE INDEX integration_projects_by_project ON integration_projects (project_key);

-- `seq` orders events written within the same timestamp.
CREATE TABLE audit_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    action TEXT NOT NULL,
    integration_ids TEXT NOT NULL,
    filters TEXT NOT NULL,
    outcome TEXT NOT NULL
);

CREATE INDEX audit_events_newest ON audit_events (at DESC, seq DESC);
