//! `cargo xtask bench archive`: pgBackRest beside our dumps on the point-of-sale database
//! `bench backup` generates, in a cluster of the bench's own (archiving needs a restart; kept
//! for the next run, with its repository, under target/bench/archive/): a full backup with
//! `archive backup` beside `backup` (pg_dump -Fc + SHA-256), a point-in-time `archive restore`
//! beside the dump's `restore`, and the recovery point: from a commit to its WAL in the
//! repository with archive_timeout at 10 s.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::Shell;

use super::backup::{DATABASE, find, generate, restore_flags, succeed};
use super::{Row, fresh_dir, median, note, seconds, timed};
use crate::database::postgres::Server;
use crate::flags;
use crate::project_root;

/// The bench's own cluster.
const CLUSTER: &str = "saulpos-bench-archive";
const STANZA: &str = "saulpos-bench";
const RESTORED: &str = "saulpos_bench_restored_dump";

pub fn run(sh: &Shell, flags: &flags::BenchArchive) -> anyhow::Result<Vec<Row>> {
    let work = project_root().join("target/bench/archive");
    fs::create_dir_all(&work)?;
    // The postgres user reads the configuration and writes the repository in here.
    for dir in [
        project_root().join("target"),
        project_root().join("target/bench"),
        work.clone(),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    let version = pg_version()?;
    let port = cluster(&version)?;
    let server = Server {
        host: "127.0.0.1".to_owned(),
        port,
        username: "postgres".to_owned(),
    };
    let size = generate(&server, flags.size_mb)?;
    let on = flags::ArchiveOn {
        on: None,
        ssh_config: None,
        config: work.join("pgbackrest.conf").display().to_string(),
        stanza: STANZA.to_owned(),
        json: false,
    };
    let archive = |what: flags::ArchiveWhat| {
        flags::Archive {
            what,
            on: on.clone(),
        }
        .run()
    };
    note("archive setup (archive_timeout 10 s)");
    archive(flags::ArchiveWhat::Setup(flags::ArchiveSetup {
        pg_path: format!("/var/lib/postgresql/{version}/{CLUSTER}"),
        pg_port: port,
        repo: work.join("repo").display().to_string(),
        retention_full: 2,
        archive_timeout: Duration::from_secs(10),
        restart: true,
    }))?;

    let dumps = work.join("dumps");
    let runs = flags.runs.max(1);
    let checkpoint = || server.psql("postgres", "CHECKPOINT", &[]).map(drop);
    let mut backups = Vec::new();
    for run in 0..runs {
        fresh_dir(&dumps)?;
        fs::set_permissions(&dumps, fs::Permissions::from_mode(0o700))?;
        checkpoint()?;
        note(&format!(
            "run {}/{runs}: pgBackRest full backup (archive backup --type full)",
            run + 1
        ));
        let ((), pgbackrest) = timed(|| {
            archive(flags::ArchiveWhat::Backup(flags::ArchiveBackup {
                kind: flags::BackupKind::Full,
            }))
        })?;
        checkpoint()?;
        note(&format!(
            "run {}/{runs}: our dump (backup: pg_dump -Fc + SHA-256, verified)",
            run + 1
        ));
        let ((), dump) = timed(|| {
            flags::Backup {
                host: server.host.clone(),
                port,
                database: DATABASE.to_owned(),
                username: server.username.clone(),
                backup_dir: dumps.clone(),
                compress: 1,
                keep: None,
                metrics_file: None,
                json: false,
            }
            .run(sh)
        })?;
        backups.push((pgbackrest, dump));
    }
    let dump = find(&dumps, ".dump")?;
    let checksum = find(&dumps, ".dump.sha256")?;
    let dump_size = fs::metadata(&dump)?.len();
    let repository_size = newest_backup_size(&on)?;

    // A time after everything above, with a commit after it, archived.
    server.psql(
        DATABASE,
        "CREATE TABLE IF NOT EXISTS bench_mark (at timestamptz)",
        &[],
    )?;
    server.psql(DATABASE, "INSERT INTO bench_mark VALUES (now())", &[])?;
    std::thread::sleep(Duration::from_millis(1100));
    let target = server.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        &[],
    )?;
    let mut restores = Vec::new();
    for run in 0..runs {
        let restore_port = super::free_port()?;
        checkpoint()?;
        note(&format!(
            "run {}/{runs}: archive restore --to {target} (a new cluster, WAL replayed, checked)",
            run + 1
        ));
        let ((), pitr) = timed(|| {
            archive(flags::ArchiveWhat::Restore(flags::ArchiveRestore {
                to: target.clone(),
                pg_port: restore_port,
                pg_path: None,
                switch: false,
                yes: false,
            }))
        })?;
        drop_cluster(&version, &format!("{STANZA}-pitr-"))?;
        server.drop_database(RESTORED)?;
        checkpoint()?;
        note(&format!(
            "run {}/{runs}: our dump's restore (restore: checksum, scratch database, check, swap)",
            run + 1
        ));
        let ((), restored) = timed(|| restore_flags(&server, RESTORED, &dump, &checksum).run(sh))?;
        server.drop_database(RESTORED)?;
        restores.push((pitr, restored));
    }

    let rpo = recovery_points(&server, flags.rpo_samples.max(1))?;
    let worst = rpo.iter().copied().max().unwrap_or_default();
    let pick = |pairs: &[(Duration, Duration)], first: bool| {
        let samples = pairs
            .iter()
            .map(|pair| if first { pair.0 } else { pair.1 })
            .collect();
        format!("{} (median of {runs})", seconds(median(samples)))
    };
    let ratio = |pairs: &[(Duration, Duration)]| {
        let mut ratios: Vec<f64> = pairs
            .iter()
            .map(|(first, second)| first.as_secs_f64() / second.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    Ok(vec![
        Row::figure(
            "database size (pg_database_size)",
            format!("{:.0} MB", size as f64 / 1e6),
        ),
        Row::figure(
            "full backup, pgBackRest (archive backup: lz4, 2 processes, aes-256-cbc)",
            pick(&backups, true),
        ),
        Row::figure(
            "backup, ours (pg_dump -Fc compress 1 + SHA-256, verified)",
            pick(&backups, false),
        ),
        Row::figure(
            "backup time, pgBackRest / ours",
            format!("{:.2}", ratio(&backups)),
        ),
        Row::figure(
            "full backup in the repository (compressed, encrypted)",
            format!("{repository_size} bytes"),
        ),
        Row::figure("dump, ours", format!("{dump_size} bytes")),
        Row::figure(
            "point-in-time restore, archive restore (new cluster, WAL replayed, promoted, checked)",
            pick(&restores, true),
        ),
        Row::figure(
            "dump restore, ours (restore --jobs 2: scratch database, check, swap)",
            pick(&restores, false),
        ),
        Row::figure(
            "restore time, archive restore / dump restore",
            format!("{:.2}", ratio(&restores)),
        ),
        Row::figure(
            format!(
                "recovery point, a commit to its WAL in the repository (median of {})",
                rpo.len()
            ),
            seconds(median(rpo.clone())),
        ),
        Row::goal(
            format!(
                "recovery point, worst of {} (archive_timeout 10 s)",
                rpo.len()
            ),
            seconds(worst),
            "< 11 s",
            worst < Duration::from_secs(11),
        ),
    ])
}

/// PostgreSQL's major version here.
fn pg_version() -> anyhow::Result<String> {
    let listed = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .context("bench archive needs Debian's PostgreSQL cluster tools (apt-get install postgresql-common)")?;
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("pg_lsclusters lists no cluster: install PostgreSQL")
}

/// The bench's cluster (made with trust for local connections the first time), running; its
/// port.
fn cluster(version: &str) -> anyhow::Result<u16> {
    let row = |listing: &str| {
        listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.len() > 3 && fields[1] == CLUSTER)
            .map(|fields| {
                (
                    fields[2].parse::<u16>().unwrap_or(0),
                    fields[3].starts_with("online"),
                )
            })
    };
    let list = || -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(
            &Command::new("pg_lsclusters")
                .arg("--no-header")
                .output()?
                .stdout,
        )
        .into_owned())
    };
    if row(&list()?).is_none() {
        note(&format!(
            "making cluster {version}/{CLUSTER} (kept for the next run)"
        ));
        succeed(Command::new("pg_createcluster").args([
            "--start-conf=manual",
            version,
            CLUSTER,
            "--",
            "--auth-local=trust",
            "--auth-host=trust",
        ]))?;
    }
    let (port, online) = row(&list()?).context("pg_createcluster made no bench cluster")?;
    if !online {
        succeed(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            version,
            CLUSTER,
            "start",
        ]))?;
    }
    Ok(port)
}

/// Removes the clusters whose name starts with `prefix` (a restore's).
fn drop_cluster(version: &str, prefix: &str) -> anyhow::Result<()> {
    let listed = Command::new("pg_lsclusters").arg("--no-header").output()?;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 1 && fields[1].starts_with(prefix) {
            succeed(Command::new("pg_dropcluster").args(["--stop", version, fields[1]]))?;
        }
    }
    Ok(())
}

/// The repository size of the newest backup, from `pgbackrest info`.
fn newest_backup_size(on: &flags::ArchiveOn) -> anyhow::Result<u64> {
    let host = crate::database::archive::host::DbHost::connect(on)?;
    let info = crate::database::pgbackrest::PgBackRest::new(&on.config, &on.stanza)?.info(&host)?;
    info.backups
        .iter()
        .max_by_key(|backup| backup.stop)
        .map(|backup| backup.repository_size)
        .context("no backup in the bench's repository")
}

/// From a commit to the moment its WAL segment is archived, `samples` times, each commit at a
/// different point of archive_timeout's cycle.
fn recovery_points(server: &Server, samples: u32) -> anyhow::Result<Vec<Duration>> {
    let mut points = Vec::new();
    for sample in 0..samples {
        // Spread the commits over the 10 s cycle.
        std::thread::sleep(Duration::from_millis(1000 + 3300 * u64::from(sample % 3)));
        let committed = Instant::now();
        // The commit, then (in a statement of its own) the segment its record went into: the
        // insert position, since pg_current_wal_lsn() is only what has been written out.
        let segment = server.psql(
            DATABASE,
            "INSERT INTO bench_mark VALUES (now());
             SELECT pg_walfile_name(pg_current_wal_insert_lsn());",
            &[],
        )?;
        let segment = segment.trim().to_owned();
        loop {
            let archived = server.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                &[],
            )?;
            if archived.trim().get(8..) >= segment.get(8..) {
                break;
            }
            if committed.elapsed() > Duration::from_secs(120) {
                bail!("segment {segment} was not archived within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = committed.elapsed();
        note(&format!(
            "recovery point {}/{samples}: {}",
            sample + 1,
            seconds(took)
        ));
        points.push(took);
    }
    Ok(points)
}
