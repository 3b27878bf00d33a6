//! `cargo xtask bench package`: our archive + checksum step against `tar -czf` then
//! `sha256sum` on the same staged files, the OCI image step and its size beside the archive,
//! and `cargo xtask package` for a second version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use super::{Row, fresh_dir, median, note, package_version, seconds, timed};
use crate::release::archive::{self, Entry};
use crate::release::manifest::Manifest;
use crate::release::{image, payload_files, provenance, sbom, signature};
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
        for name in payload_files::core_files("0.0.0-bench.2", &manifest.archive.name) {
            fs::copy(release.join(&name), payload_dir.join(&name))?;
        }
        let (_, took) =
            timed(|| package::write_payloads(&payload_dir, "0.0.0-bench.2", &manifest, 0, None))?;
        payload_runs.push(took);
    }

    // The image step alone: the shared libraries found and read, the layer and the OCI tar.
    let mut image_runs = Vec::new();
    let mut image_size = 0;
    let image_dir = work.join("image");
    let binary = staged.join(top).join("bin/saulpos-server");
    for run in 1..=runs {
        note(&format!("image step, run {run} of {runs}"));
        fresh_dir(&image_dir)?;
        let (facts, took) = timed(|| {
            let entries = read_tree(&staged, top)?;
            let runtime = image::runtime_files(&binary)?;
            image::write(
                &image_dir,
                &image::Recipe {
                    version: "0.0.0-bench.2",
                    revision: &manifest.git_commit,
                    created: &manifest.source_date,
                    source_date: 0,
                    source: None,
                    licenses: "Apache-2.0",
                    target: &manifest.target,
                    release: &entries,
                    runtime: &runtime,
                },
            )
        })?;
        image_size = facts.size;
        image_runs.push(took);
    }

    // What signing adds to a release: the SBOM, the provenance and the signatures (the dist
    // folder's SHA256SUMS and the three payloads'), with a throwaway Ed25519 key.
    let key = work.join("bench-key");
    cmd!(sh, "ssh-keygen -q -t ed25519 -N '' -C bench -f {key}")
        .quiet()
        .run()?;
    let sums = payload_dir.join("SHA256SUMS");
    fs::write(&sums, fs::read(release.join("SHA256SUMS"))?)?;
    let mut trust_runs = Vec::new();
    let mut metadata_runs = Vec::new();
    for run in 1..=runs {
        // cargo metadata runs beside the release build in `package`; timed apart here.
        let (metadata, took) = timed(|| {
            let metadata = sbom::Metadata::start(&project_root(), &manifest.target)?;
            let text = metadata.sbom(
                "0.0.0-bench.2",
                &manifest.archive.sha256,
                &manifest.source_date,
                &[],
            )?;
            Ok(text)
        })?;
        metadata_runs.push(took);
        note(&format!(
            "SBOM, provenance and signatures, run {run} of {runs}"
        ));
        let ((), took) = timed(|| {
            fs::write(payload_dir.join("bench.cdx.json"), &metadata)?;
            let statement = provenance::statement(&provenance::Build {
                version: "0.0.0-bench.2",
                git_commit: &manifest.git_commit,
                git_dirty: manifest.git_dirty,
                rustc: &manifest.rustc,
                target: &manifest.target,
                source_date: &manifest.source_date,
                cargo_lock_sha256: "0",
                subjects: vec![(
                    manifest.archive.name.clone(),
                    manifest.archive.sha256.clone(),
                )],
            });
            fs::write(payload_dir.join("bench.intoto.json"), statement)?;
            for _ in 0..4 {
                signature::sign(&sums, &key)?;
            }
            Ok(())
        })?;
        trust_runs.push(took);
    }
    fs::remove_dir_all(&work)?;
    let payloads = median(payload_runs);
    let trust = median(trust_runs);
    let metadata_time = median(metadata_runs);
    let payload_share = payloads.as_secs_f64() / second.as_secs_f64() * 100.0;
    let image_time = median(image_runs);
    let image_share = image_time.as_secs_f64() / second.as_secs_f64() * 100.0;
    let image_ratio = image_size as f64 / manifest.archive.size as f64;

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
        Row::goal(
            format!("OCI image: ldd, layer, tar (median of {runs})"),
            seconds(image_time),
            "< 0.5 s",
            image_time.as_secs_f64() < 0.5,
        ),
        Row::figure(
            "image step's share of package",
            format!("{image_share:.1} %"),
        ),
        Row::goal(
            "image size / server archive",
            format!(
                "{image_ratio:.2} ({image_size} / {} bytes)",
                manifest.archive.size
            ),
            "< 1.5",
            image_ratio < 1.5,
        ),
        Row::figure(
            format!(
                "cargo metadata + SBOM, alone (runs beside the build in package; median of {runs})"
            ),
            seconds(metadata_time),
        ),
        Row::figure(
            format!("SBOM written + provenance + 4 signatures (median of {runs})"),
            seconds(trust),
        ),
        Row::figure(
            "SBOM + provenance + signatures / archive step",
            format!("{:.1} %", trust.as_secs_f64() / ours.as_secs_f64() * 100.0),
        ),
        // A person waits for the whole package, not for the archive step alone.
        Row::goal(
            "SBOM + provenance + signatures / whole package",
            format!(
                "{:.2} %",
                trust.as_secs_f64() / second.as_secs_f64() * 100.0
            ),
            "<= 1 %",
            trust.as_secs_f64() / second.as_secs_f64() <= 0.01,
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
