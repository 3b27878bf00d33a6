//! `cargo xtask deploy <env> <version> <dest>...`: install the release's payload for `<env>` on
//! each destination with the payload's own install.sh, the one definition of an install. A single
//! folder is a one-host rollout whose host is local; several destinations, `ssh://` hosts or
//! `--hosts` roll out in batches, each host health-gated (deploy/fleet/).

use anyhow::bail;
use xshell::Shell;

use crate::deploy::destination::Destination;
use crate::deploy::fleet::{Analysis, Fleet, Rollout};
use crate::{flags, release::dist};

impl flags::Deploy {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (destinations, rollout) = self.fleet.destinations(&self.destinations)?;
        if !rollout
            && !self.restart
            && (self.restart_command.is_some() || self.health_url.is_some())
        {
            bail!(
                "--restart-command and --health-url go with --restart (or with several destinations)"
            );
        }
        if self.keep < 2 {
            bail!(
                "--keep {} would not keep the release to roll back to; use 2 or more",
                self.keep
            );
        }
        // One folder is checked here against its own allowed_signers, before anything is copied.
        let allowed_signers = match (&self.allowed_signers, destinations.as_slice()) {
            (None, [Destination::Local(dest)]) if !rollout => {
                Some(dest.join("allowed_signers")).filter(|file| file.is_file())
            }
            (given, _) => given.clone(),
        };
        let analysis = Analysis::from_args(&self.canary, destinations.len())?;
        if analysis.is_some() && !rollout && !self.restart {
            bail!(
                "--analysis reads the running server's metrics: add --restart, so the new release runs and is gated first"
            );
        }
        let mut fleet = Fleet::new(self.env, destinations, &self.fleet)?;
        // A rollout gates every host; one folder is restarted and gated when asked.
        fleet.restart = rollout || self.restart;
        fleet.health_timeout = self.health_timeout;
        fleet.health_url = self.health_url.clone();
        fleet.restart_command = self.restart_command.clone();
        let rollout = Rollout {
            fleet: &fleet,
            version: &self.version,
            dist: self.dist.clone().unwrap_or_else(dist::root),
            keep: self.keep.into(),
            reason: self.reason.clone(),
            allowed_signers,
            backup_args: self.backup_args(),
            analysis,
        };
        rollout.run(self.json)
    }

    /// The backup options, as each host's install.sh takes them.
    fn backup_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.no_backup {
            args.push("--no-backup".to_owned());
        }
        if self.backup {
            args.push("--backup".to_owned());
        }
        if let Some(dir) = &self.backup_dir {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            args.extend(["--backup-dir".to_owned(), dir.display().to_string()]);
        }
        args
    }
}
