//! `cargo xtask health [--url URL | --env-file FILE]`: poll `/actuator/health` until UP (and the version matches, if
//! asked); print the final JSON; on timeout, fail with the last status or error.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::deploy::http::{self, BaseUrl};
use crate::flags;

impl flags::Health {
    pub fn run(self) -> anyhow::Result<()> {
        let base = BaseUrl::from_flags(
            self.url.as_deref(),
            self.env_file.as_deref(),
            self.cacert.clone(),
        )?;
        let waited = wait_up(
            &base,
            self.expect_version.as_deref(),
            self.timeout,
            self.interval,
        );
        match waited {
            Ok(up) => {
                if self.json {
                    let out = json!({"status": "UP", "version": up.version, "health": up.health, "seconds": up.seconds});
                    println!("{out}");
                } else {
                    println!("{}", up.health);
                }
                Ok(())
            }
            Err(down) => {
                if self.json {
                    let out =
                        json!({"status": "TIMEOUT", "last": down.last, "seconds": down.seconds});
                    println!("{out}");
                }
                bail!("{down}")
            }
        }
    }
}

/// The server answered UP (with the version asked for).
pub struct Up {
    pub health: Value,
    pub version: String,
    pub seconds: f64,
}

/// The server was not UP in time: the last thing it said (or the error reaching it).
pub struct NotUp {
    pub what: String,
    /// The time it was given, as the user wrote it.
    pub timeout: Duration,
    pub last: String,
    pub seconds: f64,
}

impl std::fmt::Display for NotUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} within {} (waited {:.1}s); last: {}",
            self.what,
            crate::flags::show_duration(self.timeout),
            self.seconds,
            self.last
        )
    }
}

/// Polls `/actuator/health` until UP (and `/actuator/info` names `expect_version`), printing
/// each new state on stderr.
pub fn wait_up(
    base: &BaseUrl,
    expect_version: Option<&str>,
    timeout: Duration,
    interval: Duration,
) -> Result<Up, NotUp> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut polls = 0;
    let mut last = String::from("no answer yet");
    loop {
        polls += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let request_timeout = left.clamp(Duration::from_millis(100), Duration::from_secs(5));
        match check(base, expect_version, request_timeout) {
            Ok((health, version)) => {
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "UP at {} after {seconds:.1}s ({polls} polls), version {version}",
                    base.show("/actuator/health")
                );
                return Ok(Up {
                    health,
                    version,
                    seconds,
                });
            }
            Err(error) => {
                let message = format!("{error:#}");
                if message != last {
                    eprintln!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
                }
                last = message;
            }
        }
        // The last poll is at the deadline, so the whole time given is waited.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(interval.min(left));
    }
    Err(NotUp {
        what: format!(
            "{} was not UP{}",
            base.show("/actuator/health"),
            match expect_version {
                Some(version) => format!(" with version {version}"),
                None => String::new(),
            }
        ),
        last,
        timeout,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One poll: health must be 200 with status UP, and info's version the expected one.
fn check(
    base: &BaseUrl,
    expect_version: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Value, String)> {
    let response = http::request(base, "GET", "/actuator/health", None, timeout)?;
    let health = response.json().unwrap_or(Value::Null);
    let status = health["status"].as_str().unwrap_or("?");
    if response.status != 200 || status != "UP" {
        bail!(
            "health answered {} with status {status}: {}",
            response.status,
            http::truncate(&response.text())
        );
    }
    let info = http::request(base, "GET", "/actuator/info", None, timeout)?;
    let version = info.json()?["version"].as_str().unwrap_or("?").to_owned();
    if let Some(expected) = expect_version
        && version != expected
    {
        bail!(
            "UP, but the version is {version}, not {expected} (is the old release still running?)"
        );
    }
    Ok((health, version))
}
