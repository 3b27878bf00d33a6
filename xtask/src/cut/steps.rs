//! The steps of a cut, each of which first checks whether its result is already there (a run
//! killed after it did its work but before the journal said so is adopted, never redone), and
//! `--status` and `--abort`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use semver::Version;
use serde_json::json;
use xshell::Shell;

use crate::cut::journal::{self, Journal};
use crate::cut::notes;
use crate::cut::plan::ALLOWED_SIGNERS;
use crate::cut::repo::Repo;
use crate::cut::version;
use crate::flags;
use crate::release::{dist, package::RELEASE_NOTES};

/// The steps, in order.
pub const NAMES: [&str; 5] = [
    "commit CHANGELOG.md and the version (release: X.Y.Z)",
    "the annotated tag vX.Y.Z, signed and verified",
    "package X.Y.Z from the tagged commit, and verify it",
    "commit the next development version",
    "push the branch and the tag together (git push --atomic, leased)",
];

/// The lease of an offline cut, taken when the push is.
pub const UNKNOWN: &str = "unknown";

/// The files the cut's commits change.
const PATHS: [&str; 3] = ["CHANGELOG.md", "Cargo.toml", "Cargo.lock"];

fn release_subject(journal: &Journal) -> String {
    format!("release: {}", journal.version)
}

fn development_subject(journal: &Journal) -> String {
    let released = Version::parse(&journal.version).expect("the journal's version is semver");
    format!(
        "chore(release): start {} after {}",
        version::development_after(&released),
        journal.version
    )
}

/// Carries the cut out from wherever it stands.
pub fn execute(
    repo: &Repo,
    mut journal: Journal,
    flags: &flags::Release,
    sh: &Shell,
) -> anyhow::Result<()> {
    before_package(repo, &mut journal)?;
    package(repo, &mut journal, sh)?;
    after_package(repo, &mut journal, flags)
}

/// Steps 1 and 2: the release commit and the tag.
pub fn before_package(repo: &Repo, journal: &mut Journal) -> anyhow::Result<()> {
    clear_stale_locks(repo, journal);
    // A killed run may have moved the branch before it brought the files along.
    if journal.release_commit.is_some() {
        repo.sync_paths(&PATHS)?;
    }
    commit_release(repo, journal)?;
    tag(repo, journal)
}

/// Steps 4 and 5: the development version and the push; the journal goes once pushed.
pub fn after_package(
    repo: &Repo,
    journal: &mut Journal,
    flags: &flags::Release,
) -> anyhow::Result<()> {
    commit_development(repo, journal)?;
    if flags.offline {
        eprintln!(
            "release: {} is committed, tagged and packaged here; the push is left (--offline): run `cargo xtask release --execute` when {} is reachable",
            journal.version, journal.remote
        );
        print_outcome(journal, flags.json, "push pending");
        return Ok(());
    }
    push(repo, journal, flags)?;
    Journal::remove(&repo.git_dir)?;
    eprintln!(
        "release: {} is released: {} and {} are on {}; dist/{} is packaged and verified",
        journal.version, journal.branch, journal.tag, journal.remote, journal.version
    );
    print_outcome(journal, flags.json, "released");
    Ok(())
}

fn print_outcome(journal: &Journal, json_out: bool, outcome: &str) {
    if json_out {
        let out = json!({
            "outcome": outcome,
            "version": journal.version,
            "tag": journal.tag,
            "commit": journal.release_commit,
            "development_commit": journal.bump_commit,
            "pushed": journal.pushed,
            "next": (outcome != "released").then_some("cargo xtask release --execute"),
        });
        println!("{out}");
    }
}

/// A killed git leaves `<ref>.lock` or `index.lock` behind, and every later git refuses to run.
/// Under the cut's own lock, such a file of its refs or of the index that no process holds open
/// is stale: removed, and said so.
fn clear_stale_locks(repo: &Repo, journal: &Journal) {
    for name in [
        format!("refs/heads/{}.lock", journal.branch),
        format!("refs/tags/{}.lock", journal.tag),
        "index.lock".to_owned(),
    ] {
        let path = repo.git_dir.join(&name);
        if path.exists() && !held_open(&path) {
            eprintln!("release: removing {} left by a killed git", path.display());
            let _ = fs::remove_file(path);
        }
    }
    let _ = fs::remove_file(journal::dir(&repo.git_dir).join("index.lock"));
}

/// Whether any process has `path` open (a git at work holds its lock file open).
fn held_open(path: &std::path::Path) -> bool {
    let Ok(processes) = fs::read_dir("/proc") else {
        return true;
    };
    processes.flatten().any(|process| {
        fs::read_dir(process.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

/// Step 1: CHANGELOG.md with the notes on top, and the workspace at the released version.
fn commit_release(repo: &Repo, journal: &mut Journal) -> anyhow::Result<()> {
    if journal.release_commit.is_some() {
        return Ok(());
    }
    let branch_ref = format!("refs/heads/{}", journal.branch);
    let head = repo
        .resolve(&branch_ref)
        .context("the release branch is gone")?;
    if head != journal.base {
        // Made by a run killed before it could write the journal: adopt it.
        if repo.parent(&head).as_deref() == Some(journal.base.as_str())
            && repo.subject(&head).as_deref() == Some(release_subject(journal).as_str())
        {
            journal.release_commit = Some(head);
            journal.save(&repo.git_dir)?;
            repo.sync_paths(&PATHS)?;
            return Ok(());
        }
        bail!(
            "{} moved since the cut began (from {} to {}); `cargo xtask release --abort`, then cut again",
            journal.branch,
            &journal.base[..7],
            &head[..7]
        );
    }
    let changelog = repo
        .file_at(&journal.base, "CHANGELOG.md")
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let files = [
        (
            "CHANGELOG.md",
            notes::changelog_with(changelog.as_deref(), &journal.notes).into_bytes(),
        ),
        (
            "Cargo.toml",
            workspace_version(repo, &journal.base, &journal.version)?,
        ),
        (
            "Cargo.lock",
            lock_version(repo, &journal.base, &journal.version)?,
        ),
    ];
    let commit = commit_on(
        repo,
        journal,
        &journal.base,
        &files,
        &release_subject(journal),
    )?;
    journal.release_commit = Some(commit);
    journal.save(&repo.git_dir)
}

/// A commit of `files` on `parent` with `subject`, the branch moved onto it (compare-and-swap)
/// and the files brought along; its id.
fn commit_on(
    repo: &Repo,
    journal: &Journal,
    parent: &str,
    files: &[(&str, Vec<u8>)],
    subject: &str,
) -> anyhow::Result<String> {
    let commit = repo.commit_files(
        parent,
        files,
        &format!("{subject}\n"),
        &journal::dir(&repo.git_dir).join("index"),
    )?;
    repo.advance(&journal.branch, &commit, parent, &PATHS)?;
    eprintln!("release: committed {subject} ({})", &commit[..7]);
    Ok(commit)
}

/// Cargo.toml at `commit` with the workspace version set to `version`.
fn workspace_version(repo: &Repo, commit: &str, version: &str) -> anyhow::Result<Vec<u8>> {
    let text = String::from_utf8(
        repo.file_at(commit, "Cargo.toml")
            .context("no Cargo.toml")?,
    )?;
    let mut out = String::new();
    let mut in_package = false;
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with('[') {
            in_package = line.trim_end() == "[workspace.package]";
        }
        if in_package && !done && line.starts_with("version = ") {
            out.push_str(&format!("version = \"{version}\"\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        bail!("Cargo.toml has no version in [workspace.package]: the cut cannot set the version");
    }
    Ok(out.into_bytes())
}

/// Cargo.lock at `commit` with the workspace's own packages (those without a source) at
/// `version`, as cargo would write it.
fn lock_version(repo: &Repo, commit: &str, version: &str) -> anyhow::Result<Vec<u8>> {
    let text = String::from_utf8(
        repo.file_at(commit, "Cargo.lock")
            .context("no Cargo.lock")?,
    )?;
    let mut out = String::new();
    for block in text.split_inclusive("\n\n") {
        let local = block.starts_with("[[package]]") && !block.contains("\nsource = ");
        if !local {
            out.push_str(block);
            continue;
        }
        for line in block.split_inclusive('\n') {
            if line.starts_with("version = ") {
                out.push_str(&format!("version = \"{version}\"\n"));
            } else {
                out.push_str(line);
            }
        }
    }
    Ok(out.into_bytes())
}

/// Step 2: the annotated tag on the release commit, its body the notes byte for byte, signed
/// with the release key when there is one, then verified against release/allowed_signers.
fn tag(repo: &Repo, journal: &Journal) -> anyhow::Result<()> {
    let commit = journal.release_commit.as_deref().expect("step 1 is done");
    let tag_ref = format!("refs/tags/{}", journal.tag);
    let allowed = repo.root.join(ALLOWED_SIGNERS);
    if let Some(existing) = repo.resolve(&format!("{tag_ref}^{{commit}}")) {
        if existing != commit {
            bail!(
                "the tag {} exists and names {}, not the release commit {}; nothing more was done: look at it, then --abort",
                journal.tag,
                &existing[..7],
                &commit[..7]
            );
        }
        return verify_tag(repo, journal, &allowed);
    }
    let notes = Journal::notes_path(&repo.git_dir);
    let notes_arg = notes.display().to_string();
    let mut args: Vec<String> = Vec::new();
    if let Some(key) = &journal.sign_key {
        // For this command only: the user's git config is never written.
        args.extend([
            "-c".to_owned(),
            "gpg.format=ssh".to_owned(),
            "-c".to_owned(),
            format!("user.signingKey={}", std::path::absolute(key)?.display()),
        ]);
    }
    args.extend([
        "tag".to_owned(),
        if journal.sign_key.is_some() {
            "-s"
        } else {
            "-a"
        }
        .to_owned(),
        "--cleanup=verbatim".to_owned(),
        "-F".to_owned(),
        notes_arg,
        journal.tag.clone(),
        commit.to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    repo.read(&args)
        .with_context(|| format!("cannot make the tag {}", journal.tag))?;
    eprintln!(
        "release: tagged {} {}",
        journal.tag,
        if journal.sign_key.is_some() {
            "(signed)"
        } else {
            "(annotated, unsigned)"
        }
    );
    verify_tag(repo, journal, &allowed).inspect_err(|_| {
        // A tag that does not verify is never left for a push to find.
        let _ = repo.read(&["tag", "-d", &journal.tag]);
    })
}

fn verify_tag(repo: &Repo, journal: &Journal, allowed: &std::path::Path) -> anyhow::Result<()> {
    if !allowed.is_file() {
        return Ok(());
    }
    let setting = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
    let output = repo.output(&["-c", &setting, "verify-tag", &journal.tag])?;
    if !output.status.success() {
        bail!(
            "git verify-tag {} fails against {ALLOWED_SIGNERS}: {}; the tag was removed",
            journal.tag,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!(
        "release: git verify-tag {}: good signature by a key in {ALLOWED_SIGNERS}",
        journal.tag
    );
    Ok(())
}

/// Step 3: `package` from the tagged commit (HEAD now), with the notes as RELEASE-NOTES.md,
/// and `verify`.
fn package(repo: &Repo, journal: &mut Journal, sh: &Shell) -> anyhow::Result<()> {
    if journal.packaged {
        return Ok(());
    }
    let commit = journal.release_commit.clone().expect("step 1 is done");
    let release_dir = dist::root().join(&journal.version);
    if release_dir.exists() {
        let recorded = dist::recorded_commit(&release_dir);
        if recorded.as_deref() != Some(commit.as_str()) {
            bail!(
                "{} holds another commit's release ({}); remove it if it was never shipped, then run --execute again",
                release_dir.display(),
                recorded.as_deref().unwrap_or("unreadable")
            );
        }
        // Packaged by a run killed before it could say so: verified below, not packaged again.
    } else {
        if repo.resolve("HEAD").as_deref() != Some(commit.as_str()) {
            bail!(
                "HEAD is not the release commit {}; the package must come from it: git switch {}, then run --execute again",
                &commit[..7],
                journal.branch
            );
        }
        flags::Package {
            version: journal.version.clone(),
            allow_dirty: false,
            allow_no_git: false,
            sign_key: journal.sign_key.clone(),
            dist: None,
            release_notes: Some(Journal::notes_path(&repo.git_dir)),
            json: false,
        }
        .run(sh)?;
    }
    let allowed = repo.root.join(ALLOWED_SIGNERS);
    flags::Verify {
        version: journal.version.clone(),
        allowed_signers: (allowed.is_file() && journal.sign_key.is_some()).then_some(allowed),
        rebuild: false,
        dist: None,
        json: false,
    }
    .run(sh)
    .with_context(|| format!("{} does not verify", release_dir.display()))?;
    let shipped = fs::read_to_string(release_dir.join(RELEASE_NOTES)).unwrap_or_default();
    if shipped != journal.notes {
        bail!(
            "{} is not the notes of the tag; remove {} and run --execute again",
            release_dir.join(RELEASE_NOTES).display(),
            release_dir.display()
        );
    }
    journal.packaged = true;
    journal.save(&repo.git_dir)
}

/// Step 4: the workspace moves on to the next development version.
fn commit_development(repo: &Repo, journal: &mut Journal) -> anyhow::Result<()> {
    if journal.bump_commit.is_some() {
        return Ok(());
    }
    let release = journal.release_commit.clone().expect("step 1 is done");
    let branch_ref = format!("refs/heads/{}", journal.branch);
    let head = repo
        .resolve(&branch_ref)
        .context("the release branch is gone")?;
    if head != release {
        if repo.parent(&head).as_deref() == Some(release.as_str())
            && repo.subject(&head).as_deref() == Some(development_subject(journal).as_str())
        {
            journal.bump_commit = Some(head);
            journal.save(&repo.git_dir)?;
            return repo.sync_paths(&PATHS);
        }
        bail!(
            "{} moved past the release commit {} to {}; --abort, then cut again",
            journal.branch,
            &release[..7],
            &head[..7]
        );
    }
    let released = Version::parse(&journal.version)?;
    let next = version::development_after(&released).to_string();
    let files = [
        ("Cargo.toml", workspace_version(repo, &release, &next)?),
        ("Cargo.lock", lock_version(repo, &release, &next)?),
    ];
    let commit = commit_on(
        repo,
        journal,
        &release,
        &files,
        &development_subject(journal),
    )?;
    journal.bump_commit = Some(commit);
    journal.save(&repo.git_dir)
}

/// What the remote holds of the cut: its branch's commit and the tag's object.
fn remote_state(
    repo: &Repo,
    journal: &Journal,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let branch_ref = format!("refs/heads/{}", journal.branch);
    let tag_ref = format!("refs/tags/{}", journal.tag);
    let refs = repo.ls_remote(&journal.remote, &[&branch_ref, &tag_ref])?;
    let find = |name: &str| {
        refs.iter()
            .find(|(listed, _)| listed == name)
            .map(|(_, id)| id.clone())
    };
    Ok((find(&branch_ref), find(&tag_ref)))
}

/// Step 5: one atomic push of the branch and the tag, leased on the branch's commit the checks
/// saw; a push that failed or timed out is checked on the remote.
fn push(repo: &Repo, journal: &mut Journal, flags: &flags::Release) -> anyhow::Result<()> {
    let head = journal.bump_commit.clone().expect("step 4 is done");
    let tag_object = repo
        .resolve(&format!("refs/tags/{}", journal.tag))
        .context("the tag is gone")?;
    let (branch_there, tag_there) = remote_state(repo, journal)?;
    if tag_there.as_deref() == Some(tag_object.as_str()) {
        journal.pushed = true;
        return journal.save(&repo.git_dir);
    }
    if tag_there.is_some() {
        bail!(
            "{} holds another tag {} (someone cut {} meanwhile); nothing was pushed: --abort and cut the next version",
            journal.remote,
            journal.tag,
            journal.version
        );
    }
    if journal.lease == UNKNOWN {
        // An offline cut: the remote may be where this one's base came from, or behind it.
        let lease = branch_there.clone().unwrap_or_default();
        if !lease.is_empty()
            && !repo.succeeds(&["merge-base", "--is-ancestor", &lease, &journal.base])
        {
            bail!(
                "{}/{} moved to {}, which this cut does not contain; nothing was pushed: --abort, git pull --ff-only, cut again",
                journal.remote,
                journal.branch,
                &lease[..7.min(lease.len())]
            );
        }
        journal.lease = lease;
        journal.save(&repo.git_dir)?;
    }
    let lease = format!(
        "--force-with-lease=refs/heads/{}:{}",
        journal.branch, journal.lease
    );
    let branch_spec = format!("{head}:refs/heads/{}", journal.branch);
    let tag_spec = format!("refs/tags/{0}:refs/tags/{0}", journal.tag);
    let _ = flags;
    eprintln!(
        "release: pushing {} and {} to {} (atomic)",
        journal.branch, journal.tag, journal.remote
    );
    let output = repo.output(&[
        "push",
        "--atomic",
        "--porcelain",
        &lease,
        &journal.remote,
        &branch_spec,
        &tag_spec,
    ])?;
    if !output.status.success() {
        // A push that timed out may have landed: ask the remote.
        let landed = remote_state(repo, journal)
            .map(|(_, tag)| tag.as_deref() == Some(tag_object.as_str()))
            .unwrap_or(false);
        if !landed {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            bail!(
                "{} refused the push, so neither {} nor {} reached it (atomic): {}\nthe cut stays committed, tagged and packaged here; fix that, then `cargo xtask release --execute` pushes both",
                journal.remote,
                journal.branch,
                journal.tag,
                said.trim()
            );
        }
    }
    journal.pushed = true;
    journal.save(&repo.git_dir)
}

/// `--status`: where the cut under way stands.
pub fn status(repo: &Repo, json_out: bool) -> anyhow::Result<()> {
    let Some(journal) = Journal::load(&repo.git_dir)? else {
        if json_out {
            println!("{}", json!({"cut": null}));
        }
        eprintln!("release: no cut is under way in this repository");
        return Ok(());
    };
    let done = [
        journal.release_commit.is_some(),
        repo.resolve(&format!("refs/tags/{}", journal.tag))
            .is_some(),
        journal.packaged,
        journal.bump_commit.is_some(),
        journal.pushed,
    ];
    if json_out {
        let steps: Vec<_> = NAMES
            .iter()
            .zip(done)
            .map(|(name, done)| json!({"name": name, "state": if done { "done" } else { "pending" }}))
            .collect();
        println!(
            "{}",
            json!({"cut": journal.json(), "steps": steps, "next": "cargo xtask release --execute"})
        );
    }
    eprintln!(
        "release: the cut of {} ({} to {} {}):",
        journal.version, journal.tag, journal.remote, journal.branch
    );
    for (name, done) in NAMES.iter().zip(done) {
        eprintln!("  {} {name}", if done { "done   " } else { "pending" });
    }
    eprintln!(
        "finish it with `cargo xtask release --execute`, or undo it with `cargo xtask release --abort`"
    );
    Ok(())
}

/// `--abort`: what exists only here goes (the tag, the unpushed commits, the package, the
/// journal); a tag that reached the remote stays, reported as released.
pub fn abort(repo: &Repo, flags: &flags::Release) -> anyhow::Result<()> {
    let Some(journal) = Journal::load(&repo.git_dir)? else {
        bail!("no cut is under way in this repository; nothing to abort");
    };
    clear_stale_locks(repo, &journal);
    if !flags.offline {
        let (_, tag_there) = remote_state(repo, &journal).with_context(|| {
            format!(
                "cannot tell whether {} reached {}; nothing was removed (give --offline to abort without asking it)",
                journal.tag, journal.remote
            )
        })?;
        if tag_there.is_some() {
            Journal::remove(&repo.git_dir)?;
            bail!(
                "{} is on {}: {} is released and stays; nothing was removed (the journal is closed)",
                journal.tag,
                journal.remote,
                journal.version
            );
        }
    }
    let tag_ref = format!("refs/tags/{}", journal.tag);
    if let (Some(release), Some(tagged)) = (
        &journal.release_commit,
        repo.resolve(&format!("{tag_ref}^{{commit}}")),
    ) && *release == tagged
    {
        repo.read(&["tag", "-d", &journal.tag])?;
        eprintln!("release: removed the local tag {}", journal.tag);
    }
    let branch_ref = format!("refs/heads/{}", journal.branch);
    let head = repo.resolve(&branch_ref).unwrap_or_default();
    let ours: Vec<&String> = [&journal.release_commit, &journal.bump_commit]
        .into_iter()
        .flatten()
        .collect();
    if ours.iter().any(|commit| **commit == head) {
        repo.advance(&journal.branch, &journal.base, &head, &PATHS)?;
        eprintln!(
            "release: {} is back at {} (the cut's commits removed)",
            journal.branch,
            &journal.base[..7]
        );
    }
    let release_dir: PathBuf = dist::root().join(&journal.version);
    let recorded = dist::recorded_commit(&release_dir);
    if recorded.is_some() && recorded == journal.release_commit {
        fs::remove_dir_all(&release_dir)?;
        eprintln!("release: removed {}", release_dir.display());
    }
    Journal::remove(&repo.git_dir)?;
    eprintln!(
        "release: the cut of {} is aborted; nothing of it is left",
        journal.version
    );
    Ok(())
}
