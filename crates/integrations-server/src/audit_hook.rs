//! Audit events for rejected requests: 401 from the bearer token check or the service, and 403.
//!
//! Events name the route template, such as `/sfp/api/integrations/{id}`, never the raw path or
//! the query, because both can carry project names chosen by the caller. They never contain the
//! token or the Authorization header.

use integrations_core::{Actor, RequestInfo};
use warp::http::StatusCode;

use crate::auth::AuthFailure;
use crate::error::ApiError;
use crate::AppState;

/// Audits a request whose bearer token was missing or invalid. The token is never decoded
/// further than the verifier did, so the event's subject is `anonymous`.
pub async fn authentication_failed(state: &AppState, request: &RequestInfo, failure: AuthFailure) {
    state
        .service
        .audit_authentication_failure(None, failure.reason(), request)
        .await;
}

/// Audits a handler's 403, and a 401 the service returned for a verified caller.
pub async fn request_failed(
    state: &AppState,
    actor: &Actor,
    request: &RequestInfo,
    error: &ApiError,
) {
    if error.status == StatusCode::FORBIDDEN {
        state.service.audit_access_denied(actor, request).await;
    } else if error.status == StatusCode::UNAUTHORIZED {
        state
            .service
            .audit_authentication_failure(Some(actor), "role_not_permitted", request)
            .await;
    }
}
