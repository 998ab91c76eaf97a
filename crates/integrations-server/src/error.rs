//! The JSON error body and the mapping of service errors and warp rejections onto it.

use std::convert::Infallible;

use integrations_core::ServiceError;
use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reject::Reject;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::auth::AuthFailure;

/// Message of every 500 response; the detail goes to the log.
pub const INTERNAL_ERROR_MESSAGE: &str = "Internal server error";

/// An error response: `{"statusCode", "message", "error"}` with the status's reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the caller. Never contains a credential value.
    pub message: String,
}

impl Reject for ApiError {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status_code: u16,
    message: &'a str,
    error: &'a str,
}

impl ApiError {
    /// Creates an error with a status and a caller-facing message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Creates a 400 error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Creates the 401 error for an authentication failure.
    pub fn unauthorized(failure: AuthFailure) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, failure.message())
    }

    /// Builds the JSON response, with `WWW-Authenticate` on 401.
    pub fn to_response(&self) -> Response {
        let body = ErrorBody {
            status_code: self.status.as_u16(),
            message: &self.message,
            error: self.status.canonical_reason().unwrap_or("Error"),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Unauthenticated(message) => Self::new(StatusCode::UNAUTHORIZED, message),
            ServiceError::Forbidden(message) => Self::new(StatusCode::FORBIDDEN, message),
            ServiceError::InvalidInput { message, .. } => Self::bad_request(message),
            ServiceError::NotFound(message) => Self::new(StatusCode::NOT_FOUND, message),
            ServiceError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            ServiceError::Unavailable(message) => {
                tracing::error!(error = %message, "request failed: service unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable: the database or audit log cannot be reached; retry later",
                )
            }
            ServiceError::KeysUnavailable(message) => {
                tracing::error!(error = %message, "request failed: encryption keys unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Encryption keys unavailable: this server cannot open the current data key; if the master key was changed, restart the server with the new master key",
                )
            }
            ServiceError::Internal(message) => {
                tracing::error!(error = %message, "request failed: internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_MESSAGE)
            }
            other => {
                tracing::error!(error = %other, "request failed: unmapped service error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_MESSAGE)
            }
        }
    }
}

/// Turns every rejection into a JSON error response, so no warp default text body is ever sent.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(rejection_to_error(&rejection).to_response())
}

fn rejection_to_error(rejection: &Rejection) -> ApiError {
    if let Some(error) = rejection.find::<ApiError>() {
        return error.clone();
    }

    if rejection.is_not_found() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "Route not found; the API routes are under /sfp/api, and GET /health reports readiness",
        );
    }

    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed on this route",
        );
    }

    if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        return ApiError::bad_request("Invalid query string");
    }

    if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
    {
        return ApiError::bad_request("Invalid request header");
    }

    if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large");
    }

    if rejection.find::<warp::reject::LengthRequired>().is_some() {
        return ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "Content-Length header is required",
        );
    }

    if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type; send application/json",
        );
    }
    tracing::error!(rejection = ?rejection, "request failed: unhandled rejection");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_MESSAGE)
}
