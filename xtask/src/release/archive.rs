//! Deterministic `.tar.gz` archives: entries sorted by path, owners 0/0 without names, modes
//! normalised, one fixed timestamp, and a gzip header without time or file name.
//!
//! Also reads an archive back into its entries with their facts, for verification.

use std::io::{self, Read, Write};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::{release::checksum, release::gzip};

/// gzip level for release archives, chosen with `cargo xtask bench package`: with zlib-rs,
/// level 6 came out 3.05% larger than `tar -czf`; 7 is 2.2% larger and, compressed on every core
/// (see `gzip`), still takes a third of the time of `tar -czf` + `sha256sum`.
pub const LEVEL: u32 = 7;

/// One entry to archive.
pub struct Entry {
    /// Relative path with `/` separators; a folder's path has no trailing slash.
    pub path: String,
    /// Unix permission bits, e.g. 0o755.
    pub mode: u32,
    /// The file's bytes, or `None` for a folder.
    pub contents: Option<Vec<u8>>,
}

/// Writes `entries` as a reproducible `.tar.gz` into `out`; the same entries always give the
/// same bytes, whatever order they come in.
pub fn write_tar_gz(
    entries: &mut [Entry],
    mtime: u64,
    level: u32,
    out: impl Write,
) -> io::Result<()> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries.iter() {
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_mode(entry.mode);
        match &entry.contents {
            Some(bytes) => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &entry.path, bytes.as_slice())?;
            }
            None => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.path), io::empty())?;
            }
        }
    }
    let tar = builder.into_inner()?;
    gzip::compress(&tar, level, out)
}

/// What an archive holds, one entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
    /// SHA-256 of a regular file's contents.
    pub sha256: Option<String>,
    /// The target of a link.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    /// Devices, fifos and anything else a release never holds.
    Other,
}

/// Reads every entry of a `.tar.gz`, hashing each file; fails on a damaged archive.
pub fn read_tar_gz(reader: impl Read) -> anyhow::Result<Vec<ReadEntry>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut entries = Vec::new();
    for entry in archive.entries().context("cannot read the archive")? {
        let mut entry = entry.context("the archive is damaged")?;
        let header = entry.header();
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => EntryKind::File,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Link => EntryKind::Hardlink,
            _ => EntryKind::Other,
        };
        let mode = header.mode().context("an entry has no valid mode")?;
        let (uid, gid) = (
            header.uid().unwrap_or(u64::MAX),
            header.gid().unwrap_or(u64::MAX),
        );
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = path.trim_end_matches('/').to_owned();
        let link = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let size = entry.size();
        let sha256 = if kind == EntryKind::File {
            let mut hasher = Sha256::new();
            io::copy(&mut entry, &mut DigestWriter(&mut hasher))
                .with_context(|| format!("the archive is damaged inside {path}"))?;
            Some(checksum::hex(&hasher.finalize()))
        } else {
            None
        };
        entries.push(ReadEntry {
            path,
            kind,
            mode,
            size,
            uid,
            gid,
            sha256,
            link,
        });
    }
    Ok(entries)
}

/// Why an entry read back is not one a release may hold under its folder `top`, if it is not:
/// only plain files and folders, each under `top/`, never absolute or climbing with `..`. Links
/// are refused whatever they point at (install.sh refuses them too; a release needs none), so no
/// chain of links can lead a write outside the release.
pub fn unsafe_entry(entry: &ReadEntry, top: &str) -> Option<String> {
    let path = std::path::Path::new(&entry.path);
    if path.is_absolute() {
        return Some("it is an absolute path".to_owned());
    }
    if path
        .components()
        .any(|part| !matches!(part, std::path::Component::Normal(_)))
    {
        return Some("it climbs out with `..` (or holds `.` or `//`)".to_owned());
    }
    if entry.path != top && !entry.path.starts_with(&format!("{top}/")) {
        return Some(format!("it is outside the release folder {top}/"));
    }
    match entry.kind {
        EntryKind::File | EntryKind::Dir => None,
        EntryKind::Symlink => Some(format!(
            "it is a link (to {}); a release holds only files and folders",
            entry.link.as_deref().unwrap_or("?")
        )),
        EntryKind::Hardlink => Some("it is a hard link".to_owned()),
        EntryKind::Other => Some("it is a device or fifo, not a file or folder".to_owned()),
    }
}

struct DigestWriter<'a>(&'a mut Sha256);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                path: "r/bin/tool".into(),
                mode: 0o755,
                contents: Some(b"binary".to_vec()),
            },
            Entry {
                path: "r".into(),
                mode: 0o755,
                contents: None,
            },
            Entry {
                path: "r/bin".into(),
                mode: 0o755,
                contents: None,
            },
            Entry {
                path: "r/README".into(),
                mode: 0o644,
                contents: Some(b"hello".to_vec()),
            },
        ]
    }

    #[test]
    fn only_files_and_folders_under_the_release_folder_are_safe() {
        let entry = |path: &str, kind, link: Option<&str>| ReadEntry {
            path: path.to_owned(),
            kind,
            mode: 0o644,
            size: 0,
            uid: 0,
            gid: 0,
            sha256: None,
            link: link.map(str::to_owned),
        };
        let top = "saulpos-server-1.0.0";
        let why = |path: &str, kind, link| unsafe_entry(&entry(path, kind, link), top);
        assert_eq!(why(top, EntryKind::Dir, None), None);
        assert_eq!(
            why(
                "saulpos-server-1.0.0/bin/saulpos-server",
                EntryKind::File,
                None
            ),
            None
        );
        let refused = |path: &str, kind, link, expected: &str| {
            let said = why(path, kind, link).unwrap_or_default();
            assert!(said.contains(expected), "{path}: {said:?}");
        };
        refused("/etc/passwd", EntryKind::File, None, "absolute");
        refused(
            "saulpos-server-1.0.0/../../x",
            EntryKind::File,
            None,
            "climbs out",
        );
        refused(
            "other/x",
            EntryKind::File,
            None,
            "outside the release folder",
        );
        refused(
            "saulpos-server-1.0.0x/y",
            EntryKind::File,
            None,
            "outside the release folder",
        );
        // A link is refused even when it points inside: a chain of them can lead outside.
        refused(
            "saulpos-server-1.0.0/bin/s",
            EntryKind::Symlink,
            Some("saulpos-server"),
            "is a link",
        );
        refused(
            "saulpos-server-1.0.0/l",
            EntryKind::Symlink,
            Some("../../etc"),
            "is a link",
        );
        refused(
            "saulpos-server-1.0.0/h",
            EntryKind::Hardlink,
            Some("x"),
            "hard link",
        );
        refused("saulpos-server-1.0.0/d", EntryKind::Other, None, "device");
    }

    #[test]
    fn the_same_entries_in_another_order_give_the_same_bytes() {
        let mut first = Vec::new();
        write_tar_gz(&mut sample(), 1_700_000_000, LEVEL, &mut first).unwrap();
        let mut reversed: Vec<Entry> = sample().into_iter().rev().collect();
        let mut second = Vec::new();
        write_tar_gz(&mut reversed, 1_700_000_000, LEVEL, &mut second).unwrap();
        assert_eq!(first, second);

        let entries = read_tar_gz(first.as_slice()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
        assert_eq!(paths, ["r", "r/README", "r/bin", "r/bin/tool"]);
        assert_eq!(
            entries[3].sha256.as_deref(),
            Some(checksum::sha256_hex(b"binary").as_str())
        );
        assert!(entries.iter().all(|entry| entry.uid == 0 && entry.gid == 0));
    }
}
