//! `cargo xtask package <version>`: build the server with the version embedded and write a
//! reproducible release into `dist/<version>/`, all at once or not at all.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use xshell::{Shell, cmd};

use crate::release::archive::{self, Entry};
use crate::release::checksum;
use crate::release::manifest::{self, ArchiveFacts, FileFacts, Manifest};
use crate::release::sums;
use crate::release::{
    dist, image, kubernetes, payload_files, provenance, release_version, sbom, signature,
};
use crate::util::durable::{self, StagingDir};
use crate::util::progress::step;
use crate::util::{git, utc};
use crate::{flags, project_root};

/// The release notes a cut ships beside the release, listed in SHA256SUMS.
pub const RELEASE_NOTES: &str = "RELEASE-NOTES.md";

impl flags::Package {
    /// The steps of a package, each a function named for it: where the release goes, what it
    /// is built from, the build, the archive and the image, the metadata, the payloads, the
    /// notes, SHA256SUMS and its signature, then one rename makes it a release.
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let (version, dist_dir, release_dir) = self.destination()?;
        let sign_key = signature::signing_key(self.sign_key.as_deref())?;
        let source = self.inspect_source(sh)?;
        note_source(started, &version, &source, &dist_dir);
        let toolchain = Toolchain::detect(sh)?;
        // cargo metadata for the SBOM runs while the server builds.
        let metadata = sbom::Metadata::start(&project_root(), &toolchain.target)?;
        let binary = build(sh, &version, &source, &toolchain)?;
        step(
            started,
            &format!("built {} for {}", binary.display(), toolchain.target),
        );

        fs::create_dir_all(&dist_dir)
            .with_context(|| format!("cannot create {}", dist_dir.display()))?;
        durable::remove_stale_partials(&dist_dir, &format!("{version}.partial-"))?;
        let staging = StagingDir::new(&release_dir)?;
        let built = write_archive_and_image(
            staging.path(),
            started,
            &version,
            &binary,
            &source,
            &toolchain,
        )?;
        let manifest = manifest_of(&version, &source, &toolchain, &built);
        let described = write_metadata(staging.path(), started, &manifest, metadata, &built)?;
        let payloads = write_payloads(
            staging.path(),
            &version,
            &manifest,
            source.date,
            sign_key.as_deref(),
        )?;
        step(
            started,
            &format!(
                "wrote the payloads {}",
                payloads
                    .iter()
                    .map(|payload| payload.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        self.write_notes(staging.path())?;
        write_sums(staging.path())?;
        // Signing is the last step: a failed signature leaves no release behind.
        if let Some(key) = &sign_key {
            signature::sign(&staging.path().join(signature::SUMS), key)?;
            step(
                started,
                &format!("signed {} with {}", signature::SUMS, key.display()),
            );
        }
        staging.commit(&release_dir)?;
        step(started, &format!("wrote {}", shown(&release_dir).display()));
        if sign_key.is_none() {
            step(
                started,
                "not signed (give --sign-key FILE, or set SAULPOS_SIGNING_KEY, to sign)",
            );
        }
        if self.json {
            print_summary(
                &release_dir,
                &manifest,
                &built,
                &described,
                &payloads,
                sign_key.is_some(),
            );
        }
        Ok(())
    }

    /// The version, the dist/ folder and the release's folder in it; refuses a version that is
    /// already released (build metadata aside) or a folder in the way.
    fn destination(&self) -> anyhow::Result<(String, PathBuf, PathBuf)> {
        let version = release_version::parse(&self.version)?;
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let release_dir = dist_dir.join(version.to_string());
        if let Some(existing) = dist::versions(&dist_dir)
            .into_iter()
            .find(|existing| release_version::same_release(existing, &version))
        {
            bail!(
                "version {version} is already released as {}: a release is never overwritten; choose a new version (e.g. bump the patch number), or delete that folder if it was never shipped",
                dist_dir.join(existing.to_string()).display()
            );
        }
        if release_dir.exists() {
            bail!(
                "{} exists but is no complete release; remove it and package again",
                release_dir.display()
            );
        }
        Ok((version.to_string(), dist_dir, release_dir))
    }

    /// `--release-notes`: RELEASE-NOTES.md, listed in SHA256SUMS with the rest.
    fn write_notes(&self, folder: &Path) -> anyhow::Result<()> {
        let Some(notes) = &self.release_notes else {
            return Ok(());
        };
        let text = fs::read(notes).with_context(|| {
            format!(
                "--release-notes {}: cannot read it; give the notes file",
                notes.display()
            )
        })?;
        durable::write(&folder.join(RELEASE_NOTES), &text)
    }

    fn inspect_source(&self, sh: &Shell) -> anyhow::Result<Source> {
        let epoch_override = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(text) => Some(text.trim().parse::<i64>().ok().filter(|epoch| *epoch >= 0).with_context(|| {
                format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970; unset it or give e.g. 1767225600")
            })?),
            Err(_) => None,
        };
        match git::inspect(sh)? {
            None if !self.allow_no_git => bail!(
                "{} is not a git checkout, so the release cannot record its commit; package from a clone, or pass --allow-no-git (the manifest then says commit \"none\")",
                project_root().display()
            ),
            None => Ok(Source {
                commit: "none".to_owned(),
                dirty: true,
                date: epoch_override.unwrap_or(0),
            }),
            Some(checkout) if checkout.dirty && !self.allow_dirty => {
                let shown: Vec<&str> = checkout
                    .changes
                    .iter()
                    .take(10)
                    .map(String::as_str)
                    .collect();
                bail!(
                    "the git tree has uncommitted changes, so the release would not match commit {}:\n  {}{}\ncommit or stash them, or pass --allow-dirty (recorded in the manifest)",
                    checkout.commit,
                    shown.join("\n  "),
                    if checkout.changes.len() > 10 {
                        "\n  ..."
                    } else {
                        ""
                    }
                )
            }
            Some(checkout) => Ok(Source {
                commit: checkout.commit,
                dirty: checkout.dirty,
                date: epoch_override.unwrap_or(checkout.commit_time),
            }),
        }
    }
}

/// `path` relative to the current folder when it lies below it (`dist/2.0.0`), else as it is.
/// The version and the commit it is built from, and whether that commit is already released
/// under another number.
fn note_source(started: Instant, version: &str, source: &Source, dist_dir: &Path) {
    step(
        started,
        &format!(
            "version {version}, commit {}{}",
            source.commit,
            if source.dirty { " (dirty)" } else { "" }
        ),
    );
    let same_code = released_from(dist_dir, &source.commit, version);
    if !same_code.is_empty() {
        step(
            started,
            &format!(
                "note: commit {} is already released as {}; {version} will hold the same code",
                source.commit,
                same_code.join(", ")
            ),
        );
    }
}

/// What the archive and the image steps made.
struct Built {
    entries: Vec<Entry>,
    archive_name: String,
    archive_facts: ArchiveFacts,
    runtime: Vec<image::RuntimeFile>,
    image_facts: image::ImageFacts,
}

/// The server archive, then the OCI image from the same files.
fn write_archive_and_image(
    folder: &Path,
    started: Instant,
    version: &str,
    binary: &Path,
    source: &Source,
    toolchain: &Toolchain,
) -> anyhow::Result<Built> {
    let mut entries = release_entries(version, binary, source, toolchain)?;
    let archive_name = dist::archive_name(version, &toolchain.target);
    let archive_facts = write_archive(
        folder,
        &archive_name,
        &mut entries,
        source.date,
        archive::LEVEL,
    )?;
    step(
        started,
        &format!(
            "archived {} ({} bytes, sha256 {})",
            archive_name, archive_facts.size, archive_facts.sha256
        ),
    );
    let runtime = image::runtime_files(binary)?;
    let source_url = image::source_url(&project_root());
    let created = utc::rfc3339(source.date);
    let image_facts = image::write(
        folder,
        &image::Recipe {
            version,
            revision: &source.commit,
            created: &created,
            source_date: source.date,
            source: source_url.as_deref(),
            licenses: LICENSE,
            target: &toolchain.target,
            release: &entries,
            runtime: &runtime,
        },
    )?;
    step(
        started,
        &format!(
            "built the image {} ({} bytes, {:.2}x the server archive; {})",
            image_facts.name,
            image_facts.size,
            image_facts.size as f64 / archive_facts.size as f64,
            image_facts.digest
        ),
    );
    Ok(Built {
        entries,
        archive_name,
        archive_facts,
        runtime,
        image_facts,
    })
}

/// The manifest of what was built.
fn manifest_of(version: &str, source: &Source, toolchain: &Toolchain, built: &Built) -> Manifest {
    Manifest {
        name: "saulpos-server".to_owned(),
        version: version.to_owned(),
        git_commit: source.commit.clone(),
        git_dirty: source.dirty,
        // The source date, never the wall clock: the manifests travel inside the payloads,
        // which must come out byte for byte the same from the same commit.
        build_time: utc::rfc3339(source.date),
        source_date: utc::rfc3339(source.date),
        rustc: toolchain.rustc.clone(),
        target: toolchain.target.clone(),
        profile: "release".to_owned(),
        archive: built.archive_facts.clone(),
        files: built.entries.iter().map(file_facts).collect(),
        image: Some(manifest::ImageFacts {
            name: built.image_facts.name.clone(),
            size: built.image_facts.size,
            sha256: built.image_facts.sha256.clone(),
            digest: built.image_facts.digest.clone(),
            files: built
                .runtime
                .iter()
                .map(|file| manifest::ImageFile {
                    path: file.path.clone(),
                    size: file.bytes.len() as u64,
                    sha256: file.sha256.clone(),
                    package: file
                        .package
                        .as_ref()
                        .map(|(name, version, arch)| format!("{name} {version} {arch}")),
                })
                .collect(),
        }),
    }
}

/// What the metadata step wrote.
struct Described {
    checksum_name: String,
    sbom_name: String,
    kubernetes_files: Vec<String>,
}

/// The archive's .sha256, both manifests, the SBOM, the Kubernetes manifests and the provenance.
fn write_metadata(
    folder: &Path,
    started: Instant,
    manifest: &Manifest,
    metadata: sbom::Metadata,
    built: &Built,
) -> anyhow::Result<Described> {
    let (version_text, archive_name, runtime, image_facts, entries) = (
        &manifest.version,
        &built.archive_name,
        &built.runtime,
        &built.image_facts,
        &built.entries,
    );
    let checksum_name = format!("{archive_name}.sha256");
    durable::write(
        &folder.join(&checksum_name),
        checksum::line(&manifest.archive.sha256, archive_name).as_bytes(),
    )?;
    durable::write(
        &folder.join(manifest::TEXT_NAME),
        manifest.to_text().as_bytes(),
    )?;
    durable::write(
        &folder.join(manifest::JSON_NAME),
        manifest.to_json_text().as_bytes(),
    )?;
    let sbom_name = sbom::file_name(version_text);
    let sbom_text = metadata.sbom(
        version_text,
        &manifest.archive.sha256,
        &manifest.source_date,
        runtime,
    )?;
    durable::write(&folder.join(&sbom_name), sbom_text.as_bytes())?;
    let lock_path = project_root().join("Cargo.lock");
    let (cargo_lock_sha256, _) = checksum::sha256_file(&lock_path)?;
    let kubernetes_files = write_kubernetes(folder, version_text, &image_facts.digest, entries)?;
    let mut subjects = Vec::new();
    for name in [
        archive_name.clone(),
        checksum_name.clone(),
        manifest::TEXT_NAME.to_owned(),
        manifest::JSON_NAME.to_owned(),
        sbom_name.clone(),
        image_facts.name.clone(),
    ]
    .into_iter()
    .chain(kubernetes_files.iter().cloned())
    {
        let (digest, _) = checksum::sha256_file(&folder.join(&name))?;
        subjects.push((name, digest));
    }
    let statement = provenance::statement(&provenance::Build {
        version: version_text,
        git_commit: &manifest.git_commit,
        git_dirty: manifest.git_dirty,
        rustc: &manifest.rustc,
        target: &manifest.target,
        source_date: &manifest.source_date,
        cargo_lock_sha256: &cargo_lock_sha256,
        subjects,
    });
    durable::write(&folder.join(provenance::FILE_NAME), statement.as_bytes())?;
    step(
        started,
        &format!("wrote the SBOM {sbom_name} and {}", provenance::FILE_NAME),
    );
    Ok(Described {
        checksum_name,
        sbom_name,
        kubernetes_files,
    })
}

/// `--json`: one object describing the release.
fn print_summary(
    release_dir: &Path,
    manifest: &Manifest,
    built: &Built,
    described: &Described,
    payloads: &[ArchiveFacts],
    signed: bool,
) {
    let (version_text, archive_name, image_facts) =
        (&manifest.version, &built.archive_name, &built.image_facts);
    let (checksum_name, sbom_name, kubernetes_files) = (
        &described.checksum_name,
        &described.sbom_name,
        &described.kubernetes_files,
    );
    let summary = json!({
        "version": version_text,
        "directory": release_dir,
        "archive": {
            "path": release_dir.join(archive_name),
            "size": manifest.archive.size,
            "sha256": manifest.archive.sha256,
        },
        "checksum_file": release_dir.join(checksum_name),
        "manifest_txt": release_dir.join(manifest::TEXT_NAME),
        "manifest_json": release_dir.join(manifest::JSON_NAME),
        "git_commit": manifest.git_commit,
        "git_dirty": manifest.git_dirty,
        "target": manifest.target,
        "files": manifest.files.len(),
        "payloads": payloads.iter().zip(payload_files::ENVIRONMENTS).map(|(payload, env)| json!({
            "env": env,
            "path": release_dir.join(&payload.name),
            "size": payload.size,
            "sha256": payload.sha256,
        })).collect::<Vec<_>>(),
        "sums": release_dir.join(sums::SUMS),
        "signature": signed.then(|| release_dir.join(signature::SIG)),
        "sbom": release_dir.join(sbom_name),
        "image": {
            "path": release_dir.join(&image_facts.name),
            "size": image_facts.size,
            "sha256": image_facts.sha256,
            "digest": image_facts.digest,
            "ref_name": image::ref_name(version_text),
        },
        "kubernetes": kubernetes_files.iter().map(|name| release_dir.join(name)).collect::<Vec<_>>(),
        "provenance": release_dir.join(provenance::FILE_NAME),
    });
    println!("{summary}");
}

fn shown(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|here| path.strip_prefix(here).ok().map(Path::to_owned))
        .unwrap_or_else(|| path.to_owned())
}

/// What the release is built from.
struct Source {
    commit: String,
    dirty: bool,
    /// Unix seconds: the commit time or SOURCE_DATE_EPOCH.
    date: i64,
}

struct Toolchain {
    rustc: String,
    target: String,
}

impl Toolchain {
    fn detect(sh: &Shell) -> anyhow::Result<Toolchain> {
        let rustc = cmd!(sh, "rustc --version")
            .quiet()
            .read()
            .context("cannot run rustc; install Rust with rustup")?;
        let verbose = cmd!(sh, "rustc -vV").quiet().read()?;
        let target = verbose
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .context("rustc -vV names no host target")?
            .to_owned();
        Ok(Toolchain { rustc, target })
    }
}

/// The target folder for release builds: apart from the everyday one, because the path
/// remapping flags would otherwise rebuild everything each time.
pub fn package_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
        .join("package")
}

/// Builds the server in release mode with the version embedded; returns the binary's path.
fn build(
    sh: &Shell,
    version: &str,
    source: &Source,
    toolchain: &Toolchain,
) -> anyhow::Result<PathBuf> {
    let target_dir = package_target_dir();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_default();
    // The binary must not carry the checkout's path: the same commit built anywhere is the same.
    // The last matching mapping wins, so the target folder goes after the workspace.
    let rustflags = [
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        format!("--remap-path-prefix={}=/saulpos", project_root().display()),
        format!("--remap-path-prefix={}=/target", target_dir.display()),
    ]
    .join("\u{1f}");
    let commit = if source.dirty && source.commit != "none" {
        format!("{}-dirty", source.commit)
    } else {
        source.commit.clone()
    };
    let target = &toolchain.target;
    cmd!(
        sh,
        "cargo build --release --locked --package saulpos-server --bin saulpos-server --target {target} --target-dir {target_dir}"
    )
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
    .env("SAULPOS_RELEASE_VERSION", version)
    .env("SAULPOS_GIT_COMMIT", commit)
    .env("SAULPOS_BUILD_TIME", utc::rfc3339(source.date))
    .env_remove("RUSTFLAGS")
    .run()
    .context("cannot build saulpos-server in release mode (cargo's message is above)")?;
    Ok(target_dir
        .join(target)
        .join("release")
        .join("saulpos-server"))
}

/// Everything the archive holds, under `saulpos-server-<version>/`.
fn release_entries(
    version: &str,
    binary: &Path,
    source: &Source,
    toolchain: &Toolchain,
) -> anyhow::Result<Vec<Entry>> {
    let top = dist::top_folder(version);
    let folder = |path: String| Entry {
        path,
        mode: 0o755,
        contents: None,
    };
    let mut entries = vec![
        folder(top.clone()),
        folder(format!("{top}/bin")),
        folder(format!("{top}/config")),
        Entry {
            path: format!("{top}/bin/saulpos-server"),
            mode: 0o755,
            contents: Some(
                fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?,
            ),
        },
        Entry {
            path: format!("{top}/README.md"),
            mode: 0o644,
            contents: Some(release_readme(version, source, toolchain).into_bytes()),
        },
    ];
    let config_dir = project_root().join("server/config");
    let mut names: Vec<String> = fs::read_dir(&config_dir)
        .with_context(|| format!("cannot list {}", config_dir.display()))?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("application") && name.ends_with(".toml"))
        .collect();
    names.sort();
    for name in names {
        let path = config_dir.join(&name);
        entries.push(Entry {
            path: format!("{top}/config/{name}"),
            mode: 0o644,
            contents: Some(
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
        });
    }
    Ok(entries)
}

fn release_readme(version: &str, source: &Source, toolchain: &Toolchain) -> String {
    format!(
        "# saulpos-server {version}\n\n\
         Built from commit {commit} (source date {date}) for {target}.\n\n\
         - `bin/saulpos-server`: the server; `bin/saulpos-server --version` names this release.\n\
         - `config/`: `application.toml` and the `dev`, `staging` and `prod` profiles.\n\n\
         Start it with the profile and database in the environment:\n\n\
         ```sh\n\
         export SAULPOS_PROFILE=staging SAULPOS_DB_URL=postgres://db:5432/saulpos\n\
         export SAULPOS_DB_USERNAME=saulpos SAULPOS_DB_PASSWORD=...   # never on a command line\n\
         bin/saulpos-server\n\
         ```\n\n\
         `cargo xtask deploy <env> {version} <dest>` lays this release out with a `run.sh`; the\n\
         runbooks in the workspace's `docs/` say more.\n",
        commit = source.commit,
        date = utc::rfc3339(source.date),
        target = toolchain.target,
    )
}

/// Writes one payload per environment into `folder`, each with its `.sha256`: the release's
/// core files with the files of `payload_files`, under `saulpos-<env>-<version>/`, and the
/// payload's own `SHA256SUMS` listing them (signed with `sign_key` when one is given), so that a
/// payload proves itself alone on a host.
pub fn write_payloads(
    folder: &Path,
    version: &str,
    manifest: &Manifest,
    source_date: i64,
    sign_key: Option<&Path>,
) -> anyhow::Result<Vec<ArchiveFacts>> {
    let archive_name = &manifest.archive.name;
    let mut core = Vec::new();
    for name in payload_files::core_files(version, archive_name) {
        let path = folder.join(&name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        core.push((name, 0o644, bytes));
    }
    let mut written = Vec::new();
    for env in payload_files::ENVIRONMENTS {
        let top = payload_files::payload_name(env, version);
        let mut files: Vec<(String, u32, Vec<u8>)> =
            payload_files::generated(env, version, archive_name)
                .into_iter()
                .map(|file| (file.name, file.mode, file.contents))
                .collect();
        files.extend(core.iter().cloned());
        files.sort();
        let mut sums = String::new();
        for (name, _, bytes) in &files {
            sums.push_str(&checksum::line(&checksum::sha256_hex(bytes), name));
        }
        if let Some(key) = sign_key {
            let scratch = StagingDir::new(&folder.join(format!("sign-{env}")))?;
            let sums_path = scratch.path().join(signature::SUMS);
            fs::write(&sums_path, &sums)?;
            signature::sign(&sums_path, key)?;
            let signed = fs::read(scratch.path().join(signature::SIG))?;
            files.push((signature::SIG.to_owned(), 0o644, signed));
        }
        files.push((signature::SUMS.to_owned(), 0o644, sums.into_bytes()));
        let mut entries = vec![Entry {
            path: top.clone(),
            mode: 0o755,
            contents: None,
        }];
        for (name, mode, bytes) in files {
            entries.push(Entry {
                path: format!("{top}/{name}"),
                mode,
                contents: Some(bytes),
            });
        }
        let name = payload_files::payload_archive_name(env, version);
        let facts = write_archive(
            folder,
            &name,
            &mut entries,
            source_date,
            payload_files::LEVEL,
        )?;
        durable::write(
            &folder.join(format!("{name}.sha256")),
            checksum::line(&facts.sha256, &name).as_bytes(),
        )?;
        written.push(facts);
    }
    Ok(written)
}

/// The license every artifact declares: the workspace's.
const LICENSE: &str = "Apache-2.0";

/// Writes `kubernetes/`: one file per environment and the kustomization; returns their names
/// relative to the release folder.
fn write_kubernetes(
    folder: &Path,
    version: &str,
    digest: &str,
    entries: &[Entry],
) -> anyhow::Result<Vec<String>> {
    let config = |name: &str| -> String {
        let path = format!("{}/config/{name}", dist::top_folder(version));
        entries
            .iter()
            .find(|entry| entry.path == path)
            .and_then(|entry| entry.contents.as_deref())
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default()
    };
    let dir = folder.join(kubernetes::FOLDER);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for env in payload_files::ENVIRONMENTS {
        let grace = kubernetes::shutdown_grace(
            &config("application.toml"),
            &config(&format!("application-{env}.toml")),
        )?;
        let name = kubernetes::file_name(env);
        let text = kubernetes::render(
            env,
            version,
            digest,
            kubernetes::PLACEHOLDER_REGISTRY,
            grace,
        );
        durable::write(&dir.join(&name), text.as_bytes())?;
        written.push(format!("{}/{name}", kubernetes::FOLDER));
    }
    durable::write(
        &dir.join(kubernetes::KUSTOMIZATION),
        kubernetes::kustomization().as_bytes(),
    )?;
    written.push(format!(
        "{}/{}",
        kubernetes::FOLDER,
        kubernetes::KUSTOMIZATION
    ));
    Ok(written)
}

/// Writes `SHA256SUMS`: one `sha256sum` line for every other file of the release folder.
fn write_sums(folder: &Path) -> anyhow::Result<()> {
    let names = sums::listed_files(folder)?;
    let mut text = String::new();
    for name in names {
        let (digest, _) = checksum::sha256_file(&folder.join(&name))?;
        text.push_str(&checksum::line(&digest, &name));
    }
    durable::write(&folder.join(sums::SUMS), text.as_bytes())
}

/// Writes an archive into `folder` at gzip `level`, hashing it as it is written; returns its
/// facts.
pub fn write_archive(
    folder: &Path,
    name: &str,
    entries: &mut [Entry],
    source_date: i64,
    level: u32,
) -> anyhow::Result<ArchiveFacts> {
    let (sha256, size) = checksum::write_hashed_file(&folder.join(name), |writer| {
        archive::write_tar_gz(entries, source_date.max(0) as u64, level, writer)
    })?;
    Ok(ArchiveFacts {
        name: name.to_owned(),
        size,
        sha256,
    })
}

fn file_facts(entry: &Entry) -> FileFacts {
    match &entry.contents {
        Some(bytes) => FileFacts {
            path: entry.path.clone(),
            kind: "file".to_owned(),
            size: bytes.len() as u64,
            mode: entry.mode,
            sha256: Some(checksum::sha256_hex(bytes)),
        },
        None => FileFacts {
            path: entry.path.clone(),
            kind: "dir".to_owned(),
            size: 0,
            mode: entry.mode,
            sha256: None,
        },
    }
}

/// The versions in `dist_dir` (but `version`) whose manifest records `commit`: the same code
/// released under another number. A source outside git (commit "none") matches nothing.
fn released_from(dist_dir: &Path, commit: &str, version: &str) -> Vec<String> {
    if commit == "none" {
        return Vec::new();
    }
    dist::versions(dist_dir)
        .into_iter()
        .map(|other| other.to_string())
        .filter(|other| other != version)
        .filter(|other| dist::recorded_commit(&dist_dir.join(other)).as_deref() == Some(commit))
        .collect()
}
