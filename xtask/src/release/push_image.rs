//! `cargo xtask push-image <version> <registry>/<repository>`: copy the release's OCI image to a
//! registry with skopeo, after checking it against `SHA256SUMS` (and its signature when asked),
//! and prove the registry holds the digest in `dist/`.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use anyhow::bail;
use serde_json::json;
use xshell::Shell;

use crate::flags;
use crate::release::sums;
use crate::release::{checksum, dist, image, kubernetes, signature};

impl flags::PushImage {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let destination = check_destination(&self.destination)?;
        let dist_dir = self.dist.clone().unwrap_or_else(dist::root);
        let (version, dir) = dist::release_dir(&dist_dir, &self.version)?;
        let version = version.to_string();
        let name = image::file_name(&version);
        let path = dir.join(&name);
        if !path.is_file() {
            bail!(
                "{} is missing: this release has no image; package it with this xtask",
                path.display()
            );
        }
        let (sha256, _) = checksum::sha256_file(&path)?;
        sums::check_listed(&dir, &name, &sha256)?;
        if let Some(allowed) = &self.allowed_signers {
            let signer =
                signature::verify(&dir.join(sums::SUMS), &dir.join(signature::SIG), allowed)?;
            eprintln!("signature: {signer}");
        }
        let digest = image::read_digest(&path)?;
        let tag = tag_of(&version);
        let target = format!("{destination}:{tag}");
        eprintln!("pushing {name} to {target} (digest {digest})");

        // skopeo writes the digest it pushed here: beside the releases, never in /tmp where a
        // planted link could redirect a root-owned write.
        let scratch = dist_dir.join(format!(".push-{}.digest", std::process::id()));
        let mut command = Command::new("skopeo");
        command.args(["copy", "--retry-times", "2", "--digestfile"]);
        command.arg(&scratch);
        if self.insecure {
            command.arg("--dest-tls-verify=false");
        }
        command
            .arg(format!(
                "oci-archive:{}:{}",
                path.display(),
                image::ref_name(&version)
            ))
            .arg(format!("docker://{target}"));
        // skopeo's progress goes to stderr with ours: stdout is for --json alone.
        command.stdout(Stdio::from(io::stderr().as_fd().try_clone_to_owned()?));
        let status = command.status().map_err(|error| {
            anyhow::anyhow!(
                "cannot run skopeo ({error}): install it (apt-get install skopeo), or copy the image as docs/runbooks/deploy.md shows"
            )
        });
        let pushed = fs::read_to_string(&scratch).unwrap_or_default();
        let _ = fs::remove_file(&scratch);
        if !status?.success() {
            bail!(
                "skopeo could not push to {target} (its message is above){}",
                if self.insecure {
                    ""
                } else {
                    "; a local registry without TLS needs --insecure, and a private one `skopeo login` first"
                }
            );
        }
        let pushed = pushed.trim();
        if pushed != digest {
            bail!(
                "the registry holds {target} as {pushed}, not as {digest} from dist/: the registry changed the image; do not deploy that tag"
            );
        }
        eprintln!(
            "pushed {target}@{digest}\nKubernetes: cargo xtask kubernetes <env> {version} --registry {}",
            destination
                .strip_suffix(&format!("/{}", kubernetes::REPOSITORY))
                .unwrap_or("REG (the repository must be named saulpos-server)")
        );
        if self.json {
            println!(
                "{}",
                json!({
                    "version": version,
                    "destination": destination,
                    "tag": tag,
                    "digest": digest,
                    "reference": format!("{destination}@{digest}"),
                })
            );
        }
        Ok(())
    }
}

/// A semantic version as a registry tag: `+` is not allowed there.
pub fn tag_of(version: &str) -> String {
    version.replace('+', "_")
}

/// `<registry>/<repository>` without a scheme, tag or digest.
fn check_destination(destination: &str) -> anyhow::Result<String> {
    let checked = kubernetes::check_registry(destination).map_err(|_| {
        anyhow::anyhow!(
            "{destination:?} is not <registry>/<repository>: give it in lower case without https:// or a tag, e.g. registry.example.com/saulpos/saulpos-server (the tag is the version)"
        )
    })?;
    if !checked.contains('/') {
        bail!(
            "{destination:?} names a registry but no repository: give <registry>/<repository>, e.g. {destination}/saulpos-server"
        );
    }
    Ok(checked.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_need_a_repository_and_no_tag() {
        assert_eq!(
            check_destination("127.0.0.1:5000/saulpos-server").unwrap(),
            "127.0.0.1:5000/saulpos-server"
        );
        for bad in ["127.0.0.1:5000", "docker://reg/x", "reg/x:2.0.0", "reg/X"] {
            assert!(check_destination(bad).is_err(), "{bad}");
        }
        assert_eq!(tag_of("2.0.0+build.1"), "2.0.0_build.1");
    }
}
