//! Route handlers: each parses its input, calls the service once and builds the reply.

use std::collections::BTreeMap;

use bytes::Bytes;
use integrations_core::{
    Actor, CredentialFilter, CredentialRecord, Integration, IntegrationService, RequestInfo,
};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::body;
use crate::error::ApiError;

/// Default page size of the audit log.
pub const DEFAULT_AUDIT_LIMIT: u64 = 100;

/// Query parameters of a request; `api::query` rejects a parameter given twice.
pub type QueryParams = BTreeMap<String, String>;

/// `GET /health`: 200 while the database responds, 503 otherwise. Calls no external platform.
pub async fn readiness(service: &IntegrationService) -> Response {
    match service.readiness().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "unavailable"}),
            )
        }
    }
}

/// `GET /integrations`.
pub async fn list_integrations(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let mut query = Query::new(query);
    let provider = query.take("provider")?;
    query.finish(&["provider"])?;
    let provider = provider.as_deref().map(body::parse_provider).transpose()?;

    let integrations = service.list_integrations(actor, provider).await?;
    Ok(json(StatusCode::OK, &integrations))
}

/// `GET /integrations/defaults`.
pub async fn list_defaults(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    Query::new(query).finish(&[])?;
    let integrations = service.list_defaults(actor).await?;
    Ok(json(StatusCode::OK, &integrations))
}

/// `POST /integrations`.
pub async fn create_integration(
    service: &IntegrationService,
    actor: &Actor,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = body::parse_new_integration(&body)?;
    let created = service.create_integration(actor, request).await?;
    Ok(json(StatusCode::CREATED, &created))
}

/// `PATCH /integrations/{id}`.
pub async fn update_integration(
    service: &IntegrationService,
    actor: &Actor,
    id: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = owner_target(actor, id)?;
    let update = body::parse_integration_update(&body)?;
    let updated = service.update_integration(actor, id, update).await?;
    Ok(json(StatusCode::OK, &updated))
}

/// `DELETE /integrations/{id}`.
pub async fn delete_integration(
    service: &IntegrationService,
    actor: &Actor,
    id: &str,
) -> Result<Response, ApiError> {
    let id = owner_target(actor, id)?;
    service.delete_integration(actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /integrations/credentials`: decrypted credentials in the shape sfp clients read.
pub async fn read_credentials(
    service: &IntegrationService,
    actor: &Actor,
    request: &RequestInfo,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let mut query = Query::new(query);
    let provider = query.take("provider")?;
    let project = query.take("project")?;
    query.finish(&["provider", "project"])?;
    let filter = CredentialFilter {
        provider: provider.as_deref().map(body::parse_provider).transpose()?,
        project,
    };

    let records = service
        .read_credentials_for(actor, filter, Some(request))
        .await?;
    let entries: Vec<CredentialEntry<'_>> = records.iter().map(CredentialEntry::from).collect();
    // NOTE: the serialised response contains plaintext credentials in an ordinary buffer that
    // hyper owns once it is sent, so it is not wiped after the write.
    let mut response = json(StatusCode::OK, &entries);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /integrations/platforms/health`.
pub async fn platform_health(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let mut query = Query::new(query);
    let project = query.take("project")?;
    query.finish(&["project"])?;

    let report = service.platform_health(actor, project.as_deref()).await?;
    Ok(json(StatusCode::OK, &report))
}

/// `POST /projects`.
pub async fn create_project(
    service: &IntegrationService,
    actor: &Actor,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = body::parse_new_project(&body)?;
    let project = service.create_project(actor, request).await?;
    Ok(json(StatusCode::CREATED, &project))
}

/// `GET /projects`.
pub async fn list_projects(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    Query::new(query).finish(&[])?;
    let projects = service.list_projects(actor).await?;
    Ok(json(StatusCode::OK, &projects))
}

/// `GET /projects/{identifier}`; `identifier` is already percent-decoded.
pub async fn find_project(
    service: &IntegrationService,
    actor: &Actor,
    identifier: &str,
) -> Result<Response, ApiError> {
    let project = service.find_project(actor, identifier).await?;
    Ok(json(StatusCode::OK, &project))
}

/// `DELETE /projects/{identifier}`; `identifier` is already percent-decoded.
pub async fn delete_project(
    service: &IntegrationService,
    actor: &Actor,
    identifier: &str,
) -> Result<Response, ApiError> {
    service.delete_project(actor, identifier).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /audit?offset=&limit=&from=&to=&actor=&action=&integration=&project=`: audit events,
/// newest first.
pub async fn list_audit(
    service: &IntegrationService,
    actor: &Actor,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let query = crate::audit_query::parse(query)?;
    let events = service.search_audit(actor, query).await?;
    Ok(json(StatusCode::OK, &events))
}

/// One entry of the credentials read, with the field names sfp clients expect.
#[derive(Serialize)]
struct CredentialEntry<'a> {
    integration_id: Uuid,
    provider: &'static str,
    auth_type: &'static str,
    credentials: integrations_core::credentials::ExposedFields<'a>,
    is_global: bool,
    is_default: bool,
    projects: &'a [String],
    config: &'a Map<String, Value>,
}

impl<'a> From<&'a CredentialRecord> for CredentialEntry<'a> {
    fn from(record: &'a CredentialRecord) -> Self {
        let integration: &'a Integration = &record.integration;
        Self {
            integration_id: integration.id,
            provider: integration.provider.as_str(),
            auth_type: integration.auth_type.as_str(),
            credentials: record.credentials.expose_for_serialization(),
            is_global: integration.is_global,
            is_default: integration.is_default,
            projects: &integration.projects,
            config: &integration.config,
        }
    }
}

/// Parses the id of an owner-only route after checking the role, so a caller without the role
/// gets 403 whatever id it sends, and the denial is audited like any other.
pub(crate) fn owner_target(actor: &Actor, id: &str) -> Result<Uuid, ApiError> {
    integrations_core::service::require_owner(actor)?;
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request("id must be a UUID"))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// Query parameters consumed one by one; anything left over is an unknown parameter.
pub(crate) struct Query {
    params: QueryParams,
}

impl Query {
    pub(crate) fn new(params: QueryParams) -> Self {
        Self { params }
    }

    pub(crate) fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.params.remove(name) {
            Some(value) if value.trim().is_empty() => Err(ApiError::bad_request(format!(
                "query parameter {name} must not be empty"
            ))),
            other => Ok(other),
        }
    }

    pub(crate) fn take_u64(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        self.take(name)?
            .map(|value| {
                value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {name} must be a non-negative integer"
                    ))
                })
            })
            .transpose()
    }

    pub(crate) fn finish(self, expected: &[&str]) -> Result<(), ApiError> {
        let Some(name) = self.params.keys().next() else {
            return Ok(());
        };
        let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        let expected = if expected.is_empty() {
            "none".to_owned()
        } else {
            expected.join(", ")
        };
        Err(ApiError::bad_request(format!(
            "Unknown query parameter '{name}'; expected: {expected}"
        )))
    }
}
