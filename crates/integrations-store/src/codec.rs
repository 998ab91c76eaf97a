//! Text encodings shared by the SQL stores: JSON columns, enum names and SQLite timestamps.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use integrations_core::StoreError;
use uuid::Uuid;

/// Configuration as stored: a JSON object.
pub(crate) type Config = serde_json::Map<String, serde_json::Value>;

/// Encodes a value for a JSON text column.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Maps with string keys, strings and ids always serialize.
    serde_json::to_string(value).expect("JSON column value serializes")
}

/// Decodes a JSON text column. `column` names the column in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    column: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("column {column} is not valid JSON: {error}")))
}

/// Parses an enum wire name stored in `column`.
pub(crate) fn parse_name<T: FromStr>(column: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error| StoreError::Corrupt(format!("column {column}: {error}")))
}

/// Parses an id stored as text in `column`.
pub(crate) fn parse_uuid(column: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text)
        .map_err(|error| StoreError::Corrupt(format!("column {column} is not a UUID: {error}")))
}

/// Formats a time as fixed-width RFC 3339 in UTC with nanoseconds, so that text order is time
/// order for years 0 to 9999.
pub(crate) fn time_to_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses a time written by [`time_to_text`].
pub(crate) fn time_from_text(column: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt(format!("column {column} is not RFC 3339: {error}")))
}

/// Decodes the `audit_events.count` column, which the stores write from a `u64`.
pub(crate) fn count_from_column(count: i64) -> Result<u64, StoreError> {
    u64::try_from(count)
        .map_err(|_| StoreError::Corrupt(format!("column audit_events.count is negative: {count}")))
}

/// Filters of an audit event as stored.
pub(crate) type Filters = BTreeMap<String, String>;

/// Removes repeated project keys, keeping the first occurrence of each.
pub(crate) fn unique_keys(project_keys: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(project_keys.len());
    for key in project_keys {
        if !unique.contains(key) {
            unique.push(key.clone());
        }
    }
    unique
}

/// Returns the first requested key that is not among the `existing` ones.
pub(crate) fn first_missing(requested: &[String], existing: &[String]) -> Option<String> {
    requested
        .iter()
        .find(|key| !existing.contains(key))
        .cloned()
}

/// Converts a stored token hash, which must have 32 bytes, from `column`.
pub(crate) fn token_hash(column: &str, bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    let length = bytes.len();
    bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "column {column} has {length} bytes, expected a 32-byte SHA-256 hash"
        ))
    })
}
