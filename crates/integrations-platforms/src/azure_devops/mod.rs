//! Health probe for Azure DevOps: an Entra service principal token or a PAT, then
//! `GET {organization_url}/_apis/connectionData`.

mod entra;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use integrations_core::{
    AuthType, HealthStatus, Platform, PlatformProbe, ProbeReport, ProbeTarget, Provider,
    ResolvedIntegration,
};
use reqwest::StatusCode;
use url::Url;
use zeroize::Zeroizing;

use crate::config::{ConfigError, PlatformsConfig, DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT};
use crate::guard::HostPolicy;
use crate::http::{ClientBuildError, Latency, PlatformResponse, ProbeClient};
use crate::redact::{quote_platform_text, Secrets};
use crate::token::{Failure, SecretToken};
use crate::warmup::WarmupTracker;

use self::entra::{EntraTokens, ServicePrincipal};

/// Public Entra and Azure DevOps hosts.
const PUBLIC_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "dev.azure.com",
    "*.visualstudio.com",
];

/// `connectionData` exists only as a preview API, so the version is pinned to one preview.
const CONNECTION_DATA_API_VERSION: &str = "7.1-preview.1";

/// Warm-up requests tokens for this many targets at a time.
const WARMUP_CONCURRENCY: usize = 8;

/// Configuration of an [`AzureDevopsProbe`].
#[derive(Debug, Clone)]
pub struct AzureDevopsProbeConfig {
    /// Microsoft Entra ID authority, such as `https://login.microsoftonline.com`.
    pub entra_authority: Url,
    /// Extra hosts the probe may reach; see [`PlatformsConfig::allowed_hosts`]. An Azure DevOps
    /// Server (on-premises) organization URL must be listed here.
    pub allowed_hosts: Vec<String>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for AzureDevopsProbeConfig {
    fn default() -> Self {
        PlatformsConfig::default().azure_devops()
    }
}

impl AzureDevopsProbeConfig {
    /// Creates a configuration that gets tokens from `entra_authority`.
    pub fn new(entra_authority: Url) -> Self {
        Self {
            entra_authority,
            allowed_hosts: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
        }
    }

    /// Reads the configuration from the environment; see [`PlatformsConfig::from_env`].
    pub fn from_env() -> Result<Self, ConfigError> {
        PlatformsConfig::from_env().map(|config| config.azure_devops())
    }

    /// Sets the extra hosts the probe may reach.
    pub fn with_allowed_hosts(
        mut self,
        hosts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the timeout of one request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

impl PlatformsConfig {
    /// Returns the Azure DevOps part of this configuration.
    pub fn azure_devops(&self) -> AzureDevopsProbeConfig {
        AzureDevopsProbeConfig {
            entra_authority: self.entra_authority.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            request_timeout: self.request_timeout,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// Checks that a project's Azure DevOps credentials are accepted by its organization.
///
/// A service principal gets a client-credentials token for the Azure DevOps scope from Entra,
/// cached per authority, tenant and client until shortly before it expires. A PAT is sent with
/// Basic authentication and an empty user name. The probe then reads `connectionData` with
/// `X-TFS-FedAuthRedirect: Suppress`; a 203, a redirect or a body that is not JSON is unhealthy.
#[derive(Clone)]
pub struct AzureDevopsProbe {
    inner: Arc<AzureInner>,
}

struct AzureInner {
    authority: Url,
    client: ProbeClient,
    tokens: EntraTokens,
    warmup: WarmupTracker,
}

impl fmt::Debug for AzureDevopsProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureDevopsProbe")
            .field("entra_authority", &self.inner.authority.as_str())
            .finish_non_exhaustive()
    }
}

impl AzureDevopsProbe {
    /// Creates a probe.
    pub fn new(config: AzureDevopsProbeConfig) -> Result<Self, ClientBuildError> {
        let policy = HostPolicy::new("Azure DevOps", PUBLIC_HOSTS, &config.allowed_hosts)
            .allow_origin_of(&config.entra_authority);
        let client = ProbeClient::new(policy, config.request_timeout, &config.user_agent)?;
        Ok(Self {
            inner: Arc::new(AzureInner {
                authority: config.entra_authority,
                client,
                tokens: EntraTokens::default(),
                warmup: WarmupTracker::default(),
            }),
        })
    }
}

/// Credentials of one Azure DevOps integration. It has no `Debug` because it contains secrets.
struct DevopsCredentials {
    organization_url: Url,
    auth: DevopsAuth,
}

enum DevopsAuth {
    ServicePrincipal {
        tenant_id: String,
        client_id: String,
        client_secret: Zeroizing<String>,
    },
    Pat {
        token: Zeroizing<String>,
        integration: uuid::Uuid,
    },
}

impl DevopsAuth {
    fn principal(&self) -> Option<ServicePrincipal<'_>> {
        match self {
            DevopsAuth::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => Some(ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            }),
            DevopsAuth::Pat { .. } => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            DevopsAuth::ServicePrincipal { client_id, .. } => {
                format!("service principal {}", quote_platform_text(client_id))
            }
            DevopsAuth::Pat { integration, .. } => format!("the PAT of integration {integration}"),
        }
    }
}

fn required<'a>(resolved: &'a ResolvedIntegration, name: &str) -> Result<&'a str, String> {
    resolved
        .credentials
        .expose(name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| {
            format!(
                "credentials.{name} is missing from integration {}; update the integration",
                resolved.integration.id
            )
        })
}

fn resolve_credentials(resolved: &ResolvedIntegration) -> Result<DevopsCredentials, String> {
    let metadata = &resolved.integration;
    if metadata.provider != Provider::AzureDevops {
        return Err(format!(
            "integration {} resolved for this project is a {} integration, not an Azure DevOps one",
            metadata.id, metadata.provider
        ));
    }
    let organization_url = Url::parse(required(resolved, "organization_url")?).map_err(|_| {
        format!(
            "credentials.organization_url of integration {} is not an absolute URL such as \
             https://dev.azure.com/ORGANIZATION",
            metadata.id
        )
    })?;
    let auth = match metadata.auth_type {
        AuthType::ServicePrincipal => DevopsAuth::ServicePrincipal {
            tenant_id: required(resolved, "tenant_id")?.to_owned(),
            client_id: required(resolved, "client_id")?.to_owned(),
            client_secret: Zeroizing::new(required(resolved, "client_secret")?.to_owned()),
        },
        AuthType::Pat => DevopsAuth::Pat {
            token: Zeroizing::new(required(resolved, "token")?.to_owned()),
            integration: metadata.id,
        },
        other => {
            return Err(format!(
                "integration {} uses authType {other}, which the health check cannot use; \
                 register an Azure DevOps integration with authType service_principal or pat",
                metadata.id
            ))
        }
    };
    Ok(DevopsCredentials {
        organization_url,
        auth,
    })
}

/// `{organization_url}/_apis/connectionData?api-version=…`.
fn connection_data_url(organization_url: &Url) -> Url {
    let mut url = organization_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["_apis", "connectionData"]);
    }
    url.query_pairs_mut()
        .append_pair("api-version", CONNECTION_DATA_API_VERSION);
    url
}

fn organization_text(organization_url: &Url) -> String {
    let mut url = organization_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.as_str().trim_end_matches('/').to_owned()
}

impl AzureInner {
    async fn check(
        &self,
        target: &ProbeTarget,
        secrets: &Secrets,
        latency: &Latency,
    ) -> ProbeReport {
        let Some(resolved) = target.integration.as_ref() else {
            return ProbeReport::new(
                HealthStatus::NotConfigured,
                format!(
                    "no Azure DevOps integration for {}: register one (authType \
                     service_principal or pat) for the project or as the global default",
                    quote_platform_text(&target.project.identifier)
                ),
                None,
            );
        };
        let credentials = match resolve_credentials(resolved) {
            Ok(credentials) => credentials,
            Err(message) => return ProbeReport::new(HealthStatus::Unhealthy, message, None),
        };
        if self.warmup.is_initializing(&target.project.key()) {
            return ProbeReport::new(
                HealthStatus::Initializing,
                "the Entra token cache is still warming up after start; retry in a few seconds",
                None,
            );
        }

        match self.check_credentials(&credentials, secrets, latency).await {
            Ok(message) => ProbeReport::new(HealthStatus::Healthy, message, latency.millis()),
            Err(Failure(message)) => {
                ProbeReport::new(HealthStatus::Unhealthy, message, latency.millis())
            }
        }
    }

    async fn check_credentials(
        &self,
        credentials: &DevopsCredentials,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<String, Failure> {
        let url = connection_data_url(&credentials.organization_url);
        // Checked before any token request, so no token is fetched for a forbidden host.
        self.client.check_url(&url)?;

        let response = match &credentials.auth {
            DevopsAuth::Pat { token, .. } => {
                secrets.add(token);
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!(":{}", token.as_str()));
                secrets.add(&basic);
                let header = Zeroizing::new(format!("Basic {basic}"));
                self.connection_data(&url, &header, latency).await?
            }
            DevopsAuth::ServicePrincipal { client_secret, .. } => {
                secrets.add(client_secret);
                self.connection_data_with_principal(credentials, &url, secrets, latency)
                    .await?
            }
        };
        connection_data_outcome(&response, credentials)
    }

    async fn connection_data_with_principal(
        &self,
        credentials: &DevopsCredentials,
        url: &Url,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<PlatformResponse, Failure> {
        let principal = credentials
            .auth
            .principal()
            .expect("called for service principals only");
        let token = self.entra_token(&principal, secrets, latency).await?;
        let header = Zeroizing::new(format!("Bearer {}", token.expose()));
        let response = self.connection_data(url, &header, latency).await?;
        if response.status != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }

        // A cached token may have been revoked; retry once with a fresh one.
        self.tokens
            .forget(&self.authority, &principal, &token)
            .await;
        let fresh = self.entra_token(&principal, secrets, latency).await?;
        if fresh == token {
            return Ok(response);
        }
        let header = Zeroizing::new(format!("Bearer {}", fresh.expose()));
        Ok(self.connection_data(url, &header, latency).await?)
    }

    async fn entra_token(
        &self,
        principal: &ServicePrincipal<'_>,
        secrets: &Secrets,
        latency: &Latency,
    ) -> Result<SecretToken, Failure> {
        let token = self
            .tokens
            .token(&self.client, &self.authority, principal, latency)
            .await?;
        secrets.add(token.expose());
        Ok(token)
    }

    async fn connection_data(
        &self,
        url: &Url,
        authorization: &str,
        latency: &Latency,
    ) -> Result<PlatformResponse, crate::http::CallError> {
        let request = self
            .client
            .inner()
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, authorization)
            // Without it, Azure DevOps responds to unauthenticated requests with a sign-in page.
            .header("X-TFS-FedAuthRedirect", "Suppress");
        self.client.send(url, request, latency).await
    }

    async fn warm_up_one(&self, credentials: &DevopsCredentials, project_key: &str) {
        let Some(principal) = credentials.auth.principal() else {
            return;
        };
        let latency = Latency::default();
        if let Err(Failure(message)) = self
            .tokens
            .token(&self.client, &self.authority, &principal, &latency)
            .await
        {
            let secrets = Secrets::default();
            secrets.add(principal.client_secret);
            tracing::debug!(
                project = %project_key,
                error = %secrets.scrub(&message),
                "Entra token warm-up failed; the next check reports the cause"
            );
        }
    }
}

/// Reads the response to `connectionData`.
fn connection_data_outcome(
    response: &PlatformResponse,
    credentials: &DevopsCredentials,
) -> Result<String, Failure> {
    let organization = organization_text(&credentials.organization_url);
    let who = credentials.auth.describe();
    let detail = devops_message(response)
        .map(|message| format!(": {message}"))
        .unwrap_or_default();
    match response.status {
        StatusCode::OK => read_connection_data(response, &organization, &who),
        StatusCode::NON_AUTHORITATIVE_INFORMATION => Err(Failure(format!(
            "{organization} returned 203 Non-Authoritative Information with a sign-in page \
             instead of API data, so it did not accept {who}; check the credentials and that \
             organization_url is the organization URL"
        ))),
        StatusCode::UNAUTHORIZED => Err(Failure(match &credentials.auth {
            DevopsAuth::ServicePrincipal { .. } => format!(
                "{organization} rejected {who} (401{detail}); add the service principal to the \
                 organization as a user (Organization settings > Users)"
            ),
            DevopsAuth::Pat { .. } => format!(
                "{organization} rejected {who} (401{detail}); the token is invalid, expired or \
                 issued for another organization, so create a new one and update the integration"
            ),
        })),
        StatusCode::FORBIDDEN => Err(Failure(format!(
            "{organization} denied {who} access (403{detail}); check the access level and \
             conditional access policies of the identity"
        ))),
        StatusCode::NOT_FOUND => Err(Failure(format!(
            "{organization} not found (404{detail}); check organization_url, for example \
             https://dev.azure.com/ORGANIZATION"
        ))),
        StatusCode::TOO_MANY_REQUESTS => {
            let retry = response
                .retry_after_secs()
                .map(|seconds| format!("; retry after {seconds} s (retry-after)"))
                .unwrap_or_default();
            let reset = response
                .header("x-ratelimit-reset")
                .and_then(|value| value.trim().parse::<i64>().ok())
                .and_then(|seconds| chrono::DateTime::<chrono::Utc>::from_timestamp(seconds, 0))
                .map(|reset| {
                    let reset = reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    format!("; the limit resets at {reset} (x-ratelimit-reset)")
                })
                .unwrap_or_default();
            Err(Failure(format!(
                "Azure DevOps rate limit exceeded for {who} at {organization}{retry}{reset}"
            )))
        }
        status if status.is_server_error() => Err(Failure(format!(
            "{organization} returned {status}{detail}; Azure DevOps or the network path to it is \
             failing, retry later"
        ))),
        status => Err(Failure(format!(
            "{organization} returned {status} for connectionData{detail}"
        ))),
    }
}

fn read_connection_data(
    response: &PlatformResponse,
    organization: &str,
    who: &str,
) -> Result<String, Failure> {
    let not_api = || {
        let content_type = response.content_type();
        let content_type = if content_type.is_empty() {
            "no content type".to_owned()
        } else {
            content_type
        };
        Failure(format!(
            "{organization} returned 200 with {content_type} instead of connectionData JSON; \
             check that organization_url is the organization URL, for example \
             https://dev.azure.com/ORGANIZATION"
        ))
    };
    let body: serde_json::Value = serde_json::from_slice(&response.body).map_err(|_| not_api())?;
    let user = body.get("authenticatedUser").ok_or_else(not_api)?;
    // NOTE: the descriptors of anonymous and public-access identities are taken from observed
    // responses of Azure DevOps Services, not from documentation.
    let descriptor = user
        .get("descriptor")
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if user.get("id").is_none()
        || descriptor.contains("anonymous")
        || descriptor.contains("unauthenticated")
        || descriptor.contains("publicaccess")
    {
        return Err(Failure(format!(
            "{organization} returned connectionData for an anonymous user, so it did not accept \
             {who}; check the credentials"
        )));
    }
    Ok(format!("{organization} accepted {who}"))
}

/// Returns the `message` of an Azure DevOps JSON error, quoted.
fn devops_message(response: &PlatformResponse) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    Some(quote_platform_text(body.get("message")?.as_str()?))
}

#[async_trait]
impl PlatformProbe for AzureDevopsProbe {
    fn platform(&self) -> Platform {
        Platform::AzureDevops
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
            "Azure DevOps probe finished"
        );
        report
    }

    async fn warm_up(&self, targets: Vec<ProbeTarget>) {
        let mut jobs = Vec::new();
        for target in targets {
            let Some(Ok(credentials)) = target.integration.as_ref().map(resolve_credentials) else {
                continue;
            };
            if credentials.auth.principal().is_none() {
                continue;
            }
            let project_key = target.project.key();
            let first = self.inner.warmup.begin(&project_key);
            jobs.push((credentials, project_key, first));
        }
        if jobs.is_empty() {
            return;
        }

        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            futures::stream::iter(jobs)
                .for_each_concurrent(WARMUP_CONCURRENCY, |(credentials, project_key, first)| {
                    let inner = Arc::clone(&inner);
                    async move {
                        let _finish = first.then(|| FinishWarmup {
                            inner: Arc::clone(&inner),
                            project_key: project_key.clone(),
                        });
                        inner.warm_up_one(&credentials, &project_key).await;
                    }
                })
                .await;
        });
    }
}

/// Ends a project's first warm-up when dropped, even if the warm-up panicked.
struct FinishWarmup {
    inner: Arc<AzureInner>,
    project_key: String,
}

impl Drop for FinishWarmup {
    fn drop(&mut self) {
        self.inner.warmup.finish(&self.project_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_data_url_built() {
        let url = connection_data_url(&Url::parse("https://dev.azure.com/contoso/").unwrap());
        assert_eq!(
            url.as_str(),
            "https://dev.azure.com/contoso/_apis/connectionData?api-version=7.1-preview.1"
        );
    }

    #[test]
    fn visualstudio_url_built() {
        let url = connection_data_url(&Url::parse("https://contoso.visualstudio.com").unwrap());
        assert_eq!(url.path(), "/_apis/connectionData");
    }
}
