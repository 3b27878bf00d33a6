//! `cargo xtask deploy <env> <version> <dest>`: install the release's payload for `<env>` as its
//! install.sh would: verify it, extract it safely into `<dest>/saulpos-<env>/releases/<version>/`,
//! write the payload's run.sh, rollback.sh, example environment file and systemd unit, and switch
//! the live link, all under the payload folder's lock.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::predeploy::{self, Connection, Taken};
use crate::deploy::destination::Destination;
use crate::deploy::fleet::{Fleet, Rollout};
use crate::deploy::health;
use crate::deploy::http::BaseUrl;
use crate::deploy::payload::Payload;
use crate::deploy::shipped::Shipped;
use crate::release::manifest;
use crate::release::signature;
use crate::util::durable::{self, StagingDir};
use crate::util::progress::step;
use crate::{deploy::extract, flags, release::dist, release::verify};

impl flags::Deploy {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (destinations, rollout) = self.fleet.destinations(&self.destinations)?;
        if rollout {
            return self.roll_out(destinations);
        }
        let Some(Destination::Local(given)) = destinations.into_iter().next() else {
            unreachable!("one local destination");
        };
        if !self.restart && (self.restart_command.is_some() || self.health_url.is_some()) {
            bail!(
                "--restart-command and --health-url go with --restart (or with several destinations)"
            );
        }
        self.run_local(given)
    }

    /// Several destinations: the rolling, health-gated rollout (deploy/fleet.rs).
    fn roll_out(self, destinations: Vec<Destination>) -> anyhow::Result<()> {
        if self.keep < 2 {
            bail!(
                "--keep {} would not keep the release to roll back to; use 2 or more",
                self.keep
            );
        }
        let mut fleet = Fleet::new(&self.env, destinations, &self.fleet)?;
        fleet.health_timeout = self.health_timeout;
        fleet.health_url = self.health_url.clone();
        fleet.restart_command = self.restart_command.clone();
        let rollout = Rollout {
            fleet: &fleet,
            version: &self.version,
            dist: self.dist.clone().unwrap_or_else(dist::root),
            keep: self.keep,
            reason: self.reason.clone(),
            allowed_signers: self.allowed_signers.clone(),
            backup_args: self.backup_args(),
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
            args.extend(["--backup-dir".to_owned(), dir.display().to_string()]);
        }
        args
    }

    /// The backup the deploy takes first: by default for staging and prod when saulpos.env
    /// names a database, with --backup for dev, never with --no-backup or when nothing switches.
    fn pre_deploy_backup(
        &self,
        payload: &Payload,
        version: &str,
        started: Instant,
    ) -> anyhow::Result<PreDeploy> {
        if self.no_backup {
            step(started, "no backup before this deploy (--no-backup)");
            return Ok(PreDeploy::Skipped("--no-backup".to_owned()));
        }
        let wanted = self.backup || self.backup_dir.is_some() || payload.env != "dev";
        if !wanted {
            return Ok(PreDeploy::Skipped(format!(
                "off for {} (--backup takes one)",
                payload.env
            )));
        }
        if payload.live().as_deref() == Some(version) {
            return Ok(PreDeploy::Skipped(format!("{version} is already live")));
        }
        let Some(connection) = Connection::of(payload) else {
            let why =
                "saulpos.env names no database (SAULPOS_DB_URL and SAULPOS_DB_USERNAME)".to_owned();
            if self.backup || self.backup_dir.is_some() {
                bail!("cannot take the backup asked for: {why}; nothing was changed");
            }
            step(started, &format!("no backup before this deploy: {why}"));
            return Ok(PreDeploy::Skipped(why));
        };
        let dir = self
            .backup_dir
            .clone()
            .unwrap_or_else(|| payload.dir.join("backups"));
        step(
            started,
            &format!(
                "backing up {} into {}",
                connection.describe(),
                dir.display()
            ),
        );
        let taken = predeploy::take(&connection, &dir).with_context(|| {
            format!(
                "refused: no backup, no deploy (--no-backup skips it); nothing under {} was changed",
                payload.dir.display()
            )
        })?;
        step(
            started,
            &format!("backup: {} (sha256 {})", taken.file.display(), taken.sha256),
        );
        Ok(PreDeploy::Taken(taken))
    }

    fn run_local(self, given: PathBuf) -> anyhow::Result<()> {
        let started = Instant::now();
        Payload::new(&self.env, &given)?;
        if self.keep < 2 {
            bail!(
                "--keep {} would not keep the release to roll back to; use 2 or more",
                self.keep
            );
        }
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let (version, release_dir) = dist::release_dir(&dist_dir, &self.version)?;
        let version = version.to_string();

        // 1. Nothing under <dest> changes unless the payload is exactly what was packaged.
        let allowed = signature::allowed_signers(self.allowed_signers.as_deref(), &given)?;
        let shipped = Shipped::open(&release_dir, &self.env, &version, allowed.as_deref())?;
        let checked = verify::check_release(shipped.release_dir(), &version);
        if !checked.problems.is_empty() {
            for problem in &checked.problems {
                eprintln!("problem: {problem}");
            }
            bail!(
                "refused: the release in {} does not match its checksum and manifest; nothing under {} was changed",
                shipped.name,
                given.display()
            );
        }
        let manifest = &shipped.manifest;
        extract::check_entries(
            &shipped.release_dir().join(&manifest.archive.name),
            &dist::top_folder(&version),
            manifest,
        )
        .with_context(|| format!("nothing under {} was changed", given.display()))?;
        step(
            started,
            &format!(
                "verified {} ({} entries)",
                shipped.name, checked.files_checked
            ),
        );
        match &shipped.signer {
            Some(signer) => step(started, &format!("signature: {signer}")),
            None => step(
                started,
                &format!(
                    "signatures were not checked: no {} (or --allowed-signers)",
                    given.join("allowed_signers").display()
                ),
            ),
        }

        if !given.is_dir() {
            bail!(
                "{} does not exist; create it (e.g. sudo install -d -o $USER {}) and deploy again",
                given.display(),
                given.display()
            );
        }
        // Absolute, as install.sh resolves it: the systemd unit names it.
        let dest = fs::canonicalize(&given)
            .with_context(|| format!("cannot resolve {}", given.display()))?;
        let payload = Payload::new(&self.env, &dest)?;
        let _lock = payload.lock(&format!("deploy {version}"))?;
        // 1b. The database as it is before this release touches it; a failed backup stops here.
        let backup = self.pre_deploy_backup(&payload, &version, started)?;
        let releases = payload.releases();
        fs::create_dir_all(&releases)
            .with_context(|| format!("cannot create {}", releases.display()))?;
        fs::create_dir_all(payload.dir.join("logs"))?;
        // Under the lock, every partial file belongs to a run that is gone.
        durable::remove_partials(&payload.dir)?;
        durable::remove_partials(&releases)?;

        // 2. The release's own folder, extracted under a temporary name and renamed at the end.
        let target = payload.release(&version);
        let top = dist::top_folder(&version);
        let reuse = target.is_dir() && extract::check_extracted(&target, &top, manifest).is_empty();
        if reuse {
            step(
                started,
                &format!("{} is already there and intact", target.display()),
            );
        } else {
            let staging = StagingDir::new(&target)?;
            let archive = shipped.release_dir().join(&manifest.archive.name);
            extract::release(&archive, &top, manifest, staging.path())?;
            for name in shipped.kept_in_release() {
                let copy = staging.path().join(&name);
                fs::write(&copy, shipped.file(&name))
                    .and_then(|()| fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)))
                    .with_context(|| format!("cannot write {}", copy.display()))?;
            }
            if target.exists() {
                // A damaged copy of this version: put the fresh one in its place.
                eprintln!("{} was damaged; replacing it", target.display());
                let aside =
                    durable::temporary_name(&target.with_file_name(format!("{version}-damaged")));
                fs::rename(&target, &aside)?;
                staging.commit(&target)?;
                fs::remove_dir_all(&aside)?;
            } else {
                staging.commit(&target)?;
            }
            step(started, &format!("extracted {}", target.display()));
        }

        // 3. The files around the releases, from the payload; each replaced atomically.
        for (name, mode, bytes) in shipped.installed_files(&payload.env, &payload.dir) {
            durable::write_with_mode(&payload.dir.join(&name), &bytes, mode)?;
        }
        for name in [manifest::TEXT_NAME, manifest::JSON_NAME] {
            let link = payload.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("current").join(name), &link)
                    .with_context(|| format!("cannot create {}", link.display()))?;
            }
        }

        // 4. The switch: one rename.
        let before = payload.live();
        if before.as_deref() != Some(version.as_str()) {
            payload.switch(&version)?;
        }
        payload.record_with(
            "deploy",
            before.as_deref(),
            &version,
            self.reason.as_deref(),
            backup.history_fields(),
        )?;
        step(
            started,
            &format!(
                "live release of {}: {} (was {})",
                payload.env,
                version,
                before.as_deref().unwrap_or("none")
            ),
        );

        let removed = prune(&payload, self.keep)?;
        if self.restart {
            let url = self
                .health_url
                .clone()
                .unwrap_or_else(|| payload.health_url());
            let gate = Gate {
                payload: &payload,
                command: self.restart_command.as_deref(),
                url: &url,
                timeout: self.health_timeout,
            };
            if let Err(why) = gate.pass(&version) {
                let Some(previous) = before.as_deref().filter(|previous| *previous != version)
                else {
                    bail!(
                        "{version} failed its health gate: {why:#}\nthere is no release before it to go back to; {version} stays live"
                    );
                };
                eprintln!("{version} failed its health gate; switching back to {previous}");
                payload.switch(previous)?;
                let short = format!("{why:#}");
                let short = short.lines().next().unwrap_or_default();
                payload.record(
                    "rollback",
                    Some(&version),
                    previous,
                    Some(&format!(
                        "automatic: {version} failed its health gate: {short}"
                    )),
                )?;
                let back = match gate.pass(previous) {
                    Ok(()) => format!("{previous} is live again, UP and passing the smoke checks"),
                    Err(error) => {
                        format!("{previous} is live again but NOT healthy either: {error:#}")
                    }
                };
                bail!("{version} failed its health gate at {url}: {why:#}\n{back}");
            }
            step(
                started,
                &format!("{version} is UP at {url} and passed the smoke checks"),
            );
        }
        let service = payload.service_name();
        if !self.restart {
            eprintln!(
                "next: restart the service to run {version}:\n  sudo systemctl restart {service}     (unit: {}/{service}.service)\n  or by hand: {}/run.sh\nthen wait for it:\n  cargo xtask health --url {} --expect-version {version}",
                payload.dir.display(),
                payload.dir.display(),
                payload.health_url()
            );
        }
        if self.json {
            let summary = json!({
                "env": payload.env,
                "version": version,
                "previous": before,
                "payload": payload.dir,
                "release": target,
                "reused": reuse,
                "removed": removed,
                "backup": backup.file().map(|taken| &taken.file),
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// What the deploy did about a backup, for its history line.
enum PreDeploy {
    Taken(Taken),
    Skipped(String),
}

impl PreDeploy {
    fn file(&self) -> Option<&Taken> {
        match self {
            PreDeploy::Taken(taken) => Some(taken),
            PreDeploy::Skipped(_) => None,
        }
    }

    fn history_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        match self {
            PreDeploy::Taken(taken) => vec![
                ("backup", json!(taken.file)),
                ("backup_sha256", json!(taken.sha256)),
            ],
            PreDeploy::Skipped(why) => vec![("backup_skipped", json!(why))],
        }
    }
}

/// The restart and the health gate of `deploy --restart`.
struct Gate<'a> {
    payload: &'a Payload,
    command: Option<&'a str>,
    url: &'a str,
    timeout: std::time::Duration,
}

impl Gate<'_> {
    /// Restarts the service on the live release and checks it: UP with `version`, then the
    /// smoke checks. The error says what failed, with the end of the log.
    fn pass(&self, version: &str) -> anyhow::Result<()> {
        let how = self.restart()?;
        eprintln!(
            "restarted with {how}; waiting for {version} at {}",
            self.url
        );
        let base = BaseUrl::parse(self.url)?;
        if let Err(down) = health::wait_up(
            &base,
            Some(version),
            self.timeout,
            std::time::Duration::from_millis(250),
        ) {
            bail!("{down}{}", self.log_tail());
        }
        // The smoke user is the environment's own, from its saulpos.env.
        let env_file = self.payload.dir.join("saulpos.env");
        flags::Smoke {
            url: self.url.to_owned(),
            cacert: None,
            env_file: env_file.is_file().then_some(env_file),
            expect_version: Some(version.to_owned()),
            request_timeout: std::time::Duration::from_secs(5),
            json: false,
        }
        .run()
        .map_err(|error| anyhow::anyhow!("{error:#}{}", self.log_tail()))
    }

    fn restart(&self) -> anyhow::Result<String> {
        let service = self.payload.service_name();
        let (how, mut command) = if let Some(command) = self.command {
            let mut shell = Command::new("sh");
            shell.arg("-c").arg(command);
            (format!("`{command}`"), shell)
        } else if Command::new("systemctl")
            .args(["is-active", "--quiet", &service])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
        {
            let mut systemctl = Command::new("systemctl");
            systemctl.args(["restart", &service]);
            (format!("systemctl restart {service}"), systemctl)
        } else {
            let run_sh = self.payload.dir.join("run.sh");
            let mut run = Command::new(&run_sh);
            run.arg("restart");
            (format!("{} restart", run_sh.display()), run)
        };
        let status = command
            .current_dir(&self.payload.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {how}"))?;
        if !status.success() {
            bail!("{how} failed ({status}){}", self.log_tail());
        }
        Ok(how)
    }

    /// The last lines of the payload's log, if run.sh keeps one.
    fn log_tail(&self) -> String {
        let log = self.payload.dir.join("logs/saulpos.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(15)..];
        format!("\nthe end of {}:\n  {}", log.display(), tail.join("\n  "))
    }
}

/// Removes the oldest releases beyond `keep`, never the live one or the one before it.
fn prune(payload: &Payload, keep: usize) -> anyhow::Result<Vec<String>> {
    let live = payload.live();
    let previous = payload.previous();
    let kept = payload.kept();
    let mut removed = Vec::new();
    let mut excess = kept.len().saturating_sub(keep);
    for version in kept {
        if excess == 0 {
            break;
        }
        let version = version.to_string();
        if Some(&version) == live.as_ref() || Some(&version) == previous.as_ref() {
            continue;
        }
        let dir = payload.release(&version);
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        eprintln!("removed the old release {}", dir.display());
        removed.push(version);
        excess -= 1;
    }
    prune_backups(payload, &removed)?;
    Ok(removed)
}

/// The backups taken before the deploys of releases just removed go with them (the live
/// release's, which `rollback --with-data` needs, is never among them).
fn prune_backups(payload: &Payload, removed: &[String]) -> anyhow::Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    for event in payload.history() {
        let (Some(to), Some(file)) = (event["to"].as_str(), event["backup"].as_str()) else {
            continue;
        };
        if event["action"] != "deploy" || !removed.iter().any(|version| version == to) {
            continue;
        }
        for path in [file.to_owned(), format!("{file}.sha256")] {
            match fs::remove_file(&path) {
                Ok(()) => eprintln!("removed the backup {path} (taken before {to})"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).with_context(|| format!("cannot remove {path}")),
            }
        }
    }
    Ok(())
}
