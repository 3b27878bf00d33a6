//! `SHA256SUMS`, the list of every other file of a release or payload folder: reading it, the
//! files it must list, and the check of one listed file that every command using a file of a
//! release makes first (verify, deploy, kubernetes, push-image, rebuild).

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};

use crate::release::{checksum, dist, signature};

/// `SHA256SUMS`: the name of the file that lists every other file of a release folder.
pub const SUMS: &str = "SHA256SUMS";

/// Checks a payload against its `.sha256` and, where the release has one, its `SHA256SUMS` line.
pub fn check_payload_checksums(dir: &Path, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let digest = match checksum::sha256_file(&dir.join(name)) {
        Ok((digest, _)) => digest,
        Err(error) => return vec![format!("{error:#}")],
    };
    let checksum_path = dir.join(format!("{name}.sha256"));
    match checksum::read(&checksum_path) {
        Err(error) => problems.push(format!("{error:#}")),
        Ok((listed, listed_name)) if listed_name != name || listed != digest => {
            problems.push(format!(
                "{name}'s sha256 is {digest}; {} says {listed} for {listed_name}",
                checksum_path.display()
            ))
        }
        Ok(_) => {}
    }
    if let Ok(sums) = fs::read_to_string(dir.join(SUMS)) {
        match sums_lines(&sums)
            .into_iter()
            .find(|(_, listed_name)| listed_name == name)
        {
            None => problems.push(format!("{SUMS} does not list {name}")),
            Some((listed, _)) if listed != digest => {
                problems.push(format!("{name}'s sha256 is {digest}; {SUMS} says {listed}"))
            }
            Some(_) => {}
        }
    }
    problems
}

/// Refuses unless `SHA256SUMS` in `dir` lists `name` (a path below `dir`) with the SHA-256
/// `digest`: a file changed after packaging is never used.
pub fn check_listed(dir: &Path, name: &str, digest: &str) -> anyhow::Result<()> {
    let sums_path = dir.join(SUMS);
    let sums = fs::read_to_string(&sums_path)
        .with_context(|| format!("cannot read {}", sums_path.display()))?;
    if !sums_lines(&sums)
        .iter()
        .any(|(listed, listed_name)| listed_name == name && listed == digest)
    {
        bail!(
            "{} does not match its line in {SUMS}: nothing used; run `cargo xtask verify` on the release",
            dir.join(name).display()
        );
    }
    Ok(())
}

/// The `(sha256, name)` pairs of a `SHA256SUMS` text.
pub fn sums_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (digest, name) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
            Some((digest.to_owned(), name.to_owned()))
        })
        .collect()
}

/// The files `SHA256SUMS` lists in a release folder, sorted: every file but itself, its
/// signature and hidden ones, and those in `kubernetes/` as `kubernetes/<name>`.
pub fn listed_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == SUMS || name == signature::SIG {
            continue;
        }
        if entry.file_type()?.is_dir() {
            if name == dist::KUBERNETES {
                for inner in fs::read_dir(entry.path())? {
                    let inner = inner?.file_name().to_string_lossy().into_owned();
                    if !inner.starts_with('.') {
                        names.push(format!("{name}/{inner}"));
                    }
                }
            }
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Checks `SHA256SUMS`: every other file of the folder listed, each with its sha256.
pub fn check_sums(dir: &Path) -> Vec<String> {
    let text = match fs::read_to_string(dir.join(SUMS)) {
        Ok(text) => text,
        Err(error) => return vec![format!("cannot read {SUMS}: {error}")],
    };
    let listed = sums_lines(&text);
    let mut problems = Vec::new();
    let present = match listed_files(dir) {
        Ok(present) => present,
        Err(error) => return vec![format!("{error:#}")],
    };
    for name in &present {
        if !listed.iter().any(|(_, listed_name)| listed_name == name) {
            problems.push(format!("{SUMS} does not list {name}"));
        }
    }
    for (digest, name) in &listed {
        match checksum::sha256_file(&dir.join(name)) {
            Ok((actual, _)) if &actual == digest => {}
            Ok((actual, _)) => {
                problems.push(format!("{name}'s sha256 is {actual}; {SUMS} says {digest}"))
            }
            Err(_) => problems.push(format!("{SUMS} lists {name}, which is missing")),
        }
    }
    problems
}
