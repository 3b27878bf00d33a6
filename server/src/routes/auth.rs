//! `/api/v1/auth/login` and `/logout`, and the bearer-token check in front of the rest of
//! `/api/v1`.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::auth::{password, tokens, users};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

/// Wrong user or wrong password: the same status, body and header for both.
fn unauthorized(message: &str) -> Response {
    let body = json!({ "error": { "code": "unauthorized", "message": message } });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn client_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let client = client_of(&request);
    let body: Bytes = match axum::body::to_bytes(request.into_body(), 16 * 1024).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::BadRequest(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is too large".to_owned(),
            )
            .into_response();
        }
    };
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return ApiError::BadRequest(
            StatusCode::BAD_REQUEST,
            "send {\"username\": \"...\", \"password\": \"...\"} as JSON".to_owned(),
        )
        .into_response();
    };
    let auth = &state.auth;
    if let Some(wait) = auth.lockout.wait(&login.username, client) {
        let seconds = wait.as_secs().max(1);
        let body = json!({ "error": {
            "code": "too_many_attempts",
            "message": format!("too many failed logins; try again in {seconds} s"),
        }});
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.to_string()).expect("digits"),
        );
        return response;
    }
    let stored = match users::find(&state.pool, &login.username).await {
        Ok(stored) => stored,
        Err(error) => return ApiError::from(error).into_response(),
    };
    // An unknown user is checked against a dummy hash, so both cases cost one Argon2 run.
    let hash = stored.as_ref().map(|user| user.password_hash.clone());
    let password_text = login.password;
    let shared = state.auth.clone();
    let matches = tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| shared.dummy_hash());
        password::verify(&password_text, hash)
    })
    .await
    .unwrap_or(false);
    let user = match stored {
        Some(user) if matches && !user.disabled => user,
        _ => {
            if auth.lockout.fail(&login.username, client) {
                tracing::warn!(
                    username = %login.username,
                    client = ?client,
                    "logins locked for {} s after repeated failures",
                    auth.lockout_seconds()
                );
            }
            return unauthorized("wrong username or password");
        }
    };
    auth.lockout.succeed(&login.username, client);
    match tokens::issue(&state.pool, user.id, auth.token_ttl).await {
        Ok(issued) => {
            tracing::info!(username = %login.username, "login");
            Json(json!({
                "token": issued.token,
                "tokenType": "Bearer",
                "expiresAt": issued.expires_at,
                "expiresIn": auth.token_ttl.as_secs(),
                "username": login.username,
                "role": user.role,
            }))
            .into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized("send Authorization: Bearer <token>");
    };
    state.auth.tokens.forget(token);
    match tokens::revoke(&state.pool, token).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => unauthorized("the token is unknown or expired; log in again"),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Lets a request through only with a valid bearer token; its holder goes into the request.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(request.headers()) else {
        return unauthorized(
            "log in first: POST /api/v1/auth/login, then send Authorization: Bearer <token>",
        );
    };
    match state.auth.tokens.check(&state.pool, token).await {
        Ok(Some(holder)) => {
            request.extensions_mut().insert(holder);
            next.run(request).await
        }
        Ok(None) => unauthorized("the token is unknown or expired; log in again"),
        Err(error) => ApiError::from(error).into_response(),
    }
}
