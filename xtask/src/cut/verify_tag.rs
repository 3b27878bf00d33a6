//! `cargo xtask verify-tag vX.Y.Z`: what a release job checks before it publishes a pushed tag:
//! an annotated tag of a release version, signed by a key in `release/allowed_signers` when the
//! repository has that file (a lightweight or unsigned tag is refused then), whose body is the
//! version's `CHANGELOG.md` section at the tagged commit, byte for byte.

use anyhow::{Context, bail};
use serde_json::json;

use crate::cut::notes;
use crate::cut::plan::ALLOWED_SIGNERS;
use crate::cut::repo::Repo;
use crate::flags;
use crate::release::release_version;
use crate::util::durable;

impl flags::VerifyTag {
    pub fn run(self) -> anyhow::Result<()> {
        let repo = Repo::open(&crate::project_root())?;
        let version = self.tag.strip_prefix('v').with_context(|| {
            format!(
                "{:?} is not a release tag: release tags are v<version>, e.g. v2.1.0",
                self.tag
            )
        })?;
        let version = release_version::parse(version)?;
        let tag_ref = format!("refs/tags/{}", self.tag);
        let kind = repo
            .read(&["cat-file", "-t", &tag_ref])
            .with_context(|| format!("there is no tag {} here (git fetch --tags?)", self.tag))?;
        if kind != "tag" {
            bail!(
                "{} is a lightweight tag: a release tag is annotated, with the notes as its body (cut it with `cargo xtask release`)",
                self.tag
            );
        }
        // Raw: the body's last newline is part of the notes.
        let object = String::from_utf8_lossy(&repo.output(&["cat-file", "tag", &tag_ref])?.stdout)
            .into_owned();
        let (_, rest) = object
            .split_once("\n\n")
            .context("the tag object has no message")?;
        let signature_at = rest.find("-----BEGIN SSH SIGNATURE-----");
        let body = match signature_at {
            Some(at) => &rest[..at],
            None => rest,
        };
        let allowed = repo.root.join(ALLOWED_SIGNERS);
        let signer = if allowed.is_file() {
            if signature_at.is_none() {
                bail!(
                    "{} is not signed, and this repository's {ALLOWED_SIGNERS} requires a signed tag",
                    self.tag
                );
            }
            let setting = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
            let output = repo.output(&["-c", &setting, "verify-tag", &self.tag])?;
            if !output.status.success() {
                bail!(
                    "{} does not verify against {ALLOWED_SIGNERS}: {}",
                    self.tag,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Some(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        } else {
            None
        };
        let commit = repo.read(&["rev-parse", &format!("{tag_ref}^{{commit}}")])?;
        let changelog = repo
            .file_at(&commit, "CHANGELOG.md")
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .with_context(|| format!("the tagged commit {} has no CHANGELOG.md", &commit[..7]))?;
        let section = notes::section_of(&changelog, &version.to_string()).with_context(|| {
            format!(
                "CHANGELOG.md at {} has no section for {version}",
                &commit[..7]
            )
        })?;
        if section != body {
            bail!(
                "the body of {} is not CHANGELOG.md's section for {version} at {}: the notes differ, so nothing is published",
                self.tag,
                &commit[..7]
            );
        }
        if let Some(out) = &self.notes_out {
            durable::write(out, body.as_bytes())?;
        }
        if self.json {
            println!(
                "{}",
                json!({"tag": self.tag, "version": version.to_string(), "commit": commit, "signed_by": signer, "notes": body})
            );
        }
        eprintln!(
            "verify-tag: {} names {} (version {version}), {}; its body is CHANGELOG.md's section",
            self.tag,
            &commit[..7],
            signer
                .as_deref()
                .unwrap_or("unsigned (the repository has no release/allowed_signers)")
        );
        Ok(())
    }
}
