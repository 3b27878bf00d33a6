//! Small helpers every command shares: durable writes, progress lines, UTC times, git, and the
//! payload's environment file.

pub mod durable;
pub mod env_file;
pub mod git;
pub mod interrupt;
pub mod progress;
pub mod utc;
