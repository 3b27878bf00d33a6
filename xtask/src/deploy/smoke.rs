//! `cargo xtask smoke [--url URL] [--env-file FILE]`: the smoke checks, one line each with its
//! time.
//! They log in as the smoke user first and out at the end. In `dev` they use the demo catalogue;
//! in `staging` and `prod` they need no data (the 404 path and, outside `prod`, a dry-run
//! refused for an unknown SKU). Nothing is written but the token, which logout ends.

use std::fs;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::deploy::http::{self, BaseUrl};
use crate::flags;
use crate::util::env_file;

pub const USERNAME: &str = "SAULPOS_SMOKE_USERNAME";
pub const PASSWORD: &str = "SAULPOS_SMOKE_PASSWORD";
/// The user the dev profile's demo data holds (saulpos-server's `auth::users::DEMO_CASHIER`).
const DEMO_CASHIER: (&str, &str) = ("demo-cashier", "demo-cashier-password");

/// A demo product the `dev` catalogue holds, with its price.
const DEMO_SKU: &str = "DEMO-COFFEE-250G";
const DEMO_PRICE_CENTS: i64 = 799;
/// A SKU no catalogue holds: prod's product check expects the JSON 404.
const MISSING_SKU: &str = "SMOKE-CHECK-NO-SUCH-SKU";

impl flags::Smoke {
    pub fn run(self) -> anyhow::Result<()> {
        let base = BaseUrl::from_flags(
            self.url.as_deref(),
            self.env_file.as_deref(),
            self.cacert.clone(),
        )?;
        let credentials = self.credentials()?;
        let mut token: Option<String> = None;
        let mut results = Vec::new();
        let mut profile = String::from("unknown");

        let get = |path: &str| http::request(&base, "GET", path, None, self.request_timeout);
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
        // dev's demo data holds a demo cashier: without a smoke user, dev uses it.
        let credentials = credentials.or_else(|| {
            (profile == "dev").then(|| (DEMO_CASHIER.0.to_owned(), DEMO_CASHIER.1.to_owned()))
        });
        check(&mut results, "login", || {
            let Some((username, password)) = &credentials else {
                bail!(
                    "no smoke user: set {USERNAME} and {PASSWORD} in the environment, or give --env-file with the payload's saulpos.env"
                );
            };
            let login = json!({"username": username, "password": password}).to_string();
            let response = http::request(
                &base,
                "POST",
                "/api/v1/auth/login",
                Some(&login),
                self.request_timeout,
            )?;
            let body = response.json()?;
            match response.status {
                200 => {
                    token = Some(
                        body["token"]
                            .as_str()
                            .context("the login answered no token")?
                            .to_owned(),
                    );
                    Ok(format!(
                        "200 as {username} ({})",
                        body["role"].as_str().unwrap_or("?")
                    ))
                }
                401 => bail!(
                    "401 for {username}: wrong {PASSWORD}, or the user is missing or disabled (docs/runbooks/deploy.md says how to create it)"
                ),
                429 => {
                    bail!("429: {username} is locked out after failed logins; wait and try again")
                }
                status => bail!("{status} {}", http::truncate(&response.text())),
            }
        });
        let token = token.as_deref();
        let get =
            |path: &str| http::request_with(&base, "GET", path, None, token, self.request_timeout);
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
                let response = http::request_with(
                    &base,
                    "POST",
                    "/api/v1/checkout/dry-run",
                    Some(&cart),
                    token,
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
        check(&mut results, "logout", || {
            let token = token.context("not logged in")?;
            let response = http::request_with(
                &base,
                "POST",
                "/api/v1/auth/logout",
                None,
                Some(token),
                self.request_timeout,
            )?;
            if response.status != 204 {
                bail!("{} {}", response.status, http::truncate(&response.text()));
            }
            Ok("204, the token ended".to_owned())
        });

        let failed = results.iter().filter(|result| !result.passed).count();
        if self.json {
            let checks: Vec<Value> = results
                .iter()
                .map(|result| {
                    json!({"check": result.name, "passed": result.passed, "detail": result.detail, "ms": result.millis})
                })
                .collect();
            let out = json!({"url": base.show(""), "profile": profile, "passed": failed == 0, "checks": checks});
            println!("{out}");
        }
        if failed > 0 {
            bail!(
                "{failed} of {} smoke checks failed against {}",
                results.len(),
                base.show("")
            );
        }
        eprintln!("all {} smoke checks passed", results.len());
        Ok(())
    }
}

impl flags::Smoke {
    /// The smoke user's name and password: from --env-file when given, else the environment.
    fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let (username, password) = match &self.env_file {
            Some(path) => {
                let text = fs::read_to_string(path).with_context(|| {
                    format!(
                        "--env-file {}: cannot read it; give the environment's saulpos.env",
                        path.display()
                    )
                })?;
                (
                    env_file::value(&text, USERNAME),
                    env_file::value(&text, PASSWORD),
                )
            }
            None => (std::env::var(USERNAME).ok(), std::env::var(PASSWORD).ok()),
        };
        Ok(match (username, password) {
            (Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
                Some((username, password))
            }
            _ => None,
        })
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
