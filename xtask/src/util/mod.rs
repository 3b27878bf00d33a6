//! Small helpers every command shares: durable writes, progress lines, UTC times, git, typed
//! confirmations, and the environment file.

pub mod confirm;
pub mod durable;
pub mod env_file;
pub mod git;
pub mod interrupt;
pub mod progress;
pub mod utc;
