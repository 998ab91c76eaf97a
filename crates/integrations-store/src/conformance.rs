//! One behaviour suite for every store, so that a new backend can prove it keeps the same rules.
//!
//! Each test is a public async function taking a fresh, empty store. A test file instantiates
//! all of them with [`conformance_tests!`](crate::conformance_tests) and a setup function:
//!
//! ```ignore
//! async fn setup() -> Result<Fixture<MemoryStore>, String> {
//!     Ok(Fixture::new(MemoryStore::new()))
//! }
//! integrations_store::conformance_tests!(setup);
//! ```
//!
//! A setup that returns `Err(reason)` skips the test with that reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Duration, TimeZone, Utc};
use integrations_core::audit_chain::{self, verify_chain, GENESIS_HASH};
use integrations_core::store::{
    AuditQuery, DataKeyState, IntegrationChanges, IntegrationQuery, ProjectDeletion,
};
use integrations_core::tokens::{ApplicationToken, ApplicationTokenRecord, RevokeResult};
use integrations_core::{
    Actor, AuditAction, AuditEvent, AuditOutcome, AuditSink, AuthType, Integration,
    IntegrationStore, Platform, Project, Provider, Role, StoreError, StoredDataKey,
    StoredIntegration,
};
use uuid::Uuid;

/// A store the suite can test: both seams, and cheap clones for concurrent tasks.
pub trait ConformanceStore: IntegrationStore + AuditSink + Clone + 'static {}

impl<S: IntegrationStore + AuditSink + Clone + 'static> ConformanceStore for S {}

/// Work that releases what a setup created, such as a database, once the test ends.
pub type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fresh store for one test and what to release after it.
pub struct Fixture<S> {
    store: S,
    cleanup: Option<Cleanup>,
}

impl<S> Fixture<S> {
    /// Wraps a store that needs no cleanup.
    pub fn new(store: S) -> Self {
        Self {
            store,
            cleanup: None,
        }
    }

    /// Wraps a store and the work that releases it, which runs even when the test fails.
    pub fn with_cleanup(store: S, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            store,
            cleanup: Some(Box::pin(cleanup)),
        }
    }
}

/// Runs one test on a store from `setup`, then the fixture's cleanup, then reports the outcome.
///
/// The test body runs in its own task, so that a failed assertion still lets the cleanup run.
pub async fn run<S, Setup, SetupFuture, Body, BodyFuture>(name: &str, setup: Setup, body: Body)
where
    S: ConformanceStore,
    Setup: FnOnce() -> SetupFuture,
    SetupFuture: Future<Output = Result<Fixture<S>, String>>,
    Body: FnOnce(S) -> BodyFuture,
    BodyFuture: Future<Output = ()> + Send + 'static,
{
    let fixture = match setup().await {
        Ok(fixture) => fixture,
        Err(reason) => {
            println!("{name}: skipped: {reason}");
            return;
        }
    };
    let outcome = tokio::spawn(body(fixture.store)).await;
    if let Some(cleanup) = fixture.cleanup {
        cleanup.await;
    }
    if let Err(error) = outcome {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
        panic!("{name}: test task ended abnormally: {error}");
    }
}

/// Declares one `#[tokio::test]` per conformance test, each on a store from `$setup`.
///
/// `$setup` is an async function returning `Result<Fixture<S>, String>`. The calling crate must
/// depend on `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            project_insert_find,
            project_find_missing,
            project_list_ordered,
            project_duplicate_rejected,
            project_unicode_identifier,
            project_delete_missing,
            project_delete_unused,
            project_delete_in_use,
            project_delete_detaches,
            integration_roundtrip,
            integration_large_sealed,
            integration_unicode_config,
            integration_find_missing,
            integration_unknown_project,
            integration_projects_sorted,
            integration_repeated_key,
            integration_duplicate_id,
            default_insert_replaces,
            default_demotion_audited,
            default_ai_category_shared,
            default_categories_independent,
            default_requires_global,
            update_changes_fields,
            update_empty_changes,
            update_default_moves,
            update_default_unset,
            update_default_non_global,
            update_missing,
            delete_integration_links,
            delete_integration_missing,
            list_order,
            list_filter_provider,
            list_filter_project,
            list_filter_global,
            list_filter_default,
            audit_roundtrip,
            audit_newest_first,
            audit_paging,
            audit_sink_record,
            audit_with_changes,
            audit_rolled_back,
            audit_chain_links,
            audit_chain_every_writer,
            audit_chain_concurrent,
            audit_search_time_range,
            audit_search_actor,
            audit_search_action,
            audit_search_integration,
            audit_search_project,
            audit_search_combined_paging,
            concurrent_default_inserts,
            concurrent_default_moves,
            ping_succeeds,
            data_key_primary_moves,
            data_key_concurrent_primaries,
            data_key_state_and_rewrap,
            sealed_rows_paged,
            sealed_replace_compares,
            data_key_rules_hold,
            token_insert_list,
            token_find_by_hash,
            token_duplicate_rejected,
            token_revoke_once,
            token_revoke_missing,
            token_audit_with_changes,
            token_concurrent_revokes,
        );
    };
    (@each $setup:path; $($test:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::conformance::run(
                    stringify!($test),
                    $setup,
                    $crate::conformance::$test,
                )
                .await;
            }
        )+
    };
}

// Fixtures. Times have whole microseconds because PostgreSQL keeps no finer precision.

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::microseconds(123_456)
}

fn project(identifier: &str) -> Project {
    Project {
        identifier: identifier.to_owned(),
        remote_url: format!("https://github.com/{identifier}.git"),
        platform: Platform::Github,
        created_at: base_time(),
    }
}

/// An integration created `offset` seconds after the base time.
fn integration(
    provider: Provider,
    is_global: bool,
    is_default: bool,
    offset: i64,
) -> StoredIntegration {
    let created_at = base_time() + Duration::seconds(offset);
    let mut config = serde_json::Map::new();
    config.insert("site".to_owned(), serde_json::json!("datadoghq.com"));
    StoredIntegration {
        integration: Integration {
            id: Uuid::new_v4(),
            provider,
            auth_type: AuthType::Pat,
            is_global,
            is_default,
            projects: Vec::new(),
            config,
            credential_fields: vec!["token".to_owned()],
            created_at,
            updated_at: created_at,
        },
        sealed_credentials: vec![1, 2, 3, 0, 255],
    }
}

fn global(provider: Provider, offset: i64) -> StoredIntegration {
    integration(provider, true, false, offset)
}

fn default_of(provider: Provider, offset: i64) -> StoredIntegration {
    integration(provider, true, true, offset)
}

/// A scoped integration whose `projects` lists the identifiers it will be read back with.
fn scoped(provider: Provider, offset: i64, identifiers: &[&str]) -> StoredIntegration {
    let mut stored = integration(provider, false, false, offset);
    stored.integration.projects = identifiers.iter().map(|id| (*id).to_owned()).collect();
    stored.integration.projects.sort();
    stored
}

fn keys(identifiers: &[&str]) -> Vec<String> {
    identifiers
        .iter()
        .map(|identifier| integrations_core::model::project_key(identifier))
        .collect()
}

fn event(action: AuditAction) -> AuditEvent {
    AuditEvent {
        at: base_time(),
        ..AuditEvent::new(
            &Actor::new("tester", Role::Owner),
            action,
            AuditOutcome::Success,
        )
    }
}

async fn add_project<S: ConformanceStore>(store: &S, identifier: &str) {
    store
        .insert_project(&project(identifier), &event(AuditAction::ProjectCreated))
        .await
        .expect("insert project");
}

async fn add<S: ConformanceStore>(store: &S, stored: &StoredIntegration, project_keys: &[String]) {
    store
        .insert_integration(
            stored,
            project_keys,
            &event(AuditAction::IntegrationCreated),
        )
        .await
        .expect("insert integration");
}

async fn find<S: ConformanceStore>(store: &S, id: Uuid) -> Option<StoredIntegration> {
    store.find_integration(id).await.expect("find integration")
}

async fn list<S: ConformanceStore>(store: &S, query: IntegrationQuery) -> Vec<Uuid> {
    store
        .list_integrations(&query)
        .await
        .expect("list integrations")
        .into_iter()
        .map(|stored| stored.integration.id)
        .collect()
}

async fn defaults<S: ConformanceStore>(store: &S) -> Vec<Uuid> {
    list(
        store,
        IntegrationQuery {
            default_only: true,
            ..IntegrationQuery::default()
        },
    )
    .await
}

async fn audit_count<S: ConformanceStore>(store: &S) -> usize {
    list_audit(store, 0, 1_000).await.expect("list audit").len()
}

/// Lists one page of the audit log, newest first, with no filter.
async fn list_audit<S: ConformanceStore>(
    store: &S,
    offset: u64,
    limit: u64,
) -> Result<Vec<AuditEvent>, StoreError> {
    store
        .search_audit(&AuditQuery {
            offset,
            limit,
            ..AuditQuery::default()
        })
        .await
}

fn update_event() -> AuditEvent {
    event(AuditAction::IntegrationUpdated)
}

fn make_default() -> IntegrationChanges {
    IntegrationChanges {
        is_default: Some(true),
        updated_at: Some(base_time() + Duration::seconds(3_600)),
        ..IntegrationChanges::default()
    }
}

// Projects.

/// A project is found by its lowercase key and keeps its identifier as registered.
pub async fn project_insert_find<S: ConformanceStore>(store: S) {
    let registered = project("Flxbl-IO/SF-Core");
    store
        .insert_project(&registered, &event(AuditAction::ProjectCreated))
        .await
        .expect("insert project");

    let found = store
        .find_project("flxbl-io/sf-core")
        .await
        .expect("find project");
    assert_eq!(found, Some(registered));
}

/// An unknown key finds nothing.
pub async fn project_find_missing<S: ConformanceStore>(store: S) {
    let found = store
        .find_project("nobody/nothing")
        .await
        .expect("find project");
    assert_eq!(found, None);
}

/// Projects are listed by key, whatever the case of their identifiers.
pub async fn project_list_ordered<S: ConformanceStore>(store: S) {
    for identifier in ["charlie/repo", "Alpha/repo", "bravo/repo"] {
        add_project(&store, identifier).await;
    }

    let listed: Vec<String> = store
        .list_projects()
        .await
        .expect("list projects")
        .into_iter()
        .map(|project| project.identifier)
        .collect();
    assert_eq!(listed, ["Alpha/repo", "bravo/repo", "charlie/repo"]);
}

/// A second project whose identifier differs only in case is a duplicate.
pub async fn project_duplicate_rejected<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;

    let result = store
        .insert_project(&project("Owner/Repo"), &event(AuditAction::ProjectCreated))
        .await;
    assert!(
        matches!(&result, Err(StoreError::DuplicateProject(identifier)) if identifier == "Owner/Repo"),
        "{result:?}"
    );
    let projects = store.list_projects().await.expect("list projects");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].identifier, "owner/repo");
}

/// Identifiers outside ASCII round-trip and are keyed in lowercase.
pub async fn project_unicode_identifier<S: ConformanceStore>(store: S) {
    let registered = project("Ärger/Ünïcödé-Répo-✓");
    store
        .insert_project(&registered, &event(AuditAction::ProjectCreated))
        .await
        .expect("insert project");

    let found = store
        .find_project("ärger/ünïcödé-répo-✓")
        .await
        .expect("find project");
    assert_eq!(found, Some(registered));
}

/// Deleting an unknown project reports it and writes no audit event.
pub async fn project_delete_missing<S: ConformanceStore>(store: S) {
    let result = store
        .delete_project("nobody/nothing", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");
    assert_eq!(result, ProjectDeletion::NotFound);
    assert_eq!(audit_count(&store).await, 0);
}

/// A project no integration uses is deleted with nothing detached.
pub async fn project_delete_unused<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;

    let result = store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");
    assert_eq!(
        result,
        ProjectDeletion::Deleted {
            detached_integrations: Vec::new()
        }
    );
    assert_eq!(
        store
            .find_project("owner/repo")
            .await
            .expect("find project"),
        None
    );
    assert_eq!(audit_count(&store).await, 2);
}

/// A project that is the only scope of integrations stays, and the error names them sorted.
pub async fn project_delete_in_use<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    add_project(&store, "owner/other").await;
    let first = scoped(Provider::Github, 0, &["owner/repo"]);
    let second = scoped(Provider::Jira, 1, &["owner/repo"]);
    let shared = scoped(Provider::Gitlab, 2, &["owner/repo", "owner/other"]);
    add(&store, &first, &keys(&["owner/repo"])).await;
    add(&store, &second, &keys(&["owner/repo"])).await;
    add(&store, &shared, &keys(&["owner/repo", "owner/other"])).await;
    let audit_before = audit_count(&store).await;

    let result = store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await;

    let mut expected = vec![first.integration.id, second.integration.id];
    expected.sort();
    assert!(
        matches!(&result, Err(StoreError::ProjectInUse(ids)) if *ids == expected),
        "{result:?}"
    );
    assert!(store
        .find_project("owner/repo")
        .await
        .expect("find project")
        .is_some());
    assert_eq!(find(&store, shared.integration.id).await, Some(shared));
    assert_eq!(find(&store, first.integration.id).await, Some(first));
    assert_eq!(audit_count(&store).await, audit_before);
}

/// Deleting one of several projects of an integration detaches it from that project only.
pub async fn project_delete_detaches<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    add_project(&store, "owner/other").await;
    let shared = scoped(Provider::Github, 0, &["owner/repo", "owner/other"]);
    add(&store, &shared, &keys(&["owner/repo", "owner/other"])).await;

    let result = store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");
    assert_eq!(
        result,
        ProjectDeletion::Deleted {
            detached_integrations: vec![shared.integration.id]
        }
    );
    let remaining = find(&store, shared.integration.id)
        .await
        .expect("integration kept");
    assert_eq!(remaining.integration.projects, ["owner/other"]);
}

// Integrations.

/// An integration reads back exactly as inserted, sealed bytes included.
pub async fn integration_roundtrip<S: ConformanceStore>(store: S) {
    let stored = global(Provider::Datadog, 0);
    add(&store, &stored, &[]).await;

    assert_eq!(find(&store, stored.integration.id).await, Some(stored));
}

/// A 16 KiB sealed blob round-trips unchanged.
pub async fn integration_large_sealed<S: ConformanceStore>(store: S) {
    let mut stored = global(Provider::Github, 0);
    stored.sealed_credentials = (0..16 * 1024).map(|index| (index % 251) as u8).collect();
    add(&store, &stored, &[]).await;

    let found = find(&store, stored.integration.id)
        .await
        .expect("integration found");
    assert_eq!(found.sealed_credentials.len(), 16 * 1024);
    assert_eq!(found.sealed_credentials, stored.sealed_credentials);
}

/// Configuration with text outside ASCII, nesting and numbers round-trips unchanged.
pub async fn integration_unicode_config<S: ConformanceStore>(store: S) {
    let mut stored = global(Provider::Splunk, 0);
    let config = serde_json::json!({
        "host": "splunk.例え.jp",
        "label": "Überwachung ✓ \u{1F600}",
        "escaped": "quote \" backslash \\ nul \u{0} end",
        "nested": {"ports": [8088, 443], "ratio": 0.25, "enabled": true, "none": null},
    });
    stored.integration.config = config.as_object().cloned().expect("object");
    stored.integration.credential_fields = vec!["api_key".to_owned(), "ключ".to_owned()];
    add(&store, &stored, &[]).await;

    assert_eq!(find(&store, stored.integration.id).await, Some(stored));
}

/// An unknown id finds nothing.
pub async fn integration_find_missing<S: ConformanceStore>(store: S) {
    assert_eq!(find(&store, Uuid::new_v4()).await, None);
}

/// A scope naming an unregistered project fails with that key and writes nothing.
pub async fn integration_unknown_project<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let stored = scoped(Provider::Github, 0, &["owner/repo", "owner/ghost"]);

    let result = store
        .insert_integration(
            &stored,
            &keys(&["owner/repo", "owner/ghost"]),
            &event(AuditAction::IntegrationCreated),
        )
        .await;

    assert!(
        matches!(&result, Err(StoreError::ProjectNotFound(key)) if key == "owner/ghost"),
        "{result:?}"
    );
    assert_eq!(find(&store, stored.integration.id).await, None);
    assert_eq!(
        list(&store, IntegrationQuery::default()).await,
        Vec::<Uuid>::new()
    );
    let in_use = store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");
    assert_eq!(
        in_use,
        ProjectDeletion::Deleted {
            detached_integrations: Vec::new()
        }
    );
}

/// An integration lists the registered identifiers of its projects, sorted.
pub async fn integration_projects_sorted<S: ConformanceStore>(store: S) {
    add_project(&store, "b-org/Repo").await;
    add_project(&store, "a-org/repo").await;
    let stored = scoped(Provider::Github, 0, &["b-org/Repo", "a-org/repo"]);
    add(&store, &stored, &keys(&["b-org/Repo", "a-org/repo"])).await;

    let found = find(&store, stored.integration.id)
        .await
        .expect("integration found");
    assert_eq!(found.integration.projects, ["a-org/repo", "b-org/Repo"]);
}

/// A key given twice in a scope links the project once.
pub async fn integration_repeated_key<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let stored = scoped(Provider::Github, 0, &["owner/repo"]);
    add(&store, &stored, &keys(&["owner/repo", "owner/repo"])).await;

    let found = find(&store, stored.integration.id)
        .await
        .expect("integration found");
    assert_eq!(found.integration.projects, ["owner/repo"]);
}

/// A second integration with an existing id is a conflict and leaves the first unchanged.
pub async fn integration_duplicate_id<S: ConformanceStore>(store: S) {
    let first = global(Provider::Github, 0);
    add(&store, &first, &[]).await;
    let mut second = global(Provider::Jira, 1);
    second.integration.id = first.integration.id;

    let result = store
        .insert_integration(&second, &[], &event(AuditAction::IntegrationCreated))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(find(&store, first.integration.id).await, Some(first));
}

// Defaults.

/// Inserting a default unsets the previous default of the provider.
pub async fn default_insert_replaces<S: ConformanceStore>(store: S) {
    let first = default_of(Provider::Github, 0);
    let second = default_of(Provider::Github, 1);
    add(&store, &first, &[]).await;
    add(&store, &second, &[]).await;

    assert_eq!(defaults(&store).await, [second.integration.id]);
    let previous = find(&store, first.integration.id)
        .await
        .expect("first kept");
    assert!(!previous.integration.is_default);
}

/// Every AI provider shares one default.
pub async fn default_ai_category_shared<S: ConformanceStore>(store: S) {
    let openai = default_of(Provider::AiOpenai, 0);
    let anthropic = default_of(Provider::AiAnthropic, 1);
    add(&store, &openai, &[]).await;
    add(&store, &anthropic, &[]).await;

    assert_eq!(defaults(&store).await, [anthropic.integration.id]);
}

/// Defaults of different categories stay side by side.
pub async fn default_categories_independent<S: ConformanceStore>(store: S) {
    let github = default_of(Provider::Github, 0);
    let gitlab = default_of(Provider::Gitlab, 1);
    let ai = default_of(Provider::AiGoogle, 2);
    add(&store, &github, &[]).await;
    add(&store, &gitlab, &[]).await;
    add(&store, &ai, &[]).await;

    assert_eq!(
        defaults(&store).await,
        [
            github.integration.id,
            gitlab.integration.id,
            ai.integration.id
        ]
    );
}

/// A default that is not global is rejected, and the previous default stays.
pub async fn default_requires_global<S: ConformanceStore>(store: S) {
    let previous = default_of(Provider::Github, 0);
    add(&store, &previous, &[]).await;
    let audit_before = audit_count(&store).await;
    let invalid = integration(Provider::Github, false, true, 1);

    let result = store
        .insert_integration(&invalid, &[], &event(AuditAction::IntegrationCreated))
        .await;

    assert!(result.is_err(), "{result:?}");
    assert_eq!(find(&store, invalid.integration.id).await, None);
    assert_eq!(defaults(&store).await, [previous.integration.id]);
    assert_eq!(audit_count(&store).await, audit_before);
}

// Updates.

/// An update replaces credentials, fields, configuration and time, and keeps the rest.
pub async fn update_changes_fields<S: ConformanceStore>(store: S) {
    let original = global(Provider::Github, 0);
    add(&store, &original, &[]).await;
    let mut config = serde_json::Map::new();
    config.insert(
        "base_url".to_owned(),
        serde_json::json!("https://ghe.example.com/api/v3"),
    );
    let changes = IntegrationChanges {
        sealed_credentials: Some((
            vec![9; 64],
            vec!["appId".to_owned(), "privateKey".to_owned()],
        )),
        config: Some(config.clone()),
        is_default: None,
        updated_at: Some(base_time() + Duration::seconds(60)),
    };

    let updated = store
        .update_integration(original.integration.id, &changes, &update_event())
        .await
        .expect("update integration")
        .expect("integration exists");

    let mut expected = original.clone();
    expected.sealed_credentials = vec![9; 64];
    expected.integration.credential_fields = vec!["appId".to_owned(), "privateKey".to_owned()];
    expected.integration.config = config;
    expected.integration.updated_at = base_time() + Duration::seconds(60);
    assert_eq!(updated, expected);
    assert_eq!(find(&store, original.integration.id).await, Some(expected));
}

/// An update without changes returns the integration as it was.
pub async fn update_empty_changes<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let original = scoped(Provider::Jira, 0, &["owner/repo"]);
    add(&store, &original, &keys(&["owner/repo"])).await;

    let updated = store
        .update_integration(
            original.integration.id,
            &IntegrationChanges::default(),
            &update_event(),
        )
        .await
        .expect("update integration");
    assert_eq!(updated, Some(original));
}

/// Making an integration the default unsets the previous default of its category.
pub async fn update_default_moves<S: ConformanceStore>(store: S) {
    let previous = default_of(Provider::AiOpenai, 0);
    let next = global(Provider::AiAnthropic, 1);
    add(&store, &previous, &[]).await;
    add(&store, &next, &[]).await;

    let updated = store
        .update_integration(next.integration.id, &make_default(), &update_event())
        .await
        .expect("update integration")
        .expect("integration exists");

    assert!(updated.integration.is_default);
    assert_eq!(defaults(&store).await, [next.integration.id]);
}

/// Clearing the default flag leaves the category without a default.
pub async fn update_default_unset<S: ConformanceStore>(store: S) {
    let current = default_of(Provider::Npm, 0);
    add(&store, &current, &[]).await;
    let changes = IntegrationChanges {
        is_default: Some(false),
        ..IntegrationChanges::default()
    };

    store
        .update_integration(current.integration.id, &changes, &update_event())
        .await
        .expect("update integration");
    assert_eq!(defaults(&store).await, Vec::<Uuid>::new());
}

/// A scoped integration cannot become the default, and the previous default stays.
pub async fn update_default_non_global<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let previous = default_of(Provider::Github, 0);
    let scoped_one = scoped(Provider::Github, 1, &["owner/repo"]);
    add(&store, &previous, &[]).await;
    add(&store, &scoped_one, &keys(&["owner/repo"])).await;
    let audit_before = audit_count(&store).await;

    let result = store
        .update_integration(scoped_one.integration.id, &make_default(), &update_event())
        .await;

    assert!(result.is_err(), "{result:?}");
    assert_eq!(defaults(&store).await, [previous.integration.id]);
    assert_eq!(find(&store, previous.integration.id).await, Some(previous));
    assert_eq!(audit_count(&store).await, audit_before);
}

/// Updating an unknown id returns nothing and writes no audit event.
pub async fn update_missing<S: ConformanceStore>(store: S) {
    let result = store
        .update_integration(Uuid::new_v4(), &make_default(), &update_event())
        .await
        .expect("update integration");
    assert_eq!(result, None);
    assert_eq!(audit_count(&store).await, 0);
}

// Deletes.

/// Deleting an integration removes it and its project links, so the project is free to go.
pub async fn delete_integration_links<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let stored = scoped(Provider::Github, 0, &["owner/repo"]);
    add(&store, &stored, &keys(&["owner/repo"])).await;

    let deleted = store
        .delete_integration(
            stored.integration.id,
            &event(AuditAction::IntegrationDeleted),
        )
        .await
        .expect("delete integration");

    assert!(deleted);
    assert_eq!(find(&store, stored.integration.id).await, None);
    let by_project = IntegrationQuery {
        project_key: Some("owner/repo".to_owned()),
        ..IntegrationQuery::default()
    };
    assert_eq!(list(&store, by_project).await, Vec::<Uuid>::new());
    let project_deleted = store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");
    assert_eq!(
        project_deleted,
        ProjectDeletion::Deleted {
            detached_integrations: Vec::new()
        }
    );
}

/// Deleting an unknown id returns `false` and writes no audit event.
pub async fn delete_integration_missing<S: ConformanceStore>(store: S) {
    let deleted = store
        .delete_integration(Uuid::new_v4(), &event(AuditAction::IntegrationDeleted))
        .await
        .expect("delete integration");
    assert!(!deleted);
    assert_eq!(audit_count(&store).await, 0);
}

// Listing.

/// Defaults come first, then integrations by creation time, then by id.
pub async fn list_order<S: ConformanceStore>(store: S) {
    let late = global(Provider::Github, 30);
    let early = global(Provider::Jira, 10);
    let default_late = default_of(Provider::Gitlab, 40);
    let default_early = default_of(Provider::Npm, 20);
    let mut tied_a = global(Provider::Jfrog, 5);
    let mut tied_b = global(Provider::Jfrog, 5);
    tied_a.integration.id = Uuid::from_u128(0x2000_0000_0000_4000_8000_0000_0000_0001);
    tied_b.integration.id = Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0001);
    for stored in [
        &late,
        &early,
        &default_late,
        &default_early,
        &tied_a,
        &tied_b,
    ] {
        add(&store, stored, &[]).await;
    }

    let expected = [
        default_early.integration.id,
        default_late.integration.id,
        tied_b.integration.id,
        tied_a.integration.id,
        early.integration.id,
        late.integration.id,
    ];
    assert_eq!(list(&store, IntegrationQuery::default()).await, expected);
}

/// The provider filter keeps that provider only.
pub async fn list_filter_provider<S: ConformanceStore>(store: S) {
    let github = global(Provider::Github, 0);
    let gitlab = global(Provider::Gitlab, 1);
    let azure = global(Provider::AzureDevops, 2);
    for stored in [&github, &gitlab, &azure] {
        add(&store, stored, &[]).await;
    }

    let query = IntegrationQuery {
        provider: Some(Provider::AzureDevops),
        ..IntegrationQuery::default()
    };
    assert_eq!(list(&store, query).await, [azure.integration.id]);
}

/// The project filter keeps the integrations linked to that project key.
pub async fn list_filter_project<S: ConformanceStore>(store: S) {
    add_project(&store, "Owner/Repo").await;
    add_project(&store, "owner/other").await;
    let mine = scoped(Provider::Github, 0, &["Owner/Repo"]);
    let shared = scoped(Provider::Jira, 1, &["Owner/Repo", "owner/other"]);
    let other = scoped(Provider::Github, 2, &["owner/other"]);
    let everywhere = global(Provider::Github, 3);
    add(&store, &mine, &keys(&["Owner/Repo"])).await;
    add(&store, &shared, &keys(&["Owner/Repo", "owner/other"])).await;
    add(&store, &other, &keys(&["owner/other"])).await;
    add(&store, &everywhere, &[]).await;

    let query = IntegrationQuery {
        project_key: Some("owner/repo".to_owned()),
        ..IntegrationQuery::default()
    };
    let listed = store
        .list_integrations(&query)
        .await
        .expect("list integrations");
    assert_eq!(listed, [mine, shared]);
}

/// The global filter drops scoped integrations.
pub async fn list_filter_global<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let scoped_one = scoped(Provider::Github, 0, &["owner/repo"]);
    let global_one = global(Provider::Github, 1);
    add(&store, &scoped_one, &keys(&["owner/repo"])).await;
    add(&store, &global_one, &[]).await;

    let query = IntegrationQuery {
        global_only: true,
        ..IntegrationQuery::default()
    };
    assert_eq!(list(&store, query).await, [global_one.integration.id]);
}

/// The default filter keeps defaults only, combined with the provider filter.
pub async fn list_filter_default<S: ConformanceStore>(store: S) {
    let github = default_of(Provider::Github, 0);
    let jira = default_of(Provider::Jira, 1);
    let plain = global(Provider::Github, 2);
    for stored in [&github, &jira, &plain] {
        add(&store, stored, &[]).await;
    }

    let query = IntegrationQuery {
        provider: Some(Provider::Github),
        default_only: true,
        ..IntegrationQuery::default()
    };
    assert_eq!(list(&store, query).await, [github.integration.id]);
}

// Audit.

/// An audit event reads back with every field.
pub async fn audit_roundtrip<S: ConformanceStore>(store: S) {
    let mut filters = BTreeMap::new();
    filters.insert("provider".to_owned(), "github".to_owned());
    filters.insert("project".to_owned(), "Ärger/Répo".to_owned());
    let recorded = AuditEvent {
        id: Uuid::new_v4(),
        at: base_time(),
        actor_subject: "ci-bot ✓".to_owned(),
        actor_role: Role::Application,
        action: AuditAction::CredentialsRead,
        integration_ids: vec![Uuid::new_v4(), Uuid::new_v4()],
        filters,
        outcome: AuditOutcome::Denied,
        count: 7,
    };
    store.append_audit(&recorded).await.expect("append audit");

    let listed = list_audit(&store, 0, 10).await.expect("list audit");
    assert_eq!(listed, [recorded]);
}

/// Events are listed newest first, and in reverse order of writing when their times tie.
pub async fn audit_newest_first<S: ConformanceStore>(store: S) {
    let older = event(AuditAction::CredentialsRead);
    let newer = AuditEvent {
        at: base_time() + Duration::seconds(1),
        ..event(AuditAction::CredentialsRead)
    };
    let tied_first = event(AuditAction::CredentialsRead);
    for recorded in [&older, &newer, &tied_first] {
        store.append_audit(recorded).await.expect("append audit");
    }

    let ids: Vec<Uuid> = list_audit(&store, 0, 10)
        .await
        .expect("list audit")
        .into_iter()
        .map(|listed| listed.id)
        .collect();
    assert_eq!(ids, [newer.id, tied_first.id, older.id]);
}

/// Offset and limit page through the events.
pub async fn audit_paging<S: ConformanceStore>(store: S) {
    let mut written = Vec::new();
    for offset in 0..5 {
        let recorded = AuditEvent {
            at: base_time() + Duration::seconds(offset),
            ..event(AuditAction::CredentialsRead)
        };
        store.append_audit(&recorded).await.expect("append audit");
        written.push(recorded.id);
    }
    written.reverse();

    let page = |offset, limit| {
        let store = store.clone();
        async move {
            list_audit(&store, offset, limit)
                .await
                .expect("list audit")
                .into_iter()
                .map(|listed| listed.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 2).await, written[0..2]);
    assert_eq!(page(2, 2).await, written[2..4]);
    assert_eq!(page(4, 2).await, written[4..5]);
    assert_eq!(page(5, 2).await, Vec::<Uuid>::new());
    assert_eq!(page(0, u64::MAX).await, written);
}

/// The audit sink writes to the same log.
pub async fn audit_sink_record<S: ConformanceStore>(store: S) {
    let recorded = event(AuditAction::CredentialsRead);
    AuditSink::record(&store, &recorded).await.expect("record");

    let listed = list_audit(&store, 0, 10).await.expect("list audit");
    assert_eq!(listed, [recorded]);
}

/// Every successful change writes the audit event it was given.
pub async fn audit_with_changes<S: ConformanceStore>(store: S) {
    let project_event = event(AuditAction::ProjectCreated);
    store
        .insert_project(&project("owner/repo"), &project_event)
        .await
        .expect("insert project");
    let stored = global(Provider::Github, 0);
    let create_event = event(AuditAction::IntegrationCreated);
    store
        .insert_integration(&stored, &[], &create_event)
        .await
        .expect("insert integration");
    let change_event = update_event();
    store
        .update_integration(stored.integration.id, &make_default(), &change_event)
        .await
        .expect("update integration");
    let delete_event = event(AuditAction::IntegrationDeleted);
    store
        .delete_integration(stored.integration.id, &delete_event)
        .await
        .expect("delete integration");
    let unregister_event = event(AuditAction::ProjectDeleted);
    store
        .delete_project("owner/repo", &unregister_event)
        .await
        .expect("delete project");

    let mut listed: Vec<Uuid> = list_audit(&store, 0, 10)
        .await
        .expect("list audit")
        .into_iter()
        .map(|listed| listed.id)
        .collect();
    listed.sort();
    let mut expected = vec![
        project_event.id,
        create_event.id,
        change_event.id,
        delete_event.id,
        unregister_event.id,
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

/// A change that fails leaves no audit event behind.
pub async fn audit_rolled_back<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let stored = scoped(Provider::Github, 0, &["owner/ghost"]);
    let failed_insert = event(AuditAction::IntegrationCreated);
    let failed_project = event(AuditAction::ProjectCreated);

    let insert = store
        .insert_integration(&stored, &keys(&["owner/ghost"]), &failed_insert)
        .await;
    let duplicate = store
        .insert_project(&project("OWNER/REPO"), &failed_project)
        .await;

    assert!(insert.is_err(), "{insert:?}");
    assert!(duplicate.is_err(), "{duplicate:?}");
    let ids: Vec<Uuid> = list_audit(&store, 0, 10)
        .await
        .expect("list audit")
        .into_iter()
        .map(|listed| listed.id)
        .collect();
    assert!(!ids.contains(&failed_insert.id), "{ids:?}");
    assert!(!ids.contains(&failed_project.id), "{ids:?}");
    assert_eq!(ids.len(), 1);
}

// Audit chain.

/// Appended events link up from the genesis hash, and verification walks all of them.
pub async fn audit_chain_links<S: ConformanceStore>(store: S) {
    // More than one verification batch, so the walk crosses a batch boundary.
    let total = audit_chain::VERIFY_BATCH + 3;
    for _ in 0..total {
        store
            .append_audit(&event(AuditAction::CredentialsRead))
            .await
            .expect("append audit");
    }

    let chain = store.list_audit_chain(0, 3).await.expect("list chain");
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0].prev_hash, GENESIS_HASH.to_vec());
    assert_eq!(chain[1].prev_hash, chain[0].hash);
    assert_eq!(chain[2].prev_hash, chain[1].hash);
    assert!(chain[0].seq < chain[1].seq);
    assert!(chain[1].seq < chain[2].seq);
    let after = store
        .list_audit_chain(chain[2].seq, 1)
        .await
        .expect("list chain");
    assert_eq!(after[0].prev_hash, chain[2].hash);

    let verification = verify_chain(&store).await.expect("verify");
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, total);
}

/// Events written with changes and through the audit sink extend the same chain.
pub async fn audit_chain_every_writer<S: ConformanceStore>(store: S) {
    add_project(&store, "owner/repo").await;
    let stored = global(Provider::Github, 0);
    add(&store, &stored, &[]).await;
    store
        .update_integration(stored.integration.id, &make_default(), &update_event())
        .await
        .expect("update integration");
    AuditSink::record(&store, &event(AuditAction::CredentialsRead))
        .await
        .expect("record");
    store
        .delete_integration(
            stored.integration.id,
            &event(AuditAction::IntegrationDeleted),
        )
        .await
        .expect("delete integration");
    store
        .delete_project("owner/repo", &event(AuditAction::ProjectDeleted))
        .await
        .expect("delete project");

    let verification = verify_chain(&store).await.expect("verify");
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, 6);
}

/// Tasks appending at the same time extend one chain instead of forking it.
pub async fn audit_chain_concurrent<S: ConformanceStore>(store: S) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_audit(&event(AuditAction::CredentialsRead))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task completes");
        assert!(result.is_ok(), "{result:?}");
    }

    let verification = verify_chain(&store).await.expect("verify");
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, 20);
}

// Audit search.

/// Appends events and returns their ids in the order given.
async fn append_all<S: ConformanceStore>(store: &S, events: &[AuditEvent]) -> Vec<Uuid> {
    for recorded in events {
        store.append_audit(recorded).await.expect("append audit");
    }
    events.iter().map(|recorded| recorded.id).collect()
}

async fn search<S: ConformanceStore>(store: &S, query: AuditQuery) -> Vec<Uuid> {
    store
        .search_audit(&query)
        .await
        .expect("search audit")
        .into_iter()
        .map(|found| found.id)
        .collect()
}

fn event_at(seconds: i64) -> AuditEvent {
    AuditEvent {
        at: base_time() + Duration::seconds(seconds),
        ..event(AuditAction::CredentialsRead)
    }
}

/// `from` and `to` are inclusive bounds.
pub async fn audit_search_time_range<S: ConformanceStore>(store: S) {
    let ids = append_all(&store, &[event_at(0), event_at(10), event_at(20)]).await;

    let query = AuditQuery {
        from: Some(base_time() + Duration::seconds(10)),
        to: Some(base_time() + Duration::seconds(20)),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[2], ids[1]]);
    let query = AuditQuery {
        to: Some(base_time() + Duration::seconds(10) - Duration::microseconds(1)),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[0]]);
    let query = AuditQuery {
        from: Some(base_time() + Duration::seconds(21)),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, Vec::<Uuid>::new());
}

/// `actor` matches the subject exactly, case included.
pub async fn audit_search_actor<S: ConformanceStore>(store: S) {
    let alice = AuditEvent {
        actor_subject: "alice".into(),
        ..event_at(0)
    };
    let upper = AuditEvent {
        actor_subject: "Alice".into(),
        ..event_at(1)
    };
    let ids = append_all(&store, &[alice, upper, event_at(2)]).await;

    let query = AuditQuery {
        actor: Some("alice".into()),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[0]]);
}

/// `action` selects one kind of event.
pub async fn audit_search_action<S: ConformanceStore>(store: S) {
    let denied = AuditEvent {
        at: base_time() + Duration::seconds(1),
        ..event(AuditAction::AccessDenied)
    };
    let failed = AuditEvent {
        count: 4,
        ..event(AuditAction::AuthenticationFailed)
    };
    let ids = append_all(&store, &[event_at(0), denied, failed]).await;

    let query = AuditQuery {
        action: Some(AuditAction::AccessDenied),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[1]]);
    let query = AuditQuery {
        action: Some(AuditAction::AuthenticationFailed),
        ..AuditQuery::default()
    };
    let found = store.search_audit(&query).await.expect("search audit");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].count, 4);
}

/// `integration` matches events that list the id among others.
pub async fn audit_search_integration<S: ConformanceStore>(store: S) {
    let target = Uuid::new_v4();
    let both = event_at(0).with_integrations([Uuid::new_v4(), target]);
    let other = event_at(1).with_integrations([Uuid::new_v4()]);
    let only = event_at(2).with_integrations([target]);
    let ids = append_all(&store, &[both, other, only, event_at(3)]).await;

    let query = AuditQuery {
        integration: Some(target),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[2], ids[0]]);
}

/// `project` compares the event's project filter by project key, ignoring case.
pub async fn audit_search_project<S: ConformanceStore>(store: S) {
    let mixed = event_at(0).with_filter("project", "Owner/Repo");
    let lower = event_at(1).with_filter("project", "owner/repo");
    let unicode = event_at(2).with_filter("project", "ÄRGER/Répo");
    let other = event_at(3).with_filter("project", "owner/other");
    let ids = append_all(&store, &[mixed, lower, unicode, other, event_at(4)]).await;

    let query = AuditQuery {
        project_key: Some(integrations_core::model::project_key("OWNER/repo")),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[1], ids[0]]);
    let query = AuditQuery {
        project_key: Some(integrations_core::model::project_key("ärger/répo")),
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query).await, [ids[2]]);
}

/// Filters combine, and offset and limit page through the matches only.
pub async fn audit_search_combined_paging<S: ConformanceStore>(store: S) {
    let mut events = Vec::new();
    for seconds in 0..6 {
        let subject = if seconds % 2 == 0 { "even" } else { "odd" };
        events.push(AuditEvent {
            actor_subject: subject.into(),
            ..event_at(seconds)
        });
    }
    let ids = append_all(&store, &events).await;

    let query = |offset, limit| AuditQuery {
        actor: Some("even".into()),
        action: Some(AuditAction::CredentialsRead),
        from: Some(base_time() + Duration::seconds(1)),
        offset,
        limit,
        ..AuditQuery::default()
    };
    assert_eq!(search(&store, query(0, 10)).await, [ids[4], ids[2]]);
    assert_eq!(search(&store, query(1, 1)).await, [ids[2]]);
    assert_eq!(search(&store, query(2, 1)).await, Vec::<Uuid>::new());
}

// Concurrency.

/// Tasks that insert a default of one category at the same time leave exactly one default.
pub async fn concurrent_default_inserts<S: ConformanceStore>(store: S) {
    let tasks: Vec<_> = (0..20)
        .map(|offset| {
            let store = store.clone();
            tokio::spawn(async move {
                let stored = default_of(Provider::Github, offset);
                store
                    .insert_integration(&stored, &[], &event(AuditAction::IntegrationCreated))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task completes");
        assert!(result.is_ok(), "{result:?}");
    }

    assert_eq!(list(&store, IntegrationQuery::default()).await.len(), 20);
    assert_eq!(defaults(&store).await.len(), 1);
}

/// Tasks that move the default among integrations at the same time leave exactly one default.
pub async fn concurrent_default_moves<S: ConformanceStore>(store: S) {
    let mut ids = Vec::new();
    for offset in 0..10 {
        let stored = integration(Provider::AiOpenai, true, offset == 0, offset);
        add(&store, &stored, &[]).await;
        ids.push(stored.integration.id);
    }

    let tasks: Vec<_> = (0..20)
        .map(|task| {
            let store = store.clone();
            let id = ids[task % ids.len()];
            tokio::spawn(async move {
                store
                    .update_integration(id, &make_default(), &update_event())
                    .await
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task completes");
        assert!(matches!(result, Ok(Some(_))), "{result:?}");
    }

    assert_eq!(defaults(&store).await.len(), 1);
}

/// A reachable store answers a ping.
pub async fn ping_succeeds<S: ConformanceStore>(store: S) {
    let result = store.ping().await;
    assert!(result.is_ok(), "{result:?}");
}

// Data keys and re-encryption.

fn data_key(id: &str, is_primary: bool, offset: i64) -> StoredDataKey {
    StoredDataKey {
        id: id.to_owned(),
        wrapped: vec![1, 0, 255, offset as u8],
        wrapping_key_id: "0a1b2c3d".to_owned(),
        is_primary,
        state: DataKeyState::Active,
        created_at: base_time() + Duration::seconds(offset),
    }
}

/// Checks that a new primary data key demotes the previous one in the same write.
pub async fn data_key_primary_moves<S: ConformanceStore>(store: S) {
    assert_eq!(store.primary_data_key().await.unwrap(), None);
    let first = data_key("dk-first", true, 0);
    store.insert_data_key(&first).await.unwrap();
    assert_eq!(store.primary_data_key().await.unwrap(), Some(first.clone()));

    let second = StoredDataKey {
        state: DataKeyState::Rotating,
        ..data_key("dk-second", true, 1)
    };
    store.insert_data_key(&second).await.unwrap();
    assert_eq!(
        store.primary_data_key().await.unwrap(),
        Some(second.clone())
    );
    let demoted = StoredDataKey {
        is_primary: false,
        ..first
    };
    assert_eq!(
        store.list_data_keys().await.unwrap(),
        vec![demoted.clone(), second]
    );
    assert_eq!(
        store.find_data_key("dk-first").await.unwrap(),
        Some(demoted)
    );
    assert_eq!(store.find_data_key("dk-missing").await.unwrap(), None);
    assert!(matches!(
        store.insert_data_key(&data_key("dk-first", false, 2)).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Primary keys added from many connections at once leave exactly one primary.
pub async fn data_key_concurrent_primaries<S: ConformanceStore>(store: S) {
    let tasks: Vec<_> = (0..8)
        .map(|index| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_data_key(&data_key(&format!("dk-{index}"), true, index))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let keys = store.list_data_keys().await.unwrap();
    assert_eq!(keys.len(), 8);
    assert_eq!(keys.iter().filter(|key| key.is_primary).count(), 1);
}

/// State changes and rewraps apply to named keys; a rewrap naming a missing key changes nothing.
pub async fn data_key_state_and_rewrap<S: ConformanceStore>(store: S) {
    store
        .insert_data_key(&data_key("dk-a", false, 0))
        .await
        .unwrap();
    store
        .insert_data_key(&data_key("dk-b", true, 1))
        .await
        .unwrap();
    assert!(store
        .set_data_key_state("dk-b", DataKeyState::Rotating)
        .await
        .unwrap());
    assert!(!store
        .set_data_key_state("dk-missing", DataKeyState::Active)
        .await
        .unwrap());
    assert_eq!(
        store.primary_data_key().await.unwrap().unwrap().state,
        DataKeyState::Rotating
    );

    let rewrapped = |id: &str, offset: i64| StoredDataKey {
        wrapped: vec![9, 9, 9],
        wrapping_key_id: "ffffffff".to_owned(),
        ..data_key(id, false, offset)
    };
    let result = store
        .rewrap_data_keys(&[rewrapped("dk-a", 0), rewrapped("dk-missing", 5)])
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let unchanged = store.find_data_key("dk-a").await.unwrap().unwrap();
    assert_eq!(unchanged.wrapping_key_id, "0a1b2c3d");

    store
        .rewrap_data_keys(&[rewrapped("dk-a", 0), rewrapped("dk-b", 1)])
        .await
        .unwrap();
    for key in store.list_data_keys().await.unwrap() {
        assert_eq!(key.wrapped, vec![9, 9, 9]);
        assert_eq!(key.wrapping_key_id, "ffffffff");
    }
    // A rewrap changes neither which key is primary nor its state.
    let primary = store.primary_data_key().await.unwrap().unwrap();
    assert_eq!(primary.id, "dk-b");
    assert_eq!(primary.state, DataKeyState::Rotating);
}

/// Checks the data key rules: one wrapping key for every data key, one unfinished rotation at a
/// time, and rewraps that name every key. Each rejected change leaves the keys as they were.
pub async fn data_key_rules_hold<S: ConformanceStore>(store: S) {
    store
        .insert_data_key(&data_key("dk-a", true, 0))
        .await
        .unwrap();
    let other_master = StoredDataKey {
        wrapping_key_id: "ffffffff".to_owned(),
        ..data_key("dk-other", true, 1)
    };
    let result = store.insert_data_key(&other_master).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    let rotating = |id: &str, offset: i64| StoredDataKey {
        state: DataKeyState::Rotating,
        ..data_key(id, true, offset)
    };
    store.insert_data_key(&rotating("dk-b", 2)).await.unwrap();
    let result = store.insert_data_key(&rotating("dk-c", 3)).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(
        store.primary_data_key().await.unwrap().unwrap().id,
        "dk-b",
        "a rejected key must not demote the primary"
    );

    let rewrapped = StoredDataKey {
        wrapping_key_id: "ffffffff".to_owned(),
        ..data_key("dk-a", false, 0)
    };
    let result = store.rewrap_data_keys(&[rewrapped]).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let ids: Vec<String> = store
        .list_data_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.wrapping_key_id)
        .collect();
    assert_eq!(ids, vec!["0a1b2c3d", "0a1b2c3d"]);
}

/// Checks that the audit event of a change that demotes a default names the demoted integration,
/// so a search by that integration finds it.
pub async fn default_demotion_audited<S: ConformanceStore>(store: S) {
    let first = default_of(Provider::Github, 0);
    add(&store, &first, &[]).await;
    let second = default_of(Provider::Github, 1);
    let event = event(AuditAction::IntegrationCreated).with_integrations([second.integration.id]);
    store
        .insert_integration(&second, &[], &event)
        .await
        .unwrap();

    let found = store
        .search_audit(&AuditQuery {
            integration: Some(first.integration.id),
            action: Some(AuditAction::IntegrationCreated),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let demoting: Vec<&AuditEvent> = found.iter().filter(|found| found.id == event.id).collect();
    assert_eq!(demoting.len(), 1, "{found:?}");
    assert_eq!(
        demoting[0].integration_ids,
        vec![second.integration.id, first.integration.id]
    );
    assert_eq!(
        demoting[0].filters.get("demoted_default"),
        Some(&first.integration.id.to_string())
    );

    // Moving the default back by an update is audited the same way.
    let moved = store
        .update_integration(first.integration.id, &make_default(), &update_event())
        .await
        .unwrap();
    assert!(moved.is_some());
    let found = store
        .search_audit(&AuditQuery {
            integration: Some(second.integration.id),
            action: Some(AuditAction::IntegrationUpdated),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].filters.get("demoted_default"),
        Some(&second.integration.id.to_string())
    );
    assert!(verify_chain(&store).await.unwrap().first_break.is_none());
}

/// Sealed rows page by id, each page starting after the last id of the previous one.
pub async fn sealed_rows_paged<S: ConformanceStore>(store: S) {
    let mut ids = Vec::new();
    for offset in 0..5 {
        let stored = global(Provider::Jira, offset);
        ids.push(stored.integration.id);
        add(&store, &stored, &[]).await;
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_sealed(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in &page {
            assert_eq!(row.provider, Provider::Jira);
            assert_eq!(row.auth_type, AuthType::Pat);
            assert_eq!(row.sealed_credentials, vec![1, 2, 3, 0, 255]);
        }
        seen.extend(page.iter().map(|row| row.id));
    }
    assert_eq!(seen, ids);
}

/// Sealed credentials are replaced only while they still hold the expected bytes, and the
/// replacement leaves `updated_at` alone.
pub async fn sealed_replace_compares<S: ConformanceStore>(store: S) {
    let stored = global(Provider::Github, 0);
    let id = stored.integration.id;
    add(&store, &stored, &[]).await;

    assert!(!store
        .replace_sealed(id, &[7, 7, 7], &[4, 4, 4, 4])
        .await
        .unwrap());
    assert_eq!(
        find(&store, id).await.unwrap().sealed_credentials,
        stored.sealed_credentials
    );

    assert!(store
        .replace_sealed(id, &stored.sealed_credentials, &[4, 4, 4, 4])
        .await
        .unwrap());
    let replaced = find(&store, id).await.unwrap();
    assert_eq!(replaced.sealed_credentials, vec![4, 4, 4, 4]);
    assert_eq!(
        replaced.integration.updated_at,
        stored.integration.updated_at
    );
    assert!(!store
        .replace_sealed(Uuid::new_v4(), &[4, 4, 4, 4], &[5])
        .await
        .unwrap());
}

// Application tokens.

/// Builds a token record created `offset` seconds after the base time, hashed from `seed`.
fn token_record(name: &str, offset: i64, seed: u8) -> ApplicationTokenRecord {
    let created_at = base_time() + Duration::seconds(offset);
    let mut token_hash = [seed; 32];
    token_hash[0] = 0;
    ApplicationTokenRecord {
        token: ApplicationToken {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at,
            expires_at: created_at + Duration::days(30),
            revoked_at: None,
            created_by: "owner ✓".to_owned(),
        },
        token_hash,
    }
}

async fn add_token<S: ConformanceStore>(store: &S, record: &ApplicationTokenRecord) {
    store
        .insert_application_token(record, &event(AuditAction::ApplicationTokenCreated))
        .await
        .expect("insert application token");
}

fn revoke_event() -> AuditEvent {
    event(AuditAction::ApplicationTokenRevoked)
}

/// Tokens list oldest first with every field, revoked or not.
pub async fn token_insert_list<S: ConformanceStore>(store: S) {
    let newer = token_record("deploy pipeline", 10, 1);
    let older = token_record("Ärger-Bot", 0, 2);
    let mut revoked = token_record("retired", 20, 3);
    revoked.token.revoked_at = Some(base_time() + Duration::seconds(30));
    for record in [&newer, &older, &revoked] {
        add_token(&store, record).await;
    }

    let listed = store
        .list_application_tokens()
        .await
        .expect("list application tokens");
    assert_eq!(listed, [older.token, newer.token, revoked.token]);
}

/// Checks that a token is found by its hash with its metadata, and another hash finds nothing.
pub async fn token_find_by_hash<S: ConformanceStore>(store: S) {
    let record = token_record("ci", 0, 7);
    add_token(&store, &record).await;

    let found = store
        .find_application_token_by_hash(&record.token_hash)
        .await
        .expect("find application token");
    assert_eq!(found, Some(record));
    let missing = store
        .find_application_token_by_hash(&[9; 32])
        .await
        .expect("find application token");
    assert_eq!(missing, None);
}

/// Checks that a second token with a stored hash or id is a conflict and writes no audit event.
pub async fn token_duplicate_rejected<S: ConformanceStore>(store: S) {
    let record = token_record("ci", 0, 7);
    add_token(&store, &record).await;
    let same_hash = token_record("other", 1, 7);
    let mut same_id = token_record("third", 2, 8);
    same_id.token.id = record.token.id;

    for duplicate in [&same_hash, &same_id] {
        let result = store
            .insert_application_token(duplicate, &event(AuditAction::ApplicationTokenCreated))
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    }
    let listed = store
        .list_application_tokens()
        .await
        .expect("list application tokens");
    assert_eq!(listed, [record.token]);
    assert_eq!(audit_count(&store).await, 1);
}

/// Checks that the first revocation sets the time, and a second one reports it and keeps it.
pub async fn token_revoke_once<S: ConformanceStore>(store: S) {
    let record = token_record("ci", 0, 7);
    add_token(&store, &record).await;
    let first_at = base_time() + Duration::seconds(60);
    let second_at = base_time() + Duration::seconds(120);

    let first = store
        .revoke_application_token(record.token.id, first_at, &revoke_event())
        .await
        .expect("revoke");
    let second = store
        .revoke_application_token(record.token.id, second_at, &revoke_event())
        .await
        .expect("revoke again");

    assert_eq!(first, RevokeResult::Revoked);
    assert_eq!(second, RevokeResult::AlreadyRevoked);
    let found = store
        .find_application_token_by_hash(&record.token_hash)
        .await
        .expect("find application token")
        .expect("token still stored");
    assert_eq!(found.token.revoked_at, Some(first_at));
}

/// Revoking an unknown id reports it and writes no audit event.
pub async fn token_revoke_missing<S: ConformanceStore>(store: S) {
    let result = store
        .revoke_application_token(Uuid::new_v4(), base_time(), &revoke_event())
        .await
        .expect("revoke");

    assert_eq!(result, RevokeResult::NotFound);
    assert_eq!(audit_count(&store).await, 0);
}

/// Creating and revoking write their audit events; a repeated revocation writes none.
pub async fn token_audit_with_changes<S: ConformanceStore>(store: S) {
    let record = token_record("ci", 0, 7);
    let create_event = event(AuditAction::ApplicationTokenCreated)
        .with_filter("token_id", record.token.id.to_string())
        .with_filter("name", "ci");
    store
        .insert_application_token(&record, &create_event)
        .await
        .expect("insert application token");
    let first_revoke = revoke_event().with_filter("token_id", record.token.id.to_string());
    let repeated_revoke = revoke_event();
    for revoke in [&first_revoke, &repeated_revoke] {
        store
            .revoke_application_token(record.token.id, base_time(), revoke)
            .await
            .expect("revoke");
    }

    let mut listed = list_audit(&store, 0, 10).await.expect("list audit");
    listed.sort_by_key(|listed| listed.id);
    let mut expected = vec![create_event, first_revoke];
    expected.sort_by_key(|expected| expected.id);
    assert_eq!(listed, expected);
}

/// Checks that of several tasks revoking one token at the same time, exactly one revokes it.
pub async fn token_concurrent_revokes<S: ConformanceStore>(store: S) {
    let record = token_record("ci", 0, 7);
    add_token(&store, &record).await;

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let id = record.token.id;
            tokio::spawn(async move {
                store
                    .revoke_application_token(id, base_time(), &revoke_event())
                    .await
            })
        })
        .collect();
    let mut revoked = 0;
    for task in tasks {
        match task.await.expect("task completes") {
            Ok(RevokeResult::Revoked) => revoked += 1,
            Ok(RevokeResult::AlreadyRevoked) => {}
            other => panic!("unexpected revocation result {other:?}"),
        }
    }

    assert_eq!(revoked, 1);
    assert_eq!(audit_count(&store).await, 2);
}
