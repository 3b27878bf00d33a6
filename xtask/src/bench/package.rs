//! `cargo xtask bench package`: our archive + checksum step against `tar -czf` then
//! `sha256sum` on the same staged files, and `cargo xtask package` for a second version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use super::{Row, fresh_dir, median, note, package_version, seconds, timed};
use crate::release::archive::{self, Entry};
use crate::release::manifest::Manifest;
use crate::{flags, project_root, release::package};

pub fn run(sh: &Shell, flags: &flags::BenchPackage) -> anyhow::Result<Vec<Row>> {
    let runs = flags.runs.max(1);
    let work = project_root().join("target/bench/package");
    let dist = work.join("dist");
    fresh_dir(&work)?;

    note("packaging a first version (builds the server if needed)");
    package_version(sh, &dist, "0.0.0-bench.1")?;
    note("packaging a second version with no source change (timed)");
    let ((), second) = timed(|| package_version(sh, &dist, "0.0.0-bench.2"))?;

    let release = dist.join("0.0.0-bench.2");
    let manifest = Manifest::from_json(&fs::read_to_string(
        release.join(crate::release::manifest::JSON_NAME),
    )?)?;
    let archive = release.join(&manifest.archive.name);
    let staged = work.join("staged");
    fs::create_dir_all(&staged)?;
    cmd!(sh, "tar -xzf {archive} -C {staged}").run()?;
    let top = "saulpos-server-0.0.0-bench.2";

    let mut ours = Vec::new();
    let mut plain = Vec::new();
    let (mut our_size, mut plain_size) = (0, 0);
    let ours_dir = work.join("ours");
    let plain_archive = work.join("plain.tar.gz");
    for run in 1..=runs {
        note(&format!("archive step, run {run} of {runs}"));
        fs::create_dir_all(&ours_dir)?;
        let (facts, took) = timed(|| {
            let mut entries = read_tree(&staged, top)?;
            package::write_archive(&ours_dir, "ours.tar.gz", &mut entries, 0, archive::LEVEL)
        })?;
        our_size = facts.size;
        ours.push(took);
        fs::remove_dir_all(&ours_dir)?;

        let ((), took) = timed(|| {
            cmd!(sh, "tar -czf {plain_archive} -C {staged} {top}")
                .quiet()
                .run()?;
            cmd!(sh, "sha256sum {plain_archive}")
                .quiet()
                .ignore_stdout()
                .run()?;
            Ok(())
        })?;
        plain_size = fs::metadata(&plain_archive)?.len();
        plain.push(took);
        fs::remove_file(&plain_archive)?;
    }

    // The payload step alone, on the release just packaged: three payloads and their checksums.
    let mut payload_runs = Vec::new();
    let payload_dir = work.join("payloads");
    for run in 1..=runs {
        note(&format!("payload step, run {run} of {runs}"));
        fresh_dir(&payload_dir)?;
        for name in [
            manifest.archive.name.clone(),
            format!("{}.sha256", manifest.archive.name),
            crate::release::manifest::TEXT_NAME.to_owned(),
            crate::release::manifest::JSON_NAME.to_owned(),
        ] {
            fs::copy(release.join(&name), payload_dir.join(&name))?;
        }
        let (_, took) =
            timed(|| package::write_payloads(&payload_dir, "0.0.0-bench.2", &manifest, 0))?;
        payload_runs.push(took);
    }
    fs::remove_dir_all(&work)?;
    let payloads = median(payload_runs);
    let payload_share = payloads.as_secs_f64() / second.as_secs_f64() * 100.0;

    let (ours, plain) = (median(ours), median(plain));
    let time_ratio = ours.as_secs_f64() / plain.as_secs_f64();
    let size_ratio = our_size as f64 / plain_size as f64;
    Ok(vec![
        Row::figure(
            format!("archive + sha256, ours (median of {runs})"),
            seconds(ours),
        ),
        Row::figure(
            format!("tar -czf + sha256sum (median of {runs})"),
            seconds(plain),
        ),
        Row::goal(
            "time, ours / plain",
            format!("{time_ratio:.2}"),
            "<= 0.35",
            time_ratio <= 0.35,
        ),
        Row::figure("archive size, ours", format!("{our_size} bytes")),
        Row::figure("archive size, tar -czf", format!("{plain_size} bytes")),
        Row::goal(
            "size, ours / plain",
            format!("{size_ratio:.3}"),
            "<= 1.03",
            size_ratio <= 1.03,
        ),
        Row::figure(
            "cargo xtask package, second version, no source change",
            seconds(second),
        ),
        Row::figure(
            format!("payloads dev, staging, prod + .sha256 (median of {runs})"),
            seconds(payloads),
        ),
        Row::figure(
            "payload step's share of package",
            format!("{payload_share:.1} %"),
        ),
    ])
}

/// The files under `root/top` as archive entries, the way `package` stages them.
fn read_tree(root: &Path, top: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pending = vec![PathBuf::from(top)];
    while let Some(relative) = pending.pop() {
        let path = root.join(&relative);
        let metadata = fs::symlink_metadata(&path)?;
        let name = relative.to_string_lossy().into_owned();
        if metadata.is_dir() {
            entries.push(Entry {
                path: name,
                mode: 0o755,
                contents: None,
            });
            for child in fs::read_dir(&path)? {
                pending.push(relative.join(child?.file_name()));
            }
        } else {
            let executable = metadata.permissions().mode() & 0o111 != 0;
            entries.push(Entry {
                path: name,
                mode: if executable { 0o755 } else { 0o644 },
                contents: Some(fs::read(&path)?),
            });
        }
    }
    Ok(entries)
}
