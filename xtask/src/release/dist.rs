//! The `dist/` folder: where releases land, one folder per version, and what each holds.

use std::path::{Path, PathBuf};

use anyhow::bail;
use semver::Version;

use crate::release::release_version;

/// The folder of a release that holds its Kubernetes manifests.
pub const KUBERNETES: &str = "kubernetes";

/// The folder holding the releases: `dist/` in the workspace.
pub fn root() -> PathBuf {
    crate::project_root().join("dist")
}

/// The archive's file name for a version and target.
pub fn archive_name(version: &str, target: &str) -> String {
    format!("saulpos-server-{version}-{target}.tar.gz")
}

/// The folder at the archive's top: everything in a release is inside it.
pub fn top_folder(version: &str) -> String {
    format!("saulpos-server-{version}")
}

/// The versions packaged in `dist`, sorted by semver.
pub fn versions(dist: &Path) -> Vec<Version> {
    let mut versions: Vec<Version> = std::fs::read_dir(dist)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .path()
                .join(crate::release::manifest::JSON_NAME)
                .is_file()
        })
        .filter_map(|entry| Version::parse(&entry.file_name().to_string_lossy()).ok())
        .collect();
    versions.sort();
    versions
}

/// The folder of a packaged version, or an error that lists the versions there are.
pub fn release_dir(dist: &Path, version_text: &str) -> anyhow::Result<(Version, PathBuf)> {
    let version = release_version::parse(version_text)?;
    let dir = dist.join(version.to_string());
    if !dir.is_dir() {
        let known = versions(dist);
        let listing = if known.is_empty() {
            "none yet; make one with `cargo xtask package <version>`".to_owned()
        } else {
            known
                .iter()
                .map(Version::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "version {version} is not packaged in {}; packaged versions: {listing}",
            dist.display()
        );
    }
    Ok((version, dir))
}

/// The commit a release folder's manifest records, if it has a readable one.
pub fn recorded_commit(release_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(release_dir.join(crate::release::manifest::JSON_NAME)).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    manifest["git_commit"].as_str().map(str::to_owned)
}
