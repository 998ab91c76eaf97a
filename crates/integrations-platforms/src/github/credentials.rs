//! GitHub credentials chosen for a project, the App JWT and the repository name.

use std::fmt;

use integrations_core::validation::check_private_key_format;
use integrations_core::{AuthType, Provider, ResolvedIntegration};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::BuiltinApp;
use crate::redact::quote_platform_text;
use crate::token::SecretToken;

/// GitHub accepts App JWTs that expire at most 10 minutes after issue; nine leaves room for
/// clock drift.
const JWT_LIFETIME_SECS: i64 = 9 * 60;

/// `iat` is set this far in the past, as GitHub recommends, to absorb clock drift.
const JWT_BACKDATE_SECS: i64 = 60;

/// `owner/repo` of a GitHub project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoName {
    pub(crate) owner: String,
    pub(crate) repo: String,
}

impl RepoName {
    /// Parses a project identifier; GitHub owner and repository names use ASCII letters,
    /// digits, `-`, `_` and `.`.
    pub(crate) fn parse(identifier: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "project identifier '{}' is not a GitHub repository in the form owner/repo",
                quote_platform_text(identifier)
            )
        };
        let (owner, repo) = identifier.trim().split_once('/').ok_or_else(invalid)?;
        let valid = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(owner) || !valid(repo) {
            return Err(invalid());
        }
        Ok(Self {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// Returns the lowercase `owner/repo`, as GitHub compares names case-insensitively.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.owner, self.repo).to_ascii_lowercase()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)
    }
}

/// GitHub App credentials, from an integration or the built-in app.
#[derive(Clone)]
pub(crate) struct AppCredentials {
    pub(crate) app_id: u64,
    /// PEM text with literal `\n` sequences turned into newlines.
    private_key: Zeroizing<String>,
    /// SHA-256 of the key, so caches never hand a token minted with one key to a check that
    /// uses another key under the same app id.
    pub(crate) key_fingerprint: [u8; 32],
    pub(crate) installation_id: Option<u64>,
    /// Names the credentials in messages, such as `GitHub App 123 of integration 9f…`.
    pub(crate) label: String,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("private_key", &"[REDACTED]")
            .field("installation_id", &self.installation_id)
            .finish()
    }
}

/// Cache key of one App and key.
pub(crate) type AppKey = (u64, [u8; 32]);

impl AppCredentials {
    fn new(
        app_id: u64,
        private_key: &str,
        installation_id: Option<u64>,
        label: String,
    ) -> Result<Self, String> {
        check_private_key_format(private_key)
            .map_err(|message| format!("{message}; update the private key of {label}"))?;
        let private_key = Zeroizing::new(private_key.replace("\\n", "\n").trim().to_owned());
        let key_fingerprint = Sha256::digest(private_key.as_bytes()).into();
        Ok(Self {
            app_id,
            private_key,
            key_fingerprint,
            installation_id,
            label,
        })
    }

    pub(crate) fn private_key(&self) -> &str {
        &self.private_key
    }

    pub(crate) fn app_key(&self) -> AppKey {
        (self.app_id, self.key_fingerprint)
    }

    /// Signs an App JWT: RS256, `iat` one minute in the past, `exp` nine minutes ahead, `iss`
    /// the app id. Returns the JWT and its lifetime from now in seconds.
    pub(crate) fn sign_jwt(&self) -> Result<(SecretToken, u64), String> {
        let key = EncodingKey::from_rsa_pem(self.private_key.as_bytes()).map_err(|_| {
            format!(
                "the private key of {} is not a readable RSA private key in PEM format \
                 (PKCS#1 or PKCS#8); download a new key from the GitHub App settings",
                self.label
            )
        })?;
        let now = chrono::Utc::now().timestamp();
        let claims = AppClaims {
            iat: now - JWT_BACKDATE_SECS,
            exp: now + JWT_LIFETIME_SECS,
            iss: self.app_id.to_string(),
        };
        let jwt =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|_| {
                format!(
                    "failed to sign the JWT of {} with its private key; the key is not a valid \
                     RSA private key, download a new key from the GitHub App settings",
                    self.label
                )
            })?;
        Ok((SecretToken::new(jwt), JWT_LIFETIME_SECS as u64))
    }
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

/// Authentication method of a check.
#[derive(Debug, Clone)]
pub(crate) enum GithubAuth {
    /// A GitHub App; the check mints an installation token.
    App(AppCredentials),
    /// A personal access token, with a label for messages.
    Pat { token: SecretToken, label: String },
}

/// Picks the credentials for a check: the resolved integration, else the built-in app.
/// Returns `Ok(None)` when neither exists, and a message when the integration is unusable.
pub(crate) fn resolve_auth(
    integration: Option<&ResolvedIntegration>,
    builtin_app: Option<&BuiltinApp>,
) -> Result<Option<GithubAuth>, String> {
    let Some(resolved) = integration else {
        return builtin_app.map(builtin_auth).transpose();
    };
    let metadata = &resolved.integration;
    if metadata.provider != Provider::Github {
        return Err(format!(
            "integration {} resolved for this project is a {} integration, not a GitHub one",
            metadata.id, metadata.provider
        ));
    }
    let credentials = &resolved.credentials;
    match metadata.auth_type {
        AuthType::App => {
            let app_id = numeric_field(credentials.expose("appId"), "appId", metadata.id)?
                .ok_or_else(|| missing_field("appId", metadata.id))?;
            let installation_id = numeric_field(
                credentials.expose("installationId"),
                "installationId",
                metadata.id,
            )?;
            let private_key = credentials
                .expose("privateKey")
                .ok_or_else(|| missing_field("privateKey", metadata.id))?;
            let label = format!("GitHub App {app_id} of integration {}", metadata.id);
            AppCredentials::new(app_id, private_key, installation_id, label)
                .map(|app| Some(GithubAuth::App(app)))
        }
        AuthType::Pat => {
            let token = credentials
                .expose("token")
                .filter(|token| !token.trim().is_empty())
                .ok_or_else(|| missing_field("token", metadata.id))?;
            Ok(Some(GithubAuth::Pat {
                token: SecretToken::new(token.trim().to_owned()),
                label: format!("the token of integration {}", metadata.id),
            }))
        }
        other => Err(format!(
            "integration {} uses authType {other}, which the health check cannot use; register \
             a GitHub integration with authType app or pat",
            metadata.id
        )),
    }
}

fn builtin_auth(app: &BuiltinApp) -> Result<GithubAuth, String> {
    let app_id: u64 = app
        .app_id()
        .parse()
        .map_err(|_| "GITHUB_APP_ID must be the numeric GitHub App id".to_owned())?;
    let label = format!("the built-in GitHub App {app_id}");
    AppCredentials::new(app_id, app.private_key(), None, label).map(GithubAuth::App)
}

fn numeric_field(
    value: Option<&str>,
    name: &str,
    integration: uuid::Uuid,
) -> Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("credentials.{name} of integration {integration} must be a number; update the integration")
        }),
    }
}

fn missing_field(name: &str, integration: uuid::Uuid) -> String {
    format!("credentials.{name} is missing from integration {integration}; update the integration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_name_parsed() {
        let name = RepoName::parse("Acme/App.rs").unwrap();
        assert_eq!(name.key(), "acme/app.rs");
    }

    #[test]
    fn repo_name_needs_two_parts() {
        assert!(RepoName::parse("acme").is_err());
        assert!(RepoName::parse("acme/app/extra").is_err());
        assert!(RepoName::parse("acme/..").is_err());
    }
}
