//! HTTP server metrics with OpenTelemetry's names: `http_server_request_duration_seconds` by
//! method, route template and status, and `http_server_active_requests`. The route is the
//! template (`/api/v1/products/{sku}`), never the raw path: every unmatched path is one value,
//! so a scan of random URLs cannot grow the series.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{DURATION_BUCKETS, Metrics};

/// The `http_route` of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    http_request_method: &'static str,
    http_route: String,
    http_response_status_code: u16,
}

pub struct HttpMetrics {
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    active: Gauge,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let durations: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, by method, route template and status code",
            durations.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "http_server_active_requests",
            "HTTP server requests in flight",
            active.clone(),
        );
        HttpMetrics { durations, active }
    }
}

/// The method as OpenTelemetry names it: one of the known ones, else `_OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Lowers the active gauge however the request ends (a client gone mid-request included).
struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware: counts the request in flight, then records its duration under its labels.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let http = &metrics.http;
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    http.active.inc();
    let _in_flight = InFlight(&http.active);
    let response = next.run(request).await;
    let labels = RequestLabels {
        http_request_method: method,
        http_route: route,
        http_response_status_code: response.status().as_u16(),
    };
    http.durations
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
