//! `cargo xtask archive-guard` (hidden): the process `archive restore` and `archive extract`
//! start beside themselves, before they make their cluster, in a process group of their own, so
//! that one killed where it cannot clean up (Ctrl-C, a kill, a lost SSH session) still stops and
//! removes the cluster it was restoring, even one `pg_createcluster` left half-made. A command
//! that fails lets its guard do the same: the removal has this one definition. The live cluster
//! is never the guard's business.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::database::archive::host::DbHost;
use crate::flags;

/// What the command writes on the guard's standard input once the cluster is kept or removed.
const DONE: &str = "done";

/// Stops and removes a cluster and its data directory whatever state a kill left them in:
/// registered or half-made by pg_createcluster, running or not.
const REMOVE: &str = r#"set -uo pipefail
version=$1 name=$2 data=$3
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env --chdir=/ "$@"; else "$@"; fi; }
found=
if pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1 == v && $2 == n { found = 1 } END { exit !found }'; then
  found=1
  pg_dropcluster --stop "$version" "$name" >/dev/null 2>&1
fi
if [ -f "$data/postmaster.pid" ]; then
  as_postgres "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
fi
for path in "/etc/postgresql/$version/$name" "$data"; do
  if [ -e "$path" ]; then found=1; rm -rf -- "$path" || exit 1; fi
done
rm -f -- "/var/log/postgresql/postgresql-$version-$name.log"
if [ -n "$found" ]; then echo removed; fi
"#;

impl flags::ArchiveGuard {
    pub fn run(self) -> anyhow::Result<()> {
        // Standard input ends when the command exits, however it exits.
        let mut said = String::new();
        let _ = std::io::stdin().read_to_string(&mut said);
        if said.lines().any(|line| line == DONE) {
            return Ok(());
        }
        let host = DbHost::connect(&self.on)?;
        if !remove(&host, &self.version, &self.cluster, &self.data_dir)? {
            return Ok(());
        }
        // The terminal may be gone with the session: a message that cannot be written is lost.
        let _ = writeln!(
            std::io::stderr(),
            "the restore into cluster {}/{} did not finish: removed that cluster and its data directory {}; the live cluster was not touched",
            self.version,
            self.cluster,
            self.data_dir
        );
        Ok(())
    }
}

/// Removes what there is of the cluster; whether there was anything.
pub fn remove(host: &DbHost, version: &str, name: &str, data_dir: &str) -> anyhow::Result<bool> {
    let said = host.script_ok(
        &format!("remove the unfinished cluster {version}/{name}"),
        REMOVE,
        &[version, name, data_dir],
        None,
    )?;
    Ok(said.trim() == "removed")
}

/// Starts the guard of the cluster about to be made, in a process group of its own so that
/// Ctrl-C does not reach it. `None` (with a note) if it cannot start: the command goes on, and
/// removes the cluster itself when it fails.
pub fn start(on: &flags::ArchiveOn, version: &str, name: &str, data_dir: &str) -> Option<Child> {
    let started = std::env::current_exe()
        .context("cannot find this program to start its guard")
        .and_then(|program| {
            let mut command = Command::new(program);
            command.arg("archive-guard");
            if let Some(address) = &on.on {
                command.args(["--on", address]);
            }
            if let Some(config) = &on.ssh_config {
                command.arg("--ssh-config").arg(config);
            }
            command
                .args([version, name, data_dir])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .context("cannot start the guard that removes the new cluster if the command is interrupted")
        });
    match started {
        Ok(child) => Some(child),
        Err(error) => {
            eprintln!("note: {error:#}");
            None
        }
    }
}

/// Lets the guard remove the cluster (its standard input ends without "done"), and waits for
/// it to have done so.
pub fn abandon(mut guard: Child) {
    drop(guard.stdin.take());
    let _ = guard.wait();
}

/// Tells the guard the cluster is taken care of, and waits for it to exit.
pub fn finish(mut guard: Child) {
    if let Some(mut stdin) = guard.stdin.take() {
        let _ = writeln!(stdin, "{DONE}");
    }
    let _ = guard.wait();
}
