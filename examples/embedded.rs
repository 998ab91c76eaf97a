//! Embeds the credential store in a program without HTTP: SQLite in a temporary directory, a
//! generated master key, one project, one project-scoped GitHub token and one global Jira
//! default, then a credential read as an application would make it.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::sync::Arc;

use integrations::core::{
    Actor, AuthType, CredentialFilter, Credentials, EnvelopeCipher, IntegrationService, MasterKey,
    NewIntegration, NewProject, Provider, Role,
};
use integrations::store::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    let store = SqliteStore::open_in_dir(data_dir.path()).await?;
    // A real program loads its master key from a file or the environment, or implements
    // `KeyProvider` over a KMS. Losing the master key loses every stored credential.
    let master_key = MasterKey::generate();
    // Credentials are sealed with data keys kept in the database, wrapped by the master key.
    // `prepare` checks that the key unwraps them and creates the first one.
    let cipher = EnvelopeCipher::new(Arc::new(store.clone()), Arc::new(master_key));
    cipher.prepare().await?;
    let service =
        IntegrationService::new(Arc::new(store.clone()), Arc::new(cipher), Arc::new(store));

    let owner = Actor::new("admin@example.com", Role::Owner);
    let pipeline = Actor::new("release-pipeline", Role::Application);

    service
        .create_project(
            &owner,
            NewProject {
                identifier: "flxbl-io/sf-core".into(),
                remote_url: "https://github.com/flxbl-io/sf-core.git".into(),
                platform: None,
            },
        )
        .await?;
    let github = service
        .create_integration(
            &owner,
            NewIntegration {
                provider: Provider::Github,
                auth_type: AuthType::Pat,
                credentials: Credentials::new().with("token", "ghp_example_only"),
                projects: Some(vec!["flxbl-io/sf-core".into()]),
                is_global: None,
                is_default: false,
                config: Default::default(),
            },
        )
        .await?;
    let jira = service
        .create_integration(
            &owner,
            NewIntegration {
                provider: Provider::Jira,
                auth_type: AuthType::BasicAuth,
                credentials: Credentials::new()
                    .with("base_url", "https://example.atlassian.net")
                    .with("username", "ci@example.com")
                    .with("api_token", "jira_example_only"),
                projects: None,
                is_global: Some(true),
                is_default: true,
                config: Default::default(),
            },
        )
        .await?;
    println!(
        "stored github integration {} and jira default {}",
        github.id, jira.id
    );

    // Role rules apply without HTTP too: an application token must name a provider or project.
    let unfiltered = service
        .read_credentials(&pipeline, CredentialFilter::default())
        .await;
    println!(
        "unfiltered read by an application: {}",
        unfiltered.unwrap_err()
    );

    let records = service
        .read_credentials(
            &pipeline,
            CredentialFilter {
                provider: Some(Provider::Github),
                project: Some("flxbl-io/sf-core".into()),
            },
        )
        .await?;
    for record in &records {
        // Debug output of credentials names the fields and hides the values.
        println!(
            "{} {} credentials: {:?}",
            record.integration.provider, record.integration.id, record.credentials
        );
    }

    let audit = service.list_audit(&owner, 0, 10).await?;
    println!(
        "audit log holds {} events, newest: {:?}",
        audit.len(),
        audit[0].action
    );
    Ok(())
}
