//! Query parameters of `GET /sfp/api/audit`.

use chrono::{DateTime, Utc};
use integrations_core::model::project_key;
use integrations_core::{AuditAction, AuditQuery};
use uuid::Uuid;

use crate::error::ApiError;
use integrations_core::service::MAX_AUDIT_PAGE;

use crate::handlers::{Query, QueryParams, DEFAULT_AUDIT_LIMIT};

/// Every parameter the audit route accepts.
const PARAMETERS: [&str; 8] = [
    "offset",
    "limit",
    "from",
    "to",
    "actor",
    "action",
    "integration",
    "project",
];

/// Parses the audit route's query string, naming the parameter at fault in a 400 error.
pub fn parse(params: QueryParams) -> Result<AuditQuery, ApiError> {
    let mut query = Query::new(params);
    let offset = query.take_u64("offset")?.unwrap_or(0);
    let limit = query.take_u64("limit")?.unwrap_or(DEFAULT_AUDIT_LIMIT);
    // A silently shortened page would make a client that pages by its own limit skip events.
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "query parameter limit must be between 1 and {MAX_AUDIT_PAGE}"
        )));
    }
    let from = query
        .take("from")?
        .map(|value| parse_time("from", &value))
        .transpose()?;
    let to = query
        .take("to")?
        .map(|value| parse_time("to", &value))
        .transpose()?;
    let actor = query.take("actor")?;
    let action = query
        .take("action")?
        .map(|value| parse_action(&value))
        .transpose()?;
    let integration = query
        .take("integration")?
        .map(|value| {
            Uuid::parse_str(value.trim())
                .map_err(|_| ApiError::bad_request("query parameter integration must be a UUID"))
        })
        .transpose()?;
    let project = query.take("project")?;
    query.finish(&PARAMETERS)?;

    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::bad_request(
                "query parameter from must not be later than to",
            ));
        }
    }
    Ok(AuditQuery {
        from,
        to,
        actor,
        action,
        integration,
        project_key: project.as_deref().map(project_key),
        offset,
        limit,
    })
}

fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {name} must be an RFC 3339 time, such as 2024-05-01T12:00:00Z"
            ))
        })
}

fn parse_action(value: &str) -> Result<AuditAction, ApiError> {
    value.trim().parse().map_err(|_| {
        let valid: Vec<&str> = AuditAction::ALL
            .iter()
            .map(|action| action.as_str())
            .collect();
        ApiError::bad_request(format!(
            "query parameter action must be one of: {}",
            valid.join(", ")
        ))
    })
}
