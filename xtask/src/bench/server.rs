//! `cargo xtask bench server`: the release build of the server on loopback: start to the first
//! 200 from `/actuator/health`, idle memory, requests per second for health and liveness, for
//! logins (Argon2id as configured) and for an authenticated product lookup beside the same
//! lookup on the last release without login (built from its commit), and beside the same server
//! with its metrics turned off; and how long a scrape of `/actuator/prometheus` takes.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use super::{Row, free_port, load, median, note};
use crate::database::postgres::Server;
use crate::deploy::http::{self, BaseUrl};
use crate::flags;
use crate::project_root;

const DATABASE: &str = "saulpos_bench_server";
/// Scrapes timed for the scrape's figure.
const SCRAPES: usize = 200;

pub fn run(sh: &Shell, flags: &flags::BenchServer) -> anyhow::Result<Vec<Row>> {
    note("building saulpos-server in release mode");
    cmd!(
        sh,
        "cargo build --release --locked --package saulpos-server"
    )
    .run()?;
    let binary = project_root().join("target/release/saulpos-server");
    let database = &flags.database;
    let postgres = Server {
        host: database.host.clone(),
        port: database.port,
        username: database.username.clone(),
    };
    postgres.drop_database(DATABASE)?;
    postgres.psql("postgres", "CREATE DATABASE :\"db\"", &[("db", DATABASE)])?;
    // Plain TCP to the database, as the last release without TLS support spoke it: the figures
    // measure the server. TLS to a loopback database is timed apart (start with sslmode=require).
    let tls_url = format!(
        "postgres://{}:{}/{DATABASE}?sslmode=require",
        database.host, database.port
    );
    let url = format!(
        "postgres://{}:{}/{DATABASE}?sslmode=disable",
        database.host, database.port
    );

    let start_metered = |port: u16, url: &str, metrics: bool| -> anyhow::Result<Child> {
        Command::new(&binary)
            .env("SAULPOS_METRICS_ENABLED", metrics.to_string())
            .env("SAULPOS_PROFILE", "dev")
            .env("SAULPOS_CONFIG_DIR", project_root().join("server/config"))
            .env("SAULPOS_DB_URL", url)
            .env("SAULPOS_DB_USERNAME", &database.username)
            .env("SAULPOS_SERVER_ADDRESS", "127.0.0.1")
            .env("SAULPOS_SERVER_PORT", port.to_string())
            .env("SAULPOS_LOG_LEVEL", "warn")
            // The timed failed logins below must not wait out a throttle.
            .env("SAULPOS_AUTH_MAX_FAILURES", "1000")
            .env("SAULPOS_AUTH_MAX_FAILURES_PER_USER", "100000")
            .env("SAULPOS_AUTH_MAX_FAILURES_PER_CLIENT", "100000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))
    };
    let start_with = |port: u16, url: &str| start_metered(port, url, true);
    let start = |port: u16| start_with(port, &url);

    note("first start: applies the migrations (not measured)");
    let port = free_port()?;
    let mut first = Running(start(port)?);
    wait_for_up(&mut first.0, address(port), Duration::from_secs(30))?;
    drop(first);

    let mut starts = Vec::new();
    for run in 1..=flags.starts.max(1) {
        note(&format!("start {run} of {}", flags.starts.max(1)));
        let port = free_port()?;
        let started = Instant::now();
        let mut server = Running(start(port)?);
        wait_for_up(&mut server.0, address(port), Duration::from_secs(30))?;
        starts.push(started.elapsed());
    }
    let start_to_up = median(starts);
    let mut tls_starts = Vec::new();
    for run in 1..=flags.starts.max(1) {
        note(&format!(
            "start {run} of {} with sslmode=require",
            flags.starts.max(1)
        ));
        let port = free_port()?;
        let started = Instant::now();
        let mut server = Running(start_with(port, &tls_url)?);
        wait_for_up(&mut server.0, address(port), Duration::from_secs(30))?;
        tls_starts.push(started.elapsed());
    }
    let tls_start_ms = median(tls_starts).as_secs_f64() * 1000.0;

    let port = free_port()?;
    let mut server = Running(start(port)?);
    wait_for_up(&mut server.0, address(port), Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = resident_kib(server.0.id())?;
    let length = Duration::from_secs(flags.seconds.max(1));
    note(&format!(
        "load on /actuator/health/liveness: {} connections for {}s",
        flags.connections,
        length.as_secs()
    ));
    let liveness = load::requests_per_second(
        address(port),
        "/actuator/health/liveness",
        flags.connections,
        length,
    )?;
    note(&format!(
        "load on /actuator/health: {} connections for {}s",
        flags.connections,
        length.as_secs()
    ));
    let health =
        load::requests_per_second(address(port), "/actuator/health", flags.connections, length)?;
    let loaded = resident_kib(server.0.id())?;

    // Login: a user made with `saulpos-server user add`, its password on standard input.
    let mut add = Command::new(&binary)
        .args(["user", "add", "bench", "--role", "cashier"])
        .env("SAULPOS_PROFILE", "dev")
        .env("SAULPOS_CONFIG_DIR", project_root().join("server/config"))
        .env("SAULPOS_DB_URL", &url)
        .env("SAULPOS_DB_USERNAME", &database.username)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    add.stdin
        .take()
        .expect("piped")
        .write_all(format!("{BENCH_PASSWORD}\n").as_bytes())?;
    if !add.wait()?.success() {
        bail!("saulpos-server user add bench failed (its message is above)");
    }
    let login_body =
        serde_json::json!({"username": "bench", "password": BENCH_PASSWORD}).to_string();
    let login = load::Request {
        method: "POST",
        path: "/api/v1/auth/login".to_owned(),
        headers: String::new(),
        body: login_body.clone(),
    };
    note(&format!(
        "load on POST /api/v1/auth/login: {} connections for {}s",
        flags.connections,
        length.as_secs()
    ));
    let logins = load::requests_per_second_of(address(port), &login, flags.connections, length)?;
    // The peak under that storm: hashes run a core at a time, each in memory it reuses.
    let storm_peak = status_kib(server.0.id(), "VmHWM")?;
    let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}"))?;
    let answer = http::request(
        &base,
        "POST",
        "/api/v1/auth/login",
        Some(&login_body),
        Duration::from_secs(10),
    )?;
    let token = answer.json()?["token"]
        .as_str()
        .context("the login answered no token")?
        .to_owned();
    // An unknown user and a wrong password: one Argon2 run each, so the same time.
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for round in 0..10 {
        for (username, times) in [("nobody", &mut unknown), ("bench", &mut wrong)] {
            let body =
                serde_json::json!({"username": username, "password": format!("wrong-{round}")})
                    .to_string();
            let started = Instant::now();
            let answer = http::request(
                &base,
                "POST",
                "/api/v1/auth/login",
                Some(&body),
                Duration::from_secs(10),
            )?;
            times.push(started.elapsed());
            if answer.status != 401 {
                bail!("a wrong login answered {}", answer.status);
            }
        }
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    let lookup = load::Request {
        headers: format!("Authorization: Bearer {token}\r\n"),
        ..load::Request::get(LOOKUP)
    };
    note(&format!(
        "load on GET {LOOKUP} with a token: {} connections for {}s",
        flags.connections,
        length.as_secs()
    ));
    let authenticated =
        load::requests_per_second_of(address(port), &lookup, flags.connections, length)?;
    // Every route with the statuses it gives (besides those above), then the scrape timed.
    let token_text = token.as_str();
    for (method, path, body, bearer) in [
        ("GET", LOOKUP, None, None),
        (
            "GET",
            "/api/v1/products/NO-SUCH-SKU",
            None,
            Some(token_text),
        ),
        ("GET", "/no/such/path", None, None),
        ("GET", "/actuator/health/readiness", None, None),
        ("GET", "/actuator/info", None, None),
        (
            "POST",
            "/api/v1/checkout/dry-run",
            Some(r#"{"items":[]}"#),
            Some(token_text),
        ),
        (
            "POST",
            "/api/v1/checkout/dry-run",
            Some("{"),
            Some(token_text),
        ),
        (
            "POST",
            "/api/v1/checkout/dry-run",
            Some(r#"{"items":[{"sku":"DEMO-BREAD","quantity":1}]}"#),
            Some(token_text),
        ),
        ("POST", "/api/v1/auth/logout", None, None),
    ] {
        http::request_with(&base, method, path, body, bearer, Duration::from_secs(10))?;
    }
    let mut scrapes = Vec::new();
    let mut page = 0;
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let answer = http::request(
            &base,
            "GET",
            "/actuator/prometheus",
            None,
            Duration::from_secs(10),
        )?;
        scrapes.push(started.elapsed());
        if answer.status != 200 {
            bail!("/actuator/prometheus answered {}", answer.status);
        }
        page = answer.body.len();
    }
    scrapes.sort();
    let scrape_p95 = scrapes[SCRAPES * 95 / 100 - 1];
    drop(server);
    // The same lookup with the metrics turned off, between two runs with them on.
    let lookup_on = |metrics: bool| -> anyhow::Result<f64> {
        let port = free_port()?;
        let mut server = Running(start_metered(port, &url, metrics)?);
        wait_for_up(&mut server.0, address(port), Duration::from_secs(30))?;
        note(&format!(
            "load on GET {LOOKUP} with a token, metrics {}: {} connections for {}s",
            if metrics { "on" } else { "off" },
            flags.connections,
            length.as_secs()
        ));
        load::requests_per_second_of(address(port), &lookup, flags.connections, length)
    };
    let unmetered = lookup_on(false)?;
    let metered = (authenticated + lookup_on(true)?) / 2.0;

    // The same lookup on the last release without login, built from its commit.
    let baseline_binary = build_baseline(sh, &flags.baseline)?;
    let port = free_port()?;
    let mut baseline = Running(
        Command::new(&baseline_binary)
            .env("SAULPOS_PROFILE", "dev")
            .env("SAULPOS_DB_URL", &url)
            .env("SAULPOS_DB_USERNAME", &database.username)
            .env("SAULPOS_SERVER_ADDRESS", "127.0.0.1")
            .env("SAULPOS_SERVER_PORT", port.to_string())
            .env("SAULPOS_LOG_LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", baseline_binary.display()))?,
    );
    wait_for_up(&mut baseline.0, address(port), Duration::from_secs(30))?;
    note(&format!(
        "load on GET {LOOKUP} without login ({}): {} connections for {}s",
        flags.baseline,
        flags.connections,
        length.as_secs()
    ));
    let open_lookup = load::requests_per_second(address(port), LOOKUP, flags.connections, length)?;
    drop(baseline);
    postgres.drop_database(DATABASE)?;
    let share = authenticated / open_lookup;

    let idle_mib = idle as f64 / 1024.0;
    let storm_mib = storm_peak as f64 / 1024.0;
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get()) as f64;
    // Each hash at the default cost takes 19 MiB; the storm may add that a core, and a little.
    let storm_budget = idle_mib + cores * 19.0 + 16.0;
    let start_ms = start_to_up.as_secs_f64() * 1000.0;
    Ok(vec![
        Row::goal(
            format!(
                "start to first 200 from /actuator/health (median of {})",
                flags.starts.max(1)
            ),
            format!("{start_ms:.1} ms"),
            "< 100 ms",
            start_ms < 100.0,
        ),
        Row::figure(
            format!(
                "start to first 200 with TLS to PostgreSQL, sslmode=require (median of {})",
                flags.starts.max(1)
            ),
            format!("{tls_start_ms:.1} ms"),
        ),
        Row::goal(
            "idle resident memory",
            format!("{idle_mib:.1} MiB"),
            "< 20 MiB",
            idle_mib < 20.0,
        ),
        Row::goal(
            format!(
                "/actuator/health/liveness, {} connections",
                flags.connections
            ),
            format!("{liveness:.0} req/s"),
            "> 30000 req/s",
            liveness > 30_000.0,
        ),
        Row::goal(
            format!(
                "/actuator/health (database ping), {} connections",
                flags.connections
            ),
            format!("{health:.0} req/s"),
            "> 5000 req/s",
            health > 5_000.0,
        ),
        Row::figure(
            "resident memory after the load",
            format!("{:.1} MiB", loaded as f64 / 1024.0),
        ),
        Row::figure(
            format!(
                "POST /api/v1/auth/login (Argon2id m=19 MiB, t=2, p=1), {} connections",
                flags.connections
            ),
            format!("{logins:.0} req/s"),
        ),
        Row::goal(
            format!(
                "peak resident memory under that login storm ({} connections)",
                flags.connections
            ),
            format!("{storm_mib:.1} MiB"),
            format!("< {storm_budget:.0} MiB (idle + 19 MiB a core + 16)"),
            storm_mib < storm_budget,
        ),
        Row::figure(
            "one failed login: unknown user / wrong password (median of 10 each)",
            format!(
                "{:.1} ms / {:.1} ms",
                unknown.as_secs_f64() * 1000.0,
                wrong.as_secs_f64() * 1000.0
            ),
        ),
        Row::figure(
            format!(
                "GET {LOOKUP} without login ({}), {} connections",
                short(&flags.baseline),
                flags.connections
            ),
            format!("{open_lookup:.0} req/s"),
        ),
        Row::figure(
            format!(
                "GET {LOOKUP} with a bearer token, {} connections",
                flags.connections
            ),
            format!("{authenticated:.0} req/s"),
        ),
        Row::figure(
            format!("GET {LOOKUP} with a token, metrics off (SAULPOS_METRICS_ENABLED=false)"),
            format!("{unmetered:.0} req/s"),
        ),
        Row::goal(
            "the same lookup with metrics / without (mean of two runs with)",
            format!("{:.1} %", metered / unmetered * 100.0),
            ">= 97 %",
            metered / unmetered >= 0.97,
        ),
        Row::goal(
            format!(
                "scrape of /actuator/prometheus after every route and status ({} KiB page, p95 of {SCRAPES})",
                page / 1024
            ),
            format!("{:.2} ms", scrape_p95.as_secs_f64() * 1000.0),
            "< 2 ms",
            scrape_p95 < Duration::from_millis(2),
        ),
        Row::goal(
            "authenticated lookup / lookup without login",
            format!("{:.0} %", share * 100.0),
            ">= 80 %",
            share >= 0.8,
        ),
    ])
}

const BENCH_PASSWORD: &str = "bench-password-1";
const LOOKUP: &str = "/api/v1/products/DEMO-BREAD";

fn short(rev: &str) -> &str {
    rev.get(..10).unwrap_or(rev)
}

/// The release binary of the server at `rev`, built in a worktree of its own (kept, with its
/// target folder, for the next run).
fn build_baseline(sh: &Shell, rev: &str) -> anyhow::Result<std::path::PathBuf> {
    let root = project_root().join("target/bench/baseline");
    let source = root.join(short(rev));
    let target = root.join("target");
    if !source.join("Cargo.toml").is_file() {
        note(&format!("checking out {rev} in {}", source.display()));
        let _ = fs::remove_dir_all(&source);
        cmd!(sh, "git worktree prune").quiet().run()?;
        cmd!(sh, "git worktree add --detach {source} {rev}")
            .run()
            .with_context(|| {
                format!("cannot check out {rev}: is it a commit of this repository?")
            })?;
    }
    note(&format!(
        "building saulpos-server at {} in release mode",
        short(rev)
    ));
    let _dir = sh.push_dir(&source);
    cmd!(
        sh,
        "cargo build --release --locked --package saulpos-server --target-dir {target}"
    )
    .run()?;
    Ok(target.join("release/saulpos-server"))
}

/// A server process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `/actuator/health` every millisecond until it answers 200.
fn wait_for_up(child: &mut Child, address: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let base = BaseUrl {
            https: false,
            host: address.ip().to_string(),
            port: address.port(),
            prefix: String::new(),
            cacert: None,
        };
        let answer = http::request(
            &base,
            "GET",
            "/actuator/health",
            None,
            Duration::from_secs(2),
        );
        if answer.is_ok_and(|response| response.status == 200) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited ({status}) before it was UP; run it by hand to see why");
        }
        if Instant::now() > deadline {
            bail!("the server was not UP within {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The process's resident set size in KiB, from /proc.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of the process's /proc status (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc status"))
}
