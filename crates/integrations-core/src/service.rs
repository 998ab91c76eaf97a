//! [`IntegrationService`]: every rule of the credential store, roles included.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome, AuditSink};
use crate::audit_throttle::{AuditThrottle, DEFAULT_REPEAT_WINDOW};
use crate::cipher::{CipherError, CredentialCipher};
use crate::credentials::Credentials;
use crate::error::ServiceError;
use crate::model::{project_key, Actor, AuthType, Integration, Platform, Project, Provider, Role};
use crate::probe::{HealthStatus, PlatformProbe, ProbeReport, ProbeTarget, ResolvedIntegration};
use crate::store::{
    credentials_associated_data, AuditQuery, IntegrationChanges, IntegrationQuery,
    IntegrationStore, ProjectDeletion, StoreError, StoredIntegration,
};
use crate::validation::{normalize_config, validate_credentials, UrlPolicy};

mod audit_log;

pub use audit_log::{RequestInfo, MAX_AUDIT_PAGE};

/// Longest accepted project identifier, in characters.
pub const MAX_IDENTIFIER_LEN: usize = 512;

/// Longest accepted remote URL, in characters.
pub const MAX_REMOTE_URL_LEN: usize = 2048;

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// URL rules for credentials and configuration.
    pub urls: UrlPolicy,
    /// Maximum number of platform probes running at once during a health check.
    pub health_concurrency: usize,
    /// Time after which one probe is reported as timed out.
    pub probe_timeout: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            urls: UrlPolicy::default(),
            health_concurrency: 32,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// A request to create an integration.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    /// Provider.
    pub provider: Provider,
    /// Authentication type.
    pub auth_type: AuthType,
    /// Plaintext credentials; sealed before they reach the store.
    pub credentials: Credentials,
    /// Project identifiers for a project-scoped integration.
    pub projects: Option<Vec<String>>,
    /// Whether the integration is global.
    pub is_global: Option<bool>,
    /// Whether it becomes the default of its category.
    pub is_default: bool,
    /// Provider-specific configuration.
    pub config: Map<String, Value>,
}

/// A request to change an integration. `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct IntegrationUpdate {
    /// Replacement credentials.
    pub credentials: Option<Credentials>,
    /// Replacement configuration.
    pub config: Option<Map<String, Value>>,
    /// New default flag.
    pub is_default: Option<bool>,
}

/// Filters of a credentials read.
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    /// Only this provider.
    pub provider: Option<Provider>,
    /// Resolve for this project identifier.
    pub project: Option<String>,
}

/// One integration with its decrypted credentials, as returned by a credentials read.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    /// Metadata.
    pub integration: Integration,
    /// Decrypted credentials.
    pub credentials: Credentials,
}

/// A request to register a project.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// `owner/repo` on GitHub, `org/project/repo` on Azure DevOps.
    pub identifier: String,
    /// Git remote URL.
    pub remote_url: String,
    /// Platform; inferred from the remote URL when absent.
    pub platform: Option<Platform>,
}

/// Overall result of a platform health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallHealth {
    /// Every checked project is healthy.
    Healthy,
    /// Some projects are healthy, others are not.
    Degraded,
    /// No checked project is healthy.
    Unhealthy,
}

/// Health of one project's platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlatformHealth {
    /// `github`, `azure-devops`, or `none` for a platform without a health check.
    pub provider: String,
    /// Project identifier as registered.
    pub project: String,
    /// Status.
    pub status: HealthStatus,
    /// Explanation for the operator, with the fix when the check failed.
    pub message: String,
    /// Round-trip time of the platform calls, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<f64>,
}

/// Result of a platform health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Overall status.
    pub status: OverallHealth,
    /// When the check ran, ISO 8601.
    pub timestamp: DateTime<Utc>,
    /// One entry per checked project.
    pub platforms: Vec<PlatformHealth>,
}

/// The credential store's rules over a store, a cipher, an audit sink and platform probes.
///
/// Every operation takes the calling [`Actor`] and checks its role first, so an embedding program
/// that skips HTTP still gets the server's access rules.
#[derive(Clone)]
pub struct IntegrationService {
    pub(crate) store: Arc<dyn IntegrationStore>,
    cipher: Arc<dyn CredentialCipher>,
    audit: Arc<dyn AuditSink>,
    probes: Vec<Arc<dyn PlatformProbe>>,
    settings: ServiceSettings,
    /// Writes failure events (401, 403, denied reads) through `audit`, folding repeats.
    throttle: Arc<AuditThrottle>,
}

impl fmt::Debug for IntegrationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationService")
            .field("store", &self.store)
            .field("cipher", &self.cipher)
            .field("probes", &self.probes)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IntegrationService {
    /// Creates a service. `audit` receives credential-read events; changes are audited by the
    /// store in the transaction that makes them.
    pub fn new(
        store: Arc<dyn IntegrationStore>,
        cipher: Arc<dyn CredentialCipher>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        let throttle = Arc::new(AuditThrottle::new(audit.clone(), DEFAULT_REPEAT_WINDOW));
        Self {
            store,
            cipher,
            audit,
            probes: Vec::new(),
            settings: ServiceSettings::default(),
            throttle,
        }
    }

    /// Adds a platform probe, replacing any earlier probe of the same platform.
    pub fn with_probe(mut self, probe: Arc<dyn PlatformProbe>) -> Self {
        self.probes
            .retain(|existing| existing.platform() != probe.platform());
        self.probes.push(probe);
        self
    }

    /// Replaces the settings.
    pub fn with_settings(mut self, settings: ServiceSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Returns the settings.
    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn IntegrationStore> {
        &self.store
    }

    /// Checks that the database responds and that the cipher can seal, for load balancer
    /// probes. Calls no external platform.
    pub async fn readiness(&self) -> Result<(), ServiceError> {
        self.store.ping().await.map_err(ServiceError::from)?;
        self.cipher.check_ready().await.map_err(ServiceError::from)
    }

    // ----- integrations -----

    /// Lists integration metadata, optionally for one provider. Owner only.
    pub async fn list_integrations(
        &self,
        actor: &Actor,
        provider: Option<Provider>,
    ) -> Result<Vec<Integration>, ServiceError> {
        require_owner(actor)?;
        let query = IntegrationQuery {
            provider,
            ..IntegrationQuery::default()
        };
        let rows = self.store.list_integrations(&query).await?;
        Ok(rows.into_iter().map(|row| row.integration).collect())
    }

    /// Lists the default integration of every category. Owner only.
    pub async fn list_defaults(&self, actor: &Actor) -> Result<Vec<Integration>, ServiceError> {
        require_owner(actor)?;
        let query = IntegrationQuery {
            default_only: true,
            ..IntegrationQuery::default()
        };
        let rows = self.store.list_integrations(&query).await?;
        Ok(rows.into_iter().map(|row| row.integration).collect())
    }

    /// Validates, seals and stores a new integration.
    ///
    /// Owners may create any integration; members only project-scoped, non-default ones;
    /// application tokens are rejected as unauthenticated, as the sfp API documents.
    pub async fn create_integration(
        &self,
        actor: &Actor,
        request: NewIntegration,
    ) -> Result<Integration, ServiceError> {
        if actor.role == Role::Application {
            return Err(ServiceError::Unauthenticated(
                "Application tokens are not permitted to create integrations; use an owner or member token"
                    .into(),
            ));
        }

        let scope = resolve_scope(request.is_global, request.projects.as_deref())?;
        let is_global = matches!(scope, Scope::Global);
        if actor.role == Role::Member && (is_global || request.is_default) {
            return Err(ServiceError::Forbidden(
                "Members may create project-scoped integrations only; global and default integrations require role: owner"
                    .into(),
            ));
        }
        if request.is_default && !is_global {
            return Err(ServiceError::invalid(
                "isDefault",
                "Only global integrations can be default; set isGlobal to true",
            ));
        }
        validate_credentials(
            request.provider,
            request.auth_type,
            &request.credentials,
            &self.settings.urls,
        )?;
        let config = normalize_config(request.provider, request.config, &self.settings.urls)?;

        let project_keys = match &scope {
            Scope::Global => Vec::new(),
            Scope::Projects(identifiers) => self.registered_project_keys(identifiers).await?,
        };

        let now = Utc::now();
        let id = Uuid::new_v4();
        let sealed = self
            .seal(
                id,
                request.provider,
                request.auth_type,
                &request.credentials,
            )
            .await?;
        let integration = Integration {
            id,
            provider: request.provider,
            auth_type: request.auth_type,
            is_global,
            is_default: request.is_default,
            projects: Vec::new(),
            config,
            credential_fields: request.credentials.field_names(),
            created_at: now,
            updated_at: now,
        };
        let stored = StoredIntegration {
            integration,
            sealed_credentials: sealed,
        };
        let audit = AuditEvent::new(
            actor,
            AuditAction::IntegrationCreated,
            AuditOutcome::Success,
        )
        .with_integrations([id])
        .with_filter("provider", request.provider.as_str())
        .with_filter("authType", request.auth_type.as_str());
        self.store
            .insert_integration(&stored, &project_keys, &audit)
            .await?;

        let created = self.load(id).await?;
        tracing::info!(
            integration_id = %id,
            provider = %created.provider,
            is_global,
            is_default = created.is_default,
            actor = %actor.subject,
            "integration created"
        );
        Ok(created)
    }

    /// Replaces credentials or configuration, or changes the default flag. Owner only.
    pub async fn update_integration(
        &self,
        actor: &Actor,
        id: Uuid,
        update: IntegrationUpdate,
    ) -> Result<Integration, ServiceError> {
        require_owner(actor)?;
        let current = self.load(id).await?;
        if update.is_default == Some(true) && !current.is_global {
            return Err(ServiceError::invalid(
                "isDefault",
                "Only global integrations can be default; this integration is project-scoped",
            ));
        }

        let mut changes = IntegrationChanges {
            is_default: update.is_default,
            updated_at: Some(Utc::now()),
            ..IntegrationChanges::default()
        };
        if let Some(credentials) = &update.credentials {
            validate_credentials(
                current.provider,
                current.auth_type,
                credentials,
                &self.settings.urls,
            )?;
            let sealed = self
                .seal(id, current.provider, current.auth_type, credentials)
                .await?;
            changes.sealed_credentials = Some((sealed, credentials.field_names()));
        }
        if let Some(config) = update.config {
            changes.config = Some(normalize_config(
                current.provider,
                config,
                &self.settings.urls,
            )?);
        }

        let mut audit = AuditEvent::new(
            actor,
            AuditAction::IntegrationUpdated,
            AuditOutcome::Success,
        )
        .with_integrations([id]);
        for (name, changed) in [
            ("credentials", changes.sealed_credentials.is_some()),
            ("config", changes.config.is_some()),
        ] {
            if changed {
                audit = audit.with_filter(name, "replaced");
            }
        }
        if let Some(is_default) = changes.is_default {
            audit = audit.with_filter("isDefault", is_default.to_string());
        }

        let updated = self
            .store
            .update_integration(id, &changes, &audit)
            .await?
            .ok_or_else(integration_not_found)?;
        tracing::info!(integration_id = %id, actor = %actor.subject, "integration updated");
        Ok(updated.integration)
    }

    /// Deletes an integration, its sealed credentials and its project scope. Owner only.
    pub async fn delete_integration(&self, actor: &Actor, id: Uuid) -> Result<(), ServiceError> {
        require_owner(actor)?;
        let audit = AuditEvent::new(
            actor,
            AuditAction::IntegrationDeleted,
            AuditOutcome::Success,
        )
        .with_integrations([id]);
        if !self.store.delete_integration(id, &audit).await? {
            return Err(integration_not_found());
        }
        tracing::info!(integration_id = %id, actor = %actor.subject, "integration deleted");
        Ok(())
    }

    /// Resolves and decrypts credentials. Every call is audited; when the audit write fails, no
    /// credentials are returned.
    ///
    /// With a project: its project-scoped integrations if it has any, otherwise the global ones,
    /// default first. Without a project: every integration of the provider, default first.
    /// Owners may read without filters; application tokens need `provider` or `project`.
    ///
    /// A denied read is audited through the failure throttle, so repeats within its window
    /// are counted in one event.
    pub async fn read_credentials(
        &self,
        actor: &Actor,
        filter: CredentialFilter,
    ) -> Result<Vec<CredentialRecord>, ServiceError> {
        self.read_credentials_for(actor, filter, None).await
    }

    /// Reads credentials as [`Self::read_credentials`] does, adding the HTTP method and route
    /// of `request` to a denied read's audit event.
    pub async fn read_credentials_for(
        &self,
        actor: &Actor,
        filter: CredentialFilter,
        request: Option<&RequestInfo>,
    ) -> Result<Vec<CredentialRecord>, ServiceError> {
        let mut audit = AuditEvent::new(actor, AuditAction::CredentialsRead, AuditOutcome::Success);
        if let Some(provider) = filter.provider {
            audit = audit.with_filter("provider", provider.as_str());
        }
        if let Some(project) = &filter.project {
            audit = audit.with_filter("project", project.clone());
        }

        if let Err(denied) = check_credentials_access(actor, &filter) {
            audit.outcome = AuditOutcome::Denied;
            if let Some(request) = request {
                audit = request.add_to(audit);
            }
            self.record_failure(audit).await;
            return Err(denied);
        }

        let rows = match self.resolve_for_read(&filter).await {
            Ok(rows) => rows,
            Err(ServiceError::NotFound(message)) => {
                audit.outcome = AuditOutcome::NotFound;
                self.record_read(&audit).await?;
                return Err(ServiceError::NotFound(message));
            }
            Err(error) => return Err(error),
        };

        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let credentials = self.open(&row).await?;
            records.push(CredentialRecord {
                integration: row.integration,
                credentials,
            });
        }
        audit = audit.with_integrations(records.iter().map(|record| record.integration.id));
        self.record_read(&audit).await?;
        tracing::info!(
            actor = %actor.subject,
            role = %actor.role,
            count = records.len(),
            "credentials read"
        );
        Ok(records)
    }

    async fn record_read(&self, audit: &AuditEvent) -> Result<(), ServiceError> {
        self.audit.record(audit).await.map_err(|error| {
            tracing::error!(error = %error, "credential read rejected: the audit event could not be written");
            ServiceError::Unavailable(
                "Audit log unavailable; credentials are not returned without an audit record"
                    .into(),
            )
        })
    }

    async fn resolve_for_read(
        &self,
        filter: &CredentialFilter,
    ) -> Result<Vec<StoredIntegration>, ServiceError> {
        let Some(identifier) = &filter.project else {
            let query = IntegrationQuery {
                provider: filter.provider,
                ..IntegrationQuery::default()
            };
            let rows = self.store.list_integrations(&query).await?;
            if rows.is_empty() {
                let provider = filter.provider.map(Provider::as_str).unwrap_or("any");
                return Err(ServiceError::NotFound(format!(
                    "No integration found for provider={provider}"
                )));
            }
            return Ok(rows);
        };

        let project = self
            .store
            .find_project(&project_key(identifier))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("Project '{identifier}' not found")))?;
        let scoped = self
            .store
            .list_integrations(&IntegrationQuery {
                provider: filter.provider,
                project_key: Some(project.key()),
                ..IntegrationQuery::default()
            })
            .await?;
        if !scoped.is_empty() {
            return Ok(scoped);
        }
        let global = self
            .store
            .list_integrations(&IntegrationQuery {
                provider: filter.provider,
                global_only: true,
                ..IntegrationQuery::default()
            })
            .await?;
        if global.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "No integration found for project={identifier}"
            )));
        }
        Ok(global)
    }

    // ----- projects -----

    /// Registers a project. Owner only; a duplicate identifier is a conflict.
    pub async fn create_project(
        &self,
        actor: &Actor,
        request: NewProject,
    ) -> Result<Project, ServiceError> {
        require_owner(actor)?;
        let identifier = request.identifier.trim().to_owned();
        validate_identifier(&identifier)?;
        let remote_url = request.remote_url.trim().to_owned();
        validate_remote_url(&remote_url)?;
        let platform = request
            .platform
            .unwrap_or_else(|| Platform::infer_from_remote_url(&remote_url));
        validate_identifier_shape(&identifier, platform)?;

        let project = Project {
            identifier: identifier.clone(),
            remote_url,
            platform,
            created_at: Utc::now(),
        };
        let audit = AuditEvent::new(actor, AuditAction::ProjectCreated, AuditOutcome::Success)
            .with_filter("project", identifier.clone())
            .with_filter("platform", platform.as_str());
        self.store.insert_project(&project, &audit).await?;
        tracing::info!(project = %identifier, platform = %platform, actor = %actor.subject, "project registered");
        Ok(project)
    }

    /// Lists every registered project. Any role.
    pub async fn list_projects(&self, _actor: &Actor) -> Result<Vec<Project>, ServiceError> {
        Ok(self.store.list_projects().await?)
    }

    /// Finds a project by identifier, compared case-insensitively. Any role.
    pub async fn find_project(
        &self,
        _actor: &Actor,
        identifier: &str,
    ) -> Result<Project, ServiceError> {
        self.store
            .find_project(&project_key(identifier))
            .await?
            .ok_or_else(|| project_not_found(identifier))
    }

    /// Deletes a project. Owner only. A project that some integration is scoped to alone is a
    /// conflict that names those integrations, so no credential is dropped silently.
    pub async fn delete_project(
        &self,
        actor: &Actor,
        identifier: &str,
    ) -> Result<(), ServiceError> {
        require_owner(actor)?;
        let audit = AuditEvent::new(actor, AuditAction::ProjectDeleted, AuditOutcome::Success)
            .with_filter("project", identifier.to_owned());
        let deletion = self
            .store
            .delete_project(&project_key(identifier), &audit)
            .await
            .map_err(|error| match error {
                StoreError::ProjectInUse(ids) => {
                    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    ServiceError::Conflict(format!(
                        "Project '{}' is the only scope of integrations {}; delete them first",
                        shown(identifier),
                        ids.join(", ")
                    ))
                }
                other => ServiceError::from(other),
            })?;
        match deletion {
            ProjectDeletion::Deleted {
                detached_integrations,
            } => {
                tracing::info!(project = %identifier, detached = detached_integrations.len(), actor = %actor.subject, "project deleted");
                Ok(())
            }
            ProjectDeletion::NotFound => Err(project_not_found(identifier)),
        }
    }

    /// Lists one page of audit events, newest first, with no filter. Owner only.
    pub async fn list_audit(
        &self,
        actor: &Actor,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        let query = AuditQuery {
            offset,
            limit,
            ..AuditQuery::default()
        };
        self.search_audit(actor, query).await
    }

    // ----- platform health -----

    /// Checks each registered GitHub and Azure DevOps project's platform, or only `project`.
    /// Any role. Probes run concurrently up to the configured bound, each within the probe
    /// timeout, so one slow platform cannot stall the response.
    ///
    /// NOTE: the bound applies per call, so concurrent calls multiply the outbound requests, and
    /// a call over many unreachable projects takes about projects / bound x probe timeout.
    pub async fn platform_health(
        &self,
        _actor: &Actor,
        project: Option<&str>,
    ) -> Result<HealthReport, ServiceError> {
        let projects = match project {
            Some(identifier) => vec![self
                .store
                .find_project(&project_key(identifier))
                .await?
                .ok_or_else(|| project_not_found(identifier))?],
            None => self
                .store
                .list_projects()
                .await?
                .into_iter()
                .filter(|project| health_provider(project.platform).is_some())
                .collect(),
        };

        let mut candidates = self.load_probe_integrations().await?;
        let mut jobs = Vec::with_capacity(projects.len());
        for project in projects {
            let job = match self.resolve_for_probe(&mut candidates, &project).await {
                Ok(integration) => Ok(ProbeTarget {
                    project,
                    integration,
                }),
                // A row that cannot be opened fails its own project, not the whole report.
                Err(ServiceError::Internal(message)) => Err(PlatformHealth {
                    provider: health_provider(project.platform).unwrap_or("none").into(),
                    project: project.identifier,
                    status: HealthStatus::Unhealthy,
                    message: format!("{message}; update the integration with new credentials"),
                    latency: None,
                }),
                Err(error) => return Err(error),
            };
            jobs.push(job);
        }

        let timeout = self.settings.probe_timeout;
        let bound = self.settings.health_concurrency.max(1);
        let platforms: Vec<PlatformHealth> = stream::iter(jobs)
            .map(|job| async move {
                match job {
                    Ok(target) => self.probe_one(target, timeout).await,
                    Err(entry) => entry,
                }
            })
            .buffered(bound)
            .collect()
            .await;

        Ok(HealthReport {
            status: overall(&platforms),
            timestamp: Utc::now(),
            platforms,
        })
    }

    /// Starts filling the probes' token caches for every registered project, in the background.
    pub async fn warm_up(&self) -> Result<(), ServiceError> {
        let projects = self.store.list_projects().await?;
        let mut candidates = self.load_probe_integrations().await?;
        for probe in &self.probes {
            let mut targets = Vec::new();
            for project in projects.iter().filter(|p| p.platform == probe.platform()) {
                let integration = match self.resolve_for_probe(&mut candidates, project).await {
                    Ok(integration) => integration,
                    Err(error) => {
                        tracing::warn!(project = %project.identifier, error = %error, "skipping warm-up of a project whose credentials cannot be opened");
                        continue;
                    }
                };
                targets.push(ProbeTarget {
                    project: project.clone(),
                    integration,
                });
            }
            let probe = Arc::clone(probe);
            tokio::spawn(async move { probe.warm_up(targets).await });
        }
        Ok(())
    }

    async fn probe_one(&self, target: ProbeTarget, timeout: Duration) -> PlatformHealth {
        let identifier = target.project.identifier.clone();
        let platform = target.project.platform;
        let Some(provider) = health_provider(platform) else {
            return PlatformHealth {
                provider: "none".into(),
                project: identifier,
                status: HealthStatus::NotConfigured,
                message: format!("Platform '{platform}' has no health check; only github and azure-devops projects are checked"),
                latency: None,
            };
        };
        let Some(probe) = self
            .probes
            .iter()
            .find(|probe| probe.platform() == platform)
        else {
            return PlatformHealth {
                provider: provider.into(),
                project: identifier,
                status: HealthStatus::NotConfigured,
                message: format!("No {platform} health probe is configured on this server"),
                latency: None,
            };
        };

        let started = Instant::now();
        let report = match tokio::time::timeout(timeout, probe.check(&target)).await {
            Ok(report) => report,
            Err(_) => ProbeReport::new(
                HealthStatus::Unhealthy,
                format!(
                    "Timed out after {} ms waiting for {platform}; check network access to the platform",
                    timeout.as_millis()
                ),
                Some(started.elapsed().as_secs_f64() * 1000.0),
            ),
        };
        tracing::debug!(project = %identifier, status = ?report.status, latency_ms = ?report.latency_ms, "platform probe finished");
        PlatformHealth {
            provider: provider.into(),
            project: identifier,
            status: report.status,
            message: report.message,
            // Microsecond resolution is plenty for a round trip and keeps the JSON readable.
            latency: report.latency_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
        }
    }

    /// Loads every GitHub and Azure DevOps integration once, so that resolving a health check's
    /// credentials costs no query per project.
    async fn load_probe_integrations(&self) -> Result<ProbeIntegrations, ServiceError> {
        let mut rows = Vec::new();
        for provider in [Provider::Github, Provider::AzureDevops] {
            let query = IntegrationQuery {
                provider: Some(provider),
                ..IntegrationQuery::default()
            };
            rows.extend(self.store.list_integrations(&query).await?);
        }
        Ok(ProbeIntegrations {
            rows,
            opened: HashMap::new(),
        })
    }

    /// Picks the project's own integration of the platform's provider, else the global default of
    /// that provider, among the auth types a probe can use. With neither, the probe falls back to
    /// credentials of its own configuration, such as a built-in GitHub App.
    async fn resolve_for_probe(
        &self,
        candidates: &mut ProbeIntegrations,
        project: &Project,
    ) -> Result<Option<ResolvedIntegration>, ServiceError> {
        let (provider, usable): (Provider, &[AuthType]) = match project.platform {
            Platform::Github => (Provider::Github, &[AuthType::App, AuthType::Pat]),
            Platform::AzureDevops => (
                Provider::AzureDevops,
                &[AuthType::ServicePrincipal, AuthType::Pat],
            ),
            _ => return Ok(None),
        };
        let key = project.key();
        let usable_rows = || {
            candidates.rows.iter().filter(|row| {
                row.integration.provider == provider && usable.contains(&row.integration.auth_type)
            })
        };
        // Rows arrive defaults first, then oldest first, as the store lists them.
        let scoped = usable_rows().find(|row| {
            row.integration
                .projects
                .iter()
                .any(|identifier| project_key(identifier) == key)
        });
        let chosen = scoped
            .or_else(|| {
                usable_rows().find(|row| row.integration.is_global && row.integration.is_default)
            })
            .cloned();
        let Some(row) = chosen else {
            return Ok(None);
        };

        let credentials = match candidates.opened.get(&row.integration.id) {
            Some(opened) => opened.clone()?,
            None => {
                let opened = self.open(&row).await;
                candidates.opened.insert(row.integration.id, opened.clone());
                opened?
            }
        };
        Ok(Some(ResolvedIntegration {
            integration: row.integration,
            credentials,
        }))
    }

    // ----- helpers -----

    async fn load(&self, id: Uuid) -> Result<Integration, ServiceError> {
        self.store
            .find_integration(id)
            .await?
            .map(|row| row.integration)
            .ok_or_else(integration_not_found)
    }

    async fn registered_project_keys(
        &self,
        identifiers: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        let mut keys: Vec<String> = Vec::with_capacity(identifiers.len());
        for identifier in identifiers {
            let key = project_key(identifier);
            if self.store.find_project(&key).await?.is_none() {
                return Err(ServiceError::invalid(
                    "projects",
                    format!("Project '{identifier}' not found"),
                ));
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    async fn seal(
        &self,
        id: Uuid,
        provider: Provider,
        auth_type: AuthType,
        credentials: &Credentials,
    ) -> Result<Vec<u8>, ServiceError> {
        let plaintext = credentials.to_plaintext();
        let associated_data = credentials_associated_data(id, provider, auth_type);
        Ok(self.cipher.seal(&plaintext, &associated_data).await?)
    }

    async fn open(&self, row: &StoredIntegration) -> Result<Credentials, ServiceError> {
        let integration = &row.integration;
        let associated_data = credentials_associated_data(
            integration.id,
            integration.provider,
            integration.auth_type,
        );
        let plaintext = self
            .cipher
            .open(&row.sealed_credentials, &associated_data)
            .await
            .map_err(|error| {
                tracing::error!(integration_id = %integration.id, error = %error, "stored credentials could not be opened");
                if matches!(error, CipherError::KeyUnavailable(_)) {
                    return ServiceError::from(error);
                }
                ServiceError::Internal(format!(
                    "credentials of integration {} could not be opened",
                    integration.id
                ))
            })?;
        Credentials::from_plaintext(&plaintext).map_err(|error| {
            ServiceError::Internal(format!(
                "credentials of integration {} are corrupt: {error}",
                integration.id
            ))
        })
    }

    /// Opens every stored credential with the current cipher, to detect a wrong or missing
    /// master key at start-up.
    pub async fn verify_master_key(&self) -> Result<MasterKeyCheck, ServiceError> {
        let rows = self
            .store
            .list_integrations(&IntegrationQuery::default())
            .await?;
        // The cipher is called directly rather than through `open`, which logs every failure:
        // with a wrong key that would be one error line per stored integration.
        let mut unopenable = Vec::new();
        for row in &rows {
            let integration = &row.integration;
            let associated_data = credentials_associated_data(
                integration.id,
                integration.provider,
                integration.auth_type,
            );
            let opens = match self
                .cipher
                .open(&row.sealed_credentials, &associated_data)
                .await
            {
                Ok(plaintext) => Credentials::from_plaintext(&plaintext).is_ok(),
                Err(_) => false,
            };
            if !opens {
                unopenable.push(integration.id);
            }
        }
        Ok(MasterKeyCheck {
            checked: rows.len(),
            unopenable,
        })
    }
}

/// Result of [`IntegrationService::verify_master_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyCheck {
    /// Number of stored integrations.
    pub checked: usize,
    /// Integrations whose credentials the cipher cannot open: sealed with another key, or
    /// corrupt.
    pub unopenable: Vec<Uuid>,
}

impl MasterKeyCheck {
    /// Reports whether integrations exist and none of them opens, which points at a wrong key
    /// rather than at a few corrupt rows.
    pub fn wrong_key(&self) -> bool {
        self.checked > 0 && self.unopenable.len() == self.checked
    }
}

/// GitHub and Azure DevOps integrations loaded for one health check, with the credentials
/// opened so far.
struct ProbeIntegrations {
    rows: Vec<StoredIntegration>,
    opened: HashMap<Uuid, Result<Credentials, ServiceError>>,
}

enum Scope {
    Global,
    Projects(Vec<String>),
}

fn resolve_scope(
    is_global: Option<bool>,
    projects: Option<&[String]>,
) -> Result<Scope, ServiceError> {
    let projects: Vec<String> = projects
        .unwrap_or_default()
        .iter()
        .map(|identifier| identifier.trim().to_owned())
        .collect();
    if projects.iter().any(String::is_empty) {
        return Err(ServiceError::invalid(
            "projects",
            "projects must not contain empty identifiers",
        ));
    }
    match (is_global, projects.is_empty()) {
        (Some(true), true) => Ok(Scope::Global),
        (Some(true), false) => Err(ServiceError::invalid(
            "projects",
            "A global integration cannot also be scoped to projects; set isGlobal or projects, not both",
        )),
        (_, false) => Ok(Scope::Projects(projects)),
        (_, true) => Err(ServiceError::invalid(
            "isGlobal",
            "Either isGlobal or projects must be specified",
        )),
    }
}

fn check_credentials_access(actor: &Actor, filter: &CredentialFilter) -> Result<(), ServiceError> {
    match actor.role {
        Role::Owner => Ok(()),
        Role::Application if filter.provider.is_some() || filter.project.is_some() => Ok(()),
        Role::Application => Err(ServiceError::Forbidden(
            "Application tokens must specify a provider or project filter".into(),
        )),
        _ => Err(ServiceError::Forbidden(
            "Forbidden - Requires role: owner, application".into(),
        )),
    }
}

/// Rejects every role but owner with [`ServiceError::Forbidden`].
pub fn require_owner(actor: &Actor) -> Result<(), ServiceError> {
    if actor.role == Role::Owner {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "Forbidden - Requires role: owner".into(),
        ))
    }
}

fn integration_not_found() -> ServiceError {
    ServiceError::NotFound("Integration not found".into())
}

fn project_not_found(identifier: &str) -> ServiceError {
    ServiceError::NotFound(format!("Project '{}' not found", shown(identifier)))
}

/// Maximum length of an identifier quoted in a message, in characters; longer ones are cut.
const MAX_SHOWN_IDENTIFIER: usize = 100;

/// Cuts a caller-supplied identifier for quoting in a message.
fn shown(identifier: &str) -> String {
    if identifier.chars().count() <= MAX_SHOWN_IDENTIFIER {
        return identifier.to_owned();
    }
    let mut cut: String = identifier.chars().take(MAX_SHOWN_IDENTIFIER).collect();
    cut.push('…');
    cut
}

/// Reports whether a character is invisible or reorders text (zero-width and bidirectional
/// controls, soft hyphen, byte order mark), which lets one identifier pass for another.
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn health_provider(platform: Platform) -> Option<&'static str> {
    match platform {
        Platform::Github => Some("github"),
        Platform::AzureDevops => Some("azure-devops"),
        _ => None,
    }
}

fn overall(platforms: &[PlatformHealth]) -> OverallHealth {
    let healthy = platforms
        .iter()
        .filter(|entry| entry.status == HealthStatus::Healthy)
        .count();
    if healthy == platforms.len() {
        OverallHealth::Healthy
    } else if healthy > 0 {
        OverallHealth::Degraded
    } else {
        OverallHealth::Unhealthy
    }
}

fn validate_identifier(identifier: &str) -> Result<(), ServiceError> {
    if identifier.is_empty() {
        return Err(ServiceError::invalid(
            "identifier",
            "identifier is required",
        ));
    }
    if identifier.chars().count() > MAX_IDENTIFIER_LEN {
        return Err(ServiceError::invalid(
            "identifier",
            format!("identifier is longer than {MAX_IDENTIFIER_LEN} characters"),
        ));
    }
    if identifier
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(ServiceError::invalid(
            "identifier",
            "identifier must not contain control, zero-width or bidirectional formatting characters",
        ));
    }
    if identifier
        .split('/')
        .any(|segment| segment.trim().is_empty() || segment == "." || segment == "..")
    {
        return Err(ServiceError::invalid(
            "identifier",
            "identifier segments must not be empty, '.' or '..'",
        ));
    }
    Ok(())
}

/// GitHub identifiers are `owner/repo`, Azure DevOps identifiers `org/project/repo`.
fn validate_identifier_shape(identifier: &str, platform: Platform) -> Result<(), ServiceError> {
    let segments: Vec<&str> = identifier.split('/').collect();
    let (expected, example) = match platform {
        Platform::Github => (2, "owner/repo"),
        Platform::AzureDevops => (3, "org/project/repo"),
        _ => return Ok(()),
    };
    if segments.len() != expected {
        return Err(ServiceError::invalid(
            "identifier",
            format!("identifier of a {platform} project must look like {example}"),
        ));
    }
    // GitHub owner names are letters, digits and hyphens; repository names add '.' and '_'.
    if platform == Platform::Github {
        let owner_valid = segments[0]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
        let repo_valid = segments[1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !owner_valid || !repo_valid {
            return Err(ServiceError::invalid(
                "identifier",
                "identifier of a github project must be owner/repo made of letters, digits and '-', plus '_' and '.' in the repository name",
            ));
        }
    }
    Ok(())
}

fn validate_remote_url(remote_url: &str) -> Result<(), ServiceError> {
    if remote_url.is_empty() {
        return Err(ServiceError::invalid("remoteUrl", "remoteUrl is required"));
    }
    if remote_url.chars().count() > MAX_REMOTE_URL_LEN {
        return Err(ServiceError::invalid(
            "remoteUrl",
            format!("remoteUrl is longer than {MAX_REMOTE_URL_LEN} characters"),
        ));
    }
    let not_a_remote = || {
        ServiceError::invalid(
            "remoteUrl",
            "remoteUrl must be a git remote URL such as https://github.com/owner/repo.git",
        )
    };
    let embedded_credentials = || {
        ServiceError::invalid(
            "remoteUrl",
            "remoteUrl must not contain a user name, password or token; store credentials in an integration",
        )
    };
    if remote_url.chars().any(char::is_whitespace) {
        return Err(not_a_remote());
    }
    let scp_like =
        !remote_url.contains("://") && remote_url.contains('@') && remote_url.contains(':');
    if scp_like {
        // `git@github.com:owner/repo.git`: the user name is the SSH login, never a secret.
        return Ok(());
    }

    let url = url::Url::parse(remote_url).map_err(|_| not_a_remote())?;
    let has_user = !url.username().is_empty();
    let has_password = url.password().is_some();
    let has_query = url.query().is_some() || url.fragment().is_some();
    match url.scheme() {
        "https" | "http" if has_user || has_password => Err(embedded_credentials()),
        "ssh" | "git" if has_password => Err(embedded_credentials()),
        "https" | "http" | "ssh" | "git" if has_query => Err(ServiceError::invalid(
            "remoteUrl",
            "remoteUrl must not contain a query string or fragment",
        )),
        "https" | "http" | "ssh" | "git" => Ok(()),
        _ => Err(not_a_remote()),
    }
}
