//! SSH signatures over `SHA256SUMS` (namespace `saulpos-release`), made and checked with the
//! host's own `ssh-keygen -Y`, so that any host with OpenSSH checks a release without our tools:
//! `ssh-keygen -Y verify -f allowed_signers -I <identity> -n saulpos-release -s SHA256SUMS.sig < SHA256SUMS`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

pub const NAMESPACE: &str = "saulpos-release";
pub const SUMS: &str = "SHA256SUMS";
pub const SIG: &str = "SHA256SUMS.sig";

/// The signing key file: `--sign-key`, else the file `SAULPOS_SIGNING_KEY` names (never the key
/// itself), else none.
pub fn signing_key(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let (key, origin) = match (flag, std::env::var_os("SAULPOS_SIGNING_KEY")) {
        (Some(path), _) => (path.to_owned(), "--sign-key"),
        (None, Some(path)) if !path.is_empty() => (PathBuf::from(path), "SAULPOS_SIGNING_KEY"),
        _ => return Ok(None),
    };
    // The variable's value is never printed: it may hold the key itself by mistake.
    let named = if origin == "--sign-key" {
        format!("--sign-key names {}", key.display())
    } else {
        "SAULPOS_SIGNING_KEY names a file".to_owned()
    };
    let text = fs::read_to_string(&key).map_err(|error| {
        anyhow::anyhow!(
            "{named} which cannot be read ({}); give the path of an SSH private key file (or of the public key of one ssh-agent holds), never the key itself",
            error.kind()
        )
    })?;
    if !text.contains("PRIVATE KEY") && !is_public_key(&text) {
        bail!(
            "{named} which is not an SSH key file; make one with `ssh-keygen -t ed25519 -f release-key` and give its path"
        );
    }
    Ok(Some(key))
}

fn is_public_key(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or_default();
    first.starts_with("ssh-") || first.starts_with("ecdsa-") || first.starts_with("sk-")
}

/// Signs `file` with `key`, writing `<file>.sig`. A public key file means its private half is in
/// ssh-agent (a hardware key, say).
pub fn sign(file: &Path, key: &Path) -> anyhow::Result<()> {
    let in_agent = fs::read_to_string(key).is_ok_and(|text| is_public_key(&text));
    let signature = file.with_file_name(format!(
        "{}.sig",
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&signature);
    let mut command = Command::new("ssh-keygen");
    command
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(key);
    if in_agent {
        command.arg("-U");
    }
    let output = command
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen to sign the release; install OpenSSH (apt-get install openssh-client)")?;
    if !output.status.success() || !signature.is_file() {
        let _ = fs::remove_file(&signature);
        bail!(
            "cannot sign {} with {}: {}; check the key (a key with a passphrase must be in ssh-agent: give its .pub file)",
            file.display(),
            key.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Checks `signature` over `file` against `allowed_signers`; returns ssh-keygen's line naming
/// who signed, e.g. `Good "saulpos-release" signature for release@saulpos with ED25519 key SHA256:...`.
pub fn verify(file: &Path, signature: &Path, allowed_signers: &Path) -> anyhow::Result<String> {
    if !signature.is_file() {
        bail!(
            "{} is not signed (no {}), and {} requires a signature by one of its keys",
            file.display(),
            signature.display(),
            allowed_signers.display()
        );
    }
    let principals = Command::new("ssh-keygen")
        .args(["-Y", "find-principals", "-f"])
        .arg(allowed_signers)
        .arg("-s")
        .arg(signature)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen to check the signature; install OpenSSH (apt-get install openssh-client)")?;
    let principals = String::from_utf8_lossy(&principals.stdout).into_owned();
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    for principal in principals.lines().filter(|line| !line.trim().is_empty()) {
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", NAMESPACE, "-f"])
            .arg(allowed_signers)
            .args(["-I", principal])
            .arg("-s")
            .arg(signature)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(&bytes)
            .context("cannot pass the signed file to ssh-keygen")?;
        let output = child.wait_with_output()?;
        if output.status.success() {
            let said = String::from_utf8_lossy(&output.stdout);
            return Ok(said
                .lines()
                .next()
                .unwrap_or("Good signature")
                .trim()
                .to_owned());
        }
    }
    bail!(
        "{} is not signed by any key in {} (or {} was changed after signing)",
        signature.display(),
        allowed_signers.display(),
        file.display()
    )
}

/// The allowed signers to enforce: the flag's file, else `<dest>/allowed_signers` if present.
pub fn allowed_signers(flag: Option<&Path>, dest: &Path) -> anyhow::Result<Option<PathBuf>> {
    match flag {
        Some(path) if path.is_file() => Ok(Some(path.to_owned())),
        Some(path) => bail!(
            "--allowed-signers {} does not exist; give the allowed_signers file (lines `<identity> <key type> <public key>`)",
            path.display()
        ),
        None => {
            let default = dest.join("allowed_signers");
            Ok(default.is_file().then_some(default))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway Ed25519 key and an allowed_signers file naming it, in `dir`.
    fn key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = dir.join(name);
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen is needed: apt-get install openssh-client");
        assert!(made.success());
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        let fields: Vec<&str> = public.split_whitespace().collect();
        let allowed = dir.join(format!("{name}.allowed"));
        fs::write(
            &allowed,
            format!("{name}@saulpos {} {}\n", fields[0], fields[1]),
        )
        .unwrap();
        (key, allowed)
    }

    #[test]
    fn a_signature_checks_out_against_its_key_only_and_only_over_the_signed_bytes() {
        let dir = std::env::temp_dir().join(format!("saulpos-signature-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (release_key, release_allowed) = key(&dir, "release");
        let (_, other_allowed) = key(&dir, "other");
        let sums = dir.join(SUMS);
        fs::write(&sums, "00  a.tar.gz\n").unwrap();
        sign(&sums, &release_key).unwrap();
        let sig = dir.join(SIG);
        let said = verify(&sums, &sig, &release_allowed).unwrap();
        assert!(
            said.starts_with(
                "Good \"saulpos-release\" signature for release@saulpos with ED25519 key SHA256:"
            ),
            "{said}"
        );
        let refused = verify(&sums, &sig, &other_allowed).unwrap_err();
        assert!(
            format!("{refused:#}").contains("is not signed by any key in"),
            "{refused:#}"
        );
        fs::write(&sums, "01  a.tar.gz\n").unwrap();
        assert!(verify(&sums, &sig, &release_allowed).is_err());
        fs::remove_file(&sig).unwrap();
        let unsigned = verify(&sums, &sig, &release_allowed).unwrap_err();
        assert!(
            format!("{unsigned:#}").contains("is not signed"),
            "{unsigned:#}"
        );
        let not_a_key = sign(&sums, &release_allowed).unwrap_err();
        assert!(
            format!("{not_a_key:#}").contains("cannot sign"),
            "{not_a_key:#}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
