//! `cargo xtask bench fleet`: one version rolled over 1, 3 and 6 loopback hosts (an `sshd` of
//! the bench's own, with throwaway keys), one at a time and all at once, beside the plain loop a
//! script would run (`scp`, then `ssh` to unpack and run install.sh --restart, host after host);
//! our time per host beyond the server's own restart and health wait, judged against the plain
//! loop's in the same run.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::Shell;

use super::{Row, fresh_dir, median, note, package_version, seconds};
use crate::database::postgres::Server;
use crate::release::manifest::Manifest;
use crate::release::package;
use crate::release::payload_files;
use crate::{flags, project_root};

const VERSIONS: [&str; 2] = ["0.0.0-bench.1", "0.0.0-bench.2"];
const ENV: &str = "staging";

/// The bench hosts' smoke user's password (a throwaway database of the bench's own).
const SMOKE_PASSWORD: &str = "bench-smoke-password";

/// Adds the smoke user to the database at `url` unless it is there.
fn add_smoke_user(server: &Path, url: &str, username: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(server)
        .args(["user", "add", "smoke", "--role", "cashier"])
        .env("SAULPOS_PROFILE", ENV)
        .env("SAULPOS_DB_URL", url)
        .env("SAULPOS_DB_USERNAME", username)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", server.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(format!("{SMOKE_PASSWORD}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && !said.contains("user smoke exists") {
        bail!("cannot add the smoke user to {url}: {}", said.trim());
    }
    Ok(())
}

pub fn run(sh: &Shell, what: &flags::BenchFleet) -> anyhow::Result<Vec<Row>> {
    let work = project_root().join("target/bench/fleet");
    fresh_dir(&work)?;
    let dist = work.join("dist");
    for version in VERSIONS {
        note(&format!(
            "packaging {version} (builds the server if needed)"
        ));
        package_version(sh, &dist, version)?;
    }
    let sshd = Sshd::start(&work.join("ssh"))?;
    let postgres = Server {
        host: what.database.host.clone(),
        port: what.database.port,
        username: what.database.username.clone(),
    };
    // The gates' smoke checks log in: each host's database gets the smoke user, made with the
    // server just built.
    let manifest = Manifest::from_json(&fs::read_to_string(
        dist.join(VERSIONS[0])
            .join(crate::release::manifest::JSON_NAME),
    )?)?;
    let server = package::package_target_dir()
        .join(&manifest.target)
        .join("release/saulpos-server");
    let mut hosts = Vec::new();
    for number in 1..=6 {
        let dest = work.join(format!("host-{number}"));
        let installed = dest.join(format!("saulpos-{ENV}"));
        fs::create_dir_all(&installed)?;
        let database = format!("saulpos_bench_fleet_{number}");
        if !postgres.database_exists(&database)? {
            postgres.psql("postgres", "CREATE DATABASE :\"db\"", &[("db", &database)])?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("postgres://{}:{}/{database}", postgres.host, postgres.port);
        add_smoke_user(&server, &url, &postgres.username)?;
        fs::write(
            installed.join("saulpos.env"),
            format!(
                "SAULPOS_DB_URL={url}\nSAULPOS_DB_USERNAME={}\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\nSAULPOS_SMOKE_USERNAME=smoke\nSAULPOS_SMOKE_PASSWORD={SMOKE_PASSWORD}\n",
                postgres.username
            ),
        )?;
        hosts.push(dest);
    }
    let _stop = StopServers(
        hosts
            .iter()
            .map(|dest| dest.join(format!("saulpos-{ENV}")))
            .collect(),
    );
    let destinations: Vec<String> = hosts.iter().map(|dest| sshd.destination(dest)).collect();

    let mut connects = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let status = sshd.ssh().arg("true").stdin(Stdio::null()).status()?;
        if !status.success() {
            bail!("ssh to the bench's sshd failed");
        }
        connects.push(started.elapsed());
    }
    let connect = median(connects);

    // Before each timed rollout of the second version, the hosts are put on the first one (not
    // timed; the first time is also the servers' first start).
    let [before, version] = VERSIONS;
    let mut rows = vec![Row::figure(
        "one ssh connection on loopback (ssh true, median of 5)",
        seconds(connect),
    )];
    let mut ours_3_hosts = Duration::ZERO;
    for (count, batch) in [(1, 1), (3, 1), (3, 3), (6, 1), (6, 6)] {
        rollout(&sshd, &destinations[..count], before, count)?;
        forget_payloads(&hosts);
        note(&format!(
            "rolling {version} over {count} host(s), batch {batch}"
        ));
        let (wall, gates) = rollout(&sshd, &destinations[..count], version, batch)?;
        let restart_and_health = if batch == 1 {
            gates.iter().sum::<Duration>()
        } else {
            gates.iter().copied().max().unwrap_or_default()
        };
        let ours = wall.saturating_sub(restart_and_health) / count as u32;
        rows.push(Row::figure(
            format!(
                "cargo xtask deploy: {count} host(s), batch {batch}: wall (restart and health wait)"
            ),
            format!("{} ({})", seconds(wall), seconds(restart_and_health)),
        ));
        rows.push(Row::figure(
            format!("  our time per host beyond the restart and health wait ({count} host(s), batch {batch})"),
            seconds(ours),
        ));
        if (count, batch) == (3, 1) {
            ours_3_hosts = ours;
        }
    }

    // The plain loop, on the same 3 hosts: a connection per step, no checks around it.
    rollout(&sshd, &destinations[..3], before, 3)?;
    forget_payloads(&hosts);
    note(&format!(
        "the plain loop: scp, then ssh tar + install.sh --restart, over 3 hosts ({version})"
    ));
    let payload_name = payload_files::payload_archive_name(ENV, version);
    let payload = dist.join(version).join(&payload_name);
    let started = Instant::now();
    let mut gates = Vec::new();
    for dest in &hosts[..3] {
        let folder = dest.join(format!("saulpos-{ENV}/payloads"));
        let status = sshd
            .scp()
            .arg(&payload)
            .arg(format!("{}:{}/", sshd.login(), folder.display()))
            .status()?;
        if !status.success() {
            bail!("scp to {} failed", dest.display());
        }
        let script = format!(
            "cd {folder} && tar -xzf {payload_name} && ./{top}/install.sh {dest} --restart && rm -rf {top}",
            folder = folder.display(),
            top = payload_files::payload_name(ENV, version),
            dest = dest.display()
        );
        let output = sshd.ssh().arg(script).stdin(Stdio::null()).output()?;
        let said = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!("the plain loop failed on {}: {said}", dest.display());
        }
        gates.push(gate_time(&said).context("install.sh did not report its gate time")?);
    }
    let wall = started.elapsed();
    let restart_and_health: Duration = gates.iter().sum();
    rows.push(Row::figure(
        "plain loop (scp; ssh tar -xzf + install.sh --restart): 3 hosts: wall (restart and health wait)",
        format!("{} ({})", seconds(wall), seconds(restart_and_health)),
    ));
    let plain = wall.saturating_sub(restart_and_health) / 3;
    rows.push(Row::figure(
        "  its time per host beyond the restart and health wait",
        seconds(plain),
    ));
    let ratio = ours_3_hosts.as_secs_f64() / plain.as_secs_f64().max(1e-9);
    rows.push(Row::goal(
        "our time per host beyond the restart / the plain loop's (3 hosts, batch 1)",
        format!("{ratio:.2}x"),
        "<= 1.0x",
        ratio <= 1.0,
    ));
    drop(sshd);
    Ok(rows)
}

/// Runs `cargo xtask deploy` (this binary) over `destinations`; returns the wall time and each
/// host's restart and health wait.
fn rollout(
    sshd: &Sshd,
    destinations: &[String],
    version: &str,
    batch: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let work = project_root().join("target/bench/fleet");
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["deploy", ENV, version])
        .args(destinations)
        .arg("--dist")
        .arg(work.join("dist"))
        .arg("--ssh-config")
        .arg(&sshd.config)
        .args(["--batch", &batch.to_string(), "--reason", "bench", "--json"])
        .stderr(Stdio::null());
    let started = Instant::now();
    let output = command.output()?;
    let wall = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "deploy printed no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    if !output.status.success() || report["outcome"] != "deployed" {
        bail!("the rollout of {version} failed: {report}");
    }
    let gates = report["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|host| {
            host["gate_ms"]
                .as_u64()
                .map(Duration::from_millis)
                .with_context(|| format!("a host reported no gate time: {host}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((wall, gates))
}

/// Removes the payloads the hosts hold, so that every rollout copies it as a new version would.
fn forget_payloads(hosts: &[PathBuf]) {
    for dest in hosts {
        let folder = dest.join(format!("saulpos-{ENV}/payloads"));
        for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn gate_time(said: &str) -> Option<Duration> {
    let rest = said.split_once("(restart and health wait: ")?.1;
    Some(Duration::from_millis(
        rest.split_once(" ms)")?.0.parse().ok()?,
    ))
}

/// Stops the servers run.sh started in these folders.
struct StopServers(Vec<PathBuf>);

impl Drop for StopServers {
    fn drop(&mut self) {
        for installed in &self.0 {
            let _ = Command::new(installed.join("run.sh")).arg("stop").output();
        }
    }
}

/// An sshd on a free loopback port with throwaway keys, and the client config that trusts it.
struct Sshd {
    child: Child,
    port: u16,
    config: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn start(dir: &Path) -> anyhow::Result<Sshd> {
        fs::create_dir_all(dir)?;
        for key in ["host_key", "user_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "saulpos-bench", "-f"])
                .arg(dir.join(key))
                .status()
                .context("ssh-keygen is needed: apt-get install openssh-client")?;
            if !status.success() {
                bail!("ssh-keygen failed");
            }
        }
        fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.display();
        fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile none\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxStartups 50\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
            ),
        )?;
        let _ = fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(fs::File::create(dir.join("sshd.log"))?)
            .spawn()
            .context("sshd is needed: apt-get install openssh-server")?;
        let host_key = fs::read_to_string(dir.join("host_key.pub"))?;
        let mut fields = host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )?;
        let config = dir.join("ssh_config");
        fs::write(
            &config,
            format!(
                "Host 127.0.0.1\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  BatchMode yes\n"
            ),
        )?;
        let sshd = Sshd {
            child,
            port,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "sshd did not listen; see {}",
                    dir.join("sshd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }

    fn login(&self) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        format!("{user}@127.0.0.1")
    }

    fn destination(&self, dest: &Path) -> String {
        format!("ssh://{}:{}{}", self.login(), self.port, dest.display())
    }

    fn ssh(&self) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-F")
            .arg(&self.config)
            .args(["-p", &self.port.to_string()])
            .arg(self.login());
        command
    }

    fn scp(&self) -> Command {
        let mut command = Command::new("scp");
        command
            .arg("-q")
            .arg("-F")
            .arg(&self.config)
            .args(["-P", &self.port.to_string()]);
        command
    }
}
