//! Unit tests of the service's rules with the store and audit sink mocked out.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use integrations_core::audit::{AuditAction, AuditOutcome};
use integrations_core::audit_chain::ChainedEvent;
use integrations_core::store::{
    AuditQuery, DataKeyState, IntegrationChanges, IntegrationQuery, ProjectDeletion, SealedRow,
    StoredDataKey, StoredIntegration,
};
use integrations_core::tokens::{
    hash_token, ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenAuthError, TokenHash,
    TokenSecret,
};
use integrations_core::{
    Actor, Aes256GcmCipher, AuditEvent, AuditSink, AuthType, CredentialFilter, Credentials,
    IntegrationService, IntegrationStore, MasterKey, NewIntegration, Project, Provider, Role,
    ServiceError, StoreError,
};
use mockall::mock;
use uuid::Uuid;

mock! {
    #[derive(Debug)]
    pub Store {}

    #[async_trait]
    impl IntegrationStore for Store {
        async fn insert_project(&self, project: &Project, audit: &AuditEvent) -> Result<(), StoreError>;
        async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;
        async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError>;
        async fn delete_project(&self, key: &str, audit: &AuditEvent) -> Result<ProjectDeletion, StoreError>;
        async fn insert_integration(
            &self,
            integration: &StoredIntegration,
            project_keys: &[String],
            audit: &AuditEvent,
        ) -> Result<(), StoreError>;
        async fn list_integrations(&self, query: &IntegrationQuery) -> Result<Vec<StoredIntegration>, StoreError>;
        async fn find_integration(&self, id: Uuid) -> Result<Option<StoredIntegration>, StoreError>;
        async fn update_integration(
            &self,
            id: Uuid,
            changes: &IntegrationChanges,
            audit: &AuditEvent,
        ) -> Result<Option<StoredIntegration>, StoreError>;
        async fn delete_integration(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, StoreError>;
        async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
        async fn ping(&self) -> Result<(), StoreError>;
        async fn list_data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError>;
        async fn find_data_key(&self, id: &str) -> Result<Option<StoredDataKey>, StoreError>;
        async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError>;
        async fn insert_data_key(&self, key: &StoredDataKey) -> Result<(), StoreError>;
        async fn set_data_key_state(&self, id: &str, state: DataKeyState) -> Result<bool, StoreError>;
        async fn rewrap_data_keys(&self, keys: &[StoredDataKey]) -> Result<(), StoreError>;
        async fn list_sealed(&self, after: Option<Uuid>, limit: u64) -> Result<Vec<SealedRow>, StoreError>;
        async fn replace_sealed(&self, id: Uuid, expected: &[u8], sealed: &[u8]) -> Result<bool, StoreError>;
        async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
        async fn list_audit_chain(&self, after_seq: i64, limit: u64) -> Result<Vec<ChainedEvent>, StoreError>;
        async fn insert_application_token(
            &self,
            record: &ApplicationTokenRecord,
            audit: &AuditEvent,
        ) -> Result<(), StoreError>;
        async fn list_application_tokens(&self) -> Result<Vec<ApplicationToken>, StoreError>;
        async fn find_application_token_by_hash(
            &self,
            hash: &TokenHash,
        ) -> Result<Option<ApplicationTokenRecord>, StoreError>;
        async fn revoke_application_token(
            &self,
            id: Uuid,
            at: DateTime<Utc>,
            audit: &AuditEvent,
        ) -> Result<RevokeResult, StoreError>;
    }
}

mock! {
    #[derive(Debug)]
    pub Sink {}

    #[async_trait]
    impl AuditSink for Sink {
        async fn record(&self, event: &AuditEvent) -> Result<(), StoreError>;
    }
}

fn service(store: MockStore, sink: MockSink, cipher: &Aes256GcmCipher) -> IntegrationService {
    IntegrationService::new(Arc::new(store), Arc::new(cipher.clone()), Arc::new(sink))
}

fn owner() -> Actor {
    Actor::new("alice", Role::Owner)
}

/// Captures the row the service hands to the store, so a later read can return it.
fn sealed_github_row(cipher: &Aes256GcmCipher, secret: &str) -> StoredIntegration {
    let captured: Arc<std::sync::Mutex<Option<StoredIntegration>>> = Arc::default();
    let mut store = MockStore::new();
    let slot = Arc::clone(&captured);
    store
        .expect_insert_integration()
        .returning(move |row, _, _| {
            *slot.lock().unwrap() = Some(row.clone());
            Ok(())
        });
    let slot = Arc::clone(&captured);
    store
        .expect_find_integration()
        .returning(move |_| Ok(slot.lock().unwrap().clone()));
    let service = service(store, MockSink::new(), cipher);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(service.create_integration(
            &owner(),
            NewIntegration {
                provider: Provider::Github,
                auth_type: AuthType::Pat,
                credentials: Credentials::new().with("token", secret),
                projects: None,
                is_global: Some(true),
                is_default: true,
                config: Default::default(),
            },
        ))
        .unwrap();
    let row = captured.lock().unwrap().clone().unwrap();
    row
}

#[test]
fn sealed_row_holds_no_plaintext() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let row = sealed_github_row(&cipher, "ghp_plaintext_marker");
    let needle = b"ghp_plaintext_marker";
    let found = row
        .sealed_credentials
        .windows(needle.len())
        .any(|window| window == needle);
    assert!(!found);
    assert_eq!(row.integration.credential_fields, vec!["token"]);
}

#[tokio::test]
async fn read_fails_closed_when_audit_fails() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let row = tokio::task::spawn_blocking({
        let cipher = cipher.clone();
        move || sealed_github_row(&cipher, "ghp_fail_closed")
    })
    .await
    .unwrap();

    let mut store = MockStore::new();
    store
        .expect_list_integrations()
        .returning(move |_| Ok(vec![row.clone()]));
    let mut sink = MockSink::new();
    sink.expect_record()
        .returning(|_| Err(StoreError::Unavailable("audit table locked".into())));
    let service = service(store, sink, &cipher);

    let filter = CredentialFilter {
        provider: Some(Provider::Github),
        project: None,
    };
    let result = service.read_credentials(&owner(), filter).await;
    assert!(matches!(result, Err(ServiceError::Unavailable(_))));
}

#[tokio::test]
async fn read_audits_integration_ids() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let row = tokio::task::spawn_blocking({
        let cipher = cipher.clone();
        move || sealed_github_row(&cipher, "ghp_audited")
    })
    .await
    .unwrap();
    let id = row.integration.id;

    let mut store = MockStore::new();
    store
        .expect_list_integrations()
        .returning(move |_| Ok(vec![row.clone()]));
    let mut sink = MockSink::new();
    sink.expect_record()
        .withf(move |event| {
            event.action == AuditAction::CredentialsRead
                && event.outcome == AuditOutcome::Success
                && event.integration_ids == vec![id]
                && event.filters.get("provider").map(String::as_str) == Some("github")
        })
        .times(1)
        .returning(|_| Ok(()));
    let service = service(store, sink, &cipher);

    let filter = CredentialFilter {
        provider: Some(Provider::Github),
        project: None,
    };
    let records = service.read_credentials(&owner(), filter).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].credentials.expose("token"), Some("ghp_audited"));
}

#[tokio::test]
async fn member_read_denied_and_audited() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_list_integrations().never();
    let mut sink = MockSink::new();
    sink.expect_record()
        .withf(|event| event.outcome == AuditOutcome::Denied)
        .times(1)
        .returning(|_| Ok(()));
    let service = service(store, sink, &cipher);

    let member = Actor::new("bob", Role::Member);
    let result = service
        .read_credentials(&member, CredentialFilter::default())
        .await;
    assert!(matches!(result, Err(ServiceError::Forbidden(_))));
}

#[tokio::test]
async fn application_read_needs_filter() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_list_integrations().never();
    let mut sink = MockSink::new();
    sink.expect_record().returning(|_| Ok(()));
    let service = service(store, sink, &cipher);

    let app = Actor::new("ci", Role::Application);
    let result = service
        .read_credentials(&app, CredentialFilter::default())
        .await;
    let Err(ServiceError::Forbidden(message)) = result else {
        panic!("expected Forbidden, got {result:?}");
    };
    assert!(message.contains("provider or project"));
}

#[tokio::test]
async fn application_create_is_unauthenticated() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_insert_integration().never();
    let service = service(store, MockSink::new(), &cipher);

    let app = Actor::new("ci", Role::Application);
    let request = NewIntegration {
        provider: Provider::Github,
        auth_type: AuthType::Pat,
        credentials: Credentials::new().with("token", "t"),
        projects: None,
        is_global: Some(true),
        is_default: false,
        config: Default::default(),
    };
    let result = service.create_integration(&app, request).await;
    assert!(matches!(result, Err(ServiceError::Unauthenticated(_))));
}

#[tokio::test]
async fn missing_scope_rejected_before_store() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_insert_integration().never();
    let service = service(store, MockSink::new(), &cipher);

    let request = NewIntegration {
        provider: Provider::Jira,
        auth_type: AuthType::BasicAuth,
        credentials: Credentials::new()
            .with("base_url", "https://example.atlassian.net")
            .with("username", "u")
            .with("api_token", "t"),
        projects: None,
        is_global: None,
        is_default: false,
        config: Default::default(),
    };
    let result = service.create_integration(&owner(), request).await;
    let Err(ServiceError::InvalidInput { field, message }) = result else {
        panic!("expected InvalidInput, got {result:?}");
    };
    assert_eq!(field, "isGlobal");
    assert_eq!(message, "Either isGlobal or projects must be specified");
}

#[tokio::test]
async fn member_global_create_forbidden() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_insert_integration().never();
    let service = service(store, MockSink::new(), &cipher);

    let member = Actor::new("bob", Role::Member);
    let request = NewIntegration {
        provider: Provider::Github,
        auth_type: AuthType::Pat,
        credentials: Credentials::new().with("token", "t"),
        projects: None,
        is_global: Some(true),
        is_default: false,
        config: Default::default(),
    };
    let result = service.create_integration(&member, request).await;
    assert!(matches!(result, Err(ServiceError::Forbidden(_))));
}

#[tokio::test]
async fn owner_only_routes_forbid_member() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_list_integrations().never();
    store.expect_delete_integration().never();
    let service = service(store, MockSink::new(), &cipher);

    let member = Actor::new("bob", Role::Member);
    let listed = service.list_integrations(&member, None).await;
    assert!(matches!(listed, Err(ServiceError::Forbidden(_))));
    let defaults = service.list_defaults(&member).await;
    assert!(matches!(defaults, Err(ServiceError::Forbidden(_))));
    let deleted = service.delete_integration(&member, Uuid::new_v4()).await;
    assert!(matches!(deleted, Err(ServiceError::Forbidden(_))));
}

#[tokio::test]
async fn moved_row_fails_to_open() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut row = tokio::task::spawn_blocking({
        let cipher = cipher.clone();
        move || sealed_github_row(&cipher, "ghp_moved")
    })
    .await
    .unwrap();
    // Ciphertext copied onto another integration's row must not open there.
    row.integration.id = Uuid::new_v4();

    let mut store = MockStore::new();
    store
        .expect_list_integrations()
        .returning(move |_| Ok(vec![row.clone()]));
    let mut sink = MockSink::new();
    sink.expect_record().never();
    let service = service(store, sink, &cipher);

    let filter = CredentialFilter {
        provider: Some(Provider::Github),
        project: None,
    };
    let result = service.read_credentials(&owner(), filter).await;
    let Err(ServiceError::Internal(message)) = result else {
        panic!("expected Internal, got {result:?}");
    };
    assert!(!message.contains("ghp_moved"));
}

#[tokio::test]
async fn unreadable_row_fails_one_project() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut row = tokio::task::spawn_blocking({
        let cipher = cipher.clone();
        move || sealed_github_row(&cipher, "ghp_unreadable")
    })
    .await
    .unwrap();
    row.integration.id = Uuid::new_v4();
    let project = Project {
        identifier: "acme/api".into(),
        remote_url: "https://github.com/acme/api.git".into(),
        platform: integrations_core::Platform::Github,
        created_at: chrono::Utc::now(),
    };

    let mut store = MockStore::new();
    store
        .expect_list_projects()
        .returning(move || Ok(vec![project.clone()]));
    store
        .expect_list_integrations()
        .returning(move |query| match query.provider {
            Some(Provider::Github) => Ok(vec![row.clone()]),
            _ => Ok(Vec::new()),
        });
    let service = service(store, MockSink::new(), &cipher);

    let report = service.platform_health(&owner(), None).await.unwrap();
    assert_eq!(report.platforms.len(), 1);
    assert_eq!(
        report.platforms[0].status,
        integrations_core::HealthStatus::Unhealthy
    );
    assert!(
        report.platforms[0].message.contains("could not be opened"),
        "{}",
        report.platforms[0].message
    );
    assert!(!report.platforms[0].message.contains("ghp_unreadable"));
}

// ----- application tokens -----

/// Builds a stored token for `secret`, created an hour ago and expiring `expires_in` from now.
fn token_record(secret: &TokenSecret, expires_in: chrono::Duration) -> ApplicationTokenRecord {
    let now = Utc::now();
    ApplicationTokenRecord {
        token: ApplicationToken {
            id: Uuid::new_v4(),
            name: "ci".into(),
            created_at: now - chrono::Duration::hours(1),
            expires_at: now + expires_in,
            revoked_at: None,
            created_by: "alice".into(),
        },
        token_hash: secret.hash(),
    }
}

fn store_finding(record: ApplicationTokenRecord) -> MockStore {
    let mut store = MockStore::new();
    store
        .expect_find_application_token_by_hash()
        .returning(move |hash| Ok((hash == &record.token_hash).then(|| record.clone())));
    store
}

#[tokio::test]
async fn token_create_stores_hash_only() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let captured: Arc<std::sync::Mutex<Option<(ApplicationTokenRecord, AuditEvent)>>> =
        Arc::default();
    let slot = Arc::clone(&captured);
    let mut store = MockStore::new();
    store
        .expect_insert_application_token()
        .times(1)
        .returning(move |record, audit| {
            *slot.lock().unwrap() = Some((record.clone(), audit.clone()));
            Ok(())
        });
    let service = service(store, MockSink::new(), &cipher);

    let created = service
        .create_application_token(&owner(), "  deploy  ", None)
        .await
        .unwrap();

    let (record, audit) = captured.lock().unwrap().clone().unwrap();
    let secret = created.secret.expose();
    assert!(secret.starts_with("intg_"), "{secret}");
    assert_eq!(record.token_hash, hash_token(secret));
    assert_eq!(record.token, created.token);
    assert_eq!(created.token.name, "deploy");
    assert_eq!(created.token.created_by, "alice");
    assert_eq!(
        created.token.expires_at - created.token.created_at,
        chrono::Duration::days(30)
    );
    assert_eq!(audit.action, AuditAction::ApplicationTokenCreated);
    let filter_names: Vec<&str> = audit.filters.keys().map(String::as_str).collect();
    assert_eq!(filter_names, ["name", "token_id"]);
    assert_eq!(audit.filters["token_id"], created.token.id.to_string());
    assert!(!format!("{audit:?}").contains(&secret[5..]));
    assert!(!format!("{created:?}").contains(&secret[5..]));
}

#[tokio::test]
async fn token_management_owner_only() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_insert_application_token().never();
    store.expect_list_application_tokens().never();
    store.expect_revoke_application_token().never();
    let service = service(store, MockSink::new(), &cipher);

    for role in [Role::Member, Role::Application] {
        let actor = Actor::new("someone", role);
        let created = service.create_application_token(&actor, "ci", None).await;
        assert!(matches!(created, Err(ServiceError::Forbidden(_))), "{role}");
        let listed = service.list_application_tokens(&actor).await;
        assert!(matches!(listed, Err(ServiceError::Forbidden(_))), "{role}");
        let revoked = service
            .revoke_application_token(&actor, Uuid::new_v4())
            .await;
        assert!(matches!(revoked, Err(ServiceError::Forbidden(_))), "{role}");
    }
}

#[tokio::test]
async fn token_bad_input_named() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_insert_application_token().never();
    let service = service(store, MockSink::new(), &cipher);

    let cases = [
        ("", Some(30), "name"),
        ("bell\u{7}", Some(30), "name"),
        ("ci", Some(0), "expiresIn"),
        ("ci", Some(366), "expiresIn"),
    ];
    for (name, days, expected_field) in cases {
        let result = service.create_application_token(&owner(), name, days).await;
        let Err(ServiceError::InvalidInput { field, .. }) = result else {
            panic!("{name:?} {days:?}: expected InvalidInput, got {result:?}");
        };
        assert_eq!(field, expected_field);
    }
}

#[tokio::test]
async fn token_authenticates_as_application() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let secret = TokenSecret::generate();
    let record = token_record(&secret, chrono::Duration::days(1));
    let id = record.token.id;
    let service = service(store_finding(record), MockSink::new(), &cipher);

    let actor = service
        .authenticate_application_token(secret.expose())
        .await
        .unwrap();

    assert_eq!(actor.role, Role::Application);
    assert_eq!(actor.subject, format!("application-token:{id}"));
}

#[tokio::test]
async fn token_revoked_rejected() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let secret = TokenSecret::generate();
    let mut record = token_record(&secret, chrono::Duration::days(1));
    record.token.revoked_at = Some(Utc::now());
    let service = service(store_finding(record), MockSink::new(), &cipher);

    let result = service
        .authenticate_application_token(secret.expose())
        .await;
    assert_eq!(result, Err(TokenAuthError::Revoked));
}

#[tokio::test]
async fn token_expired_rejected() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let secret = TokenSecret::generate();
    let record = token_record(&secret, -chrono::Duration::seconds(1));
    let service = service(store_finding(record), MockSink::new(), &cipher);

    let result = service
        .authenticate_application_token(secret.expose())
        .await;
    assert_eq!(result, Err(TokenAuthError::Expired));
}

#[tokio::test]
async fn token_unknown_invalid() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let stored = TokenSecret::generate();
    let record = token_record(&stored, chrono::Duration::days(1));
    let service = service(store_finding(record), MockSink::new(), &cipher);

    let other = TokenSecret::generate();
    let result = service.authenticate_application_token(other.expose()).await;
    assert_eq!(result, Err(TokenAuthError::Invalid));
}

#[tokio::test]
async fn token_malformed_skips_store() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store.expect_find_application_token_by_hash().never();
    let service = service(store, MockSink::new(), &cipher);

    for text in ["intg_short", "intg_", "eyJhbGciOiJIUzI1NiJ9.e30.x"] {
        let result = service.authenticate_application_token(text).await;
        assert_eq!(result, Err(TokenAuthError::Invalid), "{text}");
    }
}

#[tokio::test]
async fn token_store_failure_unavailable() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let mut store = MockStore::new();
    store
        .expect_find_application_token_by_hash()
        .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
    let service = service(store, MockSink::new(), &cipher);

    let secret = TokenSecret::generate();
    let result = service
        .authenticate_application_token(secret.expose())
        .await;
    assert!(
        matches!(
            result,
            Err(TokenAuthError::Service(ServiceError::Unavailable(_)))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn token_revoke_outcomes() {
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let missing = Uuid::new_v4();
    let mut store = MockStore::new();
    store
        .expect_revoke_application_token()
        .withf(|_, _, audit| {
            audit.action == AuditAction::ApplicationTokenRevoked
                && audit.filters.keys().eq(["token_id"])
        })
        .returning(move |id, _, _| {
            Ok(if id == missing {
                RevokeResult::NotFound
            } else {
                RevokeResult::AlreadyRevoked
            })
        });
    let service = service(store, MockSink::new(), &cipher);

    let repeated = service
        .revoke_application_token(&owner(), Uuid::new_v4())
        .await;
    assert_eq!(repeated, Ok(()));
    let unknown = service.revoke_application_token(&owner(), missing).await;
    assert_eq!(
        unknown,
        Err(ServiceError::NotFound("Application token not found".into()))
    );
}
