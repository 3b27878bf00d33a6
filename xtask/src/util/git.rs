//! What git says about the checkout being released: commit, dirty flag, commit time.

use anyhow::Context;
use xshell::{Shell, cmd};

pub struct Checkout {
    pub commit: String,
    pub dirty: bool,
    /// The commit's time in Unix seconds.
    pub commit_time: i64,
    /// `git status --short` lines, to show what makes the tree dirty.
    pub changes: Vec<String>,
}

/// Inspects the checkout at the shell's folder; `None` outside a git checkout.
pub fn inspect(sh: &Shell) -> anyhow::Result<Option<Checkout>> {
    let inside = cmd!(sh, "git rev-parse --is-inside-work-tree")
        .quiet()
        .ignore_stderr()
        .read();
    if !inside.is_ok_and(|answer| answer == "true") {
        return Ok(None);
    }
    let commit = cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .read()
        .context("cannot read the git commit (a checkout without commits?)")?;
    let commit_time = cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .read()?
        .trim()
        .parse()
        .context("cannot read the commit time")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()?;
    let changes: Vec<String> = status.lines().map(str::to_owned).collect();
    Ok(Some(Checkout {
        commit,
        dirty: !changes.is_empty(),
        commit_time,
        changes,
    }))
}
