//! Application tokens over HTTP: create, list, use, revoke and expiry, across two processes that
//! share a data directory, and the secret kept out of logs and the database.

mod common;

use chrono::{Duration, SubsecRound, Utc};
use common::{call, call_raw, github_global, Options, Server};
use integrations_core::tokens::TokenSecret;
use integrations_core::{ApplicationToken, ApplicationTokenRecord, AuditAction, AuditEvent};
use integrations_core::{AuditOutcome, IntegrationStore};
use integrations_store::SqliteStore;
use serde_json::{json, Value};

const TOKENS: &str = "/sfp/api/application-tokens";
const GITHUB_CREDENTIALS: &str = "/sfp/api/integrations/credentials?provider=github";

/// Creates a token as owner and returns the whole 201 body.
async fn create_token(server: &Server, body: Value) -> Value {
    let reply = call(server, "POST", TOKENS, Some(&server.owner), Some(body)).await;
    assert_eq!(reply.status, 201, "create token: {}", reply.text);
    reply.body
}

fn secret_of(created: &Value) -> String {
    created["token"].as_str().expect("token in body").to_owned()
}

#[tokio::test]
async fn create_returns_token_once() {
    let server = Server::start();

    let reply = call(
        &server,
        "POST",
        TOKENS,
        Some(&server.owner),
        Some(json!({"name": "  release pipeline ", "expiresIn": 7})),
    )
    .await;

    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let created = reply.body;
    let secret = secret_of(&created);
    assert!(secret.starts_with("intg_"), "{secret}");
    assert_eq!(secret.len(), 48);
    assert_eq!(created["name"], "release pipeline");
    assert_eq!(created["createdBy"], "test-owner");
    assert_eq!(created["revokedAt"], Value::Null);
    let created_at: chrono::DateTime<Utc> =
        serde_json::from_value(created["createdAt"].clone()).unwrap();
    let expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(created["expiresAt"].clone()).unwrap();
    assert_eq!(expires_at - created_at, Duration::days(7));

    let listed = call(&server, "GET", TOKENS, Some(&server.owner), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let entries = listed.body.as_array().expect("array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], created["id"]);
    assert_eq!(entries[0]["expiresAt"], created["expiresAt"]);
    assert!(entries[0].get("token").is_none(), "{}", listed.text);
    assert!(!listed.text.contains(&secret[5..]), "{}", listed.text);
}

#[tokio::test]
async fn default_expiry_thirty_days() {
    let server = Server::start();

    let created = create_token(&server, json!({"name": "ci"})).await;

    let created_at: chrono::DateTime<Utc> =
        serde_json::from_value(created["createdAt"].clone()).unwrap();
    let expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(created["expiresAt"].clone()).unwrap();
    assert_eq!(expires_at - created_at, Duration::days(30));
}

#[tokio::test]
async fn token_reads_credentials_as_application() {
    let server = Server::start();
    common::create_integration(&server, github_global("ghp_read_by_token", true)).await;
    let created = create_token(&server, json!({"name": "ci"})).await;
    let secret = secret_of(&created);

    let read = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body[0]["credentials"]["token"], "ghp_read_by_token");

    // The application role still needs a filter and may not manage integrations.
    let unfiltered = call(
        &server,
        "GET",
        "/sfp/api/integrations/credentials",
        Some(&secret),
        None,
    )
    .await;
    assert_eq!(unfiltered.status, 403, "{}", unfiltered.text);
    let listing = call(&server, "GET", "/sfp/api/integrations", Some(&secret), None).await;
    assert_eq!(listing.status, 403, "{}", listing.text);

    let audit = call(
        &server,
        "GET",
        "/sfp/api/audit?limit=10",
        Some(&server.owner),
        None,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let subject = format!("application-token:{id}");
    let read_event = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["action"] == "credentials_read")
        .expect("credentials read audited");
    assert_eq!(read_event["actorSubject"], subject.as_str());
    assert_eq!(read_event["actorRole"], "application");
}

#[tokio::test]
async fn only_owner_manages_tokens() {
    let server = Server::start();
    let created = create_token(&server, json!({"name": "ci"})).await;
    let secret = secret_of(&created);
    let revoke_path = format!("{TOKENS}/{}", created["id"].as_str().unwrap());

    for caller in [&server.member, &server.application, &secret] {
        let create = call(
            &server,
            "POST",
            TOKENS,
            Some(caller),
            Some(json!({"name": "x"})),
        )
        .await;
        assert_eq!(create.status, 403, "{}", create.text);
        assert_eq!(create.message(), "Forbidden - Requires role: owner");
        let list = call(&server, "GET", TOKENS, Some(caller), None).await;
        assert_eq!(list.status, 403, "{}", list.text);
        let revoke = call(&server, "DELETE", &revoke_path, Some(caller), None).await;
        assert_eq!(revoke.status, 403, "{}", revoke.text);
        // The role is checked before the id is parsed.
        let bad_id = call(
            &server,
            "DELETE",
            &format!("{TOKENS}/abc"),
            Some(caller),
            None,
        )
        .await;
        assert_eq!(bad_id.status, 403, "{}", bad_id.text);
    }

    let still_valid = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_ne!(still_valid.status, 401, "{}", still_valid.text);
}

#[tokio::test]
async fn revoked_token_rejected_at_once() {
    let server = Server::start();
    common::create_integration(&server, github_global("ghp_revoked", true)).await;
    let created = create_token(&server, json!({"name": "ci"})).await;
    let secret = secret_of(&created);
    let revoke_path = format!("{TOKENS}/{}", created["id"].as_str().unwrap());
    let before = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(before.status, 200, "{}", before.text);

    let revoke = call(&server, "DELETE", &revoke_path, Some(&server.owner), None).await;
    assert_eq!(revoke.status, 204, "{}", revoke.text);

    let after = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(after.status, 401, "{}", after.text);
    assert_eq!(after.message(), "Token revoked");
    assert_eq!(after.body["statusCode"], 401);
    assert_eq!(after.body["error"], "Unauthorized");
    assert_eq!(
        after
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );

    let again = call(&server, "DELETE", &revoke_path, Some(&server.owner), None).await;
    assert_eq!(again.status, 204, "{}", again.text);
    let listed = call(&server, "GET", TOKENS, Some(&server.owner), None).await;
    assert!(listed.body[0]["revokedAt"].is_string(), "{}", listed.text);

    let audit = call(
        &server,
        "GET",
        "/sfp/api/audit?limit=50",
        Some(&server.owner),
        None,
    )
    .await;
    let revocations: Vec<&Value> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["action"] == "application_token_revoked")
        .collect();
    assert_eq!(revocations.len(), 1, "{}", audit.text);
    assert_eq!(revocations[0]["filters"]["token_id"], created["id"]);

    // The rejected use is audited as a failed authentication that names the reason, and no
    // event contains the token.
    let failures = call(
        &server,
        "GET",
        "/sfp/api/audit?action=authentication_failed",
        Some(&server.owner),
        None,
    )
    .await;
    let failures = failures.body.as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["filters"]["reason"], "revoked");
    assert!(!audit.text.contains(&secret), "{}", audit.text);
    assert!(!format!("{failures:?}").contains(&secret));
}

#[tokio::test]
async fn revoke_unknown_or_bad_id() {
    let server = Server::shared();

    let unknown = format!("{TOKENS}/{}", uuid::Uuid::new_v4());
    let missing = call(server, "DELETE", &unknown, Some(&server.owner), None).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(missing.message(), "Application token not found");

    let bad = call(
        server,
        "DELETE",
        &format!("{TOKENS}/not-a-uuid"),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.message(), "id must be a UUID");
}

#[tokio::test]
async fn unknown_tokens_invalid() {
    let server = Server::shared();
    let never_issued = TokenSecret::generate();

    for token in [never_issued.expose(), "intg_short", "intg_"] {
        let reply = call(server, "GET", GITHUB_CREDENTIALS, Some(token), None).await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.text);
        assert_eq!(reply.message(), "Invalid token");
    }
}

#[tokio::test]
async fn expired_token_rejected() {
    let server = Server::start();
    // An expired record written through the store into the server's own database file.
    let store = SqliteStore::open_in_dir(&server.data_dir)
        .await
        .expect("open the server's database");
    let secret = TokenSecret::generate();
    let created_at = (Utc::now() - Duration::days(31)).trunc_subsecs(6);
    let record = ApplicationTokenRecord {
        token: ApplicationToken {
            id: uuid::Uuid::new_v4(),
            name: "expired".into(),
            created_at,
            expires_at: created_at + Duration::days(30),
            revoked_at: None,
            created_by: "test-owner".into(),
        },
        token_hash: secret.hash(),
    };
    let audit = AuditEvent::new(
        &integrations_core::Actor::new("test-owner", integrations_core::Role::Owner),
        AuditAction::ApplicationTokenCreated,
        AuditOutcome::Success,
    );
    store
        .insert_application_token(&record, &audit)
        .await
        .expect("insert expired token");
    store.close().await;

    let reply = call(
        &server,
        "GET",
        GITHUB_CREDENTIALS,
        Some(secret.expose()),
        None,
    )
    .await;

    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(reply.message(), "Token expired");
}

#[tokio::test]
async fn revocation_applies_across_processes() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let first = Server::start_with(Options::default().data_dir(&data_dir));
    let second = Server::start_with(Options::default().data_dir(&data_dir));
    common::create_integration(&first, github_global("ghp_shared", true)).await;
    let created = create_token(&first, json!({"name": "ci"})).await;
    let secret = secret_of(&created);
    let on_second = call(&second, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(on_second.status, 200, "{}", on_second.text);

    let revoke_path = format!("{TOKENS}/{}", created["id"].as_str().unwrap());
    let revoke = call(&first, "DELETE", &revoke_path, Some(&first.owner), None).await;
    assert_eq!(revoke.status, 204, "{}", revoke.text);

    let after = call(&second, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(after.status, 401, "{}", after.text);
    assert_eq!(after.message(), "Token revoked");
}

#[tokio::test]
async fn bad_bodies_name_field() {
    let server = Server::shared();
    let cases: &[(&[u8], &str)] = &[
        (b"{}", "name is required"),
        (br#"{"name": "   "}"#, "name is required"),
        (br#"{"name": 7}"#, "name must be a string"),
        (
            br#"{"name": "tab\there"}"#,
            "name must not contain control, zero-width or bidirectional formatting characters",
        ),
        (
            br#"{"name": "ci\u202egpj.exe"}"#,
            "name must not contain control, zero-width or bidirectional formatting characters",
        ),
        (
            br#"{"name": "ci", "expiresIn": 0}"#,
            "expiresIn must be a whole number of days from 1 to 365",
        ),
        (
            br#"{"name": "ci", "expiresIn": 366}"#,
            "expiresIn must be a whole number of days from 1 to 365",
        ),
        (
            br#"{"name": "ci", "expiresIn": 2.5}"#,
            "expiresIn must be a whole number of days from 1 to 365",
        ),
        (
            br#"{"name": "ci", "expiresIn": "30"}"#,
            "expiresIn must be a whole number of days from 1 to 365",
        ),
        (
            br#"{"name": "ci", "role": "owner"}"#,
            "Unknown field 'role'; expected fields: name, expiresIn",
        ),
        (b"[]", "Request body must be a JSON object"),
    ];
    let long_name = json!({"name": "a".repeat(101)}).to_string();

    for (body, expected) in cases {
        let reply = call_raw(server, "POST", TOKENS, body.to_vec()).await;
        let sent = String::from_utf8_lossy(body);
        assert_eq!(reply.status, 400, "{sent}: {}", reply.text);
        assert_eq!(reply.message(), *expected, "{sent}");
    }
    let reply = call_raw(server, "POST", TOKENS, long_name.into_bytes()).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.message(), "name is longer than 100 characters");

    let listed = call(server, "GET", TOKENS, Some(&server.owner), None).await;
    let names: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|token| token["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"ci"),
        "a rejected body created a token: {names:?}"
    );
}

#[tokio::test]
async fn secret_absent_from_log_and_database() {
    let mut server = Server::start();
    common::create_integration(&server, github_global("ghp_scan", true)).await;
    let created = create_token(&server, json!({"name": "scan"})).await;
    let secret = secret_of(&created);
    let read = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(read.status, 200, "{}", read.text);
    let revoke_path = format!("{TOKENS}/{}", created["id"].as_str().unwrap());
    call(&server, "DELETE", &revoke_path, Some(&server.owner), None).await;
    let rejected = call(&server, "GET", GITHUB_CREDENTIALS, Some(&secret), None).await;
    assert_eq!(rejected.status, 401, "{}", rejected.text);
    let audit = call(
        &server,
        "GET",
        "/sfp/api/audit?limit=50",
        Some(&server.owner),
        None,
    )
    .await;
    server.terminate();

    // The random part alone, so that a log line which cut off the prefix still counts.
    let random_part = &secret[5..];
    let log = server.log();
    assert!(log.contains("application token created"), "{log}");
    assert!(!log.contains(random_part), "the secret reached the log");
    assert!(
        !audit.text.contains(random_part),
        "the secret reached the audit log"
    );
    let mut scanned = 0;
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(integrations_store::DATABASE_FILE) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        let found = bytes
            .windows(random_part.len())
            .any(|window| window == random_part.as_bytes());
        assert!(!found, "the secret is stored in plaintext in {name}");
    }
    assert!(scanned >= 1, "no database file found to scan");
}
