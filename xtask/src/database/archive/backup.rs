//! `cargo xtask archive backup`: a full, differential or incremental backup with pgBackRest,
//! which then applies the configured retention; what was taken and what retention removed.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use crate::database::archive::Context;
use crate::flags;
use crate::util::progress::step;
use crate::util::utc;

pub fn run(flags: flags::ArchiveBackup, context: &Context) -> anyhow::Result<()> {
    let started = Instant::now();
    let host = &context.host;
    context.configured()?;
    let before = context.pgbackrest.info(host)?;
    step(
        started,
        &format!(
            "{} backup of stanza {:?} on {}",
            flags.kind.name(),
            context.pgbackrest.stanza,
            host.label()
        ),
    );
    context.pgbackrest.run_with_progress(
        host,
        "backup",
        &[format!("--type={}", flags.kind.name())],
        started,
    )?;
    let after = context.pgbackrest.info(host)?;
    let taken = after
        .backups
        .iter()
        .filter(|backup| !before.backups.iter().any(|old| old.label == backup.label))
        .max_by_key(|backup| backup.stop)
        .context("pgbackrest backup succeeded but pgbackrest info shows no new backup")?;
    let expired: Vec<&str> = before
        .backups
        .iter()
        .filter(|old| !after.backups.iter().any(|backup| backup.label == old.label))
        .map(|old| old.label.as_str())
        .collect();
    step(
        started,
        &format!(
            "backup {} ({}): {} of data, {} in the repository (compressed, encrypted), WAL {} to {}",
            taken.label,
            taken.kind,
            bytes(taken.size),
            bytes(taken.repository_size),
            taken.wal_start,
            taken.wal_stop
        ),
    );
    if expired.is_empty() {
        step(started, "retention removed nothing");
    } else {
        step(
            started,
            &format!("retention removed {}", expired.join(", ")),
        );
    }
    if context.on.json {
        println!(
            "{}",
            json!({
                "label": taken.label,
                "type": taken.kind,
                "start": utc::rfc3339(taken.start),
                "stop": utc::rfc3339(taken.stop),
                "size": taken.size,
                "repository_size": taken.repository_size,
                "wal_start": taken.wal_start,
                "wal_stop": taken.wal_stop,
                "expired": expired,
                "backups": after.backups.len(),
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    }
    Ok(())
}

/// `12.3 MB`.
pub fn bytes(count: u64) -> String {
    let count = count as f64;
    match count {
        _ if count >= 1e9 => format!("{:.2} GB", count / 1e9),
        _ if count >= 1e6 => format!("{:.1} MB", count / 1e6),
        _ if count >= 1e3 => format!("{:.1} kB", count / 1e3),
        _ => format!("{count} B"),
    }
}
