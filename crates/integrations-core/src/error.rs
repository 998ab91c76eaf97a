//! The error every service operation returns, one variant per HTTP status class.

use crate::cipher::CipherError;
use crate::store::StoreError;
use crate::validation::ValidationError;

/// Failure of a service operation. Messages are safe to show to the caller because they name
/// fields and ids, never credential values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The caller is not authenticated as a kind of caller that may do this (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role does not allow the operation (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is invalid (HTTP 400).
    #[error("{message}")]
    InvalidInput {
        /// Field at fault, such as `credentials.token`.
        field: String,
        /// Description of the problem.
        message: String,
    },
    /// Nothing matched (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with stored state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The database or audit log cannot be reached (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// A data key cannot be loaded or unwrapped, such as after a master key change that this
    /// process has not been restarted for (HTTP 503). The message names key ids and is for logs.
    #[error("{0}")]
    KeysUnavailable(String),
    /// An unexpected failure (HTTP 500). The message is for logs; callers get a generic text.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// Creates an [`ServiceError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for ServiceError {
    fn from(error: ValidationError) -> Self {
        ServiceError::InvalidInput {
            field: error.field,
            message: error.message,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::DuplicateProject(identifier) => {
                ServiceError::Conflict(format!("Project '{identifier}' already exists"))
            }
            StoreError::ProjectNotFound(identifier) => ServiceError::InvalidInput {
                field: "projects".into(),
                message: format!("Project '{identifier}' not found"),
            },
            StoreError::ProjectInUse(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                ServiceError::Conflict(format!(
                    "Project is the only scope of integrations {}; delete them first",
                    ids.join(", ")
                ))
            }
            StoreError::Conflict(message) => ServiceError::Conflict(format!(
                "The change conflicted with a concurrent change; retry the request ({message})"
            )),
            StoreError::Unavailable(message) => {
                ServiceError::Unavailable(format!("Database unavailable: {message}"))
            }
            StoreError::Database(message) | StoreError::Corrupt(message) => {
                ServiceError::Internal(message)
            }
        }
    }
}

impl From<CipherError> for ServiceError {
    fn from(error: CipherError) -> Self {
        match error {
            // The data key could not be loaded: the database or the key provider is down, or
            // the master key no longer wraps it.
            CipherError::KeyUnavailable(message) => ServiceError::KeysUnavailable(message),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}
