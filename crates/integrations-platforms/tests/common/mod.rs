//! Builders and checks shared by the probe tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::time::Duration;

use chrono::Utc;
use integrations_core::{
    AuthType, Credentials, Integration, Platform, ProbeReport, ProbeTarget, Project, Provider,
    ResolvedIntegration,
};
use uuid::Uuid;

pub const PKCS1_KEY: &str = include_str!("../fixtures/app_pkcs1.pem");
pub const PKCS1_PUBLIC: &str = include_str!("../fixtures/app_pkcs1.pub.pem");
pub const PKCS8_KEY: &str = include_str!("../fixtures/app_pkcs8.pem");
pub const PKCS8_PUBLIC: &str = include_str!("../fixtures/app_pkcs8.pub.pem");
pub const ESCAPED_KEY: &str = include_str!("../fixtures/app_escaped_newlines.txt");
pub const ESCAPED_PUBLIC: &str = include_str!("../fixtures/app_escaped_newlines.pub.pem");
pub const OPENSSH_KEY: &str = include_str!("../fixtures/app_openssh.key");

/// Request timeout for probes under test: long enough for a loaded debug build.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn project(identifier: &str, platform: Platform) -> Project {
    Project {
        identifier: identifier.to_owned(),
        remote_url: format!("https://example.invalid/{identifier}.git"),
        platform,
        created_at: Utc::now(),
    }
}

pub fn integration(
    provider: Provider,
    auth_type: AuthType,
    credentials: Credentials,
) -> ResolvedIntegration {
    let now = Utc::now();
    ResolvedIntegration {
        integration: Integration {
            id: Uuid::new_v4(),
            provider,
            auth_type,
            is_global: true,
            is_default: true,
            projects: Vec::new(),
            config: serde_json::Map::new(),
            credential_fields: credentials.field_names(),
            created_at: now,
            updated_at: now,
        },
        credentials,
    }
}

pub fn github_app(app_id: u64, key: &str, installation_id: Option<u64>) -> ResolvedIntegration {
    let mut credentials = Credentials::new()
        .with("appId", app_id.to_string())
        .with("privateKey", key);
    if let Some(id) = installation_id {
        credentials.insert("installationId", id.to_string());
    }
    integration(Provider::Github, AuthType::App, credentials)
}

pub fn github_pat(token: &str) -> ResolvedIntegration {
    integration(
        Provider::Github,
        AuthType::Pat,
        Credentials::new().with("token", token),
    )
}

pub fn target(
    identifier: &str,
    platform: Platform,
    integration: Option<ResolvedIntegration>,
) -> ProbeTarget {
    ProbeTarget {
        project: project(identifier, platform),
        integration,
    }
}

/// Asserts that a report's message contains none of `secrets`, no line of a multi-line secret,
/// and nothing shaped like a token, JWT or Authorization header.
pub fn assert_no_secret(report: &ProbeReport, secrets: &[&str]) {
    let message = &report.message;
    for secret in secrets {
        let secret = secret.replace("\\n", "\n");
        assert!(
            !message.contains(secret.trim()),
            "secret in message: {message}"
        );
        for line in secret
            .lines()
            .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
        {
            assert!(!message.contains(line), "key line in message: {message}");
        }
    }
    for marker in ["ghs_", "ghp_", "eyJ", "Bearer ", "Basic ", "mock-access-"] {
        assert!(!message.contains(marker), "{marker} in message: {message}");
    }
}
