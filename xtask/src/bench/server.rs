//! `cargo xtask bench server`: the release build of the server on loopback: start to the first
//! 200 from `/actuator/health`, idle memory, and requests per second for health and liveness.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use super::{Row, load, median, note};
use crate::database::postgres::Server;
use crate::deploy::http::{self, BaseUrl};
use crate::flags;
use crate::project_root;

const DATABASE: &str = "saulpos_bench_server";

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
    let url = format!("postgres://{}:{}/{DATABASE}", database.host, database.port);

    let start = |port: u16| -> anyhow::Result<Child> {
        Command::new(&binary)
            .env("SAULPOS_PROFILE", "dev")
            .env("SAULPOS_CONFIG_DIR", project_root().join("server/config"))
            .env("SAULPOS_DB_URL", &url)
            .env("SAULPOS_DB_USERNAME", &database.username)
            .env("SAULPOS_SERVER_ADDRESS", "127.0.0.1")
            .env("SAULPOS_SERVER_PORT", port.to_string())
            .env("SAULPOS_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))
    };

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
    drop(server);
    postgres.drop_database(DATABASE)?;

    let idle_mib = idle as f64 / 1024.0;
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
    ])
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}
