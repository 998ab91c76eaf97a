//! The JSON error body for bad input, unknown routes and wrong methods, and that no error body
//! repeats a credential value.

mod common;

use common::{call, call_raw, register_project, unique, Server};
use serde_json::json;

const SECRET: &str = "ghp_ErrorPathSecret_5f2b9c";

fn assert_error_shape(reply: &common::Reply, status: u16, reason: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["statusCode"], status, "{}", reply.text);
    assert_eq!(reply.body["error"], reason, "{}", reply.text);
    assert!(reply.body["message"].is_string(), "{}", reply.text);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json",
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn malformed_json_400() {
    let server = Server::shared();
    let reply = call_raw(
        server,
        "POST",
        "/sfp/api/integrations",
        b"{\"provider\": ".to_vec(),
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert!(reply.message().contains("not valid JSON"), "{}", reply.text);
}

#[tokio::test]
async fn empty_body_400() {
    let server = Server::shared();
    let reply = call_raw(server, "POST", "/sfp/api/projects", Vec::new()).await;
    assert_error_shape(&reply, 400, "Bad Request");
}

#[tokio::test]
async fn non_object_body_400() {
    let server = Server::shared();
    let reply = call_raw(server, "POST", "/sfp/api/projects", b"[1, 2]".to_vec()).await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert_eq!(reply.message(), "Request body must be a JSON object");
}

#[tokio::test]
async fn unknown_field_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"token": "t"},
        "isGlobal": true,
        "scope": "everything",
    });
    let reply = call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(&server.owner),
        Some(body),
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert!(reply.message().contains("'scope'"), "{}", reply.text);
}

#[tokio::test]
async fn wrong_type_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"token": "t"},
        "isGlobal": "yes",
    });
    let reply = call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(&server.owner),
        Some(body),
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert_eq!(reply.message(), "isGlobal must be a boolean");
}

#[tokio::test]
async fn projects_wrong_type_400() {
    let server = Server::shared();
    let body = json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"token": "t"},
        "projects": "a/b",
    });
    let reply = call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(&server.owner),
        Some(body),
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert_eq!(reply.message(), "projects must be an array of strings");
}

#[tokio::test]
async fn missing_required_400() {
    let server = Server::shared();
    let cases = [
        (
            "provider",
            json!({"authType": "pat", "credentials": {"token": "t"}, "isGlobal": true}),
        ),
        (
            "authType",
            json!({"provider": "github", "credentials": {"token": "t"}, "isGlobal": true}),
        ),
        (
            "credentials",
            json!({"provider": "github", "authType": "pat", "isGlobal": true}),
        ),
    ];
    for (field, body) in cases {
        let reply = call(
            server,
            "POST",
            "/sfp/api/integrations",
            Some(&server.owner),
            Some(body),
        )
        .await;
        assert_eq!(reply.status, 400, "{field}");
        assert_eq!(reply.message(), format!("{field} is required"), "{field}");
    }
}

#[tokio::test]
async fn patch_unknown_field_400() {
    let server = Server::shared();
    let path = format!("/sfp/api/integrations/{}", uuid::Uuid::new_v4());
    let reply = call(
        server,
        "PATCH",
        &path,
        Some(&server.owner),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert!(reply.message().contains("'enabled'"), "{}", reply.text);
}

#[tokio::test]
async fn oversized_body_413() {
    let server = Server::shared();
    let padding = "x".repeat(300 * 1024);
    let body = format!(r#"{{"identifier": "a/b", "remoteUrl": "{padding}"}}"#);
    let reply = call_raw(server, "POST", "/sfp/api/projects", body.into_bytes()).await;
    assert_error_shape(&reply, 413, "Payload Too Large");
}

#[tokio::test]
async fn oversized_chunked_body_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::shared();
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /sfp/api/projects HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.owner
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    for _ in 0..40 {
        // The server may respond and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;

    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains(r#""statusCode":413"#), "{response}");
}

#[tokio::test]
async fn unknown_path_404() {
    let server = Server::shared();
    for path in [
        "/nothing",
        "/sfp/api/nothing",
        "/sfp/api/integrations/a/b/c",
        "/sfp/api/projectsx",
    ] {
        let reply = call(server, "GET", path, Some(&server.owner), None).await;
        assert_error_shape(&reply, 404, "Not Found");
    }
}

#[tokio::test]
async fn unknown_path_without_token_404() {
    let server = Server::shared();
    let reply = call(server, "GET", "/sfp/api/nothing", None, None).await;
    assert_error_shape(&reply, 404, "Not Found");
}

#[tokio::test]
async fn wrong_method_405() {
    let server = Server::shared();
    for (method, path) in [
        ("PUT", "/sfp/api/integrations"),
        ("DELETE", "/sfp/api/projects"),
        ("POST", "/health"),
        ("POST", "/sfp/api/integrations/defaults"),
    ] {
        let reply = call(server, method, path, Some(&server.owner), None).await;
        assert_error_shape(&reply, 405, "Method Not Allowed");
    }
}

#[tokio::test]
async fn unknown_query_parameter_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations/credentials?projct=a%2Fb",
        Some(&server.owner),
        None,
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
    assert!(reply.message().contains("'projct'"), "{}", reply.text);
}

#[tokio::test]
async fn repeated_query_parameter_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations?provider=github&provider=jira",
        Some(&server.owner),
        None,
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
}

#[tokio::test]
async fn unknown_provider_filter_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/integrations?provider=githab",
        Some(&server.owner),
        None,
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
}

#[tokio::test]
async fn audit_bad_paging_400() {
    let server = Server::shared();
    let reply = call(
        server,
        "GET",
        "/sfp/api/audit?limit=-1",
        Some(&server.owner),
        None,
    )
    .await;
    assert_error_shape(&reply, 400, "Bad Request");
}

#[tokio::test]
async fn error_bodies_hide_secrets() {
    let server = Server::shared();
    let project = format!("{}/repo", unique("errors"));
    register_project(server, &project).await;
    let raw_bodies = [
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":"{SECRET}" "x"}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":"{SECRET}"}},"isGlobal":"{SECRET}"}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":["{SECRET}"]}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"toke":"{SECRET}"}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":"{SECRET}","isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":"{SECRET}"}},"projects":["{project}"],"isDefault":true}}"#
        ),
        format!(
            r#"{{"provider":"jira","authType":"basic_auth","credentials":{{"base_url":"http://{SECRET}.example.com","username":"u","api_token":"{SECRET}"}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"app","credentials":{{"appId":"1","privateKey":"{SECRET}"}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":{{"nested":"{SECRET}"}}}},"isGlobal":true}}"#
        ),
        format!(
            r#"{{"provider":"github","authType":"pat","credentials":{{"token":"{SECRET}\u0000"}},"isGlobal":true,}}"#
        ),
    ];
    for body in raw_bodies {
        let reply = call_raw(
            server,
            "POST",
            "/sfp/api/integrations",
            body.clone().into_bytes(),
        )
        .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(!reply.text.contains(SECRET), "{body}: {}", reply.text);
    }

    let path = format!("/sfp/api/integrations/{}", uuid::Uuid::new_v4());
    let patch_bodies = [
        format!(r#"{{"credentials":{{"token":"{SECRET}"}},"provider":"jira"}}"#),
        format!(r#"{{"credentials":{{"token":"{SECRET}"}},"isDefault":"{SECRET}"}}"#),
        format!(r#"{{"credentials":{{"token":"{SECRET}"#),
    ];
    for body in patch_bodies {
        let reply = call_raw(server, "PATCH", &path, body.clone().into_bytes()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(!reply.text.contains(SECRET), "{body}: {}", reply.text);
    }
}

#[tokio::test]
async fn non_json_content_type_415() {
    let server = Server::shared();
    let response = reqwest::Client::new()
        .post(server.url("/sfp/api/projects"))
        .bearer_auth(&server.owner)
        .header("content-type", "text/plain")
        .body(r#"{"identifier": "acme/plain", "remoteUrl": "https://github.com/acme/plain.git"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 415);
}

#[tokio::test]
async fn json_with_charset_accepted() {
    let server = Server::shared();
    let identifier = format!("{}/charset", common::unique("ct"));
    let response = reqwest::Client::new()
        .post(server.url("/sfp/api/projects"))
        .bearer_auth(&server.owner)
        .header("content-type", "application/json; charset=utf-8")
        .body(
            serde_json::json!({
                "identifier": identifier,
                "remoteUrl": "https://github.com/acme/charset.git",
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}
