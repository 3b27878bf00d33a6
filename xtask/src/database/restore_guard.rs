//! `cargo xtask restore-guard` (hidden): the process a restore starts beside itself, in a
//! process group of its own, so that a restore that dies where it cannot clean up (Ctrl-C on
//! the terminal, a kill, a lost SSH session) still drops its scratch database.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::database::postgres::Server;
use crate::flags;

/// What the restore writes on the guard's standard input once it has cleaned up itself.
const DONE: &str = "done";

impl flags::RestoreGuard {
    pub fn run(self) -> anyhow::Result<()> {
        // Standard input ends when the restore exits, however it exits.
        let mut said = String::new();
        let _ = std::io::stdin().read_to_string(&mut said);
        if said.lines().any(|line| line == DONE) {
            return Ok(());
        }
        let server = Server {
            host: self.host,
            port: self.port,
            username: self.username,
        };
        // A swap in flight holds the scratch database: DROP waits for its transaction and then
        // finds the name still there (rolled back) or gone (renamed to the target: the restore
        // was done, and there is nothing to drop or to say).
        if !server.drop_database(&self.scratch)? {
            return Ok(());
        }
        // The terminal may be gone with the session: a message that cannot be written is lost.
        let _ = writeln!(
            std::io::stderr(),
            "restore of {:?} was interrupted: dropped its scratch database {:?}; {:?} was not changed",
            self.database,
            self.scratch,
            self.database
        );
        Ok(())
    }
}

/// Starts the guard of `scratch`. It runs in a process group of its own, so that Ctrl-C,
/// which reaches the restore and its pg_restore, does not reach it. `None` (with a note) if it
/// cannot start: the restore goes on, and a scratch database it leaves is named by the next.
pub fn start(server: &Server, database: &str, scratch: &str) -> Option<Child> {
    let started = std::env::current_exe()
        .context("cannot find this program to start its guard")
        .and_then(|program| {
            Command::new(program)
                .arg("restore-guard")
                .args([&server.host, &server.port.to_string(), &server.username])
                .args([database, scratch])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .context("cannot start the guard that drops the scratch database if the restore is interrupted")
        });
    match started {
        Ok(child) => Some(child),
        Err(error) => {
            eprintln!("note: {error:#}");
            None
        }
    }
}

/// Tells the guard the restore cleaned up itself (or swapped the scratch database in), and
/// waits for it to exit.
pub fn finish(mut guard: Child) {
    if let Some(mut stdin) = guard.stdin.take() {
        let _ = writeln!(stdin, "{DONE}");
    }
    let _ = guard.wait();
}
