//! `cargo xtask restore`: check the checksum before touching any database, restore into a
//! fresh scratch database that takes the target's owner, locale and settings, check it, then swap
//! it in with both renames in one transaction.
//! A failure at any point leaves the target as it was.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::postgres::{self, Server};
use crate::util::confirm;
use crate::util::progress::step;
use crate::{database::restore_guard, flags, release::checksum, util::utc};

impl flags::Restore {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.jobs == 0 {
            bail!("--jobs 0 restores nothing; use 1 or more (default 2)");
        }
        if self.count_rows_up_to_mb < 0 {
            bail!("--count-rows-up-to-mb must be 0 or more (0 counts no table; default 64)");
        }
        let server = Server {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
        };

        // 1. Nothing is touched until the dump is known to be the one that was backed up.
        let (recorded, named) = checksum::read(&self.checksum_file).map_err(|error| {
            anyhow::anyhow!(
                "{error:#}; give the <dump>.sha256 that backup wrote beside the dump; nothing was restored"
            )
        })?;
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
        // The dump is hashed while everything else reads it: the table of contents, the
        // databases, and the load into the scratch database. Nothing is swapped in before the
        // hash matches; a mismatch is reported before any other error (the scratch database
        // is dropped), so "nothing was restored" holds as if it had been checked first.
        let mut hashing = Some(std::thread::spawn({
            let path = self.backup_file.clone();
            move || checksum::sha256_file(&path)
        }));
        let backup_file = self.backup_file.clone();
        let mut verified = move || -> anyhow::Result<(String, u64)> {
            let (actual, size) = match hashing.take() {
                Some(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                None => unreachable!("the checksum is checked once"),
            };
            if actual != recorded {
                bail!(
                    "{} does not match its checksum (sha256 {actual}, recorded {recorded}): the file is damaged or not that backup; nothing was restored",
                    backup_file.display()
                );
            }
            Ok((actual, size))
        };
        let name = postgres::identifier_with_suffix(
            &self.database,
            &format!("_restoring_{}", std::process::id()),
        );
        // With --yes no one is asked: the databases are looked up and the scratch database
        // created in one session (otherwise the creation waits for the confirmation).
        let (listed, found) = std::thread::scope(|scope| {
            let listed = scope.spawn(|| list(&self.backup_file));
            let found = if self.yes {
                databases_and_scratch(&server, &self.database, &name)
            } else {
                databases(&server, &self.database)
            };
            (joined(listed), found)
        });
        // From here a scratch database may exist: the guard drops it if this process dies, and
        // `Scratch` when it returns early.
        let early = (self.yes && found.is_ok()).then(|| Scratch {
            guard: restore_guard::start(&server, &self.database, &name),
            server: server.clone(),
            name: name.clone(),
            keep: false,
        });
        let entries = match listed {
            Ok(entries) => entries,
            Err(error) => {
                verified()?;
                return Err(error);
            }
        };

        // 2. Restoring over a database needs an approved incident command.
        let (exists, leftovers) = match found {
            Ok(found) => found,
            Err(error) => {
                verified()?;
                return Err(error);
            }
        };
        let now = utc::compact(utc::now());
        let previous_name =
            postgres::identifier_with_suffix(&self.database, &format!("_before_{now}"));
        if exists {
            confirm(&self, &server, &previous_name)?;
        }

        // 3. Restore into a scratch database; drop it on any failure.
        for left in leftovers {
            eprintln!(
                "note: database {left:?} was left by a restore of {:?} that was killed; if no restore is running now, drop it:  psql -h {} -p {} -U {} -d postgres -c 'DROP DATABASE \"{left}\"'",
                self.database, self.host, self.port, self.username
            );
        }
        // CREATE DATABASE is all or nothing: the guard that drops it starts once it exists.
        let scratch = match early {
            Some(scratch) => scratch,
            None => {
                create_scratch(&server, &name, exists.then_some(self.database.as_str()))?;
                Scratch {
                    guard: restore_guard::start(&server, &self.database, &name),
                    server: server.clone(),
                    name,
                    keep: false,
                }
            }
        };
        step(
            started,
            &format!(
                "created scratch database {:?}{}",
                scratch.name,
                if exists {
                    " with the target's owner, encoding, locale and tablespace"
                } else {
                    ""
                }
            ),
        );
        let loaded = restore_into(
            &server,
            &scratch.name,
            &self.backup_file,
            &entries,
            self.jobs.into(),
            started,
        );
        // The checksum first: a damaged dump is reported as such, and never swapped in.
        let (actual, size) = verified()?;
        loaded?;
        step(
            started,
            &format!(
                "checksum ok: {} ({size} bytes, {} entries)",
                self.backup_file.display(),
                entries.len()
            ),
        );
        // 4. One round trip: check the scratch database, give it the target's settings,
        //    privileges and comment (only now, so that none of them, a read-only default, a
        //    statement timeout, CONNECT revoked, reaches pg_restore), and see who is connected.
        let (tables, connected) = check_and_adopt(
            &server,
            &scratch.name,
            exists.then_some(self.database.as_str()),
            &entries,
            self.count_rows_up_to_mb.saturating_mul(1 << 20),
        )?;
        step(
            started,
            &format!(
                "checked {:?}: {} tables, every one the dump has data for",
                scratch.name,
                tables.len()
            ),
        );
        if exists {
            step(
                started,
                &format!(
                    "gave {:?} the settings, privileges, connection limit and comment of {:?}",
                    scratch.name, self.database
                ),
            );
        }

        // 5. Swap: both renames commit together or not at all.
        if let Some((open, who)) = connected
            && open > 0
        {
            step(
                started,
                &format!(
                    "ending {open} open connection(s) to {:?} to swap the restored data in: {who}",
                    self.database
                ),
            );
        }
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
            eprintln!("  {table}: {rows}");
        }
        if self.json {
            let summary = json!({
                "database": self.database,
                "backup": self.backup_file,
                "sha256": actual,
                "tables": tables.iter().map(|(name, rows)| rows.json(name)).collect::<Vec<_>>(),
                "previous_database": exists.then_some(previous_name),
                "connections_ended": ended,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// The result of a scoped thread; its panic, if it panicked, goes on in this one.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One line of `pg_restore --list`, by its entry type (`TABLE DATA`, `INDEX`, ...).
struct ListEntry {
    kind: String,
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
            ListEntry { kind }
        })
        .collect())
}

/// Asks on a terminal, or requires `--yes` when nobody can answer.
fn confirm(flags: &flags::Restore, server: &Server, previous_name: &str) -> anyhow::Result<()> {
    if flags.yes {
        return Ok(());
    }
    let refused = || {
        format!(
            "database {:?} exists at {}: restoring over it replaces its data (kept aside as {previous_name:?}); this needs an approved incident command, so pass --yes to confirm; nothing was restored",
            flags.database,
            server.address()
        )
    };
    if !std::io::stdin().is_terminal() {
        bail!("{}", refused());
    }
    let (open, who) = sessions(server, &flags.database)?;
    let connections = if open > 0 {
        format!(
            " It has {open} open connection(s) ({who}); they will be ended when the restored data is swapped in."
        )
    } else {
        String::new()
    };
    confirm::typed(
        &format!(
            "Database {:?} at {} exists. Restore {} over it? Its current data will be kept as {previous_name:?}.{connections}",
            flags.database,
            server.address(),
            flags.backup_file.display()
        ),
        &flags.database,
        refused,
        "not confirmed; nothing was restored",
    )
}

/// Whether `database` exists, and the scratch databases that restores of it left behind when
/// they were killed together with their guard (nobody was left to drop them), in one query.
/// Those are named, never dropped: another restore, maybe from another machine, could still be
/// filling one.
fn databases(server: &Server, database: &str) -> anyhow::Result<(bool, Vec<String>)> {
    let names = server.psql("postgres", DATABASES, &[("like", database)])?;
    Ok(leftovers_of(&names, database))
}

/// The target `:like` and every scratch database of a restore, one name a line.
const DATABASES: &str = "SELECT datname FROM pg_database \
         WHERE datname = :'like' OR strpos(datname, '_restoring_') > 0 ORDER BY 1";

/// Whether `database` is among `names`, and the scratch databases killed restores of it left.
fn leftovers_of(names: &str, database: &str) -> (bool, Vec<String>) {
    let exists = names.lines().any(|name| name == database);
    let leftovers = names
        .lines()
        .filter(|name| {
            name.rsplit_once("_restoring_").is_some_and(|(_, pid)| {
                !pid.is_empty()
                    && pid.bytes().all(|byte| byte.is_ascii_digit())
                    && *name
                        == postgres::identifier_with_suffix(database, &format!("_restoring_{pid}"))
            })
        })
        .map(str::to_owned)
        .collect();
    (exists, leftovers)
}

/// Creates the scratch database. Restoring over `like`, it takes that database's owner,
/// encoding, locale and tablespace, which cannot change once it exists: the swap must not hand
/// the schema `public` (owned by the database owner) to whoever ran the restore, nor sort text
/// another way. The columns are read through `to_jsonb` so that servers with and without locale
/// providers (PostgreSQL 15+) and with either name for the ICU locale (17 renamed it) all work.
fn create_scratch(server: &Server, name: &str, like: Option<&str>) -> anyhow::Result<()> {
    let Some(like) = like else {
        server.psql(
            "postgres",
            "CREATE DATABASE :\"name\" TEMPLATE template0",
            &[("name", name)],
        )?;
        return Ok(());
    };
    server
        .psql("postgres", CREATE_LIKE, &[("name", name), ("like", like)])
        .with_context(|| scratch_refused(like))?;
    Ok(())
}

/// `CREATE DATABASE :name` with the owner, encoding, locale and tablespace of `:like`, if that
/// one exists (the statement is built, then run by `\gexec`).
const CREATE_LIKE: &str = "SELECT format('CREATE DATABASE %I TEMPLATE template0 OWNER %I TABLESPACE %I \
                            ENCODING %L LC_COLLATE %L LC_CTYPE %L', \
                           :'name', pg_get_userbyid(d.datdba), t.spcname, \
                           pg_encoding_to_char(d.encoding), d.datcollate, d.datctype) \
                    || CASE j->>'datlocprovider' \
                         WHEN 'c' THEN ' LOCALE_PROVIDER libc' \
                         WHEN 'i' THEN format(' LOCALE_PROVIDER icu ICU_LOCALE %L', \
                                              coalesce(j->>'daticulocale', j->>'datlocale')) \
                         WHEN 'b' THEN format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', \
                                              j->>'datlocale') \
                         ELSE '' END \
                    || CASE WHEN j->>'daticurules' IS NULL THEN '' \
                            ELSE format(' ICU_RULES %L', j->>'daticurules') END \
             FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace, to_jsonb(d) j \
             WHERE d.datname = :'like' \\gexec\n";

fn scratch_refused(like: &str) -> String {
    format!(
        "cannot create the scratch database with the owner, encoding, locale and tablespace of {like:?} (restore as a superuser, or as a member of its owner's role); nothing was restored"
    )
}

/// `databases` and `create_scratch` in one session: the target and the leftovers are listed
/// before the scratch database is created, like the target when it exists, plain otherwise.
fn databases_and_scratch(
    server: &Server,
    database: &str,
    scratch: &str,
) -> anyhow::Result<(bool, Vec<String>)> {
    let sql = format!(
        "{DATABASES};\n{CREATE_LIKE}\
         SELECT format('CREATE DATABASE %I TEMPLATE template0', :'name') \
         WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'like') \\gexec\n"
    );
    let names = server
        .psql("postgres", &sql, &[("name", scratch), ("like", database)])
        .with_context(|| scratch_refused(database))?;
    Ok(leftovers_of(&names, database))
}

/// Gives `:scratch` what `:like` has that a restore does not carry: its settings (`ALTER
/// DATABASE ... SET`, also per role), privileges, connection limit and comment. Written out as
/// `pg_dump --create` would (list settings such as `search_path` keep their own quoting).
const ADOPT_PROPERTIES: &str =
    "SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', :'scratch', datconnlimit) \
     FROM pg_database WHERE datname = :'like' AND datconnlimit <> -1 \\gexec
     SELECT format('COMMENT ON DATABASE %I IS %L', :'scratch', c) \
     FROM pg_database d, shobj_description(d.oid, 'pg_database') c \
     WHERE d.datname = :'like' AND c IS NOT NULL \\gexec
     SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'scratch'), \
            format('REVOKE ALL ON DATABASE %I FROM %I', :'scratch', pg_get_userbyid(datdba)) \
     FROM pg_database WHERE datname = :'like' AND datacl IS NOT NULL \\gexec
     SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'scratch', \
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                        ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
     FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :'like' \\gexec
     SELECT format('ALTER %sDATABASE %I SET %I TO %s', \
                   CASE WHEN s.setrole = 0 THEN '' \
                        ELSE format('ROLE %I IN ', pg_get_userbyid(s.setrole)) END, \
                   :'scratch', split_part(c, '=', 1), \
                   CASE WHEN split_part(c, '=', 1) IN ('local_preload_libraries', \
                            'search_path', 'session_preload_libraries', \
                            'shared_preload_libraries', 'temp_tablespaces', \
                            'unix_socket_directories') \
                        THEN CASE substr(c, strpos(c, '=') + 1) WHEN '\"\"' THEN '''''' \
                                  ELSE substr(c, strpos(c, '=') + 1) END \
                        ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END) \
     FROM pg_database d JOIN pg_db_role_setting s ON s.setdatabase = d.oid, \
          unnest(s.setconfig) c \
     WHERE d.datname = :'like' ORDER BY s.setrole, c \\gexec";

/// The client connections to `:target`: one row per `user from address (application)`, with
/// `×N` for a pool of alike ones, and how many.
const SESSIONS: &str = "SELECT format('%s from %s%s%s', usename, coalesce(host(client_addr), 'a local socket'), \
                CASE WHEN application_name <> '' THEN format(' (%s)', application_name) ELSE '' END, \
                CASE WHEN count(*) > 1 THEN format(' ×%s', count(*)) ELSE '' END), count(*) \
  FROM pg_stat_activity WHERE datname = :'target' AND backend_type = 'client backend' \
  GROUP BY usename, client_addr, application_name ORDER BY 1";

/// How many client connections a database has, and who holds them.
type Connections = (i64, String);

/// How many client connections `database` has, and who holds them.
fn sessions(server: &Server, database: &str) -> anyhow::Result<Connections> {
    let rows = server.psql("postgres", SESSIONS, &[("target", database)])?;
    Ok(read_sessions(&rows))
}

/// Reads the rows of [`SESSIONS`]: the total, and the descriptions joined.
fn read_sessions(rows: &str) -> Connections {
    let mut total = 0;
    let mut who = Vec::new();
    for row in rows.lines() {
        if let Some((description, count)) = row.rsplit_once('|') {
            total += count.parse::<i64>().unwrap_or(0);
            who.push(description.to_owned());
        }
    }
    (total, who.join(", "))
}

/// The scratch database, dropped unless it was swapped in; where this process cannot drop it
/// (it is killed), its guard does.
struct Scratch {
    server: Server,
    name: String,
    keep: bool,
    guard: Option<std::process::Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            match self.server.drop_database(&self.name) {
                Ok(true) => eprintln!("dropped the scratch database {:?}", self.name),
                Ok(false) => {}
                Err(error) => eprintln!(
                    "could not drop the scratch database {:?}: {error:#}; drop it by hand",
                    self.name
                ),
            }
        }
        if let Some(guard) = self.guard.take() {
            restore_guard::finish(guard);
        }
    }
}

/// Restores the whole dump into `database` with one `pg_restore --jobs`: PostgreSQL's own
/// scheduler loads each table and then builds its indexes and keys as their dependencies
/// allow, `jobs` connections at a time, so index builds overlap with the loading of other
/// tables. Each table loaded and each index or key built is shown as it finishes.
///
/// A dump streamed through a pipe carries no data offsets; pg_restore finds each table's data
/// by skipping over the blocks before it, which reads only their headers.
fn restore_into(
    server: &Server,
    database: &str,
    backup: &Path,
    entries: &[ListEntry],
    jobs: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let total = entries
        .iter()
        .filter(|entry| PROGRESS_KINDS.contains(&entry.kind.as_str()))
        .count();
    let mut child = postgres::tool("pg_restore")?
        .args(["--exit-on-error", "--verbose"])
        .arg(format!("--jobs={jobs}"))
        .args(server.args(database))
        .arg(backup)
        // Bigger sorts in memory; commits need not wait for the disk, because nothing is
        // swapped in before the final rename, whose commit flushes all of it.
        .env(
            "PGOPTIONS",
            "-c maintenance_work_mem=256MB -c synchronous_commit=off",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start pg_restore")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut report = PgRestoreReport {
        parallel: jobs > 1,
        ..PgRestoreReport::default()
    };
    for line in std::io::BufReader::new(stderr).split(b'\n') {
        let line = line.context("cannot read pg_restore's messages")?;
        if let Some(item) = report.read(&String::from_utf8_lossy(&line)) {
            step(started, &format!("{item} ({}/{total})", report.done));
        }
    }
    let status = child.wait().context("pg_restore did not finish")?;
    if !status.success() {
        let said = report.errors.join("\n");
        let said = match said.trim() {
            "" => " without a message (was it interrupted?)".to_owned(),
            said => format!(": {said}"),
        };
        bail!("pg_restore failed ({status}){said}; the target database was not changed");
    }
    step(started, "pg_restore finished");
    Ok(())
}

/// The kinds of items whose completion is shown as progress: the long ones.
const PROGRESS_KINDS: [&str; 4] = ["TABLE DATA", "INDEX", "CONSTRAINT", "FK CONSTRAINT"];

/// What `pg_restore --verbose` says, sorted into progress and errors.
#[derive(Default)]
struct PgRestoreReport {
    /// Several jobs: items are reported as they finish; with one, as they start.
    parallel: bool,
    /// How many long items have finished (or, with one job, started).
    done: usize,
    /// Its error and warning lines with their continuation lines (`Command was: ...`).
    errors: Vec<String>,
    in_error: bool,
}

impl PgRestoreReport {
    /// Reads one line; returns what to show as progress, if the line finishes a long item.
    fn read(&mut self, line: &str) -> Option<String> {
        let Some(message) = line.strip_prefix("pg_restore: ") else {
            if self.in_error {
                self.errors.push(line.to_owned());
            }
            return None;
        };
        self.in_error = ["error:", "warning:", "detail:", "hint:"]
            .iter()
            .any(|prefix| message.starts_with(prefix));
        if self.in_error {
            self.errors.push(line.to_owned());
            return None;
        }
        // With several jobs: "finished item 3370 TABLE DATA sale_line".
        if self.parallel {
            let rest = message.strip_prefix("finished item ")?;
            let item = rest.split_once(' ').map_or(rest, |(_, item)| item);
            if PROGRESS_KINDS
                .iter()
                .any(|kind| item.starts_with(&format!("{kind} ")))
            {
                self.done += 1;
                return Some(format!("finished {item}"));
            }
            return None;
        }
        // With one job, items are announced as they start.
        let started = message.starts_with("processing data for table ")
            || ["INDEX", "CONSTRAINT", "FK CONSTRAINT"]
                .iter()
                .any(|kind| message.starts_with(&format!("creating {kind} ")));
        if started {
            self.done += 1;
            return Some(message.to_owned());
        }
        None
    }
}

/// A table's rows as the restore reports them.
#[derive(Clone, Copy)]
enum Rows {
    /// Counted with `count(*)`.
    Counted(i64),
    /// Too big to count cheaply: the figure the last index build stored in `pg_class`.
    About(i64),
    /// Too big to count and without an index, so without a figure.
    NotCounted,
}

impl std::fmt::Display for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rows::Counted(1) => write!(f, "1 row"),
            Rows::Counted(rows) => write!(f, "{rows} rows"),
            Rows::About(rows) => write!(
                f,
                "about {rows} rows (too big to count quickly; the figure its index build recorded)"
            ),
            Rows::NotCounted => write!(f, "rows not counted (too big to count quickly)"),
        }
    }
}

impl Rows {
    fn json(self, table: &str) -> serde_json::Value {
        match self {
            Rows::Counted(rows) => json!({"table": table, "rows": rows, "counted": true}),
            Rows::About(rows) => json!({"table": table, "rows": rows, "counted": false}),
            Rows::NotCounted => json!({"table": table, "rows": null, "counted": false}),
        }
    }
}

/// Each user table of the database it runs in, smallest first, counted with `count(*)` while
/// it stays under `:limit` bytes and the running total under `:budget`: `name|count|estimate`,
/// the count empty where not counted (`query_to_xml` runs the count built for that table).
const COUNT_TABLES: &str = "WITH tables AS ( \
        SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name, \
               pg_relation_size(c.oid) AS size, c.reltuples::bigint AS estimate \
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    ), running AS ( \
        SELECT *, sum(size) OVER (ORDER BY size, name) AS total FROM tables \
    ) \
    SELECT name, CASE WHEN size <= :limit AND total <= :budget THEN \
               (xpath('/row/c/text()', query_to_xml( \
                   format('SELECT count(*) AS c FROM %s', oid::regclass), false, true, '')))[1]::text \
           END, estimate \
    FROM running ORDER BY name";

/// In one session on the scratch database: checks it holds every table the dump has data
/// for and returns each table's rows (tables up to `limit` bytes counted, bigger ones with the
/// row count their index build recorded); restoring over `like`, gives it that database's
/// settings, privileges, connection limit and comment, and returns who is connected to it.
fn check_and_adopt(
    server: &Server,
    scratch: &str,
    like: Option<&str>,
    entries: &[ListEntry],
    limit: i64,
) -> anyhow::Result<(TableRows, Option<Connections>)> {
    let mut script = format!("{COUNT_TABLES};\n");
    if like.is_some() {
        script += &format!("{ADOPT_PROPERTIES}\n\\echo {SECTION}\n{SESSIONS};\n");
    }
    let (limit, budget) = (limit.to_string(), limit.saturating_mul(4).to_string());
    let output = server
        .psql(
            scratch,
            &script,
            &[
                ("limit", &limit),
                ("budget", &budget),
                ("scratch", scratch),
                ("like", like.unwrap_or_default()),
                ("target", like.unwrap_or_default()),
            ],
        )
        .with_context(|| match like {
            Some(like) => format!(
                "cannot check the restored database and give it the settings, privileges and comment of {like:?}; the target database was not changed"
            ),
            None => "cannot check the restored database; the target database was not changed"
                .to_owned(),
        })?;
    let (tables, connected) = read_check(&output, like.is_some());
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
    Ok((tables, connected))
}

/// Each table's name and rows, by name.
type TableRows = Vec<(String, Rows)>;

/// Sections of [`check_and_adopt`]'s output are told apart by a line no row is: every row holds
/// a '|'. (Only a table name with a line break and this line in it could fake one; the check
/// would then miss tables and refuse, never pass wrongly.)
const SECTION: &str = "--";

/// Reads [`check_and_adopt`]'s output: the tables, then (when it adopted a target's
/// properties) who is connected to that target.
fn read_check(output: &str, adopted: bool) -> (TableRows, Option<Connections>) {
    let mut lines = output.lines();
    let tables = read_tables(lines.by_ref().take_while(|line| *line != SECTION));
    let connected = adopted.then(|| read_sessions(&lines.collect::<Vec<_>>().join("\n")));
    (tables, connected)
}

/// Reads the rows of [`COUNT_TABLES`].
fn read_tables<'a>(rows: impl Iterator<Item = &'a str>) -> TableRows {
    rows.filter_map(|line| {
        // The name comes first and may itself hold a '|'.
        let mut fields = line.rsplitn(3, '|');
        let estimate: i64 = fields.next()?.parse().ok()?;
        let counted = fields.next()?;
        let rows = match counted.parse() {
            Ok(count) => Rows::Counted(count),
            Err(_) if estimate >= 0 => Rows::About(estimate),
            Err(_) => Rows::NotCounted,
        };
        Some((fields.next()?.to_owned(), rows))
    })
    .collect()
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

#[cfg(test)]
mod tests {
    use super::{PgRestoreReport, read_check};

    #[test]
    fn the_check_reads_tables_then_who_is_connected() {
        let output = "public.\"a|b\"|12|12\npublic.big||5000000\npublic.no_index||-1\n--\n\
                      app from 10.0.0.7 (pool) ×3|3\npostgres from a local socket|1";
        let (tables, connected) = read_check(output, true);
        let shown: Vec<String> = tables
            .iter()
            .map(|(name, rows)| format!("{name}: {rows}"))
            .collect();
        assert_eq!(
            shown,
            [
                "public.\"a|b\": 12 rows",
                "public.big: about 5000000 rows (too big to count quickly; the figure its index build recorded)",
                "public.no_index: rows not counted (too big to count quickly)",
            ]
        );
        assert_eq!(
            connected,
            Some((
                4,
                "app from 10.0.0.7 (pool) ×3, postgres from a local socket".to_owned()
            ))
        );
        // A restore into a new database adopts nothing and asks nobody's connections.
        let (tables, connected) = read_check("public.t|1|1", false);
        assert_eq!(tables.len(), 1);
        assert_eq!(connected, None);
        // A target nobody is connected to: its section is empty.
        let (_, connected) = read_check("public.t|1|1\n--", true);
        assert_eq!(connected, Some((0, String::new())));
    }

    fn read_all(parallel: bool, lines: &[&str]) -> (Vec<String>, PgRestoreReport) {
        let mut report = PgRestoreReport {
            parallel,
            ..PgRestoreReport::default()
        };
        let shown = lines.iter().filter_map(|line| report.read(line)).collect();
        (shown, report)
    }

    #[test]
    fn several_jobs_show_long_items_as_they_finish() {
        let (shown, report) = read_all(
            true,
            &[
                "pg_restore: launching item 3370 TABLE DATA sale_line",
                "pg_restore: processing data for table \"public.sale_line\"",
                "pg_restore: finished item 3370 TABLE DATA sale_line",
                "pg_restore: finished item 3218 CONSTRAINT sale_line sale_line_pkey",
                "pg_restore: finished item 3224 FK CONSTRAINT sale_line sale_line_sale_id_fkey",
                "pg_restore: finished item 3380 SEQUENCE SET sale_id_seq",
            ],
        );
        assert_eq!(
            shown,
            [
                "finished TABLE DATA sale_line",
                "finished CONSTRAINT sale_line sale_line_pkey",
                "finished FK CONSTRAINT sale_line sale_line_sale_id_fkey",
            ]
        );
        assert_eq!(report.done, 3);
        assert!(report.errors.is_empty());
    }

    #[test]
    fn one_job_shows_long_items_as_they_start_and_errors_keep_their_command() {
        let (shown, report) = read_all(
            false,
            &[
                "pg_restore: creating TABLE \"public.sale\"",
                "pg_restore: processing data for table \"public.sale\"",
                "pg_restore: creating INDEX \"public.sale_sold_at\"",
                "pg_restore: error: could not execute query: ERROR:  role \"x\" does not exist",
                "Command was: ALTER TABLE public.sale OWNER TO x;",
                "pg_restore: creating FK CONSTRAINT \"public.sale sale_store_id_fkey\"",
            ],
        );
        assert_eq!(
            shown,
            [
                "processing data for table \"public.sale\"",
                "creating INDEX \"public.sale_sold_at\"",
                "creating FK CONSTRAINT \"public.sale sale_store_id_fkey\"",
            ]
        );
        assert_eq!(
            report.errors,
            [
                "pg_restore: error: could not execute query: ERROR:  role \"x\" does not exist",
                "Command was: ALTER TABLE public.sale OWNER TO x;",
            ]
        );
    }
}
