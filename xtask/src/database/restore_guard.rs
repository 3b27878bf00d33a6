//! `cargo xtask restore-guard` (hidden): the process a restore starts beside itself, in a
//! process group of its own, so that a restore that dies where it cannot clean up (Ctrl-C on
//! the terminal, a kill, a lost SSH session) still drops its scratch database.

use std::io::Write;
use std::process::Child;

use crate::database::postgres::Server;
use crate::flags;
use crate::util::guard;

pub use guard::finish;

impl flags::RestoreGuard {
    pub fn run(self) -> anyhow::Result<()> {
        if guard::released() {
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
    let port = server.port.to_string();
    guard::start(
        [
            "restore-guard",
            &server.host,
            &port,
            &server.username,
            database,
            scratch,
        ],
        "drops the scratch database",
    )
}
