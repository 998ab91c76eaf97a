//! Plaintext credential values, kept in zeroizing memory and hidden from `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::ser::SerializeMap;
use serde::Serialize;
use zeroize::Zeroizing;

/// Error for credential JSON that is not an object of strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsFormatError {
    /// The credentials value is not a JSON object.
    #[error("credentials must be a JSON object")]
    NotAnObject,
    /// A field contains something other than a string or a number.
    #[error("credentials.{0} must be a string")]
    NotAString(String),
    /// Sealed bytes did not decode as a credentials object.
    #[error("stored credentials are not a JSON object of strings")]
    Corrupt,
}

/// Named credential values, such as `token` or `privateKey`.
///
/// Values are [`SecretString`]s: they are wiped from memory on drop, and `Debug` prints the field
/// names only. Read a value with [`Credentials::expose`], the one accessor to grep for.
#[derive(Default, Clone)]
pub struct Credentials {
    fields: BTreeMap<String, SecretString>,
}

impl Credentials {
    /// Creates an empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one field, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds or replaces one field.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields
            .insert(name.into(), SecretString::from(value.into()));
    }

    /// Returns the plaintext of one field.
    pub fn expose(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(|value| value.expose_secret())
    }

    /// Returns the field names, sorted.
    pub fn field_names(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }

    /// Iterates over field names and plaintext values, sorted by name.
    pub fn expose_all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()))
    }

    /// Reports whether a field is present.
    pub fn contains(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// Returns the number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Reports whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Builds credentials from a JSON object; numbers are kept as their decimal text because
    /// clients often send `appId` or `installationId` as numbers.
    pub fn from_json(value: serde_json::Value) -> Result<Self, CredentialsFormatError> {
        let serde_json::Value::Object(object) = value else {
            return Err(CredentialsFormatError::NotAnObject);
        };
        let mut credentials = Credentials::new();
        for (name, value) in object {
            match value {
                serde_json::Value::String(text) => credentials.insert(name, text),
                serde_json::Value::Number(number) => credentials.insert(name, number.to_string()),
                _ => return Err(CredentialsFormatError::NotAString(name)),
            }
        }
        Ok(credentials)
    }

    /// Encodes the credentials as a JSON object in a buffer that is wiped on drop.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        // serde_json writes into a growing Vec; reserving up front avoids reallocations that would
        // leave unwiped copies of the plaintext behind.
        let capacity = self
            .fields
            .iter()
            .map(|(name, value)| name.len() + value.expose_secret().len() * 6 + 8)
            .sum::<usize>()
            + 2;
        let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut *buffer, &ExposedFields(self))
            .expect("a map of strings always serialises");
        buffer
    }

    /// Decodes a buffer written by [`Credentials::to_plaintext`].
    pub fn from_plaintext(plaintext: &[u8]) -> Result<Self, CredentialsFormatError> {
        let fields: BTreeMap<String, String> =
            serde_json::from_slice(plaintext).map_err(|_| CredentialsFormatError::Corrupt)?;
        let mut credentials = Credentials::new();
        for (name, value) in fields {
            let value = Zeroizing::new(value);
            credentials.insert(name, value.as_str());
        }
        Ok(credentials)
    }

    /// Wraps the credentials so that serialising them writes the plaintext values.
    ///
    /// Use only where plaintext leaves on purpose, such as the credentials read response.
    pub fn expose_for_serialization(&self) -> ExposedFields<'_> {
        ExposedFields(self)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for name in self.fields.keys() {
            map.entry(name, &"[REDACTED]");
        }
        map.finish()
    }
}

/// Serialises credentials with their plaintext values; see
/// [`Credentials::expose_for_serialization`].
pub struct ExposedFields<'a>(&'a Credentials);

impl Serialize for ExposedFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.fields.len()))?;
        for (name, value) in &self.0.fields {
            map.serialize_entry(name, value.expose_secret())?;
        }
        map.end()
    }
}

impl fmt::Debug for ExposedFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_values() {
        let credentials = Credentials::new().with("token", "ghp_very_secret_value");
        let debug = format!("{credentials:?}");
        assert!(debug.contains("token"));
        assert!(!debug.contains("ghp_very_secret_value"));
    }

    #[test]
    fn plaintext_round_trip() {
        let credentials = Credentials::new()
            .with("token", "s3cr\"et\n")
            .with("organization_url", "https://dev.azure.com/o");
        let plaintext = credentials.to_plaintext();
        let decoded = Credentials::from_plaintext(&plaintext).unwrap();
        assert_eq!(decoded.expose("token"), Some("s3cr\"et\n"));
        assert_eq!(decoded.field_names(), vec!["organization_url", "token"]);
    }

    #[test]
    fn numbers_become_text() {
        let credentials =
            Credentials::from_json(serde_json::json!({"appId": 12345, "privateKey": "k"})).unwrap();
        assert_eq!(credentials.expose("appId"), Some("12345"));
    }

    #[test]
    fn nested_value_rejected_by_name() {
        let error = Credentials::from_json(serde_json::json!({"token": {"a": 1}})).unwrap_err();
        assert_eq!(error.to_string(), "credentials.token must be a string");
    }
}
