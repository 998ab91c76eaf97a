//! Handlers of `/application-tokens`: owners create, list and revoke opaque application tokens.

use bytes::Bytes;
use integrations_core::tokens::MAX_EXPIRES_IN_DAYS;
use integrations_core::{Actor, ApplicationToken, IntegrationService};
use serde::Serialize;
use serde_json::Value;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::body;
use crate::error::ApiError;
use crate::handlers::QueryParams;

const CREATE_FIELDS: &[&str] = &["name", "expiresIn"];

/// Maximum length of a field name quoted back in an error message, in characters.
const MAX_QUOTED_NAME: usize = 64;

/// Body of `POST /application-tokens`.
#[derive(Debug, PartialEq, Eq)]
pub struct NewApplicationToken {
    /// Name of the token, validated by the service.
    pub name: String,
    /// Lifetime in days; the service applies the default when `None` and checks the range.
    pub expires_in_days: Option<i64>,
}

/// The create response: the metadata plus the secret, which no later response contains.
#[derive(Serialize)]
struct CreatedBody<'a> {
    #[serde(flatten)]
    metadata: &'a ApplicationToken,
    token: &'a str,
}

/// `POST /application-tokens`: 201 with the token, shown only in this response.
pub async fn create(
    service: &IntegrationService,
    actor: &Actor,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_new_token(&body)?;
    let created = service
        .create_application_token(actor, &request.name, request.expires_in_days)
        .await?;
    let reply = CreatedBody {
        metadata: &created.token,
        token: created.secret.expose(),
    };
    // NOTE: the serialised body contains the secret in a buffer that hyper owns once it is sent,
    // so that copy is not wiped.
    let mut response =
        warp::reply::with_status(warp::reply::json(&reply), StatusCode::CREATED).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /application-tokens`: metadata of every token, never a secret.
pub async fn list(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    if let Some(name) = query.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unknown query parameter '{}'; expected: none",
            printable(name)
        )));
    }
    let tokens = service.list_application_tokens(actor).await?;
    Ok(warp::reply::with_status(warp::reply::json(&tokens), StatusCode::OK).into_response())
}

/// `DELETE /application-tokens/{id}`: 204, also when the token was revoked before.
pub async fn revoke(
    service: &IntegrationService,
    actor: &Actor,
    id: &str,
) -> Result<Response, ApiError> {
    let id = crate::handlers::owner_target(actor, id)?;
    service.revoke_application_token(actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses the body of `POST /application-tokens`, naming the field at fault.
pub fn parse_new_token(body: &[u8]) -> Result<NewApplicationToken, ApiError> {
    let mut object = body::parse_object(body)?;
    let name = match object.remove("name").filter(|value| !value.is_null()) {
        None => return Err(ApiError::bad_request("name is required")),
        Some(Value::String(name)) => name,
        Some(_) => return Err(ApiError::bad_request("name must be a string")),
    };
    let expires_in_days = match object.remove("expiresIn").filter(|value| !value.is_null()) {
        None => None,
        Some(Value::Number(number)) if number.as_i64().is_some() => number.as_i64(),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "expiresIn must be a whole number of days from 1 to {MAX_EXPIRES_IN_DAYS}"
            )))
        }
    };
    if let Some(unknown) = object.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unknown field '{}'; expected fields: {}",
            printable(unknown),
            CREATE_FIELDS.join(", ")
        )));
    }
    Ok(NewApplicationToken {
        name,
        expires_in_days,
    })
}

/// Cuts a client-supplied name to a printable length for quoting in a message.
fn printable(name: &str) -> String {
    name.chars()
        .filter(|character| !character.is_control())
        .take(MAX_QUOTED_NAME)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> String {
        parse_new_token(body).unwrap_err().message
    }

    #[test]
    fn expires_in_defaults_to_none() {
        let parsed = parse_new_token(br#"{"name":"ci"}"#).unwrap();
        assert_eq!(parsed.expires_in_days, None);
        assert_eq!(parsed.name, "ci");
    }

    #[test]
    fn expires_in_must_be_integer() {
        for body in [
            &br#"{"name":"ci","expiresIn":1.5}"#[..],
            br#"{"name":"ci","expiresIn":"30"}"#,
            br#"{"name":"ci","expiresIn":18446744073709551615}"#,
        ] {
            assert!(message(body).starts_with("expiresIn must be"), "{body:?}");
        }
    }

    #[test]
    fn name_type_checked() {
        assert_eq!(message(br#"{"name":5}"#), "name must be a string");
        assert_eq!(message(br#"{"expiresIn":5}"#), "name is required");
    }

    #[test]
    fn unknown_field_named() {
        let text = message(br#"{"name":"ci","scope":"all"}"#);
        assert_eq!(
            text,
            "Unknown field 'scope'; expected fields: name, expiresIn"
        );
    }
}
