//! Azure DevOps probe against the mock Entra and Azure DevOps over loopback HTTP.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use integrations_core::{
    AuthType, Credentials, HealthStatus, Platform, PlatformProbe, ProbeReport, Provider,
    ResolvedIntegration,
};
use integrations_platforms::mock::{
    DevopsEndpoint, EntraEndpoint, Fault, MockAzureDevops, MockEntra,
};
use integrations_platforms::{AzureDevopsProbe, AzureDevopsProbeConfig};

const TENANT: &str = "contoso-tenant";
const CLIENT: &str = "sp-client-1";
const SECRET: &str = "mock-client-secret-value-1";
const EXPIRED_SECRET: &str = "mock-client-secret-expired";
const PAT: &str = "mockdevopspat0123456789abcdef";
const ORG: &str = "contoso";

struct Platforms {
    entra: MockEntra,
    devops: MockAzureDevops,
}

async fn platforms() -> Platforms {
    let entra = MockEntra::start().await.unwrap();
    entra.add_tenant(TENANT);
    entra.add_client_secret(TENANT, CLIENT, SECRET, false);
    entra.add_client_secret(TENANT, CLIENT, EXPIRED_SECRET, true);
    let devops = MockAzureDevops::start(&entra).await.unwrap();
    devops.add_organization(ORG);
    devops.add_service_principal(ORG, CLIENT);
    devops.add_pat(ORG, PAT);
    Platforms { entra, devops }
}

fn config(platforms: &Platforms) -> AzureDevopsProbeConfig {
    AzureDevopsProbeConfig::new(platforms.entra.authority())
        .with_allowed_hosts(["127.0.0.1"])
        .with_request_timeout(TEST_TIMEOUT)
}

fn probe(platforms: &Platforms) -> AzureDevopsProbe {
    AzureDevopsProbe::new(config(platforms)).unwrap()
}

fn service_principal(organization_url: &str, tenant: &str, secret: &str) -> ResolvedIntegration {
    let credentials = Credentials::new()
        .with("organization_url", organization_url)
        .with("tenant_id", tenant)
        .with("client_id", CLIENT)
        .with("client_secret", secret);
    integration(
        Provider::AzureDevops,
        AuthType::ServicePrincipal,
        credentials,
    )
}

fn pat(organization_url: &str, token: &str) -> ResolvedIntegration {
    let credentials = Credentials::new()
        .with("organization_url", organization_url)
        .with("token", token);
    integration(Provider::AzureDevops, AuthType::Pat, credentials)
}

async fn check(probe: &AzureDevopsProbe, integration: ResolvedIntegration) -> ProbeReport {
    let report = probe
        .check(&target(
            "contoso/web/app",
            Platform::AzureDevops,
            Some(integration),
        ))
        .await;
    assert_no_secret(&report, &[SECRET, EXPIRED_SECRET, PAT]);
    report
}

async fn check_sp(platforms: &Platforms, probe: &AzureDevopsProbe) -> ProbeReport {
    let url = platforms.devops.organization_url(ORG);
    check(probe, service_principal(url.as_str(), TENANT, SECRET)).await
}

#[tokio::test]
async fn service_principal_healthy() {
    let platforms = platforms().await;
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert!(report.latency_ms.is_some());
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
    assert_eq!(platforms.devops.count(DevopsEndpoint::ConnectionData), 1);
}

#[tokio::test]
async fn token_cached() {
    let platforms = platforms().await;
    let probe = probe(&platforms);
    for _ in 0..3 {
        let report = check_sp(&platforms, &probe).await;
        assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    }
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
    assert_eq!(platforms.devops.count(DevopsEndpoint::ConnectionData), 3);
}

#[tokio::test]
async fn concurrent_checks_one_token() {
    let platforms = platforms().await;
    platforms.entra.set_latency(Duration::from_millis(100));
    let probe = probe(&platforms);
    let reports = join_all((0..20).map(|_| check_sp(&platforms, &probe))).await;
    for report in &reports {
        assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    }
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
}

#[tokio::test]
async fn pat_healthy() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url(ORG);
    let report = check(&probe(&platforms), pat(url.as_str(), PAT)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 0);
}

#[tokio::test]
async fn pat_rejected() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url(ORG);
    let wrong = "mockwrongpat000000000000000000";
    let report = check(&probe(&platforms), pat(url.as_str(), wrong)).await;
    assert_no_secret(&report, &[wrong]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("invalid, expired"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn invalid_secret_named() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url(ORG);
    let wrong = "mock-wrong-secret-value";
    let report = check(
        &probe(&platforms),
        service_principal(url.as_str(), TENANT, wrong),
    )
    .await;
    assert_no_secret(&report, &[wrong]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("AADSTS7000215"),
        "{}",
        report.message
    );
    assert_eq!(platforms.devops.count(DevopsEndpoint::ConnectionData), 0);
}

#[tokio::test]
async fn expired_secret_named() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url(ORG);
    let report = check(
        &probe(&platforms),
        service_principal(url.as_str(), TENANT, EXPIRED_SECRET),
    )
    .await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("AADSTS7000222"),
        "{}",
        report.message
    );
    assert!(report.message.contains("has expired"), "{}", report.message);
}

#[tokio::test]
async fn unknown_tenant_named() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url(ORG);
    let report = check(
        &probe(&platforms),
        service_principal(url.as_str(), "fabrikam", SECRET),
    )
    .await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("AADSTS90002"), "{}", report.message);
    assert!(
        report.message.contains("'fabrikam' not found"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn principal_not_member() {
    let platforms = platforms().await;
    platforms.devops.add_organization("fabrikam");
    let url = platforms.devops.organization_url("fabrikam");
    let report = check(
        &probe(&platforms),
        service_principal(url.as_str(), TENANT, SECRET),
    )
    .await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("add the service principal"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn organization_not_found() {
    let platforms = platforms().await;
    let url = platforms.devops.organization_url("missing");
    let report = check(&probe(&platforms), pat(url.as_str(), PAT)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("not found (404"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn sign_in_page_unhealthy() {
    let platforms = platforms().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::SignInPage));
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("203"), "{}", report.message);
}

#[tokio::test]
async fn html_body_unhealthy() {
    let platforms = platforms().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::HtmlPage(200)));
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report
            .message
            .contains("text/html instead of connectionData JSON"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn redirect_keeps_credentials() {
    let platforms = platforms().await;
    let elsewhere = MockAzureDevops::start(&platforms.entra).await.unwrap();
    let location = elsewhere
        .organization_url(ORG)
        .join("_apis/connectionData")
        .unwrap();
    platforms.devops.set_fault(
        DevopsEndpoint::ConnectionData,
        Some(Fault::Redirect(location.to_string())),
    );
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("redirect"), "{}", report.message);
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn rate_limited_gives_retry() {
    let platforms = platforms().await;
    platforms.devops.set_fault(
        DevopsEndpoint::ConnectionData,
        Some(Fault::RateLimited {
            status: 429,
            reset_in: Duration::from_secs(30),
        }),
    );
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("retry after 30 s"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn server_error_reported() {
    let platforms = platforms().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::Status(503)));
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("503 Service Unavailable"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn forbidden_reported() {
    let platforms = platforms().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::Status(403)));
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("(403"), "{}", report.message);
}

#[tokio::test]
async fn entra_outage_reported() {
    let platforms = platforms().await;
    platforms
        .entra
        .set_fault(EntraEndpoint::Token, Some(Fault::Status(500)));
    let report = check_sp(&platforms, &probe(&platforms)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("Entra"), "{}", report.message);
}

#[tokio::test]
async fn hanging_organization_times_out() {
    let platforms = platforms().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::Hang));
    let probe =
        AzureDevopsProbe::new(config(&platforms).with_request_timeout(Duration::from_millis(300)))
            .unwrap();
    let report = check_sp(&platforms, &probe).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("timed out"), "{}", report.message);
}

#[tokio::test]
async fn revoked_token_retried() {
    let platforms = platforms().await;
    let probe = probe(&platforms);
    check_sp(&platforms, &probe).await;
    platforms.entra.revoke_tokens();
    let report = check_sp(&platforms, &probe).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 2);
}

#[tokio::test]
async fn nothing_configured() {
    let platforms = platforms().await;
    let report = probe(&platforms)
        .check(&target("contoso/web/app", Platform::AzureDevops, None))
        .await;
    assert_no_secret(&report, &[]);
    assert_eq!(report.status, HealthStatus::NotConfigured);
    assert_eq!(report.latency_ms, None);
}

#[tokio::test]
async fn unlisted_host_rejected() {
    let platforms = platforms().await;
    let report = check(
        &probe(&platforms),
        service_principal("https://devops.example.com/contoso", TENANT, SECRET),
    )
    .await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("devops.example.com"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("INTEGRATIONS_PROBE_ALLOWED_HOSTS"),
        "{}",
        report.message
    );
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 0);
}

#[tokio::test]
async fn loopback_needs_allow_list() {
    let platforms = platforms().await;
    let probe =
        AzureDevopsProbe::new(AzureDevopsProbeConfig::new(platforms.entra.authority())).unwrap();
    let report = check_sp(&platforms, &probe).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("plain http"), "{}", report.message);
    assert!(platforms.devops.requests().is_empty());
}

#[tokio::test]
async fn warm_up_reports_initializing() {
    let platforms = platforms().await;
    platforms.entra.set_latency(Duration::from_millis(400));
    let probe = probe(&platforms);
    let url = platforms.devops.organization_url(ORG);
    let target = target(
        "contoso/web/app",
        Platform::AzureDevops,
        Some(service_principal(url.as_str(), TENANT, SECRET)),
    );

    probe.warm_up(vec![target.clone()]).await;
    let during = probe.check(&target).await;
    assert_eq!(
        during.status,
        HealthStatus::Initializing,
        "{}",
        during.message
    );

    let mut after = probe.check(&target).await;
    for _ in 0..50 {
        if after.status != HealthStatus::Initializing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = probe.check(&target).await;
    }
    assert_no_secret(&after, &[SECRET]);
    assert_eq!(after.status, HealthStatus::Healthy, "{}", after.message);
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
}
