//! `/actuator/prometheus` on a running server: the request histogram by route template (a scan of
//! random paths is one series), logins, tokens, the pool, the build and the process, in both
//! text formats; and a server with metrics turned off serves none.

use std::collections::BTreeSet;

use crate::support::{Server, TestDb, demo_token, get, get_json_as, post_json, server_command};

/// The database password the server is given (trust authentication lets any through).
const PASSWORD: &str = "m3tr:cs-p@ss";

/// The value of the sample named exactly `series` (name and labels as the server writes them).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

fn scrape(server: &Server, accept: Option<&str>) -> (String, String) {
    let agent = ureq::Agent::new_with_defaults();
    let mut request = agent.get(server.url("/actuator/prometheus"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let mut response = request.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.body_mut().read_to_string().unwrap())
}

#[test]
fn the_metrics_count_requests_by_route_template_logins_tokens_and_the_build() {
    let db = TestDb::new("metrics");
    let url = db.url();
    let server = Server::start(&[
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_USERNAME", "postgres"),
        ("SAULPOS_DB_PASSWORD", PASSWORD),
        ("SAULPOS_AUTH_MAX_FAILURES", "2"),
    ]);
    let token = demo_token(&server.url(""));
    for _ in 0..3 {
        let (status, _) = get_json_as(&server.url("/api/v1/products/DEMO-BREAD"), &token);
        assert_eq!(status, 200);
    }
    let (status, _) = get_json_as(&server.url("/api/v1/products/NOPE-1"), &token);
    assert_eq!(status, 404);
    // Two failures start a wait (a lockout); the third attempt is throttled.
    for expected in [401, 401, 429] {
        let (status, _) = post_json(
            &server.url("/api/v1/auth/login"),
            r#"{"username":"demo-cashier","password":"wrong"}"#,
        );
        assert_eq!(status, expected);
    }
    // A scan: forty random paths answer 404 and add one series, not forty.
    for index in 0..40 {
        let path = format!("/scan/{index}/wp-admin.php?x={index}");
        assert_eq!(get(&server.url(&path)).unwrap().0, 404);
    }

    let (content_type, body) = scrape(&server, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let product = r#"http_request_method="GET",http_route="/api/v1/products/{sku}""#;
    assert_eq!(
        sample(
            &body,
            &format!(
                "http_server_request_duration_seconds_count{{{product},http_response_status_code=\"200\"}}"
            )
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!(
                "http_server_request_duration_seconds_bucket{{{product},http_response_status_code=\"404\",le=\"10\"}}"
            )
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="unmatched",http_response_status_code="404"}"#
        ),
        Some(40.0),
        "{body}"
    );
    assert!(!body.contains("wp-admin"), "a raw path is a label: {body}");
    let routes: BTreeSet<&str> = body
        .lines()
        .filter(|line| line.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|line| line.split("http_route=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            "/actuator/health/liveness",
            "/api/v1/auth/login",
            "/api/v1/products/{sku}",
            "unmatched"
        ]),
        "{body}"
    );
    // The buckets OpenTelemetry advises, 5 ms to 10 s.
    let buckets: Vec<&str> = body
        .lines()
        .filter(|line| line.contains(&format!("{product},http_response_status_code=\"200\"")))
        .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
            "5", "7.5", "10", "+Inf"
        ],
        "{body}"
    );
    // The scrape itself is in flight while the page is written.
    assert_eq!(sample(&body, "http_server_active_requests"), Some(1.0));
    assert_eq!(
        sample(&body, r#"saulpos_auth_logins_total{outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, r#"saulpos_auth_logins_total{outcome="failure"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, r#"saulpos_auth_logins_total{outcome="throttled"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&body, "saulpos_auth_lockouts_total"), Some(1.0));
    assert_eq!(sample(&body, "saulpos_auth_tokens_active"), Some(1.0));
    assert_eq!(
        sample(&body, "saulpos_db_migrations_applied").map(|value| value.to_string()),
        Some(db.query("SELECT count(*) FROM _sqlx_migrations"))
    );
    assert_eq!(sample(&body, "saulpos_db_pool_connections_max"), Some(10.0));
    let idle = sample(&body, "saulpos_db_pool_connections_idle").unwrap();
    let in_use = sample(&body, "saulpos_db_pool_connections_in_use").unwrap();
    assert!(idle + in_use >= 1.0 && idle + in_use <= 10.0, "{body}");
    assert!(
        sample(&body, "saulpos_db_pool_acquire_duration_seconds_count").unwrap() >= 6.0,
        "{body}"
    );
    let version = get(&server.url("/actuator/info")).unwrap().1;
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(
        sample(
            &body,
            &format!(
                "saulpos_build_info{{version=\"{}\",commit=\"{}\",profile=\"dev\"}}",
                version["version"].as_str().unwrap(),
                version["commit"].as_str().unwrap()
            )
        ),
        Some(1.0),
        "{body}"
    );
    let started = sample(&body, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now + 1.0 && started > now - 600.0, "{started}");
    assert!(sample(&body, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&body, "process_open_fds").unwrap() >= 3.0);
    assert!(
        sample(&body, "process_cpu_seconds_total").is_some(),
        "{body}"
    );
    assert!(
        body.contains("# TYPE saulpos_auth_logins_total counter"),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
    assert!(!body.contains(PASSWORD), "the password is in the metrics");
    assert!(!body.contains(&token), "the token is in the metrics");

    let (content_type, open) = scrape(
        &server,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE saulpos_auth_logins counter"),
        "{open}"
    );
}

#[test]
fn a_server_with_metrics_turned_off_serves_none_and_a_bad_setting_is_named() {
    let db = TestDb::new("nometrics");
    let url = db.url();
    let server = Server::start(&[
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_METRICS_ENABLED", "false"),
    ]);
    assert_eq!(get(&server.url("/actuator/prometheus")).unwrap().0, 404);
    let refused = server_command()
        .env("SAULPOS_DB_URL", &url)
        .env("SAULPOS_METRICS_ENABLED", "yes")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("SAULPOS_METRICS_ENABLED: \"yes\" is neither true nor false"),
        "{said}"
    );
}
