//! Throwaway signing keys, and a release packaged signed with one held by ssh-agent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{clone, lock, text, workspace_root, xtask_command};

/// The throwaway keys: `release` signs, `other` is a stranger's.
pub struct Keys {
    dir: PathBuf,
}

impl Keys {
    pub fn private(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An allowed_signers file that trusts the key `name`.
    pub fn allowed(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.allowed_signers"))
    }
}

/// A throwaway Ed25519 key `name` in `dir`, and `<name>.allowed_signers` trusting it as
/// `<name>@saulpos`.
pub fn make_key(dir: &Path, name: &str) {
    let key = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen is needed: apt-get install openssh-client");
    assert!(made.status.success(), "{}", text(&made));
    let public = fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
    let fields: Vec<&str> = public.split_whitespace().collect();
    fs::write(
        dir.join(format!("{name}.allowed_signers")),
        format!("{name}@saulpos {} {}\n", fields[0], fields[1]),
    )
    .unwrap();
}

/// Version 1.3.0 packaged signed, the key held by ssh-agent and given as its .pub file.
pub fn signed_release() -> &'static (PathBuf, Keys) {
    static RELEASE: OnceLock<(PathBuf, Keys)> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let dir = workspace_root().join(format!("target/e2e/keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        make_key(&dir, "release");
        make_key(&dir, "other");
        let socket = dir.join("agent.sock");
        let agent = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .output()
            .expect("ssh-agent is needed: apt-get install openssh-client");
        assert!(agent.status.success(), "{}", text(&agent));
        let agent_pid = String::from_utf8_lossy(&agent.stdout)
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap()
            .to_owned();
        let added = Command::new("ssh-add")
            .arg(dir.join("release"))
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", text(&added));
        let clone = clone();
        let output = {
            let _guard = lock(clone);
            xtask_command(
                &clone.dir,
                &[
                    "package",
                    "1.3.0",
                    "--sign-key",
                    dir.join("release.pub").to_str().unwrap(),
                ],
            )
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap()
        };
        let _ = Command::new("kill").arg(&agent_pid).status();
        assert!(
            output.status.success(),
            "package --sign-key: {}",
            text(&output)
        );
        assert!(
            text(&output).contains("signed SHA256SUMS with"),
            "{}",
            text(&output)
        );
        (clone.dir.join("dist/1.3.0"), Keys { dir })
    })
}
