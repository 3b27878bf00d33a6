//! `cargo xtask verify <version> --rebuild`: packages the recorded commit again in a fresh
//! worktree (another path, so the check covers path independence too) with the recorded
//! toolchain, and compares the release byte for byte with the one in `dist/`: the archive, the
//! manifests, the SBOM, the provenance, and (for an unsigned release) the payloads and
//! SHA256SUMS.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::project_root;
use crate::release::manifest::{self, Manifest};
use crate::release::signature;
use crate::release::sums;
use crate::util::durable;

/// What the rebuild found: the files that differ, none when reproduced.
pub struct Rebuilt {
    pub differing: Vec<String>,
}

/// A worktree removed on drop.
struct Worktree<'a> {
    sh: &'a Shell,
    path: PathBuf,
}

impl Drop for Worktree<'_> {
    fn drop(&mut self) {
        let path = &self.path;
        let _ = cmd!(self.sh, "git worktree remove --force {path}")
            .quiet()
            .ignore_stderr()
            .run();
        let _ = fs::remove_dir_all(path);
    }
}

pub fn rebuild(sh: &Shell, release_dir: &Path, version: &str) -> anyhow::Result<Rebuilt> {
    let manifest = Manifest::from_json(
        &fs::read_to_string(release_dir.join(manifest::JSON_NAME))
            .context("cannot read the release's manifest.json")?,
    )?;
    if manifest.git_commit == "none" || manifest.git_dirty {
        bail!(
            "{version} was packaged from {}, so it cannot be rebuilt from a commit; only a release of a clean commit can be reproduced",
            if manifest.git_dirty {
                "a dirty tree"
            } else {
                "outside git"
            }
        );
    }
    let rustc = cmd!(sh, "rustc --version").quiet().read()?;
    if rustc.trim() != manifest.rustc {
        bail!(
            "{version} was built with {:?}, this machine has {rustc:?}; install that toolchain (rustup toolchain install <version>) and run again with RUSTUP_TOOLCHAIN set to it",
            manifest.rustc
        );
    }
    let commit = &manifest.git_commit;
    let object = format!("{commit}^{{commit}}");
    cmd!(sh, "git cat-file -e {object}")
        .quiet()
        .ignore_stderr()
        .run()
        .with_context(|| {
            format!("commit {commit} is not in this checkout; fetch it (git fetch) and run again")
        })?;
    let scratch = project_root().join("target/rebuild");
    fs::create_dir_all(&scratch)?;
    durable::remove_stale_partials(&scratch, "")?;
    let path = durable::temporary_name(&scratch.join(format!("worktree-{version}")));
    let _ = fs::remove_dir_all(&path);
    cmd!(sh, "git worktree prune").quiet().run()?;
    cmd!(sh, "git worktree add --quiet --detach {path} {commit}")
        .quiet()
        .run()
        .context("cannot make a worktree of the recorded commit")?;
    let worktree = Worktree {
        sh,
        path: path.clone(),
    };
    let dist = worktree.path.join("dist-rebuilt");
    eprintln!(
        "rebuilding {version} from {commit} in {} (a release build: minutes when cold)",
        worktree.path.display()
    );
    // Its own target folder, kept between rebuilds: the recorded commit's xtask must not
    // replace this one's, and the release build stays incremental next time.
    let target = scratch.join("target");
    let mut command =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .args(["xtask", "package", version, "--dist"])
        .arg(&dist)
        .current_dir(&worktree.path)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("SAULPOS_SIGNING_KEY")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_MANIFEST_DIR");
    let status = command
        .status()
        .context("cannot run cargo xtask package in the worktree")?;
    if !status.success() {
        bail!("packaging {commit} again failed (its output is above)");
    }
    let rebuilt_dir = dist.join(version);
    let mut differing = Vec::new();
    let mut compared = Vec::new();
    // A signature cannot be made again without the key, and the payloads and SHA256SUMS of a
    // signed release carry one: those are compared only for an unsigned release.
    let signed = release_dir.join(signature::SIG).is_file();
    let mut names: Vec<String> = sums::listed_files(release_dir)?
        .into_iter()
        .chain([signature::SUMS.to_owned()])
        .filter(|name| {
            !(signed
                && (name == signature::SUMS
                    || name.starts_with("saulpos-") && !name.starts_with("saulpos-server-")))
        })
        .collect();
    names.sort();
    for name in &names {
        let original = fs::read(release_dir.join(name))?;
        match fs::read(rebuilt_dir.join(name)) {
            Ok(again) if again == original => compared.push(name.clone()),
            Ok(_) => differing.push(name.clone()),
            Err(_) => differing.push(format!("{name} (the rebuild wrote none)")),
        }
    }
    // Inside the archive, which files differ.
    let archive = &manifest.archive.name;
    if differing.iter().any(|name| name == archive) {
        let rebuilt =
            Manifest::from_json(&fs::read_to_string(rebuilt_dir.join(manifest::JSON_NAME))?)?;
        for file in &manifest.files {
            let other = rebuilt.files.iter().find(|other| other.path == file.path);
            if other != Some(file) {
                differing.push(format!("{archive}: {}", file.path));
            }
        }
    }
    eprintln!(
        "compared {} files with the rebuild{}",
        compared.len() + differing.len(),
        if signed {
            " (not the payloads and SHA256SUMS, which carry the signature)"
        } else {
            ""
        }
    );
    Ok(Rebuilt { differing })
}
