//! Stores for the integrations credential store: SQLite (the embedded default), PostgreSQL (for
//! several server processes sharing one database), and an in-memory store for tests and
//! examples.
//!
//! Every store keeps the same rules. The SQL stores have the database enforce them, so they hold
//! across processes: one default per category, only global integrations as defaults, unique
//! project keys, project scopes that reference registered projects, and each change written in
//! one transaction with its audit event.
//!
//! ```no_run
//! # async fn example() -> Result<(), integrations_core::StoreError> {
//! let store = integrations_store::open("sqlite://data/integrations.db").await?;
//! let (integrations, audit) = store.into_parts();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod any;
mod codec;
mod data_keys;
mod error;
mod memory;
mod postgres;
mod sqlite;

#[doc(hidden)]
pub mod conformance;

pub use any::{open, AnyStore};
pub(crate) use data_keys::{check_all_named, check_same_wrapping};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, DATABASE_FILE};
