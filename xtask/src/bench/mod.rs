//! `cargo xtask bench <what>`: measure our tools against the plain ones on the same input, in
//! one run, and print a table (or JSON with `--json`).

mod archive;
mod backup;
mod deploy;
mod fleet;
mod load;
mod package;
mod release;
mod server;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use serde_json::json;
use xshell::{Shell, cmd};

use crate::flags;

impl flags::Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let (title, rows) = match &self.what {
            flags::BenchWhat::Server(what) => ("server", server::run(sh, what)?),
            flags::BenchWhat::Package(what) => ("package", package::run(sh, what)?),
            flags::BenchWhat::Backup(what) => ("backup", backup::run(sh, what)?),
            flags::BenchWhat::Archive(what) => ("archive", archive::run(sh, what)?),
            flags::BenchWhat::Deploy(what) => ("deploy", deploy::run(sh, what)?),
            flags::BenchWhat::Fleet(what) => ("fleet", fleet::run(sh, what)?),
            flags::BenchWhat::Release(what) => ("release", release::run(what)?),
        };
        if self.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|row| json!({"measure": row.measure, "value": row.value, "goal": row.goal, "met": row.met}))
                .collect();
            println!("{}", json!({"bench": title, "rows": rows}));
        } else {
            print!("{}", table(title, &rows));
        }
        Ok(())
    }
}

/// One line of a bench's table: what was measured, the figure, and the goal it is held to.
pub struct Row {
    pub measure: String,
    pub value: String,
    pub goal: String,
    /// Whether the goal was met; `None` for figures without a goal.
    pub met: Option<bool>,
}

impl Row {
    pub fn figure(measure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            measure: measure.into(),
            value: value.into(),
            goal: String::new(),
            met: None,
        }
    }

    pub fn goal(
        measure: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        met: bool,
    ) -> Row {
        Row {
            measure: measure.into(),
            value: value.into(),
            goal: goal.into(),
            met: Some(met),
        }
    }
}

/// A Markdown table, so it can be pasted into a note as it is.
fn table(title: &str, rows: &[Row]) -> String {
    let mut out =
        format!("\nbench {title}\n\n| measure | value | goal | met |\n| --- | --- | --- | --- |\n");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {met} |\n",
            row.measure, row.value, row.goal
        ));
    }
    out
}

/// Runs `work` and returns how long it took.
pub fn timed<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Duration)> {
    let started = Instant::now();
    let value = work()?;
    Ok((value, started.elapsed()))
}

/// The median of some durations (the upper one of the middle two for an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Seconds with three decimals, for the tables.
pub fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// Progress for the bench's own steps, on stderr.
pub fn note(message: &str) {
    eprintln!("bench: {message}");
}

/// Makes `dir` an empty folder, removing what an earlier run left there.
/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Packages `version` into `dist` as a user would, with `cargo xtask package`.
pub fn package_version(sh: &Shell, dist: &Path, version: &str) -> anyhow::Result<()> {
    cmd!(
        sh,
        "cargo xtask package {version} --dist {dist} --allow-dirty"
    )
    .run()?;
    Ok(())
}
