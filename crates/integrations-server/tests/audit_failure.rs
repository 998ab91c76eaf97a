//! A credential read whose audit write fails returns an error and no credentials. Built
//! in-process, because the real stores cannot be made to fail their audit write on demand.

use std::sync::Arc;

use async_trait::async_trait;
use integrations_core::{
    Actor, Aes256GcmCipher, AuditEvent, AuditSink, Credentials, IntegrationService, MasterKey,
    NewIntegration, Provider, Role, StoreError,
};
use integrations_server::auth::{TokenSigner, TokenVerifier};
use integrations_server::config::JwtConfig;
use integrations_server::AppState;
use secrecy::SecretString;

const SECRET: &str = "ghp_AuditFailureSecret_3e7d";

#[derive(Debug)]
struct FailingSink;

#[async_trait]
impl AuditSink for FailingSink {
    async fn record(&self, _event: &AuditEvent) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("audit table unreachable".into()))
    }
}

fn jwt_config() -> JwtConfig {
    JwtConfig {
        jwt_hs256_secret: Some(SecretString::from("in-process-test-secret-of-32-bytes!!")),
        jwt_public_key: None,
        jwt_public_key_path: None,
        jwt_algorithm: None,
        jwt_issuer: None,
        jwt_audience: None,
    }
}

#[tokio::test]
async fn failed_audit_returns_no_credentials() {
    let store = Arc::new(integrations_store::MemoryStore::new());
    let cipher = Arc::new(Aes256GcmCipher::new(&MasterKey::generate()));
    let service = IntegrationService::new(store, cipher, Arc::new(FailingSink));
    let owner = Actor::new("owner", Role::Owner);
    service
        .create_integration(
            &owner,
            NewIntegration {
                provider: Provider::Github,
                auth_type: "pat".parse().unwrap(),
                credentials: Credentials::new().with("token", SECRET),
                projects: None,
                is_global: Some(true),
                is_default: true,
                config: Default::default(),
            },
        )
        .await
        .unwrap();

    let temp = tempfile::tempdir().unwrap();
    let verifier = TokenVerifier::from_config(&jwt_config(), temp.path()).unwrap();
    let token = TokenSigner::from_config(&jwt_config(), temp.path())
        .unwrap()
        .sign(Role::Application, "reader", 60)
        .unwrap();
    let routes = integrations_server::routes(AppState::new(service, verifier));

    let response = warp::test::request()
        .method("GET")
        .path("/sfp/api/integrations/credentials?provider=github")
        .header("authorization", format!("Bearer {token}"))
        .reply(&routes)
        .await;
    let body = String::from_utf8_lossy(response.body()).into_owned();
    assert_eq!(response.status(), 503, "{body}");
    assert!(!body.contains(SECRET), "{body}");
    assert!(body.contains(r#""statusCode":503"#), "{body}");
}
