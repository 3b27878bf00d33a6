//! Ctrl-C (SIGINT) and SIGTERM during a rollout: noted, never obeyed half-way. The work in flight
//! finishes (each host ends on a complete release), nothing new starts, and the caller reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// Set once SIGINT or SIGTERM arrived after [`Interrupt::catch`].
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// From now on, SIGINT and SIGTERM set the flag instead of ending the process. Children that
    /// must not see the terminal's Ctrl-C are started in a process group of their own.
    pub fn catch() -> anyhow::Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        Ok(Interrupt(flag))
    }

    pub fn happened(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
