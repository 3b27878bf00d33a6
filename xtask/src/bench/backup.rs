//! `cargo xtask bench backup`: on a generated database, our backup (with its verification)
//! against `pg_dump -Fc` + `sha256sum`, and our restore against `sha256sum -c` +
//! `pg_restore -j1` into an existing database, with `pg_restore -j2` alone beside it.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use xshell::Shell;

use super::{Row, fresh_dir, median, note, seconds, timed};
use crate::database::postgres::{self, Server};
use crate::flags;
use crate::project_root;

/// The generated database, kept between runs (regenerated when the size asked for changes).
pub const DATABASE: &str = "saulpos_bench_pos";
const RESTORED_OURS: &str = "saulpos_bench_restored_ours";
const RESTORED_PLAIN: &str = "saulpos_bench_restored_plain";
const RESTORED_BARE: &str = "saulpos_bench_restored_bare";

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
    let runs = flags.runs.max(1);

    // Each timed run starts from a clean checkpoint, so none pays for the writes of another,
    // and the two sides take turns at going first, so neither always finds the caches warm.
    let checkpoint = || server.psql("postgres", "CHECKPOINT", &[]).map(drop);
    let plain_dump = plain_dir.join(format!("{DATABASE}.dump"));
    let mut backups = Vec::new();
    for run in 0..runs {
        fresh_dir(&ours_dir)?;
        fresh_dir(&plain_dir)?;
        let plain = || {
            checkpoint()?;
            note(&format!(
                "run {}/{runs}: plain backup, pg_dump -Fc then sha256sum",
                run + 1
            ));
            Ok(timed(|| {
                let mut dump = postgres::tool("pg_dump")?;
                dump.args(["-Fc", "-f"])
                    .arg(&plain_dump)
                    .args(server.args(DATABASE));
                succeed(&mut dump)?;
                succeed(Command::new("sha256sum").arg(&plain_dump))
            })?
            .1)
        };
        let ours = || {
            checkpoint()?;
            note(&format!(
                "run {}/{runs}: our backup, cargo xtask backup",
                run + 1
            ));
            Ok(timed(|| {
                flags::Backup {
                    host: server.host.clone(),
                    port: server.port,
                    database: DATABASE.to_owned(),
                    username: server.username.clone(),
                    backup_dir: ours_dir.clone(),
                    compress: 1,
                    keep: None,
                    metrics_file: None,
                    json: false,
                }
                .run(sh)
            })?
            .1)
        };
        let [plain, ours] = in_turn(run, [&plain, &ours])?;
        backups.push((plain, ours));
    }
    let ours_dump = find(&ours_dir, ".dump")?;
    let ours_checksum = find(&ours_dir, ".dump.sha256")?;
    let plain_size = fs::metadata(&plain_dump)?.len();
    let ours_size = fs::metadata(&ours_dump)?.len();

    let mut restores = Vec::new();
    let mut bare_restores = Vec::new();
    // The CPU time the whole machine spent while the plain restore ran: divided by the cores,
    // it is the least time any schedule of the same work could take here.
    let plain_cpu = std::cell::RefCell::new(Vec::new());
    // Both sides restore into an existing, empty database, from a clean checkpoint.
    let empty_database = |name: &str| -> anyhow::Result<()> {
        server.drop_database(name)?;
        server.psql("postgres", "CREATE DATABASE :\"db\"", &[("db", name)])?;
        checkpoint()
    };
    let pg_restore = |jobs: &str, database: &str| -> anyhow::Result<()> {
        let mut restore = postgres::tool("pg_restore")?;
        restore
            .args(["-j", jobs])
            .args(server.args(database))
            .arg(&ours_dump);
        succeed(&mut restore)
    };
    for run in 0..runs {
        let plain = || {
            empty_database(RESTORED_PLAIN)?;
            note(&format!(
                "run {}/{runs}: plain restore, sha256sum -c then pg_restore -j1 into an existing database",
                run + 1
            ));
            let busy_before = busy_cpu_seconds();
            let ((), time) = timed(|| {
                succeed(
                    Command::new("sha256sum")
                        .arg("-c")
                        .arg(ours_checksum.file_name().unwrap())
                        .current_dir(&ours_dir),
                )?;
                pg_restore("1", RESTORED_PLAIN)
            })?;
            if let (Some(before), Some(after)) = (busy_before, busy_cpu_seconds()) {
                plain_cpu.borrow_mut().push(after - before);
            }
            server.drop_database(RESTORED_PLAIN)?;
            Ok(time)
        };
        // Like the plain side, over an existing database: the incident path, which also
        // carries the target's owner, locale and settings over and keeps it aside.
        let ours = || {
            empty_database(RESTORED_OURS)?;
            note(&format!(
                "run {}/{runs}: our restore over an existing database, cargo xtask restore --yes (checksum, scratch database, check, swap)",
                run + 1
            ));
            let ((), time) = timed(|| {
                restore_flags(&server, RESTORED_OURS, &ours_dump, &ours_checksum).run(sh)
            })?;
            server.drop_database(RESTORED_OURS)?;
            let kept_aside = server.psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE starts_with(datname, :'prefix')",
                &[("prefix", &format!("{RESTORED_OURS}_before_"))],
            )?;
            for name in kept_aside.lines() {
                server.drop_database(name)?;
            }
            Ok(time)
        };
        // pg_restore -j2 by itself, without our checksum, scratch database, check and swap:
        // what two jobs of its own scheduling allow here, and so what ours costs on top.
        let bare = || {
            empty_database(RESTORED_BARE)?;
            note(&format!(
                "run {}/{runs}: pg_restore -j2 alone into an existing database",
                run + 1
            ));
            let ((), time) = timed(|| pg_restore("2", RESTORED_BARE))?;
            server.drop_database(RESTORED_BARE)?;
            Ok(time)
        };
        let [plain, ours, bare] = in_turn(run, [&plain, &ours, &bare])?;
        restores.push((plain, ours));
        bare_restores.push((plain, bare));
    }
    fs::remove_dir_all(&work)?;

    let backup_ratio = median_ratio(&backups);
    let size_ratio = ours_size as f64 / plain_size as f64;
    let restore_ratio = median_ratio(&restores);
    let bare_ratio = median_ratio(&bare_restores);
    // Ours against pg_restore -j2 alone, run by run: the cost of the checksum, the scratch
    // database, the check and the swap over the same two jobs.
    let over_bare: Vec<(Duration, Duration)> = restores
        .iter()
        .zip(&bare_restores)
        .map(|((_, ours), (_, bare))| (*bare, *ours))
        .collect();
    let over_bare_ratio = median_ratio(&over_bare);
    let times = |pairs: &[(Duration, Duration)], pick: fn(&(Duration, Duration)) -> Duration| {
        let samples: Vec<Duration> = pairs.iter().map(pick).collect();
        format!("{} (median of {runs})", seconds(median(samples)))
    };
    let (plain_backup, ours_backup) = (times(&backups, |p| p.0), times(&backups, |p| p.1));
    let (plain_restore, ours_restore) = (times(&restores, |p| p.0), times(&restores, |p| p.1));
    let bare_restore = times(&bare_restores, |p| p.1);
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let mut bounds: Vec<f64> = plain_cpu
        .borrow()
        .iter()
        .zip(&restores)
        .map(|(cpu, (plain, _))| cpu / cores as f64 / plain.as_secs_f64())
        .collect();
    bounds.sort_by(f64::total_cmp);
    let bound = bounds
        .get(bounds.len() / 2)
        .map_or("unknown (no /proc/stat)".to_owned(), |bound| {
            format!("{bound:.2}")
        });
    Ok(vec![
        Row::figure(
            "database size (pg_database_size)",
            format!("{:.0} MB", size as f64 / 1e6),
        ),
        Row::figure("backup, pg_dump -Fc + sha256sum", plain_backup),
        Row::figure(
            "backup, ours (compress 1, verified by pg_restore)",
            ours_backup,
        ),
        Row::goal(
            "backup time, ours / plain (median of the runs' ratios)",
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
        Row::figure("restore, sha256sum -c + pg_restore -j1", plain_restore),
        Row::figure(
            "restore, ours (--jobs 2, over an existing database: scratch, check, swap)",
            ours_restore,
        ),
        Row::figure(
            "restore, pg_restore -j2 alone (no checksum, scratch database, check or swap)",
            bare_restore,
        ),
        Row::figure(
            "restore time, pg_restore -j2 alone / plain (median of the runs' ratios): what its own scheduling of two jobs allows here",
            format!("{bare_ratio:.2}"),
        ),
        Row::figure(
            format!(
                "restore, least ratio any schedule could reach here: the plain restore's CPU time / {cores} cores / its time"
            ),
            bound,
        ),
        Row::figure(
            "restore time, ours / plain (median of the runs' ratios)",
            format!("{restore_ratio:.2}"),
        ),
        Row::goal(
            "restore time, ours / pg_restore -j2 alone in the same run (median of the runs' ratios)",
            format!("{over_bare_ratio:.3}"),
            "<= 1.03",
            over_bare_ratio <= 1.03,
        ),
    ])
}

/// `cargo xtask restore --yes --jobs 2` of `dump` into `database`, as the benches run it.
pub fn restore_flags(
    server: &Server,
    database: &str,
    dump: &Path,
    checksum: &Path,
) -> flags::Restore {
    flags::Restore {
        host: server.host.clone(),
        port: server.port,
        database: database.to_owned(),
        username: server.username.clone(),
        backup_file: dump.to_owned(),
        checksum_file: checksum.to_owned(),
        yes: true,
        jobs: 2,
        count_rows_up_to_mb: 64,
        json: false,
    }
}

/// Runs each side once, starting with side `run % N` and going round, so that no side always
/// goes first and finds the caches warm; returns the times in the order the sides were given.
fn in_turn<const N: usize>(
    run: u32,
    sides: [&dyn Fn() -> anyhow::Result<Duration>; N],
) -> anyhow::Result<[Duration; N]> {
    let mut times = [Duration::ZERO; N];
    for step in 0..N {
        let side = (run as usize + step) % N;
        times[side] = sides[side]()?;
    }
    Ok(times)
}

/// The median of each run's ours / plain: runs taken close together compare fairly even when
/// the machine's speed drifts between them.
fn median_ratio(pairs: &[(Duration, Duration)]) -> f64 {
    let mut ratios: Vec<f64> = pairs
        .iter()
        .map(|(plain, ours)| ours.as_secs_f64() / plain.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    if ratios.len().is_multiple_of(2) {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    } else {
        ratios[middle]
    }
}

/// The CPU time all processes on the machine have used since it booted (`/proc/stat`, in
/// the kernel's 100 ticks a second): user, nice, system, irq and softirq, not idle, iowait or
/// steal. `None` where there is no `/proc/stat`.
fn busy_cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&index| fields.get(index))
        .sum::<f64>();
    Some(busy / 100.0)
}

/// Makes sure the bench database holds about `size_mb` MB of sales; returns its size in bytes.
pub fn generate(server: &Server, size_mb: u64) -> anyhow::Result<u64> {
    let exists = server.database_exists(DATABASE)?;
    if exists {
        let recorded = server
            .psql(DATABASE, "SELECT size_mb FROM bench_meta", &[])
            .unwrap_or_default();
        if recorded.trim() == size_mb.to_string() {
            note(&format!("reusing database {DATABASE} ({size_mb} MB)"));
            return database_size(server);
        }
        server.drop_database(DATABASE)?;
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
    // One line rewritten in place on a terminal; a line per batch in a CI log.
    let terminal = std::io::stderr().is_terminal();
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
        if terminal {
            eprint!("\rbench: {sales} sales");
        } else {
            note(&format!("{sales} sales"));
        }
    }
    if terminal {
        eprintln!();
    }
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

/// The one file in `dir` whose name ends with `suffix`.
pub fn find(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(suffix))
        .with_context(|| format!("no *{suffix} in {}", dir.display()))
}

/// Runs a plain tool, its output discarded, and fails with its message if it fails.
pub fn succeed(command: &mut Command) -> anyhow::Result<()> {
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
