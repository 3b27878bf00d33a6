//! `/actuator/*`: health (aggregated, with a bounded database check), liveness, readiness, info,
//! and the Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use crate::build_info;
use crate::db;
use crate::metrics::Format;

/// All components; 200 when UP, 503 when DOWN. Details only where the profile shows them.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    aggregate(&state).await
}

/// The process only: answers as long as the server can answer at all.
pub async fn liveness() -> Json<Value> {
    Json(json!({ "status": "UP" }))
}

/// Whether the server can take traffic: includes the database.
pub async fn readiness(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    aggregate(&state).await
}

pub async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": build_info::NAME,
        "version": build_info::VERSION,
        "commit": build_info::COMMIT,
        "buildTime": build_info::BUILD_TIME,
        "profile": state.profile.as_str(),
    }))
}

/// The metrics in Prometheus's text format, or OpenMetrics when the `Accept` header asks for it.
/// The figures read from the database are left as they were when it does not answer in time.
pub async fn prometheus(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ([(header::HeaderName, &'static str); 1], String) {
    if let Some(figures) = db::scrape_figures(&state.db, state.health_timeout).await {
        state.metrics.set_database_figures(&figures);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render(format),
    )
}

async fn aggregate(state: &AppState) -> (StatusCode, Json<Value>) {
    let database = db::ping(&state.db, state.health_timeout).await;
    let up = database.is_ok();
    let status = if up { "UP" } else { "DOWN" };
    if let Err(error) = &database {
        tracing::warn!("health: database DOWN: {error}");
    }
    let code = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !state.show_health_details {
        return (code, Json(json!({ "status": status })));
    }
    let db_component = match database {
        Ok(latency) => json!({
            "status": "UP",
            "details": { "database": "PostgreSQL", "latencyMs": latency.as_secs_f64() * 1000.0 },
        }),
        Err(error) => json!({
            "status": "DOWN",
            "details": { "database": "PostgreSQL", "error": error },
        }),
    };
    let body = json!({
        "status": status,
        "components": {
            "db": db_component,
            "ping": { "status": "UP" },
        },
    });
    (code, Json(body))
}
