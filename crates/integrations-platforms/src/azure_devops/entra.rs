//! Client-credentials tokens from Microsoft Entra ID for Azure DevOps.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::cache::{refresh_at, SingleFlightCache};
use crate::http::{Latency, ProbeClient};
use crate::redact::quote_platform_text;
use crate::token::{Failure, SecretToken};

/// The Azure DevOps resource: tokens for this scope are accepted by every organization.
pub(crate) const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

/// Lifetime assumed when Entra omits `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// A service principal: tenant, client id and client secret.
pub(crate) struct ServicePrincipal<'a> {
    pub(crate) tenant_id: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
}

/// Cache key: authority, tenant, client and a SHA-256 of the secret, so a wrong secret never
/// reuses a token obtained with the right one.
type TokenKey = (String, String, String, [u8; 32]);

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// Entra tokens per authority, tenant and client, each obtained by one check at a time.
#[derive(Default)]
pub(crate) struct EntraTokens {
    tokens: SingleFlightCache<TokenKey, SecretToken, Failure>,
}

impl EntraTokens {
    /// Returns a token for the Azure DevOps scope, from the cache while it is fresh.
    pub(crate) async fn token(
        &self,
        client: &ProbeClient,
        authority: &Url,
        principal: &ServicePrincipal<'_>,
        latency: &Latency,
    ) -> Result<SecretToken, Failure> {
        let key = token_key(authority, principal);
        self.tokens
            .get(&key, || {
                request_token(client, authority, principal, latency)
            })
            .await
    }

    /// Drops a token Azure DevOps rejected, unless another check already replaced it.
    pub(crate) async fn forget(
        &self,
        authority: &Url,
        principal: &ServicePrincipal<'_>,
        stale: &SecretToken,
    ) {
        let key = token_key(authority, principal);
        self.tokens.invalidate(&key, stale).await;
    }
}

fn token_key(authority: &Url, principal: &ServicePrincipal<'_>) -> TokenKey {
    (
        authority.as_str().to_owned(),
        principal.tenant_id.to_ascii_lowercase(),
        principal.client_id.to_ascii_lowercase(),
        Sha256::digest(principal.client_secret.as_bytes()).into(),
    )
}

/// Checks a tenant id or domain before it becomes a path segment.
fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

async fn request_token(
    client: &ProbeClient,
    authority: &Url,
    principal: &ServicePrincipal<'_>,
    latency: &Latency,
) -> Result<(SecretToken, Instant), Failure> {
    if !valid_tenant(principal.tenant_id) {
        return Err(Failure(format!(
            "tenant_id '{}' is not an Entra tenant id or domain; use the directory (tenant) id \
             of the app registration",
            quote_platform_text(principal.tenant_id)
        )));
    }
    let mut url = authority.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend([principal.tenant_id, "oauth2", "v2.0", "token"]);
    }
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", principal.client_id),
        ("client_secret", principal.client_secret),
        ("scope", AZURE_DEVOPS_SCOPE),
    ];
    let request = client.inner().post(url.clone()).form(&form);
    let response = client.send(&url, request, latency).await?;

    if response.status == StatusCode::OK {
        let body: TokenBody = serde_json::from_slice(&response.body).map_err(|_| {
            Failure("Entra returned no access_token in its token response".to_owned())
        })?;
        let lifetime = body
            .expires_in
            .as_ref()
            .and_then(seconds_value)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        return Ok((SecretToken::new(body.access_token), refresh_at(lifetime)));
    }
    Err(Failure(token_error_message(
        response.status,
        &response.body,
        principal,
    )))
}

/// `expires_in` is a number in v2.0 responses and a string in some older ones.
fn seconds_value(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Explains an Entra error response by its AADSTS code. The description is not quoted because it
/// may echo request values.
fn token_error_message(
    status: StatusCode,
    body: &[u8],
    principal: &ServicePrincipal<'_>,
) -> String {
    let client = quote_platform_text(principal.client_id);
    let tenant = quote_platform_text(principal.tenant_id);
    let Ok(error) = serde_json::from_slice::<ErrorBody>(body) else {
        if status.is_server_error() {
            return format!("Entra returned {status} for the token request; retry later");
        }
        return format!("Entra returned {status} for the token request without an error body");
    };
    let code = error
        .error_codes
        .first()
        .copied()
        .or_else(|| aadsts_code(&error.error_description));
    let code_text = code
        .map(|code| format!("AADSTS{code}"))
        .unwrap_or_else(|| "no AADSTS code".to_owned());
    match code {
        Some(7_000_215) => format!(
            "Entra rejected the client secret of client {client} ({code_text}: invalid client \
             secret); copy the secret's value, not its id, into client_secret"
        ),
        Some(7_000_222) => format!(
            "the client secret of client {client} has expired ({code_text}); create a new \
             secret for the app registration and update client_secret"
        ),
        Some(90_002) => format!(
            "Entra tenant '{tenant}' not found ({code_text}); check tenant_id, and that \
             INTEGRATIONS_ENTRA_AUTHORITY points at the right cloud"
        ),
        Some(700_016) => format!(
            "application {client} not found in tenant '{tenant}' ({code_text}); check client_id \
             and tenant_id"
        ),
        Some(7_000_216 | 700_027) => format!(
            "Entra rejected the credentials of client {client} ({code_text}); check client_id \
             and client_secret"
        ),
        _ => {
            let error_code = quote_platform_text(&error.error);
            let detail = if error_code.is_empty() {
                format!("{code_text}, HTTP {status}")
            } else {
                format!("{error_code}, {code_text}, HTTP {status}")
            };
            format!(
                "Entra rejected the token request of client {client} in tenant '{tenant}' \
                 ({detail})"
            )
        }
    }
}

/// Finds `AADSTS<digits>` in a description.
fn aadsts_code(description: &str) -> Option<u64> {
    let start = description.find("AADSTS")? + "AADSTS".len();
    let digits: String = description[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> ServicePrincipal<'static> {
        ServicePrincipal {
            tenant_id: "contoso",
            client_id: "client-1",
            client_secret: "very-secret-value",
        }
    }

    #[test]
    fn invalid_secret_named() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#;
        let message = token_error_message(StatusCode::UNAUTHORIZED, body, &principal());
        assert!(message.contains("AADSTS7000215"), "{message}");
    }

    #[test]
    fn code_read_from_description() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys are expired."}"#;
        let message = token_error_message(StatusCode::UNAUTHORIZED, body, &principal());
        assert!(message.contains("has expired"), "{message}");
    }

    #[test]
    fn tenant_checked() {
        assert!(valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(valid_tenant("contoso.onmicrosoft.com"));
        assert!(!valid_tenant("../evil"));
    }

    #[test]
    fn expires_in_as_text() {
        assert_eq!(seconds_value(&serde_json::json!("3599")), Some(3599));
    }
}
