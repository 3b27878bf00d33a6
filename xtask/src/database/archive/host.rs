//! The database host the archive commands drive: this machine, or one reached over SSH with the
//! rollouts' plumbing (one multiplexed connection, host keys checked, `--ssh-config`). Commands
//! run there as the postgres user: through `runuser` when we are root there, as they are when
//! we are postgres.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::deploy::destination::{Destination, SshTarget, parse_authority};
use crate::deploy::remote::Connector;
use crate::flags::ArchiveOn;

pub struct DbHost {
    connector: Connector,
    destination: Destination,
    /// What makes a command run as the postgres user there.
    as_postgres: Vec<&'static str>,
}

/// What a command printed, apart, and whether it succeeded.
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl DbHost {
    /// Reaches the host `--on` names (this machine without it) and finds who we are there.
    pub fn connect(on: &ArchiveOn) -> anyhow::Result<DbHost> {
        let destination = match &on.on {
            None => Destination::Local(PathBuf::from("/")),
            Some(text) => Destination::Ssh(parse_on(text)?),
        };
        let connector = Connector::new(on.ssh_config.clone())?;
        let mut host = DbHost {
            connector,
            destination,
            as_postgres: Vec::new(),
        };
        let who = host.run_ok(
            "find out who we are on the database host",
            &["id", "-un"],
            None,
        )?;
        host.as_postgres = match who.trim() {
            // In `/`: the login's own folder (root's) is not the postgres user's to enter.
            "root" => vec!["runuser", "-u", "postgres", "--", "env", "--chdir=/"],
            "postgres" => Vec::new(),
            other => bail!(
                "on {} we are {other:?}: pgBackRest and the cluster tools run as the postgres user, so connect as root or postgres",
                host.label()
            ),
        };
        Ok(host)
    }

    /// `this machine`, or the ssh:// address, for messages.
    pub fn label(&self) -> String {
        match &self.destination {
            Destination::Local(_) => "this machine".to_owned(),
            Destination::Ssh(_) => self
                .destination
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// `argv` on the host as the user we log in as.
    pub fn command(&self, argv: &[&str]) -> Command {
        self.connector.command(&self.destination, argv)
    }

    /// `argv` on the host as the postgres user.
    pub fn postgres_command(&self, argv: &[&str]) -> Command {
        let mut all = self.as_postgres.clone();
        all.extend_from_slice(argv);
        self.command(&all)
    }

    /// Runs `command` to its end with `stdin` (or none) as its standard input.
    pub fn run_command(&self, mut command: Command, stdin: Option<&[u8]>) -> anyhow::Result<Ran> {
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| {
            format!(
                "cannot run a command on {} (ssh and the tools must be installed)",
                self.label()
            )
        })?;
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A command that exits without reading says why in its output below.
            let _ = pipe.write_all(bytes);
        }
        let output = child.wait_with_output()?;
        Ok(Ran {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `argv` as the login user; its standard output, or an error that says `what` failed
    /// and what the command said.
    pub fn run_ok(
        &self,
        what: &str,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let ran = self.run_command(self.command(argv), stdin)?;
        self.succeeded(what, ran)
    }

    /// [`DbHost::run_ok`] as the postgres user.
    pub fn postgres_ok(
        &self,
        what: &str,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let ran = self.run_command(self.postgres_command(argv), stdin)?;
        self.succeeded(what, ran)
    }

    /// A bash script with its arguments (never spliced into the script's text) and standard
    /// input, as the login user.
    pub fn script_ok(
        &self,
        what: &str,
        script: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let mut argv = vec!["bash", "-c", script, "archive"];
        argv.extend_from_slice(args);
        self.run_ok(what, &argv, stdin)
    }

    fn succeeded(&self, what: &str, ran: Ran) -> anyhow::Result<String> {
        if !ran.success {
            let said = ran.stderr.trim();
            let said = if said.is_empty() {
                ran.stdout.trim()
            } else {
                said
            };
            bail!(
                "cannot {what} on {}: {}",
                self.label(),
                if said.is_empty() {
                    "it failed without a word"
                } else {
                    said
                }
            );
        }
        Ok(ran.stdout)
    }
}

/// `ssh://[user@]host[:port]`, with or without a final `/`.
fn parse_on(text: &str) -> anyhow::Result<SshTarget> {
    let usage = "write ssh://[user@]host[:port], e.g. ssh://root@db-1.example.com:22";
    let Some(rest) = text.strip_prefix("ssh://") else {
        bail!("--on {text:?}: the database host is reached over SSH only; {usage}");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        bail!("--on {text:?} names a folder; give the host alone: {usage}");
    }
    let (user, host, port) = parse_authority(&format!("--on {text:?}"), authority, usage)?;
    Ok(SshTarget {
        user,
        host,
        port,
        path: "/".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_host_is_an_ssh_address_without_a_folder() {
        let target = parse_on("ssh://postgres@db-1:2222/").unwrap();
        assert_eq!(
            (target.user.as_deref(), target.host.as_str(), target.port),
            (Some("postgres"), "db-1", Some(2222))
        );
        for (bad, says) in [
            ("db-1", "over SSH only"),
            ("ssh://db-1/var/lib", "names a folder"),
            ("ssh://a b@db-1", "not a plain login name"),
            ("ssh://db-1:0", "not 1 to 65535"),
        ] {
            let error = parse_on(bad).unwrap_err().to_string();
            assert!(error.contains(says) && error.contains(bad), "{error}");
        }
    }
}
