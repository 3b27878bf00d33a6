//! `cargo xtask`: release and operations tasks for the SaulPOS server.
//!
//! This file only parses flags and dispatches; each subcommand is a module of its own.

mod bench;
mod cut;
mod database;
mod deploy;
#[cfg(test)]
mod docs_check;
mod flags;
mod incident;
mod release;
mod testing;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let flags = flags::Xtask::parse();
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: flags::Xtask) -> anyhow::Result<()> {
    let sh = &xshell::Shell::new()?;
    sh.change_dir(project_root());
    match flags.command {
        flags::Command::Release(cmd) => cmd.run(sh),
        flags::Command::VerifyTag(cmd) => cmd.run(),
        flags::Command::Package(cmd) => cmd.run(sh),
        flags::Command::Verify(cmd) => cmd.run(sh),
        flags::Command::Kubernetes(cmd) => cmd.run(),
        flags::Command::PushImage(cmd) => cmd.run(sh),
        flags::Command::Backup(cmd) => cmd.run(sh),
        flags::Command::Restore(cmd) => cmd.run(sh),
        flags::Command::RestoreGuard(cmd) => cmd.run(),
        flags::Command::Archive(cmd) => cmd.run(),
        flags::Command::ArchiveGuard(cmd) => cmd.run(),
        flags::Command::Deploy(cmd) => cmd.run(sh),
        flags::Command::Rollback(cmd) => cmd.run(sh),
        flags::Command::Status(cmd) => cmd.run(sh),
        flags::Command::Health(cmd) => cmd.run(),
        flags::Command::Smoke(cmd) => cmd.run(),
        flags::Command::Incident(cmd) => cmd.run(sh),
        flags::Command::Bench(cmd) => cmd.run(sh),
        flags::Command::Test(cmd) => cmd.run(),
    }
}

/// The workspace root: the folder above this crate. `cargo xtask` (cargo run) sets
/// CARGO_MANIFEST_DIR when it starts the binary, so a checkout copied elsewhere works on itself;
/// the path baked in at compile time is only the fallback for the binary started directly.
pub fn project_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        // Inherited from another crate's run (a test harness), it names that crate: ignore it.
        .filter(|dir| dir.ends_with("xtask") && dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}
