//! The restore's last steps, on the loaded scratch database and in one psql session: check it
//! holds every table the dump has data for (and count their rows), give it the target's
//! settings, privileges, connection limit and comment, see who is connected to the target, then
//! swap it in with both renames in one transaction.

use anyhow::{Context, bail};
use serde_json::json;

use super::dump::ListEntry;
use crate::database::postgres::Server;

/// Gives `:scratch` the settings, privileges, connection limit and comment of `:like`.
const ADOPT_PROPERTIES: &str = include_str!("../sql/adopt_properties.sql");
/// Each user table with its rows: `name|count|estimate`.
const COUNT_TABLES: &str = include_str!("../sql/count_tables.sql");
/// The client connections to `:target`, a row per kind, and how many.
const SESSIONS: &str = include_str!("../sql/sessions.sql");
/// The swap over an existing target: aside, then in, in one transaction.
const SWAP: &str = include_str!("../sql/swap.sql");

/// How many client connections a database has, and who holds them.
pub type Connections = (i64, String);

/// How many client connections `database` has, and who holds them.
pub fn sessions(server: &Server, database: &str) -> anyhow::Result<Connections> {
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

/// A table's rows as the restore reports them.
#[derive(Clone, Copy)]
pub enum Rows {
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
    pub fn json(self, table: &str) -> serde_json::Value {
        match self {
            Rows::Counted(rows) => json!({"table": table, "rows": rows, "counted": true}),
            Rows::About(rows) => json!({"table": table, "rows": rows, "counted": false}),
            Rows::NotCounted => json!({"table": table, "rows": null, "counted": false}),
        }
    }
}

/// Stops the session (printing `INCOMPLETE`) unless the scratch database holds at least
/// `:expected` user tables.
const COMPLETE: &str = include_str!("../sql/complete.sql");

/// How the restore ended: the tables with their rows, who was connected to the target, and how
/// many of those connections the swap ended.
pub struct Finished {
    pub tables: TableRows,
    pub connected: Option<Connections>,
    pub ended: i64,
}

/// The restore's last steps in one psql session (a process and a connection less than each
/// apart): on the scratch database, check it holds every table the dump has data for and count
/// their rows (tables up to `limit` bytes counted, bigger ones with the row count their index
/// build recorded); restoring over the target, give the scratch database the target's
/// settings, privileges, connection limit and comment and see who is connected to the target;
/// then, from the `postgres` database, swap it in. Nothing is swapped unless the check passed.
/// A swap that fails (a client reconnecting between the end of its session and the rename) is
/// tried again on its own.
pub fn check_adopt_and_swap(
    server: &Server,
    scratch: &str,
    target: &str,
    previous: Option<&str>,
    entries: &[ListEntry],
    limit: i64,
) -> anyhow::Result<Finished> {
    let expected = entries
        .iter()
        .filter(|entry| entry.kind == "TABLE DATA")
        .count();
    let mut script = format!("{COUNT_TABLES};\n{COMPLETE}\n");
    if previous.is_some() {
        script += &format!("{ADOPT_PROPERTIES}\n\\echo {SECTION}\n{SESSIONS};\n");
    } else {
        script += &format!("\\echo {SECTION}\n");
    }
    script += &format!(
        "\\echo {SECTION}\n\\connect postgres\n{}",
        swap_sql(previous)
    );
    let (limit, budget) = (limit.to_string(), limit.saturating_mul(4).to_string());
    let expected_text = expected.to_string();
    let vars = [
        ("limit", limit.as_str()),
        ("budget", &budget),
        ("expected", &expected_text),
        ("scratch", scratch),
        ("like", target),
        ("target", target),
        ("previous", previous.unwrap_or_default()),
    ];
    let output = server.psql_output(scratch, &script, &vars, None)?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let not_changed = || match previous {
        Some(_) => format!(
            "cannot check the restored database and give it the settings, privileges and comment of {target:?}; the target database was not changed"
        ),
        None => {
            "cannot check the restored database; the target database was not changed".to_owned()
        }
    };
    let (tables, connected, swapped) = read_output(&printed, previous.is_some());
    if printed.lines().any(|line| line == "INCOMPLETE") {
        bail!(
            "the scratch database has {} tables but the dump has data for {expected}; the target database was not changed",
            tables.len()
        );
    }
    if output.status.success() {
        let ended = swapped
            .and_then(|rows| rows.first().and_then(|line| line.trim().parse().ok()))
            .unwrap_or(0);
        return Ok(Finished {
            tables,
            connected,
            ended,
        });
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if swapped.is_none() {
        return Err(anyhow::anyhow!(
            "psql at {} failed: {said}",
            server.address()
        ))
        .context(not_changed());
    }
    // Checked and adopted; only the swap failed: again, on its own.
    let ended = swap(server, target, scratch, previous)?;
    Ok(Finished {
        tables,
        connected,
        ended,
    })
}

/// Each table's name and rows, by name.
pub type TableRows = Vec<(String, Rows)>;

/// Sections of [`check_adopt_and_swap`]'s output are told apart by a line no row is: every row
/// holds a '|'. (Only a table name with a line break and this line in it could fake one; the
/// check would then miss tables and refuse, never pass wrongly.)
const SECTION: &str = "--";

/// Reads [`check_adopt_and_swap`]'s output: the tables, then (when it adopted a target's
/// properties) who is connected to that target, then (once the check passed and the session
/// went on to the swap) the swap's rows.
fn read_output(
    printed: &str,
    adopted: bool,
) -> (TableRows, Option<Connections>, Option<Vec<&str>>) {
    let lines: Vec<&str> = printed.lines().collect();
    let mut sections = lines.split(|line| *line == SECTION);
    let tables = read_tables(sections.next().unwrap_or_default().iter().copied());
    let sessions = sections.next();
    let connected = adopted.then(|| read_sessions(&sessions.unwrap_or_default().join("\n")));
    let swapped = sections.next().map(<[&str]>::to_vec);
    (tables, connected, swapped)
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

/// The swap: over an existing target (aside, then in, in one transaction), or a rename.
fn swap_sql(previous: Option<&str>) -> &'static str {
    match previous {
        Some(_) => SWAP,
        None => "ALTER DATABASE :\"scratch\" RENAME TO :\"target\";\n",
    }
}

/// Renames the target aside (if it exists) and the scratch database to the target, in one
/// transaction, ending the target's open connections first; returns how many were ended.
pub fn swap(
    server: &Server,
    target: &str,
    scratch: &str,
    previous: Option<&str>,
) -> anyhow::Result<i64> {
    let sql = swap_sql(previous);
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
    use super::read_output;

    #[test]
    fn the_session_reads_tables_then_who_is_connected_then_the_swap() {
        let output = "public.\"a|b\"|12|12\npublic.big||5000000\npublic.no_index||-1\n--\n\
                      app from 10.0.0.7 (pool) ×3|3\npostgres from a local socket|1\n--\n4";
        let (tables, connected, swapped) = read_output(output, true);
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
        assert_eq!(swapped, Some(vec!["4"]));
        // A restore into a new database adopts nothing and asks nobody's connections.
        let (tables, connected, swapped) = read_output("public.t|1|1\n--\n--", false);
        assert_eq!(tables.len(), 1);
        assert_eq!(connected, None);
        assert_eq!(swapped, Some(vec![]));
        // A target nobody is connected to: its section is empty.
        let (_, connected, _) = read_output("public.t|1|1\n--\n--\n0", true);
        assert_eq!(connected, Some((0, String::new())));
        // A session that stopped before the swap: no swap section.
        let (_, _, swapped) = read_output("public.t|1|1\nINCOMPLETE", true);
        assert_eq!(swapped, None);
    }
}
