//! Progress lines on stderr: each step of a long command with the time since it started.

use std::time::Instant;

/// Prints `[  12.34s] message`.
pub fn step(started: Instant, message: &str) {
    eprintln!("[{:>7.2}s] {message}", started.elapsed().as_secs_f64());
}
