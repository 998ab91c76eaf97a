//! Credential shapes and configuration rules per provider and auth type.

use serde_json::{Map, Value};

use crate::credentials::Credentials;
use crate::model::{AuthType, Provider};

/// Maximum length of one credential value in bytes; large enough for a 16 KiB RSA key in PEM.
pub const MAX_CREDENTIAL_VALUE_LEN: usize = 64 * 1024;

/// Maximum size of an integration's configuration, serialised as JSON, in bytes.
pub const MAX_CONFIG_LEN: usize = 16 * 1024;

/// A rejected input, naming the field at fault. The message never contains a credential value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// Dotted path of the offending field, such as `credentials.token`.
    pub field: String,
    /// Description of the problem and of the expected value.
    pub message: String,
}

impl ValidationError {
    /// Creates an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Credential fields of one provider and auth type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialShape {
    /// Fields that must be present and non-empty.
    pub required: &'static [&'static str],
    /// Fields that may be present.
    pub optional: &'static [&'static str],
}

impl CredentialShape {
    const fn new(required: &'static [&'static str], optional: &'static [&'static str]) -> Self {
        Self { required, optional }
    }

    fn expected(&self) -> String {
        let mut names: Vec<String> = self
            .required
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        names.extend(self.optional.iter().map(|name| format!("[{name}]")));
        names.join(", ")
    }
}

/// Returns the credential shape of a provider and auth type, `None` when the pair is unsupported.
pub fn credential_shape(provider: Provider, auth_type: AuthType) -> Option<CredentialShape> {
    use AuthType as A;
    use Provider as P;
    let shape = match (provider, auth_type) {
        (P::Github, A::Pat) => CredentialShape::new(&["token"], &[]),
        (P::Github, A::App) => CredentialShape::new(&["appId", "privateKey"], &["installationId"]),
        (P::Github, A::Oauth) => CredentialShape::new(&["client_id", "client_secret"], &[]),
        (P::AzureDevops, A::Pat) => CredentialShape::new(&["organization_url", "token"], &[]),
        (P::AzureDevops, A::ServicePrincipal) => CredentialShape::new(
            &[
                "organization_url",
                "client_id",
                "client_secret",
                "tenant_id",
            ],
            &[],
        ),
        (P::Jira, A::BasicAuth) => {
            CredentialShape::new(&["base_url", "username", "api_token"], &[])
        }
        (P::Jira, A::OauthClientCredentials) => {
            CredentialShape::new(&["client_id", "client_secret", "cloud_id"], &[])
        }
        (P::Gitlab, A::Pat) => CredentialShape::new(&["token"], &["base_url"]),
        (P::Jfrog, A::Pat | A::ApiKey) => CredentialShape::new(&["base_url", "token"], &[]),
        (P::Jfrog, A::Basic) => CredentialShape::new(&["username", "password"], &["base_url"]),
        (P::Npm, A::Basic) => CredentialShape::new(&["username", "password"], &["registry"]),
        (P::Npm, A::Pat) => CredentialShape::new(&["token"], &["registry"]),
        (P::GithubPackages, A::Pat) => CredentialShape::new(&["token"], &[]),
        (P::AiAnthropic | P::AiOpenai | P::AiGoogle, A::ApiKey) => {
            CredentialShape::new(&["api_key"], &[])
        }
        (P::AiGithubCopilot, A::Pat | A::Oauth) => CredentialShape::new(&["token"], &[]),
        (P::AiAmazonBedrock, A::Bearer) => CredentialShape::new(&["bearer_token", "region"], &[]),
        (P::Datadog | P::Newrelic | P::Splunk, A::ApiKey) => {
            CredentialShape::new(&["api_key"], &[])
        }
        _ => return None,
    };
    Some(shape)
}

/// Returns the auth types a provider supports.
pub fn supported_auth_types(provider: Provider) -> Vec<AuthType> {
    AuthType::ALL
        .iter()
        .copied()
        .filter(|auth_type| credential_shape(provider, *auth_type).is_some())
        .collect()
}

/// Credential fields that hold URLs, checked for scheme and host.
const URL_FIELDS: &[&str] = &["organization_url", "base_url", "registry"];

/// Rules for URLs found in credentials and configuration.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Hosts (lowercase, without port) for which plain `http` is accepted, such as `127.0.0.1`
    /// for mock platforms in tests.
    pub http_allowed_hosts: Vec<String>,
}

impl UrlPolicy {
    /// Checks that `value` is an absolute https URL, or http on an allowed host.
    pub fn check(&self, field: &str, value: &str) -> Result<(), ValidationError> {
        let url = url::Url::parse(value).map_err(|_| {
            ValidationError::new(field, format!("{field} must be an absolute https URL"))
        })?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match url.scheme() {
            "https" if !host.is_empty() => Ok(()),
            "http" if self.http_allowed_hosts.iter().any(|allowed| allowed == host) => Ok(()),
            "http" => Err(ValidationError::new(
                field,
                format!("{field} must use https; plain http is accepted only for hosts the operator allowed"),
            )),
            _ => Err(ValidationError::new(
                field,
                format!("{field} must be an absolute https URL"),
            )),
        }
    }
}

/// Checks credentials against the shape of their provider and auth type.
pub fn validate_credentials(
    provider: Provider,
    auth_type: AuthType,
    credentials: &Credentials,
    urls: &UrlPolicy,
) -> Result<(), ValidationError> {
    let shape = credential_shape(provider, auth_type).ok_or_else(|| {
        let supported: Vec<&str> = supported_auth_types(provider)
            .into_iter()
            .map(AuthType::as_str)
            .collect();
        ValidationError::new(
            "authType",
            format!(
                "authType '{auth_type}' is not supported for provider '{provider}'; expected one of: {}",
                supported.join(", ")
            ),
        )
    })?;

    for (name, value) in credentials.expose_all() {
        let field = format!("credentials.{name}");
        if !shape.required.contains(&name) && !shape.optional.contains(&name) {
            return Err(ValidationError::new(
                field,
                format!(
                    "credentials.{} is not a field of {provider} {auth_type} credentials; expected: {}",
                    printable_name(name),
                    shape.expected()
                ),
            ));
        }
        if value.trim().is_empty() {
            return Err(ValidationError::new(
                &field,
                format!("{field} must not be empty"),
            ));
        }
        if value.len() > MAX_CREDENTIAL_VALUE_LEN {
            return Err(ValidationError::new(
                &field,
                format!("{field} is longer than {MAX_CREDENTIAL_VALUE_LEN} bytes"),
            ));
        }
        if URL_FIELDS.contains(&name) {
            urls.check(&field, value)?;
        }
    }
    for name in shape.required {
        if !credentials.contains(name) {
            return Err(ValidationError::new(
                format!("credentials.{name}"),
                format!(
                    "credentials.{name} is required for {provider} {auth_type}; expected: {}",
                    shape.expected()
                ),
            ));
        }
    }

    if provider == Provider::Github && auth_type == AuthType::App {
        validate_github_app(credentials)?;
    }
    Ok(())
}

/// Field names come from the request; cut and strip them before they reach a message.
fn printable_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn validate_github_app(credentials: &Credentials) -> Result<(), ValidationError> {
    for name in ["appId", "installationId"] {
        if let Some(value) = credentials.expose(name) {
            if !value.trim().chars().all(|c| c.is_ascii_digit()) {
                return Err(ValidationError::new(
                    format!("credentials.{name}"),
                    format!("credentials.{name} must be a number"),
                ));
            }
        }
    }
    if let Some(key) = credentials.expose("privateKey") {
        check_private_key_format(key)
            .map_err(|message| ValidationError::new("credentials.privateKey", message))?;
    }
    Ok(())
}

/// Checks that a GitHub App key is an RSA private key in PEM, PKCS#1 or PKCS#8, allowing newlines
/// that arrived as a literal `\n`. The error message names the expected formats.
pub fn check_private_key_format(key: &str) -> Result<(), String> {
    let key = key.replace("\\n", "\n");
    let key = key.trim();
    let expected = "credentials.privateKey must be an RSA private key in PEM format, \
                    PKCS#1 (BEGIN RSA PRIVATE KEY) or PKCS#8 (BEGIN PRIVATE KEY)";
    let pairs = [
        (
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----END RSA PRIVATE KEY-----",
        ),
        ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"),
    ];
    if key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return Err(format!(
            "{expected}; OpenSSH keys are not supported, download the key from the GitHub App settings"
        ));
    }
    if key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(format!("{expected}; encrypted keys are not supported"));
    }
    if pairs
        .iter()
        .any(|(begin, end)| key.starts_with(begin) && key.ends_with(end))
    {
        Ok(())
    } else {
        Err(expected.to_owned())
    }
}

/// Reports whether a configuration key names a secret, such as `api_key` or `clientSecret`.
fn looks_like_secret_name(name: &str) -> bool {
    let normalized = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "apikey",
        "privatekey",
        "credential",
    ]
    .iter()
    .any(|marker| normalized.contains(marker))
}

/// Checks and completes an integration's configuration: fills defaults and rejects values the
/// provider cannot use. Configuration is metadata and must not hold secrets.
pub fn normalize_config(
    provider: Provider,
    mut config: Map<String, Value>,
    urls: &UrlPolicy,
) -> Result<Map<String, Value>, ValidationError> {
    let size = serde_json::to_vec(&config)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    if size > MAX_CONFIG_LEN {
        return Err(ValidationError::new(
            "config",
            format!("config is larger than {MAX_CONFIG_LEN} bytes"),
        ));
    }
    if let Some(name) = config.keys().find(|name| looks_like_secret_name(name)) {
        let name = printable_name(name);
        return Err(ValidationError::new(
            format!("config.{name}"),
            format!(
                "config.{name} looks like a secret; put secrets in credentials, which are encrypted, because config is stored and returned in plaintext"
            ),
        ));
    }
    match provider {
        Provider::Datadog => {
            let site = config
                .entry("site")
                .or_insert_with(|| Value::String("datadoghq.com".into()));
            if site.as_str().is_none_or(|site| site.trim().is_empty()) {
                return Err(ValidationError::new(
                    "config.site",
                    "config.site must be a Datadog site name such as datadoghq.com",
                ));
            }
        }
        Provider::Newrelic => {
            let region = config
                .entry("region")
                .or_insert_with(|| Value::String("US".into()));
            let normalized = region.as_str().map(str::to_ascii_uppercase);
            match normalized.as_deref() {
                Some(value @ ("US" | "EU")) => *region = Value::String(value.to_owned()),
                _ => {
                    return Err(ValidationError::new(
                        "config.region",
                        "config.region must be US or EU",
                    ))
                }
            }
        }
        Provider::Splunk => match config.get("host") {
            Some(Value::String(host)) => urls.check("config.host", host)?,
            Some(_) => {
                return Err(ValidationError::new(
                    "config.host",
                    "config.host must be a string URL",
                ))
            }
            None => {
                return Err(ValidationError::new(
                    "config.host",
                    "config.host is required for splunk, for example https://input-prd-example.cloud.splunk.com:8088",
                ))
            }
        },
        _ => {}
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy {
            http_allowed_hosts: vec!["127.0.0.1".into()],
        }
    }

    #[test]
    fn every_provider_has_a_shape() {
        for provider in Provider::ALL {
            assert!(!supported_auth_types(*provider).is_empty(), "{provider}");
        }
    }

    #[test]
    fn unknown_key_lists_expected_fields() {
        let credentials = Credentials::new().with("tokn", "secret-value");
        let error = validate_credentials(Provider::Github, AuthType::Pat, &credentials, &policy())
            .unwrap_err();
        assert_eq!(error.field, "credentials.tokn");
        assert!(
            error.message.contains("expected: token"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("secret-value"));
    }

    #[test]
    fn missing_required_field_named() {
        let credentials = Credentials::new().with("organization_url", "https://dev.azure.com/o");
        let error = validate_credentials(
            Provider::AzureDevops,
            AuthType::Pat,
            &credentials,
            &policy(),
        )
        .unwrap_err();
        assert_eq!(error.field, "credentials.token");
    }

    #[test]
    fn unsupported_auth_type_lists_supported() {
        let credentials = Credentials::new().with("token", "t");
        let error = validate_credentials(Provider::Jira, AuthType::Pat, &credentials, &policy())
            .unwrap_err();
        assert_eq!(error.field, "authType");
        assert!(error
            .message
            .contains("basic_auth, oauth_client_credentials"));
    }

    #[test]
    fn http_url_only_for_allowed_hosts() {
        let local = Credentials::new()
            .with("organization_url", "http://127.0.0.1:9000/org")
            .with("token", "t");
        assert!(
            validate_credentials(Provider::AzureDevops, AuthType::Pat, &local, &policy()).is_ok()
        );
        let remote = Credentials::new()
            .with("organization_url", "http://dev.azure.com/org")
            .with("token", "t");
        let error = validate_credentials(Provider::AzureDevops, AuthType::Pat, &remote, &policy())
            .unwrap_err();
        assert_eq!(error.field, "credentials.organization_url");
    }

    #[test]
    fn private_key_formats() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----";
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----\\n";
        let openssh =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----";
        assert!(check_private_key_format(pkcs1).is_ok());
        assert!(check_private_key_format(pkcs8).is_ok());
        assert!(check_private_key_format(openssh)
            .unwrap_err()
            .contains("OpenSSH keys are not supported"));
        assert!(check_private_key_format("not a key").is_err());
    }

    #[test]
    fn app_id_must_be_numeric() {
        let credentials = Credentials::new().with("appId", "abc").with(
            "privateKey",
            "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
        );
        let error = validate_credentials(Provider::Github, AuthType::App, &credentials, &policy())
            .unwrap_err();
        assert_eq!(error.field, "credentials.appId");
    }

    #[test]
    fn config_defaults_filled() {
        let config = normalize_config(Provider::Datadog, Map::new(), &policy()).unwrap();
        assert_eq!(config["site"], "datadoghq.com");
        let config = normalize_config(Provider::Newrelic, Map::new(), &policy()).unwrap();
        assert_eq!(config["region"], "US");
    }

    #[test]
    fn secret_named_config_rejected() {
        for name in ["api_key", "clientSecret", "token", "Password"] {
            let mut config = Map::new();
            config.insert(name.into(), Value::String("value".into()));
            let error = normalize_config(Provider::Datadog, config, &policy()).unwrap_err();
            assert_eq!(error.field, format!("config.{name}"));
        }
    }

    #[test]
    fn splunk_requires_host() {
        let error = normalize_config(Provider::Splunk, Map::new(), &policy()).unwrap_err();
        assert_eq!(error.field, "config.host");
    }

    #[test]
    fn newrelic_region_checked() {
        let mut config = Map::new();
        config.insert("region".into(), Value::String("APAC".into()));
        let error = normalize_config(Provider::Newrelic, config, &policy()).unwrap_err();
        assert_eq!(error.field, "config.region");
    }
}
