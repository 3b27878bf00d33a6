//! The typed confirmation a destructive step asks for: the name of what it replaces, typed at a
//! terminal; with nobody at one, `--yes` is required.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

/// Asks `question` and wants `expected` (`noun`, e.g. "the database name") typed back;
/// `refused` is the error when no terminal can answer (it should say to pass `--yes`),
/// `not_confirmed` the one for a wrong answer.
pub fn typed(
    question: &str,
    noun: &str,
    expected: &str,
    refused: impl FnOnce() -> String,
    not_confirmed: &str,
) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("{}", refused());
    }
    eprint!("{question}\nType {noun} to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim_end_matches(['\n', '\r']) != expected {
        bail!("{not_confirmed}");
    }
    Ok(())
}
