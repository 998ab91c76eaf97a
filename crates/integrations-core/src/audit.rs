//! Audit events: who did what to which integrations, and how it ended. Never a secret.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Actor, Role};
use crate::store::StoreError;

/// Kind of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// An integration was created.
    IntegrationCreated,
    /// An integration was updated.
    IntegrationUpdated,
    /// An integration was deleted.
    IntegrationDeleted,
    /// Decrypted credentials were requested.
    CredentialsRead,
    /// A project was registered.
    ProjectCreated,
    /// A project was deleted.
    ProjectDeleted,
    /// A new primary data key was added and integrations were re-encrypted with it.
    DataKeyRotated,
    /// The data keys were rewrapped with a new master key.
    MasterKeyChanged,
    /// A request to an authenticated route carried no valid bearer token (HTTP 401).
    AuthenticationFailed,
    /// The caller's role does not allow the request (HTTP 403).
    AccessDenied,
    /// An application token was created.
    ApplicationTokenCreated,
    /// An application token was revoked.
    ApplicationTokenRevoked,
}

impl AuditAction {
    /// Returns the snake_case name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::IntegrationCreated => "integration_created",
            AuditAction::IntegrationUpdated => "integration_updated",
            AuditAction::IntegrationDeleted => "integration_deleted",
            AuditAction::CredentialsRead => "credentials_read",
            AuditAction::ProjectCreated => "project_created",
            AuditAction::ProjectDeleted => "project_deleted",
            AuditAction::DataKeyRotated => "data_key_rotated",
            AuditAction::MasterKeyChanged => "master_key_changed",
            AuditAction::AuthenticationFailed => "authentication_failed",
            AuditAction::AccessDenied => "access_denied",
            AuditAction::ApplicationTokenCreated => "application_token_created",
            AuditAction::ApplicationTokenRevoked => "application_token_revoked",
        }
    }

    /// Every action, in declaration order.
    pub const ALL: [AuditAction; 12] = [
        AuditAction::IntegrationCreated,
        AuditAction::IntegrationUpdated,
        AuditAction::IntegrationDeleted,
        AuditAction::CredentialsRead,
        AuditAction::ProjectCreated,
        AuditAction::ProjectDeleted,
        AuditAction::DataKeyRotated,
        AuditAction::MasterKeyChanged,
        AuditAction::AuthenticationFailed,
        AuditAction::AccessDenied,
        AuditAction::ApplicationTokenCreated,
        AuditAction::ApplicationTokenRevoked,
    ];
}

impl std::str::FromStr for AuditAction {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == value)
            .ok_or_else(|| format!("unknown audit action '{value}'"))
    }
}

/// Result of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditOutcome {
    /// The operation succeeded.
    Success,
    /// The caller's role does not allow the operation.
    Denied,
    /// Nothing matched the request.
    NotFound,
}

impl AuditOutcome {
    /// Returns the snake_case name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::NotFound => "not_found",
        }
    }
}

impl std::str::FromStr for AuditOutcome {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "success" => Ok(AuditOutcome::Success),
            "denied" => Ok(AuditOutcome::Denied),
            "not_found" => Ok(AuditOutcome::NotFound),
            other => Err(format!("unknown audit outcome '{other}'")),
        }
    }
}

/// One audit record. Filters and ids only: no credential value is ever part of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Event id.
    pub id: Uuid,
    /// When the operation happened.
    pub at: DateTime<Utc>,
    /// Token subject of the caller.
    pub actor_subject: String,
    /// Role of the caller.
    pub actor_role: Role,
    /// Kind of operation.
    pub action: AuditAction,
    /// Integrations involved, in response order.
    pub integration_ids: Vec<Uuid>,
    /// Request filters or identifiers, such as `provider` and `project`.
    pub filters: BTreeMap<String, String>,
    /// Result.
    pub outcome: AuditOutcome,
    /// Number of occurrences this event stands for: 1, or the repeats of a failure that
    /// [`crate::audit_throttle::AuditThrottle`] folded into one event.
    pub count: u64,
}

impl AuditEvent {
    /// Starts an event for `actor` with the current time and no integrations.
    ///
    /// The time is truncated to whole microseconds, the precision PostgreSQL `timestamptz`
    /// keeps, so that the event hashes the same before and after a round trip through any store.
    pub fn new(actor: &Actor, action: AuditAction, outcome: AuditOutcome) -> Self {
        Self {
            id: Uuid::new_v4(),
            at: Utc::now().trunc_subsecs(6),
            actor_subject: actor.subject.clone(),
            actor_role: actor.role,
            action,
            integration_ids: Vec::new(),
            filters: BTreeMap::new(),
            outcome,
            count: 1,
        }
    }

    /// Adds the ids of the integrations involved.
    pub fn with_integrations(mut self, ids: impl IntoIterator<Item = Uuid>) -> Self {
        self.integration_ids.extend(ids);
        self
    }

    /// Adds the defaults that the audited change demoted: their ids join the integrations and
    /// the `demoted_default` filter, so a search by a demoted integration finds the event.
    pub fn with_demoted_defaults(mut self, ids: &[Uuid]) -> Self {
        if ids.is_empty() {
            return self;
        }
        self.integration_ids.extend(ids.iter().copied());
        let names: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.filters
            .insert("demoted_default".to_owned(), names.join(","));
        self
    }

    /// Adds one filter or identifier.
    pub fn with_filter(mut self, name: &str, value: impl Into<String>) -> Self {
        self.filters.insert(name.to_owned(), value.into());
        self
    }
}

/// Receives audit events for operations that change nothing in the store, such as credential
/// reads. Changes are audited by the store in the same transaction as the change.
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Durably records one event. An error means the event may not have been kept.
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError>;
}
