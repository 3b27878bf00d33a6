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

        // The dump is hashed while everything else reads it: the table of contents, the
        // databases, and the load into the scratch database. Nothing is swapped in before the
        // hash matches; a mismatch is reported before any other error (the scratch database
        // is dropped), so "nothing was restored" holds as if it had been checked first.
        let mut dump = Checked::start(&self.backup_file, &self.checksum_file)?;
        let mut verified = move || dump.verified();
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
        // The target's settings, privileges and comment only now, so that none of them (a
        // read-only default, a statement timeout, CONNECT revoked) reaches pg_restore.
        let finished = check_adopt_and_swap(
            &server,
            &scratch.name,
            &self.database,
            exists.then_some(previous_name.as_str()),
            &entries,
            self.count_rows_up_to_mb.saturating_mul(1 << 20),
        )?;
        let mut scratch = scratch;
        scratch.keep = true;
        let (tables, ended) = (finished.tables, finished.ended);
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
        if let Some((open, who)) = finished.connected
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
