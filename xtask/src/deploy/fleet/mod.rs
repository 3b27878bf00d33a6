//! Several destinations at once (`ssh://` hosts or folders): a rolling, health-gated deploy in
//! batches, with an optional canary analysis, that puts every host it switched back when one
//! fails, and `rollback` and `status` over the same destinations. Each host runs its payload's
//! own install.sh and rollback.sh; the rollout holds every host's `rollout.lock` from the first
//! check to the table.

mod analysis;
mod canary;
mod plan;
mod report;
mod rollback;
mod rollout;
mod session;
mod status;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::bail;

pub use canary::Analysis;
pub use report::{Outcome, Report};
pub use rollback::rollback;
pub use rollout::Rollout;
pub use status::status;

use crate::deploy::destination::Destination;
use crate::deploy::remote::{Connector, Held};
use crate::flags::Env;

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
                        self.connector.hold(
                            destination,
                            &[
                                "hold",
                                &self.env,
                                &path,
                                payload,
                                &self.connector.script_sha256,
                            ],
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a hold thread panicked"))
                .collect()
        });
        if results.iter().all(Result::is_ok) {
            let held: Vec<Held> = results.into_iter().map(Result::unwrap).collect();
            for (destination, one) in self.destinations.iter().zip(&held) {
                self.connector.keep(destination, &one.fact("script"));
            }
            return Ok(held);
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
