//! Throughput of the GitHub probe: 1,000 projects with a stored installation id, a cached
//! installation token, a mock responding to every request after 50 ms, and at most 32 checks in
//! flight, as the core service runs them. Each check makes one platform call, so the ideal
//! time is 50 ms × ⌈1000 / 32⌉ = 1.6 s; the run fails above 1.25 × that, 2.0 s.
//!
//! Run with `cargo bench -p integrations-platforms --features mock --bench github_probes`.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use integrations_core::{
    AuthType, Credentials, HealthStatus, Integration, Platform, PlatformProbe, ProbeTarget,
    Project, Provider, ResolvedIntegration,
};
use integrations_platforms::mock::{GithubEndpoint, MockGithub, RepositorySelection};
use integrations_platforms::{GithubProbe, GithubProbeConfig};

const PROJECTS: usize = 1000;
const CONCURRENCY: usize = 32;
const MOCK_LATENCY: Duration = Duration::from_millis(50);
const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;
const PRIVATE_KEY: &str = include_str!("../tests/fixtures/app_pkcs1.pem");
const PUBLIC_KEY: &str = include_str!("../tests/fixtures/app_pkcs1.pub.pem");

fn target(index: usize) -> ProbeTarget {
    let now = Utc::now();
    let credentials = Credentials::new()
        .with("appId", APP_ID.to_string())
        .with("privateKey", PRIVATE_KEY)
        .with("installationId", INSTALLATION_ID.to_string());
    let identifier = format!("acme/repo{index}");
    ProbeTarget {
        project: Project {
            identifier: identifier.clone(),
            remote_url: format!("https://example.invalid/{identifier}.git"),
            platform: Platform::Github,
            created_at: now,
        },
        integration: Some(ResolvedIntegration {
            integration: Integration {
                id: uuid::Uuid::new_v4(),
                provider: Provider::Github,
                auth_type: AuthType::App,
                is_global: true,
                is_default: true,
                projects: Vec::new(),
                config: serde_json::Map::new(),
                credential_fields: credentials.field_names(),
                created_at: now,
                updated_at: now,
            },
            credentials,
        }),
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let github = MockGithub::start().await.expect("mock GitHub starts");
    github.register_app(APP_ID, PUBLIC_KEY);
    github.add_installation(INSTALLATION_ID, APP_ID, "acme", RepositorySelection::All);
    let targets: Vec<ProbeTarget> = (0..PROJECTS)
        .map(|index| {
            github.add_repository(&format!("acme/repo{index}"));
            target(index)
        })
        .collect();
    github.set_latency(MOCK_LATENCY);

    let config = GithubProbeConfig::new(github.base_url());
    let probe = GithubProbe::new(config).expect("probe builds");

    // One check mints and caches the installation token; the measured run reuses it.
    let first = probe.check(&targets[0]).await;
    assert_eq!(first.status, HealthStatus::Healthy, "{}", first.message);
    github.reset_counts();

    let started = Instant::now();
    let reports: Vec<_> = futures::stream::iter(targets.iter().map(|target| probe.check(target)))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let healthy = reports
        .iter()
        .filter(|report| report.status == HealthStatus::Healthy)
        .count();
    let mut latencies: Vec<f64> = reports
        .iter()
        .filter_map(|report| report.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let rounds = PROJECTS.div_ceil(CONCURRENCY) as u32;
    let ideal = MOCK_LATENCY * rounds;
    let budget = ideal.mul_f64(1.25);

    println!("projects:             {PROJECTS}");
    println!("concurrency bound:    {CONCURRENCY}");
    println!("mock latency:         {} ms", MOCK_LATENCY.as_millis());
    println!("healthy reports:      {healthy}");
    println!(
        "repository requests:  {}",
        github.count(GithubEndpoint::Repo)
    );
    println!(
        "tokens minted in run: {}",
        github.count(GithubEndpoint::AccessTokens)
    );
    println!(
        "check latency p50:    {:.1} ms",
        percentile(&latencies, 0.50)
    );
    println!(
        "check latency p99:    {:.1} ms",
        percentile(&latencies, 0.99)
    );
    println!("ideal:                {:.3} s", ideal.as_secs_f64());
    println!("budget (1.25 x):      {:.3} s", budget.as_secs_f64());
    println!("elapsed:              {:.3} s", elapsed.as_secs_f64());

    assert_eq!(healthy, PROJECTS, "every check should be healthy");
    assert_eq!(
        github.count(GithubEndpoint::AccessTokens),
        0,
        "the token should be cached"
    );
    assert!(elapsed <= budget, "took {elapsed:?}, budget {budget:?}");
}
