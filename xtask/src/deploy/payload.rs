//! The deploy payload `<dest>/saulpos-<env>/`: its layout, the `current` link to the live
//! release (switched atomically), the lock that keeps two deploys apart, and the history.
//!
//! ```text
//! saulpos-<env>/
//!   run.sh                   starts the live release (written by deploy)
//!   saulpos.env.example      every variable, with a comment
//!   saulpos.env              the operator's copy (never written by deploy)
//!   saulpos-<env>.service    the systemd unit
//!   current -> releases/<v>  the live release
//!   manifest.txt, manifest.json -> current/...
//!   releases/<v>/            bin/, config/, README.md, manifest.*, the archive's .sha256
//!   logs/                    saulpos.log when run.sh is started by hand
//!   history.log              one JSON object per line: time, user, action, from, to, reason
//!   deploy.lock              while a deploy or rollback runs
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use semver::Version;
use serde_json::{Value, json};

use crate::{util::durable, util::utc};

pub const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
pub const HISTORY: &str = "history.log";
const LOCK: &str = "deploy.lock";

/// A payload folder for one environment.
pub struct Payload {
    pub env: String,
    pub dir: PathBuf,
}

impl Payload {
    /// The payload of `env` under `dest`; refuses an unknown environment.
    pub fn new(env: &str, dest: &Path) -> anyhow::Result<Payload> {
        if !ENVIRONMENTS.contains(&env) {
            bail!(
                "unknown environment {env:?}; use one of: {}",
                ENVIRONMENTS.join(", ")
            );
        }
        Ok(Payload {
            env: env.to_owned(),
            dir: dest.join(format!("saulpos-{env}")),
        })
    }

    /// The payload of `env` under `dest`, which must have been deployed to.
    pub fn existing(env: &str, dest: &Path) -> anyhow::Result<Payload> {
        let payload = Payload::new(env, dest)?;
        if !payload.dir.is_dir() {
            bail!(
                "{} does not exist: nothing was deployed for {env} under {}; deploy with `cargo xtask deploy {env} <version> {}`",
                payload.dir.display(),
                dest.display(),
                dest.display()
            );
        }
        Ok(payload)
    }

    pub fn releases(&self) -> PathBuf {
        self.dir.join("releases")
    }

    pub fn release(&self, version: &str) -> PathBuf {
        self.releases().join(version)
    }

    pub fn service_name(&self) -> String {
        format!("saulpos-{}", self.env)
    }

    /// The live version: where `current` points.
    pub fn live(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join("current")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The versions kept under `releases/`, oldest first (by semver).
    pub fn kept(&self) -> Vec<Version> {
        let mut versions: Vec<Version> = fs::read_dir(self.releases())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Version::parse(&entry.file_name().to_string_lossy()).ok())
            .collect();
        versions.sort();
        versions
    }

    /// Points `current` at `releases/<version>` in one step: a new link renamed over the old,
    /// so a reader sees the old release or the new one, never neither.
    pub fn switch(&self, version: &str) -> anyhow::Result<()> {
        let current = self.dir.join("current");
        let link = durable::temporary_name(&current);
        let _ = fs::remove_file(&link);
        symlink(Path::new("releases").join(version), &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        fs::rename(&link, &current).with_context(|| {
            let _ = fs::remove_file(&link);
            format!("cannot switch {}", current.display())
        })?;
        durable::sync_dir(&self.dir)
    }

    /// The history, oldest first; lines that are not JSON are skipped.
    pub fn history(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join(HISTORY))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The release that was live before the live one: the `from` of the last switch to it.
    pub fn previous(&self) -> Option<String> {
        let live = self.live()?;
        self.history().iter().rev().find_map(|event| {
            let from = event["from"].as_str()?;
            (event["to"] == live.as_str() && from != live && self.release(from).is_dir())
                .then(|| from.to_owned())
        })
    }

    /// Appends one event to the history and syncs it.
    pub fn record(
        &self,
        action: &str,
        from: Option<&str>,
        to: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let event = json!({
            "time": utc::rfc3339(utc::now()),
            "user": user(),
            "action": action,
            "from": from,
            "to": to,
            "reason": reason,
        });
        let path = self.dir.join(HISTORY);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{event}")
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot append to {}", path.display()))
    }

    /// Takes the payload's lock for `action`, or says who holds it. A lock whose process is
    /// gone is taken over.
    pub fn lock(&self, action: &str) -> anyhow::Result<Lock> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(LOCK);
        let holder = format!(
            "pid={}\nuser={}\naction={action}\nsince={}\n",
            std::process::id(),
            user(),
            utc::rfc3339(utc::now())
        );
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(holder.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(Lock { path });
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let field = |name: &str| {
                        text.lines()
                            .find_map(|line| line.strip_prefix(&format!("{name}=")))
                            .unwrap_or("?")
                            .to_owned()
                    };
                    let pid = field("pid");
                    let alive = pid
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if alive || text.is_empty() && fresh(&path) {
                        bail!(
                            "{} is locked: {} by {} (pid {pid}) since {} holds it; wait for it to finish and run again",
                            self.dir.display(),
                            field("action"),
                            field("user"),
                            field("since")
                        );
                    }
                    eprintln!(
                        "taking over the lock left by process {pid} ({} by {} since {}), which is gone",
                        field("action"),
                        field("user"),
                        field("since")
                    );
                    let _ = fs::remove_file(&path);
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        bail!("cannot take the lock {}; run again", path.display())
    }
}

/// A lock just created by another process may not hold its text yet.
fn fresh(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 5)
}

/// Held while a deploy or rollback runs; removed when dropped.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Who is acting, for the history and the lock.
pub fn user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
