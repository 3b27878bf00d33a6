//! A payload as it ships, `dist/<version>/saulpos-<env>-<version>.tar.gz`: checked against its
//! `.sha256` (and `SHA256SUMS`), read whole, every entry checked against the files a payload
//! holds and against the payload's own `SHA256SUMS` (its signature too, when allowed signers are
//! given), and its release laid out in a temporary folder for `verify::check_release`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, bail};
use tar::EntryType;

use crate::release::manifest::{self, Manifest};
use crate::release::payload_files;
use crate::release::sums;
use crate::release::{checksum, signature};
use crate::util::durable::{self, StagingDir};

/// A payload read and checked: its files by name, and its release in a temporary folder.
pub struct Payload {
    files: BTreeMap<String, Vec<u8>>,
    pub manifest: Manifest,
    /// The server archive, its `.sha256` and the manifests, as `verify` expects a release.
    release: StagingDir,
    /// Who signed it, as ssh-keygen says it, when allowed signers were given.
    pub signer: Option<String>,
}

impl Payload {
    /// Reads the payload of `env` from the release folder and checks it whole; writes nothing
    /// but a temporary folder outside any destination.
    pub fn open(
        release_dir: &Path,
        env: &str,
        version: &str,
        allowed_signers: Option<&Path>,
    ) -> anyhow::Result<Payload> {
        let name = payload_files::payload_archive_name(env, version);
        let path = release_dir.join(&name);
        if !path.is_file() {
            bail!(
                "{} has no payload {name}: it was packaged before payloads existed, or is incomplete; package the version again",
                release_dir.display()
            );
        }
        let problems = sums::check_payload_checksums(release_dir, &name);
        if !problems.is_empty() {
            for problem in &problems {
                eprintln!("problem: {problem}");
            }
            bail!(
                "refused: {} does not match its checksum (damaged or replaced); package it again or download it again",
                path.display()
            );
        }
        let top = payload_files::payload_name(env, version);
        let files = read_entries(&path, &top).with_context(|| {
            format!(
                "refused: {} is not a payload this release can hold",
                path.display()
            )
        })?;
        let manifest_text = files
            .get(manifest::JSON_NAME)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .context("refused: the payload holds no manifest.json")?;
        let manifest = Manifest::from_json(&manifest_text)?;
        let archive = manifest.archive.name.clone();
        let mut expected: Vec<String> = payload_files::generated(env, version, &archive)
            .into_iter()
            .map(|file| file.name)
            .chain(payload_files::core_files(version, &archive))
            .chain([signature::SUMS.to_owned()])
            .collect();
        if files.contains_key(signature::SIG) {
            expected.push(signature::SIG.to_owned());
        }
        expected.sort();
        let found: Vec<String> = files.keys().cloned().collect();
        if found != expected {
            bail!(
                "refused: {} holds {} where a payload holds {}; package it again",
                path.display(),
                found.join(", "),
                expected.join(", ")
            );
        }
        // Its own SHA256SUMS lists every other file it holds, each with its hash.
        let sums = String::from_utf8_lossy(&files[signature::SUMS]).into_owned();
        let listed = sums::sums_lines(&sums);
        for (name, bytes) in &files {
            if name == signature::SUMS || name == signature::SIG {
                continue;
            }
            let digest = checksum::sha256_hex(bytes);
            if !listed
                .iter()
                .any(|(sum, listed_name)| listed_name == name && *sum == digest)
            {
                bail!(
                    "refused: {name} in {} does not match the payload's {}; nothing was changed",
                    path.display(),
                    signature::SUMS
                );
            }
        }
        let release = StagingDir::new(&std::env::temp_dir().join(format!("saulpos-{top}")))?;
        let mut kept = payload_files::core_files(version, &archive);
        kept.push(signature::SUMS.to_owned());
        if files.contains_key(signature::SIG) {
            kept.push(signature::SIG.to_owned());
        }
        for name in &kept {
            durable::write(&release.path().join(name), &files[name])?;
        }
        let signer = match allowed_signers {
            Some(allowed) => Some(
                signature::verify(
                    &release.path().join(signature::SUMS),
                    &release.path().join(signature::SIG),
                    allowed,
                )
                .with_context(|| format!("refused: {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Payload {
            files,
            manifest,
            release,
            signer,
        })
    }

    /// The folder holding the payload's release (archive, `.sha256`, manifests).
    pub fn release_dir(&self) -> &Path {
        self.release.path()
    }

    /// The bytes of one of the payload's files.
    pub fn file(&self, name: &str) -> &[u8] {
        &self.files[name]
    }
}

/// Every file of the payload under `top/`, by name; anything else (another folder, a link, a
/// device, a nested path) is refused.
fn read_entries(path: &Path, top: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut files = BTreeMap::new();
    for entry in archive.entries().context("cannot read the payload")? {
        let mut entry = entry.context("the payload is damaged")?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_end_matches('/');
        let kind = entry.header().entry_type();
        if name == top && kind == EntryType::Directory {
            continue;
        }
        let Some(file_name) = name.strip_prefix(&format!("{top}/")) else {
            bail!("its entry {raw:?} is outside {top}/");
        };
        if file_name.contains('/') || file_name.starts_with('.') || kind != EntryType::Regular {
            bail!("its entry {raw:?} is not a plain file at {top}/");
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("the payload is damaged inside {raw}"))?;
        files.insert(file_name.to_owned(), bytes);
    }
    Ok(files)
}
