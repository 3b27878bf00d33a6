//! `cargo xtask archive extract`: tables as they were at a point in time, without touching the
//! live cluster. A scratch cluster (no TCP port) is restored to the time, each table is
//! `pg_dump`ed into `<table>-<time>.dump` with its `.sha256` (verified as `backup` verifies,
//! the files `cargo xtask restore` takes), and the scratch cluster is removed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use crate::database::archive::Context;
use crate::database::archive::cluster;
use crate::database::archive::pitr::{self, Plan};
use crate::database::backup::write_verified_dump;
use crate::database::postgres::conninfo_dbname;
use crate::flags;
use crate::release::checksum;
use crate::util::progress::step;
use crate::util::{durable, utc};

pub fn check_flags(flags: &flags::ArchiveExtract) -> anyhow::Result<()> {
    utc::parse_instant(&flags.to).map_err(|error| anyhow::anyhow!("--to: {error}"))?;
    if !flags.backup_dir.is_dir() {
        bail!(
            "{} does not exist; create the folder for the dumps and run again",
            flags.backup_dir.display()
        );
    }
    for table in &flags.tables {
        let plain = |part: &str| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
                && part.len() <= 63
        };
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| plain(part)) {
            bail!(
                "--table {table:?}: give a table as it is named in SQL without quotes, e.g. sales or public.sales (letters, digits, _ and $)"
            );
        }
    }
    if flags.database.is_empty() {
        bail!("--database: give the database that holds the tables, e.g. saulpos");
    }
    Ok(())
}

pub fn run(flags: flags::ArchiveExtract, context: &Context) -> anyhow::Result<()> {
    let started = Instant::now();
    let host = &context.host;
    let target = utc::parse_instant(&flags.to).map_err(anyhow::Error::msg)?;
    let stamp = utc::compact(target.div_euclid(1_000_000));
    let files: Vec<(String, PathBuf)> = flags
        .tables
        .iter()
        .map(|table| {
            (
                table.clone(),
                flags.backup_dir.join(format!("{table}-{stamp}.dump")),
            )
        })
        .collect();
    for (_, path) in &files {
        if path.exists() {
            bail!(
                "{} exists already; move it away or give another folder; nothing was created",
                path.display()
            );
        }
    }
    let version = context
        .ready_to_restore(target, &flags.to, started)?
        .version;
    let prefix = format!("{}-extract-", context.pgbackrest.stanza);
    for left in cluster::list(host)?
        .iter()
        .filter(|one| one.name.starts_with(&prefix))
    {
        eprintln!(
            "note: cluster {} was left by an extract that was killed with its guard; if no extract runs now, remove it:  pg_dropcluster --stop {} {}",
            left.id(),
            left.version,
            left.name
        );
    }
    let name = format!("{prefix}{}", std::process::id());
    let plan = Plan {
        version: &version,
        name: &name,
        port: None,
        data_dir: None,
        // Reachable only through the host's socket, by the postgres user.
        options: &["listen_addresses="],
        target,
    };
    let restored = pitr::restore_beside(host, &context.pgbackrest, &context.on, &plan, started)?;
    let port = restored.cluster.port.to_string();
    let dbname = conninfo_dbname(&flags.database);
    let mut written = Vec::new();
    for (table, path) in &files {
        durable::remove_stale_partials(&flags.backup_dir, &format!("{table}-"))?;
        let pg_dump = host.postgres_command(&[
            "pg_dump",
            "--format=custom",
            "--strict-names",
            "-p",
            &port,
            "-d",
            &dbname,
            "-t",
            table,
        ]);
        let dumped = write_verified_dump(
            pg_dump,
            &format!(
                "table {table} of database {:?} as of {}",
                flags.database,
                utc::postgres_instant(target)
            ),
            path,
        )?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let checksum_path = PathBuf::from(format!("{}.sha256", path.display()));
        durable::write_with_mode(
            &checksum_path,
            checksum::line(&dumped.sha256, &name).as_bytes(),
            0o600,
        )?;
        step(
            started,
            &format!(
                "{}: table {table} as of the target ({} bytes, sha256 {})",
                path.display(),
                dumped.size,
                dumped.sha256
            ),
        );
        written.push(json!({
            "table": table,
            "dump": path,
            "checksum_file": checksum_path,
            "size": dumped.size,
            "sha256": dumped.sha256,
        }));
    }
    let summary = restored.json();
    restored.remove()?;
    step(
        started,
        &format!("removed the scratch cluster {version}/{name}"),
    );
    eprintln!(
        "load a table into a database of its own with `cargo xtask restore`, then copy the rows you need back, e.g.:"
    );
    if let Some((_, path)) = files.first() {
        eprintln!(
            "  $ cargo xtask restore 127.0.0.1 5432 {}_recovered postgres {} {}.sha256",
            flags.database,
            path.display(),
            path.display()
        );
    }
    if context.on.json {
        println!(
            "{}",
            json!({
                "target": utc::postgres_instant(target),
                "database": flags.database,
                "restored": summary,
                "dumps": written,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    }
    Ok(())
}
