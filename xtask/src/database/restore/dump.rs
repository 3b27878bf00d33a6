//! The dump, checked before anything is swapped in: its `.sha256` names it and matches it (the
//! hash runs while the rest reads the dump), and pg_restore can read its table of contents.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, bail};

use crate::database::postgres;
use crate::release::checksum;

/// The dump being hashed against the digest its `.sha256` recorded.
pub struct Checked {
    backup: PathBuf,
    recorded: String,
    hashing: Option<JoinHandle<anyhow::Result<(String, u64)>>>,
}

impl Checked {
    /// Reads `checksum_file`, which must name `backup`, and starts hashing `backup`.
    pub fn start(backup: &Path, checksum_file: &Path) -> anyhow::Result<Checked> {
        let (recorded, named) = checksum::read(checksum_file).map_err(|error| {
            anyhow::anyhow!(
                "{error:#}; give the <dump>.sha256 that backup wrote beside the dump; nothing was restored"
            )
        })?;
        let backup_name = backup
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if named != backup_name {
            bail!(
                "checksum file {} is for {named:?}, not for {backup_name:?}; give the .sha256 written beside this backup; nothing was restored",
                checksum_file.display()
            );
        }
        let hashing = Some(std::thread::spawn({
            let path = backup.to_owned();
            move || checksum::sha256_file(&path)
        }));
        Ok(Checked {
            backup: backup.to_owned(),
            recorded,
            hashing,
        })
    }

    /// Waits for the hash: the digest and size when it matches, else why not.
    pub fn verified(&mut self) -> anyhow::Result<(String, u64)> {
        let (actual, size) = match self.hashing.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            None => unreachable!("the checksum is checked once"),
        };
        if actual != self.recorded {
            bail!(
                "{} does not match its checksum (sha256 {actual}, recorded {}): the file is damaged or not that backup; nothing was restored",
                self.backup.display(),
                self.recorded
            );
        }
        Ok((actual, size))
    }
}

/// One line of `pg_restore --list`, by its entry type (`TABLE DATA`, `INDEX`, ...).
pub struct ListEntry {
    pub kind: String,
}

/// The dump's table of contents; fails on a file pg_restore cannot read.
pub fn list(backup: &Path) -> anyhow::Result<Vec<ListEntry>> {
    let output = postgres::tool("pg_restore")?
        .arg("--list")
        .arg(backup)
        .output()
        .context("cannot run pg_restore --list")?;
    if !output.status.success() {
        bail!(
            "{} is not a readable PostgreSQL custom-format dump: {}; nothing was restored",
            backup.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    const KINDS: [&str; 8] = [
        "TABLE DATA",
        "SEQUENCE SET",
        "FK CONSTRAINT",
        "CONSTRAINT",
        "INDEX",
        "TRIGGER",
        "BLOBS",
        "LARGE OBJECT",
    ];
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .map(|line| {
            // "<id>; <catalog oid> <oid> <TYPE> <schema> <name> <owner>"
            let after_ids = line.splitn(4, ' ').nth(3).unwrap_or_default();
            let kind = KINDS
                .iter()
                .find(|kind| after_ids.starts_with(&format!("{kind} ")))
                .map(|kind| kind.to_string())
                .unwrap_or_else(|| after_ids.split(' ').next().unwrap_or_default().to_owned());
            ListEntry { kind }
        })
        .collect())
}
