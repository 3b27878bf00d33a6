//! Several destinations at once (`ssh://` hosts or folders): a rolling, health-gated deploy in
//! batches that puts every host it switched back when one fails, and `rollback` and `status`
//! over the same destinations. Each host runs its payload's own install.sh and rollback.sh; the
//! rollout holds every host's `rollout.lock` from the first check to the table.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::deploy::destination::Destination;
use crate::deploy::remote::{Connector, Held, Ran};
use crate::flags::Env;
use crate::release::payload::Payload;
use crate::release::{checksum, dist, payload_files, signature, verify};
use crate::util::interrupt::Interrupt;

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
    fn label(self) -> &'static str {
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
}

impl Report {
    fn new(destination: &Destination, outcome: Outcome) -> Report {
        Report {
            destination: destination.clone(),
            before: String::new(),
            after: String::new(),
            outcome,
            took: Duration::ZERO,
            why: String::new(),
            gate_ms: None,
            copied: false,
        }
    }

    /// The outcome of the host's script: `success` with its gate time when it succeeded, else
    /// `failure` with why. Returns whether it succeeded.
    fn settle(&mut self, ran: anyhow::Result<Ran>, success: Outcome, failure: Outcome) -> bool {
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

    fn json(&self) -> Value {
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
            "why": text(&self.why),
        })
    }
}

/// The options every fleet command shares.
pub struct Fleet {
    pub env: String,
    pub destinations: Vec<Destination>,
    pub connector: Connector,
    pub batch: usize,
    /// Whether each host restarts the service and gates on health and smoke after the switch.
    pub restart: bool,
    pub health_timeout: Duration,
    /// `--health-url`, `{host}` replaced by each host's name.
    pub health_url: Option<String>,
    pub restart_command: Option<String>,
    /// For a local folder: the allowed_signers file its rollback.sh checks against.
    pub allowed_signers: Option<PathBuf>,
}

impl Fleet {
    pub fn new(
        env: Env,
        destinations: Vec<Destination>,
        args: &crate::flags::FleetArgs,
    ) -> anyhow::Result<Fleet> {
        let (ssh_config, batch) = (args.ssh_config.clone(), args.batch);
        if batch == 0 {
            bail!("--batch 0 would deploy to no host; give 1 or more");
        }
        let mut absolute = Vec::new();
        for destination in destinations {
            absolute.push(match destination {
                Destination::Local(path) => Destination::Local(std::path::absolute(&path)?),
                ssh => ssh,
            });
        }
        Ok(Fleet {
            env: env.name().to_owned(),
            destinations: absolute,
            connector: Connector::new(ssh_config)?,
            batch: batch.into(),
            restart: true,
            health_timeout: Duration::from_secs(60),
            health_url: None,
            restart_command: None,
            allowed_signers: None,
        })
    }

    fn path(destination: &Destination) -> String {
        match destination {
            Destination::Local(path) => path.display().to_string(),
            Destination::Ssh(target) => target.path.clone(),
        }
    }

    fn health_url_for(&self, destination: &Destination) -> Option<String> {
        let host = match destination {
            Destination::Local(_) => "127.0.0.1",
            Destination::Ssh(target) => target.host.as_str(),
        };
        self.health_url
            .as_ref()
            .map(|url| url.replace("{host}", host))
    }

    /// The gate's options for the host's install.sh or rollback.sh; none without a restart.
    fn gate_args(&self, destination: &Destination) -> Vec<String> {
        if !self.restart {
            return Vec::new();
        }
        let mut args = vec![
            "--restart".to_owned(),
            "--health-timeout".to_owned(),
            self.health_timeout.as_secs().max(1).to_string(),
        ];
        if let Some(command) = &self.restart_command {
            args.extend(["--restart-command".to_owned(), command.clone()]);
        }
        if let Some(url) = self.health_url_for(destination) {
            args.extend(["--health-url".to_owned(), url]);
        }
        args
    }

    /// The host's rollback.sh back to `to`, restarted and health-gated, run to its end on the
    /// host even if this process or its connection dies.
    fn rollback_command(&self, destination: &Destination, to: &str, reason: &str) -> Command {
        let mut args = self.rollback_args(destination, to);
        args.extend(["--reason".to_owned(), reason.to_owned()]);
        args.extend(self.gate_args(destination));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.connector.fleet(destination, &args)
    }

    /// The host's rollback.sh checking that it can go back to `to`, switching nothing.
    pub fn rollback_check_command(&self, destination: &Destination, to: &str) -> Command {
        let mut args = self.rollback_args(destination, to);
        args.push("--check".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.connector.fleet(destination, &args)
    }

    fn rollback_args(&self, destination: &Destination, to: &str) -> Vec<String> {
        let mut args = vec![
            "rollback".to_owned(),
            self.env.clone(),
            Fleet::path(destination),
            "--to".to_owned(),
            to.to_owned(),
        ];
        if let (Destination::Local(_), Some(allowed)) = (destination, &self.allowed_signers) {
            let allowed = std::path::absolute(allowed).unwrap_or_else(|_| allowed.clone());
            args.extend([
                "--allowed-signers".to_owned(),
                allowed.display().to_string(),
            ]);
        }
        args
    }

    /// Takes every host's rollout lock, all at once; refuses, holding none, if one fails.
    fn hold_all(&self, payload: &str) -> Result<Vec<Held>, Vec<Report>> {
        eprintln!(
            "checking {} destination(s) and taking their rollout locks",
            self.destinations.len()
        );
        let results: Vec<anyhow::Result<Held>> = thread::scope(|scope| {
            let handles: Vec<_> = self
                .destinations
                .iter()
                .map(|destination| {
                    let path = Fleet::path(destination);
                    scope.spawn(move || {
                        self.connector
                            .hold(destination, &["hold", &self.env, &path, payload])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a hold thread panicked"))
                .collect()
        });
        if results.iter().all(Result::is_ok) {
            return Ok(results.into_iter().map(Result::unwrap).collect());
        }
        let mut reports = Vec::new();
        for (destination, result) in self.destinations.iter().zip(results) {
            let mut report = Report::new(destination, Outcome::Refused);
            match result {
                Ok(held) => {
                    report.before = held.fact("live");
                    report.after = report.before.clone();
                    report.outcome = Outcome::NotStarted;
                }
                Err(error) => report.why = format!("{error:#}"),
            }
            reports.push(report);
        }
        Err(reports)
    }

    /// Each host's live release after the work, read again (it is the truth the table shows).
    fn probe_after(&self, reports: &mut [Report]) {
        thread::scope(|scope| {
            for report in reports.iter_mut() {
                match report.outcome {
                    Outcome::Skipped | Outcome::NotStarted | Outcome::Refused => {
                        report.after = report.before.clone();
                        continue;
                    }
                    // Its install.sh or rollback.sh passed the gate: where it is, is known.
                    Outcome::Deployed | Outcome::RolledBack if !report.after.is_empty() => continue,
                    _ => {}
                }
                scope.spawn(move || {
                    let path = Fleet::path(&report.destination);
                    let command = self
                        .connector
                        .fleet(&report.destination, &["probe", &self.env, &path]);
                    match self.connector.run(command, "", false) {
                        Ok(ran) if ran.success => {
                            report.after = ran
                                .lines
                                .iter()
                                .find_map(|line| line.strip_prefix("live="))
                                .unwrap_or("")
                                .to_owned();
                        }
                        _ => report.after = "?".to_owned(),
                    }
                });
            }
        });
    }
}

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

        let mut failed = false;
        let mut interrupted = false;
        let total = reports.len();
        for (batch_index, batch) in reports.chunks_mut(fleet.batch).enumerate() {
            if interrupt.happened() {
                interrupted = true;
                break;
            }
            let first = batch_index * fleet.batch;
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
        }
        if interrupt.happened() && !failed {
            interrupted = true;
        }
        if failed {
            self.roll_back_switched(&mut reports, &version);
        }
        fleet.probe_after(&mut reports);
        drop(held);
        let outcome = if failed {
            "failed"
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
        if interrupted {
            bail!(
                "interrupted: the hosts in flight finished, no other host was started; every host is on a complete release (table above). Run the same command to continue, or `cargo xtask rollback {} <destinations> --to <release>` to go back",
                fleet.env
            );
        }
        Ok(())
    }

    fn deploy_host(
        &self,
        report: &mut Report,
        held: &Held,
        payload_name: &str,
        payload_path: &std::path::Path,
        payload_sha: &str,
        version: &str,
    ) {
        let fleet = self.fleet;
        if report.before == version {
            report.outcome = Outcome::Skipped;
            report.why = format!("{version} is already live");
            return;
        }
        let destination = &report.destination;
        let path = Fleet::path(destination);
        // The payload travels on the install session's standard input: one SSH session a host
        // for copy and install, checked by its SHA-256 on arrival.
        let copy = held.fact("payload_sha256") != payload_sha;
        report.copied = copy;
        let keep = self.keep.to_string();
        let reason = self.reason.clone().unwrap_or_default();
        let mut args: Vec<String> = [
            "install",
            &fleet.env,
            &path,
            payload_name,
            payload_sha,
            if copy { "yes" } else { "no" },
            "--keep",
            &keep,
            "--reason",
            &reason,
        ]
        .iter()
        .map(|word| (*word).to_owned())
        .collect();
        args.extend(fleet.gate_args(destination));
        args.extend(self.backup_args.iter().cloned());
        // A local install checks against the file given here too; a host only knows its own.
        if let (Destination::Local(_), Some(allowed)) = (destination, &self.allowed_signers) {
            let allowed = std::path::absolute(allowed).unwrap_or_else(|_| allowed.clone());
            args.extend([
                "--allowed-signers".to_owned(),
                allowed.display().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = fleet.connector.fleet(destination, &args);
        if copy {
            match std::fs::File::open(payload_path) {
                Ok(file) => command.stdin(file),
                Err(error) => {
                    report.outcome = Outcome::Failed;
                    report.why = format!("cannot read {}: {error}", payload_path.display());
                    return;
                }
            };
        }
        let ran = fleet.connector.run(command, &destination.to_string(), true);
        if report.settle(ran, Outcome::Deployed, Outcome::Failed) {
            report.after = version.to_owned();
        }
    }

    /// Every host this rollout switched goes back to the release it ran before, restarted and
    /// health-checked (the failing host's install.sh already did so for itself).
    fn roll_back_switched(&self, reports: &mut [Report], version: &str) {
        let fleet = self.fleet;
        let failed_at = reports
            .iter()
            .find(|report| report.outcome == Outcome::Failed)
            .map(|report| report.destination.to_string())
            .unwrap_or_default();
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
        let reason = format!("automatic: the rollout of {version} stopped at {failed_at}");
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

/// `cargo xtask status <env> <destination>...`: one line per host (live, previous, health).
pub fn status(fleet: &Fleet, json_out: bool) -> anyhow::Result<()> {
    let rows: Vec<anyhow::Result<Ran>> = thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .destinations
            .iter()
            .map(|destination| {
                scope.spawn(move || {
                    let path = Fleet::path(destination);
                    let mut args = vec!["probe".to_owned(), fleet.env.clone(), path];
                    args.extend(fleet.health_url_for(destination));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    fleet
                        .connector
                        .run(fleet.connector.fleet(destination, &args), "", false)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a status thread panicked"))
            .collect()
    });
    let mut hosts = Vec::new();
    let mut unreachable = 0;
    for (destination, row) in fleet.destinations.iter().zip(rows) {
        let ran = row.unwrap_or_else(|error| Ran {
            success: false,
            lines: vec![format!("error: {error:#}")],
        });
        let fact = |name: &str| {
            ran.lines
                .iter()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_owned()
        };
        if ran.success {
            hosts.push(json!({
                "destination": destination.to_string(),
                "live": or_null(&fact("live")),
                "previous": or_null(&fact("previous")),
                "health": fact("health"),
            }));
        } else {
            unreachable += 1;
            hosts.push(json!({ "destination": destination.to_string(), "error": ran.why() }));
        }
    }
    if json_out {
        println!("{}", json!({ "env": fleet.env, "hosts": hosts }));
    } else {
        let mut table = vec![
            ["HOST", "LIVE", "PREVIOUS", "HEALTH"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for host in &hosts {
            let text = |key: &str| host[key].as_str().unwrap_or("none").to_owned();
            if host.get("error").is_some() {
                table.push(vec![
                    text("destination"),
                    "?".into(),
                    "?".into(),
                    format!("unreachable: {}", text("error")),
                ]);
            } else {
                table.push(vec![
                    text("destination"),
                    text("live"),
                    text("previous"),
                    text("health"),
                ]);
            }
        }
        print!("{}", render(&table));
    }
    if unreachable > 0 {
        bail!("{unreachable} destination(s) could not be read; see the table");
    }
    Ok(())
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "none" } else { text }
}

fn or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

fn refused_hosts(reports: &[Report]) -> String {
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
fn finish(
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
    let mut table = vec![
        ["HOST", "BEFORE", "AFTER", "OUTCOME", "TIME", "WHY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for report in reports {
        table.push(vec![
            report.destination.to_string(),
            or_none(&report.before).to_owned(),
            or_none(&report.after).to_owned(),
            report.outcome.label().to_owned(),
            format!("{:.1} s", report.took.as_secs_f64()),
            report.why.clone(),
        ]);
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
fn render(rows: &[Vec<String>]) -> String {
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
