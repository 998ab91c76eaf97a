//! The records the store keeps and the enums the API names.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Error for a value that is not one of an enum's wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} '{value}', expected one of: {expected}")]
pub struct UnknownValue {
    /// Kind of value that was parsed, such as `provider`.
    pub kind: &'static str,
    /// The rejected input, cut to a printable length.
    pub value: String,
    /// The accepted wire names, comma separated.
    pub expected: String,
}

impl UnknownValue {
    fn new(kind: &'static str, value: &str, expected: &[&str]) -> Self {
        let value: String = value.chars().take(64).collect();
        Self {
            kind,
            value,
            expected: expected.join(", "),
        }
    }
}

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every accepted wire name, aliases included.
            pub const WIRE_NAMES: &'static [&'static str] = &[$($wire $(, $alias)*),+];

            /// Returns the canonical wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($wire $(| $alias)* => Ok($name::$variant),)+
                    other => Err(UnknownValue::new($kind, other, Self::WIRE_NAMES)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                value.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

wire_enum! {
    /// External service an integration authenticates against.
    ///
    /// `azuredevops` and `azure-devops` name the same provider; `azure-devops` is canonical.
    Provider, "provider" {
        /// GitHub (API, Apps, OAuth apps).
        Github => "github",
        /// Azure DevOps Services or Server.
        AzureDevops => "azure-devops" | "azuredevops",
        /// JFrog Artifactory.
        Jfrog => "jfrog",
        /// GitLab.
        Gitlab => "gitlab",
        /// An npm registry.
        Npm => "npm",
        /// GitHub Packages.
        GithubPackages => "github_packages",
        /// Atlassian Jira.
        Jira => "jira",
        /// Anthropic API.
        AiAnthropic => "ai_anthropic",
        /// OpenAI API.
        AiOpenai => "ai_openai",
        /// Google AI API.
        AiGoogle => "ai_google",
        /// GitHub Copilot.
        AiGithubCopilot => "ai_github_copilot",
        /// Amazon Bedrock.
        AiAmazonBedrock => "ai_amazon_bedrock",
        /// Datadog.
        Datadog => "datadog",
        /// New Relic.
        Newrelic => "newrelic",
        /// Splunk HTTP Event Collector.
        Splunk => "splunk",
    }
}

impl Provider {
    /// Returns the default category: every AI provider shares `ai`, every other provider is its
    /// own category. At most one global integration per category is the default.
    pub fn category(self) -> &'static str {
        if self.is_ai() {
            "ai"
        } else {
            self.as_str()
        }
    }

    /// Reports whether this is one of the `ai_*` providers.
    pub fn is_ai(self) -> bool {
        matches!(
            self,
            Provider::AiAnthropic
                | Provider::AiOpenai
                | Provider::AiGoogle
                | Provider::AiGithubCopilot
                | Provider::AiAmazonBedrock
        )
    }
}

wire_enum! {
    /// Authentication method of an integration with its provider.
    AuthType, "authType" {
        /// Personal access token.
        Pat => "pat",
        /// OAuth application credentials.
        Oauth => "oauth",
        /// GitHub App.
        App => "app",
        /// User name and password.
        Basic => "basic",
        /// User name and API token (Jira).
        BasicAuth => "basic_auth",
        /// OAuth 2.0 client credentials (Jira).
        OauthClientCredentials => "oauth_client_credentials",
        /// Entra service principal (Azure DevOps).
        ServicePrincipal => "service_principal",
        /// API key.
        ApiKey => "api_key",
        /// Bearer token.
        Bearer => "bearer",
    }
}

wire_enum! {
    /// Source-control platform that hosts a registered project.
    Platform, "platform" {
        /// github.com or GitHub Enterprise Server.
        Github => "github",
        /// Azure DevOps Services or Server.
        AzureDevops => "azure-devops" | "azuredevops",
        /// GitLab.
        Gitlab => "gitlab",
        /// Bitbucket.
        Bitbucket => "bitbucket",
        /// Any other host.
        Other => "other",
    }
}

impl Platform {
    /// Guesses the platform from a remote URL's host, `Other` when the host is not recognised.
    pub fn infer_from_remote_url(remote_url: &str) -> Platform {
        let host = url::Url::parse(remote_url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .or_else(|| scp_style_host(remote_url))
            .unwrap_or_default();
        if host == "github.com" || host.ends_with(".github.com") || host.contains("github") {
            Platform::Github
        } else if host == "dev.azure.com"
            || host.ends_with(".visualstudio.com")
            || host == "ssh.dev.azure.com"
        {
            Platform::AzureDevops
        } else if host.contains("gitlab") {
            Platform::Gitlab
        } else if host.contains("bitbucket") {
            Platform::Bitbucket
        } else {
            Platform::Other
        }
    }
}

/// Host of an scp-style git remote such as `git@github.com:owner/repo.git`.
fn scp_style_host(remote: &str) -> Option<String> {
    let (user_host, _) = remote.split_once(':')?;
    let host = user_host.rsplit('@').next()?;
    Some(host.to_ascii_lowercase())
}

wire_enum! {
    /// Role claimed by a caller's token.
    Role, "role" {
        /// Administers integrations and projects.
        Owner => "owner",
        /// Registers project-scoped integrations and reads projects.
        Member => "member",
        /// Machine caller that reads credentials with a filter.
        Application => "application",
    }
}

/// The authenticated caller of a service operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token subject (`sub` claim).
    pub subject: String,
    /// Token role.
    pub role: Role,
}

impl Actor {
    /// Creates an actor.
    pub fn new(subject: impl Into<String>, role: Role) -> Self {
        Self {
            subject: subject.into(),
            role,
        }
    }
}

/// A repository registered with the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Identifier as registered: `owner/repo` on GitHub, `org/project/repo` on Azure DevOps.
    pub identifier: String,
    /// Git remote URL.
    pub remote_url: String,
    /// Hosting platform.
    pub platform: Platform,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

impl Project {
    /// Returns the key that identifies this project in the store.
    pub fn key(&self) -> String {
        project_key(&self.identifier)
    }
}

/// Normalises a project identifier for lookups and uniqueness.
///
/// GitHub compares owner and repository names case-insensitively, and so does Azure DevOps for
/// organisation, project and repository names, so identifiers are compared in lowercase.
pub fn project_key(identifier: &str) -> String {
    identifier.trim().to_lowercase()
}

/// Integration metadata: everything but the credential values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// Integration id.
    pub id: Uuid,
    /// Provider.
    pub provider: Provider,
    /// Authentication type.
    pub auth_type: AuthType,
    /// Available to every project.
    pub is_global: bool,
    /// Default of its provider category; only global integrations can be default.
    pub is_default: bool,
    /// Identifiers of the projects a project-scoped integration belongs to, sorted.
    pub projects: Vec<String>,
    /// Provider-specific configuration (never secret).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Names of the stored credential fields, sorted; values are never part of metadata.
    pub credential_fields: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Integration {
    /// Returns the default category of this integration's provider.
    pub fn category(&self) -> &'static str {
        self.provider.category()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_aliases_parse_to_one_value() {
        assert_eq!("azuredevops".parse::<Provider>(), Ok(Provider::AzureDevops));
        assert_eq!(
            "azure-devops".parse::<Provider>(),
            Ok(Provider::AzureDevops)
        );
        assert_eq!(Provider::AzureDevops.as_str(), "azure-devops");
    }

    #[test]
    fn provider_wire_names_count_sixteen() {
        assert_eq!(Provider::WIRE_NAMES.len(), 16);
        assert_eq!(Provider::ALL.len(), 15);
        for name in Provider::WIRE_NAMES {
            assert!(name.parse::<Provider>().is_ok(), "{name}");
        }
    }

    #[test]
    fn auth_type_has_nine_values() {
        assert_eq!(AuthType::ALL.len(), 9);
        for auth in AuthType::ALL {
            assert_eq!(auth.as_str().parse::<AuthType>(), Ok(*auth));
        }
    }

    #[test]
    fn ai_providers_share_category() {
        for provider in Provider::ALL {
            if provider.as_str().starts_with("ai_") {
                assert_eq!(provider.category(), "ai");
            } else {
                assert_eq!(provider.category(), provider.as_str());
            }
        }
    }

    #[test]
    fn unknown_provider_lists_expected() {
        let error = "githib".parse::<Provider>().unwrap_err();
        assert!(error.to_string().contains("githib"));
        assert!(error.to_string().contains("azure-devops"));
    }

    #[test]
    fn platform_inferred_from_remote() {
        let cases = [
            ("https://github.com/flxbl-io/sf-core.git", Platform::Github),
            ("git@github.com:flxbl-io/sf-core.git", Platform::Github),
            (
                "https://dev.azure.com/org/project/_git/repo",
                Platform::AzureDevops,
            ),
            (
                "https://org.visualstudio.com/project/_git/repo",
                Platform::AzureDevops,
            ),
            ("https://gitlab.com/group/repo.git", Platform::Gitlab),
            ("https://bitbucket.org/team/repo.git", Platform::Bitbucket),
            ("https://git.example.com/repo.git", Platform::Other),
        ];
        for (remote, platform) in cases {
            assert_eq!(
                Platform::infer_from_remote_url(remote),
                platform,
                "{remote}"
            );
        }
    }
}
