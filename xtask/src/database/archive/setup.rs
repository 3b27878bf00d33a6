//! `cargo xtask archive setup`: the configuration file (owner-only, with the passphrase of an
//! encrypted repository that only it holds), PostgreSQL's archive settings, the stanza,
//! pgBackRest's check and the first full backup. Every step finds what is already done and
//! keeps it, so a run that stopped (a restart to do, a kill) is finished by running it again.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::database::archive::Context;
use crate::database::archive::cluster::{self, Cluster};
use crate::database::pgbackrest::{ConfigFile, Settings};
use crate::flags;
use crate::util::progress::step;

/// Writes the configuration through a temporary file in the same folder, so that the final
/// name always holds a whole file; the folder and the repository are created for postgres.
const WRITE_CONFIG: &str = r#"set -euo pipefail
config=$1 repo=$2
owner() { if [ "$(id -u)" = 0 ]; then chown postgres:postgres -- "$1"; fi; }
dir=$(dirname -- "$config")
if [ ! -d "$dir" ]; then install -d -m 0750 -- "$dir"; owner "$dir"; fi
if [ ! -d "$repo" ]; then install -d -m 0750 -- "$repo"; owner "$repo"; fi
tmp=$(mktemp -- "$config.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
chmod 600 -- "$tmp"
cat > "$tmp"
owner "$tmp"
sync -- "$tmp"
mv -f -- "$tmp" "$config"
trap - EXIT
"#;

pub fn check_flags(flags: &flags::ArchiveSetup) -> anyhow::Result<()> {
    for (name, path) in [("--pg-path", &flags.pg_path), ("--repo", &flags.repo)] {
        if !path.starts_with('/') || path.contains(['\n', '\r', '\0', '=']) {
            bail!("{name} {path:?}: give an absolute path on the database host");
        }
    }
    let timeout = flags.archive_timeout;
    if timeout < Duration::from_secs(1)
        || timeout > Duration::from_secs(86_400)
        || timeout.subsec_nanos() != 0
    {
        bail!(
            "--archive-timeout {}: give whole seconds from 1s to 1d, e.g. 60s (the longest a commit waits for its WAL to reach the archive)",
            flags::show_duration(timeout)
        );
    }
    Ok(())
}

pub fn run(flags: flags::ArchiveSetup, context: &Context) -> anyhow::Result<()> {
    let started = Instant::now();
    let host = &context.host;
    let live = live_cluster(context, &flags)?;
    step(
        started,
        &format!(
            "cluster {} on {} (port {}, data {})",
            live.id(),
            host.label(),
            live.port,
            live.data_dir
        ),
    );

    write_configuration(context, &flags)?;
    step(
        started,
        &format!(
            "wrote {} (mode 0600, the postgres user's): repository {} encrypted with aes-256-cbc, {} full backup(s) kept",
            context.pgbackrest.config, flags.repo, flags.retention_full
        ),
    );

    let mode = set_archiving(context, &live, &flags)?;
    if mode != "on" && mode != "always" {
        if !flags.restart {
            bail!(
                "archive_mode is set but PostgreSQL applies it only at a restart: restart cluster {} at a quiet moment (`pg_ctlcluster {} {} restart`, or this command with --restart), then run this command again; the configuration and the settings are in place",
                live.id(),
                live.version,
                live.name
            );
        }
        step(
            started,
            &format!("restarting {} for archive_mode", live.id()),
        );
        live.control(host, "restart")?;
        let now = live.psql(host, "postgres", "SHOW archive_mode", &[])?;
        if now != "on" {
            bail!(
                "cluster {} still says archive_mode = {now} after its restart",
                live.id()
            );
        }
    }
    step(
        started,
        &format!(
            "archiving on: archive_command runs pgbackrest archive-push, archive_timeout {}",
            flags::show_duration(flags.archive_timeout)
        ),
    );

    context.pgbackrest.run(host, "stanza-create", &[])?;
    step(
        started,
        &format!("stanza {:?} ready", context.pgbackrest.stanza),
    );
    context.pgbackrest.run(host, "check", &[])?;
    step(
        started,
        "pgbackrest check: a WAL segment was switched and reached the repository",
    );

    let info = context.pgbackrest.info(host)?;
    let first = match info.backups.last() {
        Some(backup) => {
            step(
                started,
                &format!(
                    "a backup is there already ({}): no new full backup",
                    backup.label
                ),
            );
            backup.label.clone()
        }
        None => {
            step(started, "first full backup");
            context.pgbackrest.run_with_progress(
                host,
                "backup",
                &["--type=full".to_owned()],
                started,
            )?;
            let info = context.pgbackrest.info(host)?;
            let backup = info
                .backups
                .last()
                .context("the first full backup is not in pgbackrest info")?;
            step(started, &format!("full backup {} taken", backup.label));
            backup.label.clone()
        }
    };
    eprintln!("archiving is set up. Check it daily (a monitor can run it; it exits 1 on trouble):");
    eprintln!("  $ {}", context.command_line("status"));
    if context.on.json {
        println!(
            "{}",
            json!({
                "cluster": live.id(),
                "config": context.pgbackrest.config,
                "stanza": context.pgbackrest.stanza,
                "repository": flags.repo,
                "cipher": "aes-256-cbc",
                "archive_timeout_seconds": flags.archive_timeout.as_secs(),
                "backup": first,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    }
    Ok(())
}

/// The cluster --pg-path names, listening on --pg-port and running.
fn live_cluster(context: &Context, flags: &flags::ArchiveSetup) -> anyhow::Result<Cluster> {
    let host = &context.host;
    let Some(live) = cluster::by_data_dir(host, &flags.pg_path)? else {
        bail!(
            "no PostgreSQL cluster on {} has the data directory {}: give --pg-path the live cluster's (pg_lsclusters lists them)",
            host.label(),
            flags.pg_path
        );
    };
    if live.port != flags.pg_port {
        bail!(
            "cluster {} (data {}) listens on port {}, not --pg-port {}; give the port it listens on",
            live.id(),
            live.data_dir,
            live.port,
            flags.pg_port
        );
    }
    if !live.online {
        bail!(
            "cluster {} is down; start it (`pg_ctlcluster {} {} start`) and run this again",
            live.id(),
            live.version,
            live.name
        );
    }
    Ok(live)
}

/// Writes the configuration, keeping the passphrase of one that is there (a new one would make
/// the repository unreadable).
fn write_configuration(context: &Context, flags: &flags::ArchiveSetup) -> anyhow::Result<()> {
    let config = &context.pgbackrest.config;
    let stanza = &context.pgbackrest.stanza;
    let passphrase = match context.read_config()? {
        Some(text) => {
            let existing = ConfigFile::parse(&text);
            if let Some(repo) = existing.value(stanza, "repo1-path")
                && repo != flags.repo
            {
                bail!(
                    "{config} already names the repository {repo}; setup keeps a repository and its passphrase: give --repo {repo}, or another --config for a new one"
                );
            }
            let others = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix('[')?.strip_suffix(']'))
                .filter(|section| *section != "global" && section != stanza)
                .collect::<Vec<_>>();
            if !others.is_empty() {
                bail!(
                    "{config} also configures stanza(s) {others:?}, which setup would not keep; give another --config"
                );
            }
            match existing.value(stanza, "repo1-cipher-pass") {
                Some(passphrase) => passphrase.to_owned(),
                None => bail!(
                    "{config} has no repo1-cipher-pass: its repository is not encrypted; give another --config and --repo for an encrypted one"
                ),
            }
        }
        None => new_passphrase()?,
    };
    let text = Settings {
        stanza,
        repo: &flags.repo,
        passphrase: &passphrase,
        retention_full: flags.retention_full,
        pg_path: &flags.pg_path,
        pg_port: flags.pg_port,
    }
    .render();
    context.host.script_ok(
        &format!("write {config}"),
        WRITE_CONFIG,
        &[config, &flags.repo],
        Some(text.as_bytes()),
    )?;
    Ok(())
}

/// 32 random bytes, as hex: the repository's passphrase.
fn new_passphrase() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the repository passphrase")?;
    Ok(crate::release::checksum::hex(&bytes))
}

/// Sets archive_mode, archive_command and archive_timeout with ALTER SYSTEM and reloads; the
/// archive_mode in force now (it changes only at a restart).
fn set_archiving(
    context: &Context,
    live: &Cluster,
    flags: &flags::ArchiveSetup,
) -> anyhow::Result<String> {
    let command = context.pgbackrest.archive_command();
    let timeout = format!("{}s", flags.archive_timeout.as_secs());
    live.psql(
        &context.host,
        "postgres",
        "ALTER SYSTEM SET archive_mode = 'on';
         ALTER SYSTEM SET archive_command = :'command';
         ALTER SYSTEM SET archive_timeout = :'timeout';
         SELECT pg_reload_conf();",
        &[("command", &command), ("timeout", &timeout)],
    )?;
    live.psql(&context.host, "postgres", "SHOW archive_mode", &[])
}
