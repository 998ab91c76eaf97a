//! Choosing a store from a database URL.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use integrations_core::audit_chain::ChainedEvent;
use integrations_core::store::{
    AuditQuery, DataKeyState, IntegrationChanges, IntegrationQuery, ProjectDeletion, SealedRow,
};
use integrations_core::tokens::{
    ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash,
};
use integrations_core::{
    AuditEvent, AuditSink, IntegrationStore, Project, StoreError, StoredDataKey, StoredIntegration,
};
use uuid::Uuid;

use crate::{PostgresStore, SqliteStore};

/// A SQL store chosen at run time. Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// SQLite, for `sqlite:` URLs and data directories.
    Sqlite(SqliteStore),
    /// PostgreSQL, for `postgres://` and `postgresql://` URLs.
    Postgres(PostgresStore),
}

/// Opens the store a URL names and applies pending migrations.
///
/// `postgres://` and `postgresql://` URLs select PostgreSQL, and `sqlite:` URLs select SQLite, such
/// as `sqlite://data/integrations.db` or `sqlite::memory:`. Any other scheme is rejected with
/// [`StoreError::Unavailable`].
pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
    AnyStore::connect(url).await
}

impl AnyStore {
    /// Opens the store a URL names, as [`open`] does.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let lowercase = url.trim_start().to_ascii_lowercase();
        if lowercase.starts_with("postgres://") || lowercase.starts_with("postgresql://") {
            return Ok(AnyStore::Postgres(PostgresStore::connect(url).await?));
        }
        if lowercase.starts_with("sqlite:") {
            return Ok(AnyStore::Sqlite(SqliteStore::connect(url).await?));
        }
        // Only the scheme is quoted, because the rest of the URL may contain a password.
        let scheme: String = lowercase
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect();
        Err(StoreError::Unavailable(format!(
            "unsupported database URL scheme '{scheme}': expected postgres://, postgresql:// \
             or sqlite:"
        )))
    }

    /// Returns the store as the two seams a server holds.
    pub fn into_parts(self) -> (Arc<dyn IntegrationStore>, Arc<dyn AuditSink>) {
        let store = Arc::new(self);
        (store.clone(), store)
    }

    fn inner(&self) -> &dyn IntegrationStore {
        match self {
            AnyStore::Sqlite(store) => store,
            AnyStore::Postgres(store) => store,
        }
    }
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        AnyStore::Sqlite(store)
    }
}

impl From<PostgresStore> for AnyStore {
    fn from(store: PostgresStore) -> Self {
        AnyStore::Postgres(store)
    }
}

#[async_trait]
impl IntegrationStore for AnyStore {
    async fn insert_project(
        &self,
        project: &Project,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner().insert_project(project, audit).await
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        self.inner().list_projects().await
    }

    async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError> {
        self.inner().find_project(key).await
    }

    async fn delete_project(
        &self,
        key: &str,
        audit: &AuditEvent,
    ) -> Result<ProjectDeletion, StoreError> {
        self.inner().delete_project(key, audit).await
    }

    async fn insert_integration(
        &self,
        integration: &StoredIntegration,
        project_keys: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner()
            .insert_integration(integration, project_keys, audit)
            .await
    }

    async fn list_integrations(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, StoreError> {
        self.inner().list_integrations(query).await
    }

    async fn find_integration(&self, id: Uuid) -> Result<Option<StoredIntegration>, StoreError> {
        self.inner().find_integration(id).await
    }

    async fn update_integration(
        &self,
        id: Uuid,
        changes: &IntegrationChanges,
        audit: &AuditEvent,
    ) -> Result<Option<StoredIntegration>, StoreError> {
        self.inner().update_integration(id, changes, audit).await
    }

    async fn delete_integration(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, StoreError> {
        self.inner().delete_integration(id, audit).await
    }

    async fn list_data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        self.inner().list_data_keys().await
    }

    async fn find_data_key(&self, id: &str) -> Result<Option<StoredDataKey>, StoreError> {
        self.inner().find_data_key(id).await
    }

    async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError> {
        self.inner().primary_data_key().await
    }

    async fn insert_data_key(&self, key: &StoredDataKey) -> Result<(), StoreError> {
        self.inner().insert_data_key(key).await
    }

    async fn set_data_key_state(&self, id: &str, state: DataKeyState) -> Result<bool, StoreError> {
        self.inner().set_data_key_state(id, state).await
    }

    async fn rewrap_data_keys(&self, keys: &[StoredDataKey]) -> Result<(), StoreError> {
        self.inner().rewrap_data_keys(keys).await
    }

    async fn list_sealed(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<SealedRow>, StoreError> {
        self.inner().list_sealed(after, limit).await
    }

    async fn replace_sealed(
        &self,
        id: Uuid,
        expected: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner().replace_sealed(id, expected, sealed).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner().append_audit(event).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner().ping().await
    }

    async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner().search_audit(query).await
    }

    async fn list_audit_chain(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        self.inner().list_audit_chain(after_seq, limit).await
    }

    async fn insert_application_token(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner().insert_application_token(record, audit).await
    }

    async fn list_application_tokens(&self) -> Result<Vec<ApplicationToken>, StoreError> {
        self.inner().list_application_tokens().await
    }

    async fn find_application_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApplicationTokenRecord>, StoreError> {
        self.inner().find_application_token_by_hash(hash).await
    }

    async fn revoke_application_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<RevokeResult, StoreError> {
        self.inner().revoke_application_token(id, at, audit).await
    }
}

#[async_trait]
impl AuditSink for AnyStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner().append_audit(event).await
    }
}
