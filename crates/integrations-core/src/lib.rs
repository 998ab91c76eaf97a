//! Core of the integrations credential store: the model, validation, AES-256-GCM sealing, the
//! seams for stores, audit sinks and platform probes, and [`IntegrationService`], which contains
//! every rule (roles included) so that an embedding program behaves exactly like the server.

#![warn(missing_docs)]

pub mod audit;
pub mod audit_chain;
pub mod audit_throttle;
pub mod cipher;
pub mod credentials;
pub mod error;
pub mod keyring;
pub mod model;
pub mod probe;
pub mod service;
pub mod store;
pub mod tokens;
pub mod validation;

pub use audit::{AuditAction, AuditEvent, AuditOutcome, AuditSink};
pub use cipher::{Aes256GcmCipher, CipherError, CredentialCipher, MasterKey};
pub use credentials::Credentials;
pub use error::ServiceError;
pub use keyring::{EnvelopeCipher, KeyProvider, KeyProviderError, KeyringError};
pub use model::{Actor, AuthType, Integration, Platform, Project, Provider, Role};
pub use probe::{HealthStatus, PlatformProbe, ProbeReport, ProbeTarget, ResolvedIntegration};
pub use service::{
    CredentialFilter, CredentialRecord, HealthReport, IntegrationService, IntegrationUpdate,
    MasterKeyCheck, NewIntegration, NewProject, OverallHealth, PlatformHealth, RequestInfo,
    ServiceSettings,
};
pub use store::{AuditQuery, IntegrationStore, StoreError, StoredDataKey, StoredIntegration};
pub use tokens::{
    ApplicationToken, ApplicationTokenRecord, CreatedApplicationToken, RevokeResult,
    TokenAuthError, TokenSecret,
};
