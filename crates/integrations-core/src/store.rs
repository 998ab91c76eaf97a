//! The storage seam: projects, integrations with sealed credentials, and the audit log.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::model::{AuthType, Integration, Project, Provider};
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

    /// Appends an audit event on its own.
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Lists audit events, newest first, skipping `offset` and returning at most `limit`.
    async fn list_audit(&self, offset: u64, limit: u64) -> Result<Vec<AuditEvent>, StoreError>;

    /// Checks that the database responds.
    async fn ping(&self) -> Result<(), StoreError>;

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

/// Associated data that binds sealed credentials to one integration, its provider and auth type.
pub fn credentials_associated_data(id: Uuid, provider: Provider, auth_type: AuthType) -> Vec<u8> {
    format!("integrations/v1/{id}/{provider}/{auth_type}").into_bytes()
}
