//! `cargo xtask restore`: check the checksum before touching any database, restore into a
//! fresh scratch database, check it, then swap it in with both renames in one transaction.
//! A failure at any point leaves the target as it was.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::backup::collect_stderr;
use crate::postgres::{self, Server};
use crate::progress::step;
use crate::{checksum, flags, utc};

impl flags::Restore {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.jobs == 0 {
            bail!("--jobs 0 restores nothing; use 1 or more (default 2)");
        }
        let server = Server {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
        };

        // 1. Nothing is touched until the dump is known to be the one that was backed up.
        let (recorded, named) = checksum::read(&self.checksum_file)?;
        let backup_name = self
            .backup_file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if named != backup_name {
            bail!(
                "checksum file {} is for {named:?}, not for {backup_name:?}; give the .sha256 written beside this backup; nothing was restored",
                self.checksum_file.display()
            );
        }
        let (actual, size) = checksum::sha256_file(&self.backup_file)?;
        if actual != recorded {
            bail!(
                "{} does not match its checksum (sha256 {actual}, recorded {recorded}): the file is damaged or not that backup; nothing was restored",
                self.backup_file.display()
            );
        }
        let entries = list(&self.backup_file)?;
        step(
            started,
            &format!(
                "checksum ok: {} ({size} bytes, {} entries)",
                self.backup_file.display(),
                entries.len()
            ),
        );

        // 2. Restoring over a database needs an approved incident command.
        let exists = server.database_exists(&self.database)?;
        let now = utc::compact(utc::now());
        let previous_name =
            postgres::identifier_with_suffix(&self.database, &format!("_before_{now}"));
        if exists {
            confirm(&self, &server, &previous_name)?;
        }

        // 3. Restore into a scratch database; drop it on any failure.
        let scratch = Scratch {
            server: server.clone(),
            name: postgres::identifier_with_suffix(
                &self.database,
                &format!("_restoring_{}", std::process::id()),
            ),
            keep: false,
        };
        server.psql(
            "postgres",
            "CREATE DATABASE :\"name\" TEMPLATE template0",
            &[("name", &scratch.name)],
        )?;
        step(
            started,
            &format!("created scratch database {:?}", scratch.name),
        );
        restore_into(
            &server,
            &scratch.name,
            &self.backup_file,
            &entries,
            self.jobs,
            started,
        )?;
        let tables = check(&server, &scratch.name, &entries)?;
        step(
            started,
            &format!(
                "checked {:?}: {} tables, {} rows",
                scratch.name,
                tables.len(),
                tables.iter().map(|(_, rows)| rows).sum::<i64>()
            ),
        );

        // 4. Swap: both renames commit together or not at all.
        let ended = swap(
            &server,
            &self.database,
            &scratch.name,
            exists.then_some(previous_name.as_str()),
        )?;
        let mut scratch = scratch;
        scratch.keep = true;
        if ended > 0 {
            step(
                started,
                &format!("ended {ended} open connection(s) to {:?}", self.database),
            );
        }
        step(
            started,
            &format!(
                "restored {:?} from {}",
                self.database,
                self.backup_file.display()
            ),
        );
        if exists {
            eprintln!("the previous data is kept as database {previous_name:?}.");
            eprintln!(
                "  drop it when no longer needed:  psql -h {} -p {} -U {} -d postgres -c 'DROP DATABASE \"{previous_name}\"'",
                self.host, self.port, self.username
            );
            eprintln!(
                "  or swap it back:  psql -h {} -p {} -U {} -d postgres -c 'ALTER DATABASE \"{}\" RENAME TO \"{}_restored\"' -c 'ALTER DATABASE \"{previous_name}\" RENAME TO \"{}\"'",
                self.host, self.port, self.username, self.database, self.database, self.database
            );
        }
        for (table, rows) in &tables {
            eprintln!("  {table}: {rows} rows");
        }
        if self.json {
            let summary = json!({
                "database": self.database,
                "backup": self.backup_file,
                "sha256": actual,
                "tables": tables.iter().map(|(name, rows)| json!({"table": name, "rows": rows})).collect::<Vec<_>>(),
                "previous_database": exists.then_some(previous_name),
                "connections_ended": ended,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// One line of `pg_restore --list`: its text and its entry type (`TABLE DATA`, `INDEX`, ...).
struct ListEntry {
    line: String,
    kind: String,
}

impl ListEntry {
    /// `<TYPE> <schema> <name>` as the listing shows it: what names the item.
    fn id(&self) -> String {
        let after_ids = self.line.splitn(4, ' ').nth(3).unwrap_or_default();
        match after_ids.rsplit_once(' ') {
            Some((without_owner, _)) => without_owner.to_owned(),
            None => after_ids.to_owned(),
        }
    }
}

/// How big the table is that each index or constraint of the dump is built on, by the item's
/// id: the definitions come from `pg_restore --section=post-data` (no data is read), the sizes
/// from the scratch database just loaded.
fn build_sizes(
    server: &Server,
    database: &str,
    backup: &Path,
) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    let output = postgres::tool("pg_restore")?
        .args(["--section=post-data", "-f", "-"])
        .arg(backup)
        .output()
        .context("cannot run pg_restore")?;
    let sql = String::from_utf8_lossy(&output.stdout);
    let tables: std::collections::HashMap<String, i64> = server
        .psql(
            database,
            "SELECT format('%I.%I', n.nspname, c.relname), pg_relation_size(c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')",
            &[],
        )?
        .lines()
        .filter_map(|line| {
            let (name, size) = line.rsplit_once('|')?;
            Some((name.to_owned(), size.parse().ok()?))
        })
        .collect();
    let mut sizes = std::collections::HashMap::new();
    // Blocks start with "-- Name: <name>; Type: <TYPE>; Schema: <schema>; Owner: ...".
    for block in sql.split("\n-- Name: ").skip(1) {
        let mut header = block.lines().next().unwrap_or_default().split("; ");
        let name = header.next().unwrap_or_default();
        let kind = header.next().and_then(|part| part.strip_prefix("Type: "));
        let schema = header.next().and_then(|part| part.strip_prefix("Schema: "));
        let (Some(kind), Some(schema)) = (kind, schema) else {
            continue;
        };
        // "CREATE INDEX x ON public.t USING ..." or "ALTER TABLE ONLY public.t\n    ADD ..."
        let table = block
            .split_once(" ON ")
            .filter(|_| kind == "INDEX")
            .and_then(|(_, rest)| rest.split(' ').next())
            .or_else(|| {
                block
                    .split_once("ALTER TABLE ONLY ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
            });
        if let Some(size) = table.and_then(|table| tables.get(table)) {
            sizes.insert(format!("{kind} {schema} {name}"), *size);
        }
    }
    Ok(sizes)
}

/// The dump's table of contents; fails on a file pg_restore cannot read.
fn list(backup: &Path) -> anyhow::Result<Vec<ListEntry>> {
    let output = postgres::tool("pg_restore")?
        .arg("--list")
        .arg(backup)
        .output()
        .context("cannot run pg_restore --list")?;
    if !output.status.success() {
        bail!(
            "{} is not a readable PostgreSQL custom-format dump: {}; nothing was restored",
            backup.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    const KINDS: [&str; 8] = [
        "TABLE DATA",
        "SEQUENCE SET",
        "FK CONSTRAINT",
        "CONSTRAINT",
        "INDEX",
        "TRIGGER",
        "BLOBS",
        "LARGE OBJECT",
    ];
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .map(|line| {
            // "<id>; <catalog oid> <oid> <TYPE> <schema> <name> <owner>"
            let after_ids = line.splitn(4, ' ').nth(3).unwrap_or_default();
            let kind = KINDS
                .iter()
                .find(|kind| after_ids.starts_with(&format!("{kind} ")))
                .map(|kind| kind.to_string())
                .unwrap_or_else(|| after_ids.split(' ').next().unwrap_or_default().to_owned());
            ListEntry {
                line: line.to_owned(),
                kind,
            }
        })
        .collect())
}

/// Asks on a terminal, or requires `--yes` when nobody can answer.
fn confirm(flags: &flags::Restore, server: &Server, previous_name: &str) -> anyhow::Result<()> {
    if flags.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "database {:?} exists at {}: restoring over it replaces its data (kept aside as {previous_name:?}); this needs an approved incident command, so pass --yes to confirm; nothing was restored",
            flags.database,
            server.address()
        );
    }
    eprint!(
        "Database {:?} at {} exists. Restore {} over it? Its current data will be kept as {previous_name:?}.\nType the database name to confirm: ",
        flags.database,
        server.address(),
        flags.backup_file.display()
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim_end_matches(['\n', '\r']) != flags.database {
        bail!("not confirmed; nothing was restored");
    }
    Ok(())
}

/// The scratch database, dropped unless it was swapped in.
struct Scratch {
    server: Server,
    name: String,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let dropped = self.server.psql(
                "postgres",
                "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE)",
                &[("name", &self.name)],
            );
            match dropped {
                Ok(_) => eprintln!("dropped the scratch database {:?}", self.name),
                Err(error) => eprintln!(
                    "could not drop the scratch database {:?}: {error:#}; drop it by hand",
                    self.name
                ),
            }
        }
    }
}

/// Restores in three phases: schema; data in `jobs` parallel pg_restore processes; indexes and
/// constraints in `jobs` processes, then foreign keys and the rest of the post-data.
///
/// Dumps streamed through a pipe carry no data offsets, so `pg_restore --jobs` cannot use them;
/// each process here is given its share of the table of contents with `--use-list` instead.
fn restore_into(
    server: &Server,
    database: &str,
    backup: &Path,
    entries: &[ListEntry],
    jobs: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let lists = tempfile_dir()?;
    let run = |name: &str,
               section: &str,
               keep: &dyn Fn(usize, &ListEntry) -> bool|
     -> anyhow::Result<Child> {
        let path = lists.join(name);
        let text: String = entries
            .iter()
            .enumerate()
            .filter(|(index, entry)| keep(*index, entry))
            .map(|(_, entry)| format!("{}\n", entry.line))
            .collect();
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        postgres::tool("pg_restore")?
            .arg("--exit-on-error")
            .arg(format!("--section={section}"))
            .arg("--use-list")
            .arg(&path)
            .args(server.args(database))
            .arg(backup)
            .env(
                "PGOPTIONS",
                "-c maintenance_work_mem=256MB -c synchronous_commit=off",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start pg_restore")
    };
    let wait_all = |children: Vec<Child>, phase: &str| -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for mut child in children {
            let errors = collect_stderr(&mut child);
            let status = child.wait().context("pg_restore did not finish")?;
            let errors = errors.join().unwrap_or_default();
            if !status.success() {
                failures.push(errors.trim().to_owned());
            }
        }
        if !failures.is_empty() {
            bail!(
                "pg_restore failed while restoring the {phase}: {}; the target database was not changed",
                failures.join("; ")
            );
        }
        step(started, &format!("restored the {phase}"));
        Ok(())
    };

    wait_all(vec![run("pre-data", "pre-data", &|_, _| true)?], "schema")?;

    let data: Vec<usize> = (0..entries.len())
        .filter(|&index| entries[index].kind == "TABLE DATA")
        .collect();
    let share = |index: usize| {
        data.iter()
            .position(|&data_index| data_index == index)
            .map(|position| position % jobs)
    };
    let mut children = Vec::new();
    for job in 0..jobs.min(data.len().max(1)) {
        // Everything in the data section that is not table data goes with job 0.
        children.push(run(&format!("data-{job}"), "data", &|index, _| {
            share(index).unwrap_or(0) == job
        })?);
    }
    wait_all(children, "data")?;

    // Indexes and primary keys: one pg_restore each, `jobs` at a time, the biggest tables
    // first, so that no job is left with the two largest builds while the other idles.
    let parallel = |entry: &ListEntry| entry.kind == "INDEX" || entry.kind == "CONSTRAINT";
    let sizes = build_sizes(server, database, backup).unwrap_or_default();
    let mut pending: Vec<usize> = (0..entries.len())
        .filter(|&index| parallel(&entries[index]))
        .collect();
    let builds = pending.len();
    let sized = pending
        .iter()
        .filter(|&&index| sizes.contains_key(&entries[index].id()))
        .count();
    pending.sort_by_key(|&index| {
        std::cmp::Reverse(sizes.get(&entries[index].id()).copied().unwrap_or(0))
    });
    pending.reverse(); // popped from the end: the biggest first
    // Each child's stderr is drained by a thread of its own, so none can block on a full pipe.
    let mut running: Vec<(Child, std::thread::JoinHandle<String>)> = Vec::new();
    let mut failures = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs && failures.is_empty() {
            let Some(next) = pending.pop() else { break };
            let mut child = run(&format!("post-{next}"), "post-data", &|index, _| {
                index == next
            })?;
            let errors = collect_stderr(&mut child);
            running.push((child, errors));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut still = Vec::new();
        for (mut child, errors) in running {
            match child.try_wait().context("pg_restore did not finish")? {
                None => still.push((child, errors)),
                Some(status) => {
                    let errors = errors.join().unwrap_or_default();
                    if !status.success() {
                        failures.push(errors.trim().to_owned());
                    }
                }
            }
        }
        running = still;
    }
    if !failures.is_empty() {
        bail!(
            "pg_restore failed while restoring the indexes and constraints: {}; the target database was not changed",
            failures.join("; ")
        );
    }
    step(
        started,
        &format!(
            "restored the indexes and constraints ({builds} builds, {jobs} at a time, {sized} sized)"
        ),
    );
    wait_all(
        vec![run("post-rest", "post-data", &|_, entry| !parallel(entry))?],
        "foreign keys, triggers and the rest",
    )?;
    let _ = fs::remove_dir_all(&lists);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("saulpos-restore-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Checks the scratch database holds every table the dump has data for; returns each table's
/// row count.
fn check(
    server: &Server,
    database: &str,
    entries: &[ListEntry],
) -> anyhow::Result<Vec<(String, i64)>> {
    let output = server.psql(
        database,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        &[],
    )?;
    let tables: Vec<String> = output.lines().map(str::to_owned).collect();
    let expected = entries
        .iter()
        .filter(|entry| entry.kind == "TABLE DATA")
        .count();
    if tables.len() < expected {
        bail!(
            "the scratch database has {} tables but the dump has data for {expected}; the target database was not changed",
            tables.len()
        );
    }
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let counts = tables
        .iter()
        .map(|table| {
            format!(
                "SELECT '{}', count(*) FROM {table}",
                table.replace('\'', "''")
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let output = server.psql(database, &counts, &[])?;
    Ok(output
        .lines()
        .filter_map(|line| {
            let (name, rows) = line.rsplit_once('|')?;
            Some((name.to_owned(), rows.parse().ok()?))
        })
        .collect())
}

/// Renames the target aside (if it exists) and the scratch database to the target, in one
/// transaction, ending the target's open connections first; returns how many were ended.
fn swap(
    server: &Server,
    target: &str,
    scratch: &str,
    previous: Option<&str>,
) -> anyhow::Result<i64> {
    let sql = match previous {
        Some(_) => {
            "BEGIN;\n\
             SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = :'target' AND pid <> pg_backend_pid();\n\
             ALTER DATABASE :\"target\" RENAME TO :\"previous\";\n\
             ALTER DATABASE :\"scratch\" RENAME TO :\"target\";\n\
             COMMIT;\n"
        }
        None => "ALTER DATABASE :\"scratch\" RENAME TO :\"target\";\n",
    };
    let vars = [
        ("target", target),
        ("scratch", scratch),
        ("previous", previous.unwrap_or("")),
    ];
    // A client may reconnect between ending its session and the rename; try a few times.
    let mut last_error = None;
    for _ in 0..5 {
        match server.psql("postgres", sql, &vars) {
            Ok(output) => {
                return Ok(output
                    .lines()
                    .next()
                    .and_then(|line| line.parse().ok())
                    .unwrap_or(0));
            }
            Err(error) => {
                last_error = Some(error);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    Err(last_error.expect("at least one try"))
        .context("cannot swap the restored database in; the target database was not changed")
}
