//! GitHub probe against the mock GitHub API over loopback HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use integrations_core::{HealthStatus, Platform, PlatformProbe, ProbeReport, Provider};
use integrations_platforms::mock::{Fault, GithubEndpoint, MockGithub, RepositorySelection};
use integrations_platforms::{BuiltinApp, GithubProbe, GithubProbeConfig};

const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;
const PAT: &str = "ghp_mockpersonaltoken0123456789";

/// Starts a mock with app 4242 (PKCS#1 key) installed on `acme` for every repository, and a PAT.
async fn mock() -> MockGithub {
    let github = MockGithub::start().await.unwrap();
    github.register_app(APP_ID, PKCS1_PUBLIC);
    github.add_installation(INSTALLATION_ID, APP_ID, "acme", RepositorySelection::All);
    github.add_repository("acme/app");
    github.add_pat(PAT, &["acme/app"]);
    github
}

fn config(github: &MockGithub) -> GithubProbeConfig {
    GithubProbeConfig::new(github.base_url()).with_request_timeout(TEST_TIMEOUT)
}

fn probe(github: &MockGithub) -> GithubProbe {
    GithubProbe::new(config(github)).unwrap()
}

async fn check_app(probe: &GithubProbe, key: &str, installation: Option<u64>) -> ProbeReport {
    let report = probe
        .check(&target(
            "acme/app",
            Platform::Github,
            Some(github_app(APP_ID, key, installation)),
        ))
        .await;
    assert_no_secret(&report, &[key]);
    report
}

#[tokio::test]
async fn app_healthy() {
    let github = mock().await;
    let report = check_app(&probe(&github), PKCS1_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert!(report.message.contains("acme/app"), "{}", report.message);
    assert!(report.latency_ms.is_some());
    assert_eq!(github.count(GithubEndpoint::RepoInstallation), 1);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 1);
    assert_eq!(github.count(GithubEndpoint::Repo), 1);
}

#[tokio::test]
async fn stored_installation_skips_lookup() {
    let github = mock().await;
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(github.count(GithubEndpoint::RepoInstallation), 0);
}

#[tokio::test]
async fn pkcs8_key_accepted() {
    let github = mock().await;
    github.register_app(APP_ID, PKCS8_PUBLIC);
    let report = check_app(&probe(&github), PKCS8_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
}

#[tokio::test]
async fn escaped_newlines_accepted() {
    let github = mock().await;
    github.register_app(APP_ID, ESCAPED_PUBLIC);
    assert!(ESCAPED_KEY.contains("\\n"));
    let report = check_app(&probe(&github), ESCAPED_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
}

#[tokio::test]
async fn public_key_derived_from_private() {
    let github = mock().await;
    github.register_app_with_private_key(APP_ID, PKCS8_KEY);
    let report = check_app(&probe(&github), PKCS8_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
}

#[tokio::test]
async fn openssh_key_rejected() {
    let github = mock().await;
    let report = check_app(&probe(&github), OPENSSH_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("PKCS#1 (BEGIN RSA PRIVATE KEY)"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("OpenSSH keys are not supported"),
        "{}",
        report.message
    );
    assert!(github.requests().is_empty());
}

#[tokio::test]
async fn wrong_key_jwt_rejected() {
    let github = mock().await;
    let report = check_app(&probe(&github), PKCS8_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("rejected the JWT"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn clock_skew_suspected() {
    let github = mock().await;
    github.set_clock_skew_secs(-300);
    let report = check_app(&probe(&github), PKCS1_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("clock skew"), "{}", report.message);
}

#[tokio::test]
async fn pat_healthy() {
    let github = mock().await;
    let report = probe(&github)
        .check(&target("acme/app", Platform::Github, Some(github_pat(PAT))))
        .await;
    assert_no_secret(&report, &[PAT]);
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 0);
}

#[tokio::test]
async fn pat_bad_credentials() {
    let github = mock().await;
    let revoked = "ghp_revokedtoken0000000000000000";
    let report = probe(&github)
        .check(&target(
            "acme/app",
            Platform::Github,
            Some(github_pat(revoked)),
        ))
        .await;
    assert_no_secret(&report, &[revoked]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("invalid, expired or revoked"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn pat_repo_not_found() {
    let github = mock().await;
    let report = probe(&github)
        .check(&target(
            "acme/missing",
            Platform::Github,
            Some(github_pat(PAT)),
        ))
        .await;
    assert_no_secret(&report, &[PAT]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("acme/missing not found"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn nothing_configured() {
    let github = mock().await;
    let report = probe(&github)
        .check(&target("acme/app", Platform::Github, None))
        .await;
    assert_eq!(report.status, HealthStatus::NotConfigured);
    assert!(
        report.message.contains("GITHUB_APP_ID"),
        "{}",
        report.message
    );
    assert_eq!(report.latency_ms, None);
}

#[tokio::test]
async fn builtin_app_fallback() {
    let github = mock().await;
    let builtin = BuiltinApp::new(APP_ID.to_string(), PKCS1_KEY).unwrap();
    let probe = GithubProbe::new(config(&github).with_builtin_app(builtin)).unwrap();
    let report = probe
        .check(&target("acme/app", Platform::Github, None))
        .await;
    assert_no_secret(&report, &[PKCS1_KEY]);
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert!(report.message.contains("built-in"), "{}", report.message);
}

#[tokio::test]
async fn app_not_installed() {
    let github = mock().await;
    github.add_repository("globex/site");
    let report = probe(&github)
        .check(&target(
            "globex/site",
            Platform::Github,
            Some(github_app(APP_ID, PKCS1_KEY, None)),
        ))
        .await;
    assert_no_secret(&report, &[PKCS1_KEY]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report
            .message
            .contains("not installed on the account globex"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn repo_not_selected() {
    let github = mock().await;
    github.add_repository("acme/private");
    github.add_installation(
        INSTALLATION_ID,
        APP_ID,
        "acme",
        RepositorySelection::Selected(vec!["app".to_owned()]),
    );
    let report = probe(&github)
        .check(&target(
            "acme/private",
            Platform::Github,
            Some(github_app(APP_ID, PKCS1_KEY, Some(INSTALLATION_ID))),
        ))
        .await;
    assert_no_secret(&report, &[PKCS1_KEY]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("not selected for installation 77"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn suspended_installation() {
    let github = mock().await;
    github.set_installation_suspended(INSTALLATION_ID, true);
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("suspended"), "{}", report.message);
}

#[tokio::test]
async fn rate_limited_gives_reset() {
    let github = mock().await;
    github.set_fault(
        GithubEndpoint::Repo,
        Some(Fault::RateLimited {
            status: 403,
            reset_in: Duration::from_secs(120),
        }),
    );
    let report = check_app(&probe(&github), PKCS1_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("rate limit exceeded"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("(x-ratelimit-reset)"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("retry after 120 s"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn too_many_requests_limited() {
    let github = mock().await;
    github.set_fault(
        GithubEndpoint::AccessTokens,
        Some(Fault::RateLimited {
            status: 429,
            reset_in: Duration::from_secs(60),
        }),
    );
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("rate limit exceeded"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("resets at 20"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn localhost_resolved_through_guard() {
    let github = mock().await;
    let mut api_url = github.base_url();
    api_url.set_host(Some("localhost")).unwrap();
    let probe =
        GithubProbe::new(GithubProbeConfig::new(api_url).with_request_timeout(TEST_TIMEOUT))
            .unwrap();
    let report = check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
}

#[tokio::test]
async fn hanging_api_times_out() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::Repo, Some(Fault::Hang));
    let probe =
        GithubProbe::new(config(&github).with_request_timeout(Duration::from_millis(300))).unwrap();
    let report = check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("timed out"), "{}", report.message);
}

#[tokio::test]
async fn server_error_reported() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::Repo, Some(Fault::Status(502)));
    let report = check_app(&probe(&github), PKCS1_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("502 Bad Gateway"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn forbidden_reported() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::Repo, Some(Fault::Status(403)));
    let report = check_app(&probe(&github), PKCS1_KEY, None).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("(403: Forbidden)"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn token_endpoint_unauthorized() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::AccessTokens, Some(Fault::Status(401)));
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("rejected the JWT"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn repo_not_found_fault() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::Repo, Some(Fault::Status(404)));
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("acme/app not found"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn latency_measured() {
    let github = mock().await;
    github.set_latency(Duration::from_millis(100));
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    let latency = report.latency_ms.unwrap();
    assert!(latency >= 200.0, "{latency}");
}

#[tokio::test]
async fn hundred_projects_one_token() {
    let github = mock().await;
    github.set_latency(Duration::from_millis(50));
    let targets: Vec<_> = (0..100)
        .map(|i| {
            github.add_repository(&format!("acme/repo{i}"));
            target(
                &format!("acme/repo{i}"),
                Platform::Github,
                Some(github_app(APP_ID, PKCS1_KEY, None)),
            )
        })
        .collect();
    let probe = probe(&github);
    let reports = join_all(targets.iter().map(|target| probe.check(target))).await;
    for report in &reports {
        assert_no_secret(report, &[PKCS1_KEY]);
        assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    }
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 1);
    assert_eq!(github.count(GithubEndpoint::Repo), 100);
}

#[tokio::test]
async fn refresh_mints_once() {
    let github = mock().await;
    github.set_token_lifetime(Duration::from_secs(4));
    let probe = probe(&github);
    let first = check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(first.status, HealthStatus::Healthy, "{}", first.message);

    // Refresh is due halfway through the 4 s life; the response latency keeps both checks
    // inside the one refresh.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    github.set_latency(Duration::from_millis(200));
    let (a, b) = tokio::join!(
        check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)),
        check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)),
    );
    assert_eq!(a.status, HealthStatus::Healthy, "{}", a.message);
    assert_eq!(b.status, HealthStatus::Healthy, "{}", b.message);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 2);
}

#[tokio::test]
async fn revoked_token_retried_once() {
    let github = mock().await;
    let probe = probe(&github);
    check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    github.revoke_tokens();
    let report = check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 2);
    assert_eq!(github.count(GithubEndpoint::Repo), 3);
}

#[tokio::test]
async fn early_expiry_retried() {
    let github = mock().await;
    github.set_token_validity(Some(Duration::from_millis(300)));
    let probe = probe(&github);
    check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    github.set_token_validity(None);
    let report = check_app(&probe, PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 2);
}

#[tokio::test]
async fn persistent_401_unhealthy() {
    let github = mock().await;
    github.set_fault(GithubEndpoint::Repo, Some(Fault::Status(401)));
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("freshly minted"),
        "{}",
        report.message
    );
    assert_eq!(github.count(GithubEndpoint::Repo), 2);
}

#[tokio::test]
async fn redirect_not_followed() {
    let github = mock().await;
    let elsewhere = MockGithub::start().await.unwrap();
    let location = elsewhere.base_url().join("repos/acme/app").unwrap();
    github.set_fault(
        GithubEndpoint::Repo,
        Some(Fault::Redirect(location.to_string())),
    );
    let report = check_app(&probe(&github), PKCS1_KEY, Some(INSTALLATION_ID)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("redirect"), "{}", report.message);
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn plain_http_remote_rejected() {
    let config = GithubProbeConfig::new("http://ghe.example.com/api/v3".parse().unwrap());
    let probe = GithubProbe::new(config).unwrap();
    let report = probe
        .check(&target("acme/app", Platform::Github, Some(github_pat(PAT))))
        .await;
    assert_no_secret(&report, &[PAT]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("ghe.example.com uses plain http"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn invalid_identifier() {
    let github = mock().await;
    let report = probe(&github)
        .check(&target(
            "not-a-repo",
            Platform::Github,
            Some(github_pat(PAT)),
        ))
        .await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.message.contains("owner/repo"), "{}", report.message);
}

#[tokio::test]
async fn foreign_provider_rejected() {
    let github = mock().await;
    let mut resolved = github_pat(PAT);
    resolved.integration.provider = Provider::Gitlab;
    let report = probe(&github)
        .check(&target("acme/app", Platform::Github, Some(resolved)))
        .await;
    assert_no_secret(&report, &[PAT]);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(
        report.message.contains("not a GitHub one"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn warm_up_reports_initializing() {
    let github = mock().await;
    github.set_latency(Duration::from_millis(400));
    let probe = probe(&github);
    let target = target(
        "acme/app",
        Platform::Github,
        Some(github_app(APP_ID, PKCS1_KEY, None)),
    );

    probe.warm_up(vec![target.clone()]).await;
    let during = probe.check(&target).await;
    assert_eq!(
        during.status,
        HealthStatus::Initializing,
        "{}",
        during.message
    );
    assert_eq!(during.latency_ms, None);

    let mut after = probe.check(&target).await;
    for _ in 0..50 {
        if after.status != HealthStatus::Initializing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = probe.check(&target).await;
    }
    assert_no_secret(&after, &[PKCS1_KEY]);
    assert_eq!(after.status, HealthStatus::Healthy, "{}", after.message);
    assert_eq!(github.count(GithubEndpoint::AccessTokens), 1);
}

#[tokio::test]
async fn second_warm_up_not_initializing() {
    let github = mock().await;
    let probe = Arc::new(probe(&github));
    let target = target(
        "acme/app",
        Platform::Github,
        Some(github_app(APP_ID, PKCS1_KEY, None)),
    );
    probe.warm_up(vec![target.clone()]).await;
    for _ in 0..50 {
        if probe.check(&target).await.status != HealthStatus::Initializing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    github.set_latency(Duration::from_millis(300));
    probe.warm_up(vec![target.clone()]).await;
    let report = probe.check(&target).await;
    assert_no_secret(&report, &[PKCS1_KEY]);
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.message);
}

#[tokio::test]
async fn debug_hides_builtin_key() {
    let builtin = BuiltinApp::new(APP_ID.to_string(), PKCS1_KEY).unwrap();
    let probe = GithubProbe::new(GithubProbeConfig::default().with_builtin_app(builtin)).unwrap();
    let debug = format!("{probe:?}");
    assert!(debug.contains("4242"), "{debug}");
    assert!(!debug.contains("MII"), "{debug}");
}
