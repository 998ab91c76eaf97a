//! GitHub App authentication: JWTs, installation lookup and installation tokens, each cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::credentials::{AppCredentials, AppKey, RepoName};
use super::responses::{
    jwt_rejected_message, rate_limit_message, server_error_message, status_detail,
    unexpected_message,
};
use super::GithubInner;
use crate::cache::{refresh_at, SingleFlightCache};
use crate::http::Latency;
use crate::redact::Secrets;
use crate::token::{Failure, SecretToken};

/// How long a found installation id is reused for its owner before it is looked up again.
/// Installations change rarely, and a stale id shows up as a 404 on the token request, which
/// drops it.
const INSTALLATION_TTL: Duration = Duration::from_secs(60 * 60);

/// How long a lookup result is kept per repository: long enough for checks that waited on the
/// lookup to take its result, short enough that a dropped installation is looked up again soon.
const LOOKUP_REUSE: Duration = Duration::from_secs(5);

/// Caches of App JWTs, installation ids and installation tokens, shared by all checks of a probe.
#[derive(Default)]
pub(super) struct AppTokens {
    jwts: SingleFlightCache<AppKey, SecretToken, Failure>,
    /// Installation per app and repository, found with `GET /repos/{owner}/{repo}/installation`.
    installations: SingleFlightCache<(AppKey, String), u64, Failure>,
    /// Installation per app and owner. GitHub allows one installation of an App per account, so
    /// a repository of a known owner needs no lookup of its own.
    owner_installations: Mutex<HashMap<(AppKey, String), (u64, Instant)>>,
    /// Installation tokens per app, key and installation.
    tokens: SingleFlightCache<(AppKey, u64), SecretToken, Failure>,
}

#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
}

#[derive(Deserialize)]
struct AccessTokenBody {
    token: String,
    expires_at: DateTime<Utc>,
}

impl AppTokens {
    /// Returns an App JWT, signing a new one when the cached one is past half its life.
    async fn jwt(&self, app: &AppCredentials, secrets: &Secrets) -> Result<SecretToken, Failure> {
        let jwt = self
            .jwts
            .get(&app.app_key(), || async {
                let (jwt, lifetime_secs) = app.sign_jwt()?;
                Ok((jwt, refresh_at(Duration::from_secs(lifetime_secs))))
            })
            .await?;
        secrets.add(jwt.expose());
        Ok(jwt)
    }

    /// Returns the installation of the App on the repository's owner.
    pub(super) async fn installation_id(
        &self,
        github: &GithubInner,
        app: &AppCredentials,
        repo: &RepoName,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<u64, Failure> {
        let owner_key = (app.app_key(), repo.owner.to_ascii_lowercase());
        if let Some(id) = self.owner_installation(&owner_key) {
            return Ok(id);
        }
        let id = self
            .installations
            .get(&(app.app_key(), repo.key()), || {
                self.look_up_installation(github, app, repo, secrets, latency)
            })
            .await?;
        let mut owners = self
            .owner_installations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        owners.insert(owner_key, (id, Instant::now() + INSTALLATION_TTL));
        Ok(id)
    }

    fn owner_installation(&self, owner_key: &(AppKey, String)) -> Option<u64> {
        let owners = self
            .owner_installations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        owners
            .get(owner_key)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(id, _)| *id)
    }

    async fn look_up_installation(
        &self,
        github: &GithubInner,
        app: &AppCredentials,
        repo: &RepoName,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<(u64, Instant), Failure> {
        let jwt = self.jwt(app, secrets).await?;
        let url = github.api(&["repos", &repo.owner, &repo.repo, "installation"]);
        let response = github.call(Method::GET, url, &jwt, latency).await?;
        let call = format!("GET /repos/{repo}/installation");

        if let Some(message) = rate_limit_message(&response, &app.label) {
            return Err(Failure(message));
        }
        match response.status {
            StatusCode::OK => {
                let body: InstallationBody =
                    serde_json::from_slice(&response.body).map_err(|_| {
                        Failure(format!("GitHub returned no installation id for {call}"))
                    })?;
                Ok((body.id, Instant::now() + LOOKUP_REUSE))
            }
            StatusCode::NOT_FOUND => Err(Failure(format!(
                "{} is not installed on the account {}, or {repo} is not among the \
                 repositories selected for its installation; install the App on {} and grant \
                 it access to {repo}",
                app.label, repo.owner, repo.owner
            ))),
            StatusCode::UNAUTHORIZED => {
                self.jwts.invalidate(&app.app_key(), &jwt).await;
                Err(Failure(jwt_rejected_message(&response, &app.label, &call)))
            }
            status if status.is_server_error() => {
                Err(Failure(server_error_message(&response, &call)))
            }
            _ => Err(Failure(unexpected_message(&response, &call))),
        }
    }

    /// Returns an installation token, minting one when none is cached or the cached one is
    /// about to expire.
    pub(super) async fn installation_token(
        &self,
        github: &GithubInner,
        app: &AppCredentials,
        installation_id: u64,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<SecretToken, Failure> {
        let token = self
            .tokens
            .get(&(app.app_key(), installation_id), || {
                self.mint_token(github, app, installation_id, secrets, latency)
            })
            .await?;
        secrets.add(token.expose());
        Ok(token)
    }

    /// Drops a token GitHub rejected, unless another check already replaced it.
    pub(super) async fn forget_token(
        &self,
        app: &AppCredentials,
        installation_id: u64,
        stale: &SecretToken,
    ) {
        self.tokens
            .invalidate(&(app.app_key(), installation_id), stale)
            .await;
    }

    async fn mint_token(
        &self,
        github: &GithubInner,
        app: &AppCredentials,
        installation_id: u64,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<(SecretToken, Instant), Failure> {
        let jwt = self.jwt(app, secrets).await?;
        let id_text = installation_id.to_string();
        let url = github.api(&["app", "installations", &id_text, "access_tokens"]);
        let response = github.call(Method::POST, url, &jwt, latency).await?;
        let call = format!("POST /app/installations/{installation_id}/access_tokens");

        if let Some(message) = rate_limit_message(&response, &app.label) {
            return Err(Failure(message));
        }
        match response.status {
            StatusCode::CREATED | StatusCode::OK => {
                let body: AccessTokenBody =
                    serde_json::from_slice(&response.body).map_err(|_| {
                        Failure(format!(
                            "GitHub returned no token and expires_at for {call}"
                        ))
                    })?;
                let token = SecretToken::new(body.token);
                secrets.add(token.expose());
                let lifetime = (body.expires_at - Utc::now()).to_std().unwrap_or_default();
                Ok((token, refresh_at(lifetime)))
            }
            StatusCode::UNAUTHORIZED => {
                self.jwts.invalidate(&app.app_key(), &jwt).await;
                Err(Failure(jwt_rejected_message(&response, &app.label, &call)))
            }
            StatusCode::NOT_FOUND => {
                self.forget_installation(app, installation_id);
                Err(Failure(format!(
                    "installation {installation_id} of {} not found; the App was uninstalled or \
                     the stored installationId is wrong, so reinstall the App or correct \
                     installationId",
                    app.label
                )))
            }
            StatusCode::FORBIDDEN => Err(Failure(format!(
                "GitHub refused an installation token for installation {installation_id} of {} \
                 (403{}); the installation may be suspended, check it in the account's \
                 GitHub App settings",
                app.label,
                status_detail(&response)
            ))),
            status if status.is_server_error() => {
                Err(Failure(server_error_message(&response, &call)))
            }
            _ => Err(Failure(unexpected_message(&response, &call))),
        }
    }

    fn forget_installation(&self, app: &AppCredentials, installation_id: u64) {
        let mut owners = self
            .owner_installations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let app_key = app.app_key();
        owners.retain(|(key, _), (id, _)| !(key == &app_key && *id == installation_id));
    }
}
