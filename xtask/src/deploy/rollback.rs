//! `cargo xtask rollback <env> <dest>`: re-verify the release before (or the one named) against
//! its manifest, switch the live link back to it, record why, and print the next steps.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::predeploy::{self, Connection};
use crate::deploy::destination::Destination;
use crate::deploy::fleet::{self, Fleet};
use crate::deploy::payload::Payload;
use crate::release::manifest::{self, Manifest};
use crate::release::{checksum, signature, verify};
use crate::{flags, release::dist, release::release_version, util::env_file};

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
            let mut fleet = Fleet::new(&self.env, destinations, &self.fleet)?;
            fleet.health_timeout = self.health_timeout;
            fleet.health_url = self.health_url.clone();
            return fleet::rollback(
                &fleet,
                self.to.as_deref(),
                self.reason.as_deref(),
                self.json,
            );
        }
        let Some(Destination::Local(given)) = destinations.into_iter().next() else {
            unreachable!("one local destination");
        };
        self.run_local(given)
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

    fn run_local(self, given: PathBuf) -> anyhow::Result<()> {
        let started = Instant::now();
        let payload = Payload::existing(&self.env, &given)?;
        let _lock = payload.lock("rollback")?;
        let live = payload.live();
        let kept: Vec<String> = payload.kept().iter().map(ToString::to_string).collect();
        let target = match &self.to {
            Some(version) => {
                let version = release_version::parse(version)?.to_string();
                if !payload.release(&version).is_dir() {
                    bail!(
                        "release {version} is not kept in {}; kept releases: {}",
                        payload.releases().display(),
                        kept.join(", ")
                    );
                }
                version
            }
            None => match payload.previous() {
                Some(previous) => previous,
                None => bail!(
                    "no release before {} is recorded in {}; name one with --to (kept releases: {})",
                    live.as_deref().unwrap_or("none"),
                    payload.dir.display(),
                    kept.join(", ")
                ),
            },
        };
        if live.as_deref() == Some(target.as_str()) {
            bail!(
                "{target} is already the live release of {}; nothing to do",
                payload.env
            );
        }

        let dir = payload.release(&target);
        match signature::allowed_signers(self.allowed_signers.as_deref(), &given)? {
            Some(allowed) => {
                let signer = vouched(&dir, &allowed).with_context(|| {
                    format!(
                        "refused: release {target} in {}; the live release is unchanged",
                        dir.display()
                    )
                })?;
                eprintln!("signature: {signer}");
            }
            None => eprintln!(
                "signatures were not checked: no {}",
                given.join("allowed_signers").display()
            ),
        }
        let manifest = Manifest::from_json(&fs::read_to_string(dir.join(manifest::JSON_NAME))?)?;
        let problems = check_extracted(&dir, &dist::top_folder(&target), &manifest);
        if !problems.is_empty() {
            for problem in &problems {
                eprintln!("problem: {problem}");
            }
            bail!(
                "refused: {} no longer matches its manifest; the live release is unchanged; deploy {target} again with `cargo xtask deploy {} {target} {}`",
                dir.display(),
                payload.env,
                given.display()
            );
        }
        if self.with_data {
            self.restore_data(&payload, live.as_deref(), &target)?;
        }
        payload.switch(&target)?;
        payload.record("rollback", live.as_deref(), &target, self.reason.as_deref())?;
        let elapsed = started.elapsed();
        eprintln!(
            "rolled {} back from {} to {target} in {:.0} ms (files re-verified)",
            payload.env,
            live.as_deref().unwrap_or("none"),
            elapsed.as_secs_f64() * 1000.0
        );
        let service = payload.service_name();
        let database = database_from_env_file(&payload);
        let url = payload.health_url();
        eprintln!(
            "next:\n  1. restart: sudo systemctl restart {service}   (or stop it and run {}/run.sh)\n  2. check:   cargo xtask health --url {url} --expect-version {target}\n              cargo xtask smoke --url {url} --expect-version {target}\n  3. only if the schema or data must go back too (take the last backup made before {} was deployed):\n     cargo xtask restore {} <backup-dir>/<file>.dump <backup-dir>/<file>.dump.sha256",
            payload.dir.display(),
            live.as_deref().unwrap_or("the release rolled back"),
            database
        );
        if self.json {
            let summary = json!({
                "env": payload.env,
                "from": live,
                "to": target,
                "reason": self.reason,
                "milliseconds": elapsed.as_secs_f64() * 1000.0,
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// Checks the signature of a kept release's SHA256SUMS and that it vouches for the manifests
/// there (which in turn vouch for every file); returns who signed.
fn vouched(dir: &Path, allowed: &Path) -> anyhow::Result<String> {
    let signer = signature::verify(
        &dir.join(signature::SUMS),
        &dir.join(signature::SIG),
        allowed,
    )?;
    let sums = fs::read_to_string(dir.join(signature::SUMS))?;
    let listed = verify::sums_lines(&sums);
    for name in [manifest::JSON_NAME, manifest::TEXT_NAME] {
        let (digest, _) = checksum::sha256_file(&dir.join(name))?;
        if !listed
            .iter()
            .any(|(sum, listed_name)| listed_name == name && *sum == digest)
        {
            bail!(
                "its {name} is not the one its signed {} lists",
                signature::SUMS
            );
        }
    }
    Ok(signer)
}

/// `<host> <port> <database> <username>` from the payload's saulpos.env, or placeholders.
fn database_from_env_file(payload: &Payload) -> String {
    let text = fs::read_to_string(payload.dir.join("saulpos.env")).unwrap_or_default();
    let database = env_file::database(&text).unwrap_or_else(|| env_file::Database {
        host: "<host>".to_owned(),
        port: "<port>".to_owned(),
        name: "<database>".to_owned(),
    });
    let user =
        env_file::value(&text, "SAULPOS_DB_USERNAME").unwrap_or_else(|| "<username>".to_owned());
    format!(
        "{} {} {} {user}",
        database.host, database.port, database.name
    )
}

/// Re-checks an extracted release against its manifest: every file there, with its size, mode
/// and SHA-256. Returns the problems found.
fn check_extracted(dir: &Path, top: &str, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        let Some(relative) = file.path.strip_prefix(top) else {
            problems.push(format!("the manifest lists {} outside {top}/", file.path));
            continue;
        };
        let path = dir.join(relative.trim_start_matches('/'));
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(_) => {
                problems.push(format!("{} is missing", path.display()));
                continue;
            }
        };
        match file.kind.as_str() {
            "dir" if !metadata.is_dir() => {
                problems.push(format!("{} is not a folder", path.display()))
            }
            "file" => {
                let mode = metadata.permissions().mode() & 0o777;
                if mode != file.mode & 0o755 {
                    problems.push(format!(
                        "{} has mode {mode:04o}, the manifest says {:04o}",
                        path.display(),
                        file.mode
                    ));
                }
                match checksum::sha256_file(&path) {
                    Ok((digest, size)) => {
                        if Some(digest.as_str()) != file.sha256.as_deref() || size != file.size {
                            problems.push(format!(
                                "{} changed since it was deployed (sha256 {digest})",
                                path.display()
                            ));
                        }
                    }
                    Err(error) => problems.push(format!("{error:#}")),
                }
            }
            _ => {}
        }
    }
    problems
}
