//! Audit events for rejected requests: 401 from the bearer token check or the service, and 403.
//!
//! Events name the route template, such as `/sfp/api/integrations/{id}`, never the raw path or
//! the query, because both can carry project names chosen by the caller. They never contain the
//! token or the Authorization header.

use integrations_core::{Actor, RequestInfo};
use warp::http::{Method, StatusCode};

use crate::auth::AuthFailure;
use crate::error::ApiError;
use crate::AppState;

/// Route template of the credentials read.
pub const CREDENTIALS_ROUTE: &str = "/sfp/api/integrations/credentials";

/// Route templates under `/sfp/api` whose paths have no parameter.
const FIXED_ROUTES: [&str; 7] = [
    "/sfp/api/integrations",
    "/sfp/api/integrations/defaults",
    CREDENTIALS_ROUTE,
    "/sfp/api/integrations/platforms/health",
    "/sfp/api/projects",
    "/sfp/api/audit",
    "/sfp/api/application-tokens",
];

/// Returns the method and route template of a request to an authenticated route.
pub fn request_info(method: &Method, path: &str) -> RequestInfo {
    RequestInfo {
        method: method.as_str().to_owned(),
        route: route_template(path).to_owned(),
    }
}

/// Maps a request path to the template of the route that matched it. Paths that match no
/// authenticated route map to `/sfp/api/{unknown}`, so a raw path never reaches an event.
pub fn route_template(path: &str) -> &'static str {
    let trimmed = path.trim_end_matches('/');
    if let Some(route) = FIXED_ROUTES.iter().find(|route| **route == trimmed) {
        return route;
    }
    if trimmed.starts_with("/sfp/api/projects/") {
        return "/sfp/api/projects/{identifier}";
    }
    if let Some(rest) = trimmed.strip_prefix("/sfp/api/application-tokens/") {
        if !rest.contains('/') {
            return "/sfp/api/application-tokens/{id}";
        }
    }
    match trimmed.strip_prefix("/sfp/api/integrations/") {
        Some(rest) if !rest.contains('/') => "/sfp/api/integrations/{id}",
        _ => "/sfp/api/{unknown}",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_hide_parameters() {
        let cases = [
            ("/sfp/api/integrations", "/sfp/api/integrations"),
            ("/sfp/api/integrations/", "/sfp/api/integrations"),
            ("/sfp/api/integrations/credentials", CREDENTIALS_ROUTE),
            (
                "/sfp/api/integrations/0d6c1f7e-0000-4000-8000-000000000000",
                "/sfp/api/integrations/{id}",
            ),
            (
                "/sfp/api/projects/owner%2Frepo",
                "/sfp/api/projects/{identifier}",
            ),
            (
                "/sfp/api/projects/owner/repo",
                "/sfp/api/projects/{identifier}",
            ),
            ("/sfp/api/audit", "/sfp/api/audit"),
            ("/sfp/api/integrations/a/b", "/sfp/api/{unknown}"),
            ("/sfp/api/application-tokens", "/sfp/api/application-tokens"),
            (
                "/sfp/api/application-tokens/0d6c1f7e-0000-4000-8000-000000000000",
                "/sfp/api/application-tokens/{id}",
            ),
            ("/sfp/api/application-tokens/a/b", "/sfp/api/{unknown}"),
        ];
        for (path, expected) in cases {
            assert_eq!(route_template(path), expected, "{path}");
        }
    }
}
