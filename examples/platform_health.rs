//! Checks platform health without HTTP, against mock GitHub, Entra and Azure DevOps servers
//! that this program starts on 127.0.0.1. It registers three projects in an in-memory store:
//!
//! - `acme/app` on GitHub, whose account has the App installed: healthy;
//! - `globex/app` on GitHub, whose account does not have the App installed: unhealthy;
//! - `contoso/tools/build` on Azure DevOps, with a service principal that the mock Entra
//!   issues tokens for: healthy.
//!
//! It then warms the token caches, waits for the warm-up to finish and prints the report that
//! `GET /sfp/api/integrations/platforms/health` returns, as pretty JSON alone on stdout. Logs go
//! to stderr (`RUST_LOG`, default `info`). No request leaves 127.0.0.1.
//!
//! ```sh
//! cargo run --example platform_health
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integrations::core::validation::UrlPolicy;
use integrations::core::{
    Actor, Aes256GcmCipher, AuthType, Credentials, HealthReport, HealthStatus, IntegrationService,
    MasterKey, NewIntegration, NewProject, Platform, Provider, Role, ServiceSettings,
};
use integrations::platforms::mock::{
    EntraEndpoint, GithubEndpoint, MockAzureDevops, MockEntra, MockGithub, RepositorySelection,
};
use integrations::platforms::PlatformsConfig;
use integrations::store::MemoryStore;

/// RSA key of the example's GitHub App, a test fixture that no real App uses.
const APP_KEY: &str = include_str!("../crates/integrations-platforms/tests/fixtures/app_pkcs1.pem");
const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;

const TENANT_ID: &str = "3d0f6c1e-8a4b-4f2e-9c7d-5b1a2e3f4c6d";
const CLIENT_ID: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
const CLIENT_SECRET: &str = "example-only-client-secret";

/// Maximum wait for the token cache warm-up.
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let report = health_report().await?;
    println!("{}", render(&report)?);
    Ok(())
}

/// Formats a report as the route's response body, pretty-printed.
pub fn render(report: &HealthReport) -> serde_json::Result<String> {
    serde_json::to_string_pretty(report)
}

/// Mock platforms on 127.0.0.1, stopped when dropped.
pub struct MockPlatforms {
    github: MockGithub,
    entra: MockEntra,
    devops: MockAzureDevops,
}

/// Starts the mock platforms: the App installed on `acme` only, with `acme/app` and
/// `globex/app` as repositories, and a service principal that is a user of `contoso`.
pub async fn start_mocks() -> std::io::Result<MockPlatforms> {
    let github = MockGithub::start().await?;
    github.register_app_with_private_key(APP_ID, APP_KEY);
    github.add_installation(INSTALLATION_ID, APP_ID, "acme", RepositorySelection::All);
    github.add_repository("acme/app");
    github.add_repository("globex/app");

    let entra = MockEntra::start().await?;
    entra.add_tenant(TENANT_ID);
    entra.add_client_secret(TENANT_ID, CLIENT_ID, CLIENT_SECRET, false);
    let devops = MockAzureDevops::start(&entra).await?;
    devops.add_service_principal("contoso", CLIENT_ID);

    Ok(MockPlatforms {
        github,
        entra,
        devops,
    })
}

/// Builds a service on an in-memory store, with probes pointed at the mocks.
pub fn build_service(mocks: &MockPlatforms) -> Result<IntegrationService, Box<dyn Error>> {
    let store = Arc::new(MemoryStore::new());
    // A real program loads its master key from a file, the environment or a KMS.
    let cipher = Arc::new(Aes256GcmCipher::new(&MasterKey::generate()));

    let config = PlatformsConfig {
        github_api_url: mocks.github.base_url(),
        entra_authority: mocks.entra.authority(),
        allowed_hosts: vec!["127.0.0.1".to_owned()],
        request_timeout: Duration::from_secs(5),
        ..PlatformsConfig::default()
    };
    // The mock Azure DevOps organization URL is plain http on 127.0.0.1.
    let settings = ServiceSettings {
        urls: UrlPolicy {
            http_allowed_hosts: vec!["127.0.0.1".to_owned()],
        },
        probe_timeout: Duration::from_secs(5),
        ..ServiceSettings::default()
    };

    let mut service = IntegrationService::new(store.clone(), cipher, store).with_settings(settings);
    for probe in integrations::platforms::default_probes(&config)? {
        service = service.with_probe(probe);
    }
    Ok(service)
}

/// Registers the three projects, a global default GitHub App integration and a service
/// principal integration for the Azure DevOps project.
pub async fn register(
    service: &IntegrationService,
    mocks: &MockPlatforms,
) -> Result<(), Box<dyn Error>> {
    let owner = Actor::new("admin@example.com", Role::Owner);
    for (identifier, remote_url, platform) in [
        (
            "acme/app",
            "https://github.com/acme/app.git",
            Platform::Github,
        ),
        (
            "globex/app",
            "https://github.com/globex/app.git",
            Platform::Github,
        ),
        (
            "contoso/tools/build",
            "https://dev.azure.com/contoso/tools/_git/build",
            Platform::AzureDevops,
        ),
    ] {
        let project = NewProject {
            identifier: identifier.into(),
            remote_url: remote_url.into(),
            platform: Some(platform),
        };
        service.create_project(&owner, project).await?;
    }

    let github_app = NewIntegration {
        provider: Provider::Github,
        auth_type: AuthType::App,
        credentials: Credentials::new()
            .with("appId", APP_ID.to_string())
            .with("privateKey", APP_KEY),
        projects: None,
        is_global: Some(true),
        is_default: true,
        config: Default::default(),
    };
    service.create_integration(&owner, github_app).await?;

    let service_principal = NewIntegration {
        provider: Provider::AzureDevops,
        auth_type: AuthType::ServicePrincipal,
        credentials: Credentials::new()
            .with(
                "organization_url",
                mocks.devops.organization_url("contoso").as_str(),
            )
            .with("tenant_id", TENANT_ID)
            .with("client_id", CLIENT_ID)
            .with("client_secret", CLIENT_SECRET),
        projects: Some(vec!["contoso/tools/build".into()]),
        is_global: None,
        is_default: false,
        config: Default::default(),
    };
    service
        .create_integration(&owner, service_principal)
        .await?;
    Ok(())
}

/// Runs the whole flow: mocks, service, projects, warm-up, then one health check.
pub async fn health_report() -> Result<HealthReport, Box<dyn Error>> {
    let mocks = start_mocks().await?;
    let service = build_service(&mocks)?;
    register(&service, &mocks).await?;

    service.warm_up().await?;
    let viewer = Actor::new("dashboard", Role::Member);
    let report = wait_for_warm_up(&service, &mocks, &viewer).await?;
    tracing::info!(status = ?report.status, "platform health checked");
    Ok(report)
}

/// Checks health until the warm-up has finished, and returns that report. The warm-up has
/// finished once both token endpoints received its requests and no project reads
/// `initializing`. Checking earlier would race the warm-up that `warm_up` spawns.
async fn wait_for_warm_up(
    service: &IntegrationService,
    mocks: &MockPlatforms,
    actor: &Actor,
) -> Result<HealthReport, Box<dyn Error>> {
    let deadline = Instant::now() + WARM_UP_LIMIT;
    loop {
        let started = mocks.github.count(GithubEndpoint::AccessTokens) > 0
            && mocks.entra.count(EntraEndpoint::Token) > 0;
        if started {
            let report = service.platform_health(actor, None).await?;
            let warming = report
                .platforms
                .iter()
                .filter(|entry| entry.status == HealthStatus::Initializing)
                .count();
            if warming == 0 {
                return Ok(report);
            }
            tracing::info!(projects = warming, "token cache warm-up still running");
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the token cache warm-up did not finish within {} s",
                WARM_UP_LIMIT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
