//! `cargo xtask verify <version>`: re-check a release folder byte for byte against its
//! checksum file and manifest.

use std::fs;
use std::path::Path;

use anyhow::bail;
use serde_json::json;
use xshell::Shell;

use crate::release::archive::{self, EntryKind};
use crate::release::manifest::{self, Manifest};
use crate::{flags, release::checksum, release::dist};

impl flags::Verify {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let (version, dir) = dist::release_dir(&dist_dir, &self.version)?;
        let checked = check_release(&dir, &version.to_string());
        for problem in &checked.problems {
            eprintln!("problem: {problem}");
        }
        if self.json {
            let summary = json!({
                "version": version.to_string(),
                "directory": dir,
                "ok": checked.problems.is_empty(),
                "problems": checked.problems,
                "files_checked": checked.files_checked,
            });
            println!("{summary}");
        }
        if !checked.problems.is_empty() {
            bail!(
                "{} problem(s) in {}: do not ship or deploy it; package the version again from its commit",
                checked.problems.len(),
                dir.display()
            );
        }
        eprintln!(
            "ok: {} matches its checksum and manifest ({} entries checked)",
            dir.display(),
            checked.files_checked
        );
        Ok(())
    }
}

/// What checking a release folder found.
pub struct Checked {
    pub problems: Vec<String>,
    pub files_checked: usize,
}

/// Checks a release folder: manifest.json and manifest.txt agree, the checksum file names the
/// archive and matches it, and the archive and every entry in it match the manifest.
pub fn check_release(dir: &Path, version: &str) -> Checked {
    let mut problems = Vec::new();
    let mut files_checked = 0;
    let manifest = match fs::read_to_string(dir.join(manifest::JSON_NAME)) {
        Err(error) => {
            problems.push(format!("cannot read {}: {error}", manifest::JSON_NAME));
            None
        }
        Ok(text) => match Manifest::from_json(&text) {
            Ok(manifest) => Some(manifest),
            Err(error) => {
                problems.push(format!("{error:#}"));
                None
            }
        },
    };
    let Some(manifest) = manifest else {
        return Checked {
            problems,
            files_checked,
        };
    };
    if manifest.version != version {
        problems.push(format!(
            "manifest.json says version {}, the folder is {version}",
            manifest.version
        ));
    }
    match fs::read_to_string(dir.join(manifest::TEXT_NAME)) {
        Err(error) => problems.push(format!("cannot read {}: {error}", manifest::TEXT_NAME)),
        Ok(text) => {
            let expected = manifest.to_text();
            if let Some((number, (found, wanted))) = text
                .lines()
                .zip(expected.lines())
                .enumerate()
                .find(|(_, (found, wanted))| found != wanted)
            {
                problems.push(format!(
                    "manifest.txt line {} says {found:?} where manifest.json says {wanted:?}",
                    number + 1
                ));
            } else if text != expected {
                problems.push(
                    "manifest.txt and manifest.json list different numbers of lines".to_owned(),
                );
            }
        }
    }

    let archive_path = dir.join(&manifest.archive.name);
    let checksum_path = dir.join(format!("{}.sha256", manifest.archive.name));
    match checksum::read(&checksum_path) {
        Err(error) => problems.push(format!(
            "checksum file {}: {error:#}",
            checksum_path.display()
        )),
        Ok((digest, name)) => {
            if name != manifest.archive.name {
                problems.push(format!(
                    "the checksum file names {name:?}, not the archive {:?}",
                    manifest.archive.name
                ));
            }
            if digest != manifest.archive.sha256 {
                problems.push(format!(
                    "the checksum file says sha256 {digest}, manifest.json says {}",
                    manifest.archive.sha256
                ));
            }
        }
    }
    match checksum::sha256_file(&archive_path) {
        Err(error) => problems.push(format!("{error:#}")),
        Ok((digest, size)) => {
            if size != manifest.archive.size {
                problems.push(format!(
                    "the archive is {size} bytes, the manifest says {}",
                    manifest.archive.size
                ));
            }
            if digest != manifest.archive.sha256 {
                problems.push(format!(
                    "the archive's sha256 is {digest}, the manifest says {}",
                    manifest.archive.sha256
                ));
            }
        }
    }
    let entries = fs::File::open(&archive_path)
        .map_err(anyhow::Error::from)
        .and_then(|file| archive::read_tar_gz(std::io::BufReader::new(file)));
    match entries {
        Err(error) => problems.push(format!("{}: {error:#}", manifest.archive.name)),
        Ok(entries) => {
            for index in 0..entries.len().max(manifest.files.len()) {
                match (entries.get(index), manifest.files.get(index)) {
                    (Some(entry), None) => problems.push(format!(
                        "the archive holds {} which the manifest does not list",
                        entry.path
                    )),
                    (None, Some(file)) => problems.push(format!(
                        "the manifest lists {} which the archive does not hold",
                        file.path
                    )),
                    (Some(entry), Some(file)) => {
                        files_checked += 1;
                        let kind = match entry.kind {
                            EntryKind::File => "file",
                            EntryKind::Dir => "dir",
                            _ => "other",
                        };
                        let facts = (
                            entry.path.as_str(),
                            kind,
                            entry.mode,
                            entry.sha256.as_deref(),
                        );
                        let listed = (
                            file.path.as_str(),
                            file.kind.as_str(),
                            file.mode,
                            file.sha256.as_deref(),
                        );
                        if facts != listed || (kind == "file" && entry.size != file.size) {
                            problems.push(format!(
                                "entry {}: the archive has {} {kind} size={} mode={:04o} sha256={}, the manifest lists {} {} size={} mode={:04o} sha256={}",
                                index + 1,
                                entry.path,
                                entry.size,
                                entry.mode,
                                entry.sha256.as_deref().unwrap_or("-"),
                                file.path,
                                file.kind,
                                file.size,
                                file.mode,
                                file.sha256.as_deref().unwrap_or("-"),
                            ));
                        }
                        if entry.uid != 0 || entry.gid != 0 {
                            problems.push(format!(
                                "{} is owned by {}/{}, not 0/0",
                                entry.path, entry.uid, entry.gid
                            ));
                        }
                    }
                    (None, None) => {}
                }
            }
        }
    }
    Checked {
        problems,
        files_checked,
    }
}
