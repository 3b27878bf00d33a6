//! The HTTP routes: the actuator endpoints (open), login, and the catalogue API (behind a bearer
//! token), on one shared state.

mod actuator;
mod api;
mod auth;
pub mod client;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use ipnet::IpNet;
use sqlx::PgPool;

use crate::auth::Auth;
use crate::config::Profile;
use crate::error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub profile: Profile,
    pub show_health_details: bool,
    pub health_timeout: Duration,
    pub auth: Arc<Auth>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[IpNet]>,
}

/// The whole service as a router, so tests can call it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/actuator/health", get(actuator::health))
        .route("/actuator/health/liveness", get(actuator::liveness))
        .route("/actuator/health/readiness", get(actuator::readiness))
        .route("/actuator/info", get(actuator::info))
        .route(
            "/api/v1/auth/login",
            post(auth::login).layer(DefaultBodyLimit::max(auth::LOGIN_BODY_LIMIT)),
        )
        .merge(
            Router::new()
                .route("/api/v1/auth/logout", post(auth::logout))
                .route("/api/v1/products/{sku}", get(api::product))
                .route("/api/v1/checkout/dry-run", post(api::checkout_dry_run))
                .route_layer(from_fn_with_state(state.clone(), auth::require_token)),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .with_state(state)
}
