//! Hosts over SSH for the rollout tests: a real `sshd` on loopback with throwaway host and user
//! keys, and "hosts" that are folders, each with its own server port and database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use super::{Configured, TestDb, free_port, get_json, run, text};

/// An sshd on 127.0.0.1, and the client side the test uses: `ssh_config` names the user key
/// and a known_hosts file that holds the host key (or not).
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path) {
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "saulpos-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is needed: apt-get install openssh-client");
    assert!(made.status.success(), "{}", text(&made));
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let path = &dir.path().to_owned();
        keygen(&path.join("host_key"));
        keygen(&path.join("user_key"));
        fs::copy(path.join("user_key.pub"), path.join("authorized_keys")).unwrap();
        let port = free_port();
        fs::write(
            path.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxStartups 50\nMaxSessions 50\nSubsystem sftp internal-sftp\n",
                d = path.display()
            ),
        )
        .unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stderr(fs::File::create(path.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd is needed: apt-get install openssh-server");
        let sshd = Sshd { child, port, dir };
        assert!(
            crate::support::eventually(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "sshd did not listen: {}",
            fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
        );
        let host_key = fs::read_to_string(path.join("host_key.pub")).unwrap();
        let fields: Vec<&str> = host_key.split_whitespace().collect();
        fs::write(
            path.join("known_hosts"),
            format!("[127.0.0.1]:{port} {} {}\n", fields[0], fields[1]),
        )
        .unwrap();
        fs::write(path.join("empty_known_hosts"), "").unwrap();
        for (name, known) in [
            ("ssh_config", "known_hosts"),
            ("ssh_config_unknown", "empty_known_hosts"),
        ] {
            fs::write(
                path.join(name),
                format!(
                    "Host 127.0.0.1\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/{known}\n  GlobalKnownHostsFile /dev/null\n",
                    d = path.display()
                ),
            )
            .unwrap();
        }
        sshd
    }

    pub fn config(&self) -> String {
        self.dir.path().join("ssh_config").display().to_string()
    }

    pub fn destination(&self, folder: &Path) -> String {
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            user.trim(),
            self.port,
            folder.display()
        )
    }
}

/// A "host": a destination folder with its environment folder configured for its own database
/// and port.
pub struct Host {
    // First: its server stops before its database goes.
    pub configured: Configured,
    pub db: TestDb,
}

impl Host {
    pub fn new(name: &str) -> Host {
        let db = TestDb::new(name);
        Host {
            configured: Configured::new("staging", &db),
            db,
        }
    }

    pub fn dest(&self) -> &Path {
        self.configured.dest.path()
    }

    pub fn installed(&self) -> PathBuf {
        self.configured.installed.clone()
    }

    pub fn serves(&self) -> String {
        let (status, info) = get_json(&format!("{}/actuator/info", self.configured.url));
        assert_eq!(status, 200, "{info}");
        info["version"].as_str().unwrap().to_owned()
    }
}

pub fn rollout(args: &[&str]) -> (Output, serde_json::Value) {
    let output = run(args);
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("stdout is not one JSON object: {}", text(&output)));
    (output, json)
}

/// Runs a rollout that must succeed with these outcomes ("deployed 1.2.0", one a host).
pub fn rollout_ok(args: &[&str], expected: &[&str]) -> serde_json::Value {
    let (output, json) = rollout(args);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(outcomes(&json), expected, "{}", text(&output));
    json
}

pub fn outcomes(json: &serde_json::Value) -> Vec<String> {
    json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| {
            format!(
                "{} {}",
                host["outcome"].as_str().unwrap(),
                host["after"].as_str().unwrap_or("none")
            )
        })
        .collect()
}

/// Runs `cargo xtask <args>` in the shared clone, giving each line it prints on stderr, as it
/// comes, to `on_line` with the process's pid (to signal it, or something else, at a moment of
/// the run); returns its output and what it printed on stderr.
pub fn rollout_watching(args: &[&str], mut on_line: impl FnMut(&str, u32)) -> (Output, String) {
    use std::io::{BufRead, BufReader};
    let mut child = super::xtask_command(&super::clone().dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut said = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        on_line(&line, child.id());
    }
    (child.wait_with_output().unwrap(), said)
}
