//! Application tokens: opaque bearer secrets that owners issue to machine callers and revoke.
//!
//! A token is `intg_` followed by 43 base64url characters that encode 32 bytes from the operating
//! system's random generator. The store keeps only its SHA-256 hash. The secret is shown once, in
//! the result of [`IntegrationService::create_application_token`]. Authentication looks the hash
//! up in the store on every call, so a revocation written by one process applies to every process
//! that shares the database from the next request on.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::error::ServiceError;
use crate::model::{Actor, Role};
use crate::service::{is_invisible_format, require_owner, IntegrationService};

/// Prefix of every application token, so that a leaked token is recognisable in a scan and the
/// server can tell it from a JWT without parsing.
pub const TOKEN_PREFIX: &str = "intg_";

/// Random bytes behind each token.
const TOKEN_RANDOM_BYTES: usize = 32;

/// Length of the base64url text (without padding) of [`TOKEN_RANDOM_BYTES`] bytes.
const TOKEN_ENCODED_LEN: usize = 43;

/// Lifetime of a token created without `expiresIn`, in days.
pub const DEFAULT_EXPIRES_IN_DAYS: i64 = 30;

/// Maximum lifetime of a token, in days.
pub const MAX_EXPIRES_IN_DAYS: i64 = 365;

/// Maximum length of a token name, in characters.
pub const MAX_TOKEN_NAME_LEN: usize = 100;

/// Prefix of the actor subject of a caller authenticated with an application token.
pub const ACTOR_SUBJECT_PREFIX: &str = "application-token:";

/// SHA-256 hash of an application token, the only form in which a store keeps it.
pub type TokenHash = [u8; 32];

/// Application token metadata: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationToken {
    /// Token id.
    pub id: Uuid,
    /// Name the owner gave the token, such as the pipeline that uses it.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time from which the token is rejected.
    pub expires_at: DateTime<Utc>,
    /// Revocation time, `None` while the token is not revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Subject of the owner who created the token.
    pub created_by: String,
}

impl ApplicationToken {
    /// Returns the actor subject of callers that use this token.
    pub fn actor_subject(&self) -> String {
        format!("{ACTOR_SUBJECT_PREFIX}{}", self.id)
    }
}

/// An application token as stored: metadata plus the SHA-256 hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationTokenRecord {
    /// Metadata.
    pub token: ApplicationToken,
    /// SHA-256 hash of the secret.
    pub token_hash: TokenHash,
}

/// Result of revoking an application token in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeResult {
    /// The token was revoked now.
    Revoked,
    /// The token had been revoked before, and its revocation time is unchanged.
    AlreadyRevoked,
    /// No token has this id.
    NotFound,
}

/// The secret of an application token. `Debug` hides it, and the memory is wiped on drop.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// Generates a token from the operating system's random generator.
    pub fn generate() -> Self {
        let mut random = Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
        rand::rngs::OsRng.fill_bytes(random.as_mut_slice());
        // The exact capacity keeps `encode_string` from reallocating, which would leave an
        // unwiped copy of the secret behind.
        let mut text = Zeroizing::new(String::with_capacity(
            TOKEN_PREFIX.len() + TOKEN_ENCODED_LEN,
        ));
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(random.as_slice(), &mut text);
        Self(text)
    }

    /// Returns the token text, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns the SHA-256 hash that the store keeps.
    pub fn hash(&self) -> TokenHash {
        hash_token(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// A newly created token: its metadata and the secret, which is never available again.
#[derive(Debug)]
pub struct CreatedApplicationToken {
    /// Metadata as stored.
    pub token: ApplicationToken,
    /// The secret to hand to the caller.
    pub secret: TokenSecret,
}

/// Reason an application token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenAuthError {
    /// The text is not a well-formed token, or no stored token has its hash.
    #[error("invalid application token")]
    Invalid,
    /// The token is past its expiry time.
    #[error("application token expired")]
    Expired,
    /// An owner revoked the token.
    #[error("application token revoked")]
    Revoked,
    /// The store could not be asked, so the token could not be checked.
    #[error(transparent)]
    Service(ServiceError),
}

/// Reports whether a bearer value is meant as an application token rather than a JWT.
pub fn is_application_token(bearer: &str) -> bool {
    bearer.starts_with(TOKEN_PREFIX)
}

/// Returns the SHA-256 hash of a token text.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in time that does not depend on where they differ.
pub fn hashes_equal(left: &TokenHash, right: &TokenHash) -> bool {
    left.ct_eq(right).into()
}

/// Checks the shape of a token text: the prefix and 43 base64url characters.
fn is_well_formed(token: &str) -> bool {
    let Some(encoded) = token.strip_prefix(TOKEN_PREFIX) else {
        return false;
    };
    encoded.len() == TOKEN_ENCODED_LEN
        && encoded
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Trims and checks a token name.
fn validate_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::invalid("name", "name is required"));
    }
    if name.chars().count() > MAX_TOKEN_NAME_LEN {
        return Err(ServiceError::invalid(
            "name",
            format!("name is longer than {MAX_TOKEN_NAME_LEN} characters"),
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(ServiceError::invalid(
            "name",
            "name must not contain control, zero-width or bidirectional formatting characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks a lifetime in days, applying the default when it is absent.
fn validate_expires_in(expires_in_days: Option<i64>) -> Result<i64, ServiceError> {
    let days = expires_in_days.unwrap_or(DEFAULT_EXPIRES_IN_DAYS);
    if !(1..=MAX_EXPIRES_IN_DAYS).contains(&days) {
        return Err(ServiceError::invalid(
            "expiresIn",
            format!("expiresIn must be a whole number of days from 1 to {MAX_EXPIRES_IN_DAYS}"),
        ));
    }
    Ok(days)
}

fn token_not_found() -> ServiceError {
    ServiceError::NotFound("Application token not found".into())
}

impl IntegrationService {
    /// Creates an application token valid for `expires_in_days` (30 when `None`, at most 365).
    /// Owner only. The secret is returned here and never again; the store keeps its hash.
    pub async fn create_application_token(
        &self,
        actor: &Actor,
        name: &str,
        expires_in_days: Option<i64>,
    ) -> Result<CreatedApplicationToken, ServiceError> {
        require_owner(actor)?;
        let name = validate_name(name)?;
        let days = validate_expires_in(expires_in_days)?;

        // Whole microseconds, because PostgreSQL keeps no finer precision and the response
        // should match what a later list returns.
        let created_at = Utc::now().trunc_subsecs(6);
        let secret = TokenSecret::generate();
        let token = ApplicationToken {
            id: Uuid::new_v4(),
            name,
            created_at,
            expires_at: created_at + Duration::days(days),
            revoked_at: None,
            created_by: actor.subject.clone(),
        };
        let record = ApplicationTokenRecord {
            token: token.clone(),
            token_hash: secret.hash(),
        };
        let audit = AuditEvent::new(
            actor,
            AuditAction::ApplicationTokenCreated,
            AuditOutcome::Success,
        )
        .with_filter("token_id", token.id.to_string())
        .with_filter("name", token.name.clone());
        self.store.insert_application_token(&record, &audit).await?;

        tracing::info!(
            token_id = %token.id,
            expires_at = %token.expires_at,
            actor = %actor.subject,
            "application token created"
        );
        Ok(CreatedApplicationToken { token, secret })
    }

    /// Lists application token metadata, revoked and expired tokens included, oldest first.
    /// Owner only.
    pub async fn list_application_tokens(
        &self,
        actor: &Actor,
    ) -> Result<Vec<ApplicationToken>, ServiceError> {
        require_owner(actor)?;
        Ok(self.store.list_application_tokens().await?)
    }

    /// Revokes an application token. Owner only. Revoking a revoked token succeeds and changes
    /// nothing, so only the first revocation is audited.
    pub async fn revoke_application_token(
        &self,
        actor: &Actor,
        id: Uuid,
    ) -> Result<(), ServiceError> {
        require_owner(actor)?;
        let audit = AuditEvent::new(
            actor,
            AuditAction::ApplicationTokenRevoked,
            AuditOutcome::Success,
        )
        .with_filter("token_id", id.to_string());
        let revoked_at = Utc::now().trunc_subsecs(6);
        match self
            .store
            .revoke_application_token(id, revoked_at, &audit)
            .await?
        {
            RevokeResult::Revoked => {
                tracing::info!(token_id = %id, actor = %actor.subject, "application token revoked");
                Ok(())
            }
            RevokeResult::AlreadyRevoked => Ok(()),
            RevokeResult::NotFound => Err(token_not_found()),
        }
    }

    /// Checks an application token against the store and returns its caller: role
    /// `application`, subject `application-token:<id>`.
    ///
    /// The store is asked on every call, with no cache, so that a revocation by any process
    /// applies at once.
    pub async fn authenticate_application_token(
        &self,
        token: &str,
    ) -> Result<Actor, TokenAuthError> {
        if !is_well_formed(token) {
            return Err(TokenAuthError::Invalid);
        }
        let hash = hash_token(token);
        let record = self
            .store
            .find_application_token_by_hash(&hash)
            .await
            .map_err(|error| TokenAuthError::Service(error.into()))?
            .ok_or(TokenAuthError::Invalid)?;
        // The lookup matched on an index, which may compare early-exit; this comparison keeps
        // the final decision independent of where the hashes differ.
        if !hashes_equal(&record.token_hash, &hash) {
            return Err(TokenAuthError::Invalid);
        }
        let token = record.token;
        if token.revoked_at.is_some() {
            tracing::debug!(token_id = %token.id, "revoked application token rejected");
            return Err(TokenAuthError::Revoked);
        }
        if Utc::now() >= token.expires_at {
            tracing::debug!(token_id = %token.id, "expired application token rejected");
            return Err(TokenAuthError::Expired);
        }
        Ok(Actor::new(token.actor_subject(), Role::Application))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_shape() {
        let secret = TokenSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("intg_"), "{text}");
        assert_eq!(text.len(), 48);
        assert!(is_well_formed(text));
        let decoded = URL_SAFE_NO_PAD.decode(&text[5..]).unwrap();
        assert_eq!(decoded.len(), 32);
    }

    #[test]
    fn generated_tokens_differ() {
        let first = TokenSecret::generate();
        let second = TokenSecret::generate();
        assert_ne!(first.expose(), second.expose());
        assert_ne!(first.hash(), second.hash());
    }

    #[test]
    fn debug_hides_secret() {
        let secret = TokenSecret::generate();
        let debug_text = format!("{secret:?}");
        assert!(!debug_text.contains(&secret.expose()[5..]), "{debug_text}");
        assert_eq!(debug_text, "TokenSecret(***)");
    }

    #[test]
    fn hash_is_sha256() {
        // SHA-256 of "abc" from FIPS 180-2, appendix B.1.
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_compared_fully() {
        let hash = hash_token("intg_a");
        let mut last_differs = hash;
        last_differs[31] ^= 1;
        assert!(hashes_equal(&hash, &hash));
        assert!(!hashes_equal(&hash, &last_differs));
    }

    #[test]
    fn malformed_tokens_rejected() {
        let valid = TokenSecret::generate();
        let text = valid.expose();
        let cases = [
            String::new(),
            "intg_".to_owned(),
            text[..47].to_owned(),
            format!("{text}A"),
            format!("intg_{}", "+".repeat(43)),
            text.replacen("intg_", "INTG_", 1),
        ];
        for case in cases {
            assert!(!is_well_formed(&case), "{case}");
        }
    }

    #[test]
    fn name_rules() {
        assert_eq!(validate_name("  ci  ").unwrap(), "ci");
        assert_eq!(
            validate_name(&"é".repeat(100)).unwrap().chars().count(),
            100
        );
        for bad in ["", "   ", "a\u{7}b", "line\nbreak"] {
            let Err(ServiceError::InvalidInput { field, .. }) = validate_name(bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(field, "name");
        }
        for hidden in [
            "ci\u{202E}gpj.exe",
            "c\u{200B}i",
            "\u{FEFF}ci",
            "ci\u{2066}x\u{2069}",
            "ci\u{061C}",
            "ci\u{180E}",
            "c\u{034F}i",
            "\u{3164}",
            "ci\u{FE0F}",
            "ci\u{E0001}",
            "c\u{2028}i",
            "ci\u{FFF9}",
            "ci\u{206A}",
            "ci\u{17B4}",
        ] {
            let Err(ServiceError::InvalidInput { field, message }) = validate_name(hidden) else {
                panic!("{hidden:?} accepted");
            };
            assert_eq!(field, "name");
            assert!(message.contains("bidirectional"), "{message}");
        }
        let long = validate_name(&"a".repeat(101)).unwrap_err();
        assert!(long.to_string().contains("100 characters"), "{long}");
    }

    #[test]
    fn expiry_rules() {
        assert_eq!(validate_expires_in(None).unwrap(), 30);
        assert_eq!(validate_expires_in(Some(1)).unwrap(), 1);
        assert_eq!(validate_expires_in(Some(365)).unwrap(), 365);
        for bad in [0, -1, 366, i64::MAX] {
            let Err(ServiceError::InvalidInput { field, .. }) = validate_expires_in(Some(bad))
            else {
                panic!("{bad} accepted");
            };
            assert_eq!(field, "expiresIn");
        }
    }
}
