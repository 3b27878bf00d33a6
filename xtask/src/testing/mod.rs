//! `cargo xtask test`: the README's one test command. It makes the machine ready (the tools the
//! tests run, PostgreSQL up), then runs the whole suite; `.ci/run` calls exactly it.

mod setup;

use std::process::Command;

use anyhow::{Context, bail};

use crate::flags;

impl flags::Test {
    pub fn run(self) -> anyhow::Result<()> {
        setup::tools(self.no_install)?;
        setup::postgres(self.no_install)?;
        if self.setup_only {
            eprintln!("test: the machine is ready (tools installed, PostgreSQL up)");
            return Ok(());
        }
        eprintln!(
            "test: cargo test --workspace --locked {} (the first run compiles for some minutes before any test starts)",
            self.args.join(" ")
        );
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["test", "--workspace", "--locked"])
            .args(&self.args)
            .current_dir(crate::project_root())
            .status()
            .context("cannot run cargo test")?;
        if !status.success() {
            bail!("the tests failed ({status}); see above");
        }
        Ok(())
    }
}
