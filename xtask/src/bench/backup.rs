//! `cargo xtask bench backup`: on a generated database, our backup (with its verification)
//! against `pg_dump -Fc` + `sha256sum`, and our restore against `sha256sum -c` +
//! `pg_restore -j1` into an existing database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use xshell::Shell;

use super::{Row, fresh_dir, note, seconds, timed};
use crate::flags;
use crate::postgres::{self, Server};
use crate::project_root;

/// The generated database, kept between runs (regenerated when the size asked for changes).
const DATABASE: &str = "saulpos_bench_pos";
const RESTORED_OURS: &str = "saulpos_bench_restored_ours";
const RESTORED_PLAIN: &str = "saulpos_bench_restored_plain";

pub fn run(sh: &Shell, flags: &flags::BenchBackup) -> anyhow::Result<Vec<Row>> {
    let server = Server {
        host: flags.database.host.clone(),
        port: flags.database.port,
        username: flags.database.username.clone(),
    };
    let size = generate(&server, flags.size_mb)?;
    let work = flags
        .work_dir
        .clone()
        .unwrap_or_else(|| project_root().join("target/bench/backup"));
    fresh_dir(&work)?;
    let (ours_dir, plain_dir) = (work.join("ours"), work.join("plain"));
    fs::create_dir_all(&ours_dir)?;
    fs::create_dir_all(&plain_dir)?;

    // Each timed run starts from a clean checkpoint, so none pays for the writes of another.
    let checkpoint = || server.psql("postgres", "CHECKPOINT", &[]).map(drop);
    checkpoint()?;
    note("plain backup: pg_dump -Fc, then sha256sum");
    let plain_dump = plain_dir.join(format!("{DATABASE}.dump"));
    let ((), plain_backup) = timed(|| {
        let mut dump = postgres::tool("pg_dump")?;
        dump.args(["-Fc", "-f"])
            .arg(&plain_dump)
            .args(server.args(DATABASE));
        succeed(&mut dump)?;
        succeed(Command::new("sha256sum").arg(&plain_dump))
    })?;

    checkpoint()?;
    note("our backup: cargo xtask backup (hashed while streaming, verified by pg_restore)");
    let ((), ours_backup) = timed(|| {
        flags::Backup {
            host: server.host.clone(),
            port: server.port,
            database: DATABASE.to_owned(),
            username: server.username.clone(),
            backup_dir: ours_dir.clone(),
            compress: 1,
            keep: None,
            json: false,
        }
        .run(sh)
    })?;
    let ours_dump = find(&ours_dir, ".dump")?;
    let ours_checksum = find(&ours_dir, ".dump.sha256")?;
    let plain_size = fs::metadata(&plain_dump)?.len();
    let ours_size = fs::metadata(&ours_dump)?.len();

    for name in [RESTORED_OURS, RESTORED_PLAIN] {
        drop_database(&server, name)?;
    }
    server.psql(
        "postgres",
        "CREATE DATABASE :\"db\"",
        &[("db", RESTORED_PLAIN)],
    )?;
    checkpoint()?;
    note("plain restore: sha256sum -c, then pg_restore -j1 into an existing database");
    let ((), plain_restore) = timed(|| {
        succeed(
            Command::new("sha256sum")
                .arg("-c")
                .arg(ours_checksum.file_name().unwrap())
                .current_dir(&ours_dir),
        )?;
        let mut restore = postgres::tool("pg_restore")?;
        restore
            .args(["-j", "1"])
            .args(server.args(RESTORED_PLAIN))
            .arg(&ours_dump);
        succeed(&mut restore)
    })?;

    drop_database(&server, RESTORED_PLAIN)?;
    checkpoint()?;
    note("our restore: cargo xtask restore (checksum, scratch database, check, swap)");
    let ((), ours_restore) = timed(|| {
        flags::Restore {
            host: server.host.clone(),
            port: server.port,
            database: RESTORED_OURS.to_owned(),
            username: server.username.clone(),
            backup_file: ours_dump.clone(),
            checksum_file: ours_checksum.clone(),
            yes: true,
            jobs: 2,
            json: false,
        }
        .run(sh)
    })?;
    for name in [RESTORED_OURS, RESTORED_PLAIN] {
        drop_database(&server, name)?;
    }
    fs::remove_dir_all(&work)?;

    let backup_ratio = ours_backup.as_secs_f64() / plain_backup.as_secs_f64();
    let size_ratio = ours_size as f64 / plain_size as f64;
    let restore_ratio = ours_restore.as_secs_f64() / plain_restore.as_secs_f64();
    Ok(vec![
        Row::figure(
            "database size (pg_database_size)",
            format!("{:.0} MB", size as f64 / 1e6),
        ),
        Row::figure("backup, pg_dump -Fc + sha256sum", seconds(plain_backup)),
        Row::figure(
            "backup, ours (compress 1, verified by pg_restore)",
            seconds(ours_backup),
        ),
        Row::goal(
            "backup time, ours / plain",
            format!("{backup_ratio:.2}"),
            "<= 0.6",
            backup_ratio <= 0.6,
        ),
        Row::figure("dump size, pg_dump -Fc", format!("{plain_size} bytes")),
        Row::figure("dump size, ours", format!("{ours_size} bytes")),
        Row::goal(
            "dump size, ours / plain",
            format!("{size_ratio:.3}"),
            "<= 1.15",
            size_ratio <= 1.15,
        ),
        Row::figure(
            "restore, sha256sum -c + pg_restore -j1",
            seconds(plain_restore),
        ),
        Row::figure(
            "restore, ours (--jobs 2, scratch database, swap)",
            seconds(ours_restore),
        ),
        Row::goal(
            "restore time, ours / plain",
            format!("{restore_ratio:.2}"),
            "<= 0.8",
            restore_ratio <= 0.8,
        ),
    ])
}

/// Makes sure the bench database holds about `size_mb` MB of sales; returns its size in bytes.
fn generate(server: &Server, size_mb: u64) -> anyhow::Result<u64> {
    let exists = server.database_exists(DATABASE)?;
    if exists {
        let recorded = server
            .psql(DATABASE, "SELECT size_mb FROM bench_meta", &[])
            .unwrap_or_default();
        if recorded.trim() == size_mb.to_string() {
            note(&format!("reusing database {DATABASE} ({size_mb} MB)"));
            return database_size(server);
        }
        drop_database(server, DATABASE)?;
    }
    note(&format!(
        "generating database {DATABASE} of about {size_mb} MB (kept for the next run)"
    ));
    server.psql("postgres", "CREATE DATABASE :\"db\"", &[("db", DATABASE)])?;
    server.psql(
        DATABASE,
        "CREATE TABLE store (id integer PRIMARY KEY, name text NOT NULL);
         INSERT INTO store SELECT g, 'Store ' || g || ' – Zürich' FROM generate_series(1, 100) g;
         CREATE TABLE sale (
             id bigint PRIMARY KEY,
             store_id integer NOT NULL REFERENCES store (id),
             sold_at timestamptz NOT NULL,
             total numeric(12, 2) NOT NULL,
             note text
         );
         CREATE TABLE sale_line (
             sale_id bigint NOT NULL,
             line integer NOT NULL,
             sku text NOT NULL,
             quantity integer NOT NULL,
             unit_price numeric(12, 2) NOT NULL,
             PRIMARY KEY (sale_id, line)
         );
         CREATE TABLE payment (
             id bigint PRIMARY KEY,
             sale_id bigint NOT NULL,
             method text NOT NULL,
             amount numeric(12, 2) NOT NULL,
             reference text
         );
         CREATE TABLE bench_meta (size_mb bigint NOT NULL);",
        &[],
    )?;
    // A point-of-sale shape: sales, their lines and payments, filled in batches until the
    // heap is near the size asked for (the indexes come on top).
    let target = size_mb * 1_000_000;
    let batch = 100_000u64;
    let mut sales = 0;
    while database_size(server)? < target * 8 / 10 {
        server.psql(
            DATABASE,
            "INSERT INTO sale
             SELECT g, 1 + g % 100, timestamptz '2026-01-01' + g * interval '7 seconds',
                    (g % 100000) / 100.0,
                    CASE WHEN g % 3 = 0 THEN NULL ELSE 'receipt ' || g || ' ' || md5(g::text) END
             FROM generate_series(:first::bigint, :last::bigint) g;
             INSERT INTO sale_line
             SELECT g, l, 'SKU-' || lpad(((g * 7 + l) % 5000)::text, 6, '0'), 1 + (g + l) % 9,
                    ((g * l) % 10000) / 100.0
             FROM generate_series(:first::bigint, :last::bigint) g, generate_series(1, 3) l;
             INSERT INTO payment
             SELECT g, g, (ARRAY['card', 'cash', 'voucher'])[1 + g % 3], (g % 100000) / 100.0,
                    CASE WHEN g % 3 = 1 THEN NULL ELSE 'auth-' || md5((g * 31)::text) END
             FROM generate_series(:first::bigint, :last::bigint) g;",
            &[
                ("first", &(sales + 1).to_string()),
                ("last", &(sales + batch).to_string()),
            ],
        )?;
        sales += batch;
        eprint!("\rbench: {sales} sales");
    }
    eprintln!();
    server.psql(
        DATABASE,
        "ALTER TABLE sale_line ADD FOREIGN KEY (sale_id) REFERENCES sale (id);
         ALTER TABLE payment ADD FOREIGN KEY (sale_id) REFERENCES sale (id);
         CREATE INDEX sale_sold_at ON sale (sold_at);
         CREATE INDEX sale_line_sku ON sale_line (sku);
         CREATE INDEX payment_sale ON payment (sale_id);
         INSERT INTO bench_meta VALUES (:size);
         VACUUM ANALYZE;",
        &[("size", &size_mb.to_string())],
    )?;
    database_size(server)
}

fn database_size(server: &Server) -> anyhow::Result<u64> {
    let size = server.psql(DATABASE, "SELECT pg_database_size(current_database())", &[])?;
    Ok(size.trim().parse()?)
}

fn drop_database(server: &Server, name: &str) -> anyhow::Result<()> {
    server.psql(
        "postgres",
        "DROP DATABASE IF EXISTS :\"db\" WITH (FORCE)",
        &[("db", name)],
    )?;
    Ok(())
}

/// The one file in `dir` whose name ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(suffix))
        .with_context(|| format!("no *{suffix} in {}", dir.display()))
}

/// Runs a plain tool, its output discarded, and fails with its message if it fails.
fn succeed(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
