//! Health probes for the platforms that host registered projects, GitHub and Azure DevOps,
//! with their token caches, a guarded HTTP client and (feature `mock`) in-process mock
//! platforms for tests.
//!
//! [`default_probes`] builds one probe per platform from a [`PlatformsConfig`];
//! [`PlatformsConfig::from_env`] reads these variables (unset or empty means the default):
//!
//! | Variable | Meaning | Default |
//! |---|---|---|
//! | `INTEGRATIONS_GITHUB_API_URL` | GitHub REST API base URL; `https://HOST/api/v3` for GitHub Enterprise Server | `https://api.github.com` |
//! | `INTEGRATIONS_ENTRA_AUTHORITY` | Microsoft Entra ID authority, for sovereign clouds such as `https://login.microsoftonline.us` | `https://login.microsoftonline.com` |
//! | `INTEGRATIONS_PROBE_ALLOWED_HOSTS` | Comma-separated hosts (names, IP addresses or `*.domain`, no port) that probes may reach besides the platforms' public API hosts | none |
//! | `GITHUB_APP_ID` | App id of the built-in GitHub App, used for GitHub projects with no GitHub integration of their own and no global default | none |
//! | `GITHUB_APP_PRIVATE_KEY` | PEM private key of the built-in App, PKCS#1 or PKCS#8; newlines may be written as `\n` | none |
//! | `GITHUB_APP_PRIVATE_KEY_PATH` | File with that key, read when `GITHUB_APP_PRIVATE_KEY` is unset | none |
//!
//! # Which hosts probes reach
//!
//! Probes follow no redirects and use no proxy. They reach `https` URLs on the platforms'
//! public API hosts: `api.github.com`, `login.microsoftonline.com`, `dev.azure.com` and
//! `*.visualstudio.com`. They also reach the configured GitHub API URL and Entra authority (their
//! scheme, host and port) and the allowed hosts. Plain `http` is accepted only for allowed
//! loopback hosts. Link-local addresses and cloud metadata endpoints are never reached, whether
//! named in a URL or returned by DNS. A rejected URL makes the check unhealthy with a message
//! that names the host.
//!
//! # Secrets
//!
//! Reports, log lines and `Debug` output never contain tokens, keys, client secrets or
//! `Authorization` headers. From an error response, messages quote only the `message` field
//! (GitHub, Azure DevOps) or the `error` code (Entra), cut to 200 characters. Every message is
//! also scrubbed of the secrets its check used.

#![warn(missing_docs)]

pub mod azure_devops;
mod cache;
pub mod config;
pub mod github;
pub mod guard;
mod http;
#[cfg(feature = "mock")]
pub mod mock;
mod redact;
mod token;
mod warmup;

use std::sync::Arc;

use integrations_core::PlatformProbe;

pub use azure_devops::{AzureDevopsProbe, AzureDevopsProbeConfig};
pub use config::{BuiltinApp, ConfigError, PlatformsConfig};
pub use github::{GithubProbe, GithubProbeConfig};
pub use guard::HostPolicy;
pub use http::ClientBuildError;

/// Builds the probes of every supported platform, ready for the core service.
pub fn default_probes(
    config: &PlatformsConfig,
) -> Result<Vec<Arc<dyn PlatformProbe>>, ClientBuildError> {
    let github = GithubProbe::new(config.github())?;
    let azure_devops = AzureDevopsProbe::new(config.azure_devops())?;
    Ok(vec![Arc::new(github), Arc::new(azure_devops)])
}

#[cfg(test)]
mod tests {
    use integrations_core::Platform;

    use super::*;

    #[test]
    fn default_probes_cover_platforms() {
        let probes = default_probes(&PlatformsConfig::default()).unwrap();
        let platforms: Vec<Platform> = probes.iter().map(|probe| probe.platform()).collect();
        assert_eq!(platforms, vec![Platform::Github, Platform::AzureDevops]);
    }
}
