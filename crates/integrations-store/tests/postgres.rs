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
        // Each migration is applied once, however many processes raced to apply it.
        let migrations = sqlx::migrate!("./migrations/postgres").iter().count();
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
