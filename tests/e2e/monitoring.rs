//! What an operator installs beside the servers (`deploy/prometheus/`), against the real tools:
//! promtool checks both scrape configurations and the rules and runs the rules' unit tests, and
//! Debian's Prometheus, on a loopback port with the shipped configuration, scrapes a running
//! server whose request rate and p99 come back through its query API.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::metrics::sample;
use crate::support::{
    Server, TestDb, demo_token, eventually, free_port, get, get_json_as, text, workspace_root,
};

fn shipped() -> PathBuf {
    workspace_root().join("deploy/prometheus")
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is needed (.ci/run installs Debian's prometheus)")
}

#[test]
fn promtool_checks_both_scrape_configurations_and_the_rules_and_passes_their_unit_tests() {
    let dir = shipped();
    for config in ["prometheus.yml", "kubernetes.yml"] {
        let checked = promtool(&["check", "config", config], &dir);
        let said = text(&checked);
        assert!(checked.status.success(), "{config}: {said}");
        assert!(
            said.contains(&format!(
                "SUCCESS: {config} is valid prometheus config file syntax"
            )),
            "{said}"
        );
    }
    let checked = promtool(&["check", "rules", "saulpos.rules.yml"], &dir);
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains("SUCCESS: 8 rules found"));
    let tested = promtool(&["test", "rules", "saulpos.rules.test.yml"], &dir);
    assert!(tested.status.success(), "{}", text(&tested));
    // Every alert has a test that sees it fire.
    let rules = fs::read_to_string(dir.join("saulpos.rules.yml")).unwrap();
    let tests = fs::read_to_string(dir.join("saulpos.rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 8, "{rules}");
    for alert in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test sees {alert} fire"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")),
            "no test sees {alert} stay quiet"
        );
    }
}

/// Debian's Prometheus on a loopback port, its data in a folder of its own.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The shipped configuration and rules, scraping `targets` every second instead of 15.
    fn start(targets: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = fs::read_to_string(shipped().join("prometheus.yml")).unwrap();
        let fast = config.replace("scrape_interval: 15s", "scrape_interval: 1s");
        assert_ne!(
            fast, config,
            "the shipped prometheus.yml sets no 15s scrape interval"
        );
        fs::write(dir.path().join("prometheus.yml"), fast).unwrap();
        fs::copy(
            shipped().join("saulpos.rules.yml"),
            dir.path().join("saulpos.rules.yml"),
        )
        .unwrap();
        fs::write(dir.path().join("saulpos-targets.yml"), targets).unwrap();
        fs::write(dir.path().join("saulpos-backup-targets.yml"), "[]\n").unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is needed (.ci/run installs Debian's prometheus)");
        let prometheus = Prometheus { child, port, dir };
        assert!(
            eventually(Duration::from_secs(30), || {
                get(&prometheus.url("/-/ready")).is_ok_and(|(status, _)| status == 200)
            }),
            "prometheus did not get ready: {}",
            prometheus.log()
        );
        prometheus
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let agent = ureq::Agent::new_with_defaults();
        let mut response = agent
            .get(self.url("/api/v1/query"))
            .query("query", promql)
            .call()
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"].as_array().unwrap().clone()
    }

    /// The value of a query that gives one series.
    fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        let series = result.first()?;
        series["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn a_real_prometheus_with_the_shipped_configuration_reads_the_request_rate_and_p99_back() {
    let db = TestDb::new("prometheus");
    let url = db.url();
    let server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    let prometheus = Prometheus::start(&format!(
        "- targets: ['127.0.0.1:{}']\n  labels:\n    env: dev\n",
        server.port
    ));
    assert!(
        eventually(Duration::from_secs(20), || {
            prometheus.value(r#"up{job="saulpos"}"#) == Some(1.0)
        }),
        "prometheus never scraped the server: {}",
        prometheus.log()
    );
    let token = demo_token(&server.url(""));
    // Lookups for six seconds, about 50 a second.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let (status, _) = get_json_as(&server.url("/api/v1/products/DEMO-BREAD"), &token);
        assert_eq!(status, 200);
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let route =
        r#"job="saulpos",http_route="/api/v1/products/{sku}",http_response_status_code="200""#;
    assert!(
        eventually(Duration::from_secs(10), || {
            prometheus
                .value(&format!(
                    "max_over_time(http_server_request_duration_seconds_count{{{route}}}[1m])"
                ))
                .is_some_and(|count| count >= f64::from(sent))
        }),
        "prometheus never saw the {sent} lookups: {:?}\n{}",
        prometheus.query("up"),
        prometheus.log()
    );
    let up = prometheus.query(r#"up{job="saulpos"}"#);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["env"], "dev");
    assert_eq!(up[0]["value"][1], "1");
    // The rate over the window the traffic ran in: between 10 and 100 a second.
    let rate = prometheus
        .value(&format!(
            "max_over_time(rate(http_server_request_duration_seconds_count{{{route}}}[4s])[1m:1s])"
        ))
        .unwrap_or_else(|| {
            panic!(
                "no request rate: {:?} {:?}",
                prometheus.query(&format!(
                    "http_server_request_duration_seconds_count{{{route}}}[1m]"
                )),
                prometheus.query(&format!(
                    "rate(http_server_request_duration_seconds_count{{{route}}}[4s])"
                ))
            )
        });
    assert!((10.0..100.0).contains(&rate), "rate {rate}");
    // The p99 of the lookups: a local lookup takes well under 100 ms.
    let p99 = prometheus
        .value(&format!(
            "max_over_time(histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{route}}}[4s])))[1m:1s])"
        ))
        .expect("a p99");
    assert!(p99 > 0.0 && p99 <= 0.1, "p99 {p99}");
    // The server's own view agrees on the count.
    let (_, body) = get(&server.url("/actuator/prometheus")).unwrap();
    assert_eq!(
        sample(
            &body,
            r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/api/v1/products/{sku}",http_response_status_code="200"}"#
        ),
        Some(f64::from(sent))
    );
    // The shipped rules are loaded, and none fires on a healthy server.
    let agent = ureq::Agent::new_with_defaults();
    let rules: serde_json::Value = serde_json::from_str(
        &agent
            .get(prometheus.url("/api/v1/rules"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(loaded.len(), 8, "{rules}");
    assert!(
        loaded
            .iter()
            .all(|rule| rule["health"] == "ok" || rule["health"] == "unknown"),
        "{rules}"
    );
    let firing = prometheus.query("ALERTS");
    assert!(firing.is_empty(), "{firing:?}");
}
