//! Request bodies: reading them with a size limit, parsing JSON and turning it into the service's
//! request types with messages that name the field at fault.
//!
//! Messages are built here from the field name and the kind of problem, never from serde's text,
//! because serde quotes input values and a value under `credentials` is a secret.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use integrations_core::credentials::CredentialsFormatError;
use integrations_core::{
    AuthType, Credentials, IntegrationUpdate, NewIntegration, NewProject, Platform, Provider,
};
use serde_json::{Map, Value};
use warp::http::StatusCode;

use crate::error::ApiError;

/// Maximum accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

const CREATE_FIELDS: &[&str] = &[
    "provider",
    "authType",
    "credentials",
    "projects",
    "isGlobal",
    "isDefault",
    "config",
];
const UPDATE_FIELDS: &[&str] = &["credentials", "config", "isDefault"];
const IMMUTABLE_FIELDS: &[&str] = &["provider", "authType", "projects", "isGlobal"];
const PROJECT_FIELDS: &[&str] = &["identifier", "remoteUrl", "platform"];

/// Maximum length of a field name quoted back in an error message, in characters.
const MAX_QUOTED_NAME: usize = 64;

/// Reads a body stream, rejecting it with 413 as soon as it passes [`MAX_BODY_BYTES`].
pub async fn read_limited<S, B>(content_length: Option<u64>, stream: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if content_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|error| {
            tracing::debug!(error = %error, "request body could not be read");
            ApiError::bad_request("Request body could not be read")
        })?;
        if body.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let length = part.len();
            body.extend_from_slice(part);
            chunk.advance(length);
        }
    }
    Ok(body.freeze())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
    )
}

/// Parses a body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Request body is required: send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "Request body is not valid JSON: {} at line {}, column {}",
            describe_json_error(&error),
            error.line(),
            error.column()
        ))
    })?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

fn describe_json_error(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Io => "read error",
    }
}

/// Parses the body of `POST /integrations`.
pub fn parse_new_integration(body: &[u8]) -> Result<NewIntegration, ApiError> {
    let mut fields = Fields::new(parse_object(body)?);
    let provider = fields.required_string("provider")?;
    let auth_type = fields.required_string("authType")?;
    let credentials = fields.required("credentials")?;
    let projects = fields.optional_string_array("projects")?;
    let is_global = fields.optional_bool("isGlobal")?;
    let is_default = fields.optional_bool("isDefault")?;
    let config = fields.optional_object("config")?;
    fields.finish(CREATE_FIELDS)?;

    Ok(NewIntegration {
        provider: parse_provider(&provider)?,
        auth_type: parse_auth_type(&auth_type)?,
        credentials: parse_credentials(credentials)?,
        projects,
        is_global,
        is_default: is_default.unwrap_or(false),
        config: config.unwrap_or_default(),
    })
}

/// Parses the body of `PATCH /integrations/{id}`. Fields fixed at creation are rejected by name
/// before any other check.
pub fn parse_integration_update(body: &[u8]) -> Result<IntegrationUpdate, ApiError> {
    let object = parse_object(body)?;
    if let Some(field) = IMMUTABLE_FIELDS
        .iter()
        .find(|name| object.contains_key(**name))
    {
        return Err(ApiError::bad_request(format!(
            "{field} cannot be changed after creation; updatable fields: {}",
            UPDATE_FIELDS.join(", ")
        )));
    }
    let mut fields = Fields::new(object);
    let credentials = fields.optional("credentials");
    let config = fields.optional_object("config")?;
    let is_default = fields.optional_bool("isDefault")?;
    fields.finish(UPDATE_FIELDS)?;

    Ok(IntegrationUpdate {
        credentials: credentials.map(parse_credentials).transpose()?,
        config,
        is_default,
    })
}

/// Parses the body of `POST /projects`.
pub fn parse_new_project(body: &[u8]) -> Result<NewProject, ApiError> {
    let mut fields = Fields::new(parse_object(body)?);
    let identifier = fields.required_string("identifier")?;
    let remote_url = fields.required_string("remoteUrl")?;
    let platform = fields.optional_string("platform")?;
    fields.finish(PROJECT_FIELDS)?;

    let platform = platform
        .map(|name| name.parse::<Platform>())
        .transpose()
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(NewProject {
        identifier,
        remote_url,
        platform,
    })
}

/// Parses a provider name, listing the accepted names on error.
pub fn parse_provider(name: &str) -> Result<Provider, ApiError> {
    name.parse::<Provider>()
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

fn parse_auth_type(name: &str) -> Result<AuthType, ApiError> {
    name.parse::<AuthType>()
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

fn parse_credentials(value: Value) -> Result<Credentials, ApiError> {
    Credentials::from_json(value).map_err(|error| {
        let message = match error {
            CredentialsFormatError::NotAnObject => "credentials must be a JSON object".to_owned(),
            CredentialsFormatError::NotAString(name) => {
                format!("credentials.{} must be a string", quoted_name(&name))
            }
            _ => "credentials must be a JSON object of strings".to_owned(),
        };
        ApiError::bad_request(message)
    })
}

/// Cuts a client-supplied field name to a printable length.
fn quoted_name(name: &str) -> String {
    name.chars()
        .filter(|character| !character.is_control())
        .take(MAX_QUOTED_NAME)
        .collect()
}

/// Takes typed fields out of a JSON object; `null` counts as absent.
struct Fields {
    object: Map<String, Value>,
}

impl Fields {
    fn new(object: Map<String, Value>) -> Self {
        Self { object }
    }

    fn optional(&mut self, name: &str) -> Option<Value> {
        self.object.remove(name).filter(|value| !value.is_null())
    }

    fn required(&mut self, name: &str) -> Result<Value, ApiError> {
        self.optional(name)
            .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
    }

    fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        match self.required(name)? {
            Value::String(text) => Ok(text),
            _ => Err(ApiError::bad_request(format!("{name} must be a string"))),
        }
    }

    fn optional_string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        }
    }

    fn optional_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(flag)),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be a boolean"))),
        }
    }

    fn optional_object(&mut self, name: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} must be a JSON object"
            ))),
        }
    }

    fn optional_string_array(&mut self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(value) = self.optional(name) else {
            return Ok(None);
        };
        let not_strings = || ApiError::bad_request(format!("{name} must be an array of strings"));
        let Value::Array(items) = value else {
            return Err(not_strings());
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(not_strings()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Rejects any field that no `take` call consumed.
    fn finish(self, expected: &[&str]) -> Result<(), ApiError> {
        match self.object.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::bad_request(format!(
                "Unknown field '{}'; expected fields: {}",
                quoted_name(name),
                expected.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.unwrap_err().message
    }

    #[test]
    fn wrong_type_named() {
        let body = br#"{"provider":"github","authType":"pat","credentials":{"token":"t"},"isGlobal":"yes"}"#;
        assert_eq!(
            message(parse_new_integration(body)),
            "isGlobal must be a boolean"
        );
    }

    #[test]
    fn immutable_field_first() {
        let body = br#"{"provider":"jira","bogus":1}"#;
        assert!(message(parse_integration_update(body))
            .starts_with("provider cannot be changed after creation"));
    }

    #[test]
    fn unknown_field_listed() {
        let body = br#"{"identifier":"a/b","remoteUrl":"https://github.com/a/b","extra":true}"#;
        assert!(message(parse_new_project(body)).contains("Unknown field 'extra'"));
    }

    #[test]
    fn credential_value_not_echoed() {
        let body = br#"{"provider":"github","authType":"pat","credentials":{"token":["ghp_secret_value"]},"isGlobal":true}"#;
        let text = message(parse_new_integration(body));
        assert!(!text.contains("ghp_secret_value"), "{text}");
        assert_eq!(text, "credentials.token must be a string");
    }

    #[test]
    fn syntax_error_not_echoed() {
        let body = br#"{"credentials":{"token":"ghp_secret_value" x}}"#;
        let text = message(parse_object(body));
        assert!(!text.contains("ghp_secret_value"), "{text}");
    }

    #[test]
    fn empty_body_rejected() {
        assert!(message(parse_object(b"  ")).contains("required"));
    }

    #[test]
    fn array_body_rejected() {
        assert_eq!(
            message(parse_object(b"[]")),
            "Request body must be a JSON object"
        );
    }
}
