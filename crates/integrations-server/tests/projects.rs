//! Project registration, lookup by URL-encoded identifier, and deletion.

mod common;

use common::{call, encode, register_project, unique, Server};
use serde_json::json;

fn identifier(prefix: &str) -> String {
    format!("{}/Repo", unique(prefix))
}

#[tokio::test]
async fn create_returns_project() {
    let server = Server::shared();
    let identifier = identifier("create");
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier, "remoteUrl": format!("https://github.com/{identifier}.git")})),
    )
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body["identifier"], identifier.as_str());
    assert_eq!(reply.body["platform"], "github");
    assert!(reply.body["remoteUrl"].is_string());
    assert!(reply.body["createdAt"].is_string());
}

#[tokio::test]
async fn platform_inferred_azure() {
    let server = Server::shared();
    let identifier = format!("{}/project/repo", unique("ado"));
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier, "remoteUrl": "https://dev.azure.com/acme/project/_git/repo"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["platform"], "azure-devops");
}

#[tokio::test]
async fn explicit_platform_kept() {
    let server = Server::shared();
    let identifier = identifier("explicit");
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier, "remoteUrl": "https://git.example.com/x.git", "platform": "gitlab"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["platform"], "gitlab");
}

#[tokio::test]
async fn unknown_platform_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier("bad"), "remoteUrl": "https://github.com/a/b.git", "platform": "svn"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("bitbucket"), "{}", reply.text);
}

#[tokio::test]
async fn duplicate_project_409() {
    let server = Server::shared();
    let identifier = identifier("duplicate");
    register_project(server, &identifier).await;
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier.to_uppercase(), "remoteUrl": "https://github.com/a/b.git"})),
    )
    .await;
    assert_eq!(reply.status, 409);
}

#[tokio::test]
async fn find_encoded_identifier() {
    let server = Server::shared();
    let identifier = identifier("encoded");
    register_project(server, &identifier).await;
    for path in [
        encode(&identifier),
        identifier.clone(),
        identifier.replace('/', "%2f"),
    ] {
        let reply = call(
            server,
            "GET",
            &format!("/sfp/api/projects/{path}"),
            Some(&server.member),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body["identifier"], identifier.as_str(), "{path}");
    }
}

#[tokio::test]
async fn find_case_insensitive() {
    let server = Server::shared();
    let identifier = identifier("case");
    register_project(server, &identifier).await;
    let path = format!("/sfp/api/projects/{}", encode(&identifier.to_uppercase()));
    let reply = call(server, "GET", &path, Some(&server.application), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["identifier"], identifier.as_str());
}

#[tokio::test]
async fn find_unknown_404() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/projects/nobody%2Fnothing",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.message(), "Project 'nobody/nothing' not found");
}

#[tokio::test]
async fn list_includes_project() {
    let server = Server::shared();
    let identifier = identifier("listed");
    register_project(server, &identifier).await;
    let reply = call(
        server,
        "GET",
        "/sfp/api/projects",
        Some(&server.member),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    let listed: Vec<&str> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["identifier"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&identifier.as_str()));
}

#[tokio::test]
async fn delete_then_gone() {
    let server = Server::shared();
    let identifier = identifier("delete");
    register_project(server, &identifier).await;
    let path = format!("/sfp/api/projects/{}", encode(&identifier.to_lowercase()));
    let reply = call(server, "DELETE", &path, Some(&server.owner), None).await;
    assert_eq!(reply.status, 204);
    let again = call(server, "GET", &path, Some(&server.owner), None).await;
    assert_eq!(again.status, 404);
    let twice = call(server, "DELETE", &path, Some(&server.owner), None).await;
    assert_eq!(twice.status, 404);
}

#[tokio::test]
async fn github_identifier_shape_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": "no-slash", "remoteUrl": "https://github.com/a/b.git"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.message().contains("owner/repo"), "{}", reply.text);
}

#[tokio::test]
async fn remote_url_credentials_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"identifier": identifier("creds"), "remoteUrl": "https://user:hunter2secret@github.com/a/b.git"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(!reply.text.contains("hunter2secret"));
}

#[tokio::test]
async fn missing_identifier_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(json!({"remoteUrl": "https://github.com/a/b.git"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.message(), "identifier is required");
}

#[tokio::test]
async fn remote_url_token_forms_400() {
    let server = Server::shared();
    let remotes = [
        "https://ghp_TOKENINURL1234567890@github.com/a/b.git",
        "https://:ghp_PASSONLY1234567890@github.com/a/b.git",
        "https://github.com/a/b.git?access_token=ghp_QUERY1234567890",
        "ssh://git:ghp_SSHPASS1234567890@github.com/a/b.git",
    ];
    for remote in remotes {
        let reply = call(
            server,
            "POST",
            "/sfp/api/projects",
            Some(&server.owner),
            Some(json!({"identifier": identifier("token-url"), "remoteUrl": remote})),
        )
        .await;
        assert_eq!(reply.status, 400, "{remote}");
        assert!(
            !reply.text.contains("1234567890"),
            "{remote}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn ssh_remote_with_login_accepted() {
    let server = Server::shared();
    for remote in ["git@github.com:a/b.git", "ssh://git@github.com/a/b.git"] {
        let reply = call(
            server,
            "POST",
            "/sfp/api/projects",
            Some(&server.owner),
            Some(json!({"identifier": identifier("ssh"), "remoteUrl": remote})),
        )
        .await;
        assert_eq!(reply.status, 201, "{remote}: {}", reply.text);
    }
}

#[tokio::test]
async fn lookalike_identifiers_400() {
    let server = Server::shared();
    let identifiers = [
        "../..".to_owned(),
        "acme\u{200b}/repo".to_owned(),
        "acme/\u{202e}oper".to_owned(),
        "acme/re po".to_owned(),
    ];
    for candidate in identifiers {
        let reply = call(
            server,
            "POST",
            "/sfp/api/projects",
            Some(&server.owner),
            Some(json!({"identifier": candidate, "remoteUrl": "https://github.com/acme/repo.git"})),
        )
        .await;
        assert_eq!(reply.status, 400, "{candidate:?}: {}", reply.text);
    }
}
