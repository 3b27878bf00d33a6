//! `cargo xtask rollback <env> <destination>...` over several hosts.

use std::thread;
use std::time::Instant;

use anyhow::bail;

use super::Fleet;
use super::report::{Outcome, Report, finish, or_none, refused_hosts};
use crate::deploy::destination::Destination;
use crate::util::interrupt::Interrupt;

/// What runs on a host's behalf after its rollout lock is taken and before its rollback.sh
/// switches: given the live release and the target; an error leaves the host as it is.
pub type BeforeSwitch<'a> =
    dyn Fn(&Fleet, &Destination, &str, &str) -> anyhow::Result<()> + Sync + 'a;

/// `cargo xtask rollback <env> <destination>...`: every host back to `--to` (or each to the
/// release it ran before), restarted and health-checked; hosts already there are skipped, and
/// one host's failure does not stop the others.
pub fn rollback(
    fleet: &Fleet,
    to: Option<&str>,
    reason: Option<&str>,
    json_out: bool,
    before_switch: Option<&BeforeSwitch<'_>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let to = to
        .map(crate::release::release_version::parse)
        .transpose()?
        .map(|version| version.to_string());
    let interrupt = Interrupt::catch()?;
    let held = match fleet.hold_all("") {
        Ok(held) => held,
        Err(reports) => {
            finish(
                fleet,
                to.as_deref().unwrap_or("the release before"),
                "refused",
                &reports,
                json_out,
                started,
            );
            bail!(
                "refused before anything changed: {}",
                refused_hosts(&reports)
            );
        }
    };
    let mut reports: Vec<Report> = Vec::new();
    for (destination, held) in fleet.destinations.iter().zip(&held) {
        let mut report = Report::new(destination, Outcome::NotStarted);
        report.before = held.fact("live");
        report.after = to.clone().unwrap_or_else(|| held.fact("previous"));
        reports.push(report);
    }
    let reason = reason.unwrap_or("").to_owned();
    for batch in reports.chunks_mut(fleet.batch) {
        if interrupt.happened() {
            break;
        }
        thread::scope(|scope| {
            for report in batch.iter_mut() {
                let reason = &reason;
                scope.spawn(move || {
                    let started = Instant::now();
                    let target = std::mem::take(&mut report.after);
                    if target.is_empty() {
                        report.outcome = Outcome::Failed;
                        report.why = format!(
                            "no release before {} is recorded; name one with --to",
                            or_none(&report.before)
                        );
                        return;
                    }
                    if target == report.before {
                        report.outcome = Outcome::Skipped;
                        report.why = format!("{target} is already live");
                        return;
                    }
                    if let Some(before_switch) = before_switch
                        && let Err(error) =
                            before_switch(fleet, &report.destination, &report.before, &target)
                    {
                        report.outcome = Outcome::Failed;
                        report.why = format!("{error:#}");
                        report.after = report.before.clone();
                        return;
                    }
                    let command = fleet.rollback_command(&report.destination, &target, reason);
                    let label = report.destination.to_string();
                    let ran = fleet.connector.run(command, &label, true);
                    if report.settle(ran, Outcome::RolledBack, Outcome::RollbackFailed) {
                        report.after = target;
                    }
                    report.took = started.elapsed();
                });
            }
        });
    }
    fleet.probe_after(&mut reports);
    drop(held);
    let bad = reports
        .iter()
        .filter(|report| matches!(report.outcome, Outcome::Failed | Outcome::RollbackFailed))
        .count();
    let not_started = reports
        .iter()
        .filter(|report| report.outcome == Outcome::NotStarted)
        .count();
    let outcome = if bad > 0 {
        "failed"
    } else if not_started > 0 {
        "interrupted"
    } else {
        "rolled back"
    };
    finish(
        fleet,
        to.as_deref().unwrap_or("the release before"),
        outcome,
        &reports,
        json_out,
        started,
    );
    if bad > 0 {
        bail!("the rollback failed on {bad} host(s); see the table");
    }
    if not_started > 0 {
        bail!(
            "interrupted: {not_started} host(s) were not started; run the same command to finish"
        );
    }
    Ok(())
}
