//! Integration rules over HTTP: create scopes, defaults, updates, deletes and credential reads.
//!
//! Tests that depend on which global integrations exist start a server of their own. The rest
//! share one server and use project identifiers unique to each test.

mod common;

use std::collections::BTreeSet;

use common::{call, create_integration, encode, register_project, unique, Server};
use serde_json::{json, Value};

async fn new_project(server: &Server) -> String {
    let identifier = format!("{}/repo", unique("integrations"));
    register_project(server, &identifier).await;
    identifier
}

async fn create_as(server: &Server, token: &str, body: Value) -> common::Reply {
    call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(token),
        Some(body),
    )
    .await
}

async fn read_credentials(server: &Server, token: &str, query: &str) -> common::Reply {
    let path = format!("/sfp/api/integrations/credentials{query}");
    call(server, "GET", &path, Some(token), None).await
}

fn ids(reply: &common::Reply, key: &str) -> Vec<String> {
    reply
        .body
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|row| row[key].as_str().unwrap().to_owned())
        .collect()
}

// ----- create -----

#[tokio::test]
async fn create_returns_metadata() {
    let server = Server::shared();
    let project = new_project(server).await;
    let reply = create_as(
        server,
        &server.owner,
        common::github_scoped("ghp_create_metadata", &[&project]),
    )
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body["provider"], "github");
    assert_eq!(reply.body["authType"], "pat");
    assert_eq!(reply.body["isGlobal"], false);
    assert_eq!(reply.body["isDefault"], false);
    assert_eq!(reply.body["projects"], json!([project]));
    assert_eq!(reply.body["credentialFields"], json!(["token"]));
    assert!(reply.body["createdAt"].is_string());
    assert!(reply.body["updatedAt"].is_string());
    assert!(!reply.text.contains("ghp_create_metadata"));
}

#[tokio::test]
async fn create_without_scope_400() {
    let server = Server::shared();
    let body = json!({"provider": "github", "authType": "pat", "credentials": {"token": "t"}});
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.message(),
        "Either isGlobal or projects must be specified"
    );
}

#[tokio::test]
async fn create_unknown_project_400() {
    let server = Server::shared();
    let missing = format!("{}/repo", unique("missing"));
    let reply = create_as(
        server,
        &server.owner,
        common::github_scoped("ghp_x", &[&missing]),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.message(), format!("Project '{missing}' not found"));
}

#[tokio::test]
async fn member_global_403() {
    let server = Server::shared();
    let reply = create_as(
        server,
        &server.member,
        common::github_global("ghp_x", false),
    )
    .await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn member_default_403() {
    let server = Server::shared();
    let reply = create_as(server, &server.member, common::github_global("ghp_x", true)).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn application_create_401() {
    let server = Server::shared();
    let project = new_project(server).await;
    let reply = create_as(
        server,
        &server.application,
        common::github_scoped("ghp_x", &[&project]),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn scoped_default_400() {
    let server = Server::shared();
    let project = new_project(server).await;
    let mut body = common::github_scoped("ghp_x", &[&project]);
    body["isDefault"] = json!(true);
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("global"), "{}", reply.text);
}

#[tokio::test]
async fn unknown_credential_key_400() {
    let server = Server::shared();
    let project = new_project(server).await;
    let body = json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"tokne": "ghp_typo_secret"},
        "projects": [project],
    });
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("token"), "{}", reply.text);
    assert!(!reply.text.contains("ghp_typo_secret"));
}

#[tokio::test]
async fn unknown_provider_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "githab",
        "authType": "pat",
        "credentials": {"token": "t"},
        "isGlobal": true,
    });
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("github"), "{}", reply.text);
    assert!(reply.message().contains("azure-devops"), "{}", reply.text);
}

#[tokio::test]
async fn unknown_auth_type_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "github",
        "authType": "password",
        "credentials": {"token": "t"},
        "isGlobal": true,
    });
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.message().contains("service_principal"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn plain_http_url_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "jira",
        "authType": "basic_auth",
        "credentials": {"base_url": "http://jira.example.com", "username": "u", "api_token": "t"},
        "isGlobal": true,
    });
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("https"), "{}", reply.text);
}

// ----- defaults -----

#[tokio::test]
async fn defaults_one_per_category() {
    let server = Server::start();
    let first = create_integration(&server, common::github_global("ghp_first", true)).await;
    let second = create_integration(&server, common::github_global("ghp_second", true)).await;
    let jira = create_integration(
        &server,
        json!({
            "provider": "jira",
            "authType": "basic_auth",
            "credentials": {"base_url": "https://acme.atlassian.net", "username": "u", "api_token": "t"},
            "isGlobal": true,
            "isDefault": true,
        }),
    )
    .await;

    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/defaults",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    let defaults: BTreeSet<String> = ids(&reply, "id").into_iter().collect();
    assert_eq!(defaults, BTreeSet::from([second.clone(), jira]));
    assert!(!defaults.contains(&first));
}

#[tokio::test]
async fn ai_providers_share_default() {
    let server = Server::start();
    let openai = create_integration(
        &server,
        json!({"provider": "ai_openai", "authType": "api_key", "credentials": {"api_key": "sk-openai"}, "isGlobal": true, "isDefault": true}),
    )
    .await;
    let anthropic = create_integration(
        &server,
        json!({"provider": "ai_anthropic", "authType": "api_key", "credentials": {"api_key": "sk-ant"}, "isGlobal": true, "isDefault": true}),
    )
    .await;

    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/defaults",
        Some(&server.owner),
        None,
    )
    .await;
    let defaults = ids(&reply, "id");
    assert_eq!(defaults, vec![anthropic]);
    assert!(!defaults.contains(&openai));
}

#[tokio::test]
async fn patch_moves_default() {
    let server = Server::start();
    let first = create_integration(&server, common::github_global("ghp_first", true)).await;
    let second = create_integration(&server, common::github_global("ghp_second", false)).await;

    let reply = call(
        &server,
        "PATCH",
        &format!("/sfp/api/integrations/{second}"),
        Some(&server.owner),
        Some(json!({"isDefault": true})),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["isDefault"], true);

    let listed = call(
        &server,
        "GET",
        "/sfp/api/integrations?provider=github",
        Some(&server.owner),
        None,
    )
    .await;
    let rows = listed.body.as_array().unwrap();
    let first_row = rows.iter().find(|row| row["id"] == first.as_str()).unwrap();
    let second_row = rows
        .iter()
        .find(|row| row["id"] == second.as_str())
        .unwrap();
    assert_eq!(first_row["isDefault"], false);
    assert_eq!(second_row["isDefault"], true);
}

#[tokio::test]
async fn concurrent_defaults_leave_one() {
    let server = Server::start();
    let mut created = Vec::new();
    for index in 0..30 {
        created.push(
            create_integration(
                &server,
                common::github_global(&format!("ghp_race_{index}"), false),
            )
            .await,
        );
    }

    let requests = created.iter().map(|id| {
        let path = format!("/sfp/api/integrations/{id}");
        let server = &server;
        async move {
            call(
                server,
                "PATCH",
                &path,
                Some(&server.owner),
                Some(json!({"isDefault": true})),
            )
            .await
            .status
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == 200 || *status == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");

    let listed = call(
        &server,
        "GET",
        "/sfp/api/integrations?provider=github",
        Some(&server.owner),
        None,
    )
    .await;
    let defaults = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["isDefault"] == true)
        .count();
    assert_eq!(defaults, 1);
    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/defaults",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.body.as_array().unwrap().len(), 1);
}

// ----- update -----

#[tokio::test]
async fn patch_immutable_fields_400() {
    let server = Server::shared();
    let project = new_project(server).await;
    let id = create_integration(server, common::github_scoped("ghp_immutable", &[&project])).await;
    let cases = [
        ("provider", json!({"provider": "jira"})),
        ("authType", json!({"authType": "app"})),
        ("projects", json!({"projects": []})),
        ("isGlobal", json!({"isGlobal": true})),
    ];
    for (field, body) in cases {
        let reply = call(
            server,
            "PATCH",
            &format!("/sfp/api/integrations/{id}"),
            Some(&server.owner),
            Some(body),
        )
        .await;
        assert_eq!(reply.status, 400, "{field}");
        assert!(
            reply
                .message()
                .starts_with(&format!("{field} cannot be changed after creation")),
            "{field}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn patch_unknown_id_404() {
    let server = Server::shared();
    let path = format!("/sfp/api/integrations/{}", uuid::Uuid::new_v4());
    let reply = call(
        server,
        "PATCH",
        &path,
        Some(&server.owner),
        Some(json!({"isDefault": false})),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.message(), "Integration not found");
}

#[tokio::test]
async fn non_uuid_id_400() {
    let server = Server::shared();
    for method in ["PATCH", "DELETE"] {
        let reply = call(
            server,
            method,
            "/sfp/api/integrations/not-a-uuid",
            Some(&server.owner),
            Some(json!({})),
        )
        .await;
        assert_eq!(reply.status, 400, "{method}");
        assert_eq!(reply.message(), "id must be a UUID", "{method}");
    }
}

#[tokio::test]
async fn patch_replaces_credentials() {
    let server = Server::shared();
    let project = new_project(server).await;
    let id = create_integration(server, common::github_scoped("ghp_before", &[&project])).await;
    let reply = call(
        server,
        "PATCH",
        &format!("/sfp/api/integrations/{id}"),
        Some(&server.owner),
        Some(json!({"credentials": {"token": "ghp_after"}})),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(!reply.text.contains("ghp_after"));

    let read = read_credentials(
        server,
        &server.application,
        &format!("?project={}", encode(&project)),
    )
    .await;
    assert_eq!(read.body[0]["credentials"]["token"], "ghp_after");
}

#[tokio::test]
async fn patch_scoped_default_400() {
    let server = Server::shared();
    let project = new_project(server).await;
    let id = create_integration(server, common::github_scoped("ghp_scoped", &[&project])).await;
    let reply = call(
        server,
        "PATCH",
        &format!("/sfp/api/integrations/{id}"),
        Some(&server.owner),
        Some(json!({"isDefault": true})),
    )
    .await;
    assert_eq!(reply.status, 400);
}

// ----- delete -----

#[tokio::test]
async fn delete_detaches_projects() {
    let server = Server::shared();
    let first = new_project(server).await;
    let second = new_project(server).await;
    let id = create_integration(
        server,
        common::github_scoped("ghp_detach", &[&first, &second]),
    )
    .await;

    let reply = call(
        server,
        "DELETE",
        &format!("/sfp/api/integrations/{id}"),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 204);
    assert!(reply.text.is_empty());

    let listed = call(
        server,
        "GET",
        "/sfp/api/integrations",
        Some(&server.owner),
        None,
    )
    .await;
    assert!(!ids(&listed, "id").contains(&id));
    let again = call(
        server,
        "DELETE",
        &format!("/sfp/api/integrations/{id}"),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(again.status, 404);
    let project = call(
        server,
        "DELETE",
        &format!("/sfp/api/projects/{}", encode(&first)),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(project.status, 204, "{}", project.text);
}

#[tokio::test]
async fn delete_project_in_use_409() {
    let server = Server::shared();
    let project = new_project(server).await;
    let other = new_project(server).await;
    let only = create_integration(server, common::github_scoped("ghp_only", &[&project])).await;
    let shared = create_integration(
        server,
        common::github_scoped("ghp_shared", &[&project, &other]),
    )
    .await;

    let reply = call(
        server,
        "DELETE",
        &format!("/sfp/api/projects/{}", encode(&project)),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 409);
    assert!(reply.message().contains(&only), "{}", reply.text);
    assert!(!reply.message().contains(&shared), "{}", reply.text);

    let still = call(
        server,
        "GET",
        &format!("/sfp/api/projects/{}", encode(&project)),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(still.status, 200);
}

// ----- credential reads -----

#[tokio::test]
async fn credentials_wire_shape() {
    let server = Server::shared();
    let project = new_project(server).await;
    let id = create_integration(server, common::github_scoped("ghp_shape", &[&project])).await;
    let reply = read_credentials(
        server,
        &server.owner,
        &format!("?project={}", encode(&project)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!([{
            "integration_id": id,
            "provider": "github",
            "auth_type": "pat",
            "credentials": {"token": "ghp_shape"},
            "is_global": false,
            "is_default": false,
            "projects": [project],
            "config": {},
        }])
    );
    assert_eq!(reply.headers.get("cache-control").unwrap(), "no-store");
}

#[tokio::test]
async fn credentials_resolution_order() {
    let server = Server::start();
    let scoped_project = new_project(&server).await;
    let plain_project = new_project(&server).await;
    let global = create_integration(&server, common::github_global("ghp_global", false)).await;
    let default = create_integration(&server, common::github_global("ghp_default", true)).await;
    let scoped = create_integration(
        &server,
        common::github_scoped("ghp_scoped", &[&scoped_project]),
    )
    .await;

    let reply = read_credentials(
        &server,
        &server.application,
        &format!("?project={}", encode(&scoped_project)),
    )
    .await;
    assert_eq!(
        ids(&reply, "integration_id"),
        vec![scoped.clone()],
        "project-scoped first"
    );

    let reply = read_credentials(
        &server,
        &server.application,
        &format!("?project={}&provider=github", encode(&plain_project)),
    )
    .await;
    assert_eq!(
        ids(&reply, "integration_id"),
        vec![default.clone(), global.clone()],
        "global, default first"
    );

    let reply = read_credentials(&server, &server.application, "?provider=github").await;
    let all = ids(&reply, "integration_id");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], default, "provider alone: default first");
    assert!(all.contains(&scoped));
    assert!(all.contains(&global));
}

#[tokio::test]
async fn credentials_not_found_404() {
    let server = Server::start();
    let project = new_project(&server).await;
    let reply = read_credentials(
        &server,
        &server.application,
        &format!("?project={}", encode(&project)),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.message(),
        format!("No integration found for project={project}")
    );
}

#[tokio::test]
async fn credentials_unknown_project_404() {
    let server = Server::shared();
    let reply = read_credentials(server, &server.owner, "?project=nobody%2Fnothing").await;
    assert_eq!(reply.status, 404);
    assert!(reply.message().contains("nobody/nothing"), "{}", reply.text);
}

#[tokio::test]
async fn application_needs_filter_403() {
    let server = Server::shared();
    let reply = read_credentials(server, &server.application, "").await;
    assert_eq!(reply.status, 403);
    assert!(
        reply.message().contains("provider or project"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn credentials_azuredevops_alias() {
    let server = Server::shared();
    let project = new_project(server).await;
    let id = create_integration(
        server,
        json!({
            "provider": "azuredevops",
            "authType": "pat",
            "credentials": {"organization_url": "https://dev.azure.com/acme", "token": "ado_alias"},
            "projects": [project],
        }),
    )
    .await;
    let reply = read_credentials(
        server,
        &server.owner,
        &format!("?project={}&provider=azuredevops", encode(&project)),
    )
    .await;
    assert_eq!(ids(&reply, "integration_id"), vec![id]);
    assert_eq!(reply.body[0]["provider"], "azure-devops");
}

#[tokio::test]
async fn list_filters_by_provider() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations?provider=github",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    for row in reply.body.as_array().unwrap() {
        assert_eq!(row["provider"], "github");
        assert!(row.get("credentials").is_none());
    }
}

#[tokio::test]
async fn secret_named_config_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "datadog",
        "authType": "api_key",
        "credentials": {"api_key": "dd_real_key"},
        "config": {"api_key": "dd_CONFIGSECRET999"},
        "isGlobal": true,
    });
    let reply = create_as(server, &server.owner, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("config.api_key"), "{}", reply.text);
    assert!(!reply.text.contains("dd_CONFIGSECRET999"));
}
