//! `GET /sfp/api/integrations/platforms/health` end to end: the real server binary, configured
//! by environment variables to probe mock GitHub, Entra and Azure DevOps servers that run in the
//! test process on 127.0.0.1. No test reaches a real platform.
//!
//! Each test starts its own mocks and server, because mock faults, latency and request counters
//! apply to a whole mock and global integrations apply to every project of a server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{call, create_integration, encode, register_project, Options, Reply, Server};
use integrations_platforms::mock::{
    DevopsEndpoint, EntraEndpoint, Fault, GithubEndpoint, MockAzureDevops, MockEntra, MockGithub,
    RepositorySelection,
};
use serde_json::{json, Value};

const HEALTH: &str = "/sfp/api/integrations/platforms/health";

/// App used by project-scoped integrations, installed on `acme` for every repository.
const APP_ID: u64 = 101;
const INSTALLATION_ID: u64 = 11;
const APP_KEY: &str = include_str!("../../integrations-platforms/tests/fixtures/app_pkcs1.pem");

/// App used by global default integrations, installed on `acme` for every repository.
const DEFAULT_APP_ID: u64 = 202;
const DEFAULT_INSTALLATION_ID: u64 = 22;
const DEFAULT_APP_KEY: &str =
    include_str!("../../integrations-platforms/tests/fixtures/app_pkcs8.pem");

/// Built-in App of the server (`GITHUB_APP_ID`), installed on `acme` for every repository. Its
/// key is on one line with literal `\n`, as keys arrive from some secret stores.
const BUILTIN_APP_ID: u64 = 303;
const BUILTIN_INSTALLATION_ID: u64 = 33;
const BUILTIN_APP_KEY: &str =
    include_str!("../../integrations-platforms/tests/fixtures/app_escaped_newlines.txt");

/// A personal access token the mock GitHub accepts for `acme/app` and `acme/web`.
const PAT: &str = "ghp_RouteHealthToken_5b7e0c1d";

const TENANT_ID: &str = "7f1c2a9e-4b0d-4c51-9a6e-0d3b8f2e6a11";
const CLIENT_ID: &str = "c3a8e5d2-91f4-4e07-b6aa-5f0e2d9c7b44";
const CLIENT_SECRET: &str = "EntraClientSecret~RouteHealth_9q2";
const ORGANIZATION: &str = "contoso";

/// Probe timeout of the servers under test, in milliseconds. It leaves room for a healthy App
/// check (three platform calls) on a loaded debug build.
const PROBE_TIMEOUT_MS: u64 = 3000;

/// Probe timeout of the servers in timeout tests, in milliseconds.
const SHORT_TIMEOUT_MS: u64 = 800;

/// Mock GitHub, Entra and Azure DevOps on 127.0.0.1, stopped when dropped.
struct Platforms {
    github: MockGithub,
    entra: MockEntra,
    devops: MockAzureDevops,
}

impl Platforms {
    /// Starts the mocks: three Apps installed on `acme` with `acme/app` and `acme/web`, a PAT
    /// for both repositories, and a service principal that is a user of the `contoso` organization.
    async fn start() -> Platforms {
        let github = MockGithub::start().await.expect("mock GitHub starts");
        for (app_id, installation_id, key) in [
            (APP_ID, INSTALLATION_ID, APP_KEY),
            (DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_APP_KEY),
            (BUILTIN_APP_ID, BUILTIN_INSTALLATION_ID, BUILTIN_APP_KEY),
        ] {
            github.register_app_with_private_key(app_id, key);
            github.add_installation(installation_id, app_id, "acme", RepositorySelection::All);
        }
        github.add_repository("acme/app");
        github.add_repository("acme/web");
        github.add_pat(PAT, &["acme/app", "acme/web"]);

        let entra = MockEntra::start().await.expect("mock Entra starts");
        entra.add_tenant(TENANT_ID);
        entra.add_client_secret(TENANT_ID, CLIENT_ID, CLIENT_SECRET, false);
        let devops = MockAzureDevops::start(&entra)
            .await
            .expect("mock Azure DevOps starts");
        devops.add_service_principal(ORGANIZATION, CLIENT_ID);

        Platforms {
            github,
            entra,
            devops,
        }
    }

    /// Returns server options that point every probe at these mocks.
    fn options(&self) -> Options {
        Options::default()
            .env(
                "INTEGRATIONS_GITHUB_API_URL",
                self.github.base_url().as_str(),
            )
            .env(
                "INTEGRATIONS_ENTRA_AUTHORITY",
                self.entra.authority().as_str(),
            )
            .env("INTEGRATIONS_PROBE_ALLOWED_HOSTS", "127.0.0.1")
            .env("INTEGRATIONS_ALLOW_HTTP_HOSTS", "127.0.0.1")
            .env(
                "INTEGRATIONS_PROBE_TIMEOUT_MS",
                &PROBE_TIMEOUT_MS.to_string(),
            )
    }

    /// Starts a server with [`Platforms::options`].
    fn server(&self) -> Server {
        Server::start_with(self.options())
    }

    fn organization_url(&self) -> String {
        self.devops.organization_url(ORGANIZATION).to_string()
    }
}

// ----- requests -----

async fn health(server: &Server, token: &str, project: Option<&str>) -> Reply {
    let path = match project {
        Some(identifier) => format!("{HEALTH}?project={}", encode(identifier)),
        None => HEALTH.to_owned(),
    };
    call(server, "GET", &path, Some(token), None).await
}

/// Calls the route as owner and checks the status code and the schema.
async fn checked_health(server: &Server, project: Option<&str>) -> Reply {
    let reply = health(server, &server.owner, project).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_schema(&reply);
    reply
}

async fn register_azure_project(server: &Server, identifier: &str) {
    let (organization, rest) = identifier.split_once('/').expect("org/project/repo");
    let (project, repo) = rest.split_once('/').expect("org/project/repo");
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({
            "identifier": identifier,
            "remoteUrl": format!("https://dev.azure.com/{organization}/{project}/_git/{repo}"),
            "platform": "azure-devops",
        })),
    )
    .await;
    assert_eq!(reply.status, 201, "register {identifier}: {}", reply.text);
}

async fn register_gitlab_project(server: &Server, identifier: &str) {
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({
            "identifier": identifier,
            "remoteUrl": format!("https://gitlab.com/{identifier}.git"),
        })),
    )
    .await;
    assert_eq!(reply.status, 201, "register {identifier}: {}", reply.text);
}

/// Body of a GitHub App integration scoped to `projects`.
fn app_scoped(app_id: u64, key: &str, projects: &[&str]) -> Value {
    json!({
        "provider": "github",
        "authType": "app",
        "credentials": {"appId": app_id.to_string(), "privateKey": key},
        "projects": projects,
    })
}

/// Body of a global default GitHub App integration.
fn app_global_default(app_id: u64, key: &str) -> Value {
    json!({
        "provider": "github",
        "authType": "app",
        "credentials": {"appId": app_id.to_string(), "privateKey": key},
        "isGlobal": true,
        "isDefault": true,
    })
}

/// Body of an Azure DevOps service principal integration scoped to `projects`.
fn service_principal(organization_url: &str, secret: &str, projects: &[&str]) -> Value {
    json!({
        "provider": "azure-devops",
        "authType": "service_principal",
        "credentials": {
            "organization_url": organization_url,
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret": secret,
        },
        "projects": projects,
    })
}

/// Registers `acme/app` with a project-scoped App integration and returns the integration id.
async fn app_project(server: &Server) -> String {
    register_project(server, "acme/app").await;
    create_integration(server, app_scoped(APP_ID, APP_KEY, &["acme/app"])).await
}

/// Registers `contoso/tools/build` with a project-scoped service principal integration.
async fn azure_project(server: &Server, platforms: &Platforms) {
    register_azure_project(server, "contoso/tools/build").await;
    let body = service_principal(
        &platforms.organization_url(),
        CLIENT_SECRET,
        &["contoso/tools/build"],
    );
    create_integration(server, body).await;
}

// ----- checks -----

fn entries(reply: &Reply) -> &Vec<Value> {
    reply.body["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("no platforms array: {}", reply.text))
}

fn entry<'a>(reply: &'a Reply, project: &str) -> &'a Value {
    entries(reply)
        .iter()
        .find(|entry| entry["project"] == project)
        .unwrap_or_else(|| panic!("no entry for {project}: {}", reply.text))
}

fn message(entry: &Value) -> String {
    entry["message"].as_str().unwrap_or_default().to_owned()
}

/// Checks the body against `PlatformHealthResultDto` of the sfp server API: exactly `status`,
/// `timestamp` and `platforms`, and in each entry the required `provider`, `project`, `status`
/// and `message` with an optional numeric `latency`, every enum within its listed values.
fn assert_schema(reply: &Reply) {
    let body = reply.body.as_object().expect("body is a JSON object");
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["platforms", "status", "timestamp"], "{}", reply.text);

    let status = body["status"].as_str().unwrap_or_default();
    assert!(
        ["healthy", "degraded", "unhealthy"].contains(&status),
        "overall status {status}"
    );
    let timestamp = body["timestamp"].as_str().unwrap_or_default();
    assert!(
        DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "timestamp {timestamp} is not ISO 8601"
    );

    for entry in entries(reply) {
        let fields = entry.as_object().expect("entry is a JSON object");
        for key in fields.keys() {
            assert!(
                ["provider", "project", "status", "message", "latency"].contains(&key.as_str()),
                "unexpected field {key}: {entry}"
            );
        }
        let provider = entry["provider"].as_str().unwrap_or_default();
        assert!(
            ["github", "azure-devops", "none"].contains(&provider),
            "provider: {entry}"
        );
        assert!(entry["project"].is_string(), "project: {entry}");
        let status = entry["status"].as_str().unwrap_or_default();
        assert!(
            ["healthy", "unhealthy", "not_configured", "initializing"].contains(&status),
            "status: {entry}"
        );
        assert!(!message(entry).is_empty(), "message: {entry}");
        if let Some(latency) = entry.get("latency") {
            assert!(
                latency.as_f64().is_some_and(|ms| ms >= 0.0),
                "latency: {entry}"
            );
        }
    }
}

/// Returns the instant quoted after `resets at ` in a rate-limit message.
fn reset_time(message: &str) -> DateTime<Utc> {
    let start = message
        .find("resets at ")
        .unwrap_or_else(|| panic!("no reset time: {message}"))
        + "resets at ".len();
    let text = message[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default();
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|_| panic!("reset time {text} is not ISO 8601: {message}"))
        .with_timezone(&Utc)
}

/// Runs one check of `acme/app` (project-scoped App) with `fault` on `endpoint` and returns the
/// project's entry.
async fn github_fault(endpoint: GithubEndpoint, fault: Fault) -> Value {
    let platforms = Platforms::start().await;
    platforms.github.set_fault(endpoint, Some(fault));
    let server = platforms.server();
    app_project(&server).await;
    let reply = checked_health(&server, Some("acme/app")).await;
    assert_eq!(reply.body["status"], "unhealthy", "{}", reply.text);
    entry(&reply, "acme/app").clone()
}

// ----- authentication -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_rejected() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    let reply = call(&server, "GET", HEALTH, None, None).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_check() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    app_project(&server).await;
    for (role, token) in [
        ("owner", &server.owner),
        ("member", &server.member),
        ("application", &server.application),
    ] {
        let reply = health(&server, token, None).await;
        assert_eq!(reply.status, 200, "{role}: {}", reply.text);
        assert_eq!(reply.body["status"], "healthy", "{role}: {}", reply.text);
    }
}

// ----- per-project statuses -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_app_healthy() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    let integration = app_project(&server).await;

    let reply = checked_health(&server, None).await;
    let app = entry(&reply, "acme/app");
    assert_eq!(reply.body["status"], "healthy", "{}", reply.text);
    assert_eq!(app["provider"], "github");
    assert_eq!(app["status"], "healthy", "{app}");
    assert!(app["latency"].as_f64().is_some(), "{app}");
    assert!(message(app).contains(&integration), "{app}");
    assert_eq!(platforms.github.count(GithubEndpoint::Repo), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_pat_healthy() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    register_project(&server, "acme/app").await;
    create_integration(&server, common::github_scoped(PAT, &["acme/app"])).await;

    let reply = checked_health(&server, Some("acme/app")).await;
    let app = entry(&reply, "acme/app");
    assert_eq!(app["status"], "healthy", "{app}");
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_devops_healthy() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    azure_project(&server, &platforms).await;

    let reply = checked_health(&server, None).await;
    let build = entry(&reply, "contoso/tools/build");
    assert_eq!(reply.body["status"], "healthy", "{}", reply.text);
    assert_eq!(build["provider"], "azure-devops");
    assert_eq!(build["status"], "healthy", "{build}");
    assert!(build["latency"].as_f64().is_some(), "{build}");
    assert!(message(build).contains(CLIENT_ID), "{build}");
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
    assert_eq!(platforms.devops.count(DevopsEndpoint::ConnectionData), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_not_installed_unhealthy() {
    let platforms = Platforms::start().await;
    platforms.github.add_repository("globex/app");
    let server = platforms.server();
    register_project(&server, "globex/app").await;
    create_integration(&server, app_scoped(APP_ID, APP_KEY, &["globex/app"])).await;

    let reply = checked_health(&server, Some("globex/app")).await;
    let app = entry(&reply, "globex/app");
    assert_eq!(app["status"], "unhealthy", "{app}");
    assert!(message(app).contains("is not installed"), "{app}");
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_not_configured() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    register_project(&server, "acme/app").await;
    register_azure_project(&server, "contoso/tools/build").await;

    let reply = checked_health(&server, None).await;
    let github = entry(&reply, "acme/app");
    let azure = entry(&reply, "contoso/tools/build");
    assert_eq!(github["status"], "not_configured", "{github}");
    assert_eq!(github.get("latency"), None, "{github}");
    assert_eq!(azure["status"], "not_configured", "{azure}");
    assert_eq!(reply.body["status"], "unhealthy", "{}", reply.text);
    assert!(platforms.github.requests().is_empty());
    assert!(platforms.entra.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_platform_reported_none() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    app_project(&server).await;
    register_gitlab_project(&server, "acme/lib").await;

    let all = checked_health(&server, None).await;
    assert_eq!(entries(&all).len(), 1, "{}", all.text);

    let single = checked_health(&server, Some("acme/lib")).await;
    let lib = entry(&single, "acme/lib");
    assert_eq!(lib["provider"], "none", "{lib}");
    assert_eq!(lib["status"], "not_configured", "{lib}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initializing_during_warm_up() {
    let platforms = Platforms::start().await;
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(platforms.options().data_dir(&data_dir));
    app_project(&first).await;
    azure_project(&first, &platforms).await;
    first.terminate();

    // The restarted server warms its token caches in the background; each warm-up request
    // waits this long, so the first check arrives while the warm-up runs.
    let warm_up_latency = Duration::from_millis(1500);
    platforms.github.set_latency(warm_up_latency);
    platforms.entra.set_latency(warm_up_latency);
    let server = Server::start_with(platforms.options().data_dir(&data_dir));

    let started = Instant::now();
    let during = checked_health(&server, None).await;
    let elapsed = started.elapsed();
    let app = entry(&during, "acme/app");
    let build = entry(&during, "contoso/tools/build");
    assert_eq!(app["status"], "initializing", "{app}");
    assert_eq!(app.get("latency"), None, "{app}");
    assert_eq!(build["status"], "initializing", "{build}");
    assert!(elapsed < warm_up_latency, "waited {elapsed:?}");

    platforms.github.set_latency(Duration::ZERO);
    platforms.entra.set_latency(Duration::ZERO);
    let after = wait_until_healthy(&server, Duration::from_secs(20)).await;
    assert_eq!(after.body["status"], "healthy", "{}", after.text);
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 1);
    assert_eq!(platforms.entra.count(EntraEndpoint::Token), 1);
}

/// Polls the route until the overall status is healthy or `limit` passes, and returns the last
/// reply.
async fn wait_until_healthy(server: &Server, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let reply = checked_health(server, None).await;
        if reply.body["status"] == "healthy" || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ----- overall status and modes -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overall_follows_projects() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    app_project(&server).await;
    azure_project(&server, &platforms).await;
    let all_healthy = checked_health(&server, None).await;
    assert_eq!(
        all_healthy.body["status"], "healthy",
        "{}",
        all_healthy.text
    );

    register_project(&server, "acme/docs").await;
    let some_healthy = checked_health(&server, None).await;
    assert_eq!(
        some_healthy.body["status"], "degraded",
        "{}",
        some_healthy.text
    );

    platforms
        .github
        .set_fault(GithubEndpoint::Repo, Some(Fault::Status(500)));
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::Status(500)));
    let none_healthy = checked_health(&server, None).await;
    assert_eq!(
        none_healthy.body["status"], "unhealthy",
        "{}",
        none_healthy.text
    );
    assert_eq!(entries(&none_healthy).len(), 3, "{}", none_healthy.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_filter_checks_one() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    app_project(&server).await;
    register_project(&server, "acme/docs").await;

    let reply = checked_health(&server, Some("ACME/App")).await;
    assert_eq!(entries(&reply).len(), 1, "{}", reply.text);
    assert_eq!(entries(&reply)[0]["project"], "acme/app", "{}", reply.text);
    assert_eq!(reply.body["status"], "healthy", "{}", reply.text);
    assert_eq!(platforms.github.count(GithubEndpoint::Repo), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_project_404() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    let reply = health(&server, &server.member, Some("nobody/nothing")).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.message(), "Project 'nobody/nothing' not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_calls_no_platform() {
    let platforms = Platforms::start().await;
    let server = platforms.server();
    app_project(&server).await;
    for _ in 0..3 {
        let reply = call(&server, "GET", "/health", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert!(platforms.github.requests().is_empty());
}

// ----- credential resolution -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_order() {
    let platforms = Platforms::start().await;
    let options = platforms
        .options()
        .env("GITHUB_APP_ID", &BUILTIN_APP_ID.to_string())
        .env("GITHUB_APP_PRIVATE_KEY", BUILTIN_APP_KEY);
    let server = Server::start_with(options);
    register_project(&server, "acme/app").await;

    let builtin = checked_health(&server, Some("acme/app")).await;
    let text = message(entry(&builtin, "acme/app"));
    assert!(text.contains("built-in GitHub App 303"), "{text}");

    let global =
        create_integration(&server, app_global_default(DEFAULT_APP_ID, DEFAULT_APP_KEY)).await;
    let default = checked_health(&server, Some("acme/app")).await;
    let text = message(entry(&default, "acme/app"));
    assert!(
        text.contains(&format!("GitHub App 202 of integration {global}")),
        "{text}"
    );

    let own = create_integration(&server, app_scoped(APP_ID, APP_KEY, &["acme/app"])).await;
    let scoped = checked_health(&server, Some("acme/app")).await;
    let text = message(entry(&scoped, "acme/app"));
    assert!(
        text.contains(&format!("GitHub App 101 of integration {own}")),
        "{text}"
    );
    assert_eq!(scoped.body["status"], "healthy", "{}", scoped.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_key_from_file() {
    let platforms = Platforms::start().await;
    let temp = tempfile::tempdir().unwrap();
    let key_path = temp.path().join("builtin-app.pem");
    std::fs::write(&key_path, BUILTIN_APP_KEY.replace("\\n", "\n")).unwrap();
    let options = platforms
        .options()
        .env("GITHUB_APP_ID", &BUILTIN_APP_ID.to_string())
        .env("GITHUB_APP_PRIVATE_KEY_PATH", path_text(&key_path));
    let server = Server::start_with(options);
    register_project(&server, "acme/app").await;

    let reply = checked_health(&server, Some("acme/app")).await;
    let app = entry(&reply, "acme/app");
    assert_eq!(app["status"], "healthy", "{app}");
    assert!(message(app).contains("built-in GitHub App 303"), "{app}");
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("temporary path is UTF-8")
}

// ----- platform failures -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_beyond_timeout() {
    let platforms = Platforms::start().await;
    platforms
        .github
        .set_latency(Duration::from_millis(SHORT_TIMEOUT_MS * 3));
    let options = platforms.options().env(
        "INTEGRATIONS_PROBE_TIMEOUT_MS",
        &SHORT_TIMEOUT_MS.to_string(),
    );
    let server = Server::start_with(options);
    app_project(&server).await;

    let reply = checked_health(&server, Some("acme/app")).await;
    let app = entry(&reply, "acme/app");
    assert_eq!(app["status"], "unhealthy", "{app}");
    assert!(message(app).to_lowercase().contains("timed out"), "{app}");
    assert!(message(app).contains("800 ms"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_platform_times_out() {
    let platforms = Platforms::start().await;
    platforms
        .github
        .set_fault(GithubEndpoint::Repo, Some(Fault::Hang));
    let options = platforms.options().env(
        "INTEGRATIONS_PROBE_TIMEOUT_MS",
        &SHORT_TIMEOUT_MS.to_string(),
    );
    let server = Server::start_with(options);
    app_project(&server).await;

    let reply = checked_health(&server, Some("acme/app")).await;
    let app = entry(&reply, "acme/app");
    assert_eq!(app["status"], "unhealthy", "{app}");
    assert!(message(app).to_lowercase().contains("timed out"), "{app}");
    assert_eq!(platforms.github.count(GithubEndpoint::Repo), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_platform_bounded() {
    let platforms = Platforms::start().await;
    platforms
        .github
        .set_fault(GithubEndpoint::Repo, Some(Fault::Hang));
    let options = platforms.options().env(
        "INTEGRATIONS_PROBE_TIMEOUT_MS",
        &SHORT_TIMEOUT_MS.to_string(),
    );
    let server = Server::start_with(options);
    let hanging = ["acme/app", "acme/web", "acme/api", "acme/cli"];
    for identifier in hanging {
        platforms.github.add_repository(identifier);
        register_project(&server, identifier).await;
    }
    create_integration(&server, app_scoped(APP_ID, APP_KEY, &hanging)).await;
    azure_project(&server, &platforms).await;

    let started = Instant::now();
    let reply = checked_health(&server, None).await;
    let elapsed = started.elapsed();
    // One probe timeout plus room for a loaded machine. Checked one after another, the four
    // hanging projects would take four timeouts.
    let limit = Duration::from_millis(SHORT_TIMEOUT_MS * 2);
    assert!(elapsed < limit, "answered after {elapsed:?}");
    assert_eq!(
        entry(&reply, "contoso/tools/build")["status"],
        "healthy",
        "{}",
        reply.text
    );
    for identifier in hanging {
        let hung = entry(&reply, identifier);
        assert!(message(hung).to_lowercase().contains("timed out"), "{hung}");
    }
    assert_eq!(reply.body["status"], "degraded", "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_unhealthy() {
    let app = github_fault(GithubEndpoint::Repo, Fault::Status(401)).await;
    assert_eq!(app["status"], "unhealthy", "{app}");
    assert!(message(&app).contains("(401: Unauthorized)"), "{app}");
    assert!(message(&app).contains("freshly minted"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_rate_limit_reset() {
    let reset_in = Duration::from_secs(120);
    let fault = Fault::RateLimited {
        status: 403,
        reset_in,
    };
    let app = github_fault(GithubEndpoint::Repo, fault).await;
    let text = message(&app);
    let expected = Utc::now() + chrono::Duration::seconds(120);
    let reset = reset_time(&text);
    assert!(text.contains("rate limit exceeded"), "{text}");
    assert!(text.contains("retry after 120 s"), "{text}");
    assert!((reset - expected).num_seconds().abs() <= 10, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_reset() {
    let fault = Fault::RateLimited {
        status: 429,
        reset_in: Duration::from_secs(60),
    };
    let app = github_fault(GithubEndpoint::AccessTokens, fault).await;
    let text = message(&app);
    let expected = Utc::now() + chrono::Duration::seconds(60);
    let reset = reset_time(&text);
    assert!(text.contains("rate limit exceeded"), "{text}");
    assert!((reset - expected).num_seconds().abs() <= 10, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_not_found_unhealthy() {
    let app = github_fault(GithubEndpoint::Repo, Fault::Status(404)).await;
    assert!(message(&app).contains("acme/app not found"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_unhealthy() {
    let app = github_fault(GithubEndpoint::Repo, Fault::Status(502)).await;
    assert!(message(&app).contains("502 Bad Gateway"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_html_unhealthy() {
    let app = github_fault(GithubEndpoint::Repo, Fault::HtmlPage(200)).await;
    assert!(message(&app).contains("without repository JSON"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devops_sign_in_unhealthy() {
    let platforms = Platforms::start().await;
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::SignInPage));
    let server = platforms.server();
    azure_project(&server, &platforms).await;

    let reply = checked_health(&server, Some("contoso/tools/build")).await;
    let build = entry(&reply, "contoso/tools/build");
    assert_eq!(build["status"], "unhealthy", "{build}");
    assert!(
        message(build).contains("203 Non-Authoritative Information"),
        "{build}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_not_followed() {
    let elsewhere = MockGithub::start().await.unwrap();
    let location = elsewhere.base_url().join("repos/acme/app").unwrap();
    let app = github_fault(GithubEndpoint::Repo, Fault::Redirect(location.to_string())).await;
    let target = location.port().unwrap().to_string();
    assert!(message(&app).contains("redirect"), "{app}");
    assert!(message(&app).contains(&target), "{app}");
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_expiry_recovers() {
    let platforms = Platforms::start().await;
    platforms
        .github
        .set_token_validity(Some(Duration::from_millis(300)));
    let server = platforms.server();
    app_project(&server).await;
    let first = checked_health(&server, Some("acme/app")).await;
    assert_eq!(first.body["status"], "healthy", "{}", first.text);

    // The cached token still has most of its announced hour, but GitHub now rejects it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    platforms.github.set_token_validity(None);
    let second = checked_health(&server, Some("acme/app")).await;
    assert_eq!(second.body["status"], "healthy", "{}", second.text);
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 2);
    assert_eq!(platforms.github.count(GithubEndpoint::Repo), 3);
}

// ----- token caching -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_projects_one_token() {
    let platforms = Platforms::start().await;
    // Latency keeps many checks waiting on the one mint at the same time.
    platforms.github.set_latency(Duration::from_millis(20));
    let server = platforms.server();
    create_integration(&server, app_global_default(DEFAULT_APP_ID, DEFAULT_APP_KEY)).await;
    for i in 0..100 {
        let identifier = format!("acme/repo{i}");
        platforms.github.add_repository(&identifier);
        register_project(&server, &identifier).await;
    }

    let reply = checked_health(&server, None).await;
    assert_eq!(entries(&reply).len(), 100, "{}", reply.text);
    assert_eq!(reply.body["status"], "healthy", "{}", reply.text);
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 1);
    assert_eq!(platforms.github.count(GithubEndpoint::Repo), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_one_token() {
    let platforms = Platforms::start().await;
    platforms.github.set_token_lifetime(Duration::from_secs(4));
    let server = platforms.server();
    app_project(&server).await;
    let first = checked_health(&server, Some("acme/app")).await;
    assert_eq!(first.body["status"], "healthy", "{}", first.text);

    // A token living 4 s is refreshed halfway through its life, and the latency keeps both
    // calls inside the one refresh.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    platforms.github.set_latency(Duration::from_millis(200));
    let (a, b) = tokio::join!(
        checked_health(&server, Some("acme/app")),
        checked_health(&server, Some("acme/app")),
    );
    assert_eq!(a.body["status"], "healthy", "{}", a.text);
    assert_eq!(b.body["status"], "healthy", "{}", b.text);
    assert_eq!(platforms.github.count(GithubEndpoint::AccessTokens), 2);
}

// ----- secrets -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_output() {
    let platforms = Platforms::start().await;
    platforms.github.add_repository("acme/docs");
    let temp = tempfile::tempdir().unwrap();
    let options = platforms
        .options()
        .data_dir(&temp.path().join("data"))
        .env("RUST_LOG", "debug")
        .env("GITHUB_APP_ID", &BUILTIN_APP_ID.to_string())
        .env("GITHUB_APP_PRIVATE_KEY", BUILTIN_APP_KEY);
    let mut server = Server::start_with(options.clone());

    app_project(&server).await;
    azure_project(&server, &platforms).await;
    register_project(&server, "acme/web").await;
    create_integration(&server, common::github_scoped(PAT, &["acme/web"])).await;
    register_project(&server, "acme/docs").await;
    register_azure_project(&server, "contoso/tools/deploy").await;
    let wrong_secret = service_principal(
        &platforms.organization_url(),
        "EntraWrongSecret~RouteHealth_4k8",
        &["contoso/tools/deploy"],
    );
    create_integration(&server, wrong_secret).await;

    let mut bodies = vec![checked_health(&server, None).await.text];
    platforms
        .github
        .set_fault(GithubEndpoint::Repo, Some(Fault::Status(401)));
    platforms
        .devops
        .set_fault(DevopsEndpoint::ConnectionData, Some(Fault::Status(401)));
    bodies.push(checked_health(&server, None).await.text);
    let mut log = server.log();

    // A restart warms the token caches. With token requests failing, the warm-up logs why.
    server.terminate();
    platforms
        .github
        .set_fault(GithubEndpoint::AccessTokens, Some(Fault::Status(401)));
    platforms
        .entra
        .set_fault(EntraEndpoint::Token, Some(Fault::Status(401)));
    let restarted = Server::start_with(options);
    let warm_up_failures = ["GitHub token warm-up failed", "Entra token warm-up failed"];
    wait_for_log(&restarted, &warm_up_failures).await;
    bodies.push(checked_health(&restarted, None).await.text);
    log.push_str(&restarted.log());

    let secrets = secret_values(&restarted.data_dir, &[&server, &restarted]);
    for (name, text) in bodies
        .iter()
        .enumerate()
        .map(|(i, body)| (format!("body {i}"), body))
        .chain([("server log".to_owned(), &log)])
    {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} contains {secret}");
        }
        for marker in ["ghs_mock", "mock-access-", "eyJ", "Bearer ", "Basic "] {
            assert!(!text.contains(marker), "{name} contains {marker}");
        }
    }
    assert!(
        log.contains("GitHub probe finished"),
        "debug log not captured"
    );
}

/// Waits until the server's log contains every one of `lines`, for at most 20 s.
async fn wait_for_log(server: &Server, lines: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let log = server.log();
        if lines.iter().all(|line| log.contains(line)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not log {lines:?} within 20 s");
}

/// Returns every secret the server was given or holds: App keys line by line, the PAT, the
/// client secrets, the master and signing keys, and the bearer tokens of the test.
fn secret_values(data_dir: &Path, servers: &[&Server]) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    for key in [APP_KEY, DEFAULT_APP_KEY, BUILTIN_APP_KEY] {
        let key = key.replace("\\n", "\n");
        secrets.extend(
            key.lines()
                .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    secrets.extend(
        [PAT, CLIENT_SECRET, "EntraWrongSecret~RouteHealth_4k8"]
            .iter()
            .map(|secret| (*secret).to_owned()),
    );
    for file in ["master.key", "signing.key"] {
        let text = std::fs::read_to_string(data_dir.join(file)).unwrap();
        secrets.push(text.trim().to_owned());
    }
    for server in servers {
        secrets.extend([
            server.owner.clone(),
            server.member.clone(),
            server.application.clone(),
        ]);
    }
    secrets
}
