//! The one error type of the HTTP API: each variant is a status and a JSON body.
//!
//! A 500 is logged in full and tells the client nothing internal.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    /// The request was understood but cannot be honoured (unknown SKU, bad quantity).
    Unprocessable(String),
    /// The request could not be read (malformed JSON, wrong content type, a body too large).
    BadRequest(StatusCode, String),
    /// No valid credentials: 401 with `WWW-Authenticate: Bearer`, the same for every cause.
    Unauthorized(String),
    /// Too many failed logins: 429 with `Retry-After`.
    TooManyAttempts {
        retry_after: Duration,
    },
    /// The server is too busy for this request now: 503 with `Retry-After`.
    Busy {
        what: &'static str,
        retry_after: Duration,
    },
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.status(), rejection.body_text())
    }
}

/// Whole seconds for `Retry-After`, at least 1.
fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers = Vec::new();
        let (status, code, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Unprocessable(message) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
            }
            ApiError::BadRequest(status, message) => (status, "bad_request", message),
            ApiError::Unauthorized(message) => {
                headers.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
                (StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            ApiError::TooManyAttempts { retry_after } => {
                let seconds = seconds(retry_after);
                headers.push((header::RETRY_AFTER, HeaderValue::from(seconds)));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed logins; try again in {seconds} s"),
                )
            }
            ApiError::Busy { what, retry_after } => {
                let seconds = seconds(retry_after);
                headers.push((header::RETRY_AFTER, HeaderValue::from(seconds)));
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!("the server is busy with other {what}; try again in {seconds} s"),
                )
            }
            ApiError::Internal(error) => {
                tracing::error!("request failed: {error:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details".to_owned(),
                )
            }
        };
        let body = json!({ "error": { "code": code, "message": message } });
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().extend(headers);
        response
    }
}
