//! `cargo xtask release <version>`: cutting a version. Without `--execute` it checks everything
//! and prints the plan; with it, it carries the plan out, the irreversible part last: the
//! release commit (CHANGELOG.md, the version), the annotated tag signed with the release key
//! and verified, the package from that commit, the next development version, and one atomic
//! push of the branch and the tag with a lease on what the checks saw. A journal under `.git/`
//! lets `--execute` run again after any failure or kill and finish; each step checks its own
//! result first, so nothing is done twice.

pub mod journal;
mod notes;
pub mod plan;
pub mod repo;
pub mod steps;
mod verify_tag;
pub mod version;

use anyhow::bail;
use serde_json::json;
use xshell::Shell;

use crate::cut::journal::Journal;
use crate::cut::repo::Repo;
use crate::flags;

impl flags::Release {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let repo = Repo::open(&crate::project_root())?;
        if self.status {
            return steps::status(&repo, self.json);
        }
        if self.abort {
            let _lock = journal::lock(&repo.git_dir)?;
            return steps::abort(&repo, &self);
        }
        if self.execute {
            let _lock = journal::lock(&repo.git_dir)?;
            if let Some(journal) = Journal::load(&repo.git_dir)? {
                if let Some(given) = &self.version
                    && given.trim_start_matches('v') != journal.version
                {
                    bail!(
                        "a cut of {} is under way in this repository: finish it with `cargo xtask release --execute`, or `cargo xtask release --abort`",
                        journal.version
                    );
                }
                eprintln!("release: continuing the cut of {}", journal.version);
                return steps::execute(&repo, journal, &self, sh);
            }
        } else if let Some(journal) = Journal::load(&repo.git_dir)? {
            bail!(
                "a cut of {} is under way in this repository: finish it with `cargo xtask release --execute`, see it with --status, or --abort",
                journal.version
            );
        }
        let plan = plan::make(&self, &repo)?;
        print_plan(&plan, &self);
        if !plan.ready() {
            let failed: Vec<&str> = plan
                .checks
                .iter()
                .filter(|check| !check.ok)
                .map(|check| check.name)
                .collect();
            bail!(
                "{} of {} checks failed ({}); nothing was changed",
                failed.len(),
                plan.checks.len(),
                failed.join(", ")
            );
        }
        if !self.execute {
            eprintln!(
                "release: the plan can go ahead; run it with: cargo xtask release {} --execute",
                plan.version
            );
            return Ok(());
        }
        let journal = Journal {
            version: plan.version.to_string(),
            tag: plan.tag.clone(),
            remote: self.remote.clone(),
            branch: self.branch.clone(),
            base: plan.head.clone(),
            // Offline, the lease is taken when the push is.
            lease: plan
                .lease
                .clone()
                .unwrap_or_else(|| steps::UNKNOWN.to_owned()),
            offline: self.offline,
            sign_key: plan.sign_key.clone(),
            notes: plan.notes.clone(),
            ..Journal::default()
        };
        journal.save(&repo.git_dir)?;
        steps::execute(&repo, journal, &self, sh)
    }
}

fn print_plan(plan: &plan::Plan, flags: &flags::Release) {
    if flags.json {
        let out = json!({
            "version": plan.version.to_string(),
            "tag": plan.tag,
            "commit": plan.head,
            "last": plan.last.as_ref().map(ToString::to_string),
            "ready": plan.ready(),
            "checks": plan.checks.iter().map(|check| json!({
                "name": check.name, "ok": check.ok, "detail": check.detail,
            })).collect::<Vec<_>>(),
            "steps": steps::NAMES.iter().map(|name| json!({"name": name, "state": "planned"})).collect::<Vec<_>>(),
            "notes": plan.notes,
            "next": if plan.ready() {
                Some(format!("cargo xtask release {} --execute", plan.version))
            } else {
                None
            },
        });
        if !flags.execute {
            println!("{out}");
        }
    }
    eprintln!(
        "release {} (tag {}) from {} at {}, after {}",
        plan.version,
        plan.tag,
        flags.branch,
        &plan.head[..7],
        plan.last
            .as_ref()
            .map(|last| format!("v{last}"))
            .unwrap_or_else(|| "no release yet".to_owned())
    );
    eprintln!("checks:");
    for check in &plan.checks {
        eprintln!(
            "  {} {:<28} {}",
            if check.ok { "ok    " } else { "FAILED" },
            check.name,
            check.detail
        );
    }
    eprintln!("steps:");
    for (number, name) in steps::NAMES.iter().enumerate() {
        eprintln!("  {}. {name}", number + 1);
    }
    eprintln!("notes:");
    for line in plan.notes.lines() {
        eprintln!("  | {line}");
    }
}
