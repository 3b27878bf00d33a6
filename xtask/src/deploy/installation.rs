//! An environment's installed folder `<dest>/saulpos-<env>/` (what install.sh makes of a
//! payload): its layout, the `current` link to the live release (switched by install.sh and
//! rollback.sh), the lock that keeps two deploys apart, the history, and the server it runs.
//!
//! ```text
//! saulpos-<env>/
//!   run.sh                   starts the live release (from the payload)
//!   rollback.sh              goes back without cargo (from the payload)
//!   saulpos.env.example      every variable, with a comment
//!   saulpos.env              the operator's copy (never written by deploy)
//!   saulpos-<env>.service    the systemd unit
//!   current -> releases/<v>  the live release
//!   manifest.txt, manifest.json -> current/...
//!   releases/<v>/            bin/, config/, README.md, manifest.*, the archive's .sha256
//!   logs/                    saulpos.log when run.sh is started by hand
//!   history.log              one JSON object per line: time, user, action, from, to, reason
//!   deploy.lock              flock(2)ed by every deploy, install.sh, rollback and rollback.sh
//! ```

use std::fs::{self, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use semver::Version;
use serde_json::{Value, json};

use crate::flags::Env;
use crate::util::{env_file, utc};

pub use crate::release::payload_files::ENVIRONMENTS;
pub const HISTORY: &str = "history.log";
const LOCK: &str = "deploy.lock";

/// The installed folder of one environment.
pub struct Installation {
    pub env: String,
    pub dir: PathBuf,
}

impl Installation {
    /// The folder of `env` under `dest`; refuses a `dest` that is an environment's folder.
    pub fn new(env: Env, dest: &Path) -> anyhow::Result<Installation> {
        let env = env.name();
        let folder_name = dest
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        if let Some(other) = folder_name
            .as_deref()
            .and_then(|name| name.strip_prefix("saulpos-"))
            .filter(|other| ENVIRONMENTS.contains(other))
        {
            bail!(
                "refused: {} is the folder of the {other} environment; give the folder above it ({}); nothing was changed",
                dest.display(),
                dest.parent().unwrap_or(Path::new("/")).display()
            );
        }
        if dest.join("current").exists() || dest.join(HISTORY).exists() {
            bail!(
                "refused: {} holds an environment's release (current, history.log); give the folder above it; nothing was changed",
                dest.display()
            );
        }
        Ok(Installation {
            env: env.to_owned(),
            dir: dest.join(format!("saulpos-{env}")),
        })
    }

    /// The folder of `env` under `dest`, which must have been deployed to.
    pub fn existing(env: Env, dest: &Path) -> anyhow::Result<Installation> {
        let installation = Installation::new(env, dest)?;
        let env = env.name();
        if !installation.dir.is_dir() {
            bail!(
                "{} does not exist: nothing was deployed for {env} under {}; deploy with `cargo xtask deploy {env} <version> {}`",
                installation.dir.display(),
                dest.display(),
                dest.display()
            );
        }
        Ok(installation)
    }

    pub fn releases(&self) -> PathBuf {
        self.dir.join("releases")
    }

    pub fn release(&self, version: &str) -> PathBuf {
        self.releases().join(version)
    }

    /// `http://127.0.0.1:<port>`, the port from saulpos.env's SAULPOS_SERVER_PORT (else 8080):
    /// where the server of this folder answers on its own host.
    pub fn health_url(&self) -> String {
        env_file::local_url(&fs::read_to_string(self.dir.join("saulpos.env")).unwrap_or_default())
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

    /// Appends one event with its fields (a restore's backup, say) to the history and syncs
    /// it; the keys come out sorted.
    pub fn record_with(
        &self,
        action: &str,
        from: Option<&str>,
        to: &str,
        reason: Option<&str>,
        extra: Vec<(&str, Value)>,
    ) -> anyhow::Result<()> {
        let mut event = json!({
            "time": utc::rfc3339(utc::now()),
            "user": user(),
            "action": action,
            "from": from,
            "to": to,
            "reason": reason,
        });
        for (key, value) in extra {
            event[key] = value;
        }
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

    /// Takes the folder's lock for `action`, or says who holds it. The lock is the kernel's
    /// (flock on `deploy.lock`, as install.sh and rollback.sh take it), so it ends with the
    /// process however that ends; the holder's details are written after it is taken, only for
    /// the message another run prints.
    pub fn lock(&self, action: &str) -> anyhow::Result<Lock> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let field = |name: &str| {
                    text.lines()
                        .find_map(|line| line.strip_prefix(&format!("{name}=")))
                        .unwrap_or("?")
                        .to_owned()
                };
                bail!(
                    "{} is locked: {} by {} (pid {}) since {} holds it; wait for it to finish and run again",
                    self.dir.display(),
                    field("action"),
                    field("user"),
                    field("pid"),
                    field("since")
                );
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let holder = format!(
            "pid={}\nuser={}\naction={action}\nsince={}\n",
            std::process::id(),
            user(),
            utc::rfc3339(utc::now())
        );
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Lock { _file: file })
    }
}

/// Held while a deploy or rollback runs; the kernel releases it when the file is closed.
pub struct Lock {
    _file: fs::File,
}

/// Who is acting, for the history and the lock.
pub fn user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(uid_name)
}

/// The name of this process's user in /etc/passwd (as `id -un` says it), or `uid N`.
fn uid_name() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = fs::metadata("/proc/self").map(|meta| meta.uid()).ok();
    let Some(uid) = uid else {
        return "unknown".to_owned();
    };
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid.to_string()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}
