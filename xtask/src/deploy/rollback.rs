//! `cargo xtask rollback <env> <dest>...`: the environment back to the release before (or the
//! one named) with each destination's own rollback.sh, the one definition of a switch: it
//! re-verifies the release against its manifest (and its signature), switches the live link and
//! records why.
//!
//! One folder is a rollback of one local host. `--with-data` puts the data back too, in the
//! order that keeps writers off it: rollback.sh checks the release, the server stops, the backup
//! the deploy took is restored, rollback.sh switches, and the server starts again on the release
//! gone back to, gated on health and smoke. On a failure it says which state the data, the live
//! release and the server are each in.

use std::sync::Mutex;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::predeploy::{self, Connection, Taken};
use crate::deploy::destination::Destination;
use crate::deploy::fleet::{self, Fleet};
use crate::deploy::installation::Installation;
use crate::deploy::service::{self, Manager};
use crate::flags;
use crate::util::confirm;

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
            (false, [Destination::Local(given)]) => Some(Installation::existing(self.env, given)?),
            _ => None,
        };
        let mut fleet = Fleet::new(self.env, destinations, &self.fleet)?;
        // A rollout restarts and gates every host; one folder is switched, the restart is the
        // operator's (rollback.sh prints the next steps).
        fleet.restart = rollout;
        fleet.health_timeout = self.health_timeout;
        fleet.health_url = self.health_url.clone();
        fleet.allowed_signers = self.allowed_signers.clone();
        match (&single, self.with_data) {
            (Some(installation), true) => self.with_data(fleet, installation),
            _ => fleet::rollback(
                &fleet,
                self.to.as_deref(),
                self.reason.as_deref(),
                self.json,
                None,
            ),
        }
    }

    /// `--with-data` on one folder: check, stop, restore, switch, start and gate.
    fn with_data(&self, mut fleet: Fleet, installation: &Installation) -> anyhow::Result<()> {
        let manager = Manager::detect(installation);
        // The server comes back on the release gone back to, gated on health and smoke, the way
        // it ran before; one that was not running stays stopped.
        if let Some(start) = manager.start_command(installation) {
            fleet.restart = true;
            fleet.restart_command = Some(start);
        }
        let restored: Mutex<Option<Restored>> = Mutex::new(None);
        let before_switch = |fleet: &Fleet, destination: &Destination, live: &str, target: &str| {
            // rollback.sh's own checks first: no data goes back for a release it would refuse.
            let ran = fleet.connector.run(
                fleet.rollback_check_command(destination, target),
                "",
                false,
            )?;
            if !ran.success {
                bail!("{}", ran.why());
            }
            let (connection, taken) = self.data_to_restore(installation, live, target)?;
            self.confirm(&connection, &taken)?;
            let _lock = installation.lock("rollback --with-data")?;
            manager.stop(installation).with_context(|| {
                format!("could not stop the server; nothing was restored or switched ({live} is live); see `cargo xtask status`")
            })?;
            eprintln!(
                "restoring {} (taken before {live} was deployed) into {}",
                taken.file.display(),
                connection.describe()
            );
            let kept = match predeploy::restore(&connection, &taken) {
                Ok(kept) => kept,
                Err(error) => {
                    let server = match manager.start(installation) {
                        Ok(()) if manager == Manager::Stopped => "it was not running".to_owned(),
                        Ok(()) => format!("the server runs {live} again"),
                        Err(start) => format!(
                            "the server is STOPPED: starting it again failed ({start:#}); start it with {}/run.sh start",
                            installation.dir.display()
                        ),
                    };
                    bail!("{error:#}: the data is unchanged, {live} is still live, and {server}");
                }
            };
            let mut extra = vec![
                ("backup", json!(taken.file)),
                ("backup_sha256", json!(taken.sha256)),
                ("database", json!(connection.name)),
            ];
            if let Some(kept) = &kept {
                extra.push(("kept_database", json!(kept)));
            }
            installation.record_with(
                "restore",
                Some(live),
                target,
                self.reason.as_deref(),
                extra,
            )?;
            *restored.lock().expect("one host") = Some(Restored {
                taken,
                kept,
                connection,
            });
            Ok(())
        };
        let result = fleet::rollback(
            &fleet,
            self.to.as_deref(),
            self.reason.as_deref(),
            self.json,
            Some(&before_switch),
        );
        let restored = restored.into_inner().expect("one host");
        let Some(restored) = restored else {
            return result;
        };
        let state = state_after(installation, &restored, manager);
        match result {
            Ok(()) => {
                eprintln!("{state}");
                Ok(())
            }
            Err(error) => bail!("{error:#}\n{state}"),
        }
    }

    /// The backup `--with-data` would put back and where: refused, with nothing changed, if it
    /// is not the data of `target`, is missing, or fails its checksum.
    fn data_to_restore(
        &self,
        installation: &Installation,
        live: &str,
        target: &str,
    ) -> anyhow::Result<(Connection, Taken)> {
        if live.is_empty() {
            bail!(
                "refused: nothing is live, so no deploy's backup can go back; nothing was changed"
            );
        }
        let (from, taken) = predeploy::before_deploy_of(&installation.history(), live)
            .context("refused --with-data; nothing was changed")?;
        if from != target {
            bail!(
                "refused --with-data: the backup taken before {live} was deployed holds the data of {from}, not of {target}; roll back to {from} (--to {from}), or without --with-data; nothing was changed"
            );
        }
        predeploy::check(&taken).context("refused --with-data")?;
        let connection = Connection::of(installation).with_context(|| {
            format!(
                "refused --with-data: {} names no database (SAULPOS_DB_URL and SAULPOS_DB_USERNAME); nothing was changed",
                installation.dir.join("saulpos.env").display()
            )
        })?;
        Ok((connection, taken))
    }

    /// Asks before the server stops, on a terminal, or requires `--yes` when nobody can answer.
    fn confirm(&self, connection: &Connection, taken: &Taken) -> anyhow::Result<()> {
        if self.yes {
            return Ok(());
        }
        confirm::typed(
            &format!(
                "This stops the server, restores {} over {} (its data now kept under a dated name), switches, and starts it again.",
                taken.file.display(),
                connection.describe()
            ),
            "the database name",
            &connection.name,
            || {
                format!(
                    "refused --with-data: restoring {} replaces the data of {} (kept under a dated name) and stops the server meanwhile; pass --yes to confirm; nothing was changed",
                    taken.file.display(),
                    connection.describe()
                )
            },
            "not confirmed; nothing was changed",
        )
    }
}

/// What `--with-data` restored.
struct Restored {
    taken: Taken,
    kept: Option<String>,
    connection: Connection,
}

/// Each part's state after a restore: the data, the live release, the server.
fn state_after(installation: &Installation, restored: &Restored, manager: Manager) -> String {
    let live = installation.live().unwrap_or_else(|| "none".to_owned());
    let running = service::report(installation, Some(&live));
    let server = match (running["version"].as_str(), manager) {
        (Some(version), _) if version == live => format!("runs {version}"),
        (Some(version), _) => format!(
            "runs {version}, not the live {live}: {}",
            running["next"].as_str().unwrap_or("restart it")
        ),
        (None, Manager::Stopped) => format!(
            "not running (it was not before either): start it with {}/run.sh start",
            installation.dir.display()
        ),
        (None, _) => format!(
            "NOT running: start it with {}",
            manager
                .start_command(installation)
                .unwrap_or_else(|| "./run.sh start".to_owned())
                .replace(
                    "./run.sh",
                    &format!("{}/run.sh", installation.dir.display())
                )
        ),
    };
    let kept = match &restored.kept {
        Some(kept) => format!(
            "; the data before is kept as database {kept:?} (drop it when no longer needed: {})",
            restored.connection.drop_command(kept)
        ),
        None => String::new(),
    };
    format!(
        "state: data: restored from {}{kept}\n       live release: {live}\n       server: {server}",
        restored.taken.file.display()
    )
}
