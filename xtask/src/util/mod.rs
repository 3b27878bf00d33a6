//! Small helpers every command shares: durable writes, progress lines, UTC times, git, typed
//! confirmations, the environment file, and the guards that clean up after a killed command.

pub mod confirm;
pub mod durable;
pub mod env_file;
pub mod git;
pub mod guard;
pub mod interrupt;
pub mod progress;
pub mod utc;
