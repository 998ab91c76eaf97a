//! Values shared by the probes: secret tokens and failure messages.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::http::CallError;

/// A token or JWT: compared by value, wiped on drop, hidden from `Debug`.
#[derive(Clone)]
pub(crate) struct SecretToken(Arc<Zeroizing<String>>);

impl SecretToken {
    pub(crate) fn new(value: String) -> Self {
        Self(Arc::new(Zeroizing::new(value)))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for SecretToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken([REDACTED])")
    }
}

/// Why a check failed: a message for the operator, built without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(pub(crate) String);

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        Failure(error.message())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hidden() {
        let token = SecretToken::new("ghs_secret".to_owned());
        assert!(!format!("{token:?}").contains("ghs_secret"));
    }
}
