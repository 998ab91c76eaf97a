//! Secrets at rest and in logs: distinctive credential values must not appear in the SQLite
//! files, the server's debug log, error bodies or the audit log.

mod common;

use std::path::Path;

use common::{call, create_integration, encode, register_project, unique, Server};
use serde_json::{json, Value};

const SECRETS: &[&str] = &[
    "ghp_SecretScanGithubToken_8c1f",
    "AdoClientSecret~ScanValue_4d2e",
    "JiraApiTokenScanValue_77ab",
    "sk-ant-ScanAnthropicKey_0b9d",
    "ghp_SecretScanReplacedToken_e3a1",
    "ghp_SecretScanRejectedToken_51c0",
];

fn database_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("integrations.db"))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

async fn store_secrets(server: &Server, project: &str) -> Vec<String> {
    let mut ids = Vec::new();
    ids.push(create_integration(server, common::github_scoped(SECRETS[0], &[project])).await);
    ids.push(
        create_integration(
            server,
            json!({
                "provider": "azure-devops",
                "authType": "service_principal",
                "credentials": {
                    "organization_url": "https://dev.azure.com/acme",
                    "client_id": "client-id",
                    "client_secret": SECRETS[1],
                    "tenant_id": "tenant-id",
                },
                "isGlobal": true,
            }),
        )
        .await,
    );
    ids.push(
        create_integration(
            server,
            json!({
                "provider": "jira",
                "authType": "basic_auth",
                "credentials": {"base_url": "https://acme.atlassian.net", "username": "bot", "api_token": SECRETS[2]},
                "isGlobal": true,
                "isDefault": true,
            }),
        )
        .await,
    );
    ids.push(
        create_integration(
            server,
            json!({"provider": "ai_anthropic", "authType": "api_key", "credentials": {"api_key": SECRETS[3]}, "isGlobal": true}),
        )
        .await,
    );

    let replaced = call(
        server,
        "PATCH",
        &format!("/sfp/api/integrations/{}", ids[0]),
        Some(&server.owner),
        Some(json!({"credentials": {"token": SECRETS[4]}})),
    )
    .await;
    assert_eq!(replaced.status, 200);

    let rejected = call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(&server.owner),
        Some(json!({"provider": "github", "authType": "pat", "credentials": {"token": [SECRETS[5]]}, "isGlobal": true})),
    )
    .await;
    assert_eq!(rejected.status, 400);
    assert!(!rejected.text.contains(SECRETS[5]));
    ids
}

#[tokio::test]
async fn secrets_absent_at_rest() {
    let mut server = Server::start_with(common::Options::default().env("RUST_LOG", "debug"));
    let project = format!("{}/repo", unique("secrets"));
    register_project(&server, &project).await;
    let ids = store_secrets(&server, &project).await;

    let read = call(
        &server,
        "GET",
        &format!(
            "/sfp/api/integrations/credentials?project={}",
            encode(&project)
        ),
        Some(&server.application),
        None,
    )
    .await;
    assert_eq!(read.body[0]["credentials"]["token"], SECRETS[4]);
    let all = call(
        &server,
        "GET",
        "/sfp/api/integrations/credentials",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(all.body.as_array().unwrap().len(), ids.len());
    let deleted = call(
        &server,
        "DELETE",
        &format!("/sfp/api/integrations/{}", ids[3]),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);

    let audit = call(
        &server,
        "GET",
        "/sfp/api/audit?limit=1000",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(audit.status, 200);
    for secret in SECRETS {
        assert!(!audit.text.contains(secret), "audit log contains {secret}");
    }
    let events = audit.body.as_array().unwrap();
    for action in [
        "integration_created",
        "integration_updated",
        "integration_deleted",
        "credentials_read",
        "project_created",
    ] {
        let event = events.iter().find(|event| event["action"] == action);
        assert!(event.is_some(), "audit has {action}");
        let event = event.unwrap();
        assert!(event["actorSubject"].is_string(), "{action} has an actor");
        assert_eq!(event["outcome"], "success", "{action} outcome");
    }
    let application_read = events
        .iter()
        .find(|event| event["action"] == "credentials_read" && event["actorSubject"] == "test-app");
    assert!(
        application_read.is_some(),
        "application read audited with its subject"
    );
    assert_eq!(application_read.unwrap()["integrationIds"], json!([ids[0]]));

    let listed = call(
        &server,
        "GET",
        "/sfp/api/integrations",
        Some(&server.owner),
        None,
    )
    .await;
    for secret in SECRETS {
        assert!(
            !listed.text.contains(secret),
            "metadata list contains {secret}"
        );
    }

    // Read the files while the server still runs (WAL not yet merged) and after it stops.
    let mut scanned = 0;
    for path in database_files(&server.data_dir) {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in SECRETS {
            assert!(
                !contains(&bytes, secret),
                "{} contains {secret}",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "database files were scanned");

    let status = server.terminate();
    assert!(status.success(), "{status}");
    for path in database_files(&server.data_dir) {
        let bytes = std::fs::read(&path).unwrap();
        for secret in SECRETS {
            assert!(
                !contains(&bytes, secret),
                "{} contains {secret} after stop",
                path.display()
            );
        }
    }

    let log = server.log();
    assert!(log.contains("DEBUG"), "server ran with debug logging");
    assert!(
        log.contains("/sfp/api/integrations/credentials"),
        "requests were logged"
    );
    for secret in SECRETS {
        assert!(!log.contains(secret), "server log contains {secret}");
    }
    for token in [&server.owner, &server.member, &server.application] {
        assert!(
            !log.contains(token.as_str()),
            "server log contains a bearer token"
        );
    }
    let signing_key = common::signing_secret(&server.data_dir);
    assert!(
        !log.contains(&signing_key),
        "server log contains the signing key"
    );
    let master_key = std::fs::read_to_string(server.data_dir.join("master.key")).unwrap();
    assert!(
        !log.contains(master_key.trim()),
        "server log contains the master key"
    );
}

#[tokio::test]
async fn denied_read_audited() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations/credentials",
        Some(&server.application),
        None,
    )
    .await;
    assert_eq!(reply.status, 403);
    let audit = call(server, "GET", "/sfp/api/audit", Some(&server.owner), None).await;
    let denied: Vec<&Value> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["action"] == "credentials_read" && event["outcome"] == "denied")
        .collect();
    assert!(!denied.is_empty(), "{}", audit.text);
    assert_eq!(denied[0]["actorRole"], "application");
}
