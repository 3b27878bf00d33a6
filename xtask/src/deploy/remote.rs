//! Running the fleet script (templates/fleet.sh) on a destination: over the system `ssh`, so
//! `~/.ssh/config`, agents and `known_hosts` work as the operator expects (host keys are always
//! checked; an unknown one is refused), one multiplexed connection a host that also carries the
//! payload; or with `bash` for a local folder.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, bail};

use crate::deploy::destination::Destination;

/// The script every host runs, with the shared shell functions spliced in.
fn fleet_script() -> String {
    include_str!("../../templates/fleet.sh")
        .replace("# @COMMON@\n", include_str!("../../templates/common.sh"))
        .replace(
            "# @ENV_FILE@\n",
            include_str!("../../templates/env_file.sh"),
        )
}

/// How to reach the destinations: the ssh options every connection shares.
pub struct Connector {
    ssh_config: Option<PathBuf>,
    /// The folder of the connections' control sockets (short: a socket path has 108 bytes).
    control_dir: PathBuf,
    script: String,
    /// The script's SHA-256, which a hold checks before it keeps the script on its host.
    pub script_sha256: String,
    /// Where each host (by destination) keeps the script while this rollout holds it, so that
    /// an operation sends a path instead of the whole script (about 0.15 s a session).
    kept: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }
}

/// What a command printed (standard output and error, in order) and whether it succeeded.
pub struct Ran {
    pub success: bool,
    pub lines: Vec<String>,
}

impl Ran {
    /// The lines that say what went wrong (`problem:` and `error:` lines), else the last line.
    pub fn why(&self) -> String {
        let said: Vec<&str> = self
            .lines
            .iter()
            .filter_map(|line| {
                let (_, rest) = line
                    .split_once("problem: ")
                    .or_else(|| line.split_once("error: "))?;
                Some(rest)
            })
            .collect();
        if said.is_empty() {
            self.lines
                .last()
                .cloned()
                .unwrap_or_else(|| "no output".to_owned())
        } else {
            said.join("; ")
        }
    }
}

/// The rollout lock of one destination, held by a session that lives until this is dropped.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    pub facts: Vec<(String, String)>,
}

impl Held {
    pub fn fact(&self, name: &str) -> String {
        self.facts
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // `done`, then closing its standard input, ends the session at once, and the host's
        // kernel drops the lock; a rollout that dies says nothing, and the host keeps the lock
        // until an install it started there has ended.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

impl Connector {
    pub fn new(ssh_config: Option<PathBuf>) -> anyhow::Result<Connector> {
        if let Some(config) = &ssh_config
            && !config.is_file()
        {
            bail!(
                "--ssh-config {} does not exist; give an ssh_config file (ssh -F)",
                config.display()
            );
        }
        let control_dir = std::env::temp_dir().join(format!("saulpos-ssh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&control_dir);
        crate::util::durable::create_private_dir_all(&control_dir)
            .with_context(|| format!("cannot create {}", control_dir.display()))?;
        let script = fleet_script();
        Ok(Connector {
            ssh_config,
            control_dir,
            script_sha256: crate::release::checksum::sha256_hex(script.as_bytes()),
            script,
            kept: Default::default(),
        })
    }

    fn ssh_options(&self, command: &mut Command, port: Option<u16>) {
        if let Some(config) = &self.ssh_config {
            command.arg("-F").arg(config);
        }
        command
            .args(["-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o"])
            .arg(format!("ControlPath={}/%C", self.control_dir.display()))
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
        if let Some(port) = port {
            command.arg("-p").arg(port.to_string());
        }
    }

    /// `argv` run on the destination: through ssh (each word quoted for the remote shell), in a
    /// process group of its own (the terminal's Ctrl-C is for us, not for it); or directly, in
    /// ours, so that a deploy killed with its process group leaves no install or lock behind.
    pub fn command(&self, destination: &Destination, argv: &[&str]) -> Command {
        let mut command = match destination {
            Destination::Local(_) => {
                let mut command = Command::new(argv[0]);
                command.args(&argv[1..]).stdin(Stdio::null());
                return command;
            }
            Destination::Ssh(target) => {
                let mut command = Command::new("ssh");
                self.ssh_options(&mut command, target.port);
                let line: Vec<String> = argv.iter().map(|word| shell_quote(word)).collect();
                command.arg(target.login()).arg("--").arg(line.join(" "));
                command
            }
        };
        command.process_group(0).stdin(Stdio::null());
        command
    }

    /// The fleet script's `operation` with its arguments: the copy the host keeps while this
    /// rollout holds it, else the whole script.
    pub fn fleet(&self, destination: &Destination, args: &[&str]) -> Command {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&destination.to_string())
            .cloned();
        let mut argv = match &kept {
            Some(path) => vec!["bash", path.as_str()],
            None => vec!["bash", "-c", self.script.as_str(), "fleet.sh"],
        };
        argv.extend_from_slice(args);
        self.command(destination, &argv)
    }

    /// Runs the fleet script from `path` on `destination` from now on (a hold's `script=`).
    pub fn keep(&self, destination: &Destination, path: &str) {
        if path.starts_with('/') {
            self.kept
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(destination.to_string(), path.to_owned());
        }
    }

    /// Takes the destination's rollout lock and reads what the hold prints before `ready`.
    pub fn hold(&self, destination: &Destination, args: &[&str]) -> anyhow::Result<Held> {
        let mut command = self.fleet(destination, args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .context("cannot run ssh; install the OpenSSH client (openssh-client)")?;
        let stdin = child.stdin.take();
        let mut facts = Vec::new();
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line == "ready" {
                return Ok(Held {
                    child,
                    stdin,
                    facts,
                });
            }
            if let Some((key, value)) = line.split_once('=') {
                facts.push((key.to_owned(), value.to_owned()));
            }
        }
        drop(stdin);
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        }
        let _ = child.wait();
        let said = said
            .lines()
            .map(|line| line.strip_prefix("fleet.sh: error: ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "{}",
            if said.is_empty() {
                "the session ended without a word".to_owned()
            } else {
                said
            }
        )
    }

    /// Runs `command` to its end, echoing each line as `<label>: line` on stderr when `echo`.
    pub fn run(&self, mut command: Command, label: &str, echo: bool) -> anyhow::Result<Ran> {
        let (reader, writer) = std::io::pipe()?;
        command.stdout(writer.try_clone()?).stderr(writer);
        let mut child = command
            .spawn()
            .context("cannot run ssh; install the OpenSSH client (openssh-client)")?;
        drop(command);
        let mut lines = Vec::new();
        for line in BufReader::new(reader).lines() {
            let line = line?;
            if echo {
                let mut stderr = std::io::stderr().lock();
                let _ = writeln!(stderr, "  {label}: {line}");
            }
            lines.push(line);
        }
        let status = child.wait()?;
        Ok(Ran {
            success: status.success(),
            lines,
        })
    }
}

/// `word` quoted for a POSIX shell: as it is when plain, else in single quotes.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(shell_quote("/opt/saulpos"), "/opt/saulpos");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_quote("it's $HOME; rm -rf /"),
            r"'it'\''s $HOME; rm -rf /'"
        );
        let quoted = shell_quote("a 'b' \"c\" $(d)\n`e`");
        let echoed = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(echoed.stdout).unwrap(),
            "a 'b' \"c\" $(d)\n`e`"
        );
    }
}
