//! `cargo xtask archive-guard` (hidden): the process `archive restore` and `archive extract`
//! start beside themselves, in a process group of their own, so that one killed where it cannot
//! clean up (Ctrl-C, a kill, a lost SSH session) still stops and removes the cluster it was
//! restoring. The live cluster is never the guard's business.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::database::archive::cluster::{self, Cluster};
use crate::database::archive::host::DbHost;
use crate::flags;

/// What the command writes on the guard's standard input once the cluster is kept or removed.
const DONE: &str = "done";

impl flags::ArchiveGuard {
    pub fn run(self) -> anyhow::Result<()> {
        // Standard input ends when the command exits, however it exits.
        let mut said = String::new();
        let _ = std::io::stdin().read_to_string(&mut said);
        if said.lines().any(|line| line == DONE) {
            return Ok(());
        }
        let host = DbHost::connect(&self.on)?;
        if cluster::by_name(&host, &self.version, &self.cluster)?.is_none() {
            return Ok(());
        }
        cluster::drop(&host, &self.version, &self.cluster)?;
        // The terminal may be gone with the session: a message that cannot be written is lost.
        let _ = writeln!(
            std::io::stderr(),
            "the restore into cluster {}/{} was interrupted: removed that cluster and its data directory {}; the live cluster was not touched",
            self.version,
            self.cluster,
            self.data_dir
        );
        Ok(())
    }
}

/// Starts the guard of `cluster`, in a process group of its own so that Ctrl-C does not reach
/// it. `None` (with a note) if it cannot start: the command goes on, and removes the cluster
/// itself when it fails.
pub fn start(on: &flags::ArchiveOn, cluster: &Cluster) -> Option<Child> {
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
                .args([&cluster.version, &cluster.name, &cluster.data_dir])
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

/// Tells the guard the cluster is taken care of, and waits for it to exit.
pub fn finish(mut guard: Child) {
    if let Some(mut stdin) = guard.stdin.take() {
        let _ = writeln!(stdin, "{DONE}");
    }
    let _ = guard.wait();
}
