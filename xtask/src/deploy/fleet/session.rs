//! One host's part of a rollout: its install session, which carries the payload on its standard
//! input and runs the payload's install.sh there.

use super::report::{Outcome, Report};
use super::{Fleet, Rollout};
use crate::deploy::destination::Destination;
use crate::deploy::remote::Held;

impl Rollout<'_> {
    pub(super) fn deploy_host(
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
}
