//! `cargo xtask deploy <env> <version> <dest>`: verify a packaged release, extract it safely
//! into `<dest>/saulpos-<env>/releases/<version>/`, write run.sh, the example environment file
//! and the systemd unit, and switch the live link, all under the payload's lock.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::deploy::payload::Payload;
use crate::release::manifest::{self, Manifest};
use crate::util::durable::{self, StagingDir};
use crate::util::progress::step;
use crate::{deploy::extract, flags, release::dist, release::verify};

impl flags::Deploy {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let payload = Payload::new(&self.env, &self.dest)?;
        if self.keep < 2 {
            bail!(
                "--keep {} would not keep the release to roll back to; use 2 or more",
                self.keep
            );
        }
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let (version, release_dir) = dist::release_dir(&dist_dir, &self.version)?;
        let version = version.to_string();

        // 1. Nothing under <dest> changes unless the release is exactly what was packaged.
        let checked = verify::check_release(&release_dir, &version);
        if !checked.problems.is_empty() {
            for problem in &checked.problems {
                eprintln!("problem: {problem}");
            }
            bail!(
                "refused: {} does not match its checksum and manifest; nothing under {} was changed",
                release_dir.display(),
                self.dest.display()
            );
        }
        let manifest_text = fs::read_to_string(release_dir.join(manifest::JSON_NAME))?;
        let manifest = Manifest::from_json(&manifest_text)?;
        step(
            started,
            &format!(
                "verified {} ({} entries)",
                release_dir.display(),
                checked.files_checked
            ),
        );

        if !self.dest.is_dir() {
            bail!(
                "{} does not exist; create it (e.g. sudo install -d -o $USER {}) and deploy again",
                self.dest.display(),
                self.dest.display()
            );
        }
        let _lock = payload.lock(&format!("deploy {version}"))?;
        let releases = payload.releases();
        fs::create_dir_all(&releases)
            .with_context(|| format!("cannot create {}", releases.display()))?;
        fs::create_dir_all(payload.dir.join("logs"))?;
        durable::remove_stale_partials(&payload.dir, "")?;
        durable::remove_stale_partials(&releases, "")?;

        // 2. The release's own folder, extracted under a temporary name and renamed at the end.
        let target = payload.release(&version);
        let top = dist::top_folder(&version);
        let reuse =
            target.is_dir() && extract::check_extracted(&target, &top, &manifest).is_empty();
        if reuse {
            step(
                started,
                &format!("{} is already there and intact", target.display()),
            );
        } else {
            let staging = StagingDir::new(&target)?;
            let archive = release_dir.join(&manifest.archive.name);
            extract::release(&archive, &top, &manifest, staging.path())?;
            for name in [
                manifest::JSON_NAME.to_owned(),
                manifest::TEXT_NAME.to_owned(),
                format!("{}.sha256", manifest.archive.name),
            ] {
                fs::copy(release_dir.join(&name), staging.path().join(&name))
                    .with_context(|| format!("cannot copy {name}"))?;
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

        // 3. The files around the releases; each replaced atomically.
        write_payload_files(&payload)?;

        // 4. The switch: one rename.
        let before = payload.live();
        if before.as_deref() != Some(version.as_str()) {
            payload.switch(&version)?;
        }
        payload.record(
            "deploy",
            before.as_deref(),
            &version,
            self.reason.as_deref(),
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
        let service = payload.service_name();
        eprintln!(
            "next: restart the service to run {version}:\n  sudo systemctl restart {service}     (unit: {}/{service}.service)\n  or by hand: {}/run.sh\nthen wait for it:\n  cargo xtask health --url http://localhost:8080 --expect-version {version}",
            payload.dir.display(),
            payload.dir.display()
        );
        if self.json {
            let summary = json!({
                "env": payload.env,
                "version": version,
                "previous": before,
                "payload": payload.dir,
                "release": target,
                "reused": reuse,
                "removed": removed,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// Writes run.sh, the example environment file, the systemd unit and the manifest links.
pub fn write_payload_files(payload: &Payload) -> anyhow::Result<()> {
    let required = if payload.env == "dev" {
        ""
    } else {
        "SAULPOS_DB_URL SAULPOS_DB_USERNAME SAULPOS_DB_PASSWORD"
    };
    let run = include_str!("../../templates/run.sh")
        .replace("@ENV@", &payload.env)
        .replace("@REQUIRED@", required);
    let run_path = payload.dir.join("run.sh");
    durable::write(&run_path, run.as_bytes())?;
    fs::set_permissions(&run_path, fs::Permissions::from_mode(0o755))?;
    durable::write(
        &payload.dir.join("saulpos.env.example"),
        env_example(&payload.env).as_bytes(),
    )?;
    let unit = format!("{}.service", payload.service_name());
    durable::write(&payload.dir.join(&unit), systemd_unit(payload).as_bytes())?;
    for name in [manifest::TEXT_NAME, manifest::JSON_NAME] {
        let link = payload.dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("current").join(name), &link)
                .with_context(|| format!("cannot create {}", link.display()))?;
        }
    }
    Ok(())
}

/// Every variable the server reads, with a comment; the required ones uncommented.
fn env_example(env: &str) -> String {
    let required = env != "dev";
    let mut text = format!(
        "# Environment of saulpos-{env}. Copy to saulpos.env beside run.sh, fill in, and\n\
         # `chmod 600 saulpos.env`: it holds the database password. run.sh loads it; the\n\
         # profile ({env}) is set by run.sh. Values here override config/application*.toml.\n\n"
    );
    let line = |text: &mut String, comment: &str, name: &str, value: &str, set: bool| {
        text.push_str(&format!(
            "# {comment}\n{}{name}={value}\n\n",
            if set { "" } else { "# " }
        ));
    };
    let requirement = if required {
        "Required."
    } else {
        "Optional in dev."
    };
    line(
        &mut text,
        &format!(
            "{requirement} The database: postgres://host:port/database (jdbc:postgresql://host:port/database works too); no credentials in it."
        ),
        "SAULPOS_DB_URL",
        "postgres://db.internal:5432/saulpos",
        required,
    );
    line(
        &mut text,
        &format!("{requirement} The database user."),
        "SAULPOS_DB_USERNAME",
        "saulpos",
        required,
    );
    line(
        &mut text,
        &format!("{requirement} The database password; any characters; never logged."),
        "SAULPOS_DB_PASSWORD",
        "",
        required,
    );
    line(
        &mut text,
        "The address to listen on (default 0.0.0.0).",
        "SAULPOS_SERVER_ADDRESS",
        "0.0.0.0",
        false,
    );
    line(
        &mut text,
        "The port to listen on (default 8080).",
        "SAULPOS_SERVER_PORT",
        "8080",
        false,
    );
    line(
        &mut text,
        "Seconds requests in flight may take to finish on SIGTERM (default 20).",
        "SAULPOS_SHUTDOWN_GRACE_SECONDS",
        "20",
        false,
    );
    line(
        &mut text,
        "Database connections in the pool (default 10).",
        "SAULPOS_DB_POOL_SIZE",
        "10",
        false,
    );
    line(
        &mut text,
        "Milliseconds one connection attempt may take (default 3000).",
        "SAULPOS_DB_CONNECT_TIMEOUT_MS",
        "3000",
        false,
    );
    line(
        &mut text,
        "Seconds startup retries an unreachable database before giving up (default 30).",
        "SAULPOS_DB_STARTUP_TIMEOUT_SECONDS",
        "30",
        false,
    );
    line(
        &mut text,
        "Milliseconds after which health reports the database DOWN (default 1000).",
        "SAULPOS_HEALTH_TIMEOUT_MS",
        "1000",
        false,
    );
    line(
        &mut text,
        "Log format: text or json.",
        "SAULPOS_LOG_FORMAT",
        if env == "dev" { "text" } else { "json" },
        false,
    );
    line(
        &mut text,
        "Log filter, e.g. info or info,sqlx=warn (default info).",
        "SAULPOS_LOG_LEVEL",
        "info",
        false,
    );
    line(
        &mut text,
        "Where run.sh sends logs when started by hand (default logs/saulpos.log; - for the terminal).",
        "SAULPOS_LOG_FILE",
        "-",
        false,
    );
    text
}

/// The systemd unit: runs run.sh, stops with SIGTERM, and may write only the logs folder.
fn systemd_unit(payload: &Payload) -> String {
    let dir = payload.dir.display();
    format!(
        "# {service}.service, written by `cargo xtask deploy`. Install it with:\n\
         #   sudo ln -sf {dir}/{service}.service /etc/systemd/system/ && sudo systemctl daemon-reload\n\
         #   sudo systemctl enable --now {service}\n\
         [Unit]\n\
         Description=SaulPOS server ({env})\n\
         Wants=network-online.target\n\
         After=network-online.target postgresql.service\n\
         \n\
         [Service]\n\
         Type=exec\n\
         WorkingDirectory={dir}\n\
         ExecStart={dir}/run.sh\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=30\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectControlGroups=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         ReadWritePaths={dir}/logs\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        service = payload.service_name(),
        env = payload.env,
    )
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
    Ok(removed)
}
