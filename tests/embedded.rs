//! The library embedded without HTTP, on a real SQLite file: the same rules as the server,
//! and no plaintext credential in the database file.

use std::sync::Arc;

use integrations::core::{
    Actor, Aes256GcmCipher, AuthType, CredentialFilter, Credentials, IntegrationService,
    IntegrationUpdate, MasterKey, NewIntegration, NewProject, Provider, Role, ServiceError,
};
use integrations::store::SqliteStore;

struct Fixture {
    service: IntegrationService,
    store: SqliteStore,
    data_dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let data_dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(data_dir.path()).await.unwrap();
    let cipher = Aes256GcmCipher::new(&MasterKey::generate());
    let service = IntegrationService::new(
        Arc::new(store.clone()),
        Arc::new(cipher),
        Arc::new(store.clone()),
    );
    Fixture {
        service,
        store,
        data_dir,
    }
}

fn owner() -> Actor {
    Actor::new("owner@example.com", Role::Owner)
}

fn github_pat(token: &str, projects: Option<Vec<String>>, is_default: bool) -> NewIntegration {
    NewIntegration {
        provider: Provider::Github,
        auth_type: AuthType::Pat,
        credentials: Credentials::new().with("token", token),
        is_global: projects.is_none().then_some(true),
        projects,
        is_default,
        config: Default::default(),
    }
}

async fn register(service: &IntegrationService, identifier: &str) {
    service
        .create_project(
            &owner(),
            NewProject {
                identifier: identifier.into(),
                remote_url: format!("https://github.com/{identifier}.git"),
                platform: None,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn project_scope_wins_over_global() {
    let fixture = fixture().await;
    let service = &fixture.service;
    register(service, "acme/api").await;
    register(service, "acme/web").await;
    service
        .create_integration(&owner(), github_pat("ghp_global_default", None, true))
        .await
        .unwrap();
    let scoped = service
        .create_integration(
            &owner(),
            github_pat("ghp_scoped_api", Some(vec!["ACME/API".into()]), false),
        )
        .await
        .unwrap();

    let app = Actor::new("pipeline", Role::Application);
    let for_api = service
        .read_credentials(
            &app,
            CredentialFilter {
                provider: Some(Provider::Github),
                project: Some("acme/api".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(for_api.len(), 1);
    assert_eq!(for_api[0].integration.id, scoped.id);
    assert_eq!(
        for_api[0].credentials.expose("token"),
        Some("ghp_scoped_api")
    );

    let for_web = service
        .read_credentials(
            &app,
            CredentialFilter {
                provider: Some(Provider::Github),
                project: Some("acme/web".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(for_web.len(), 1);
    assert_eq!(
        for_web[0].credentials.expose("token"),
        Some("ghp_global_default")
    );
}

#[tokio::test]
async fn unknown_project_read_not_found() {
    let fixture = fixture().await;
    register(&fixture.service, "acme/empty").await;
    let result = fixture
        .service
        .read_credentials(
            &owner(),
            CredentialFilter {
                provider: Some(Provider::Jira),
                project: Some("acme/empty".into()),
            },
        )
        .await;
    let Err(ServiceError::NotFound(message)) = result else {
        panic!("expected NotFound, got {result:?}");
    };
    assert_eq!(message, "No integration found for project=acme/empty");
}

#[tokio::test]
async fn ai_default_moves_between_providers() {
    let fixture = fixture().await;
    let service = &fixture.service;
    let openai = service
        .create_integration(
            &owner(),
            NewIntegration {
                provider: Provider::AiOpenai,
                auth_type: AuthType::ApiKey,
                credentials: Credentials::new().with("api_key", "sk-openai"),
                projects: None,
                is_global: Some(true),
                is_default: true,
                config: Default::default(),
            },
        )
        .await
        .unwrap();
    let anthropic = service
        .create_integration(
            &owner(),
            NewIntegration {
                provider: Provider::AiAnthropic,
                auth_type: AuthType::ApiKey,
                credentials: Credentials::new().with("api_key", "sk-ant"),
                projects: None,
                is_global: Some(true),
                is_default: false,
                config: Default::default(),
            },
        )
        .await
        .unwrap();
    service
        .update_integration(
            &owner(),
            anthropic.id,
            IntegrationUpdate {
                is_default: Some(true),
                ..IntegrationUpdate::default()
            },
        )
        .await
        .unwrap();

    let defaults = service.list_defaults(&owner()).await.unwrap();
    let ids: Vec<_> = defaults.iter().map(|integration| integration.id).collect();
    assert_eq!(ids, vec![anthropic.id]);
    assert!(!ids.contains(&openai.id));
}

#[tokio::test]
async fn database_file_holds_no_secret() {
    let fixture = fixture().await;
    let service = &fixture.service;
    let secrets = [
        "ghp_scan_marker_4f1c2e",
        "jira_scan_marker_9a7b3d",
        "azure_scan_marker_c0ffee",
    ];
    service
        .create_integration(&owner(), github_pat(secrets[0], None, true))
        .await
        .unwrap();
    service
        .create_integration(
            &owner(),
            NewIntegration {
                provider: Provider::Jira,
                auth_type: AuthType::BasicAuth,
                credentials: Credentials::new()
                    .with("base_url", "https://example.atlassian.net")
                    .with("username", "ci")
                    .with("api_token", secrets[1]),
                projects: None,
                is_global: Some(true),
                is_default: false,
                config: Default::default(),
            },
        )
        .await
        .unwrap();
    service
        .create_integration(
            &owner(),
            NewIntegration {
                provider: Provider::AzureDevops,
                auth_type: AuthType::ServicePrincipal,
                credentials: Credentials::new()
                    .with("organization_url", "https://dev.azure.com/acme")
                    .with("client_id", "client")
                    .with("client_secret", secrets[2])
                    .with("tenant_id", "tenant"),
                projects: None,
                is_global: Some(true),
                is_default: false,
                config: Default::default(),
            },
        )
        .await
        .unwrap();
    let read = service
        .read_credentials(&owner(), CredentialFilter::default())
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    fixture.store.close().await;

    for entry in std::fs::read_dir(fixture.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        // SQLite removes the -wal and -shm files when its last connection closes, which can
        // happen between listing the directory and reading a file.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("failed to read {}: {error}", path.display()),
        };
        for secret in secrets {
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "{secret} found in {}", path.display());
        }
    }
}
