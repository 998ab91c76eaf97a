//! Health probe for GitHub: App installation tokens or personal access tokens, then
//! `GET /repos/{owner}/{repo}`.

mod app;
mod credentials;
mod responses;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use integrations_core::{HealthStatus, Platform, PlatformProbe, ProbeReport, ProbeTarget};
use reqwest::StatusCode;
use url::Url;

use crate::config::{
    BuiltinApp, ConfigError, PlatformsConfig, DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT,
};
use crate::guard::HostPolicy;
use crate::http::{CallError, ClientBuildError, Latency, PlatformResponse, ProbeClient};
use crate::redact::Secrets;
use crate::token::{Failure, SecretToken};
use crate::warmup::WarmupTracker;

use self::app::AppTokens;
use self::credentials::{resolve_auth, AppCredentials, GithubAuth, RepoName};
use self::responses::{
    rate_limit_message, server_error_message, status_detail, unexpected_message,
};

/// Public GitHub API host; GitHub Enterprise Server hosts come from the configured API URL.
const PUBLIC_HOSTS: &[&str] = &["api.github.com"];

/// Warm-up mints tokens for this many targets at a time.
const WARMUP_CONCURRENCY: usize = 8;

/// Media type GitHub recommends for REST API requests.
const GITHUB_JSON: &str = "application/vnd.github+json";

/// REST API version the probe is written against.
const GITHUB_API_VERSION: &str = "2022-11-28";

/// Configuration of a [`GithubProbe`].
#[derive(Debug, Clone)]
pub struct GithubProbeConfig {
    /// REST API base URL: `https://api.github.com`, or `https://HOST/api/v3` on GitHub
    /// Enterprise Server.
    pub api_url: Url,
    /// App used for projects without a GitHub integration of their own or a global default.
    pub builtin_app: Option<BuiltinApp>,
    /// Extra hosts the probe may reach; see [`PlatformsConfig::allowed_hosts`].
    pub allowed_hosts: Vec<String>,
    /// Timeout of one GitHub request.
    pub request_timeout: Duration,
    /// `User-Agent` header; GitHub rejects requests without one.
    pub user_agent: String,
}

impl Default for GithubProbeConfig {
    fn default() -> Self {
        PlatformsConfig::default().github()
    }
}

impl GithubProbeConfig {
    /// Creates a configuration for the API at `api_url`, with no built-in app.
    pub fn new(api_url: Url) -> Self {
        Self {
            api_url,
            builtin_app: None,
            allowed_hosts: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
        }
    }

    /// Reads the configuration from the environment; see [`PlatformsConfig::from_env`].
    pub fn from_env() -> Result<Self, ConfigError> {
        PlatformsConfig::from_env().map(|config| config.github())
    }

    /// Sets the built-in app.
    pub fn with_builtin_app(mut self, app: BuiltinApp) -> Self {
        self.builtin_app = Some(app);
        self
    }

    /// Sets the extra hosts the probe may reach.
    pub fn with_allowed_hosts(
        mut self,
        hosts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the timeout of one GitHub request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

impl PlatformsConfig {
    /// Returns the GitHub part of this configuration.
    pub fn github(&self) -> GithubProbeConfig {
        GithubProbeConfig {
            api_url: self.github_api_url.clone(),
            builtin_app: self.builtin_app.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            request_timeout: self.request_timeout,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// Checks that a project's GitHub credentials can read its repository.
///
/// With an App, the probe signs a JWT, finds the installation for the repository (unless the
/// integration stores `installationId`), mints an installation token and reads the repository
/// with it. Installation tokens are cached per app, key and installation until shortly before
/// they expire, and minted by one check at a time. With a personal access token, the probe
/// reads the repository directly.
#[derive(Clone)]
pub struct GithubProbe {
    inner: Arc<GithubInner>,
}

struct GithubInner {
    api_url: Url,
    client: ProbeClient,
    builtin_app: Option<BuiltinApp>,
    tokens: AppTokens,
    warmup: WarmupTracker,
}

impl fmt::Debug for GithubProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubProbe")
            .field("api_url", &self.inner.api_url.as_str())
            .field("builtin_app", &self.inner.builtin_app)
            .finish_non_exhaustive()
    }
}

impl GithubProbe {
    /// Creates a probe.
    pub fn new(config: GithubProbeConfig) -> Result<Self, ClientBuildError> {
        let policy = HostPolicy::new("GitHub", PUBLIC_HOSTS, &config.allowed_hosts)
            .allow_origin_of(&config.api_url);
        let client = ProbeClient::new(policy, config.request_timeout, &config.user_agent)?;
        Ok(Self {
            inner: Arc::new(GithubInner {
                api_url: config.api_url,
                client,
                builtin_app: config.builtin_app,
                tokens: AppTokens::default(),
                warmup: WarmupTracker::default(),
            }),
        })
    }
}

impl GithubInner {
    /// Builds an API URL from path segments, each percent-encoded.
    fn api(&self, segments: &[&str]) -> Url {
        let mut url = self.api_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request with the headers GitHub expects and `Authorization: Bearer`.
    async fn call(
        &self,
        method: reqwest::Method,
        url: Url,
        bearer: &SecretToken,
        latency: &Latency,
    ) -> Result<PlatformResponse, CallError> {
        let request = self
            .client
            .inner()
            .request(method, url.clone())
            .header(reqwest::header::ACCEPT, GITHUB_JSON)
            .header("X-GitHub-Api-Version", GITHUB_API_VERSION)
            .bearer_auth(bearer.expose());
        self.client.send(&url, request, latency).await
    }

    async fn read_repo(
        &self,
        repo: &RepoName,
        token: &SecretToken,
        latency: &Latency,
    ) -> Result<PlatformResponse, CallError> {
        let url = self.api(&["repos", &repo.owner, &repo.repo]);
        self.call(reqwest::Method::GET, url, token, latency).await
    }

    async fn check(
        &self,
        target: &ProbeTarget,
        secrets: &Secrets,
        latency: &Latency,
    ) -> ProbeReport {
        let repo = match RepoName::parse(&target.project.identifier) {
            Ok(repo) => repo,
            Err(message) => return ProbeReport::new(HealthStatus::Unhealthy, message, None),
        };
        let auth = match resolve_auth(target.integration.as_ref(), self.builtin_app.as_ref()) {
            Ok(Some(auth)) => auth,
            Ok(None) => return not_configured(&repo),
            Err(message) => return ProbeReport::new(HealthStatus::Unhealthy, message, None),
        };
        if self.warmup.is_initializing(&target.project.key()) {
            return ProbeReport::new(
                HealthStatus::Initializing,
                "the GitHub token cache is still warming up after start; retry in a few seconds",
                None,
            );
        }

        let outcome = match &auth {
            GithubAuth::App(app) => self.check_app(app, &repo, secrets, latency).await,
            GithubAuth::Pat { token, label } => {
                secrets.add(token.expose());
                self.check_pat(token, label, &repo, latency).await
            }
        };
        match outcome {
            Ok(message) => ProbeReport::new(HealthStatus::Healthy, message, latency.millis()),
            Err(Failure(message)) => {
                ProbeReport::new(HealthStatus::Unhealthy, message, latency.millis())
            }
        }
    }

    async fn check_pat(
        &self,
        token: &SecretToken,
        label: &str,
        repo: &RepoName,
        latency: &Latency,
    ) -> Result<String, Failure> {
        let response = self.read_repo(repo, token, latency).await?;
        if response.status == StatusCode::UNAUTHORIZED {
            return Err(Failure(format!(
                "GitHub rejected {label} (401{}); the token is invalid, expired or revoked, so \
                 create a new one and update the integration",
                status_detail(&response)
            )));
        }
        let not_found = format!(
            "repository {repo} not found, or {label} cannot see it; check the project identifier \
             and that the token has read access to the repository (fine-grained tokens: \
             Metadata read)"
        );
        repo_outcome(&response, repo, label, not_found)
    }

    async fn check_app(
        &self,
        app: &AppCredentials,
        repo: &RepoName,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<String, Failure> {
        secrets.add(app.private_key());
        let (installation_id, token) = self.authorize_app(app, repo, secrets, latency).await?;
        let mut response = self.read_repo(repo, &token, latency).await?;

        if response.status == StatusCode::UNAUTHORIZED {
            // The token may have been revoked or expired early; retry once with a fresh one.
            self.tokens.forget_token(app, installation_id, &token).await;
            let fresh = self
                .tokens
                .installation_token(self, app, installation_id, secrets, latency)
                .await?;
            response = self.read_repo(repo, &fresh, latency).await?;
            if response.status == StatusCode::UNAUTHORIZED {
                return Err(Failure(format!(
                    "GitHub rejected a freshly minted installation token of {} (installation \
                     {installation_id}) on GET /repos/{repo} (401{}); the installation may be \
                     suspended, check it in the GitHub App settings",
                    app.label,
                    status_detail(&response)
                )));
            }
        }

        let who = format!("{} (installation {installation_id})", app.label);
        let not_found = format!(
            "repository {repo} not found, or not selected for installation {installation_id} of \
             {}; add the repository to the installation's repository access in the GitHub App \
             settings, or check the project identifier",
            app.label
        );
        repo_outcome(&response, repo, &who, not_found)
    }

    /// Finds the installation and returns it with an installation token, from the caches when
    /// they are fresh.
    async fn authorize_app(
        &self,
        app: &AppCredentials,
        repo: &RepoName,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<(u64, SecretToken), Failure> {
        let installation_id = match app.installation_id {
            Some(id) => id,
            None => {
                self.tokens
                    .installation_id(self, app, repo, secrets, latency)
                    .await?
            }
        };
        let token = self
            .tokens
            .installation_token(self, app, installation_id, secrets, latency)
            .await?;
        secrets.add(token.expose());
        Ok((installation_id, token))
    }

    async fn warm_up_one(&self, app: &AppCredentials, repo: &RepoName, project_key: &str) {
        let secrets = Secrets::default();
        secrets.add(app.private_key());
        let latency = Latency::default();
        if let Err(Failure(message)) = self.authorize_app(app, repo, &secrets, &latency).await {
            tracing::debug!(
                project = %project_key,
                error = %secrets.scrub(&message),
                "GitHub token warm-up failed; the next check reports the cause"
            );
        }
    }
}

/// Reads the response to `GET /repos/{owner}/{repo}`.
fn repo_outcome(
    response: &PlatformResponse,
    repo: &RepoName,
    who: &str,
    not_found: String,
) -> Result<String, Failure> {
    let call = format!("GET /repos/{repo}");
    if let Some(message) = rate_limit_message(response, who) {
        return Err(Failure(message));
    }
    match response.status {
        StatusCode::OK => {
            let body: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
            if body
                .as_ref()
                .and_then(|body| body.get("full_name"))
                .is_none()
            {
                return Err(Failure(format!(
                    "GitHub returned 200 for {call} without repository JSON ({}); check that the \
                     GitHub API URL points at the REST API (https://HOST/api/v3 on GitHub \
                     Enterprise Server)",
                    describe_content_type(response)
                )));
            }
            Ok(format!("{who} can read {repo}"))
        }
        StatusCode::NOT_FOUND => Err(Failure(not_found)),
        StatusCode::FORBIDDEN => Err(Failure(format!(
            "GitHub denied {who} access to {repo} (403{}); check the permissions granted to the \
             credentials and any organization SSO or IP allow-list rules",
            status_detail(response)
        ))),
        status if status.is_server_error() => Err(Failure(server_error_message(response, &call))),
        _ => Err(Failure(unexpected_message(response, &call))),
    }
}

fn describe_content_type(response: &PlatformResponse) -> String {
    let content_type = response.content_type();
    if content_type.is_empty() {
        "no content type".to_owned()
    } else {
        format!("content type {content_type}")
    }
}

fn not_configured(repo: &RepoName) -> ProbeReport {
    ProbeReport::new(
        HealthStatus::NotConfigured,
        format!(
            "no GitHub credentials for {repo}: register a GitHub integration (authType app or \
             pat) for the project or as the global default, or configure the built-in app with \
             GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY"
        ),
        None,
    )
}

#[async_trait]
impl PlatformProbe for GithubProbe {
    fn platform(&self) -> Platform {
        Platform::Github
    }

    async fn check(&self, target: &ProbeTarget) -> ProbeReport {
        let secrets = Secrets::default();
        let latency = Latency::default();
        let mut report = self.inner.check(target, &secrets, &latency).await;
        report.message = secrets.scrub(&report.message);
        tracing::debug!(
            project = %target.project.identifier,
            status = ?report.status,
            latency_ms = report.latency_ms,
            "GitHub probe finished"
        );
        report
    }

    async fn warm_up(&self, targets: Vec<ProbeTarget>) {
        let mut jobs = Vec::new();
        for target in targets {
            let auth = resolve_auth(target.integration.as_ref(), self.inner.builtin_app.as_ref());
            let (Ok(Some(GithubAuth::App(app))), Ok(repo)) =
                (auth, RepoName::parse(&target.project.identifier))
            else {
                continue;
            };
            let project_key = target.project.key();
            let first = self.inner.warmup.begin(&project_key);
            jobs.push((app, repo, project_key, first));
        }
        if jobs.is_empty() {
            return;
        }

        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            futures::stream::iter(jobs)
                .for_each_concurrent(WARMUP_CONCURRENCY, |(app, repo, project_key, first)| {
                    let inner = Arc::clone(&inner);
                    async move {
                        let _finish = first.then(|| FinishWarmup {
                            inner: Arc::clone(&inner),
                            project_key: project_key.clone(),
                        });
                        inner.warm_up_one(&app, &repo, &project_key).await;
                    }
                })
                .await;
        });
    }
}

/// Ends a project's first warm-up when dropped, so a panicking or cancelled warm-up never
/// leaves the project reported as initializing.
struct FinishWarmup {
    inner: Arc<GithubInner>,
    project_key: String,
}

impl Drop for FinishWarmup {
    fn drop(&mut self) {
        self.inner.warmup.finish(&self.project_key);
    }
}
