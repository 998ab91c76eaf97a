//! SQLite store: the embedded default, one database file that several processes may share.

use std::fmt;
use std::path::{Path, PathBuf};
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
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

mod keys;

use crate::codec::{self, Config};
use crate::error::{self, map_connect_error, TxError};

mod tokens;

/// Name of the database file that [`SqliteStore::open_in_dir`] opens.
pub const DATABASE_FILE: &str = "integrations.db";

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum connections to a file database. SQLite runs one write transaction at a time anyway.
const MAX_CONNECTIONS: u32 = 8;

/// Attempts to open and migrate a database that other processes are opening at the same time.
const OPEN_ATTEMPTS: u32 = 10;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Integration columns in the order [`decode_integration`] reads them.
const INTEGRATION_COLUMNS: &str = "id, provider, auth_type, is_global, is_default, config, \
     credential_fields, sealed_credentials, created_at, updated_at";

/// Audit event columns in the order [`decode_audit`] reads them.
const AUDIT_COLUMNS: &str =
    "id, at, actor_subject, actor_role, action, integration_ids, filters, outcome, count";

/// SQLite store. Cloning is cheap and shares the connection pool.
///
/// Connections use WAL journaling, a 5 s busy timeout and enforced foreign keys, and write
/// transactions start with `BEGIN IMMEDIATE`, so concurrent writers queue for the write lock
/// instead of failing part way.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    location: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at a `sqlite:` URL, creating the file when missing, and migrates it.
    ///
    /// `sqlite::memory:` opens a private in-memory database on a single connection.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url).map_err(map_connect_error)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::open_with(options, in_memory, url.to_owned()).await
    }

    /// Opens `integrations.db` in `data_dir`, creating the directory and the file when missing.
    pub async fn open_in_dir(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let data_dir = data_dir.as_ref();
        tokio::fs::create_dir_all(data_dir).await.map_err(|error| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path: PathBuf = data_dir.join(DATABASE_FILE);
        let location = path.display().to_string();
        let options = SqliteConnectOptions::new().filename(&path);
        Self::open_with(options, false, location).await
    }

    async fn open_with(
        options: SqliteConnectOptions,
        in_memory: bool,
        location: String,
    ) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .journal_mode(SqliteJournalMode::Wal);
        // An in-memory database lives as long as its connection, so it gets exactly one that
        // is never closed for idleness or age.
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        };
        let pool_options = pool_options.acquire_timeout(Duration::from_secs(30));

        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_open(pool_options.clone(), options.clone()).await {
                Ok(pool) => {
                    tracing::debug!(location = %location, "opened SQLite store");
                    let store = Self { pool, location };
                    error::retry("chain audit events", is_retryable, || {
                        store.chain_unchained_once()
                    })
                    .await?;
                    return Ok(store);
                }
                Err(error) if attempts < OPEN_ATTEMPTS && is_busy(&error) => {
                    tracing::debug!(location = %location, attempts, "SQLite database busy while opening, retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts))).await;
                }
                Err(error) => return Err(map_connect_error(error)),
            }
        }
    }

    /// Connects and applies the migrations under the database write lock, so that processes
    /// opening a new file at the same time apply them once.
    async fn try_open(
        pool_options: SqlitePoolOptions,
        options: SqliteConnectOptions,
    ) -> Result<SqlitePool, sqlx::Error> {
        let pool = pool_options.connect_with(options).await?;
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
        // `run_direct` on the connection, rather than `run`, keeps the future `Send`.
        let connection: &mut SqliteConnection = &mut transaction;
        MIGRATOR
            .run_direct(connection)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
        transaction.commit().await?;
        Ok(pool)
    }

    /// Returns the connection pool, for callers that need SQL of their own.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection. Later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn insert_project_once(
        &self,
        project: &Project,
        audit: &AuditEvent,
    ) -> Result<(), TxError> {
        let mut transaction = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO projects (key, identifier, remote_url, platform, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(project.key())
        .bind(&project.identifier)
        .bind(&project.remote_url)
        .bind(project.platform.as_str())
        .bind(codec::time_to_text(project.created_at))
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
        let mut transaction = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM projects WHERE key = ?")
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
             WHERE link.project_key = ?1 AND NOT EXISTS ( \
                 SELECT 1 FROM integration_projects AS other \
                 WHERE other.integration_id = link.integration_id AND other.project_key <> ?1)",
            key,
        )
        .await?;
        if !sole.is_empty() {
            return Err(StoreError::ProjectInUse(sole).into());
        }
        let detached = linked_ids(
            &mut transaction,
            "SELECT integration_id FROM integration_projects WHERE project_key = ?1",
            key,
        )
        .await?;

        sqlx::query("DELETE FROM projects WHERE key = ?")
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
        let mut transaction = self.begin_write().await?;

        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM projects WHERE key IN (SELECT value FROM json_each(?))",
        )
        .bind(codec::to_json(&keys))
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(integration.id.to_string())
        .bind(integration.provider.as_str())
        .bind(integration.category())
        .bind(integration.auth_type.as_str())
        .bind(integration.is_global)
        .bind(integration.is_default)
        .bind(codec::to_json(&integration.config))
        .bind(codec::to_json(&integration.credential_fields))
        .bind(stored.sealed_credentials.as_slice())
        .bind(codec::time_to_text(integration.created_at))
        .bind(codec::time_to_text(integration.updated_at))
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            if error::database_kind(&error) == Some(ErrorKind::UniqueViolation)
                && !is_default_violation(&error)
            {
                return Err(StoreError::Conflict(format!(
                    "integration {} already exists",
                    integration.id
                ))
                .into());
            }
            return Err(error.into());
        }

        for key in &keys {
            sqlx::query(
                "INSERT INTO integration_projects (integration_id, project_key) VALUES (?, ?)",
            )
            .bind(integration.id.to_string())
            .bind(key)
            .execute(&mut *transaction)
            .await?;
        }
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
        let mut transaction = self.begin_write().await?;
        let Some(current) = load_integration(&mut transaction, id).await? else {
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
        let is_default = changes.is_default.unwrap_or(current_integration.is_default);
        let updated_at = changes.updated_at.unwrap_or(current_integration.updated_at);
        sqlx::query(
            "UPDATE integrations SET config = ?, credential_fields = ?, sealed_credentials = ?, \
             is_default = ?, updated_at = ? WHERE id = ?",
        )
        .bind(codec::to_json(config))
        .bind(codec::to_json(fields))
        .bind(sealed)
        .bind(is_default)
        .bind(codec::time_to_text(updated_at))
        .bind(id.to_string())
        .execute(&mut *transaction)
        .await?;

        insert_audit(
            &mut transaction,
            &audit.clone().with_demoted_defaults(&demoted),
        )
        .await?;
        let updated = load_integration(&mut transaction, id).await?;
        transaction.commit().await?;
        Ok(updated)
    }

    async fn delete_integration_once(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, TxError> {
        let mut transaction = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM integrations WHERE id = ?")
            .bind(id.to_string())
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

    /// Chains the audit events written before the chain existed, in one write transaction.
    ///
    /// Runs only while no event has a hash, that is before the chain has started. Once any
    /// event is chained, an event without a hash was changed after it was written, so it is
    /// left for `verify_chain` to report, and this returns without writing.
    async fn chain_unchained_once(&self) -> Result<(), TxError> {
        let mut transaction = self.begin_write().await?;
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
                "UPDATE audit_events SET prev_hash = ?, hash = ?, project_key = ? \
                 WHERE seq = ? AND hash IS NULL",
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
            location = %self.location,
            events = unchained.len(),
            "chained audit events written before the audit chain existed"
        );
        Ok(())
    }

    async fn append_audit_once(&self, event: &AuditEvent) -> Result<(), TxError> {
        let mut transaction = self.begin_write().await?;
        insert_audit(&mut transaction, event).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn list_integrations_once(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, TxError> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations \
             WHERE (?1 IS NULL OR provider = ?1) \
             AND (?2 IS NULL OR id IN ( \
                 SELECT integration_id FROM integration_projects WHERE project_key = ?2)) \
             AND (?3 = 0 OR is_global = 1) \
             AND (?4 = 0 OR is_default = 1) \
             ORDER BY is_default DESC, created_at, id"
        );
        // A deferred transaction reads one snapshot for the rows and their projects.
        let mut transaction = self.pool.begin().await?;
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
}

#[async_trait]
impl IntegrationStore for SqliteStore {
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
            "SELECT identifier, remote_url, platform, created_at FROM projects WHERE key = ?",
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
        error::retry("find integration", is_retryable, || async move {
            let mut transaction = self.pool.begin().await?;
            let found = load_integration(&mut transaction, id).await?;
            transaction.commit().await?;
            Ok(found)
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
        self.find_data_key_sql("id = ?", Some(id)).await
    }

    async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError> {
        self.find_data_key_sql("is_primary = 1", None).await
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
        // Times are fixed-width UTC text, so text comparison is time comparison.
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE (?1 IS NULL OR at >= ?1) \
             AND (?2 IS NULL OR at <= ?2) \
             AND (?3 IS NULL OR actor_subject = ?3) \
             AND (?4 IS NULL OR action = ?4) \
             AND (?5 IS NULL OR EXISTS ( \
                 SELECT 1 FROM json_each(audit_events.integration_ids) WHERE value = ?5)) \
             AND (?6 IS NULL OR project_key = ?6) \
             ORDER BY at DESC, seq DESC LIMIT ?7 OFFSET ?8"
        );
        let rows = sqlx::query(&sql)
            .bind(query.from.map(codec::time_to_text))
            .bind(query.to.map(codec::time_to_text))
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
             WHERE seq > ? ORDER BY seq LIMIT ?"
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
impl AuditSink for SqliteStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit(event).await
    }
}

/// Converts a count to SQLite's signed integer, saturating.
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Reports whether a failed transaction may succeed when run again: the database was busy
/// past the busy timeout, or a default written concurrently took the category's unique index.
fn is_retryable(error: &sqlx::Error) -> bool {
    let code = error::database_code(error);
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes in the high bits.
    let busy_or_locked = code
        .parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6));
    busy_or_locked || is_default_violation(error)
}

/// Reports whether an error is a violation of the one-default-per-category index.
fn is_default_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            database.kind() == ErrorKind::UniqueViolation
                && database.message().contains("integrations.category")
        }
        _ => false,
    }
}

fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Migrate(migrate) => match migrate.as_ref() {
            sqlx::migrate::MigrateError::Execute(inner)
            | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => is_retryable(inner),
            _ => false,
        },
        other => is_retryable(other),
    }
}

/// Unsets the default of `category` other than `keep`, stamping it with `updated_at` if given.
async fn unset_default(
    connection: &mut SqliteConnection,
    category: &str,
    keep: Uuid,
    updated_at: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, TxError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE integrations SET is_default = 0, updated_at = COALESCE(?, updated_at) \
         WHERE category = ? AND is_default = 1 AND id <> ? RETURNING id",
    )
    .bind(updated_at.map(codec::time_to_text))
    .bind(category)
    .bind(keep.to_string())
    .fetch_all(connection)
    .await?;
    ids.iter()
        .map(|text: &String| codec::parse_uuid("integrations.id", text).map_err(TxError::from))
        .collect()
}

/// Runs `sql`, which selects integration ids for the project key bound as `?1`, sorted.
async fn linked_ids(
    connection: &mut SqliteConnection,
    sql: &str,
    key: &str,
) -> Result<Vec<Uuid>, TxError> {
    let texts: Vec<String> = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_all(connection)
        .await?;
    let mut ids = texts
        .iter()
        .map(|text| codec::parse_uuid("integration_projects.integration_id", text))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    Ok(ids)
}

/// Loads one integration with its project identifiers.
async fn load_integration(
    connection: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<StoredIntegration>, TxError> {
    let sql = format!("SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = ?");
    let Some(row) = sqlx::query(&sql)
        .bind(id.to_string())
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
    connection: &mut SqliteConnection,
    stored: &mut [StoredIntegration],
) -> Result<(), TxError> {
    if stored.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = stored
        .iter()
        .map(|stored| stored.integration.id.to_string())
        .collect();
    let rows = sqlx::query(
        "SELECT link.integration_id, project.identifier FROM integration_projects AS link \
         JOIN projects AS project ON project.key = link.project_key \
         WHERE link.integration_id IN (SELECT value FROM json_each(?))",
    )
    .bind(codec::to_json(&ids))
    .fetch_all(connection)
    .await?;
    for row in rows {
        let id = codec::parse_uuid("integration_projects.integration_id", row.try_get(0)?)?;
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

/// Appends `event` to the audit chain. Must run inside a write transaction (`BEGIN IMMEDIATE`),
/// which holds the database write lock from reading the chain head until commit, so writers in
/// any process extend the chain one after another instead of forking it.
async fn insert_audit(
    connection: &mut SqliteConnection,
    event: &AuditEvent,
) -> Result<(), sqlx::Error> {
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
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.id.to_string())
    .bind(codec::time_to_text(event.at))
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

fn decode_project(row: &SqliteRow) -> Result<Project, StoreError> {
    let column = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(Project {
        identifier: column(0)?,
        remote_url: column(1)?,
        platform: codec::parse_name("projects.platform", &column(2)?)?,
        created_at: codec::time_from_text("projects.created_at", &column(3)?)?,
    })
}

fn decode_integration(row: &SqliteRow) -> Result<StoredIntegration, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    let flag =
        |index: usize| -> Result<bool, StoreError> { row.try_get(index).map_err(error::map_error) };
    let integration = Integration {
        id: codec::parse_uuid("integrations.id", &text(0)?)?,
        provider: codec::parse_name("integrations.provider", &text(1)?)?,
        auth_type: codec::parse_name("integrations.auth_type", &text(2)?)?,
        is_global: flag(3)?,
        is_default: flag(4)?,
        projects: Vec::new(),
        config: codec::from_json("integrations.config", &text(5)?)?,
        credential_fields: codec::from_json("integrations.credential_fields", &text(6)?)?,
        created_at: codec::time_from_text("integrations.created_at", &text(8)?)?,
        updated_at: codec::time_from_text("integrations.updated_at", &text(9)?)?,
    };
    Ok(StoredIntegration {
        integration,
        sealed_credentials: row.try_get(7).map_err(error::map_error)?,
    })
}

fn decode_audit(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(index).map_err(error::map_error)
    };
    Ok(AuditEvent {
        id: codec::parse_uuid("audit_events.id", &text(0)?)?,
        at: codec::time_from_text("audit_events.at", &text(1)?)?,
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
fn decode_chained(row: &SqliteRow) -> Result<ChainedEvent, StoreError> {
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
