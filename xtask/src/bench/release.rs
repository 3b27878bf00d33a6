//! `cargo xtask bench release`: the cut's own steps (the checks, the notes, the release commit,
//! the signed tag and its verify-tag, the development commit, the atomic leased push to a bare
//! repository on disk; the package step left out, it is `bench package`'s) beside the plain
//! `git commit && git tag -s && git push --atomic` on the same repository, in turns.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench::{Row, fresh_dir, median, note, seconds, timed};
use crate::cut::journal::Journal;
use crate::cut::plan::{self, ALLOWED_SIGNERS};
use crate::cut::repo::Repo;
use crate::cut::steps;
use crate::flags;
use crate::project_root;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run git {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub fn run(what: &flags::BenchRelease) -> anyhow::Result<Vec<Row>> {
    let work = project_root().join("target/bench/release");
    fresh_dir(&work)?;
    let repo_dir = work.join("repo");
    let remote = work.join("remote.git");
    note("cloning the workspace's history into a scratch repository with a bare remote");
    git(
        &work,
        &[
            "clone",
            "-q",
            "--no-local",
            project_root().to_str().unwrap(),
            "repo",
        ],
    )?;
    git(&work, &["init", "-q", "--bare", "-b", "main", "remote.git"])?;
    git(&repo_dir, &["checkout", "-q", "-B", "main"])?;
    git(
        &repo_dir,
        &["remote", "set-url", "origin", remote.to_str().unwrap()],
    )?;
    for (key, value) in [
        ("user.name", "Bench"),
        ("user.email", "bench@example.invalid"),
    ] {
        git(&repo_dir, &["config", key, value])?;
    }
    let key = work.join("release-key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key)
        .status()?;
    if !made.success() {
        bail!("ssh-keygen cannot make a key");
    }
    let public = fs::read_to_string(key.with_extension("pub"))?;
    let fields: Vec<&str> = public.split_whitespace().collect();
    fs::create_dir_all(repo_dir.join("release"))?;
    fs::write(
        repo_dir.join(ALLOWED_SIGNERS),
        format!("bench@saulpos {} {}\n", fields[0], fields[1]),
    )?;
    git(&repo_dir, &["add", ALLOWED_SIGNERS])?;
    git(
        &repo_dir,
        &["commit", "-q", "-m", "chore: the bench's release key"],
    )?;
    git(&repo_dir, &["push", "-q", "origin", "main"])?;

    let repo = Repo::open(&repo_dir)?;
    let signing = format!("user.signingKey={}", key.display());
    let (mut ours, mut plain, mut checks) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=what.runs {
        note(&format!(
            "cut and plain sequence, run {run} of {}",
            what.runs
        ));
        // A change to release each time, as a real cut has.
        fs::write(
            repo_dir.join("docs/bench-release.md"),
            format!("run {run}\n"),
        )?;
        git(&repo_dir, &["add", "docs/bench-release.md"])?;
        git(
            &repo_dir,
            &["commit", "-q", "-m", &format!("docs: bench run {run}")],
        )?;

        let flags = flags::Release {
            version: Some(format!("90.{run}.0")),
            bump: None,
            pre: None,
            execute: true,
            remote: "origin".to_owned(),
            branch: "main".to_owned(),
            offline: false,
            sign_key: Some(key.clone()),
            notes_file: None,
            status: false,
            abort: false,
            json: false,
        };
        let ((), took) = timed(|| {
            let (planned, took) = timed(|| plan::make(&flags, &repo))?;
            checks.push(took);
            if !planned.ready() {
                let failed: Vec<String> = planned
                    .checks
                    .iter()
                    .filter(|check| !check.ok)
                    .map(|check| format!("{}: {}", check.name, check.detail))
                    .collect();
                bail!("the bench's cut would be refused: {}", failed.join("; "));
            }
            let mut journal = Journal {
                version: planned.version.to_string(),
                tag: planned.tag.clone(),
                remote: flags.remote.clone(),
                branch: flags.branch.clone(),
                base: planned.head.clone(),
                lease: planned.lease.clone().unwrap_or_default(),
                offline: false,
                sign_key: planned.sign_key.clone(),
                notes: planned.notes.clone(),
                ..Journal::default()
            };
            journal.save(&repo.git_dir)?;
            steps::before_package(&repo, &mut journal)?;
            // The package step is timed by `bench package`.
            journal.packaged = true;
            steps::after_package(&repo, &mut journal, &flags)
        })?;
        ours.push(took);

        // The plain sequence on the same repository: a change, a commit, a signed tag, a push.
        fs::write(repo_dir.join("CHANGELOG.md"), format!("plain {run}\n"))?;
        let tag = format!("plain-{run}");
        let ((), took) = timed(|| {
            git(
                &repo_dir,
                &["commit", "-q", "-am", &format!("release: plain {run}")],
            )?;
            git(
                &repo_dir,
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &signing,
                    "tag",
                    "-s",
                    "-m",
                    "notes",
                    &tag,
                ],
            )?;
            git(
                &repo_dir,
                &["push", "-q", "--atomic", "origin", "main", &tag],
            )?;
            Ok(())
        })?;
        plain.push(took);
    }
    // The one check the plain sequence has no counterpart for, alone: the floor of the checks.
    let mut metadata = Vec::new();
    for _ in 0..what.runs {
        let ((), took) = timed(|| {
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["metadata", "--locked", "--offline", "--format-version", "1"])
                .args([
                    "--filter-platform",
                    &format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
                ])
                .current_dir(&repo_dir)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                bail!("cargo metadata --locked failed in the bench's clone");
            }
            Ok(())
        })?;
        metadata.push(took);
    }
    let metadata = median(metadata);
    let (ours, plain, checks) = (median(ours), median(plain), median(checks));
    let ratio = ours.as_secs_f64() / plain.as_secs_f64().max(f64::EPSILON);
    Ok(vec![
        Row::figure(
            format!("the cut's checks and notes alone (median of {})", what.runs),
            seconds(checks),
        ),
        Row::figure(
            format!(
                "cargo metadata --locked --offline alone, the checks' floor (median of {})",
                what.runs
            ),
            seconds(metadata),
        ),
        Row::figure(
            format!(
                "the cut without the package: checks, notes, commit, signed tag, verify-tag, dev commit, atomic push (median of {})",
                what.runs
            ),
            seconds(ours),
        ),
        Row::figure(
            format!(
                "git commit && git tag -s && git push --atomic (median of {})",
                what.runs
            ),
            seconds(plain),
        ),
        Row::goal("cut / plain", format!("{ratio:.2}"), "<= 1.5", ratio <= 1.5),
    ])
}
