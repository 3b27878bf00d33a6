//! The plan of a cut and every check it must pass first, all run in one pass, each failure
//! naming its fix. Nothing here changes the repository or the remote: the remote is read with
//! `git ls-remote`, the signing key tried on a file outside the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use semver::Version;

use crate::cut::notes::{self, Commit};
use crate::cut::repo::Repo;
use crate::cut::version::{self, Bump};
use crate::flags;
use crate::release::{dist, release_version, signature};
use crate::util::utc;

/// Where the release managers' public keys live in the repository.
pub const ALLOWED_SIGNERS: &str = "release/allowed_signers";

/// One check and its outcome.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

/// What a cut would do.
pub struct Plan {
    pub version: Version,
    pub tag: String,
    pub last: Option<Version>,
    pub head: String,
    /// The remote branch's commit, "" when the remote has no such branch, `None` offline.
    pub lease: Option<String>,
    pub sign_key: Option<PathBuf>,
    pub notes: String,
    pub checks: Vec<Check>,
}

impl Plan {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|check| check.ok)
    }
}

/// Checks everything a cut needs, in one pass.
pub fn make(flags: &flags::Release, repo: &Repo) -> anyhow::Result<Plan> {
    let mut checks = Vec::new();
    let mut check = |name: &'static str, outcome: Result<String, String>| {
        let (ok, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        checks.push(Check { name, ok, detail });
    };
    // The slowest check runs beside the others.
    let metadata = start_metadata(&repo.root);
    let head = repo
        .resolve("HEAD")
        .context("the repository has no commit yet; commit first")?;
    let tags = version::release_tags(&repo.read(&["tag", "-l", "v*"])?);
    let last = tags.first().cloned();
    let version = match (&flags.version, flags.bump) {
        (Some(text), _) => release_version::parse(text)?,
        (None, Some(bump)) => version::next(last.as_ref(), bump, flags.pre.as_deref(), &tags),
        (None, None) => {
            anyhow::bail!("give the version to cut (e.g. 2.1.0) or --bump major|minor|patch")
        }
    };
    let tag = format!("v{version}");

    // The tree and HEAD.
    let status = repo.read(&["status", "--porcelain", "--untracked-files=all"])?;
    check(
        "clean tree",
        if status.is_empty() {
            Ok("no changes, no untracked files".to_owned())
        } else {
            let shown: Vec<&str> = status.lines().take(5).collect();
            Err(format!(
                "the tree has changes ({}): commit or stash them (git stash -u for untracked files)",
                shown.join("; ")
            ))
        },
    );
    let on = repo.read(&["symbolic-ref", "-q", "--short", "HEAD"]).ok();
    check(
        "on the release branch",
        match on.as_deref() {
            Some(branch) if branch == flags.branch => Ok(format!("HEAD is {branch}")),
            Some(branch) => Err(format!(
                "HEAD is on {branch:?}, and releases are cut from {:?}: git switch {} (or --branch {branch})",
                flags.branch, flags.branch
            )),
            None => Err(format!(
                "HEAD is detached at {}: git switch {}",
                &head[..7],
                flags.branch
            )),
        },
    );
    let in_progress: Vec<&str> = [
        ("MERGE_HEAD", "a merge (git merge --abort)"),
        ("rebase-merge", "a rebase (git rebase --abort)"),
        ("rebase-apply", "a rebase or am (git rebase --abort)"),
        (
            "CHERRY_PICK_HEAD",
            "a cherry-pick (git cherry-pick --abort)",
        ),
        ("REVERT_HEAD", "a revert (git revert --abort)"),
        ("BISECT_LOG", "a bisect (git bisect reset)"),
    ]
    .into_iter()
    .filter(|(name, _)| repo.git_dir.join(name).exists())
    .map(|(_, what)| what)
    .collect();
    check(
        "no operation in progress",
        if in_progress.is_empty() {
            Ok("no merge, rebase, cherry-pick, revert or bisect".to_owned())
        } else {
            Err(format!(
                "{} is in progress: finish or abort it",
                in_progress.join(", ")
            ))
        },
    );

    // The remote: read, never changed.
    let branch_ref = format!("refs/heads/{}", flags.branch);
    let tag_ref = format!("refs/tags/{tag}");
    let mut lease = None;
    let mut remote_tag = None;
    if flags.offline {
        check(
            "remote read",
            Ok("skipped (--offline): the push is left for a later --execute".to_owned()),
        );
    } else {
        match repo.ls_remote(&flags.remote, &[&branch_ref, &tag_ref]) {
            Ok(refs) => {
                let find = |name: &str| {
                    refs.iter()
                        .find(|(listed, _)| listed == name)
                        .map(|(_, id)| id.clone())
                };
                let remote_branch = find(&branch_ref);
                remote_tag = find(&tag_ref);
                check(
                    "remote read",
                    Ok(format!(
                        "{} {} is at {}",
                        flags.remote,
                        flags.branch,
                        remote_branch
                            .as_deref()
                            .map(|id| &id[..7])
                            .unwrap_or("nothing yet")
                    )),
                );
                check(
                    "not behind the remote",
                    match &remote_branch {
                        None => Ok(format!("{} has no {} yet", flags.remote, flags.branch)),
                        Some(id) if *id == head => Ok("up to date".to_owned()),
                        Some(id) if repo.succeeds(&["merge-base", "--is-ancestor", id, &head]) => {
                            Ok("ahead of the remote".to_owned())
                        }
                        Some(id) => Err(format!(
                            "{} is behind {}/{} (at {}, which this checkout lacks or has not merged): git pull --ff-only {} {}, then run again",
                            flags.branch,
                            flags.remote,
                            flags.branch,
                            &id[..7],
                            flags.remote,
                            flags.branch
                        )),
                    },
                );
                lease = Some(remote_branch.unwrap_or_default());
            }
            Err(error) => check("remote read", Err(format!("{error:#}"))),
        }
    }

    // The version.
    let local_tag = repo.resolve(&tag_ref);
    check(
        "the tag is new",
        match (&local_tag, &remote_tag) {
            (Some(_), _) => Err(format!(
                "the tag {tag} exists here already: {version} is cut; pick the next version"
            )),
            (None, Some(_)) => Err(format!(
                "the tag {tag} exists on {} only: {version} was cut elsewhere; git fetch --tags {} and pick the next version",
                flags.remote, flags.remote
            )),
            (None, None) => Ok(format!("{tag} is neither here nor on the remote")),
        },
    );
    check(
        "above the last release",
        match &last {
            Some(last) if version <= *last => Err(format!(
                "{version} is not above the last release v{last} (semver order); give a higher version, or --bump"
            )),
            Some(last) => Ok(format!("the last release is v{last}")),
            None => Ok("the first release tag".to_owned()),
        },
    );
    let release_dir = dist::root().join(version.to_string());
    check(
        "dist/ is free",
        if release_dir.exists() {
            Err(format!(
                "{} exists (another commit's release, or one never shipped): remove it, or pick another version",
                release_dir.display()
            ))
        } else {
            Ok(format!("{} does not exist yet", release_dir.display()))
        },
    );
    let metadata = metadata.and_then(|child| child.wait_with_output());
    check(
        "Cargo.lock is current",
        match metadata {
            Ok(output) if output.status.success() => {
                Ok("cargo metadata --locked passes".to_owned())
            }
            Ok(output) => Err(format!(
                "cargo metadata --locked fails: {}; run cargo update -w, commit Cargo.lock",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => Err(format!("cannot run cargo metadata: {error}")),
        },
    );

    // The key.
    let allowed = repo.root.join(ALLOWED_SIGNERS);
    let sign_key = signature::signing_key(flags.sign_key.as_deref());
    check(
        "signing key",
        match (&sign_key, allowed.is_file()) {
            (Err(error), _) => Err(format!("{error:#}")),
            (Ok(None), false) => Ok(format!(
                "none: the tag and the release are unsigned (no {ALLOWED_SIGNERS}, no --sign-key)"
            )),
            (Ok(None), true) => Err(format!(
                "{ALLOWED_SIGNERS} exists, so the tag must be signed: give --sign-key FILE (or set SAULPOS_SIGNING_KEY)"
            )),
            (Ok(Some(key)), false) => Err(format!(
                "{} would sign, but the repository has no {ALLOWED_SIGNERS} to check the tag against: add `<you>@saulpos <type> <key>` for it and commit that",
                key.display()
            )),
            (Ok(Some(key)), true) => key_can_sign(key, &allowed),
        },
    );

    // The bump covers what changed.
    let since = last.as_ref().map(|last| format!("v{last}"));
    let range = match &since {
        Some(since) => format!("{since}..HEAD"),
        None => "HEAD".to_owned(),
    };
    let log = repo.read(&["log", "--format=%H%x1f%s%x1f%b%x1e", &range])?;
    let commits: Vec<Commit> = log
        .split('\u{1e}')
        .filter_map(|record| {
            let mut fields = record.trim_start_matches('\n').splitn(3, '\u{1f}');
            let id = fields.next()?.trim().to_owned();
            (!id.is_empty()).then(|| Commit {
                id,
                subject: fields.next().unwrap_or_default().to_owned(),
                body: fields.next().unwrap_or_default().to_owned(),
            })
        })
        .collect();
    // Added since the last release tag; for the first one, all there are.
    let listing: Vec<&str> = match &since {
        Some(since) => vec!["diff", "--name-only", "--diff-filter=A", since, "HEAD"],
        None => vec!["ls-tree", "-r", "--name-only", "HEAD"],
    };
    let migrations: Vec<String> = repo
        .read(&[listing.as_slice(), &["--", "server/migrations"]].concat())?
        .lines()
        .map(str::to_owned)
        .collect();
    let breaking: Vec<&Commit> = commits.iter().filter(|commit| commit.breaking()).collect();
    let needed = version::needed(last.as_ref(), !breaking.is_empty(), !migrations.is_empty());
    let step = version::step(last.as_ref(), &version);
    check(
        "the bump covers the changes",
        if step >= needed {
            Ok(format!(
                "{} breaking commit(s), {} new migration(s): a {needed:?} bump or more is needed",
                breaking.len(),
                migrations.len()
            )
            .to_lowercase())
        } else {
            let why = match breaking.first() {
                Some(commit) if needed != Bump::Minor || migrations.is_empty() => {
                    format!("{} is marked as breaking", &commit.id[..7])
                }
                _ => format!("the release adds the migration {}", migrations[0]),
            };
            Err(format!(
                "{why}, which needs a {} bump; {version} is only a {} one after v{}: give a higher version",
                format!("{needed:?}").to_lowercase(),
                format!("{step:?}").to_lowercase(),
                last.as_ref().map(ToString::to_string).unwrap_or_default()
            ))
        },
    );

    let date = utc::rfc3339(
        repo.read(&["log", "-1", "--format=%ct", "HEAD"])?
            .parse()
            .unwrap_or_default(),
    )[..10]
        .to_owned();
    let notes = match &flags.notes_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--notes-file {}: cannot read it", path.display()))?;
            let mut text = if text.starts_with("## [") {
                text
            } else {
                format!("## [{version}] - {date}\n\n{text}")
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
        None => notes::render(&notes::Range {
            version: &version.to_string(),
            date: &date,
            since: since.as_deref(),
            head: &head,
            commits: &commits,
            migrations: &migrations,
        }),
    };
    Ok(Plan {
        version,
        tag,
        last,
        head,
        lease,
        sign_key: sign_key.ok().flatten(),
        notes,
        checks,
    })
}

/// `cargo metadata --locked`, offline and for this host only (a check needs no download of
/// other platforms' crates), started in the background.
fn start_metadata(root: &Path) -> std::io::Result<std::process::Child> {
    let host = if cfg!(all(target_os = "linux", target_env = "gnu")) {
        format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
    } else {
        Command::new("rustc")
            .arg("-vV")
            .output()
            .ok()
            .and_then(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
            })
            .unwrap_or_else(|| "x86_64-unknown-linux-gnu".to_owned())
    };
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &host])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Whether `key` signs (tried on a file outside the repository) and `allowed` lists its public
/// key.
fn key_can_sign(key: &Path, allowed: &Path) -> Result<String, String> {
    let public = public_key(key)?;
    let listed = std::fs::read_to_string(allowed).unwrap_or_default();
    let trusted = listed.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields
            .windows(2)
            .any(|pair| format!("{} {}", pair[0], pair[1]) == public)
    });
    if !trusted {
        return Err(format!(
            "{} is not in {ALLOWED_SIGNERS}: add `<you>@saulpos {public}` there and commit it (or sign with a key it lists)",
            key.display()
        ));
    }
    let scratch = std::env::temp_dir().join(format!("saulpos-release-sign-{}", std::process::id()));
    std::fs::write(&scratch, b"can this key sign?").map_err(|error| error.to_string())?;
    let result = signature::sign(&scratch, key);
    let _ = std::fs::remove_file(&scratch);
    let _ = std::fs::remove_file(scratch.with_extension("sig"));
    let mut sig = scratch.into_os_string();
    sig.push(".sig");
    let _ = std::fs::remove_file(sig);
    result
        .map(|()| format!("{} signs and is in {ALLOWED_SIGNERS}", key.display()))
        .map_err(|error| format!("{} cannot sign: {error:#}", key.display()))
}

/// `<type> <base64>` of a key file: the file itself for a `.pub`, else `ssh-keygen -y`.
fn public_key(key: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(key).map_err(|error| error.to_string())?;
    let public = if text.contains("PRIVATE KEY") {
        let output = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run ssh-keygen: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "ssh-keygen -y cannot read {} (a passphrase? then give its .pub with the key in ssh-agent)",
                key.display()
            ));
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        text
    };
    let fields: Vec<&str> = public.split_whitespace().collect();
    match fields.as_slice() {
        [kind, base64, ..] => Ok(format!("{kind} {base64}")),
        _ => Err(format!("{} holds no public key", key.display())),
    }
}
