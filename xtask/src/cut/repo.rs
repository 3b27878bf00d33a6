//! The repository a cut works on, through the git CLI: each call's stderr kept for its error,
//! the config never written (settings a call needs are `-c` for that call only), and commits
//! made with plumbing on a private index so that the work tree changes only after a ref moved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

use crate::util::durable;

/// A git work tree.
pub struct Repo {
    pub root: PathBuf,
    /// Its `.git` folder (or the common one of a worktree).
    pub git_dir: PathBuf,
}

impl Repo {
    pub fn open(root: &Path) -> anyhow::Result<Repo> {
        let mut repo = Repo {
            root: root.to_owned(),
            git_dir: PathBuf::new(),
        };
        let git_dir = repo
            .read(&["rev-parse", "--absolute-git-dir"])
            .with_context(|| format!("{} is not a git checkout", root.display()))?;
        repo.git_dir = PathBuf::from(git_dir);
        Ok(repo)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(&self.root)
            // Nobody is asked anything: no editor, no credential prompt.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_EDITOR", "true")
            .stdin(Stdio::null());
        command
    }

    /// Runs git; its output, or an error quoting its stderr.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("cannot run git {}", args.join(" ")))
    }

    /// Runs git, which must succeed; its stdout, trimmed.
    pub fn read(&self, args: &[&str]) -> anyhow::Result<String> {
        stdout_of(args, self.output(args)?)
    }

    /// Whether git exits 0.
    pub fn succeeds(&self, args: &[&str]) -> bool {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Runs git with `input` on its stdin, which must succeed; its stdout, trimmed.
    pub fn read_with_input(
        &self,
        args: &[&str],
        input: &[u8],
        envs: &[(&str, &Path)],
    ) -> anyhow::Result<String> {
        let mut command = self.command(args);
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run git {}", args.join(" ")))?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .context("cannot write to git")?;
        stdout_of(args, child.wait_with_output()?)
    }

    /// The object a ref or revision names, if it exists.
    pub fn resolve(&self, revision: &str) -> Option<String> {
        self.read(&["rev-parse", "-q", "--verify", revision]).ok()
    }

    /// The file at `path` in `commit`, if it holds one.
    pub fn file_at(&self, commit: &str, path: &str) -> Option<Vec<u8>> {
        let output = self.output(&["show", &format!("{commit}:{path}")]).ok()?;
        output.status.success().then_some(output.stdout)
    }

    /// A commit on `parent` whose tree is the parent's with `files` replaced, made on a private
    /// index: neither the work tree nor the user's index changes. Returns its id.
    pub fn commit_files(
        &self,
        parent: &str,
        files: &[(&str, Vec<u8>)],
        message: &str,
        index: &Path,
    ) -> anyhow::Result<String> {
        let _ = std::fs::remove_file(index);
        let envs = [("GIT_INDEX_FILE", index)];
        // The blobs in one hash-object (from files beside the private index), the index entries
        // in one update-index.
        let scratch: Vec<PathBuf> = (0..files.len())
            .map(|number| index.with_extension(format!("blob{number}")))
            .collect();
        for (path, (_, bytes)) in scratch.iter().zip(files) {
            std::fs::write(path, bytes)?;
        }
        let listed: String = scratch
            .iter()
            .map(|path| format!("{}\n", path.display()))
            .collect();
        let blobs = self.read_with_input(
            &["hash-object", "-w", "--stdin-paths"],
            listed.as_bytes(),
            &[],
        );
        for path in &scratch {
            let _ = std::fs::remove_file(path);
        }
        let blobs = blobs?;
        let entries: String = blobs
            .lines()
            .zip(files)
            .map(|(blob, (path, _))| format!("100644 {blob}\t{path}\n"))
            .collect();
        self.read_with_input(&["read-tree", parent], b"", &envs)?;
        self.read_with_input(&["update-index", "--index-info"], entries.as_bytes(), &envs)?;
        let tree = self.read_with_input(&["write-tree"], b"", &envs)?;
        let _ = std::fs::remove_file(index);
        self.read_with_input(
            &["commit-tree", &tree, "-p", parent, "-F", "-"],
            message.as_bytes(),
            &[],
        )
    }

    /// Moves `branch` from `old` to `new` in one compare-and-swap (refused if it moved), then
    /// brings `paths` of the index and the work tree to the branch's new content.
    pub fn advance(
        &self,
        branch: &str,
        new: &str,
        old: &str,
        paths: &[&str],
    ) -> anyhow::Result<()> {
        self.read(&[
            "update-ref",
            "-m",
            "cargo xtask release",
            &format!("refs/heads/{branch}"),
            new,
            old,
        ])?;
        self.sync_paths(paths)
    }

    /// The work tree and the index of `paths` as HEAD has them (a path HEAD lacks is removed).
    /// Each file is written beside its name and renamed over it, never in place as `git
    /// checkout` writes: a run killed here leaves each path whole, old or new, and cargo can
    /// still read Cargo.toml and Cargo.lock to run the next one.
    pub fn sync_paths(&self, paths: &[&str]) -> anyhow::Result<()> {
        let mut present = Vec::new();
        for path in paths {
            let file = self.root.join(path);
            if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
                durable::remove_stale_partials(dir, &name.to_string_lossy())?;
            }
            match self.file_at("HEAD", path) {
                Some(bytes) => {
                    durable::write(&file, &bytes)?;
                    present.push(*path);
                }
                None => {
                    let _ = self.output(&["rm", "-q", "--cached", "--ignore-unmatch", "--", path]);
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        if !present.is_empty() {
            let mut args = vec!["add", "--"];
            args.extend_from_slice(&present);
            self.read(&args)?;
        }
        Ok(())
    }

    /// The subject of a commit.
    pub fn subject(&self, commit: &str) -> Option<String> {
        self.read(&["log", "-1", "--format=%s", commit]).ok()
    }

    /// The first parent of a commit.
    pub fn parent(&self, commit: &str) -> Option<String> {
        self.resolve(&format!("{commit}^"))
    }

    /// `refs/...` → object id on the remote, as `git ls-remote` lists them (tags peeled too).
    pub fn ls_remote(&self, remote: &str, refs: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
        let mut args = vec!["ls-remote", remote];
        args.extend_from_slice(refs);
        let listed = self.read(&args).with_context(|| {
            format!("cannot reach the remote {remote:?}; check the network (or give --offline to do all but the push)")
        })?;
        Ok(listed
            .lines()
            .filter_map(|line| {
                let (id, name) = line.split_once('\t')?;
                Some((name.to_owned(), id.to_owned()))
            })
            .collect())
    }
}

/// A git call's stdout, trimmed, or an error quoting its stderr.
fn stdout_of(args: &[&str], output: Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn sync_paths_renames_whole_files_into_place_and_clears_what_a_killed_run_left() {
        let dir = std::env::temp_dir().join(format!("xtask-sync-paths-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        fs::write(dir.join("Cargo.lock"), "old\n").unwrap();
        fs::write(dir.join("gone.md"), "old\n").unwrap();
        git(&dir, &["add", "Cargo.lock", "gone.md"]);
        git(&dir, &["commit", "-q", "-m", "old"]);
        fs::write(dir.join("Cargo.lock"), "new\n").unwrap();
        git(&dir, &["rm", "-q", "gone.md"]);
        git(&dir, &["commit", "-q", "-am", "new"]);
        git(&dir, &["reset", "-q", "--hard", "HEAD~1"]);
        git(&dir, &["update-ref", "refs/heads/main", "HEAD@{1}"]);
        // What a run killed mid-write left: a partial whose process is gone, and a second name
        // for the old file, which must keep its bytes (the file is replaced, never rewritten).
        fs::write(dir.join(".Cargo.lock.partial-4194999"), "ne").unwrap();
        fs::hard_link(dir.join("Cargo.lock"), dir.join("old-link")).unwrap();
        let before = fs::metadata(dir.join("Cargo.lock")).unwrap().ino();

        let repo = Repo::open(&dir).unwrap();
        repo.sync_paths(&["Cargo.lock", "gone.md"]).unwrap();

        assert_eq!(fs::read_to_string(dir.join("Cargo.lock")).unwrap(), "new\n");
        assert_ne!(fs::metadata(dir.join("Cargo.lock")).unwrap().ino(), before);
        assert_eq!(fs::read_to_string(dir.join("old-link")).unwrap(), "old\n");
        assert!(!dir.join("gone.md").exists());
        assert!(!dir.join(".Cargo.lock.partial-4194999").exists());
        let status = repo
            .read(&["status", "--porcelain", "--", "Cargo.lock", "gone.md"])
            .unwrap();
        assert_eq!(status, "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
