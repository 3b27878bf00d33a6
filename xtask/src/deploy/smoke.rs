//! `cargo xtask smoke --url URL`: the card's smoke checks, one line each with its time.
//! In `dev` they use the demo catalogue; in `staging` and `prod` they need no data (the 404 path
//! and, outside `prod`, a dry-run refused for an unknown SKU). Nothing is ever written.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::deploy::http::{self, BaseUrl};
use crate::flags;

/// A demo product the `dev` catalogue holds, with its price.
const DEMO_SKU: &str = "DEMO-COFFEE-250G";
const DEMO_PRICE_CENTS: i64 = 799;
/// A SKU no catalogue holds: prod's product check expects the JSON 404.
const MISSING_SKU: &str = "SMOKE-CHECK-NO-SUCH-SKU";

impl flags::Smoke {
    pub fn run(self) -> anyhow::Result<()> {
        let base = BaseUrl::parse(&self.url)?;
        let get = |path: &str| http::request(&base, "GET", path, None, self.request_timeout);
        let mut results = Vec::new();
        let mut profile = String::from("unknown");

        check(&mut results, "health is UP", || {
            let response = get("/actuator/health")?;
            let status = response.json()?["status"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            if response.status != 200 || status != "UP" {
                bail!("{} with status {status}", response.status);
            }
            Ok("200 UP".to_owned())
        });
        check(&mut results, "info names the version", || {
            let response = get("/actuator/info")?;
            let info = response.json()?;
            if response.status != 200 {
                bail!("{}", response.status);
            }
            let version = info["version"].as_str().context("info has no version")?;
            profile = info["profile"].as_str().unwrap_or("unknown").to_owned();
            match &self.expect_version {
                Some(expected) if version != expected => {
                    bail!("version {version}, expected {expected}")
                }
                _ => Ok(format!("version {version}, profile {profile}")),
            }
        });
        // dev holds the demo catalogue; staging and prod hold real data the smoke checks must
        // not depend on, so there they take the paths that need none.
        let demo = profile == "dev";
        if demo {
            check(&mut results, "product lookup", || {
                let response = get(&format!("/api/v1/products/{DEMO_SKU}"))?;
                let body = response.json()?;
                if response.status != 200 || body["sku"] != DEMO_SKU {
                    bail!(
                        "{} {} (is the demo catalogue loaded?)",
                        response.status,
                        http::truncate(&response.text())
                    );
                }
                Ok(format!("200 {DEMO_SKU}"))
            });
        } else {
            check(&mut results, "product lookup (404 path)", || {
                let response = get(&format!("/api/v1/products/{MISSING_SKU}"))?;
                let body = response.json()?;
                if response.status != 404 || body["error"].is_null() {
                    bail!("{} {}", response.status, http::truncate(&response.text()));
                }
                Ok(format!("404 for {MISSING_SKU} with a JSON error"))
            });
        }
        if profile != "prod" {
            check(&mut results, "checkout dry-run", || {
                let sku = if demo { DEMO_SKU } else { MISSING_SKU };
                let cart = json!({"items": [{"sku": sku, "quantity": 2}]}).to_string();
                let response = http::request(
                    &base,
                    "POST",
                    "/api/v1/checkout/dry-run",
                    Some(&cart),
                    self.request_timeout,
                )?;
                let body = response.json()?;
                let text = http::truncate(&response.text());
                if demo {
                    let expected = 2 * DEMO_PRICE_CENTS;
                    if response.status != 200 || body["totalCents"] != expected {
                        bail!("{} {text}", response.status);
                    }
                    Ok(format!("200, total {expected} cents"))
                } else {
                    if response.status != 422 || body["error"].is_null() {
                        bail!(
                            "{} {text} (expected 422 for an unknown SKU)",
                            response.status
                        );
                    }
                    Ok("422 for an unknown SKU with a JSON error".to_owned())
                }
            });
        }

        let failed = results.iter().filter(|result| !result.passed).count();
        if self.json {
            let checks: Vec<Value> = results
                .iter()
                .map(|result| {
                    json!({"check": result.name, "passed": result.passed, "detail": result.detail, "ms": result.millis})
                })
                .collect();
            let out = json!({"url": self.url, "profile": profile, "passed": failed == 0, "checks": checks});
            println!("{out}");
        }
        if failed > 0 {
            bail!(
                "{failed} of {} smoke checks failed against {}",
                results.len(),
                self.url
            );
        }
        eprintln!("all {} smoke checks passed", results.len());
        Ok(())
    }
}

struct CheckResult {
    name: &'static str,
    passed: bool,
    detail: String,
    millis: f64,
}

/// Runs one check and prints its line: PASS or FAIL, its time, and what it saw.
fn check(
    results: &mut Vec<CheckResult>,
    name: &'static str,
    work: impl FnOnce() -> anyhow::Result<String>,
) {
    let started = Instant::now();
    let outcome = work();
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let (passed, detail) = match outcome {
        Ok(detail) => (true, detail),
        Err(error) => (false, format!("{error:#}")),
    };
    eprintln!(
        "{} {name:<28} {millis:>7.1} ms  {detail}",
        if passed { "PASS" } else { "FAIL" }
    );
    results.push(CheckResult {
        name,
        passed,
        detail,
        millis,
    });
}
