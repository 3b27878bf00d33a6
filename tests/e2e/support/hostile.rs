//! Hostile and damaged releases for the refusal tests: an archive whose entries climb out of the
//! release or link outside it, with its checksum and manifests regenerated to match, as someone
//! who can replace files in a release (but holds no signing key) would make it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{text, tool};

const TARGET: &str = env!("E2E_HOST_TARGET");

/// One entry of a hostile archive.
pub enum Evil {
    Dir(String),
    File(String, &'static [u8]),
    Link(String, &'static str),
    HardLink(String, &'static str),
    Fifo(String),
}

pub fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A `.tar.gz` of `entries`, names written raw (so `..` stays in them).
fn evil_archive(entries: &[Evil]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (path, kind, contents, mode): (&str, _, &[u8], u32) = match entry {
            Evil::Dir(path) => (path, tar::EntryType::Directory, b"", 0o755),
            Evil::File(path, bytes) => (path, tar::EntryType::Regular, bytes, 0o644),
            Evil::Link(path, target) => {
                header.set_link_name(target).unwrap();
                (path, tar::EntryType::Symlink, b"", 0o777)
            }
            Evil::HardLink(path, target) => {
                header.set_link_name(target).unwrap();
                (path, tar::EntryType::Link, b"", 0o644)
            }
            Evil::Fifo(path) => (path, tar::EntryType::Fifo, b"", 0o644),
        };
        let field = &mut header.as_gnu_mut().unwrap().name;
        field[..path.len()].copy_from_slice(path.as_bytes());
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(kind);
        header.set_size(contents.len() as u64);
        header.set_cksum();
        builder.append(&header, contents).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Writes into `dir` the archive of `version` made of `entries`, with its `.sha256`,
/// manifest.json and manifest.txt regenerated to match it exactly.
pub fn write_evil_release(dir: &Path, version: &str, entries: &[Evil]) {
    let name = format!("saulpos-server-{version}-{TARGET}.tar.gz");
    let archive = evil_archive(entries);
    fs::write(dir.join(&name), &archive).unwrap();
    let digest = hex(&archive);
    fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )
    .unwrap();
    let mut files = Vec::new();
    let mut txt = format!(
        "name: saulpos-server\nversion: {version}\ngit_commit: none\ngit_dirty: false\nbuild_time: 2026-01-01T00:00:00Z\nsource_date: 2026-01-01T00:00:00Z\nrustc: rustc\ntarget: {TARGET}\nprofile: release\narchive: {name}\narchive_size: {}\narchive_sha256: {digest}\n",
        archive.len()
    );
    for entry in entries {
        match entry {
            Evil::Dir(path) => {
                files.push(serde_json::json!({"path": path, "kind": "dir", "size": 0, "mode": "0755", "sha256": null}));
                txt.push_str(&format!("file: {path} dir mode=0755\n"));
            }
            Evil::File(path, bytes) => {
                files.push(serde_json::json!({"path": path, "kind": "file", "size": bytes.len(), "mode": "0644", "sha256": hex(bytes)}));
                txt.push_str(&format!(
                    "file: {path} file size={} mode=0644 sha256={}\n",
                    bytes.len(),
                    hex(bytes)
                ));
            }
            Evil::Link(path, _) | Evil::HardLink(path, _) | Evil::Fifo(path) => {
                files.push(serde_json::json!({"path": path, "kind": "other", "size": 0, "mode": "0777", "sha256": null}));
                txt.push_str(&format!("file: {path} other mode=0777\n"));
            }
        }
    }
    let manifest = serde_json::json!({
        "name": "saulpos-server", "version": version, "git_commit": "none", "git_dirty": false,
        "build_time": "2026-01-01T00:00:00Z", "source_date": "2026-01-01T00:00:00Z",
        "rustc": "rustc", "target": TARGET, "profile": "release",
        "archive": {"name": name, "size": archive.len(), "sha256": digest},
        "files": files,
    });
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    fs::write(dir.join("manifest.txt"), txt).unwrap();
    regenerate_sums(dir);
}

/// Regenerates a payload folder's own SHA256SUMS (if it has one) over every other file, as
/// someone without the signing key can.
pub fn regenerate_sums(dir: &Path) {
    if !dir.join("SHA256SUMS").exists() {
        return;
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "SHA256SUMS" && name != "SHA256SUMS.sig")
        .collect();
    names.sort();
    let sums: String = names
        .iter()
        .map(|name| format!("{}  {name}\n", hex(&fs::read(dir.join(name)).unwrap())))
        .collect();
    fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

/// The payload of `env` from `release` unpacked into `into` (as an operator would after copying
/// it to a host); returns the payload's folder.
pub fn unpack_payload(release: &Path, env: &str, version: &str, into: &Path) -> PathBuf {
    let payload = release.join(format!("saulpos-{env}-{version}.tar.gz"));
    let untar = tool(into, "tar", &["-xzf", payload.to_str().unwrap()]);
    assert!(untar.status.success(), "{}", text(&untar));
    into.join(format!("saulpos-{env}-{version}"))
}

/// A release folder `<dist>/<version>/` copied from `release`, whose payload of `env` carries the
/// hostile archive instead, every checksum around it regenerated (`.sha256`s, SHA256SUMS).
pub fn evil_dist(release: &Path, dist: &Path, env: &str, version: &str, entries: &[Evil]) {
    let copy = dist.join(version);
    super::copy_release(release, &copy);
    let work = tempfile::tempdir().unwrap();
    let unpacked = unpack_payload(release, env, version, work.path());
    write_evil_release(&unpacked, version, entries);
    let name = format!("saulpos-{env}-{version}.tar.gz");
    let packed = Command::new("tar")
        .arg("-czf")
        .arg(copy.join(&name))
        .arg("-C")
        .arg(work.path())
        .arg(unpacked.file_name().unwrap())
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", text(&packed));
    let digest = hex(&fs::read(copy.join(&name)).unwrap());
    fs::write(
        copy.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )
    .unwrap();
    let sums = Command::new("sh")
        .args([
            "-c",
            "sha256sum $(ls | grep -v '^SHA256SUMS$' | grep -v '^kubernetes$') kubernetes/* > SHA256SUMS",
        ])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", text(&sums));
}

/// Flips one bit in the middle of a file.
pub fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(path, &bytes).unwrap();
}
