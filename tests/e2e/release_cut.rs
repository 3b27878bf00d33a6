//! `cargo xtask release`: cutting a version in a real git repository (a snapshot of this
//! workspace) with a bare repository on disk as its remote. The plan changes nothing; the cut
//! pushes the branch and a signed tag together; the notes are the same bytes in CHANGELOG.md,
//! the tag and dist/; refusals name their fix; a refused push lands nothing; a kill at any step
//! is finished by the next `--execute`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::support::{git, make_key, snapshot_workspace, text, workspace_root, xtask_command};

/// The repository the cut tests share (one at a time: its target folder is built once).
struct CutRepo {
    dir: PathBuf,
    base: String,
    keys: PathBuf,
}

fn cut_repo() -> MutexGuard<'static, CutRepo> {
    static REPO: OnceLock<Mutex<CutRepo>> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = workspace_root().join("target/e2e/cut-repo");
        snapshot_workspace(&dir);
        let keys = workspace_root().join(format!("target/e2e/cut-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&keys);
        fs::create_dir_all(&keys).unwrap();
        make_key(&keys, "release");
        make_key(&keys, "stranger");
        // The release managers' keys, in the repository the tags are checked against.
        fs::create_dir_all(dir.join("release")).unwrap();
        fs::copy(
            keys.join("release.allowed_signers"),
            dir.join("release/allowed_signers"),
        )
        .unwrap();
        git(&dir, &["add", "release/allowed_signers"]);
        git(
            &dir,
            &["commit", "-q", "-m", "chore: the release managers' keys"],
        );
        git(&dir, &["tag", "-a", "v2.0.0", "-m", "2.0.0"]);
        let base = git(&dir, &["rev-parse", "HEAD"]).trim().to_owned();
        Mutex::new(CutRepo { dir, base, keys })
    })
    .lock()
    .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CutRepo {
    /// Back to the base commit with only v2.0.0 tagged, and a fresh bare remote holding both.
    fn reset(&self) -> tempfile::TempDir {
        let dir = &self.dir;
        let _ = fs::remove_dir_all(dir.join(".git/saulpos-release"));
        // A test that failed may have left a killed git's lock.
        let _ = fs::remove_file(dir.join(".git/index.lock"));
        git(dir, &["checkout", "-q", "-f", "main"]);
        git(dir, &["reset", "-q", "--hard", &self.base]);
        git(dir, &["clean", "-q", "-fdx", "-e", "target"]);
        for tag in git(dir, &["tag", "-l"]).lines() {
            if tag != "v2.0.0" {
                git(dir, &["tag", "-d", tag]);
            }
        }
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(
            dir,
            &[
                "remote",
                "set-url",
                "origin",
                remote.path().to_str().unwrap(),
            ],
        );
        git(dir, &["push", "-q", "origin", "main", "v2.0.0"]);
        remote
    }

    fn commit(&self, path: &str, content: &str, message: &str) {
        let file = self.dir.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, content).unwrap();
        git(&self.dir, &["add", path]);
        git(&self.dir, &["commit", "-q", "-m", message]);
    }

    /// The commits of a typical release: a feature, a fix, a new migration.
    fn changes(&self) {
        self.commit(
            "docs/cut-notes.md",
            "feature\n",
            "feat(server): a feature for the notes",
        );
        self.commit("docs/cut-notes.md", "fixed\n", "fix: a fix for the notes");
        self.commit(
            "server/migrations/20261201000001_cut_test.sql",
            "-- added by the release cut test\nCREATE TABLE cut_test (id INTEGER PRIMARY KEY);\n",
            "feat(server): a table for the cut test",
        );
    }

    /// A fresh remote and the commits of a typical release: the remote, and the release key.
    fn prepared(&self) -> (tempfile::TempDir, String) {
        let remote = self.reset();
        self.changes();
        (remote, self.key())
    }

    fn key(&self) -> String {
        self.keys.join("release").display().to_string()
    }

    fn release_command(&self, args: &[&str]) -> Command {
        let mut all = vec!["release"];
        all.extend_from_slice(args);
        let mut command = xtask_command(&self.dir, &all);
        command
            .env("GIT_AUTHOR_NAME", "Release Manager")
            .env("GIT_AUTHOR_EMAIL", "rm@example.invalid")
            .env("GIT_COMMITTER_NAME", "Release Manager")
            .env("GIT_COMMITTER_EMAIL", "rm@example.invalid")
            .env_remove("SAULPOS_SIGNING_KEY");
        command
    }

    fn release(&self, args: &[&str]) -> Output {
        self.release_command(args).output().unwrap()
    }

    /// Everything a plan must leave as it was: the refs, the tree, the config, the remote.
    fn state(&self, remote: &Path) -> String {
        let dir = &self.dir;
        format!(
            "{}\n{}\n{}\n{}\n{}",
            git(dir, &["for-each-ref"]),
            git(dir, &["status", "--porcelain", "--untracked-files=all"]),
            fs::read_to_string(dir.join(".git/config")).unwrap(),
            git(remote, &["for-each-ref"]),
            dir.join(".git/saulpos-release/journal.json").exists()
        )
    }
}

#[track_caller]
fn ok(output: &Output) -> String {
    let said = text(output);
    assert!(
        output.status.success(),
        "cargo xtask release failed:\n{said}"
    );
    said
}

#[track_caller]
fn refused(output: &Output) -> String {
    let said = text(output);
    assert!(
        !output.status.success(),
        "cargo xtask release should have failed:\n{said}"
    );
    said
}

/// The tag's body: the message after the headers, without its signature.
fn tag_body(dir: &Path, tag: &str) -> String {
    let object = git(dir, &["cat-file", "tag", tag]);
    let body = object.split_once("\n\n").unwrap().1;
    body.split("-----BEGIN SSH SIGNATURE-----")
        .next()
        .unwrap()
        .to_owned()
}

fn count_release_commits(dir: &Path, version: &str) -> usize {
    git(dir, &["log", "--format=%s", "main"])
        .lines()
        .filter(|subject| *subject == format!("release: {version}"))
        .count()
}

#[test]
fn the_plan_changes_nothing_and_execute_pushes_a_signed_tag_with_the_same_notes_everywhere() {
    let repo = cut_repo();
    let (remote, key) = repo.prepared();

    // A patch over a new migration is refused by the bump rules, naming the migration.
    let said = refused(&repo.release(&["2.0.1", "--sign-key", &key]));
    assert!(
        said.contains("adds the migration server/migrations/20261201000001_cut_test.sql, which needs a minor bump"),
        "{said}"
    );

    // The plan: every check passes, and nothing changes.
    let before = repo.state(remote.path());
    let said = ok(&repo.release(&["2.1.0", "--sign-key", &key]));
    assert!(said.contains("the plan can go ahead"), "{said}");
    assert_eq!(
        repo.state(remote.path()),
        before,
        "the plan changed something"
    );
    let plan: serde_json::Value = serde_json::from_slice(
        &repo
            .release(&["--bump", "minor", "--sign-key", &key, "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(plan["version"], "2.1.0", "{plan}");
    assert_eq!(plan["ready"], true, "{plan}");
    assert_eq!(
        repo.state(remote.path()),
        before,
        "the plan changed something"
    );

    // The cut.
    let said = ok(&repo.release(&["2.1.0", "--execute", "--sign-key", &key]));
    assert!(said.contains("2.1.0 is released"), "{said}");
    let dir = &repo.dir;
    let local_main = git(dir, &["rev-parse", "main"]);
    assert_eq!(git(remote.path(), &["rev-parse", "main"]), local_main);
    assert_eq!(
        git(remote.path(), &["rev-parse", "v2.1.0"]),
        git(dir, &["rev-parse", "v2.1.0"])
    );
    let allowed = format!(
        "gpg.ssh.allowedSignersFile={}",
        dir.join("release/allowed_signers").display()
    );
    let verified = Command::new("git")
        .args(["-c", &allowed, "verify-tag", "v2.1.0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("Good \"git\" signature"),
        "{}",
        text(&verified)
    );
    // The tag is on the release commit; the branch moved on to the next development version.
    assert_eq!(
        git(dir, &["log", "-1", "--format=%s", "v2.1.0"]).trim(),
        "release: 2.1.0"
    );
    assert_eq!(
        git(dir, &["log", "-1", "--format=%s", "main"]).trim(),
        "chore(release): start 2.2.0-dev after 2.1.0"
    );
    assert!(git(dir, &["show", "v2.1.0:Cargo.toml"]).contains("\nversion = \"2.1.0\"\n"));
    assert!(
        fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .contains("\nversion = \"2.2.0-dev\"\n")
    );

    // The notes: the same bytes in the tag, the CHANGELOG section and dist/.
    let body = tag_body(dir, "v2.1.0");
    let shipped = fs::read_to_string(dir.join("dist/2.1.0/RELEASE-NOTES.md")).unwrap();
    assert_eq!(body, shipped);
    let changelog = fs::read_to_string(dir.join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains(&shipped), "{changelog}");
    for part in [
        "## [2.1.0]",
        "`v2.0.0..",
        "3 commits",
        "### Database migrations",
        "- `server/migrations/20261201000001_cut_test.sql`",
        "### Features",
        "- **server:** a feature for the notes",
        "### Fixes",
        "- a fix for the notes",
    ] {
        assert!(shipped.contains(part), "{part:?} missing:\n{shipped}");
    }
    let sums = fs::read_to_string(dir.join("dist/2.1.0/SHA256SUMS")).unwrap();
    assert!(sums.contains("  RELEASE-NOTES.md\n"), "{sums}");
    // The release job's own check of the pushed tag.
    let checked = xtask_command(dir, &["verify-tag", "v2.1.0"])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    // The journal is gone with the cut.
    assert!(!dir.join(".git/saulpos-release/journal.json").exists());
}

#[test]
fn refusals_name_their_fix_and_change_nothing() {
    let repo = cut_repo();
    let (remote, key) = repo.prepared();
    let dir = &repo.dir;
    let plan = |args: &[&str], expected: &str| {
        let before = repo.state(remote.path());
        let said = refused(&repo.release(args));
        assert!(said.contains(expected), "{expected:?} missing:\n{said}");
        assert_eq!(
            repo.state(remote.path()),
            before,
            "a refused plan changed something"
        );
    };

    fs::write(dir.join("stray.txt"), "not committed\n").unwrap();
    plan(
        &["2.1.0", "--sign-key", &key],
        "the tree has changes (?? stray.txt)",
    );
    fs::remove_file(dir.join("stray.txt")).unwrap();

    let head = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "--detach", head.trim()]);
    plan(&["2.1.0", "--sign-key", &key], "HEAD is detached at");
    git(dir, &["checkout", "-q", "main"]);

    plan(
        &["2.0.0", "--sign-key", &key],
        "the tag v2.0.0 exists here already",
    );
    plan(
        &["1.9.0", "--sign-key", &key],
        "1.9.0 is not above the last release v2.0.0",
    );
    plan(
        &[
            "2.1.0",
            "--sign-key",
            &repo.keys.join("stranger").display().to_string(),
        ],
        "is not in release/allowed_signers",
    );
    plan(
        &["2.1.0"],
        "release/allowed_signers exists, so the tag must be signed",
    );

    // A tag someone pushed from elsewhere.
    let other = tempfile::tempdir().unwrap();
    git(
        other.path(),
        &["clone", "-q", remote.path().to_str().unwrap(), "."],
    );
    git(other.path(), &["tag", "v2.1.0"]);
    git(other.path(), &["push", "-q", "origin", "v2.1.0"]);
    plan(
        &["2.1.0", "--sign-key", &key],
        "the tag v2.1.0 exists on origin only",
    );

    // The remote moved on: behind.
    git(
        other.path(),
        &["commit", "-q", "--allow-empty", "-m", "fix: elsewhere"],
    );
    git(other.path(), &["push", "-q", "origin", "main"]);
    plan(&["2.2.0", "--sign-key", &key], "main is behind origin/main");

    // A remote that cannot be read: refused, unless --offline, which goes ahead without it.
    git(
        dir,
        &["remote", "set-url", "origin", "/nonexistent/saulpos.git"],
    );
    plan(
        &["2.2.0", "--sign-key", &key],
        "cannot reach the remote \"origin\"",
    );
    let said = ok(&repo.release(&["2.2.0", "--sign-key", &key, "--offline"]));
    assert!(said.contains("skipped (--offline)"), "{said}");
}

/// Runs `release --execute` and SIGKILLs its whole process group as soon as `point` holds.
fn kill_when(repo: &CutRepo, args: &[&str], point: impl Fn() -> bool, what: &str) {
    let mut child = repo
        .release_command(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if point() {
            // `kill -KILL -PGID` is taken for other options by procps' kill; `--` is reliable.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the cut ended ({status}) before {what}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "never reached {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_cut_killed_at_each_step_is_finished_by_the_next_execute_with_one_commit_one_tag_one_release() {
    let repo = cut_repo();
    let (remote, key) = repo.prepared();
    let dir = repo.dir.clone();
    let args = ["2.1.0", "--execute", "--sign-key", key.as_str()];
    let base = git(&dir, &["rev-parse", "main"]);
    let remote_untouched = || git(remote.path(), &["for-each-ref"]).lines().count() == 2;

    kill_when(
        &repo,
        &args,
        || git(&dir, &["rev-parse", "main"]) != base,
        "the release commit",
    );
    assert!(remote_untouched());
    kill_when(
        &repo,
        &args,
        || dir.join(".git/refs/tags/v2.1.0").exists(),
        "the tag",
    );
    assert!(remote_untouched());
    kill_when(
        &repo,
        &args,
        || {
            fs::read_dir(dir.join("dist"))
                .map(|entries| {
                    entries.flatten().any(|entry| {
                        entry
                            .file_name()
                            .to_string_lossy()
                            .contains("2.1.0.partial")
                    })
                })
                .unwrap_or(false)
        },
        "the package",
    );
    assert!(remote_untouched());
    let status = ok(&repo.release(&["--status"]));
    assert!(status.contains("done    commit CHANGELOG.md"), "{status}");
    assert!(status.contains("pending push"), "{status}");
    // Killed while the remote receives the push: it holds both refs or neither.
    let receiving = remote.path().to_string_lossy().into_owned();
    kill_when(
        &repo,
        &args,
        || {
            fs::read_dir("/proc").unwrap().flatten().any(|process| {
                fs::read(process.path().join("cmdline")).is_ok_and(|line| {
                    let line = String::from_utf8_lossy(&line);
                    line.contains("receive-pack") && line.contains(&receiving)
                })
            })
        },
        "the push",
    );
    let refs = git(remote.path(), &["for-each-ref"]);
    let has_tag = refs.contains("refs/tags/v2.1.0");
    let moved = !refs.contains(&format!("{}\tcommit\trefs/heads/main", repo.base))
        && !refs.contains(&format!("{} commit\trefs/heads/main", repo.base));
    assert_eq!(has_tag, moved, "the push landed half: {refs}");

    let said = ok(&repo.release(&args));
    assert!(
        said.contains("continuing the cut of 2.1.0") || said.contains("no cut is under way"),
        "{said}"
    );
    assert!(said.contains("2.1.0 is released"), "{said}");
    assert_eq!(count_release_commits(&dir, "2.1.0"), 1);
    assert_eq!(git(&dir, &["tag", "-l", "v2.1.*"]).trim(), "v2.1.0");
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        git(&dir, &["rev-parse", "main"])
    );
    assert_eq!(
        git(remote.path(), &["rev-parse", "v2.1.0"]),
        git(&dir, &["rev-parse", "v2.1.0"])
    );
    let verified = xtask_command(&dir, &["verify", "2.1.0"]).output().unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(git(&dir, &["status", "--porcelain"]).is_empty());
    // Run again: nothing is under way, a second cut of 2.1.0 is refused.
    let said = refused(&repo.release(&["2.1.0", "--execute", "--sign-key", &key]));
    assert!(
        said.contains("the tag v2.1.0 exists here already"),
        "{said}"
    );
}

#[test]
fn a_refused_push_lands_nothing_then_lands_both_and_a_moved_remote_refuses_the_lease() {
    let repo = cut_repo();
    let (remote, key) = repo.prepared();
    let dir = repo.dir.clone();
    let args = ["2.1.0", "--execute", "--sign-key", key.as_str()];
    let hook = remote.path().join("hooks/pre-receive");
    fs::write(&hook, "#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n").unwrap();
    Command::new("chmod")
        .args(["755", hook.to_str().unwrap()])
        .status()
        .unwrap();

    let said = refused(&repo.release(&args));
    assert!(
        said.contains("refused the push, so neither main nor v2.1.0 reached it"),
        "{said}"
    );
    assert!(said.contains("pushes are frozen"), "{said}");
    assert!(git(remote.path(), &["tag", "-l", "v2.1.0"]).is_empty());
    assert_eq!(git(remote.path(), &["rev-parse", "main"]).trim(), repo.base);
    let status = ok(&repo.release(&["--status"]));
    assert!(status.contains("pending push"), "{status}");

    fs::remove_file(&hook).unwrap();
    let said = ok(&repo.release(&args));
    assert!(said.contains("2.1.0 is released"), "{said}");
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        git(&dir, &["rev-parse", "main"])
    );
    assert_eq!(count_release_commits(&dir, "2.1.0"), 1);

    // The next cut: the remote moves on after the checks, so the lease refuses and nothing lands.
    let remote_main = git(remote.path(), &["rev-parse", "main"]);
    kill_when(
        &repo,
        &["2.2.0", "--execute", "--sign-key", key.as_str()],
        || {
            dir.join(".git/saulpos-release/journal.json").exists()
                && count_release_commits(&dir, "2.2.0") == 1
        },
        "the 2.2.0 release commit",
    );
    let other = tempfile::tempdir().unwrap();
    git(
        other.path(),
        &["clone", "-q", remote.path().to_str().unwrap(), "."],
    );
    git(
        other.path(),
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "fix: pushed meanwhile",
        ],
    );
    git(other.path(), &["push", "-q", "origin", "main"]);
    let moved = git(remote.path(), &["rev-parse", "main"]);
    assert_ne!(moved, remote_main);
    let said = refused(&repo.release(&["--execute"]));
    assert!(said.contains("refused the push"), "{said}");
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        moved,
        "the lease let a push through"
    );
    assert!(git(remote.path(), &["tag", "-l", "v2.2.0"]).is_empty());

    // --abort takes back what exists only here.
    let said = ok(&repo.release(&["--abort"]));
    assert!(said.contains("the cut of 2.2.0 is aborted"), "{said}");
    assert!(git(&dir, &["tag", "-l", "v2.2.0"]).is_empty());
    assert_eq!(count_release_commits(&dir, "2.2.0"), 0);
    assert!(!dir.join("dist/2.2.0").exists());
    assert!(git(&dir, &["status", "--porcelain"]).is_empty());
}

#[test]
fn bump_takes_the_next_version_in_semver_order_over_release_candidates() {
    let repo = cut_repo();
    let _remote = repo.reset();
    let dir = &repo.dir;
    let next = |args: &[&str]| {
        let mut all = vec!["--json", "--offline", "--sign-key"];
        let key = repo.key();
        all.push(&key);
        all.extend_from_slice(args);
        let output = repo.release(&all);
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("no plan: {}", text(&output)));
        plan["version"].as_str().unwrap().to_owned()
    };
    // sort -V puts 2.1.0-rc.1 after 2.1.0; semver puts it before.
    git(dir, &["tag", "-a", "v2.1.0-rc.1", "-m", "rc"]);
    assert_eq!(next(&["--bump", "patch"]), "2.1.0");
    assert_eq!(next(&["--bump", "patch", "--pre", "rc"]), "2.1.0-rc.2");
    git(dir, &["tag", "-a", "v2.1.0", "-m", "2.1.0"]);
    assert_eq!(next(&["--bump", "patch"]), "2.1.1");
    assert_eq!(next(&["--bump", "minor", "--pre", "rc"]), "2.2.0-rc.1");
    assert_eq!(next(&["--bump", "major"]), "3.0.0");
}
