//! `cargo xtask restore`: check the checksum before touching any database, restore into a
//! fresh scratch database that takes the target's owner, locale and settings, check it, then swap
//! it in with both renames in one transaction. A failure at any point leaves the target as it
//! was. Its steps: the dump (`dump`), the scratch database (`scratch`), the load (`load`), the
//! check and the swap (`swap`); the SQL is in `database/sql/`.

mod dump;
mod load;
mod scratch;
mod swap;

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;
use xshell::Shell;

use crate::database::postgres::{self, Server};
use crate::util::confirm;
use crate::util::progress::step;
use crate::{database::restore_guard, flags, util::utc};
use dump::{Checked, list};
use load::restore_into;
use scratch::{Scratch, create_scratch, databases, databases_and_scratch};
use swap::{check_adopt_and_swap, sessions};

impl flags::Restore {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        self.check_flags()?;
        let server = Server {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
        };
        // The dump is hashed while everything else reads it: the table of contents, the
        // databases, and the load into the scratch database. Nothing is swapped in before the
        // hash matches; a mismatch is reported before any other error (the scratch database
        // is dropped), so "nothing was restored" holds as if it had been checked first.
        let mut dump = Checked::start(&self.backup_file, &self.checksum_file)?;
        let prepared = self.prepare(&server, &mut dump, started)?;
        let loaded = restore_into(
            &server,
            &prepared.scratch.name,
            &self.backup_file,
            &prepared.entries,
            self.jobs.into(),
            started,
        );
        // The checksum first: a damaged dump is reported as such, and never swapped in.
        let (sha256, size) = dump.verified()?;
        loaded?;
        step(
            started,
            &format!(
                "checksum ok: {} ({size} bytes, {} entries)",
                self.backup_file.display(),
                prepared.entries.len()
            ),
        );
        let finished = self.finish(&server, prepared, started)?;
        self.report(&finished, &sha256, started);
        Ok(())
    }

    fn check_flags(&self) -> anyhow::Result<()> {
        if self.jobs == 0 {
            bail!("--jobs 0 restores nothing; use 1 or more (default 2)");
        }
        if self.count_rows_up_to_mb < 0 {
            bail!("--count-rows-up-to-mb must be 0 or more (0 counts no table; default 64)");
        }
        Ok(())
    }

    /// Reads the dump's table of contents and looks up the databases (both beside the hash),
    /// asks for the confirmation a restore over an existing database needs, and creates the
    /// scratch database with its guard. With --yes no one is asked: the lookup and the
    /// creation share one session.
    fn prepare(
        &self,
        server: &Server,
        dump: &mut Checked,
        started: Instant,
    ) -> anyhow::Result<Prepared> {
        let name = postgres::identifier_with_suffix(
            &self.database,
            &format!("_restoring_{}", std::process::id()),
        );
        let (listed, found) = std::thread::scope(|scope| {
            let listed = scope.spawn(|| list(&self.backup_file));
            let found = if self.yes {
                databases_and_scratch(server, &self.database, &name)
            } else {
                databases(server, &self.database)
            };
            (joined(listed), found)
        });
        // From here a scratch database may exist: the guard drops it if this process dies, and
        // `Scratch` when it returns early.
        let early = (self.yes && found.is_ok()).then(|| self.guarded(server, &name));
        // A damaged dump is reported as such before any other error.
        let (entries, (exists, leftovers)) = match (listed, found) {
            (Ok(entries), Ok(found)) => (entries, found),
            (Err(error), _) | (_, Err(error)) => {
                dump.verified()?;
                return Err(error);
            }
        };
        let now = utc::compact(utc::now());
        let previous = exists
            .then(|| postgres::identifier_with_suffix(&self.database, &format!("_before_{now}")));
        if let Some(previous) = &previous {
            confirm(self, server, previous)?;
        }
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
                create_scratch(server, &name, exists.then_some(self.database.as_str()))?;
                self.guarded(server, &name)
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
        Ok(Prepared {
            scratch,
            entries,
            previous,
        })
    }

    /// The scratch database `name`, dropped by its guard if this process dies.
    fn guarded(&self, server: &Server, name: &str) -> Scratch {
        Scratch {
            guard: restore_guard::start(server, &self.database, name),
            server: server.clone(),
            name: name.to_owned(),
            keep: false,
        }
    }

    /// Checks the loaded scratch database, gives it the target's settings, privileges and
    /// comment (only now, so that none of them, a read-only default, a statement timeout,
    /// CONNECT revoked, reaches pg_restore), and swaps it in.
    fn finish(
        &self,
        server: &Server,
        prepared: Prepared,
        started: Instant,
    ) -> anyhow::Result<Restored> {
        let Prepared {
            mut scratch,
            entries,
            previous,
        } = prepared;
        let finished = check_adopt_and_swap(
            server,
            &scratch.name,
            &self.database,
            previous.as_deref(),
            &entries,
            self.count_rows_up_to_mb.saturating_mul(1 << 20),
        )?;
        scratch.keep = true;
        step(
            started,
            &format!(
                "checked {:?}: {} tables, every one the dump has data for",
                scratch.name,
                finished.tables.len()
            ),
        );
        if previous.is_some() {
            step(
                started,
                &format!(
                    "gave {:?} the settings, privileges, connection limit and comment of {:?}",
                    scratch.name, self.database
                ),
            );
        }
        if let Some((open, who)) = &finished.connected
            && *open > 0
        {
            step(
                started,
                &format!(
                    "ending {open} open connection(s) to {:?} to swap the restored data in: {who}",
                    self.database
                ),
            );
        }
        if finished.ended > 0 {
            step(
                started,
                &format!(
                    "ended {} open connection(s) to {:?}",
                    finished.ended, self.database
                ),
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
        Ok(Restored { finished, previous })
    }

    /// Where the data before went and how to get it back, each table's rows, and the JSON.
    fn report(&self, restored: &Restored, sha256: &str, started: Instant) {
        if let Some(previous) = &restored.previous {
            eprintln!("the previous data is kept as database {previous:?}.");
            eprintln!(
                "  drop it when no longer needed:  psql -h {} -p {} -U {} -d postgres -c 'DROP DATABASE \"{previous}\"'",
                self.host, self.port, self.username
            );
            eprintln!(
                "  or swap it back:  psql -h {} -p {} -U {} -d postgres -c 'ALTER DATABASE \"{}\" RENAME TO \"{}_restored\"' -c 'ALTER DATABASE \"{previous}\" RENAME TO \"{}\"'",
                self.host, self.port, self.username, self.database, self.database, self.database
            );
        }
        let tables = &restored.finished.tables;
        for (table, rows) in tables {
            eprintln!("  {table}: {rows}");
        }
        if self.json {
            let summary = json!({
                "database": self.database,
                "backup": self.backup_file,
                "sha256": sha256,
                "tables": tables.iter().map(|(name, rows)| rows.json(name)).collect::<Vec<_>>(),
                "previous_database": restored.previous,
                "connections_ended": restored.finished.ended,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{summary}");
        }
    }
}

/// What `prepare` made: the scratch database (with its guard), the dump's entries, and the
/// name the target goes aside under when it exists.
struct Prepared {
    scratch: Scratch,
    entries: Vec<dump::ListEntry>,
    previous: Option<String>,
}

/// A restore swapped in.
struct Restored {
    finished: swap::Finished,
    previous: Option<String>,
}

/// The result of a scoped thread; its panic, if it panicked, goes on in this one.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
        "the database name",
        &flags.database,
        refused,
        "not confirmed; nothing was restored",
    )
}
