//! The audit log end to end: the hash chain checked by `audit verify` on the real binary's
//! database, failure events and their aggregation, and the search filters over HTTP.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{call, create_integration, github_global, register_project, Options, Server, BINARY};
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

/// Token text that must never reach the audit log.
const BAD_TOKEN: &str = "not-a-jwt-SecretTokenText-7f3a";

/// Runs `integrations-server audit verify` on `data_dir` with no inherited configuration.
fn verify(data_dir: &Path) -> Output {
    Command::new(BINARY)
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("INTEGRATIONS_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("audit verify runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn open_database(data_dir: &Path) -> SqliteConnection {
    let options =
        SqliteConnectOptions::new().filename(data_dir.join(integrations_store::DATABASE_FILE));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open the database file")
}

/// Ids of the stored events in write order.
async fn ids_in_write_order(connection: &mut SqliteConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM audit_events ORDER BY seq")
        .fetch_all(connection)
        .await
        .expect("list event ids")
}

/// Lists audit events as owner with a query string.
async fn audit(server: &Server, query: &str) -> Vec<Value> {
    let reply = call(
        server,
        "GET",
        &format!("/sfp/api/audit{query}"),
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body.as_array().expect("event array").clone()
}

async fn call_with_bad_token(server: &Server, path: &str) -> u16 {
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(BAD_TOKEN)
        .send()
        .await
        .expect("request is sent")
        .status()
        .as_u16()
}

/// Makes a few audited changes and returns the server, stopped.
async fn server_with_events() -> Server {
    let mut server = Server::start();
    register_project(&server, "owner/chain").await;
    create_integration(&server, github_global("ghp_ChainTestSecret", true)).await;
    register_project(&server, "owner/other").await;
    let reply = call(
        &server,
        "DELETE",
        "/sfp/api/projects/owner%2Fother",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    server.terminate();
    server
}

#[tokio::test]
async fn verify_intact_log() {
    let server = server_with_events().await;

    let output = verify(&server.data_dir);

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output).trim(), "audit chain intact: 4 events");
}

#[tokio::test]
async fn verify_finds_edited_event() {
    let server = server_with_events().await;
    let mut connection = open_database(&server.data_dir).await;
    let ids = ids_in_write_order(&mut connection).await;
    let edited = &ids[1];

    sqlx::query("UPDATE audit_events SET actor_subject = 'someone-else' WHERE id = ?")
        .bind(edited)
        .execute(&mut connection)
        .await
        .expect("edit event");
    connection.close().await.expect("close");
    let output = verify(&server.data_dir);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains(edited.as_str()), "{text}");
    assert!(text.contains("seq 2"), "{text}");
    assert!(text.contains("edited"), "{text}");
}

#[tokio::test]
async fn verify_finds_deleted_event() {
    let server = server_with_events().await;
    let mut connection = open_database(&server.data_dir).await;
    let ids = ids_in_write_order(&mut connection).await;

    sqlx::query("DELETE FROM audit_events WHERE id = ?")
        .bind(&ids[1])
        .execute(&mut connection)
        .await
        .expect("delete event");
    connection.close().await.expect("close");
    let output = verify(&server.data_dir);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains(ids[2].as_str()), "{text}");
    assert!(text.contains("deleted"), "{text}");
}

#[tokio::test]
async fn verify_usage_and_open_errors() {
    let missing = tempfile::tempdir().expect("temporary directory");

    let no_database = verify(&missing.path().join("absent"));
    let bad_flag = Command::new(BINARY)
        .args(["audit", "verify", "--no-such-flag"])
        .output()
        .expect("audit verify runs");

    assert_eq!(no_database.status.code(), Some(2), "{no_database:?}");
    assert!(!missing.path().join("absent").exists());
    assert_eq!(bad_flag.status.code(), Some(2), "{bad_flag:?}");
}

#[tokio::test]
async fn bad_tokens_counted_after_window() {
    let server =
        Server::start_with(Options::default().env("INTEGRATIONS_AUDIT_REPEAT_WINDOW_MS", "1500"));
    for _ in 0..5 {
        assert_eq!(
            call_with_bad_token(&server, "/sfp/api/integrations").await,
            401
        );
    }

    let first = audit(&server, "?action=authentication_failed").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["count"], 1);
    assert_eq!(first[0]["actorSubject"], "anonymous");
    assert_eq!(first[0]["filters"]["reason"], "invalid");
    assert_eq!(first[0]["filters"]["method"], "GET");
    assert_eq!(first[0]["filters"]["route"], "/sfp/api/integrations");

    // The flush task checks a few times per window, so the count lands soon after it closes.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = audit(&server, "?action=authentication_failed").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0]["count"], 4, "{after:?}");
    assert_eq!(after[0]["filters"]["route"], "/sfp/api/integrations");

    let all = serde_json::to_string(&audit(&server, "").await).unwrap();
    assert!(!all.contains(BAD_TOKEN), "{all}");
    assert!(!all.contains("Bearer"), "{all}");
    let mut connection = open_database(&server.data_dir).await;
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT actor_subject || filters || integration_ids FROM audit_events")
            .fetch_all(&mut connection)
            .await
            .expect("read rows");
    assert!(rows.iter().all(|row| !row.contains(BAD_TOKEN)), "{rows:?}");
}

#[tokio::test]
async fn missing_token_reason_and_route() {
    let server = Server::start();
    let id = uuid::Uuid::new_v4();

    let reply = call(
        &server,
        "DELETE",
        &format!("/sfp/api/integrations/{id}?note=x"),
        None,
        None,
    )
    .await;

    assert_eq!(reply.status, 401);
    let events = audit(&server, "?action=authentication_failed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["filters"]["reason"], "missing");
    assert_eq!(events[0]["filters"]["method"], "DELETE");
    assert_eq!(events[0]["filters"]["route"], "/sfp/api/integrations/{id}");
    let text = events[0].to_string();
    assert!(!text.contains(&id.to_string()), "{text}");
    assert!(!text.contains("note"), "{text}");
}

#[tokio::test]
async fn denied_requests_audited_once() {
    let mut server =
        Server::start_with(Options::default().env("INTEGRATIONS_AUDIT_REPEAT_WINDOW_MS", "60000"));
    for _ in 0..3 {
        let reply = call(&server, "GET", "/sfp/api/audit", Some(&server.member), None).await;
        assert_eq!(reply.status, 403, "{}", reply.text);
    }
    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/credentials",
        Some(&server.application),
        None,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text);

    let denied = audit(&server, "?action=access_denied").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["actorSubject"], "test-member");
    assert_eq!(denied[0]["filters"]["route"], "/sfp/api/audit");
    let reads = audit(&server, "?action=credentials_read").await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["outcome"], "denied");
    assert_eq!(
        reads[0]["filters"]["route"],
        "/sfp/api/integrations/credentials"
    );

    // Shutdown writes the two repeats that the open window was still counting.
    server.terminate();
    let mut connection = open_database(&server.data_dir).await;
    let counts: Vec<i64> = sqlx::query_scalar(
        "SELECT count FROM audit_events WHERE action = 'access_denied' ORDER BY seq",
    )
    .fetch_all(&mut connection)
    .await
    .expect("read counts");
    assert_eq!(counts, [1, 2]);
    let output = verify(&server.data_dir);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[tokio::test]
async fn audit_filters_over_http() {
    let server = Server::start();
    register_project(&server, "Owner/Filtered").await;
    let id = create_integration(&server, github_global("ghp_FilterTestSecret", true)).await;
    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/credentials?project=owner/filtered",
        Some(&server.application),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let by_integration = audit(&server, &format!("?integration={id}")).await;
    let actions: Vec<&str> = by_integration
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["credentials_read", "integration_created"]);

    let by_project = audit(&server, "?project=OWNER%2FFILTERED").await;
    let actions: Vec<&str> = by_project
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["credentials_read", "project_created"]);

    let by_actor = audit(&server, "?actor=test-app").await;
    assert_eq!(by_actor.len(), 1, "{by_actor:?}");
    let by_action = audit(&server, "?action=project_created&actor=test-owner").await;
    assert_eq!(by_action.len(), 1, "{by_action:?}");

    let future = audit(&server, "?from=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty(), "{future:?}");
    let past = audit(&server, "?to=2000-01-01T00:00:00%2B02:00").await;
    assert!(past.is_empty(), "{past:?}");
    let paged = audit(&server, "?offset=1&limit=1").await;
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0]["action"], "integration_created");
}

#[tokio::test]
async fn audit_filter_errors_name_parameter() {
    let server = Server::shared();
    let cases = [
        ("?from=yesterday", "from"),
        ("?to=2024-13-01T00:00:00Z", "to"),
        ("?from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z", "from"),
        ("?integration=not-a-uuid", "integration"),
        ("?action=logged_in", "access_denied"),
        ("?limit=-1", "limit"),
        ("?limit=0", "limit"),
        ("?limit=1001", "between 1 and 1000"),
        ("?actor=", "actor"),
        ("?color=blue", "color"),
    ];
    for (query, expected) in cases {
        let reply = call(
            server,
            "GET",
            &format!("/sfp/api/audit{query}"),
            Some(&server.owner),
            None,
        )
        .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        assert!(
            reply.message().contains(expected),
            "{query}: {}",
            reply.text
        );
        assert_eq!(reply.body["statusCode"], 400, "{query}");
    }
}

#[tokio::test]
async fn verify_finds_edit_behind_cleared_hashes() {
    let server = server_with_events().await;
    let mut connection = open_database(&server.data_dir).await;
    let ids = ids_in_write_order(&mut connection).await;
    let edited = &ids[1];

    // Clearing the hashes from the edited event on must not let the next store open chain the
    // edited rows again.
    sqlx::query("UPDATE audit_events SET actor_subject = 'x' WHERE seq = 2")
        .execute(&mut connection)
        .await
        .expect("edit event");
    sqlx::query("UPDATE audit_events SET hash = NULL WHERE seq >= 2")
        .execute(&mut connection)
        .await
        .expect("clear hashes");
    let first = verify(&server.data_dir);
    let second = verify(&server.data_dir);

    assert_eq!(first.status.code(), Some(1), "{first:?}");
    let text = stdout(&first);
    assert!(text.contains(edited.as_str()), "{text}");
    assert!(text.contains("seq 2"), "{text}");
    assert!(text.contains("never chained"), "{text}");
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let unchained: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE hash IS NULL")
        .fetch_one(&mut connection)
        .await
        .expect("count unchained rows");
    assert_eq!(unchained, 3, "verify must not chain the cleared rows");
}

#[tokio::test]
async fn verify_finds_every_hash_cleared() {
    let server = server_with_events().await;
    let mut connection = open_database(&server.data_dir).await;
    sqlx::query("UPDATE audit_events SET hash = NULL, prev_hash = NULL")
        .execute(&mut connection)
        .await
        .expect("clear every hash");

    let output = verify(&server.data_dir);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout(&output).contains("never chained"),
        "{}",
        stdout(&output)
    );
    let chained: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE hash IS NOT NULL")
            .fetch_one(&mut connection)
            .await
            .expect("count chained rows");
    assert_eq!(
        chained, 0,
        "opening the store chained the cleared rows again"
    );
}

#[tokio::test]
async fn verify_finds_forged_and_invalid_rows() {
    let server = server_with_events().await;
    let mut connection = open_database(&server.data_dir).await;

    // A row forged below the first sequence number is walked like any other.
    let forged = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO audit_events (seq, id, at, actor_subject, actor_role, action, \
         integration_ids, filters, outcome) SELECT -1, ?, at, 'mallory', 'owner', \
         'integration_deleted', '[]', '{}', 'success' FROM audit_events WHERE seq = 1",
    )
    .bind(&forged)
    .execute(&mut connection)
    .await
    .expect("insert forged event");
    let output = verify(&server.data_dir);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).contains(&forged), "{}", stdout(&output));

    // A field that no longer decodes is a broken log, not an unreachable database.
    sqlx::query("DELETE FROM audit_events WHERE seq = -1")
        .execute(&mut connection)
        .await
        .expect("remove forged event");
    sqlx::query("UPDATE audit_events SET action = 'bogus' WHERE seq = 2")
        .execute(&mut connection)
        .await
        .expect("edit action");
    let output = verify(&server.data_dir);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout(&output).contains("a stored event is invalid"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn application_token_denials_audited() {
    let server = Server::start();

    let created = call(
        &server,
        "POST",
        "/sfp/api/application-tokens",
        Some(&server.member),
        Some(serde_json::json!({"name": "ci"})),
    )
    .await;
    let id = uuid::Uuid::new_v4();
    let revoke_path = format!("/sfp/api/application-tokens/{id}");
    let revoked = reqwest::Client::new()
        .delete(server.url(&revoke_path))
        .bearer_auth(BAD_TOKEN)
        .send()
        .await
        .expect("request is sent")
        .status()
        .as_u16();

    assert_eq!(created.status, 403, "{}", created.text);
    let denied = audit(&server, "?action=access_denied").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["actorSubject"], "test-member");
    assert_eq!(denied[0]["filters"]["method"], "POST");
    assert_eq!(denied[0]["filters"]["route"], "/sfp/api/application-tokens");
    assert_eq!(revoked, 401);
    let failed = audit(&server, "?action=authentication_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["filters"]["method"], "DELETE");
    assert_eq!(
        failed[0]["filters"]["route"],
        "/sfp/api/application-tokens/{id}"
    );
    assert!(!failed[0].to_string().contains(&id.to_string()));
}
