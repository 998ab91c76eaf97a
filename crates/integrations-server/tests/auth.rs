//! Bearer token checks and the role table, against one shared server.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{call, create_integration, encode, register_project, unique, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn sign(algorithm: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(role: &str, exp: u64) -> Value {
    json!({"sub": "forger", "role": role, "exp": exp})
}

async fn list_with(token: &str) -> common::Reply {
    let server = Server::shared();
    call(server, "GET", "/sfp/api/projects", Some(token), None).await
}

#[tokio::test]
async fn missing_token_401() {
    let server = Server::shared();
    let reply = call(server, "GET", "/sfp/api/projects", None, None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["statusCode"], 401);
    assert_eq!(reply.body["error"], "Unauthorized");
    assert_eq!(
        reply.headers.get("www-authenticate").unwrap(),
        "Bearer",
        "401 names the Bearer scheme"
    );
}

#[tokio::test]
async fn garbled_headers_401() {
    let server = Server::shared();
    let client = reqwest::Client::new();
    for header in [
        "Bearer",
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "garbage",
    ] {
        let response = client
            .get(server.url("/sfp/api/projects"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        let reply = common::into_reply(response).await;
        assert_eq!(reply.status, 401, "header {header:?}");
        assert_eq!(reply.body["statusCode"], 401, "header {header:?}");
    }
}

#[tokio::test]
async fn expired_token_401() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let token = sign(
        Algorithm::HS256,
        &secret,
        &claims("owner", common::now_seconds() - 3600),
    );
    let reply = list_with(&token).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.message(), "Token expired");
}

#[tokio::test]
async fn leeway_under_sixty_seconds() {
    // jsonwebtoken's default leeway of 60 s would accept this token.
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let token = sign(
        Algorithm::HS256,
        &secret,
        &claims("owner", common::now_seconds() - 30),
    );
    assert_eq!(list_with(&token).await.status, 401);
}

#[tokio::test]
async fn valid_forged_shape_accepted() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let token = sign(
        Algorithm::HS256,
        &secret,
        &claims("member", common::now_seconds() + 60),
    );
    assert_eq!(list_with(&token).await.status, 200);
}

#[tokio::test]
async fn wrong_signature_401() {
    let token = sign(
        Algorithm::HS256,
        "another-secret-that-is-at-least-32-bytes",
        &claims("owner", common::now_seconds() + 600),
    );
    assert_eq!(list_with(&token).await.status, 401);
}

#[tokio::test]
async fn alg_none_401() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("owner", common::now_seconds() + 600).to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert_eq!(list_with(&token).await.status, 401, "token {token}");
    }
}

#[tokio::test]
async fn wrong_algorithm_401() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(
            algorithm,
            &secret,
            &claims("owner", common::now_seconds() + 600),
        );
        assert_eq!(list_with(&token).await.status, 401, "{algorithm:?}");
    }
}

#[tokio::test]
async fn unknown_role_401() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let token = sign(
        Algorithm::HS256,
        &secret,
        &claims("admin", common::now_seconds() + 600),
    );
    let reply = list_with(&token).await;
    assert_eq!(reply.status, 401);
    assert!(reply.message().contains("role"), "{}", reply.text);
}

#[tokio::test]
async fn missing_claims_401() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let cases = [
        json!({"role": "owner", "exp": common::now_seconds() + 600}),
        json!({"sub": "x", "exp": common::now_seconds() + 600}),
        json!({"sub": "x", "role": "owner"}),
    ];
    for case in cases {
        let token = sign(Algorithm::HS256, &secret, &case);
        assert_eq!(list_with(&token).await.status, 401, "claims {case}");
    }
}

// ----- role table: owner, member, application -----

/// Sends one request per role and returns the statuses in that order.
async fn statuses(method: &str, path: &str, body: Option<Value>) -> [u16; 3] {
    let server = Server::shared();
    let mut result = [0; 3];
    for (index, token) in [&server.owner, &server.member, &server.application]
        .into_iter()
        .enumerate()
    {
        result[index] = call(server, method, path, Some(token), body.clone())
            .await
            .status;
    }
    result
}

/// Sends a request as member, then application, then owner, for routes that change state.
async fn statuses_owner_last(method: &str, path: &str, body: Option<Value>) -> [u16; 3] {
    let server = Server::shared();
    let mut result = [0; 3];
    for (index, token) in [&server.member, &server.application, &server.owner]
        .into_iter()
        .enumerate()
    {
        result[index] = call(server, method, path, Some(token), body.clone())
            .await
            .status;
    }
    [result[2], result[0], result[1]]
}

async fn scoped_project() -> String {
    let identifier = format!("{}/repo", unique("roles"));
    register_project(Server::shared(), &identifier).await;
    identifier
}

#[tokio::test]
async fn roles_list_integrations() {
    let [owner, member, application] = statuses("GET", "/sfp/api/integrations", None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_list_defaults() {
    let [owner, member, application] =
        statuses("GET", "/sfp/api/integrations/defaults", None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_create_scoped() {
    let project = scoped_project().await;
    let body = common::github_scoped("ghp_roles_scoped", &[&project]);
    let [owner, member, application] = statuses("POST", "/sfp/api/integrations", Some(body)).await;
    assert_eq!(owner, 201);
    assert_eq!(member, 201);
    assert_eq!(application, 401);
}

#[tokio::test]
async fn roles_create_global() {
    let body = json!({
        "provider": "jfrog",
        "authType": "api_key",
        "credentials": {"base_url": "https://example.jfrog.io", "token": "jf_roles"},
        "isGlobal": true,
    });
    let [owner, member, application] = statuses("POST", "/sfp/api/integrations", Some(body)).await;
    assert_eq!(owner, 201);
    assert_eq!(member, 403);
    assert_eq!(application, 401);
}

#[tokio::test]
async fn roles_update_integration() {
    let project = scoped_project().await;
    let id = create_integration(
        Server::shared(),
        common::github_scoped("ghp_roles_update", &[&project]),
    )
    .await;
    let path = format!("/sfp/api/integrations/{id}");
    let body = json!({"credentials": {"token": "ghp_roles_updated"}});
    let [owner, member, application] = statuses_owner_last("PATCH", &path, Some(body)).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_delete_integration() {
    let project = scoped_project().await;
    let id = create_integration(
        Server::shared(),
        common::github_scoped("ghp_roles_delete", &[&project]),
    )
    .await;
    let path = format!("/sfp/api/integrations/{id}");
    let [owner, member, application] = statuses_owner_last("DELETE", &path, None).await;
    assert_eq!(owner, 204);
    assert_eq!(member, 403);
    assert_eq!(application, 403);

    // The role is checked before the id is parsed.
    let bad_id = "/sfp/api/integrations/not-a-uuid";
    let [owner, member, application] = statuses_owner_last("DELETE", bad_id, None).await;
    assert_eq!(owner, 400);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_read_credentials_filtered() {
    let project = scoped_project().await;
    create_integration(
        Server::shared(),
        common::github_scoped("ghp_roles_read", &[&project]),
    )
    .await;
    let path = format!(
        "/sfp/api/integrations/credentials?project={}",
        encode(&project)
    );
    let [owner, member, application] = statuses("GET", &path, None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 200);
}

#[tokio::test]
async fn roles_read_credentials_unfiltered() {
    let project = scoped_project().await;
    create_integration(
        Server::shared(),
        common::github_scoped("ghp_roles_unfiltered", &[&project]),
    )
    .await;
    let [owner, member, application] =
        statuses("GET", "/sfp/api/integrations/credentials", None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_platform_health() {
    let project = scoped_project().await;
    let path = format!(
        "/sfp/api/integrations/platforms/health?project={}",
        encode(&project)
    );
    let [owner, member, application] = statuses("GET", &path, None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 200);
    assert_eq!(application, 200);
}

#[tokio::test]
async fn roles_create_project() {
    let identifier = format!("{}/repo", unique("roles-create"));
    let body = json!({
        "identifier": identifier,
        "remoteUrl": format!("https://github.com/{identifier}.git"),
    });
    let [owner, member, application] =
        statuses_owner_last("POST", "/sfp/api/projects", Some(body)).await;
    assert_eq!(owner, 201);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_list_projects() {
    let [owner, member, application] = statuses("GET", "/sfp/api/projects", None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 200);
    assert_eq!(application, 200);
}

#[tokio::test]
async fn roles_find_project() {
    let project = scoped_project().await;
    let path = format!("/sfp/api/projects/{}", encode(&project));
    let [owner, member, application] = statuses("GET", &path, None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 200);
    assert_eq!(application, 200);
}

#[tokio::test]
async fn roles_delete_project() {
    let project = scoped_project().await;
    let path = format!("/sfp/api/projects/{}", encode(&project));
    let [owner, member, application] = statuses_owner_last("DELETE", &path, None).await;
    assert_eq!(owner, 204);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn roles_audit_log() {
    let [owner, member, application] = statuses("GET", "/sfp/api/audit", None).await;
    assert_eq!(owner, 200);
    assert_eq!(member, 403);
    assert_eq!(application, 403);
}

#[tokio::test]
async fn every_route_needs_token() {
    let server = Server::shared();
    let routes = [
        ("GET", "/sfp/api/integrations"),
        ("POST", "/sfp/api/integrations"),
        ("GET", "/sfp/api/integrations/defaults"),
        ("GET", "/sfp/api/integrations/credentials?provider=github"),
        (
            "PATCH",
            "/sfp/api/integrations/00000000-0000-0000-0000-000000000000",
        ),
        (
            "DELETE",
            "/sfp/api/integrations/00000000-0000-0000-0000-000000000000",
        ),
        ("GET", "/sfp/api/integrations/platforms/health"),
        ("POST", "/sfp/api/projects"),
        ("GET", "/sfp/api/projects"),
        ("GET", "/sfp/api/projects/a%2Fb"),
        ("DELETE", "/sfp/api/projects/a%2Fb"),
        ("GET", "/sfp/api/audit"),
    ];
    for (method, path) in routes {
        let reply = call(server, method, path, None, Some(json!({}))).await;
        assert_eq!(reply.status, 401, "{method} {path}");
    }
}

#[tokio::test]
async fn future_nbf_rejected() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let now = common::now_seconds();
    let claims = serde_json::json!({
        "sub": "early-bird",
        "role": "owner",
        "exp": now + 3600,
        "nbf": now + 3000,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let response = reqwest::Client::new()
        .get(server.url("/sfp/api/projects"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn string_nbf_rejected() {
    let server = Server::shared();
    let secret = common::signing_secret(&server.data_dir);
    let now = common::now_seconds();
    let claims = serde_json::json!({
        "sub": "string-nbf",
        "role": "owner",
        "exp": now + 3600,
        "nbf": (now + 3000).to_string(),
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let response = reqwest::Client::new()
        .get(server.url("/sfp/api/projects"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
