//! Extracting a release archive safely, and re-checking an extracted release against its
//! manifest. Only plain files, folders and links that stay inside the release are accepted;
//! everything is written under the folder given, never elsewhere.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use tar::EntryType;

use crate::release::checksum::{self, HashingWriter};
use crate::release::manifest::{FileFacts, Manifest};

/// Extracts the archive's `top/` folder into `into` (which must exist and be empty), checking
/// every entry against the manifest as it goes.
pub fn release(archive: &Path, top: &str, manifest: &Manifest, into: &Path) -> anyhow::Result<()> {
    let listed: HashMap<&str, &FileFacts> = manifest
        .files
        .iter()
        .map(|file| (file.path.as_str(), file))
        .collect();
    let file =
        fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    for entry in reader.entries().context("cannot read the archive")? {
        let mut entry = entry.context("the archive is damaged")?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_end_matches('/');
        let kind = entry.header().entry_type();
        let link = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let relative = safe_path(name, top, kind, link.as_deref())
            .with_context(|| format!("refused: the archive's entry {raw:?} is unsafe"))?;
        let Some(facts) = listed.get(name) else {
            bail!("refused: the archive holds {name:?}, which its manifest does not list");
        };
        let Some(relative) = relative else {
            // The top folder itself: the release folder, with the mode the manifest gives it.
            fs::set_permissions(into, fs::Permissions::from_mode(facts.mode & 0o755))?;
            continue;
        };
        let target = into.join(&relative);
        no_links_above(into, &relative)?;
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(&target)
                    .and_then(|()| {
                        fs::set_permissions(&target, fs::Permissions::from_mode(facts.mode & 0o755))
                    })
                    .with_context(|| format!("cannot create {}", target.display()))?;
            }
            EntryType::Symlink => {
                symlink(link.unwrap_or_default(), &target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
            }
            _ => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let out = fs::File::create(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                let mut writer = HashingWriter::new(out);
                io::copy(&mut entry, &mut writer)
                    .with_context(|| format!("cannot extract {name}"))?;
                writer.flush()?;
                let (out, digest, _) = writer.finish();
                if facts.sha256.as_deref() != Some(digest.as_str()) {
                    bail!("refused: {name} in the archive does not match its manifest");
                }
                out.sync_all()?;
                fs::set_permissions(&target, fs::Permissions::from_mode(facts.mode & 0o755))?;
            }
        }
    }
    Ok(())
}

/// Checks every entry of the archive as `release` would, writing nothing: run before anything
/// under the destination changes, so that a hostile archive leaves no trace there.
pub fn check_entries(archive: &Path, top: &str, manifest: &Manifest) -> anyhow::Result<()> {
    let file =
        fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    for entry in reader.entries().context("cannot read the archive")? {
        let entry = entry.context("the archive is damaged")?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_end_matches('/');
        let link = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        safe_path(name, top, entry.header().entry_type(), link.as_deref())
            .with_context(|| format!("refused: the archive's entry {raw:?} is unsafe"))?;
        if !manifest.files.iter().any(|file| file.path == name) {
            bail!("refused: the archive holds {name:?}, which its manifest does not list");
        }
    }
    Ok(())
}

/// Where an entry goes under the release folder: `None` for the top folder itself; an error for
/// anything absolute, climbing with `..`, outside `top/`, a device, a hard link, or a link that
/// points outside the release.
fn safe_path(
    name: &str,
    top: &str,
    kind: EntryType,
    link: Option<&str>,
) -> anyhow::Result<Option<PathBuf>> {
    let path = Path::new(name);
    if path.is_absolute() {
        bail!("it is an absolute path");
    }
    if path
        .components()
        .any(|part| !matches!(part, Component::Normal(_) | Component::CurDir))
    {
        bail!("it climbs out with `..`");
    }
    let relative = match path.strip_prefix(top) {
        Ok(relative) => relative.to_owned(),
        Err(_) => bail!("it is outside the release folder {top}/"),
    };
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
        EntryType::Symlink => {
            let link = link.unwrap_or_default();
            let mut depth: i64 = relative.components().count() as i64 - 1;
            if Path::new(link).is_absolute() {
                bail!("it is a link to the absolute path {link}");
            }
            for part in Path::new(link).components() {
                match part {
                    Component::ParentDir => depth -= 1,
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
                if depth < 0 {
                    bail!("it is a link to {link}, outside the release");
                }
            }
        }
        EntryType::Link => bail!("it is a hard link"),
        other => bail!("it is a {other:?} entry (a device or fifo), not a file or folder"),
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// Refuses to write through a link made by an earlier entry.
fn no_links_above(root: &Path, relative: &Path) -> anyhow::Result<()> {
    let mut path = root.to_owned();
    let parts: Vec<_> = relative.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            bail!(
                "refused: the archive writes {} through the link {}",
                relative.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Re-checks an extracted release against its manifest: every file there, with its size, mode
/// and SHA-256. Returns the problems found.
pub fn check_extracted(dir: &Path, top: &str, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        let Some(relative) = file.path.strip_prefix(top) else {
            problems.push(format!("the manifest lists {} outside {top}/", file.path));
            continue;
        };
        let path = dir.join(relative.trim_start_matches('/'));
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(_) => {
                problems.push(format!("{} is missing", path.display()));
                continue;
            }
        };
        match file.kind.as_str() {
            "dir" if !metadata.is_dir() => {
                problems.push(format!("{} is not a folder", path.display()))
            }
            "file" => {
                let mode = metadata.permissions().mode() & 0o777;
                if mode != file.mode & 0o755 {
                    problems.push(format!(
                        "{} has mode {mode:04o}, the manifest says {:04o}",
                        path.display(),
                        file.mode
                    ));
                }
                match checksum::sha256_file(&path) {
                    Ok((digest, size)) => {
                        if Some(digest.as_str()) != file.sha256.as_deref() || size != file.size {
                            problems.push(format!(
                                "{} changed since it was deployed (sha256 {digest})",
                                path.display()
                            ));
                        }
                    }
                    Err(error) => problems.push(format!("{error:#}")),
                }
            }
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entries_that_stay_inside_the_release_are_accepted() {
        let top = "saulpos-server-1.0.0";
        let ok = |name: &str, kind, link| safe_path(name, top, kind, link).unwrap();
        assert_eq!(ok(top, EntryType::Directory, None), None);
        assert_eq!(
            ok(
                "saulpos-server-1.0.0/bin/saulpos-server",
                EntryType::Regular,
                None
            ),
            Some(PathBuf::from("bin/saulpos-server"))
        );
        assert!(
            ok(
                "saulpos-server-1.0.0/bin/s",
                EntryType::Symlink,
                Some("saulpos-server")
            )
            .is_some()
        );
        assert!(
            ok(
                "saulpos-server-1.0.0/bin/c",
                EntryType::Symlink,
                Some("../config")
            )
            .is_some()
        );
        let refused =
            |name: &str, kind, link| format!("{:#}", safe_path(name, top, kind, link).unwrap_err());
        assert!(refused("/etc/passwd", EntryType::Regular, None).contains("absolute"));
        assert!(refused("saulpos-server-1.0.0/../../x", EntryType::Regular, None).contains(".."));
        assert!(
            refused("other/x", EntryType::Regular, None).contains("outside the release folder")
        );
        assert!(
            refused(
                "saulpos-server-1.0.0/l",
                EntryType::Symlink,
                Some("../../etc")
            )
            .contains("outside the release")
        );
        assert!(
            refused("saulpos-server-1.0.0/l", EntryType::Symlink, Some("/etc"))
                .contains("absolute")
        );
        assert!(
            refused("saulpos-server-1.0.0/h", EntryType::Link, Some("x")).contains("hard link")
        );
        assert!(refused("saulpos-server-1.0.0/d", EntryType::Char, None).contains("device"));
    }
}
