//! A guard: a hidden subcommand a command starts beside itself, in a process group of its own,
//! that cleans up what the command made when the command dies where it cannot (Ctrl-C, a kill,
//! a lost SSH session). The command writes "done" on the guard's standard input once it has
//! taken care of that itself; standard input ends when the command exits, however it exits.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// What the command writes on its guard's standard input once the guard has nothing to do.
const DONE: &str = "done";

/// In the guard: waits for the command to exit; whether it said it was done.
pub fn released() -> bool {
    let mut said = String::new();
    let _ = std::io::stdin().read_to_string(&mut said);
    said.lines().any(|line| line == DONE)
}

/// Starts this program's `args` as a guard that `cleans` (for the note if it cannot start).
/// `None`, with a note, when it cannot start: the command goes on without one.
pub fn start<I, S>(args: I, cleans: &str) -> Option<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let started = std::env::current_exe()
        .context("cannot find this program to start its guard")
        .and_then(|program| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| {
                    format!("cannot start the guard that {cleans} if the command is interrupted")
                })
        });
    match started {
        Ok(child) => Some(child),
        Err(error) => {
            eprintln!("note: {error:#}");
            None
        }
    }
}

/// Tells the guard it has nothing to do, and waits for it to exit.
pub fn finish(mut guard: Child) {
    if let Some(mut stdin) = guard.stdin.take() {
        let _ = writeln!(stdin, "{DONE}");
    }
    let _ = guard.wait();
}

/// Lets the guard clean up (its standard input ends without "done"), and waits for it to have
/// done so.
pub fn abandon(mut guard: Child) {
    drop(guard.stdin.take());
    let _ = guard.wait();
}
