//! Probe configuration and the environment variables that set it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use integrations_core::validation::check_private_key_format;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::guard::ALLOWED_HOSTS_VARIABLE;

/// Public GitHub REST API.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Public Microsoft Entra ID authority.
pub const DEFAULT_ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// Default timeout of one platform request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `User-Agent` sent to the platforms; GitHub rejects API requests without one.
pub const DEFAULT_USER_AGENT: &str = concat!("integrations-probe/", env!("CARGO_PKG_VERSION"));

/// Environment variable: GitHub API base URL, for GitHub Enterprise Server or a mock.
pub const GITHUB_API_URL_VARIABLE: &str = "INTEGRATIONS_GITHUB_API_URL";
/// Environment variable: Entra authority, for sovereign clouds or a mock.
pub const ENTRA_AUTHORITY_VARIABLE: &str = "INTEGRATIONS_ENTRA_AUTHORITY";
/// Environment variable: app id of the built-in GitHub App.
pub const GITHUB_APP_ID_VARIABLE: &str = "GITHUB_APP_ID";
/// Environment variable: PEM private key of the built-in GitHub App.
pub const GITHUB_APP_PRIVATE_KEY_VARIABLE: &str = "GITHUB_APP_PRIVATE_KEY";
/// Environment variable: file holding the PEM private key of the built-in GitHub App.
pub const GITHUB_APP_PRIVATE_KEY_PATH_VARIABLE: &str = "GITHUB_APP_PRIVATE_KEY_PATH";

/// Error in probe configuration. Messages name the variable and never include a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL variable is not an absolute URL.
    #[error("{variable} must be an absolute URL such as {example}")]
    InvalidUrl {
        /// The variable.
        variable: &'static str,
        /// An example value.
        example: &'static str,
    },
    /// The built-in app id is not a number.
    #[error("{GITHUB_APP_ID_VARIABLE} must be the numeric GitHub App id")]
    InvalidAppId,
    /// An app id without a key, or a key without an app id.
    #[error(
        "the built-in GitHub App needs both {GITHUB_APP_ID_VARIABLE} and \
         {GITHUB_APP_PRIVATE_KEY_VARIABLE} (or {GITHUB_APP_PRIVATE_KEY_PATH_VARIABLE}); {0} is missing"
    )]
    IncompleteApp(&'static str),
    /// The key file could not be read.
    #[error("failed to read {GITHUB_APP_PRIVATE_KEY_PATH_VARIABLE} file {path}: {cause}")]
    KeyFile {
        /// The path.
        path: String,
        /// The I/O error.
        cause: String,
    },
    /// The key is not an RSA private key in PEM format.
    #[error("invalid built-in GitHub App key: {0}")]
    InvalidKey(String),
}

/// Credentials of the GitHub App built into the server, used for projects without a GitHub
/// integration of their own and without a global default.
#[derive(Clone)]
pub struct BuiltinApp {
    app_id: String,
    private_key: SecretString,
}

impl BuiltinApp {
    /// Creates a built-in app after checking that the id is numeric and the key is an RSA
    /// private key in PEM format (PKCS#1 or PKCS#8; newlines may be a literal `\n`).
    pub fn new(
        app_id: impl Into<String>,
        private_key: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let app_id = app_id.into().trim().to_owned();
        if app_id.is_empty() || !app_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::InvalidAppId);
        }
        let private_key = SecretString::from(private_key.into());
        check_private_key_format(private_key.expose_secret())
            .map_err(|message| ConfigError::InvalidKey(builtin_key_message(&message)))?;
        Ok(Self {
            app_id,
            private_key,
        })
    }

    /// Returns the numeric app id, as text.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub(crate) fn private_key(&self) -> &str {
        self.private_key.expose_secret()
    }
}

/// Replaces the integration field named by the core validator with the variable name.
fn builtin_key_message(message: &str) -> String {
    message.replace("credentials.privateKey", GITHUB_APP_PRIVATE_KEY_VARIABLE)
}

impl fmt::Debug for BuiltinApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinApp")
            .field("app_id", &self.app_id)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

/// Configuration of every platform probe; see the crate documentation for the variables
/// [`PlatformsConfig::from_env`] reads.
#[derive(Debug, Clone)]
pub struct PlatformsConfig {
    /// GitHub REST API base URL.
    pub github_api_url: Url,
    /// Microsoft Entra ID authority; tokens come from `{authority}/{tenant}/oauth2/v2.0/token`.
    pub entra_authority: Url,
    /// Hosts probes may reach besides the platforms' public API hosts: names or IP addresses
    /// without port, or `*.domain` wildcards. Plain http is accepted only for loopback hosts in
    /// this list. The origins (scheme, host and port) of `github_api_url` and
    /// `entra_authority` are always allowed.
    pub allowed_hosts: Vec<String>,
    /// Timeout of one platform request.
    pub request_timeout: Duration,
    /// The built-in GitHub App, if configured.
    pub builtin_app: Option<BuiltinApp>,
    /// `User-Agent` header sent to the platforms.
    pub user_agent: String,
}

impl Default for PlatformsConfig {
    fn default() -> Self {
        Self {
            github_api_url: Url::parse(DEFAULT_GITHUB_API_URL).expect("constant URL parses"),
            entra_authority: Url::parse(DEFAULT_ENTRA_AUTHORITY).expect("constant URL parses"),
            allowed_hosts: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            builtin_app: None,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
        }
    }
}

impl PlatformsConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value; empty values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::default();

        if let Some(value) = read(GITHUB_API_URL_VARIABLE) {
            config.github_api_url = parse_url(
                GITHUB_API_URL_VARIABLE,
                &value,
                "https://ghe.example.com/api/v3",
            )?;
        }
        if let Some(value) = read(ENTRA_AUTHORITY_VARIABLE) {
            config.entra_authority = parse_url(
                ENTRA_AUTHORITY_VARIABLE,
                &value,
                "https://login.microsoftonline.us",
            )?;
        }
        if let Some(value) = read(ALLOWED_HOSTS_VARIABLE) {
            config.allowed_hosts = value
                .split(',')
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty())
                .collect();
        }
        config.builtin_app = read_builtin_app(&read)?;
        Ok(config)
    }
}

fn parse_url(
    variable: &'static str,
    value: &str,
    example: &'static str,
) -> Result<Url, ConfigError> {
    let url =
        Url::parse(value.trim()).map_err(|_| ConfigError::InvalidUrl { variable, example })?;
    if url.host_str().is_none() {
        return Err(ConfigError::InvalidUrl { variable, example });
    }
    Ok(url)
}

fn read_builtin_app(
    read: &impl Fn(&str) -> Option<String>,
) -> Result<Option<BuiltinApp>, ConfigError> {
    let app_id = read(GITHUB_APP_ID_VARIABLE);
    let key = match (
        read(GITHUB_APP_PRIVATE_KEY_VARIABLE),
        read(GITHUB_APP_PRIVATE_KEY_PATH_VARIABLE),
    ) {
        (Some(key), _) => Some(key),
        (None, Some(path)) => Some(read_key_file(PathBuf::from(path))?),
        (None, None) => None,
    };
    match (app_id, key) {
        (Some(app_id), Some(key)) => BuiltinApp::new(app_id, key).map(Some),
        (Some(_), None) => Err(ConfigError::IncompleteApp(GITHUB_APP_PRIVATE_KEY_VARIABLE)),
        (None, Some(_)) => Err(ConfigError::IncompleteApp(GITHUB_APP_ID_VARIABLE)),
        (None, None) => Ok(None),
    }
}

fn read_key_file(path: PathBuf) -> Result<String, ConfigError> {
    std::fs::read_to_string(&path).map_err(|error| ConfigError::KeyFile {
        path: path.display().to_string(),
        cause: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PKCS1: &str = include_str!("../tests/fixtures/app_pkcs1.pem");

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_when_unset() {
        let config = PlatformsConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config.github_api_url.as_str(), "https://api.github.com/");
        assert!(config.builtin_app.is_none());
    }

    #[test]
    fn allowed_hosts_split() {
        let config = PlatformsConfig::from_lookup(lookup(&[(
            ALLOWED_HOSTS_VARIABLE,
            "127.0.0.1, ghe.example.com,,",
        )]))
        .unwrap();
        assert_eq!(config.allowed_hosts, vec!["127.0.0.1", "ghe.example.com"]);
    }

    #[test]
    fn builtin_app_read() {
        let config = PlatformsConfig::from_lookup(lookup(&[
            (GITHUB_APP_ID_VARIABLE, "42"),
            (GITHUB_APP_PRIVATE_KEY_VARIABLE, PKCS1),
        ]))
        .unwrap();
        assert_eq!(config.builtin_app.unwrap().app_id(), "42");
    }

    #[test]
    fn builtin_key_from_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app_pkcs8.pem");
        let config = PlatformsConfig::from_lookup(lookup(&[
            (GITHUB_APP_ID_VARIABLE, "42"),
            (GITHUB_APP_PRIVATE_KEY_PATH_VARIABLE, path),
        ]))
        .unwrap();
        assert!(config.builtin_app.is_some());
    }

    #[test]
    fn app_id_without_key_rejected() {
        let error =
            PlatformsConfig::from_lookup(lookup(&[(GITHUB_APP_ID_VARIABLE, "42")])).unwrap_err();
        assert_eq!(
            error,
            ConfigError::IncompleteApp(GITHUB_APP_PRIVATE_KEY_VARIABLE)
        );
    }

    #[test]
    fn openssh_builtin_key_rejected() {
        let key = include_str!("../tests/fixtures/app_openssh.key");
        let error = BuiltinApp::new("42", key).unwrap_err();
        assert!(error.to_string().contains("OpenSSH"), "{error}");
    }

    #[test]
    fn debug_hides_key() {
        let app = BuiltinApp::new("42", PKCS1).unwrap();
        let debug = format!("{app:?}");
        assert!(!debug.contains("MII"), "{debug}");
    }

    #[test]
    fn bad_url_names_variable() {
        let error = PlatformsConfig::from_lookup(lookup(&[(GITHUB_API_URL_VARIABLE, "not a url")]))
            .unwrap_err();
        assert!(error.to_string().contains(GITHUB_API_URL_VARIABLE));
    }
}
