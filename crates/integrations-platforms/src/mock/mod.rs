//! In-process mock platforms on loopback for tests and examples (feature `mock`).
//!
//! Each mock binds `127.0.0.1` on an ephemeral port and stops when dropped. It counts the
//! requests each endpoint receives (`count`), logs them without header values (`requests`),
//! and can be switched at runtime to add latency (`set_latency`) or to make an endpoint respond with
//! a [`Fault`] (`set_fault`).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use integrations_platforms::mock::{GithubEndpoint, MockGithub, RepositorySelection};
//!
//! let github = MockGithub::start().await?;
//! github.register_app(1, "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----");
//! github.add_repository("acme/app");
//! github.add_installation(10, 1, "acme", RepositorySelection::All);
//! // Point a GithubProbe at github.base_url(), run checks, then:
//! assert_eq!(github.count(GithubEndpoint::AccessTokens), 1);
//! # Ok(())
//! # }
//! ```

mod azure_devops;
mod entra;
mod github;
mod server;

pub use azure_devops::{DevopsEndpoint, MockAzureDevops};
pub use entra::{EntraEndpoint, MockEntra};
pub use github::{GithubEndpoint, MockGithub, RepositorySelection};
pub use server::{Fault, RecordedRequest};
