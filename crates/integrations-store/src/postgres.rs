//! PostgreSQL store: one database shared by several server processes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use integrations_core::audit_chain::{self, ChainedEvent};
use integrations_core::store::{
    audit_project_key, AuditQuery, DataKeyState, IntegrationChanges, IntegrationQuery,
    ProjectDeletion, SealedRow,
};
use integrations_core::tokens::{
    ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash,
};
use integrations_core::{
    AuditEvent, AuditSink, Integration, IntegrationStore, Project, StoreError, StoredDataKey,
    StoredIntegration,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

mod keys;

use crate::codec::{self, Config};
use crate::error::{self, map_connect_error, TxError};

mod tokens;

/// Maximum connections per store. Each server process holds its own pool.
const MAX_CONNECTIONS: u32 = 10;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Integration columns in the order [`decode_integration`] reads them.
const INTEGRATION_COLUMNS: &str = "id, provider, auth_type, is_global, is_default, config, \
     credential_fields, sealed_credentials, created_at, updated_at";

/// Audit event columns in the order [`decode_audit`] reads them.
const AUDIT_COLUMNS: &str =
    "id, at, actor_subject, actor_role, action, integration_ids, filters, outcome, count";

/// Key of the transaction-scoped advisory lock that serializes appends to the audit chain.
/// Any fixed number works as long as no other lock in the database uses it; these are the
/// ASCII bytes of "auditchn".
const AUDIT_CHAIN_LOCK: i64 = 0x6175_6469_7463_686e;

/// PostgreSQL store. Cloning is cheap and shares the connection pool.
///
/// Changes to a category's default take a transaction-scoped advisory lock on the category, so
/// concurrent changes from any process queue instead of colliding on the unique index. A
/// transaction that still fails with a serialization failure, a deadlock or that index is
/// retried a bounded number of times.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    redacted_url: String,
}

/// Maximum time one statement may run before PostgreSQL cancels it. The request then fails with
/// 503 instead of hanging behind a long lock or a stuck query.
const STATEMENT_TIMEOUT: &str = "15s";

/// Maximum time a statement waits for a lock, including the per-category default lock.
const LOCK_TIMEOUT: &str = "5s";

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to a `postgres://` or `postgresql://` URL and applies pending migrations.
    ///
    /// The migrator holds a PostgreSQL advisory lock while it runs, so processes starting at
    /// the same time on an empty database create the schema once.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let redacted_url = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(map_connect_error)?
            .options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                ("lock_timeout", LOCK_TIMEOUT),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map_connect_error)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|error| map_connect_error(sqlx::Error::Migrate(Box::new(error))))?;
        tracing::debug!(url = %redacted_url, "connected PostgreSQL store");
        let store = Self { pool, redacted_url };
        error::retry("chain audit events", is_retryable, || {
            store.chain_unchained_once()
        })
        .await?;
        Ok(store)
    }

    /// Chains the audit events written before the chain existed, in one transaction under the
    /// chain lock that writers take.
    ///
    /// Runs only while no event has a hash, that is before the chain has started. Once any
    /// event is chained, an event without a hash was changed after it was written, so it is
    /// left for `verify_chain` to report, and this returns without writing.
    async fn chain_unchained_once(&self) -> Result<(), TxError> {
        let mut transaction = self.pool.begin().await?;
        lock_audit_chain(&mut transaction).await?;
        let started: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_events WHERE hash IS NOT NULL)")
                .fetch_one(&mut *transaction)
                .await?;
        if started {
            return Ok(());
        }
        let sql = format!(
            "SELECT {AUDIT_COLUMNS}, seq, prev_hash, hash, project_key FROM audit_events \
             WHERE hash IS NULL \
             AND seq <= (SELECT COALESCE(MAX(last_unchained_seq), 0) FROM audit_chain_origin) \
             ORDER BY seq"
        );
        let rows = sqlx::query(&sql).fetch_all(&mut *transaction).await?;
        let unchained = rows
            .iter()
            .map(decode_chained)
            .collect::<Result<Vec<_>, _>>()?;
        if unchained.is_empty() {
            return Ok(());
        }

        let mut previous: Vec<u8> = audit_chain::GENESIS_HASH.to_vec();
        for stored in &unchained {
            let hash = audit_chain::chain_hash(&previous, &stored.event);
            sqlx::query(
                "UPDATE audit_events SET prev_hash = $1, hash = $2, project_key = $3 \
                 WHERE seq = $4 AND hash IS NULL",
            )
            .bind(previous.as_slice())
            .bind(hash.as_slice())
            .bind(audit_project_key(&stored.event))
            .bind(stored.seq)
            .execute(&mut *transaction)
            .await?;
            previous = hash.to_vec();
        }

        transaction.commit().await?;
        tracing::info!(
            url = %self.redacted_url,
            events = unchained.len(),
            "chained audit events written before the audit chain existed"
        );
        Ok(())
    }

    async fn append_audit_once(&self, event: &AuditEvent) -> Result<(), TxError> {
        let mut transaction = self.pool.begin().await?;
        insert_audit(&mut transaction, event).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Returns the connection pool, for callers that need SQL of their own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection. Later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn insert_project_once(
        &self,
        project: &Project,
        audit: &AuditEvent,
    ) -> Result<(), TxError> {
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO projects (key, identifier, remote_url, platform, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(project.key())
        .bind(&project.identifier)
        .bind(&project.remote_url)
        .bind(project.platform.as_str())
        .bind(project.created_at)
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if error::database_kind(&error) == Some(ErrorKind::UniqueViolation) {
                return Err(StoreError::DuplicateProject(project.identifier.clone()).into());
            }
            return Err(error.into());
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn delete_project_once(
        &self,
        key: &str,
        audit: &AuditEvent,
    ) -> Result<ProjectDeletion, TxError> {
        let mut transaction = self.pool.begin().await?;
        // The row lock makes a concurrent insert that links this project wait for the outcome.
        let exists = sqlx::query("SELECT 1 FROM projects WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut *transaction)
            .await?
            .is_some();
        if !exists {
            return Ok(ProjectDeletion::NotFound);
        }

        let sole = linked_ids(
            &mut transaction,
            "SELECT link.integration_id FROM integration_projects AS link \
             WHERE link.project_key = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM integration_projects AS other \
                 WHERE other.integration_id = link.integration_id AND other.project_key <> $1)",
            key,
        )
        .await?;
        if !sole.is_empty() {
            return Err(StoreError::ProjectInUse(sole).into());
        }
        let detached = linked_ids(
            &mut transaction,
            "SELECT integration_id FROM integration_projects WHERE project_key = $1",
            key,
        )
        .await?;

        sqlx::query("DELETE FROM projects WHERE key = $1")
            .bind(key)
            .execute(&mut *transaction)
            .await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(ProjectDeletion::Deleted {
            detached_integrations: detached,
        })
    }

    async fn insert_integration_once(
        &self,
        stored: &StoredIntegration,
        project_keys: &[String],
        audit: &AuditEvent,
    ) -> Result<(), TxError> {
        let integration = &stored.integration;
        let keys = codec::unique_keys(project_keys);
        let mut transaction = self.pool.begin().await?;
        if integration.is_default {
            lock_category(&mut transaction, integration.category()).await?;
        }

        // The key-share locks keep the projects from being deleted before this commits.
        let existing: Vec<String> =
            sqlx::query_scalar("SELECT key FROM projects WHERE key = ANY($1) FOR KEY SHARE")
                .bind(&keys)
                .fetch_all(&mut *transaction)
                .await?;
        if let Some(missing) = codec::first_missing(&keys, &existing) {
            return Err(StoreError::ProjectNotFound(missing).into());
        }

        let demoted = if integration.is_default {
            unset_default(
                &mut transaction,
                integration.category(),
                integration.id,
                Some(integration.updated_at),
            )
            .await?
        } else {
            Vec::new()
        };
        let inserted = sqlx::query(
            "INSERT INTO integrations (id, provider, category, auth_type, is_global, is_default, \
             config, credential_fields, sealed_credentials, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(integration.id)
        .bind(integration.provider.as_str())
        .bind(integration.category())
        .bind(integration.auth_type.as_str())
        .bind(integration.is_global)
        .bind(integration.is_default)
        .bind(codec::to_json(&integration.config))
        .bind(codec::to_json(&integration.credential_fields))
        .bind(stored.sealed_credentials.as_slice())
        .bind(integration.created_at)
        .bind(integration.updated_at)
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if is_constraint(&error, "integrations_pkey") {
                return Err(StoreError::Conflict(format!(
                    "integration {} already exists",
                    integration.id
                ))
                .into());
            }
            return Err(error.into());
        }

        sqlx::query(
            "INSERT INTO integration_projects (integration_id, project_key) \
             SELECT $1, key FROM UNNEST($2::text[]) AS key",
        )
        .bind(integration.id)
        .bind(&keys)
        .execute(&mut *transaction)
        .await?;
        insert_audit(
            &mut transaction,
            &audit.clone().with_demoted_defaults(&demoted),
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn update_integration_once(
        &self,
        id: Uuid,
        changes: &IntegrationChanges,
        audit: &AuditEvent,
    ) -> Result<Option<StoredIntegration>, TxError> {
        let mut transaction = self.pool.begin().await?;
        // The category lock comes before the row lock, in the same order as inserts take them,
        // so that a default change and an insert cannot deadlock. The provider, and so the
        // category, never changes.
        if changes.is_default == Some(true) {
            let category: Option<String> =
                sqlx::query_scalar("SELECT category FROM integrations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *transaction)
                    .await?;
            let Some(category) = category else {
                return Ok(None);
            };
            lock_category(&mut transaction, &category).await?;
        }
        let Some(current) = load_integration(&mut transaction, id, true).await? else {
            return Ok(None);
        };
        let current_integration = &current.integration;

        let demoted = if changes.is_default == Some(true) && !current_integration.is_default {
            unset_default(
                &mut transaction,
                current_integration.category(),
                id,
                changes.updated_at,
            )
            .await?
        } else {
            Vec::new()
        };
        let (sealed, fields) = match &changes.sealed_credentials {
            Some((sealed, fields)) => (sealed.as_slice(), fields),
            None => (
                current.sealed_credentials.as_slice(),
                &current_integration.credential_fields,
            ),
        };
        let config: &Config = changes
            .config
            .as_ref()
            .unwrap_or(&current_integration.config);
        sqlx::query(
            "UPDATE integrations SET config = $1, credential_fields = $2, \
             sealed_credentials = $3, is_default = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(codec::to_json(config))
        .bind(codec::to_json(fields))
        .bind(sealed)
        .bind(changes.is_default.unwrap_or(current_integration.is_default))
        .bind(changes.updated_at.unwrap_or(current_integration.updated_at))
        .bind(id)
        .execute(&mut *transaction)
        .await?;

        insert_audit(
            &mut transaction,
            &audit.clone().with_demoted_defaults(&demoted),
        )
        .await?;
        let updated = load_integration(&mut transaction, id, false).await?;
        transaction.commit().await?;
        Ok(updated)
    }

    async fn delete_integration_once(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, TxError> {
        let mut transaction = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM integrations WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn list_integrations_once(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, TxError> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations \
             WHERE ($1::text IS NULL OR provider = $1) \
             AND ($2::text IS NULL OR id IN ( \
                 SELECT integration_id FROM integration_projects WHERE project_key = $2)) \
             AND (NOT $3 OR is_global) \
             AND (NOT $4 OR is_default) \
             ORDER BY is_default DESC, created_at, id"
        );
        // One snapshot for the rows and their projects.
        let mut transaction = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let rows = sqlx::query(&sql)
            .bind(query.provider.map(|provider| provider.as_str()))
            .bind(query.project_key.as_deref())
            .bind(query.global_only)
            .bind(query.default_only)
            .fetch_all(&mut *transaction)
            .await?;
        let mut stored = rows
            .iter()
            .map(decode_integration)
            .collect::<Result<Vec<_>, _>>()?;
        attach_projects(&mut transaction, &mut stored).await?;
        transaction.commit().await?;
        Ok(stored)
    }

    async fn find_integration_once(&self, id: Uuid) -> Result<Option<StoredIntegration>, TxError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let found = load_integration(&mut transaction, id, false).await?;
        transaction.commit().await?;
        Ok(found)
    }
}

#[async_trait]
impl IntegrationStore for PostgresStore {
    async fn insert_project(
        &self,
        project: &Project,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        error::retry("insert project", is_retryable, || {
            self.insert_project_once(project, audit)
        })
        .await
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT identifier, remote_url, platform, created_at FROM projects ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(error::map_error)?;
        rows.iter().map(decode_project).collect()
    }

    async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query(
            "SELECT identifier, remote_url, platform, created_at FROM projects WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::map_error)?;
        row.as_ref().map(decode_project).transpose()
    }

    async fn delete_project(
        &self,
        key: &str,
        audit: &AuditEvent,
    ) -> Result<ProjectDeletion, StoreError> {
        error::retry("delete project", is_retryable, || {
            self.delete_project_once(key, audit)
        })
        .await
    }

    async fn insert_integration(
        &self,
        integration: &StoredIntegration,
        project_keys: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        error::retry("insert integration", is_retryable, || {
            self.insert_integration_once(integration, project_keys, audit)
        })
        .await
    }

    async fn list_integrations(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, StoreError> {
        error::retry("list integrations", is_retryable, || {
            self.list_integrations_once(query)
        })
        .await
    }

    async fn find_integration(&self, id: Uuid) -> Result<Option<StoredIntegration>, StoreError> {
        error::retry("find integration", is_retryable, || {
            self.find_integration_once(id)
        })
        .await
    }

    async fn update_integration(
        &self,
        id: Uuid,
        changes: &IntegrationChanges,
        audit: &AuditEvent,
    ) -> Result<Option<StoredIntegration>, StoreError> {
        error::retry("update integration", is_retryable, || {
            self.update_integration_once(id, changes, audit)
        })
        .await
    }

    async fn delete_integration(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, StoreError> {
        error::retry("delete integration", is_retryable, || {
            self.delete_integration_once(id, audit)
        })
        .await
    }

    async fn list_data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        self.list_data_keys_sql().await
    }

    async fn find_data_key(&self, id: &str) -> Result<Option<StoredDataKey>, StoreError> {
        self.find_data_key_sql("id = $1", Some(id)).await
    }

    async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError> {
        self.find_data_key_sql("is_primary = TRUE", None).await
    }

    async fn insert_data_key(&self, key: &StoredDataKey) -> Result<(), StoreError> {
        self.insert_data_key_sql(key).await
    }

    async fn set_data_key_state(&self, id: &str, state: DataKeyState) -> Result<bool, StoreError> {
        self.set_data_key_state_sql(id, state).await
    }

    async fn rewrap_data_keys(&self, keys: &[StoredDataKey]) -> Result<(), StoreError> {
        self.rewrap_data_keys_sql(keys).await
    }

    async fn list_sealed(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<SealedRow>, StoreError> {
        self.list_sealed_sql(after, limit).await
    }

    async fn replace_sealed(
        &self,
        id: Uuid,
        expected: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.replace_sealed_sql(id, expected, sealed).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        error::retry("append audit event", is_retryable, || {
            self.append_audit_once(event)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(error::map_error)?;
        Ok(())
    }

    async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE ($1::timestamptz IS NULL OR at >= $1) \
             AND ($2::timestamptz IS NULL OR at <= $2) \
             AND ($3::text IS NULL OR actor_subject = $3) \
             AND ($4::text IS NULL OR action = $4) \
             AND ($5::text IS NULL OR integration_ids::jsonb @> jsonb_build_array($5::text)) \
             AND ($6::text IS NULL OR project_key = $6) \
             ORDER BY at DESC, seq DESC LIMIT $7 OFFSET $8"
        );
        let rows = sqlx::query(&sql)
            .bind(query.from)
            .bind(query.to)
            .bind(query.actor.as_deref())
            .bind(query.action.map(|action| action.as_str()))
            .bind(query.integration.map(|id| id.to_string()))
            .bind(query.project_key.as_deref())
            .bind(clamp(query.limit))
            .bind(clamp(query.offset))
            .fetch_all(&self.pool)
            .await
            .map_err(error::map_error)?;
        rows.iter().map(decode_audit).collect()
    }

    async fn list_audit_chain(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS}, seq, prev_hash, hash, project_key FROM audit_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after_seq)
            .bind(clamp(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(error::map_error)?;
        rows.iter().map(decode_chained).collect()
    }

    async fn insert_application_token(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        error::retry("insert application token", is_retryable, || {
            self.insert_application_token_once(record, audit)
        })
        .await
    }

    async fn list_application_tokens(&self) -> Result<Vec<ApplicationToken>, StoreError> {
        error::retry("list application tokens", is_retryable, || {
            self.list_application_tokens_once()
        })
        .await
    }

    async fn find_application_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApplicationTokenRecord>, StoreError> {
        error::retry("find application token", is_retryable, || {
            self.find_application_token_by_hash_once(hash)
        })
        .await
    }

    async fn revoke_application_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<RevokeResult, StoreError> {
        error::retry("revoke application token", is_retryable, || {
            self.revoke_application_token_once(id, at, audit)
        })
        .await
    }
}

#[async_trait]
impl AuditSink for PostgresStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit(event).await
    }
}

/// Replaces the password of a connection URL, in its user part or its query, with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(unparsable URL)".to_owned();
    };
    if parsed.password().is_some() {
        // Setting a password only fails for URLs that cannot have one, which have none.
        let _ = parsed.set_password(Some("***"));
    }
    let has_password_parameter = parsed
        .query_pairs()
        .any(|(name, _)| name.eq_ignore_ascii_case("password"));
    if has_password_parameter {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if name.eq_ignore_ascii_case("password") {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Converts a count to a BIGINT, saturating.
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Reports whether a failed transaction may succeed when run again: a serialization failure
/// (40001), a deadlock (40P01), or a default written concurrently that took the category's
/// unique index.
fn is_retryable(error: &sqlx::Error) -> bool {
    let code = error::database_code(error);
    code == "40001"
        || code == "40P01"
        || is_constraint(error, "integrations_one_default_per_category")
}

fn is_constraint(error: &sqlx::Error, name: &str) -> bool {
    match error {
        sqlx::Error::Database(database) => database.constraint() == Some(name),
        _ => false,
    }
}

/// Serializes changes to the default of `category` until the transaction ends.
async fn lock_category(connection: &mut PgConnection, category: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('integrations.default.' || $1))")
        .bind(category)
        .execute(connection)
        .await?;
    Ok(())
}

/// Unsets the default of `category` other than `keep`, stamping it with `updated_at` if given.
async fn unset_default(
    connection: &mut PgConnection,
    category: &str,
    keep: Uuid,
    updated_at: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, TxError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE integrations SET is_default = FALSE, updated_at = COALESCE($1, updated_at) \
         WHERE category = $2 AND is_default AND id <> $3 RETURNING id",
    )
    .bind(updated_at)
    .bind(category)
    .bind(keep)
    .fetch_all(connection)
    .await?;
    Ok(ids)
}

/// Runs `sql`, which selects integration ids for the project key bound as `$1`, sorted.
async fn linked_ids(
    connection: &mut PgConnection,
    sql: &str,
    key: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids: Vec<Uuid> = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_all(connection)
        .await?;
    ids.sort();
    Ok(ids)
}

/// Loads one integration with its project identifiers, locking its row when `for_update`.
async fn load_integration(
    connection: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<StoredIntegration>, TxError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1{lock}");
    let Some(row) = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let mut stored = vec![decode_integration(&row)?];
    attach_projects(connection, &mut stored).await?;
    Ok(stored.pop())
}

/// Fills in the sorted project identifiers of each integration.
async fn attach_projects(
    connection: &mut PgConnection,
    stored: &mut [StoredIntegration],
) -> Result<(), TxError> {
    if stored.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = stored.iter().map(|stored| stored.integration.id).collect();
    let rows = sqlx::query(
        "SELECT link.integration_id, project.identifier FROM integration_projects AS link \
         JOIN projects AS project ON project.key = link.project_key \
         WHERE link.integration_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(connection)
    .await?;
    for row in rows {
        let id: Uuid = row.try_get(0)?;
        let identifier: String = row.try_get(1)?;
        if let Some(target) = stored.iter_mut().find(|stored| stored.integration.id == id) {
            target.integration.projects.push(identifier);
        }
    }
    for target in stored.iter_mut() {
        target.integration.projects.sort();
    }
    Ok(())
}

/// Takes the chain lock, which serializes chain appends from every process until the
/// transaction ends.
async fn lock_audit_chain(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_CHAIN_LOCK)
        .execute(connection)
        .await?;
    Ok(())
}

/// Appends `event` to the audit chain. Must run inside a transaction: the chain lock taken
/// here is held from reading the chain head until commit, so concurrent writers extend the
/// chain one after another instead of forking it. Under READ COMMITTED the head query runs
/// after the lock is granted, so it reads the event the previous holder committed.
async fn insert_audit(
    connection: &mut PgConnection,
    event: &AuditEvent,
) -> Result<(), sqlx::Error> {
    // NOTE: appends run one at a time until commit, so audit writes, and with them credential
    // reads, top out near one per commit (about 1,000/s measured on two cores, BENCHMARKS.md).
    lock_audit_chain(&mut *connection).await?;
    let previous: Vec<u8> = sqlx::query_scalar(
        "SELECT hash FROM audit_events WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *connection)
    .await?
    .unwrap_or_else(|| audit_chain::GENESIS_HASH.to_vec());
    let hash = audit_chain::chain_hash(&previous, event);
    sqlx::query(
        "INSERT INTO audit_events (id, at, actor_subject, actor_role, action, integration_ids, \
         filters, outcome, count, prev_hash, hash, project_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(event.id)
    .bind(event.at)
    .bind(&event.actor_subject)
    .bind(event.actor_role.as_str())
    .bind(event.action.as_str())
    .bind(codec::to_json(&event.integration_ids))
    .bind(codec::to_json(&event.filters))
    .bind(event.outcome.as_str())
    .bind(clamp(event.count))
    .bind(previous.as_slice())
    .bind(hash.as_slice())
    .bind(audit_project_key(event))
    .execute(connection)
    .await?;
    Ok(())
}

fn decode_project(row: &PgRow) -> Result<Project, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(Project {
        identifier: text(0)?,
        remote_url: text(1)?,
        platform: codec::parse_name("projects.platform", &text(2)?)?,
        created_at: row.try_get(3).map_err(error::map_error)?,
    })
}

fn decode_integration(row: &PgRow) -> Result<StoredIntegration, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    let integration = Integration {
        id: row.try_get(0).map_err(error::map_error)?,
        provider: codec::parse_name("integrations.provider", &text(1)?)?,
        auth_type: codec::parse_name("integrations.auth_type", &text(2)?)?,
        is_global: row.try_get(3).map_err(error::map_error)?,
        is_default: row.try_get(4).map_err(error::map_error)?,
        projects: Vec::new(),
        config: codec::from_json("integrations.config", &text(5)?)?,
        credential_fields: codec::from_json("integrations.credential_fields", &text(6)?)?,
        created_at: row.try_get(8).map_err(error::map_error)?,
        updated_at: row.try_get(9).map_err(error::map_error)?,
    };
    Ok(StoredIntegration {
        integration,
        sealed_credentials: row.try_get(7).map_err(error::map_error)?,
    })
}

fn decode_audit(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(AuditEvent {
        id: row.try_get(0).map_err(error::map_error)?,
        at: row.try_get(1).map_err(error::map_error)?,
        actor_subject: text(2)?,
        actor_role: codec::parse_name("audit_events.actor_role", &text(3)?)?,
        action: codec::parse_name("audit_events.action", &text(4)?)?,
        integration_ids: codec::from_json("audit_events.integration_ids", &text(5)?)?,
        filters: codec::from_json::<codec::Filters>("audit_events.filters", &text(6)?)?,
        outcome: codec::parse_name("audit_events.outcome", &text(7)?)?,
        count: codec::count_from_column(row.try_get(8).map_err(error::map_error)?)?,
    })
}

/// Decodes a row of the [`AUDIT_COLUMNS`] followed by `seq`, `prev_hash` and `hash`.
fn decode_chained(row: &PgRow) -> Result<ChainedEvent, StoreError> {
    let bytes = |index: usize| -> Result<Vec<u8>, StoreError> {
        let value: Option<Vec<u8>> = row.try_get(index).map_err(error::map_error)?;
        Ok(value.unwrap_or_default())
    };
    Ok(ChainedEvent {
        event: decode_audit(row)?,
        seq: row.try_get(9).map_err(error::map_error)?,
        prev_hash: bytes(10)?,
        hash: bytes(11)?,
        project_key: row.try_get(12).map_err(error::map_error)?,
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_user_password() {
        let redacted = redact_url("postgres://app:s3cret@127.0.0.1:5432/integrations");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("app:***@"), "{redacted}");
    }

    #[test]
    fn redact_url_hides_query_password() {
        let redacted = redact_url("postgres://127.0.0.1/integrations?user=app&password=s3cret");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("user=app"), "{redacted}");
    }

    #[test]
    fn redact_url_hides_unparsable() {
        let redacted = redact_url("postgres://app:s3cret@[bad");
        assert!(!redacted.contains("s3cret"), "{redacted}");
    }
}
