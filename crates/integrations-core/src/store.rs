//! The storage seam: projects, integrations with sealed credentials, and the audit log.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent};
use crate::audit_chain::ChainedEvent;
use crate::model::{project_key, AuthType, Integration, Project, Provider};
use crate::tokens::{ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash};

/// Error from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A project with the same identifier (compared case-insensitively) exists.
    #[error("project '{0}' already exists")]
    DuplicateProject(String),
    /// A project named by an integration's scope is not registered.
    #[error("project '{0}' not found")]
    ProjectNotFound(String),
    /// The project cannot be deleted because these integrations are scoped to it alone.
    #[error("project is the only scope of integrations {0:?}")]
    ProjectInUse(Vec<Uuid>),
    /// The change lost a race with a concurrent change and may be retried.
    #[error("concurrent change conflicted: {0}")]
    Conflict(String),
    /// The database cannot be reached or does not respond.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database failure. The text never contains bound values.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row cannot be decoded.
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
}

/// An integration as stored: metadata plus sealed credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIntegration {
    /// Metadata.
    pub integration: Integration,
    /// Credentials sealed by a [`crate::CredentialCipher`]; opaque to the store.
    pub sealed_credentials: Vec<u8>,
}

/// Filter for listing integrations. Every field narrows the result; the default lists all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationQuery {
    /// Only this provider.
    pub provider: Option<Provider>,
    /// Only integrations scoped to this project key (see [`crate::model::project_key`]).
    pub project_key: Option<String>,
    /// Only global integrations.
    pub global_only: bool,
    /// Only defaults.
    pub default_only: bool,
}

/// Changes to an integration. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntegrationChanges {
    /// New sealed credentials and their field names.
    pub sealed_credentials: Option<(Vec<u8>, Vec<String>)>,
    /// New configuration.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// New default flag. Setting it unsets the previous default of the category in the same
    /// transaction.
    pub is_default: Option<bool>,
    /// Time of the change.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Whether a data key is in use for new writes after a completed rotation, or was added by a
/// rotation that has not finished re-encrypting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeyState {
    /// Fully rolled out, or retired as primary by a later key.
    Active,
    /// Added by a key rotation that has not finished; a new rotation run resumes with it.
    Rotating,
}

impl DataKeyState {
    /// Returns the name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyState::Active => "active",
            DataKeyState::Rotating => "rotating",
        }
    }
}

impl std::str::FromStr for DataKeyState {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "active" => Ok(DataKeyState::Active),
            "rotating" => Ok(DataKeyState::Rotating),
            other => Err(format!("unknown data key state '{other}'")),
        }
    }
}

/// A data key as stored: its bytes wrapped by a master key or key provider, never in plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredDataKey {
    /// Key id, named by every value the key seals.
    pub id: String,
    /// The key wrapped by the key provider named by `wrapping_key_id`.
    pub wrapped: Vec<u8>,
    /// Id of the master key (or external key) that wrapped it.
    pub wrapping_key_id: String,
    /// Whether new writes use this key. At most one data key is primary.
    pub is_primary: bool,
    /// Rotation state.
    pub state: DataKeyState,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for StoredDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDataKey")
            .field("id", &self.id)
            .field("wrapping_key_id", &self.wrapping_key_id)
            .field("is_primary", &self.is_primary)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The sealed credentials of one integration with what binds them to it, for re-encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// Integration id.
    pub id: Uuid,
    /// Provider, part of the associated data.
    pub provider: Provider,
    /// Auth type, part of the associated data.
    pub auth_type: AuthType,
    /// The sealed credentials.
    pub sealed_credentials: Vec<u8>,
}

/// Result of deleting a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectDeletion {
    /// The project was deleted and removed from the scope of the integrations listed.
    Deleted {
        /// Integrations that were scoped to this project and others.
        detached_integrations: Vec<Uuid>,
    },
    /// No such project.
    NotFound,
}

/// Persistent storage for projects, integrations and audit events.
///
/// The database enforces the invariants that must hold across several server processes. They are
/// one default per category, only global integrations as defaults, no duplicate project key, and
/// scoped integrations referencing registered projects. Every change is written in one
/// transaction with its audit event.
#[async_trait]
pub trait IntegrationStore: Send + Sync + fmt::Debug {
    /// Registers a project; [`StoreError::DuplicateProject`] when its key exists.
    async fn insert_project(&self, project: &Project, audit: &AuditEvent)
        -> Result<(), StoreError>;

    /// Lists every project, ordered by identifier key.
    async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;

    /// Finds a project by key.
    async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError>;

    /// Deletes a project by key. Fails with [`StoreError::ProjectInUse`] when an integration is
    /// scoped to this project alone; the `audit` event is written only when a project is deleted.
    async fn delete_project(
        &self,
        key: &str,
        audit: &AuditEvent,
    ) -> Result<ProjectDeletion, StoreError>;

    /// Inserts an integration scoped to the given project keys (empty when global). When it is
    /// the default, the previous default of its category is unset in the same transaction.
    async fn insert_integration(
        &self,
        integration: &StoredIntegration,
        project_keys: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Lists integrations matching `query`, defaults first, then by creation time and id.
    async fn list_integrations(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, StoreError>;

    /// Finds one integration.
    async fn find_integration(&self, id: Uuid) -> Result<Option<StoredIntegration>, StoreError>;

    /// Applies changes and returns the updated integration, `None` when it does not exist.
    /// The `audit` event is written in the same transaction.
    async fn update_integration(
        &self,
        id: Uuid,
        changes: &IntegrationChanges,
        audit: &AuditEvent,
    ) -> Result<Option<StoredIntegration>, StoreError>;

    /// Deletes an integration, its sealed credentials and its project scope; `false` when it
    /// does not exist. The `audit` event is written in the same transaction.
    async fn delete_integration(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, StoreError>;

    /// Lists every data key, oldest first.
    async fn list_data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError>;

    /// Finds one data key.
    async fn find_data_key(&self, id: &str) -> Result<Option<StoredDataKey>, StoreError>;

    /// Returns the primary data key, if any.
    async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError>;

    /// Inserts a data key. When it is primary, the previous primary stops being primary in the
    /// same transaction. [`StoreError::Conflict`] when the id exists, when the key is wrapped by
    /// another key than the stored ones, or when it is [`DataKeyState::Rotating`] and another
    /// key is too.
    async fn insert_data_key(&self, key: &StoredDataKey) -> Result<(), StoreError>;

    /// Sets the state of a data key; `false` when it does not exist.
    async fn set_data_key_state(&self, id: &str, state: DataKeyState) -> Result<bool, StoreError>;

    /// Replaces the wrapped bytes and wrapping key id of each given data key, all in one
    /// transaction. `keys` must name every stored data key. [`StoreError::Conflict`] when one of
    /// them does not exist or a stored key is not named, and then nothing changes.
    async fn rewrap_data_keys(&self, keys: &[StoredDataKey]) -> Result<(), StoreError>;

    /// Lists sealed credentials ordered by integration id, starting after `after`.
    async fn list_sealed(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<SealedRow>, StoreError>;

    /// Replaces an integration's sealed credentials if they still equal `expected`, leaving
    /// `updated_at` alone. Returns `false` when the row changed or is gone, so a concurrent
    /// update is never overwritten.
    async fn replace_sealed(
        &self,
        id: Uuid,
        expected: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError>;

    /// Appends an audit event on its own.
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Checks that the database responds.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Lists audit events matching `query`, newest first (ties: last written first), skipping
    /// `query.offset` and returning at most `query.limit`.
    async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Lists stored events with their chain hashes in write order, those with `seq` greater
    /// than `after_seq`, at most `limit`.
    async fn list_audit_chain(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<ChainedEvent>, StoreError>;

    /// Inserts an application token with the `audit` event in one transaction. A token whose id
    /// or hash is already stored is a [`StoreError::Conflict`].
    async fn insert_application_token(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Lists application token metadata, oldest first, then by id.
    async fn list_application_tokens(&self) -> Result<Vec<ApplicationToken>, StoreError>;

    /// Finds an application token by the SHA-256 hash of its secret, revoked or not.
    async fn find_application_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApplicationTokenRecord>, StoreError>;

    /// Marks an application token revoked at `at`. The `audit` event is written in the same
    /// transaction, and only when this call revokes the token.
    async fn revoke_application_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<RevokeResult, StoreError>;
}

/// Filter and page of an audit log search. Every `Some` field narrows the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events at or before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only events of this actor subject, compared exactly.
    pub actor: Option<String>,
    /// Only events of this action.
    pub action: Option<AuditAction>,
    /// Only events that involve this integration.
    pub integration: Option<Uuid>,
    /// Only events whose `project` filter has this project key (see [`project_key`]), so the
    /// identifier is compared case-insensitively.
    pub project_key: Option<String>,
    /// Matching events to skip.
    pub offset: u64,
    /// Maximum events to return.
    pub limit: u64,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            actor: None,
            action: None,
            integration: None,
            project_key: None,
            offset: 0,
            limit: u64::MAX,
        }
    }
}

impl AuditQuery {
    /// Reports whether `event` passes every filter; the offset and limit are not applied.
    /// The SQL stores implement the same rules in their WHERE clauses.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.from.is_none_or(|from| event.at >= from)
            && self.to.is_none_or(|to| event.at <= to)
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| &event.actor_subject == actor)
            && self.action.is_none_or(|action| event.action == action)
            && self
                .integration
                .is_none_or(|id| event.integration_ids.contains(&id))
            && self.project_key.as_ref().is_none_or(|key| {
                audit_project_key(event).is_some_and(|event_key| &event_key == key)
            })
    }
}

/// Returns the project key of an event's `project` filter, the value the SQL stores keep in
/// their `project_key` column for [`AuditQuery::project_key`].
pub fn audit_project_key(event: &AuditEvent) -> Option<String> {
    event
        .filters
        .get("project")
        .map(|project| project_key(project))
}

/// Associated data that binds sealed credentials to one integration, its provider and auth type.
pub fn credentials_associated_data(id: Uuid, provider: Provider, auth_type: AuthType) -> Vec<u8> {
    format!("integrations/v1/{id}/{provider}/{auth_type}").into_bytes()
}
