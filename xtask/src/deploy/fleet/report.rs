//! The table a fleet command prints (or its JSON): one row a host, with what happened there.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Fleet;
use super::canary::HostFigures;
use crate::deploy::destination::Destination;
use crate::deploy::remote::Ran;

/// What happened on one host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Deployed,
    /// Already live there: nothing to do (a re-run after a fix continues from here).
    Skipped,
    Failed,
    /// Switched by this run, then put back because another host failed.
    RolledBack,
    RollbackFailed,
    NotStarted,
    /// The rollout lock or the first look failed: nothing was copied anywhere.
    Refused,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled back",
            Outcome::RollbackFailed => "rollback FAILED",
            Outcome::NotStarted => "not started",
            Outcome::Refused => "refused",
        }
    }
}

/// One row of the table.
pub struct Report {
    pub destination: Destination,
    pub before: String,
    pub after: String,
    pub outcome: Outcome,
    pub took: Duration,
    pub why: String,
    /// The restart and health wait the host's gate measured, in ms.
    pub gate_ms: Option<u64>,
    pub copied: bool,
    /// The canary analysis's last interval on this host, when it was watched.
    pub analysis: Option<HostFigures>,
}

impl Report {
    pub fn new(destination: &Destination, outcome: Outcome) -> Report {
        Report {
            destination: destination.clone(),
            before: String::new(),
            after: String::new(),
            outcome,
            took: Duration::ZERO,
            why: String::new(),
            gate_ms: None,
            copied: false,
            analysis: None,
        }
    }

    /// The outcome of the host's script: `success` with its gate time when it succeeded, else
    /// `failure` with why. Returns whether it succeeded.
    pub fn settle(&mut self, ran: anyhow::Result<Ran>, success: Outcome, failure: Outcome) -> bool {
        match ran {
            Ok(ran) if ran.success => {
                self.outcome = success;
                self.gate_ms = gate_ms(&ran);
                true
            }
            Ok(ran) => {
                (self.outcome, self.why) = (failure, ran.why());
                false
            }
            Err(error) => {
                (self.outcome, self.why) = (failure, format!("{error:#}"));
                false
            }
        }
    }

    pub fn json(&self) -> Value {
        let text = |value: &str| {
            if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            }
        };
        json!({
            "destination": self.destination.to_string(),
            "before": text(&self.before),
            "after": text(&self.after),
            "outcome": self.outcome.label(),
            "seconds": (self.took.as_secs_f64() * 1000.0).round() / 1000.0,
            "gate_ms": self.gate_ms,
            "copied": self.copied,
            "analysis": self.analysis.as_ref().map(HostFigures::json),
            "why": text(&self.why),
        })
    }
}

pub fn or_none(text: &str) -> &str {
    if text.is_empty() { "none" } else { text }
}

pub fn or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

pub fn refused_hosts(reports: &[Report]) -> String {
    reports
        .iter()
        .filter(|report| report.outcome == Outcome::Refused)
        .map(|report| format!("{}: {}", report.destination, report.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The restart and health wait the host's gate reported.
fn gate_ms(ran: &Ran) -> Option<u64> {
    ran.lines.iter().rev().find_map(|line| {
        let rest = line.split_once("(restart and health wait: ")?.1;
        rest.split_once(" ms)")?.0.parse().ok()
    })
}

/// Prints the table (or the JSON) of a fleet command.
pub fn finish(
    fleet: &Fleet,
    version: &str,
    outcome: &str,
    reports: &[Report],
    json_out: bool,
    started: Instant,
) {
    if json_out {
        let out = json!({
            "env": fleet.env,
            "version": version,
            "outcome": outcome,
            "batch": fleet.batch,
            "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "hosts": reports.iter().map(Report::json).collect::<Vec<_>>(),
        });
        println!("{out}");
        return;
    }
    let analysed = reports.iter().any(|report| report.analysis.is_some());
    let mut header = vec!["HOST", "BEFORE", "AFTER", "OUTCOME", "TIME"];
    if analysed {
        header.push("ANALYSIS (last interval)");
    }
    header.push("WHY");
    let mut table = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for report in reports {
        let mut row = vec![
            report.destination.to_string(),
            or_none(&report.before).to_owned(),
            or_none(&report.after).to_owned(),
            report.outcome.label().to_owned(),
            format!("{:.1} s", report.took.as_secs_f64()),
        ];
        if analysed {
            row.push(
                report
                    .analysis
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), HostFigures::describe),
            );
        }
        row.push(report.why.clone());
        table.push(row);
    }
    println!(
        "{} of {} ({version}): {outcome} in {:.1} s",
        fleet.env,
        fleet.destinations.len(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", render(&table));
}

/// Columns padded to their widest cell; the last one is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["HOST".to_owned(), "OUTCOME".to_owned(), "WHY".to_owned()],
            vec![
                "ssh://pos-1/opt".to_owned(),
                "failed".to_owned(),
                "health stayed DOWN".to_owned(),
            ],
        ];
        assert_eq!(
            render(&rows),
            "HOST             OUTCOME  WHY\nssh://pos-1/opt  failed   health stayed DOWN\n"
        );
    }

    #[test]
    fn the_gate_time_is_read_from_the_host_output() {
        let ran = Ran {
            success: true,
            lines: vec!["install.sh: 2.0.0 is UP at http://127.0.0.1:1 and passed the smoke checks (restart and health wait: 812 ms)".into()],
        };
        assert_eq!(gate_ms(&ran), Some(812));
    }
}
