//! The conformance suite on SQLite, plus the schema rules checked with raw SQL that bypasses
//! the store.

use integrations_core::StoreError;
use integrations_store::conformance::Fixture;
use integrations_store::{AnyStore, SqliteStore, DATABASE_FILE};

async fn setup_file() -> Result<Fixture<SqliteStore>, String> {
    let directory = tempfile::tempdir().map_err(|error| error.to_string())?;
    let store = SqliteStore::open_in_dir(directory.path())
        .await
        .map_err(|error| error.to_string())?;
    let closing = store.clone();
    Ok(Fixture::with_cleanup(store, async move {
        closing.close().await;
        drop(directory);
    }))
}

async fn setup_memory() -> Result<Fixture<AnyStore>, String> {
    let store = integrations_store::open("sqlite::memory:")
        .await
        .map_err(|error| error.to_string())?;
    Ok(Fixture::new(store))
}

mod file {
    use super::setup_file;
    integrations_store::conformance_tests!(setup_file);
}

mod in_memory {
    use super::setup_memory;
    integrations_store::conformance_tests!(setup_memory);
}

const INSERT_INTEGRATION: &str = "INSERT INTO integrations (id, provider, category, auth_type, \
     is_global, is_default, config, credential_fields, sealed_credentials, created_at, \
     updated_at) VALUES (?, 'github', 'github', 'pat', ?, ?, '{}', '[]', x'00', \
     '2024-05-01T12:00:00.000000000Z', '2024-05-01T12:00:00.000000000Z')";

/// Opens a store in a new directory and a second, raw pool on the same file.
async fn store_and_raw_pool() -> (tempfile::TempDir, SqliteStore, sqlx::SqlitePool) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("open store");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(directory.path().join(DATABASE_FILE))
        .foreign_keys(true);
    let raw = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("raw pool");
    (directory, store, raw)
}

async fn raw_insert(
    raw: &sqlx::SqlitePool,
    is_global: bool,
    is_default: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_INTEGRATION)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(is_global)
        .bind(is_default)
        .execute(raw)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn schema_rejects_scoped_default() {
    let (_directory, _store, raw) = store_and_raw_pool().await;

    let result = raw_insert(&raw, false, true).await;

    let message = result.expect_err("check constraint").to_string();
    assert!(
        message.contains("integrations_default_is_global"),
        "{message}"
    );
}

#[tokio::test]
async fn schema_rejects_second_default() {
    let (_directory, _store, raw) = store_and_raw_pool().await;
    raw_insert(&raw, true, true).await.expect("first default");

    let result = raw_insert(&raw, true, true).await;

    let message = result.expect_err("unique index").to_string();
    assert!(message.contains("UNIQUE"), "{message}");
}

#[tokio::test]
async fn schema_rejects_unknown_project_link() {
    let (_directory, _store, raw) = store_and_raw_pool().await;
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(INSERT_INTEGRATION)
        .bind(&id)
        .bind(false)
        .bind(false)
        .execute(&raw)
        .await
        .expect("integration");

    let result = sqlx::query(
        "INSERT INTO integration_projects (integration_id, project_key) VALUES (?, 'owner/ghost')",
    )
    .bind(&id)
    .execute(&raw)
    .await;

    let message = result.expect_err("foreign key").to_string();
    assert!(message.contains("FOREIGN KEY"), "{message}");
}

#[tokio::test]
async fn open_uses_wal() {
    let (_directory, store, _raw) = store_and_raw_pool().await;

    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn open_creates_directory() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("nested").join("data");

    SqliteStore::open_in_dir(&data_dir)
        .await
        .expect("open store");

    assert!(data_dir.join(DATABASE_FILE).is_file());
}

#[tokio::test]
async fn open_concurrently_on_new_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let path = directory.path().to_owned();
            tokio::spawn(async move { SqliteStore::open_in_dir(path).await })
        })
        .collect();

    for open in opens {
        let result = open.await.expect("task completes");
        assert!(result.is_ok(), "{result:?}");
    }
}

#[tokio::test]
async fn reopen_keeps_data() {
    use integrations_core::{
        Actor, AuditAction, AuditEvent, AuditOutcome, IntegrationStore, Platform, Project, Role,
    };
    let directory = tempfile::tempdir().expect("temporary directory");
    let project = Project {
        identifier: "owner/repo".to_owned(),
        remote_url: "https://github.com/owner/repo.git".to_owned(),
        platform: Platform::Github,
        created_at: chrono::Utc::now(),
    };
    let audit = AuditEvent::new(
        &Actor::new("tester", Role::Owner),
        AuditAction::ProjectCreated,
        AuditOutcome::Success,
    );
    let first = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("open store");
    first
        .insert_project(&project, &audit)
        .await
        .expect("insert project");
    first.close().await;

    let second = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("reopen store");

    let found = second
        .find_project("owner/repo")
        .await
        .expect("find project");
    assert_eq!(found, Some(project));
}

#[tokio::test]
async fn open_rejects_unknown_scheme() {
    let result = integrations_store::open("mysql://app:s3cret@127.0.0.1/integrations").await;

    let error = result.expect_err("unsupported scheme");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("mysql"), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn debug_names_location() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("open store");

    let debug = format!("{store:?}");
    assert!(debug.contains(DATABASE_FILE), "{debug}");
}

fn audit_event(subject: &str) -> integrations_core::AuditEvent {
    integrations_core::AuditEvent::new(
        &integrations_core::Actor::new(subject, integrations_core::Role::Owner),
        integrations_core::AuditAction::CredentialsRead,
        integrations_core::AuditOutcome::Success,
    )
}

#[tokio::test]
async fn audit_chain_two_stores_concurrent() {
    use integrations_core::IntegrationStore;
    let directory = tempfile::tempdir().expect("temporary directory");
    let first = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("open first");
    let second = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("open second");
    let tasks: Vec<_> = (0..40)
        .map(|task| {
            let store = if task % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move { store.append_audit(&audit_event("writer")).await })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task completes");
        assert!(result.is_ok(), "{result:?}");
    }

    let verification = integrations_core::audit_chain::verify_chain(&first)
        .await
        .expect("verify");
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, 40);
}

#[tokio::test]
async fn audit_chain_detects_edit_and_delete() {
    use integrations_core::audit_chain::{verify_chain, ChainBreakReason};
    use integrations_core::IntegrationStore;
    let (_directory, store, raw) = store_and_raw_pool().await;
    let events: Vec<_> = (0..4)
        .map(|index| audit_event(&format!("user{index}")))
        .collect();
    for event in &events {
        store.append_audit(event).await.expect("append audit");
    }

    sqlx::query("UPDATE audit_events SET actor_subject = 'mallory' WHERE id = ?")
        .bind(events[2].id.to_string())
        .execute(&raw)
        .await
        .expect("edit event");
    let broken = verify_chain(&store).await.expect("verify").first_break;
    let broken = broken.expect("edit detected");
    assert_eq!(broken.id, events[2].id);
    assert_eq!(broken.reason, ChainBreakReason::Edited);

    sqlx::query("UPDATE audit_events SET actor_subject = 'user2' WHERE id = ?")
        .bind(events[2].id.to_string())
        .execute(&raw)
        .await
        .expect("undo edit");
    sqlx::query("DELETE FROM audit_events WHERE id = ?")
        .bind(events[1].id.to_string())
        .execute(&raw)
        .await
        .expect("delete event");
    let broken = verify_chain(&store).await.expect("verify").first_break;
    let broken = broken.expect("deletion detected");
    assert_eq!(broken.id, events[2].id);
    assert_eq!(broken.reason, ChainBreakReason::PreviousMismatch);
}

#[tokio::test]
async fn audit_chain_detects_edited_search_key() {
    use integrations_core::audit_chain::{verify_chain, ChainBreakReason};
    use integrations_core::IntegrationStore;
    let (_directory, store, raw) = store_and_raw_pool().await;
    let event = audit_event("user").with_filter("project", "Owner/Repo");
    store.append_audit(&event).await.expect("append audit");
    assert_eq!(verify_chain(&store).await.unwrap().first_break, None);

    // The search key is derived from the hashed filters, so moving an event to another
    // project's search results is an edit.
    sqlx::query("UPDATE audit_events SET project_key = 'other/repo' WHERE id = ?")
        .bind(event.id.to_string())
        .execute(&raw)
        .await
        .expect("edit search key");
    let broken = verify_chain(&store).await.unwrap().first_break;
    let broken = broken.expect("edit detected");
    assert_eq!(broken.id, event.id);
    assert_eq!(broken.reason, ChainBreakReason::Edited);
}

#[tokio::test]
async fn audit_chain_upgrades_unchained_rows() {
    use integrations_core::IntegrationStore;
    let (directory, store, raw) = store_and_raw_pool().await;
    // Rows as a binary from before the chain wrote them: no count, hashes or project key.
    for (index, subject) in ["old1", "old2", "old3"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO audit_events (id, at, actor_subject, actor_role, action, \
             integration_ids, filters, outcome) VALUES (?, ?, ?, 'owner', 'project_created', \
             '[]', '{\"project\":\"Owner/Repo\"}', 'success')",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        // Nanoseconds, as the store wrote them before event times were truncated.
        .bind(format!("2024-05-01T12:00:0{index}.123456789Z"))
        .bind(subject)
        .execute(&raw)
        .await
        .expect("insert unchained row");
    }
    // As the chain migration records for a database that held these rows when it ran.
    sqlx::query(
        "UPDATE audit_chain_origin SET last_unchained_seq = (SELECT MAX(seq) FROM audit_events)",
    )
    .execute(&raw)
    .await
    .expect("record pre-chain rows");
    store.close().await;
    raw.close().await;

    let reopened = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("reopen store");
    reopened
        .append_audit(&audit_event("new"))
        .await
        .expect("append audit");

    let verification = integrations_core::audit_chain::verify_chain(&reopened)
        .await
        .expect("verify");
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, 4);
    let query = integrations_core::AuditQuery {
        project_key: Some("owner/repo".into()),
        ..Default::default()
    };
    let found = reopened.search_audit(&query).await.expect("search audit");
    assert_eq!(found.len(), 3);
}

#[tokio::test]
async fn audit_chain_nulled_hashes_stay_broken() {
    use integrations_core::audit_chain::{verify_chain, ChainBreakReason};
    use integrations_core::IntegrationStore;
    let (directory, store, raw) = store_and_raw_pool().await;
    let events: Vec<_> = (0..4)
        .map(|index| audit_event(&format!("user{index}")))
        .collect();
    for event in &events {
        store.append_audit(event).await.expect("append audit");
    }
    let edited_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_events WHERE id = ?")
        .bind(events[1].id.to_string())
        .fetch_one(&raw)
        .await
        .expect("seq of event");
    // An edit hidden by clearing the hashes from the edited event on, so that a store that
    // chained every row without a hash would rebuild a valid chain over the edit.
    sqlx::query("UPDATE audit_events SET actor_subject = 'mallory' WHERE seq = ?")
        .bind(edited_seq)
        .execute(&raw)
        .await
        .expect("edit event");
    sqlx::query("UPDATE audit_events SET hash = NULL WHERE seq >= ?")
        .bind(edited_seq)
        .execute(&raw)
        .await
        .expect("clear hashes");
    store.close().await;

    let reopened = SqliteStore::open_in_dir(directory.path())
        .await
        .expect("reopen store");
    let unchained: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE hash IS NULL")
        .fetch_one(&raw)
        .await
        .expect("count unchained rows");
    assert_eq!(
        unchained, 3,
        "opening the store must not chain the cleared rows"
    );
    reopened
        .append_audit(&audit_event("later"))
        .await
        .expect("append audit");

    let verification = verify_chain(&reopened).await.expect("verify");
    let broken = verification.first_break.expect("cleared hashes detected");
    assert_eq!(broken.id, events[1].id);
    assert_eq!(broken.reason, ChainBreakReason::Unchained);
    raw.close().await;
}
