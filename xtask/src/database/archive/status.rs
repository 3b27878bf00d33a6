//! `cargo xtask archive status`: the backups, the restorable window, the archiver's lag and
//! failures, and pgBackRest's own status, judged: it fails, naming each problem, when archiving
//! fails, lags beyond `--max-lag`, or the repository misses WAL, so a monitor can run it.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use crate::database::archive::backup::bytes;
use crate::database::archive::{Configured, Context, State};
use crate::flags;
use crate::util::utc;

/// What status found: the report, the same as JSON, and the problems.
pub struct Report {
    pub text: String,
    pub json: Value,
    pub problems: Vec<String>,
}

pub fn run(flags: flags::ArchiveStatus, context: &Context) -> anyhow::Result<()> {
    let report = report(context, flags.max_lag)?;
    if context.on.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text);
    }
    if !report.problems.is_empty() {
        bail!("archive status: {}", report.problems.join("; "));
    }
    Ok(())
}

/// `archive status` of this machine's stanza for an incident bundle: the report (its problems
/// included), and the repository's passphrase for the bundle's redactor.
pub fn for_bundle(config: &str, stanza: &str) -> anyhow::Result<(String, Option<String>)> {
    let on = flags::ArchiveOn {
        on: None,
        ssh_config: None,
        config: config.to_owned(),
        stanza: stanza.to_owned(),
        json: false,
    };
    let context = Context {
        host: crate::database::archive::host::DbHost::connect(&on)?,
        pgbackrest: crate::database::pgbackrest::PgBackRest::new(config, stanza)?,
        on,
    };
    let passphrase = context.passphrase()?;
    let report = report(&context, None)?;
    Ok((
        format!(
            "$ cargo xtask archive status --config {config} --stanza {stanza}\n{}",
            report.text
        ),
        passphrase,
    ))
}

/// Reads and judges the stanza's state.
pub fn report(context: &Context, max_lag: Option<Duration>) -> anyhow::Result<Report> {
    let configured = context.configured()?;
    let state = context.state(&configured)?;
    Ok(judge(context, &configured, &state, max_lag))
}

fn judge(
    context: &Context,
    configured: &Configured,
    state: &State,
    max_lag: Option<Duration>,
) -> Report {
    let mut problems = Vec::new();
    let mut text = format!(
        "stanza {:?} on {} (configuration {}, repository {}, {})\n",
        context.pgbackrest.stanza,
        context.host.label(),
        context.pgbackrest.config,
        configured.repo,
        if state.info.cipher.is_empty() {
            "not encrypted"
        } else {
            &state.info.cipher
        }
    );
    text.push_str("backups:\n");
    for backup in &state.info.backups {
        text.push_str(&format!(
            "  {:<34} {:<4} {} to {}  {} ({} stored)  WAL {} to {}\n",
            backup.label,
            backup.kind,
            utc::rfc3339(backup.start),
            utc::rfc3339(backup.stop),
            bytes(backup.size),
            bytes(backup.repository_size),
            backup.wal_start,
            backup.wal_stop
        ));
    }
    if state.info.backups.is_empty() {
        text.push_str("  none\n");
        problems.push(format!(
            "no backup to restore from: take one with `{}`",
            context.command_line("backup --type full")
        ));
    }
    match &state.window {
        Some(window) => {
            text.push_str(&format!(
                "restorable window: {} to {} (the end from {})\n",
                utc::postgres_instant(window.start),
                utc::postgres_instant(window.end),
                window.end_from
            ));
            if !window.missing.is_empty() {
                problems.push(format!(
                    "WAL missing from the repository: {} (a restore cannot cross the gap; take a full backup)",
                    window.missing.join(", ")
                ));
            }
        }
        None => text.push_str("restorable window: none yet\n"),
    }
    if let (Some(min), Some(max)) = (&state.info.archive_min, &state.info.archive_max) {
        text.push_str(&format!("archived WAL in the repository: {min} to {max}\n"));
    }
    let archiver_json = match &state.archiver {
        Ok(archiver) => {
            let timeout = archiver.archive_timeout_seconds;
            let max_lag = max_lag.unwrap_or(Duration::from_secs(
                2 * if timeout == 0 { 60 } else { timeout },
            ));
            let last = match (&archiver.last_archived_wal, archiver.last_archived_age()) {
                (Some(wal), Some(age)) => format!("{wal}, {age:.0} s ago"),
                _ => "none yet".to_owned(),
            };
            text.push_str(&format!(
                "archiver: archive_mode {}, archive_timeout {} s; last archived {last}; {} failure(s) since the cluster started{}; {} segment(s) waiting, lag {:.0} s (max {})\n",
                archiver.archive_mode,
                timeout,
                archiver.failed_count,
                archiver
                    .last_failed_wal
                    .as_ref()
                    .map(|wal| format!(", the last of {wal}"))
                    .unwrap_or_default(),
                archiver.waiting,
                archiver.lag_seconds(),
                flags::show_duration(max_lag)
            ));
            if archiver.archive_mode == "off" {
                problems.push(format!(
                    "archive_mode is off on the live cluster: nothing is archived; run `{}`",
                    context.command_line("setup ...")
                ));
            }
            if archiver.failing() {
                problems.push(format!(
                    "archiving fails: {} failed at {} and nothing has been archived since ({} failure(s) in all); see pgBackRest's log in /var/log/pgbackrest/",
                    archiver.last_failed_wal.as_deref().unwrap_or("a segment"),
                    archiver
                        .last_failed_at
                        .map(|at| utc::rfc3339(at as i64))
                        .unwrap_or_default(),
                    archiver.failed_count
                ));
            }
            if archiver.lag_seconds() > max_lag.as_secs_f64() {
                problems.push(format!(
                    "archiving lags: {} completed segment(s) wait, the oldest for {:.0} s (more than --max-lag {})",
                    archiver.waiting,
                    archiver.lag_seconds(),
                    flags::show_duration(max_lag)
                ));
            }
            let mut json = archiver.json();
            json["max_lag_seconds"] = json!(max_lag.as_secs_f64());
            json
        }
        Err(error) => {
            let said = format!("{error:#}");
            text.push_str(&format!("archiver: unknown ({said})\n"));
            problems.push(format!(
                "the live cluster (port {}, data {}) does not answer, so nothing is being archived: {said}",
                configured.pg_port, configured.pg_path
            ));
            json!({"error": said})
        }
    };
    text.push_str(&format!(
        "pgbackrest: {} (code {}){}\n",
        state.info.status_message,
        state.info.status_code,
        if state.info.backup_running {
            ", a backup is running"
        } else {
            ""
        }
    ));
    if state.info.status_code != 0 && !state.info.backups.is_empty() {
        problems.push(format!(
            "pgbackrest says {:?} (code {})",
            state.info.status_message, state.info.status_code
        ));
    }
    text.push_str(&format!(
        "status: {}\n",
        if problems.is_empty() {
            "ok".to_owned()
        } else {
            problems.join("; ")
        }
    ));
    let json = json!({
        "ok": problems.is_empty(),
        "problems": problems,
        "host": context.host.label(),
        "stanza": context.pgbackrest.stanza,
        "config": context.pgbackrest.config,
        "repository": configured.repo,
        "cipher": state.info.cipher,
        "pgbackrest": {"code": state.info.status_code, "message": state.info.status_message, "backup_running": state.info.backup_running},
        "backups": state.info.backups.iter().map(|backup| json!({
            "label": backup.label,
            "type": backup.kind,
            "start": utc::rfc3339(backup.start),
            "stop": utc::rfc3339(backup.stop),
            "size": backup.size,
            "repository_size": backup.repository_size,
            "wal_start": backup.wal_start,
            "wal_stop": backup.wal_stop,
        })).collect::<Vec<_>>(),
        "window": state.window.as_ref().map(|window| window.json()),
        "archived_wal": {"min": state.info.archive_min, "max": state.info.archive_max},
        "archiver": archiver_json,
    });
    Report {
        text,
        json,
        problems,
    }
}
