//! The journal of a cut under way, `.git/saulpos-release/journal.json`, as git keeps a rebase's
//! state: what the cut is (version, tag, base commit, the remote branch's sha the push leases
//! against, the notes) and what it made so far. Written whole under a temporary name and
//! renamed, so a kill leaves the old journal or the new one. The kernel lock on `lock` keeps two
//! cuts apart and ends with the process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::util::durable;

/// A cut under way.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    pub version: String,
    pub tag: String,
    pub remote: String,
    pub branch: String,
    /// The branch's commit when the cut began.
    pub base: String,
    /// The remote branch's commit the checks saw ("" when the remote had no such branch); the
    /// push refuses if the remote moved from it.
    pub lease: String,
    pub offline: bool,
    pub sign_key: Option<PathBuf>,
    pub notes: String,
    /// The commit "release: X" once made.
    pub release_commit: Option<String>,
    /// The commit that moves the workspace to the next development version.
    pub bump_commit: Option<String>,
    pub packaged: bool,
    pub pushed: bool,
}

/// The folder a cut keeps its state in.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("saulpos-release")
}

impl Journal {
    fn path(git_dir: &Path) -> PathBuf {
        dir(git_dir).join("journal.json")
    }

    pub fn notes_path(git_dir: &Path) -> PathBuf {
        dir(git_dir).join("RELEASE-NOTES.md")
    }

    /// The cut under way, if any.
    pub fn load(git_dir: &Path) -> anyhow::Result<Option<Journal>> {
        let path = Journal::path(git_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let value: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; look at it, then `cargo xtask release --abort`",
                path.display()
            )
        })?;
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        let some = |key: &str| value[key].as_str().map(str::to_owned);
        Ok(Some(Journal {
            version: text("version"),
            tag: text("tag"),
            remote: text("remote"),
            branch: text("branch"),
            base: text("base"),
            lease: text("lease"),
            offline: value["offline"] == true,
            sign_key: some("sign_key").map(PathBuf::from),
            notes: text("notes"),
            release_commit: some("release_commit"),
            bump_commit: some("bump_commit"),
            packaged: value["packaged"] == true,
            pushed: value["pushed"] == true,
        }))
    }

    pub fn json(&self) -> Value {
        json!({
            "version": self.version,
            "tag": self.tag,
            "remote": self.remote,
            "branch": self.branch,
            "base": self.base,
            "lease": self.lease,
            "offline": self.offline,
            "sign_key": self.sign_key,
            "notes": self.notes,
            "release_commit": self.release_commit,
            "bump_commit": self.bump_commit,
            "packaged": self.packaged,
            "pushed": self.pushed,
        })
    }

    /// Writes it whole, durably (and the notes beside it, for git and package to read).
    pub fn save(&self, git_dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir(git_dir))?;
        durable::write(&Journal::notes_path(git_dir), self.notes.as_bytes())?;
        durable::write(
            &Journal::path(git_dir),
            serde_json::to_string_pretty(&self.json())?.as_bytes(),
        )
    }

    /// Ends the cut: the journal and its files go.
    pub fn remove(git_dir: &Path) -> anyhow::Result<()> {
        let dir = dir(git_dir);
        for name in ["journal.json", "RELEASE-NOTES.md", "index"] {
            let _ = fs::remove_file(dir.join(name));
        }
        Ok(())
    }
}

/// Held while a cut runs; the kernel drops it with the process however it ends.
pub struct Lock {
    _file: File,
}

/// Takes the cut's lock, or says another cut runs.
pub fn lock(git_dir: &Path) -> anyhow::Result<Lock> {
    fs::create_dir_all(dir(git_dir))?;
    let path = dir(git_dir).join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(TryLockError::WouldBlock) => bail!(
            "another `cargo xtask release` runs in this repository ({} is locked); wait for it to end",
            path.display()
        ),
        Err(TryLockError::Error(error)) => Err(error).context("cannot lock the cut"),
    }
}
