//! `cargo xtask verify <version>`: re-check a release folder byte for byte against its
//! checksum files and manifest, and every payload against the release it carries.

use std::fs;
use std::path::Path;

use anyhow::bail;
use serde_json::json;
use xshell::Shell;

use crate::flags;
use crate::release::archive::{self, EntryKind};
use crate::release::manifest::{self, Manifest};
use crate::release::payload::Payload;
use crate::release::sums::check_sums;
use crate::release::{checksum, dist, image, kubernetes, payload_files, rebuild, signature};

impl flags::Verify {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let (version, dir) = dist::release_dir(&dist_dir, &self.version)?;
        let mut checked = check_release(&dir, &version.to_string());
        checked.problems.extend(check_sums(&dir));
        checked.problems.extend(check_image(&dir));
        let signer = match &self.allowed_signers {
            None => None,
            Some(allowed) => match signature::verify(
                &dir.join(signature::SUMS),
                &dir.join(signature::SIG),
                allowed,
            ) {
                Ok(signer) => Some(signer),
                Err(error) => {
                    checked.problems.push(format!("{error:#}"));
                    None
                }
            },
        };
        let mut payloads = Vec::new();
        for env in payload_files::ENVIRONMENTS {
            let name = payload_files::payload_archive_name(env, &version.to_string());
            if !dir.join(&name).is_file() {
                checked
                    .problems
                    .push(format!("the payload {name} is missing"));
                continue;
            }
            match Payload::open(
                &dir,
                env,
                &version.to_string(),
                self.allowed_signers.as_deref(),
            ) {
                Err(error) => checked.problems.push(format!("{error:#}")),
                Ok(shipped) => {
                    for file in payload_files::core_files(
                        &version.to_string(),
                        &shipped.manifest.archive.name,
                    ) {
                        if fs::read(dir.join(&file)).ok().as_deref() != Some(shipped.file(&file)) {
                            checked
                                .problems
                                .push(format!("{name} holds another {file} than the release"));
                        }
                    }
                    payloads.push(name);
                }
            }
        }
        let mut reproduced = None;
        if self.rebuild && checked.problems.is_empty() {
            let rebuilt = rebuild::rebuild(sh, &dir, &version.to_string())?;
            if rebuilt.differing.is_empty() {
                reproduced = Some(true);
            } else {
                reproduced = Some(false);
                for file in &rebuilt.differing {
                    checked
                        .problems
                        .push(format!("not reproduced: {file} differs in the rebuild"));
                }
            }
        }
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
                "payloads": payloads,
                "signer": signer,
                "reproduced": reproduced,
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
            "ok: {} matches its checksums and manifest ({} entries checked; payloads {})",
            dir.display(),
            checked.files_checked,
            payloads.join(", ")
        );
        match &signer {
            Some(signer) => eprintln!("signature: {signer}"),
            None if dir.join(signature::SIG).is_file() => eprintln!(
                "signed ({}), but not checked: give --allowed-signers FILE to check it",
                signature::SIG
            ),
            None => eprintln!("not signed: package with --sign-key to sign a release"),
        }
        if reproduced == Some(true) {
            eprintln!(
                "reproduced: the recorded commit, built again at another path, gives the same release byte for byte"
            );
        }
        Ok(())
    }
}

/// Checks a release folder's OCI image against the manifest (size, SHA-256, the digest its
/// index names) and that every environment's Kubernetes file names that digest. Payloads carry
/// neither, so only `verify` of a `dist/` folder asks.
pub fn check_image(dir: &Path) -> Vec<String> {
    let manifest = match fs::read_to_string(dir.join(manifest::JSON_NAME))
        .map_err(anyhow::Error::from)
        .and_then(|text| Manifest::from_json(&text))
    {
        Ok(manifest) => manifest,
        // check_release reports an unreadable manifest.
        Err(_) => return Vec::new(),
    };
    let mut problems = Vec::new();
    if let Some(image) = &manifest.image {
        let path = dir.join(&image.name);
        match checksum::sha256_file(&path) {
            Err(error) => problems.push(format!("{error:#}")),
            Ok((digest, size)) if digest != image.sha256 || size != image.size => {
                problems.push(format!(
                    "{} is {size} bytes with sha256 {digest}; the manifest says {} bytes, {}",
                    image.name, image.size, image.sha256
                ))
            }
            Ok(_) => match image::read_digest(&path) {
                Err(error) => problems.push(format!("{error:#}")),
                Ok(digest) if digest != image.digest => problems.push(format!(
                    "{} names the image {digest}; the manifest says {}",
                    image.name, image.digest
                )),
                Ok(_) => {}
            },
        }
        for env in payload_files::ENVIRONMENTS {
            let name = format!("{}/{}", kubernetes::FOLDER, kubernetes::file_name(env));
            match fs::read_to_string(dir.join(&name)) {
                Err(error) => problems.push(format!("cannot read {name}: {error}")),
                Ok(text) if !text.contains(&format!("@{}\n", image.digest)) => {
                    problems.push(format!("{name} does not name the image {}", image.digest))
                }
                Ok(_) => {}
            }
        }
    }
    problems
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
            // Only files and folders a release may hold, each once, of the kind its manifest
            // says (a manifest cannot vouch for a link).
            let top = crate::release::dist::top_folder(version);
            let mut seen = std::collections::HashSet::new();
            for entry in &entries {
                if let Some(why) = archive::unsafe_entry(entry, &top) {
                    problems.push(format!(
                        "the archive's entry {:?} is unsafe: {why}",
                        entry.path
                    ));
                }
                if !seen.insert(entry.path.as_str()) {
                    problems.push(format!(
                        "the archive's entry {:?} is unsafe: it appears twice (a later one would replace the first)",
                        entry.path
                    ));
                }
            }
            for file in &manifest.files {
                if file.kind != "file" && file.kind != "dir" {
                    problems.push(format!(
                        "the manifest lists {} as {:?}; a release holds only files and folders",
                        file.path, file.kind
                    ));
                }
            }
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
