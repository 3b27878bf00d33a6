//! The one error type of the HTTP API: each variant is a status and a JSON body.
//!
//! A 500 is logged in full and tells the client nothing internal.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    /// The request was understood but cannot be honoured (unknown SKU, bad quantity).
    Unprocessable(String),
    /// The request could not be read (malformed JSON, wrong content type).
    BadRequest(StatusCode, String),
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Unprocessable(message) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
            }
            ApiError::BadRequest(status, message) => (status, "bad_request", message),
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
        (status, Json(body)).into_response()
    }
}
