//! Bearer token verification and the signing used by the `token` subcommand.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use integrations_core::tokens::is_application_token;
use integrations_core::{Actor, Role, TokenAuthError};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::error::ApiError;
use crate::keys::{self, KeyError};
use crate::AppState;

/// Clock skew tolerated when checking `exp`, in seconds. jsonwebtoken 9 defaults to 60 s.
pub const LEEWAY_SECONDS: u64 = 5;

/// Minimum length of an HS256 secret, in bytes (the HMAC-SHA256 output size).
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Error while setting up token verification or signing.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The configuration is invalid. The message never contains key material.
    #[error("{0}")]
    Invalid(String),
    /// The signing key file could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Reason a request was not authenticated. Each message is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// The header is not `Bearer <token>`.
    Malformed,
    /// The token is past its `exp`.
    Expired,
    /// The signature, algorithm, issuer, audience or claims are invalid.
    Invalid,
    /// The `role` claim is not owner, member or application.
    UnknownRole,
    /// An owner revoked the application token.
    Revoked,
}

impl AuthFailure {
    /// Returns the snake_case name recorded as the `reason` of an audit event.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Expired => "expired",
            AuthFailure::Invalid => "invalid",
            AuthFailure::UnknownRole => "unknown_role",
            AuthFailure::Revoked => "revoked",
        }
    }

    /// Returns the message for the 401 response.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "Missing bearer token; send Authorization: Bearer <token>",
            AuthFailure::Malformed => "Authorization header must be: Bearer <token>",
            AuthFailure::Expired => "Token expired",
            AuthFailure::Invalid => "Invalid token",
            AuthFailure::UnknownRole => {
                "Invalid token: role claim must be one of owner, member, application"
            }
            AuthFailure::Revoked => "Token revoked",
        }
    }
}

/// Claims of a bearer token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    /// Typed here so that a non-numeric `nbf` fails to decode, because the time check in
    /// jsonwebtoken skips an `nbf` it cannot read as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or an array of strings, as RFC 7519 allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// Verifies bearer tokens with one algorithm and key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Builds a verifier from the configuration: a public key when one is set, else the HS256
    /// secret from the environment, else the data directory's `signing.key` (created if missing).
    pub fn from_config(config: &JwtConfig, data_dir: &Path) -> Result<Self, AuthSetupError> {
        if let Some(pem) = public_key_pem(config)? {
            let algorithm = public_key_algorithm(config, &pem)?;
            let key = decoding_key(algorithm, &pem)?;
            return Ok(Self::new(key, algorithm, config));
        }
        if config
            .jwt_algorithm
            .as_deref()
            .is_some_and(|name| name != "HS256")
        {
            return Err(AuthSetupError::Invalid(
                "INTEGRATIONS_JWT_ALGORITHM other than HS256 needs INTEGRATIONS_JWT_PUBLIC_KEY or INTEGRATIONS_JWT_PUBLIC_KEY_PATH".into(),
            ));
        }
        let secret = hs256_secret(config, data_dir)?;
        let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
        Ok(Self::new(key, Algorithm::HS256, config))
    }

    fn new(key: DecodingKey, algorithm: Algorithm, config: &JwtConfig) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        // A token whose `nbf` lies ahead is not valid yet (RFC 7519, section 4.1.5).
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["exp", "sub"];
        match &config.jwt_issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self { key, validation }
    }

    /// Returns the algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies an `Authorization` header value and returns the caller.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Actor, AuthFailure> {
        let token = bearer_token(header)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::Expired,
                _ => AuthFailure::Invalid,
            },
        )?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(AuthFailure::Invalid);
        }
        let role = Role::from_str(&claims.role).map_err(|_| AuthFailure::UnknownRole)?;
        Ok(Actor::new(claims.sub, role))
    }
}

/// Returns the token of a `Bearer <token>` header value.
fn bearer_token(header: Option<&str>) -> Result<&str, AuthFailure> {
    let header = header.ok_or(AuthFailure::Missing)?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// Authenticates an `Authorization` header value. An `intg_` application token is looked up in
/// the store on every request, so that a revocation by any process applies at once. Any other
/// bearer value is verified as a JWT.
///
/// A store that cannot be reached gives the service's 503, not a 401, so that callers retry
/// instead of discarding a valid token.
pub async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Actor, AuthRejection> {
    let result = match bearer_token(header) {
        Ok(token) if is_application_token(token) => state
            .service
            .authenticate_application_token(token)
            .await
            .map_err(|error| match error {
                TokenAuthError::Expired => AuthRejection::Unauthorized(AuthFailure::Expired),
                TokenAuthError::Revoked => AuthRejection::Unauthorized(AuthFailure::Revoked),
                TokenAuthError::Service(error) => AuthRejection::Unavailable(ApiError::from(error)),
                _ => AuthRejection::Unauthorized(AuthFailure::Invalid),
            }),
        Ok(_) => state
            .verifier
            .authenticate(header)
            .map_err(AuthRejection::Unauthorized),
        Err(failure) => Err(AuthRejection::Unauthorized(failure)),
    };
    if let Err(rejection) = &result {
        tracing::debug!(reason = ?rejection, "request not authenticated");
    }
    result
}

/// Reason a request was not authenticated.
#[derive(Debug)]
pub enum AuthRejection {
    /// The credentials are missing or invalid: 401.
    Unauthorized(AuthFailure),
    /// The token could not be checked, such as when the database is down.
    Unavailable(ApiError),
}

impl From<AuthRejection> for ApiError {
    fn from(rejection: AuthRejection) -> Self {
        match rejection {
            AuthRejection::Unauthorized(failure) => ApiError::unauthorized(failure),
            AuthRejection::Unavailable(error) => error,
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        ApiError::unauthorized(failure)
    }
}

/// Signs HS256 tokens with the same secret a server on this data directory verifies with.
pub struct TokenSigner {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Builds a signer from `INTEGRATIONS_JWT_HS256_SECRET` or the data directory's `signing.key`.
    pub fn from_config(config: &JwtConfig, data_dir: &Path) -> Result<Self, AuthSetupError> {
        if config.jwt_public_key.is_some() || config.jwt_public_key_path.is_some() {
            return Err(AuthSetupError::Invalid(
                "tokens for a server that verifies with a public key must be signed by the holder of its private key; this command signs HS256 only".into(),
            ));
        }
        let secret = hs256_secret(config, data_dir)?;
        Ok(Self {
            key: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Signs a token for `subject` with `role`, valid for `ttl_seconds` from now.
    pub fn sign(
        &self,
        role: Role,
        subject: &str,
        ttl_seconds: u64,
    ) -> Result<String, AuthSetupError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            sub: subject.to_owned(),
            role: role.as_str().to_owned(),
            exp: now.saturating_add(ttl_seconds),
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|error| AuthSetupError::Invalid(format!("failed to sign token: {error}")))
    }
}

fn hs256_secret(config: &JwtConfig, data_dir: &Path) -> Result<SecretString, AuthSetupError> {
    if let Some(secret) = &config.jwt_hs256_secret {
        if secret.expose_secret().len() < MIN_HS256_SECRET_LEN {
            return Err(AuthSetupError::Invalid(format!(
                "INTEGRATIONS_JWT_HS256_SECRET is too short: it must be at least {MIN_HS256_SECRET_LEN} bytes"
            )));
        }
        return Ok(secret.clone());
    }
    keys::prepare_data_dir(data_dir)?;
    let (secret, created) = keys::load_signing_key(data_dir)?;
    if created {
        tracing::info!(
            path = %data_dir.join(keys::SIGNING_KEY_FILE).display(),
            "created a new token signing key"
        );
    }
    Ok(secret)
}

fn public_key_pem(config: &JwtConfig) -> Result<Option<String>, AuthSetupError> {
    if let Some(pem) = &config.jwt_public_key {
        return Ok(Some(pem.clone()));
    }
    let Some(path) = &config.jwt_public_key_path else {
        return Ok(None);
    };
    std::fs::read_to_string(path).map(Some).map_err(|error| {
        AuthSetupError::Invalid(format!(
            "failed to read INTEGRATIONS_JWT_PUBLIC_KEY_PATH {}: {error}",
            path.display()
        ))
    })
}

fn public_key_algorithm(config: &JwtConfig, pem: &str) -> Result<Algorithm, AuthSetupError> {
    if let Some(name) = &config.jwt_algorithm {
        let algorithm = Algorithm::from_str(name).map_err(|_| unsupported_algorithm(name))?;
        return match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384 => Ok(algorithm),
            _ => Err(unsupported_algorithm(name)),
        };
    }
    if DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() {
        Ok(Algorithm::RS256)
    } else if DecodingKey::from_ec_pem(pem.as_bytes()).is_ok() {
        // A P-384 key with ES256 fails every signature check, so name the curve explicitly
        // through INTEGRATIONS_JWT_ALGORITHM=ES384 in that case.
        Ok(Algorithm::ES256)
    } else {
        Err(AuthSetupError::Invalid(
            "the JWT public key is not an RSA or EC public key in PEM format".into(),
        ))
    }
}

fn decoding_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, AuthSetupError> {
    let result = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    };
    result.map_err(|_| {
        AuthSetupError::Invalid(format!(
            "the JWT public key is not a PEM public key usable with {algorithm:?}"
        ))
    })
}

fn unsupported_algorithm(name: &str) -> AuthSetupError {
    AuthSetupError::Invalid(format!(
        "INTEGRATIONS_JWT_ALGORITHM '{name}' is not supported with a public key; expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            jwt_hs256_secret: Some(SecretString::from("0123456789abcdef0123456789abcdef")),
            jwt_public_key: None,
            jwt_public_key_path: None,
            jwt_algorithm: None,
            jwt_issuer: None,
            jwt_audience: None,
        }
    }

    #[test]
    fn signed_token_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::from_config(&config(), dir.path()).unwrap();
        let verifier = TokenVerifier::from_config(&config(), dir.path()).unwrap();
        let token = signer.sign(Role::Member, "alice", 60).unwrap();
        let actor = verifier
            .authenticate(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(actor, Actor::new("alice", Role::Member));
    }

    #[test]
    fn leeway_is_five_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = TokenVerifier::from_config(&config(), dir.path()).unwrap();
        assert_eq!(verifier.validation.leeway, 5);
    }

    #[test]
    fn short_secret_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.jwt_hs256_secret = Some(SecretString::from("short"));
        let error = TokenVerifier::from_config(&config, dir.path()).unwrap_err();
        assert!(error.to_string().contains("too short"), "{error}");
    }

    #[test]
    fn basic_scheme_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = TokenVerifier::from_config(&config(), dir.path()).unwrap();
        assert_eq!(
            verifier.authenticate(Some("Basic abc")),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn signer_debug_hides_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::from_config(&config(), dir.path()).unwrap();
        assert!(!format!("{signer:?}").contains("0123456789abcdef"));
    }
}
