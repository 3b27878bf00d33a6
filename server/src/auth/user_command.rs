//! `saulpos-server user add|passwd|disable|list`: the users of the configured database, with the
//! server's own configuration. A password comes from a prompt, or from standard input when that
//! is not a terminal; never from the command line.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::Subcommand;

use super::password::Hasher;
use super::users::{self, Role};
use crate::config::Config;
use crate::db;

/// Manage the users who can log in (the database and Argon2 settings come from the same
/// SAULPOS_* variables and profile as the server's).
#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is asked for twice, or read from standard input when it is not
    /// a terminal (e.g. `user add ann --role cashier < password-file`).
    Add {
        /// The user name: a-z, 0-9, '.', '_', '-'.
        name: String,
        /// cashier, manager or admin.
        #[arg(long)]
        role: Role,
    },
    /// Set a user's password (and enable them again); their tokens end.
    Passwd { name: String },
    /// Disable a user: they cannot log in, and their tokens end.
    Disable { name: String },
    /// List the users: name, role, enabled or disabled, created.
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// The shortest password accepted.
const MIN_PASSWORD: usize = 8;

impl UserCommand {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        let pool = db::connect_with_retry(&config.database).await?;
        db::migrate(&pool).await?;
        match self {
            UserCommand::Add { name, role } => {
                users::check_username(&name).map_err(anyhow::Error::msg)?;
                if users::find(&mut *pool.acquire().await?, &name)
                    .await?
                    .is_some()
                {
                    bail!(
                        "user {name} exists: use `saulpos-server user passwd {name}` to set a new password"
                    );
                }
                let hash = hash_new_password(&config, &name)?;
                if !users::add(&pool, &name, role, &hash).await? {
                    bail!("user {name} exists: use `saulpos-server user passwd {name}`");
                }
                println!("added user {name} ({role})");
            }
            UserCommand::Passwd { name } => {
                if users::find(&mut *pool.acquire().await?, &name)
                    .await?
                    .is_none()
                {
                    bail!("no user {name}: `saulpos-server user list` shows them");
                }
                let hash = hash_new_password(&config, &name)?;
                if !users::set_password(&pool, &name, &hash).await? {
                    bail!("no user {name}: `saulpos-server user list` shows them");
                }
                println!("set a new password for {name}; their tokens ended");
            }
            UserCommand::Disable { name } => {
                if !users::disable(&pool, &name).await? {
                    bail!("no user {name}: `saulpos-server user list` shows them");
                }
                println!("disabled {name}; their tokens ended");
            }
            UserCommand::List { json } => {
                let listed = users::list(&pool).await?;
                if json {
                    println!("{}", serde_json::to_string(&listed)?);
                } else {
                    println!("{:<24} {:<8} {:<9} created", "user", "role", "state");
                    for user in listed {
                        println!(
                            "{:<24} {:<8} {:<9} {}",
                            user.username,
                            user.role,
                            if user.disabled { "disabled" } else { "enabled" },
                            user.created_at
                        );
                    }
                }
            }
        }
        pool.close().await;
        Ok(())
    }
}

/// Reads a new password (prompt twice on a terminal, else standard input) and hashes it.
fn hash_new_password(config: &Config, name: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("again: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            bail!("the two passwords differ; nothing changed");
        }
        first
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        text.strip_suffix('\n')
            .map(|text| text.strip_suffix('\r').unwrap_or(text))
            .unwrap_or(&text)
            .to_owned()
    };
    if password.chars().count() < MIN_PASSWORD {
        bail!("the password is shorter than {MIN_PASSWORD} characters; nothing changed");
    }
    Hasher::new(&config.auth.argon2)?.hash(&password)
}
