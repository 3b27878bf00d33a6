//! The HTTP routes: the actuator endpoints (open, metrics included), login, and the catalogue
//! API (behind a bearer token), on one shared state, every request measured.

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

use crate::auth::Auth;
use crate::config::Profile;
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::{self, Metrics};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    /// Whether requests are measured and `/actuator/prometheus` serves them
    /// (`SAULPOS_METRICS_ENABLED`).
    pub metrics_enabled: bool,
    pub profile: Profile,
    pub show_health_details: bool,
    pub health_timeout: Duration,
    pub auth: Arc<Auth>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[IpNet]>,
}

/// The whole service as a router, so tests can call it without a socket.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
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
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) });
    if state.metrics_enabled {
        router = router
            .route("/actuator/prometheus", get(actuator::prometheus))
            .layer(from_fn_with_state(
                Arc::clone(&state.metrics),
                metrics::http::track,
            ));
    }
    router.with_state(state)
}

/// The state of a server on `pool` with the configuration's settings, its metrics registered.
pub fn state(pool: sqlx::PgPool, config: &crate::config::Config, auth: Arc<Auth>) -> AppState {
    let metrics = Arc::new(Metrics::new(config.profile.as_str(), &pool));
    AppState {
        db: Db::new(pool, metrics.acquire.clone()),
        metrics,
        metrics_enabled: config.metrics_enabled,
        profile: config.profile,
        show_health_details: config.show_health_details,
        health_timeout: config.database.health_timeout,
        auth,
        trusted_proxies: config.server.trusted_proxies.clone().into(),
    }
}
