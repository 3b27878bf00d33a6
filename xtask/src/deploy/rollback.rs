//! `cargo xtask rollback <env> <dest>...`: the environment back to the release before (or the
//! one named) with each destination's own rollback.sh, the one definition of a switch: it
//! re-verifies the release against its manifest (and its signature), switches the live link and
//! records why. One folder is a rollback of one local host; `--with-data` first has rollback.sh
//! check the release, then restores the backup its deploy took, then lets rollback.sh switch.

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::predeploy::{self, Connection};
use crate::deploy::destination::Destination;
use crate::deploy::fleet::{self, Fleet};
use crate::deploy::payload::Payload;
use crate::flags;

impl flags::Rollback {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (destinations, rollout) = self.fleet.destinations(&self.destinations)?;
        if rollout {
            if self.with_data {
                bail!(
                    "--with-data is for one local folder: restore each host's data with `cargo xtask rollback <env> <folder> --with-data` on it, one at a time"
                );
            }
            if self.allowed_signers.is_some() {
                bail!(
                    "--allowed-signers is for one local folder; in a rollout each host checks against its own <path>/allowed_signers"
                );
            }
        }
        let single = match (rollout, destinations.as_slice()) {
            (false, [Destination::Local(given)]) => Some(Payload::existing(&self.env, given)?),
            _ => None,
        };
        let mut fleet = Fleet::new(&self.env, destinations, &self.fleet)?;
        // A rollout restarts and gates every host; one folder is switched, the restart is the
        // operator's (rollback.sh prints the next steps).
        fleet.restart = rollout;
        fleet.health_timeout = self.health_timeout;
        fleet.health_url = self.health_url.clone();
        fleet.allowed_signers = self.allowed_signers.clone();
        let with_data = |fleet: &Fleet, destination: &Destination, live: &str, target: &str| {
            let payload = single.as_ref().expect("--with-data is for one folder");
            // rollback.sh's own checks first: no data goes back for a release it would refuse.
            let ran = fleet.connector.run(
                fleet.rollback_check_command(destination, target),
                "",
                false,
            )?;
            if !ran.success {
                bail!("{}", ran.why());
            }
            let _lock = payload.lock("rollback --with-data")?;
            self.restore_data(payload, (!live.is_empty()).then_some(live), target)
        };
        let before_switch: Option<&fleet::BeforeSwitch<'_>> = if self.with_data {
            Some(&with_data)
        } else {
            None
        };
        fleet::rollback(
            &fleet,
            self.to.as_deref(),
            self.reason.as_deref(),
            self.json,
            before_switch,
        )
    }

    /// `--with-data`: the backup the deploy of the live release took goes back in (the safe
    /// restore), before the switch; refused, with nothing changed, if it is not the data of
    /// `target`, is missing, or fails its checksum.
    fn restore_data(
        &self,
        payload: &Payload,
        live: Option<&str>,
        target: &str,
    ) -> anyhow::Result<()> {
        let live = live.context(
            "refused: nothing is live, so no deploy's backup can go back; nothing was changed",
        )?;
        let (from, taken) = predeploy::before_deploy_of(&payload.history(), live)
            .context("refused --with-data; nothing was changed")?;
        if from != target {
            bail!(
                "refused --with-data: the backup taken before {live} was deployed holds the data of {from}, not of {target}; roll back to {from} (--to {from}), or without --with-data; nothing was changed"
            );
        }
        predeploy::check(&taken).context("refused --with-data")?;
        let connection = Connection::of(payload).with_context(|| {
            format!(
                "refused --with-data: {} names no database (SAULPOS_DB_URL and SAULPOS_DB_USERNAME); nothing was changed",
                payload.dir.join("saulpos.env").display()
            )
        })?;
        eprintln!(
            "restoring {} (taken before {live} was deployed) into {}",
            taken.file.display(),
            connection.describe()
        );
        predeploy::restore(&connection, &taken, self.yes)
            .context("the data and the live release are unchanged")?;
        payload.record_with(
            "restore",
            Some(live),
            target,
            self.reason.as_deref(),
            vec![
                ("backup", json!(taken.file)),
                ("backup_sha256", json!(taken.sha256)),
                ("database", json!(connection.name)),
            ],
        )
    }
}
