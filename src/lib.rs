//! Encrypted credential store for developer platforms.
//!
//! This facade re-exports the workspace crates so that an embedding program depends on one
//! package:
//!
//! - [`core`]: the model, validation, AES-256-GCM sealing, the store, audit and probe traits,
//!   and [`core::IntegrationService`], which contains every rule, roles included.
//! - [`store`]: SQLite (the embedded default), PostgreSQL and in-memory stores.
//! - [`platforms`]: GitHub and Azure DevOps health probes (mock platforms behind the `mock`
//!   feature of `integrations-platforms`).
//! - [`server`]: the reference HTTP server speaking the sfp Integrations API.

pub use integrations_core as core;
pub use integrations_platforms as platforms;
pub use integrations_server as server;
pub use integrations_store as store;
