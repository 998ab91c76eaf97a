//! Start-up, restart and shutdown of the binary: key files, a wrong master key, signals, the
//! readiness route, the token subcommand and operator-supplied token keys.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{call, create_integration, Options, Server, BINARY};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ES256_PRIVATE: &str = include_str!("fixtures/es256-private.pem");
const RS256_PRIVATE: &str = include_str!("fixtures/rs256-private.pem");
const RS256_PUBLIC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rs256-public.pem"
);
const ES256_PUBLIC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/es256-public.pem"
);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn health_returns_ok() {
    let server = Server::start();
    let reply = call(&server, "GET", "/health", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"status": "ok"}));
}

#[tokio::test]
async fn key_files_private() {
    let server = Server::start();
    assert_eq!(mode(&server.data_dir), 0o700);
    assert_eq!(mode(&server.data_dir.join("master.key")), 0o600);
    assert_eq!(mode(&server.data_dir.join("signing.key")), 0o600);
    let master_key = std::fs::read_to_string(server.data_dir.join("master.key")).unwrap();
    assert_eq!(master_key.trim().len(), 64);
    assert!(server.log().contains("created a new master key"));
}

#[tokio::test]
async fn listening_line_once() {
    let server = Server::start();
    assert_eq!(server.log().matches("listening on http://").count(), 1);
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let mut server = Server::start();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut server = Server::start();
    let status = server.stop_with("INT");
    assert_eq!(status.code(), Some(0));
    assert!(server.log().contains("server stopped"), "{}", server.log());
}

#[tokio::test]
async fn two_processes_share_data_dir() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let first = Server::start_with(Options::default().data_dir(&data_dir));
    let second = Server::start_with(Options::default().data_dir(&data_dir));

    create_integration(&first, common::github_global("ghp_shared_dir", false)).await;
    let reply = call(
        &second,
        "GET",
        "/sfp/api/integrations/credentials?provider=github",
        Some(&second.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body[0]["credentials"]["token"], "ghp_shared_dir");
}

#[tokio::test]
async fn no_subcommand_serves() {
    let server = Server::start_with(Options {
        no_subcommand: true,
        ..Options::default()
    });
    let reply = call(&server, "GET", "/health", None, None).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn restart_reuses_keys() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(Options::default().data_dir(&data_dir));
    let id = create_integration(&first, common::github_global("ghp_survives_restart", false)).await;
    let master_key = std::fs::read(data_dir.join("master.key")).unwrap();
    assert!(first.terminate().success());

    let second = Server::start_with(Options::default().data_dir(&data_dir));
    assert_eq!(
        std::fs::read(data_dir.join("master.key")).unwrap(),
        master_key
    );
    assert!(!second.log().contains("created a new master key"));
    // A token minted for the first run is still valid: the signing key was reused.
    let reply = call(
        &second,
        "GET",
        "/sfp/api/integrations/credentials?provider=github",
        Some(&first.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body[0]["integration_id"], id.as_str());
    assert_eq!(
        reply.body[0]["credentials"]["token"],
        "ghp_survives_restart"
    );
}

#[tokio::test]
async fn wrong_master_key_exits() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(Options::default().data_dir(&data_dir));
    create_integration(
        &first,
        common::github_global("ghp_sealed_with_first_key", false),
    )
    .await;
    assert!(first.terminate().success());

    let wrong = "ab".repeat(32);
    let failure = Server::try_start(
        Options::default()
            .data_dir(&data_dir)
            .env("INTEGRATIONS_MASTER_KEY", &wrong),
    )
    .err()
    .expect("server refuses a wrong master key");
    assert!(!failure.status.success(), "{}", failure.status);
    assert!(
        failure
            .log
            .contains("master key cannot open the stored credentials"),
        "{}",
        failure.log
    );
    assert!(!failure.log.contains(&wrong), "log contains the key");
    // The message names the data key and both master key ids, so the operator knows which key
    // the data needs.
    assert!(failure.log.contains("data key dk-"), "{}", failure.log);
    let wrong_id = integrations_core::MasterKey::from_hex(&wrong).unwrap();
    assert!(failure.log.contains(wrong_id.id()), "{}", failure.log);
}

#[tokio::test]
async fn malformed_master_key_exits() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("master.key"), "not a key\n").unwrap();
    std::fs::set_permissions(
        data_dir.join("master.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let failure = Server::try_start(Options::default().data_dir(&data_dir))
        .err()
        .expect("server refuses a malformed key file");
    assert!(!failure.status.success());
    assert!(failure.log.contains("malformed"), "{}", failure.log);
}

#[test]
fn token_prints_only_token() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args([
            "token",
            "--role",
            "owner",
            "--subject",
            "ci",
            "--ttl-seconds",
            "60",
            "--data-dir",
        ])
        .arg(temp.path())
        .env_remove("INTEGRATIONS_JWT_HS256_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(stdout.ends_with('\n'));
    assert_eq!(stdout.trim().split('.').count(), 3, "{stdout:?}");
    assert_eq!(mode(&temp.path().join("signing.key")), 0o600);
}

#[test]
fn token_unknown_role_fails() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["token", "--role", "admin", "--subject", "ci", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn hs256_secret_from_env() {
    let secret = "operator-secret-with-at-least-32-bytes!";
    let server =
        Server::start_with(Options::default().env("INTEGRATIONS_JWT_HS256_SECRET", secret));
    assert!(!server.data_dir.join("signing.key").exists());
    let reply = call(
        &server,
        "GET",
        "/sfp/api/projects",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(!server.log().contains(secret));
}

#[tokio::test]
async fn issuer_and_audience_enforced() {
    let options = Options::default()
        .env("INTEGRATIONS_JWT_ISSUER", "https://issuer.test")
        .env("INTEGRATIONS_JWT_AUDIENCE", "integrations");
    let server = Server::start_with(options);
    let reply = call(
        &server,
        "GET",
        "/sfp/api/projects",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "token subcommand sets iss and aud");

    let secret = common::signing_secret(&server.data_dir);
    let exp = common::now_seconds() + 600;
    let cases = [
        json!({"sub": "x", "role": "owner", "exp": exp}),
        json!({"sub": "x", "role": "owner", "exp": exp, "iss": "https://other.test", "aud": "integrations"}),
        json!({"sub": "x", "role": "owner", "exp": exp, "iss": "https://issuer.test", "aud": "other"}),
    ];
    for claims in cases {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let reply = call(&server, "GET", "/sfp/api/projects", Some(&token), None).await;
        assert_eq!(reply.status, 401, "{claims}");
    }
}

#[tokio::test]
async fn es256_public_key_verifies() {
    // The token subcommand cannot sign for a public key, so no role tokens are minted.
    let options = Options::default()
        .env("INTEGRATIONS_JWT_PUBLIC_KEY_PATH", ES256_PUBLIC_PATH)
        .without_tokens();
    let server = Server::start_with(options);
    let claims = json!({"sub": "es", "role": "member", "exp": common::now_seconds() + 600});
    let key = EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    let reply = call(&server, "GET", "/sfp/api/projects", Some(&token), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Key confusion: an HS256 token whose HMAC key is the public key's PEM text.
    let public_pem = std::fs::read(ES256_PUBLIC_PATH).unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let reply = call(&server, "GET", "/sfp/api/projects", Some(&forged), None).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn missing_master_key_refuses_start() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(Options::default().data_dir(&data_dir));
    create_integration(&first, common::github_global("ghp_key_goes_missing", false)).await;
    assert!(first.terminate().success());

    std::fs::remove_file(data_dir.join("master.key")).unwrap();
    let failure = Server::try_start(Options::default().data_dir(&data_dir))
        .err()
        .expect("server refuses to replace a missing master key");
    assert!(!failure.status.success(), "{}", failure.status);
    assert!(failure.log.contains("master key file"), "{}", failure.log);
    assert!(
        !data_dir.join("master.key").exists(),
        "no replacement key was written"
    );
}

#[tokio::test]
async fn corrupt_row_does_not_stop_start() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(Options::default().data_dir(&data_dir));
    let damaged = create_integration(&first, common::github_global("ghp_row_one", false)).await;
    let intact = create_integration(&first, common::github_global("ghp_row_two", false)).await;
    assert!(first.terminate().success());

    // Copy the second row's ciphertext onto the first: associated data makes it unreadable there.
    let store = integrations_store::SqliteStore::open_in_dir(&data_dir)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE integrations SET sealed_credentials = \
         (SELECT sealed_credentials FROM integrations WHERE id = ?) WHERE id = ?",
    )
    .bind(&intact)
    .bind(&damaged)
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;

    let mut second = Server::start_with(Options::default().data_dir(&data_dir));
    let log = second.log();
    assert!(log.contains(&damaged), "log names the damaged row: {log}");
    assert!(second.terminate().success());
}

#[tokio::test]
async fn rs256_public_key_verifies() {
    let options = Options::default()
        .env("INTEGRATIONS_JWT_PUBLIC_KEY_PATH", RS256_PUBLIC_PATH)
        .without_tokens();
    let server = Server::start_with(options);
    let claims = json!({"sub": "rs", "role": "owner", "exp": common::now_seconds() + 600});
    let key = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
    let reply = call(&server, "GET", "/sfp/api/integrations", Some(&token), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // The same claims signed with another algorithm of the RSA family are rejected.
    let other = jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &key).unwrap();
    let reply = call(&server, "GET", "/sfp/api/integrations", Some(&other), None).await;
    assert_eq!(reply.status, 401);
}
