-- Times are RFC 3339 text in UTC with nanoseconds and a fixed width, so text order is time order.

CREATE TABLE projects (
    key TEXT PRIMARY KEY NOT NULL,
    identifier TEXT NOT NULL,
    remote_url TEXT NOT NULL,
    platform TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE integrations (
    id TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    category TEXT NOT NULL,
    auth_type TEXT NOT NULL,
    is_global INTEGER NOT NULL CHECK (is_global IN (0, 1)),
    is_default INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    config TEXT NOT NULL,
    credential_fields TEXT NOT NULL,
    sealed_credentials BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT integrations_default_is_global CHECK (is_default = 0 OR is_global = 1)
);

-- One default per category, whichever process writes it.
CREATE UNIQUE INDEX integrations_one_default_per_category
    ON integrations (category) WHERE is_default = 1;

CREATE INDEX integrations_order ON integrations (is_default DESC, created_at, id);

CREATE TABLE integration_projects (
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    project_key TEXT NOT NULL REFERENCES projects (key) ON DELETE CASCADE,
    PRIMARY KEY (integration_id, project_key)
);

CREATE INDEX integration_projects_by_project ON integration_projects (project_key);

-- `seq` orders events written within the same timestamp.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    action TEXT NOT NULL,
    integration_ids TEXT NOT NULL,
    filters TEXT NOT NULL,
    outcome TEXT NOT NULL
);

CREATE INDEX audit_events_newest ON audit_events (at DESC, seq DESC);
