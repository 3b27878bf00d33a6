//! `cargo xtask deploy <env> <version> <destination>...` over several hosts: checks the payload,
//! takes every host's lock, deploys batch after batch, and on a failure puts back every host it
//! switched.

use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use anyhow::bail;

use super::Fleet;
use super::canary::{self, Analysis, Ending};
use super::plan::Plan;
use super::report::{Outcome, Report, finish, or_none, refused_hosts};
use crate::release::payload::Payload;
use crate::release::{checksum, dist, payload_files, signature, verify};
use crate::util::interrupt::Interrupt;

/// `cargo xtask deploy <env> <version> <destination>...`: the rolling rollout.
pub struct Rollout<'a> {
    pub fleet: &'a Fleet,
    pub version: &'a str,
    pub dist: PathBuf,
    pub keep: usize,
    pub reason: Option<String>,
    pub allowed_signers: Option<PathBuf>,
    /// install.sh's backup options: --no-backup, --backup, --backup-dir DIR (a path on the host).
    pub backup_args: Vec<String>,
    /// The canary analysis after the first batch, if asked for.
    pub analysis: Option<Analysis>,
}

impl Rollout<'_> {
    pub fn run(&self, json_out: bool) -> anyhow::Result<()> {
        let fleet = self.fleet;
        let started = Instant::now();
        let (version, release_dir) = dist::release_dir(&self.dist, self.version)?;
        let version = version.to_string();
        // Nothing leaves this machine unless the payload is exactly what was packaged.
        // Only the allowed signers given here: each host checks against its own as it installs.
        if self.allowed_signers.is_some() {
            // Refuses a file that is not there (the folder argument is only for the default).
            signature::allowed_signers(self.allowed_signers.as_deref(), &release_dir)?;
        }
        let shipped = Payload::open(
            &release_dir,
            &fleet.env,
            &version,
            self.allowed_signers.as_deref(),
        )?;
        // Its release, archive entries included, is what was packaged and holds nothing a
        // release may not (each host's install.sh checks the same before it writes a byte).
        let checked = verify::check_release(shipped.release_dir(), &version);
        if !checked.problems.is_empty() {
            for problem in &checked.problems {
                eprintln!("problem: {problem}");
            }
            bail!(
                "refused: the release in the {} payload of {version} does not match its checksum and manifest, or holds what a release may not; nothing was copied anywhere",
                fleet.env
            );
        }
        if let Some(signer) = &shipped.signer {
            eprintln!("signature: {signer}");
        }
        let payload_name = payload_files::payload_archive_name(&fleet.env, &version);
        let payload_path = release_dir.join(&payload_name);
        // Payload::open checked the payload against its .sha256: that digest is the payload's.
        let (payload_sha, _) = checksum::read(&release_dir.join(format!("{payload_name}.sha256")))?;
        let payload_size = std::fs::metadata(&payload_path)?.len();
        let interrupt = Interrupt::catch()?;

        let held = match fleet.hold_all(&payload_name) {
            Ok(held) => held,
            Err(reports) => {
                finish(fleet, &version, "refused", &reports, json_out, started);
                bail!(
                    "refused before anything was copied: {}",
                    refused_hosts(&reports)
                );
            }
        };
        let mut reports: Vec<Report> = fleet
            .destinations
            .iter()
            .zip(&held)
            .map(|(destination, held)| {
                let mut report = Report::new(destination, Outcome::NotStarted);
                report.before = held.fact("live");
                report
            })
            .collect();
        eprintln!(
            "rolling {version} over {} host(s) of {}, {} at a time ({} KiB payload)",
            reports.len(),
            fleet.env,
            fleet.batch,
            payload_size / 1024
        );

        let total = reports.len();
        let plan = Plan::new(
            total,
            fleet.batch,
            self.analysis
                .as_ref()
                .map_or(0, |analysis| analysis.canaries),
        );
        // One host compares itself with its own figures before the switch.
        let before = match &self.analysis {
            Some(analysis) if total == 1 && reports[0].before != version => {
                eprintln!(
                    "reading {}'s figures for {} before the switch",
                    reports[0].destination,
                    crate::flags::show_duration(analysis.interval)
                );
                Some(fleet.before_switch(&reports[0].destination, analysis.interval))
            }
            _ => None,
        };
        let mut failed = false;
        let mut interrupted = false;
        // Why the canaries went back without a failure (inconclusive, interrupted).
        let mut stopped: Option<String> = None;
        for (batch_index, range) in plan.batches.iter().enumerate() {
            if interrupt.happened() {
                interrupted = true;
                break;
            }
            let first = range.start;
            let batch = &mut reports[range.clone()];
            thread::scope(|scope| {
                for (offset, report) in batch.iter_mut().enumerate() {
                    let held = &held[first + offset];
                    let (payload_name, payload_path, payload_sha, version) =
                        (&payload_name, &payload_path, &payload_sha, &version);
                    scope.spawn(move || {
                        let host_started = Instant::now();
                        eprintln!(
                            "[{}/{total}] {}: deploying {version} (live: {})",
                            first + offset + 1,
                            report.destination,
                            or_none(&report.before)
                        );
                        self.deploy_host(
                            report,
                            held,
                            payload_name,
                            payload_path,
                            payload_sha,
                            version,
                        );
                        report.took = host_started.elapsed();
                        eprintln!(
                            "[{}/{total}] {}: {} in {:.1} s{}",
                            first + offset + 1,
                            report.destination,
                            report.outcome.label(),
                            report.took.as_secs_f64(),
                            if report.why.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", report.why)
                            }
                        );
                    });
                }
            });
            if batch.iter().any(|report| report.outcome == Outcome::Failed) {
                failed = true;
                break;
            }
            if let (0, Some(analysis)) = (batch_index, &self.analysis) {
                match canary::analyse(
                    fleet,
                    analysis,
                    &mut reports,
                    &version,
                    before.clone(),
                    &interrupt,
                ) {
                    Ending::Promote => {}
                    Ending::Failed(why) => {
                        for report in &mut reports[..plan.canaries] {
                            if report.outcome == Outcome::Deployed {
                                (report.outcome, report.why) = (Outcome::Failed, why.clone());
                            }
                        }
                        failed = true;
                        break;
                    }
                    Ending::Inconclusive(why) => {
                        stopped = Some(format!("the canary analysis was inconclusive: {why}"));
                        break;
                    }
                    Ending::Interrupted => {
                        interrupted = true;
                        stopped = Some("interrupted during the canary analysis".to_owned());
                        break;
                    }
                }
            }
        }
        if interrupt.happened() && !failed {
            interrupted = true;
        }
        if failed {
            let failed_at = reports
                .iter()
                .find(|report| report.outcome == Outcome::Failed)
                .map(|report| report.destination.to_string())
                .unwrap_or_default();
            let cause = format!("the rollout of {version} stopped at {failed_at}");
            self.roll_back_switched(&mut reports, &version, &cause);
        } else if let Some(why) = &stopped {
            self.roll_back_switched(&mut reports, &version, why);
            for report in &mut reports[..plan.canaries] {
                if report.outcome == Outcome::RolledBack {
                    report.why = format!("{why}; {}", report.why);
                }
            }
        }
        fleet.probe_after(&mut reports);
        drop(held);
        let outcome = if failed {
            "failed"
        } else if stopped.is_some() && !interrupted {
            "inconclusive"
        } else if interrupted {
            "interrupted"
        } else {
            "deployed"
        };
        finish(fleet, &version, outcome, &reports, json_out, started);
        if failed {
            let at = reports
                .iter()
                .find(|report| report.outcome == Outcome::Failed)
                .expect("a failed host");
            let unhealed: Vec<String> = reports
                .iter()
                .filter(|report| report.outcome == Outcome::RollbackFailed)
                .map(|report| report.destination.to_string())
                .collect();
            let back = if unhealed.is_empty() {
                "every host it switched is back on the release it ran before".to_owned()
            } else {
                format!("the rollback FAILED on {}: act now", unhealed.join(", "))
            };
            bail!(
                "the rollout of {version} stopped at {}: {}; {back}",
                at.destination,
                at.why
            );
        }
        if let (Some(why), false) = (&stopped, interrupted) {
            bail!(
                "{why}; the canaries are back on the release they ran before and no other host was touched: drive traffic at the canaries, lower --min-requests, or pass --on-inconclusive proceed"
            );
        }
        if interrupted {
            bail!(
                "interrupted: the hosts in flight finished, no other host was started; every host is on a complete release (table above). Run the same command to continue, or `cargo xtask rollback {} <destinations> --to <release>` to go back",
                fleet.env
            );
        }
        Ok(())
    }

    /// Every host this rollout switched goes back to the release it ran before, restarted and
    /// health-checked (the failing host's install.sh already did so for itself).
    fn roll_back_switched(&self, reports: &mut [Report], version: &str, cause: &str) {
        let fleet = self.fleet;
        // A failed host whose install.sh could not switch back by itself (the connection
        // dropped after the switch, say) is still on the new version: it goes back too.
        fleet.probe_after(reports);
        let switched: Vec<&mut Report> = reports
            .iter_mut()
            .filter(|report| {
                report.outcome == Outcome::Deployed
                    || (report.outcome == Outcome::Failed && report.after == version)
            })
            .collect();
        if switched.is_empty() {
            return;
        }
        eprintln!(
            "putting {} host(s) back on the release they ran before",
            switched.len()
        );
        let reason = format!("automatic: {cause}");
        thread::scope(|scope| {
            for report in switched {
                let reason = &reason;
                scope.spawn(move || {
                    let started = Instant::now();
                    let failed = report.outcome == Outcome::Failed;
                    if report.before.is_empty() {
                        let none = format!(
                            "no release before {version} to go back to; {version} stays live"
                        );
                        report.why = if failed {
                            format!("{}; {none}", report.why)
                        } else {
                            none
                        };
                        return;
                    }
                    let command =
                        fleet.rollback_command(&report.destination, &report.before, reason);
                    let label = report.destination.to_string();
                    let result = match fleet.connector.run(command, &label, true) {
                        Ok(ran) if ran.success => Ok(format!("back on {}: UP", report.before)),
                        Ok(ran) => Err(ran.why()),
                        Err(error) => Err(format!("{error:#}")),
                    };
                    match (failed, result) {
                        (false, Ok(back)) => {
                            (report.outcome, report.why) = (Outcome::RolledBack, back);
                            report.after = report.before.clone();
                        }
                        (false, Err(why)) => {
                            (report.outcome, report.why) = (Outcome::RollbackFailed, why)
                        }
                        (true, Ok(back)) => report.why = format!("{}; {back}", report.why),
                        (true, Err(why)) => {
                            report.outcome = Outcome::RollbackFailed;
                            report.why = format!("{}; going back failed: {why}", report.why);
                        }
                    }
                    report.took += started.elapsed();
                });
            }
        });
    }
}
