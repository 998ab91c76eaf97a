//! The conformance suite on PostgreSQL, plus the schema rules checked with raw SQL that
//! bypasses the store.
//!
//! Every test creates its own database through the server that `INTEGRATIONS_TEST_POSTGRES_URL`
//! names, such as `postgres://postgres@127.0.0.1:5432/test`, and drops it afterwards. Without
//! the variable each test prints that it was skipped and passes.

use std::future::Future;

use integrations_core::store::IntegrationQuery;
use integrations_core::{IntegrationStore, StoreError};
use integrations_store::conformance::Fixture;
use integrations_store::{AnyStore, PostgresStore};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const URL_VARIABLE: &str = "INTEGRATIONS_TEST_POSTGRES_URL";

/// A database created for one test.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database, or returns why the test is skipped.
    async fn create() -> Result<Self, String> {
        let admin_url = std::env::var(URL_VARIABLE).map_err(|_| {
            format!(
                "{URL_VARIABLE} is unset; set it to a PostgreSQL URL such as \
                 postgres://postgres@127.0.0.1:5432/test to run the PostgreSQL tests"
            )
        })?;
        let name = format!("it_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the admin database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.expect("close the admin connection");

        let mut url = url::Url::parse(&admin_url).expect("valid PostgreSQL URL");
        url.set_path(&format!("/{name}"));
        Ok(Self {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database, closing any connection still open to it.
    async fn drop_database(admin_url: String, name: String) {
        let dropped = async {
            let mut admin = PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            admin.close().await
        }
        .await;
        if let Err(error) = dropped {
            eprintln!("failed to drop test database {name}: {error}");
        }
    }

    fn cleanup(&self) -> impl Future<Output = ()> + Send + 'static {
        Self::drop_database(self.admin_url.clone(), self.name.clone())
    }
}

async fn setup() -> Result<Fixture<PostgresStore>, String> {
    let database = TestDatabase::create().await?;
    let store = match PostgresStore::connect(&database.url).await {
        Ok(store) => store,
        Err(error) => {
            database.cleanup().await;
            panic!("connect to the test database: {error}");
        }
    };
    let closing = store.clone();
    let cleanup = database.cleanup();
    Ok(Fixture::with_cleanup(store, async move {
        closing.close().await;
        cleanup.await;
    }))
}

integrations_store::conformance_tests!(setup);

/// Runs `body` with the URL of a fresh database and drops the database afterwards, even when
/// the body panics. Skips when no server is configured.
async fn with_database<Body, BodyFuture>(name: &str, body: Body)
where
    Body: FnOnce(String) -> BodyFuture,
    BodyFuture: Future<Output = ()> + Send + 'static,
{
    let database = match TestDatabase::create().await {
        Ok(database) => database,
        Err(reason) => {
            println!("{name}: skipped: {reason}");
            return;
        }
    };
    let outcome = tokio::spawn(body(database.url.clone())).await;
    database.cleanup().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

const INSERT_INTEGRATION: &str = "INSERT INTO integrations (id, provider, category, auth_type, \
     is_global, is_default, config, credential_fields, sealed_credentials, created_at, \
     updated_at) VALUES ($1, 'github', 'github', 'pat', $2, $3, '{}', '[]', '\\x00', now(), now())";

async fn raw_insert(
    connection: &mut PgConnection,
    id: Uuid,
    is_global: bool,
    is_default: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_INTEGRATION)
        .bind(id)
        .bind(is_global)
        .bind(is_default)
        .execute(connection)
        .await
        .map(|_| ())
}

/// Opens the store, so the schema exists, and a raw connection to the same database.
async fn store_and_raw_connection(url: &str) -> (PostgresStore, PgConnection) {
    let store = PostgresStore::connect(url).await.expect("connect store");
    let raw = PgConnection::connect(url).await.expect("raw connection");
    (store, raw)
}

fn constraint(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) => database.constraint().map(str::to_owned),
        _ => None,
    }
}

#[tokio::test]
async fn schema_rejects_scoped_default() {
    with_database("schema_rejects_scoped_default", |url| async move {
        let (_store, mut raw) = store_and_raw_connection(&url).await;

        let result = raw_insert(&mut raw, Uuid::new_v4(), false, true).await;

        let error = result.expect_err("check constraint");
        assert_eq!(
            constraint(&error).as_deref(),
            Some("integrations_default_is_global")
        );
    })
    .await;
}

#[tokio::test]
async fn schema_rejects_second_default() {
    with_database("schema_rejects_second_default", |url| async move {
        let (_store, mut raw) = store_and_raw_connection(&url).await;
        raw_insert(&mut raw, Uuid::new_v4(), true, true)
            .await
            .expect("first default");

        let result = raw_insert(&mut raw, Uuid::new_v4(), true, true).await;

        let error = result.expect_err("unique index");
        assert_eq!(
            constraint(&error).as_deref(),
            Some("integrations_one_default_per_category")
        );
    })
    .await;
}

#[tokio::test]
async fn schema_rejects_unknown_project_link() {
    with_database("schema_rejects_unknown_project_link", |url| async move {
        let (_store, mut raw) = store_and_raw_connection(&url).await;
        let id = Uuid::new_v4();
        raw_insert(&mut raw, id, false, false)
            .await
            .expect("integration");

        let result = sqlx::query(
            "INSERT INTO integration_projects (integration_id, project_key) \
             VALUES ($1, 'owner/ghost')",
        )
        .bind(id)
        .execute(&mut raw)
        .await;

        let error = result.expect_err("foreign key");
        assert_eq!(
            constraint(&error).as_deref(),
            Some("integration_projects_project_key_fkey")
        );
    })
    .await;
}

#[tokio::test]
async fn connect_concurrently_on_empty_database() {
    with_database("connect_concurrently_on_empty_database", |url| async move {
        let connects: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url).await })
            })
            .collect();

        let mut stores = Vec::new();
        for connect in connects {
            let result = connect.await.expect("task completes");
            assert!(result.is_ok(), "{result:?}");
            stores.extend(result.ok());
        }
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(stores[0].pool())
            .await
            .expect("count migrations");
        let migrations =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
                .expect("list migrations")
                .count();
        // Each migration is applied once, however many processes connect at the same time.
        assert_eq!(applied, i64::try_from(migrations).unwrap());
    })
    .await;
}

#[tokio::test]
async fn open_selects_postgres() {
    with_database("open_selects_postgres", |url| async move {
        let postgresql_url = url.replacen("postgres://", "postgresql://", 1);

        let store = integrations_store::open(&postgresql_url)
            .await
            .expect("open store");

        assert!(matches!(store, AnyStore::Postgres(_)), "{store:?}");
    })
    .await;
}

#[tokio::test]
async fn debug_hides_password() {
    with_database("debug_hides_password", |url| async move {
        let mut with_password = url::Url::parse(&url).expect("valid URL");
        with_password
            .set_password(Some("s3cret"))
            .expect("URL takes a password");

        let store = PostgresStore::connect(with_password.as_str()).await;

        // The test server trusts loopback connections, so it accepts any password.
        let debug = format!("{:?}", store.expect("connect store"));
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    })
    .await;
}

#[tokio::test]
async fn connect_refused_is_unavailable() {
    // Port 1 on loopback has no listener, so the connection is refused at once.
    let result = PostgresStore::connect("postgres://app:s3cret@127.0.0.1:1/integrations").await;

    let error = result.expect_err("connection refused");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn locked_table_is_unavailable() {
    with_database("locked_table_is_unavailable", |url| async move {
        let (store, mut raw) = store_and_raw_connection(&url).await;
        sqlx::query("BEGIN").execute(&mut raw).await.unwrap();
        sqlx::query("LOCK TABLE integrations IN ACCESS EXCLUSIVE MODE")
            .execute(&mut raw)
            .await
            .unwrap();

        // The store's lock_timeout cancels the wait instead of holding the caller for as long
        // as the lock lives.
        let started = std::time::Instant::now();
        let result = store.list_integrations(&IntegrationQuery::default()).await;
        let waited = started.elapsed();
        sqlx::query("ROLLBACK").execute(&mut raw).await.unwrap();

        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(waited < std::time::Duration::from_secs(12), "{waited:?}");
    })
    .await;
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
    with_database("audit_chain_two_stores_concurrent", |url| async move {
        let first = PostgresStore::connect(&url).await.expect("connect first");
        let second = PostgresStore::connect(&url).await.expect("connect second");
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
    })
    .await;
}

#[tokio::test]
async fn audit_chain_detects_edit_and_delete() {
    use integrations_core::audit_chain::{verify_chain, ChainBreakReason};
    with_database("audit_chain_detects_edit_and_delete", |url| async move {
        let (store, mut raw) = store_and_raw_connection(&url).await;
        let events: Vec<_> = (0..4)
            .map(|index| audit_event(&format!("user{index}")))
            .collect();
        for event in &events {
            store.append_audit(event).await.expect("append audit");
        }

        sqlx::query("UPDATE audit_events SET actor_subject = 'mallory' WHERE id = $1")
            .bind(events[2].id)
            .execute(&mut raw)
            .await
            .expect("edit event");
        let broken = verify_chain(&store).await.expect("verify").first_break;
        let broken = broken.expect("edit detected");
        assert_eq!(broken.id, events[2].id);
        assert_eq!(broken.reason, ChainBreakReason::Edited);

        sqlx::query("UPDATE audit_events SET actor_subject = 'user2' WHERE id = $1")
            .bind(events[2].id)
            .execute(&mut raw)
            .await
            .expect("undo edit");
        sqlx::query("DELETE FROM audit_events WHERE id = $1")
            .bind(events[1].id)
            .execute(&mut raw)
            .await
            .expect("delete event");
        let broken = verify_chain(&store).await.expect("verify").first_break;
        let broken = broken.expect("deletion detected");
        assert_eq!(broken.id, events[2].id);
        assert_eq!(broken.reason, ChainBreakReason::PreviousMismatch);
    })
    .await;
}

#[tokio::test]
async fn audit_chain_upgrades_unchained_rows() {
    with_database("audit_chain_upgrades_unchained_rows", |url| async move {
        let (store, mut raw) = store_and_raw_connection(&url).await;
        // Rows as a binary from before the chain wrote them: no count, hashes or project key.
        for subject in ["old1", "old2", "old3"] {
            sqlx::query(
                "INSERT INTO audit_events (id, at, actor_subject, actor_role, action, \
                 integration_ids, filters, outcome) VALUES ($1, now(), $2, 'owner', \
                 'project_created', '[]', '{\"project\":\"Owner/Repo\"}', 'success')",
            )
            .bind(Uuid::new_v4())
            .bind(subject)
            .execute(&mut raw)
            .await
            .expect("insert unchained row");
        }
        // As the chain migration records for a database that held these rows when it ran.
        sqlx::query(
            "UPDATE audit_chain_origin \
             SET last_unchained_seq = (SELECT MAX(seq) FROM audit_events)",
        )
        .execute(&mut raw)
        .await
        .expect("record pre-chain rows");
        store.close().await;

        let reopened = PostgresStore::connect(&url).await.expect("reconnect");
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
    })
    .await;
}

#[tokio::test]
async fn audit_chain_nulled_hashes_stay_broken() {
    with_database("audit_chain_nulled_hashes_stay_broken", |url| async move {
        use integrations_core::audit_chain::{verify_chain, ChainBreakReason};
        let (store, mut raw) = store_and_raw_connection(&url).await;
        let events: Vec<_> = (0..4)
            .map(|index| audit_event(&format!("user{index}")))
            .collect();
        for event in &events {
            store.append_audit(event).await.expect("append audit");
        }
        let edited_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_events WHERE id = $1")
            .bind(events[1].id)
            .fetch_one(&mut raw)
            .await
            .expect("seq of event");
        // An edit hidden by clearing the hashes from the edited event on, so that a store that
        // chained every row without a hash would rebuild a valid chain over the edit.
        sqlx::query("UPDATE audit_events SET actor_subject = 'mallory' WHERE seq = $1")
            .bind(edited_seq)
            .execute(&mut raw)
            .await
            .expect("edit event");
        sqlx::query("UPDATE audit_events SET hash = NULL WHERE seq >= $1")
            .bind(edited_seq)
            .execute(&mut raw)
            .await
            .expect("clear hashes");
        store.close().await;

        let reopened = PostgresStore::connect(&url).await.expect("reconnect");
        let unchained: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE hash IS NULL")
                .fetch_one(&mut raw)
                .await
                .expect("count unchained rows");
        assert_eq!(unchained, 3, "connecting must not chain the cleared rows");
        reopened
            .append_audit(&audit_event("later"))
            .await
            .expect("append audit");

        let verification = verify_chain(&reopened).await.expect("verify");
        let broken = verification.first_break.expect("cleared hashes detected");
        assert_eq!(broken.id, events[1].id);
        assert_eq!(broken.reason, ChainBreakReason::Unchained);
        reopened.close().await;
    })
    .await;
}
