//! Loading the dump into the scratch database with one `pg_restore --jobs`, its progress shown
//! as each long item finishes.

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};

use super::dump::ListEntry;
use crate::database::postgres::{self, Server};
use crate::util::progress::step;

/// Restores the whole dump into `database` with one `pg_restore --jobs`: PostgreSQL's own
/// scheduler loads each table and then builds its indexes and keys as their dependencies
/// allow, `jobs` connections at a time, so index builds overlap with the loading of other
/// tables. Each table loaded and each index or key built is shown as it finishes.
///
/// A dump streamed through a pipe carries no data offsets; pg_restore finds each table's data
/// by skipping over the blocks before it, which reads only their headers.
pub fn restore_into(
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

#[cfg(test)]
mod tests {
    use super::PgRestoreReport;

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
