//! The platform health route against an in-process mock GitHub on loopback.

mod common;

use common::{call, create_integration, encode, register_project, unique, Options, Server};
use integrations_platforms::mock::MockGithub;
use serde_json::Value;

const TOKEN: &str = "ghp_HealthProbeToken_91ac";

fn entry<'a>(reply: &'a common::Reply, project: &str) -> &'a Value {
    reply.body["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["project"] == project)
        .unwrap_or_else(|| panic!("no entry for {project}: {}", reply.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_github() {
    let github = MockGithub::start().await.unwrap();
    let owner = unique("acme");
    let visible = format!("{owner}/visible");
    let hidden = format!("{owner}/hidden");
    github.add_repository(&visible);
    github.add_repository(&hidden);
    github.add_pat(TOKEN, &[&visible]);

    let options = Options::default()
        .env("INTEGRATIONS_GITHUB_API_URL", github.base_url().as_str())
        .env("INTEGRATIONS_PROBE_ALLOWED_HOSTS", "127.0.0.1");
    let server = Server::start_with(options);
    register_project(&server, &visible).await;
    register_project(&server, &hidden).await;
    create_integration(&server, common::github_global(TOKEN, true)).await;

    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/platforms/health",
        Some(&server.member),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["status"], "degraded");
    assert!(reply.body["timestamp"].is_string());
    assert_eq!(reply.body["platforms"].as_array().unwrap().len(), 2);
    let healthy = entry(&reply, &visible);
    assert_eq!(healthy["provider"], "github");
    assert_eq!(healthy["status"], "healthy");
    assert!(healthy["latency"].is_number());
    assert_eq!(entry(&reply, &hidden)["status"], "unhealthy");
    assert!(!reply.text.contains(TOKEN));

    let path = format!(
        "/sfp/api/integrations/platforms/health?project={}",
        encode(&visible)
    );
    let single = call(&server, "GET", &path, Some(&server.application), None).await;
    assert_eq!(single.body["status"], "healthy", "{}", single.text);
    assert_eq!(single.body["platforms"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_calls_no_platform() {
    let github = MockGithub::start().await.unwrap();
    let options = Options::default()
        .env("INTEGRATIONS_GITHUB_API_URL", github.base_url().as_str())
        .env("INTEGRATIONS_PROBE_ALLOWED_HOSTS", "127.0.0.1");
    let server = Server::start_with(options);
    let project = format!("{}/repo", unique("ready"));
    github.add_repository(&project);
    github.add_pat(TOKEN, &[&project]);
    register_project(&server, &project).await;
    create_integration(&server, common::github_global(TOKEN, true)).await;

    let before = github.requests().len();
    for _ in 0..3 {
        let reply = call(&server, "GET", "/health", None, None).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(github.requests().len(), before);
}

#[tokio::test]
async fn health_unknown_project_404() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations/platforms/health?project=nobody%2Fnothing",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.message(), "Project 'nobody/nothing' not found");
}
