//! `/api/v1/auth/login` and `/logout`, and the bearer-token check in front of the rest of
//! `/api/v1`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::client::Client;
use crate::auth::throttle::Reserved;
use crate::auth::{password, tokens, users};
use crate::error::ApiError;
use crate::metrics::LoginOutcome;

/// The largest login body read (axum's `DefaultBodyLimit` on the route).
pub const LOGIN_BODY_LIMIT: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// Wrong user or wrong password: the same status, body and header for both.
fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_owned())
}

/// Refuses a value holding NUL or another control character (PostgreSQL cannot store a NUL, and
/// a newline would forge a log line).
pub fn plain_text(what: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            StatusCode::BAD_REQUEST,
            format!("the {what} holds a control character (NUL, newline, ...); send it without"),
        ));
    }
    Ok(())
}

pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    login: Result<Json<Login>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(login) = login?;
    plain_text("username", &login.username)?;
    let auth = &state.auth;
    // The hash slot first: at most so many hashes (and their memory) at once.
    let Some(slot) = auth.hashing.slot().await else {
        state.metrics.login(LoginOutcome::busy);
        return Err(ApiError::Busy {
            what: "logins",
            retry_after: std::time::Duration::from_secs(1),
        });
    };
    // The attempt is counted before the password is checked, so parallel attempts cannot get
    // past the limit.
    // One connection for the reads before the hash, given back while it runs.
    let mut connection = state.db.acquire().await?;
    let throttled = match auth
        .throttle
        .reserve(&mut connection, &login.username, client)
        .await?
    {
        Reserved::Wait(retry_after) => {
            state.metrics.login(LoginOutcome::throttled);
            return Err(ApiError::TooManyAttempts { retry_after });
        }
        Reserved::Go { throttled } => throttled,
    };
    let stored = users::find(&mut connection, &login.username).await?;
    drop(connection);
    // An unknown user is checked against a dummy hash, so both cases cost one Argon2 run.
    let hash = stored.as_ref().map(|user| user.password_hash.clone());
    let password_text = login.password;
    let shared = state.auth.clone();
    let (matches, rehashed) = slot
        .run(move || {
            let checked = hash.as_deref().unwrap_or_else(|| shared.dummy_hash());
            let matches = password::verify(&password_text, checked);
            // A hash made with another cost is made again now that the password is known.
            let rehashed = match &hash {
                Some(hash) if matches && shared.hasher.is_outdated(hash) => {
                    shared.hasher.hash(&password_text).ok()
                }
                _ => None,
            };
            (matches, rehashed)
        })
        .await;
    let user = match stored {
        Some(user) if matches && !user.disabled => user,
        _ => {
            state.metrics.login(LoginOutcome::failure);
            if throttled {
                state.metrics.lockout();
                tracing::warn!(
                    username = ?login.username,
                    client = ?client,
                    "logins of this user from this address now wait after repeated failures"
                );
            }
            return Err(unauthorized("wrong username or password"));
        }
    };
    let mut connection = state.db.acquire().await?;
    auth.throttle
        .succeeded(&mut connection, &login.username, client)
        .await?;
    if let Some(new_hash) = rehashed {
        users::rehash(&mut connection, user.id, &user.password_hash, &new_hash).await?;
        tracing::info!(username = ?login.username, "password hash made again at the current cost");
    }
    let issued = tokens::issue(&mut connection, user.id, auth.token_ttl).await?;
    state.metrics.login(LoginOutcome::success);
    tracing::info!(username = ?login.username, "login");
    Ok(Json(json!({
        "token": issued.token,
        "tokenType": "Bearer",
        "expiresAt": issued.expires_at,
        "expiresIn": auth.token_ttl.as_secs(),
        "username": login.username,
        "role": user.role,
    })))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token =
        bearer(&headers).ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
    // Revoked first, then forgotten: a check in flight cannot cache it again.
    let revoked = match state.db.acquire().await {
        Ok(mut connection) => tokens::revoke(&mut connection, token).await,
        Err(error) => Err(error),
    };
    state.auth.tokens.forget(token);
    if revoked? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unauthorized(
            "the token is unknown or expired; log in again",
        ))
    }
}

/// Lets a request through only with a valid bearer token; its holder goes into the request.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(request.headers()).ok_or_else(|| {
        unauthorized(
            "log in first: POST /api/v1/auth/login, then send Authorization: Bearer <token>",
        )
    })?;
    match state.auth.tokens.check(&state.db, token).await? {
        Some(holder) => {
            request.extensions_mut().insert(holder);
            Ok(next.run(request).await)
        }
        None => Err(unauthorized(
            "the token is unknown or expired; log in again",
        )),
    }
}
