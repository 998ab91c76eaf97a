//! Reference HTTP server for the integrations credential store: the sfp server Integrations API
//! over warp, bearer token authentication, and the start-up that prepares keys and the database.
//!
//! The binary is a thin wrapper around [`run`]. Tests and embedding programs can build the same
//! routes in-process with [`routes`].

#![warn(missing_docs)]

pub mod api;
pub mod application_tokens;
pub mod audit_cli;
pub mod audit_hook;
pub mod audit_query;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod handlers;
pub mod keys;
pub mod rotation;
pub mod server;

use std::sync::Arc;

use integrations_core::IntegrationService;

pub use api::routes;
pub use config::{
    AuditCommand, Cli, Command, KeyedStoreConfig, RotateKeyConfig, RotateMasterKeyConfig,
    ServeConfig, TokenConfig,
};
pub use server::{run, StartError};

use auth::TokenVerifier;

/// Shared request state: the service and the token verifier.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The service that applies every rule.
    pub service: IntegrationService,
    /// Verifies bearer tokens.
    pub verifier: Arc<TokenVerifier>,
}

impl AppState {
    /// Creates the state.
    pub fn new(service: IntegrationService, verifier: TokenVerifier) -> Self {
        Self {
            service,
            verifier: Arc::new(verifier),
        }
    }
}
