//! The PostgreSQL client tools (`psql`, `pg_dump`, `pg_restore`): where to connect, how to
//! name a database safely, and running them with their messages kept.
//!
//! Passwords never travel on a command line: the tools read `PGPASSWORD` or `~/.pgpass`, and
//! run with `-w` so they fail instead of prompting.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A PostgreSQL server and the user to connect as.
#[derive(Clone, Debug)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub username: String,
}

impl Server {
    /// Connection arguments for `database`: host, port, user, never prompt, and the database as
    /// a quoted conninfo so that any name (spaces, quotes, `=`) means that database.
    pub fn args(&self, database: &str) -> Vec<OsString> {
        vec![
            "-h".into(),
            self.host.clone().into(),
            "-p".into(),
            self.port.to_string().into(),
            "-U".into(),
            self.username.clone().into(),
            "-w".into(),
            "-d".into(),
            conninfo_dbname(database).into(),
        ]
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Runs SQL through `psql` on `database`, with `vars` set as psql variables (use `:"name"`
    /// for identifiers and `:'name'` for literals); returns the unaligned output.
    pub fn psql(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
        self.psql_as(database, sql, vars, None)
    }

    /// [`Server::psql`] with this password in psql's environment (PGPASSWORD), never its
    /// command line.
    pub fn psql_as(
        &self,
        database: &str,
        sql: &str,
        vars: &[(&str, &str)],
        password: Option<&str>,
    ) -> anyhow::Result<String> {
        let output = self.psql_output(database, sql, vars, password)?;
        if !output.status.success() {
            bail!(
                "psql on database {database:?} at {} failed: {}",
                self.address(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    }

    /// What `psql` printed for `sql` on `database`, whether it succeeded or not (stdout holds
    /// the output of the statements that ran before a failure).
    pub fn psql_output(
        &self,
        database: &str,
        sql: &str,
        vars: &[(&str, &str)],
        password: Option<&str>,
    ) -> anyhow::Result<std::process::Output> {
        let mut command = tool("psql")?;
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(self.args(database));
        for (name, value) in vars {
            command.arg("-v").arg(format!("{name}={value}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start psql")?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(sql.as_bytes())
            .context("cannot send SQL to psql")?;
        child.wait_with_output().context("psql did not finish")
    }

    /// Drops `database`, ending the sessions still connected to it; whether it was there to
    /// drop (a name that is gone, or was renamed meanwhile, is not an error).
    pub fn drop_database(&self, database: &str) -> anyhow::Result<bool> {
        match self.psql(
            "postgres",
            "DROP DATABASE :\"name\" WITH (FORCE)",
            &[("name", database)],
        ) {
            Ok(_) => Ok(true),
            Err(_) if !self.database_exists(database)? => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether `database` exists on the server.
    pub fn database_exists(&self, database: &str) -> anyhow::Result<bool> {
        let found = self.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = :'name'",
            &[("name", database)],
        )?;
        Ok(found == "1")
    }
}

/// `dbname='...'` with libpq's quoting, so a database name is never read as a conninfo.
pub fn conninfo_dbname(database: &str) -> String {
    let escaped = database.replace('\\', "\\\\").replace('\'', "\\'");
    format!("dbname='{escaped}'")
}

/// A command for one of the client tools, or an error that says how to get it.
pub fn tool(name: &str) -> anyhow::Result<Command> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        bail!(
            "{name} is not on PATH; install the PostgreSQL client tools (e.g. apt-get install postgresql-client) and try again"
        );
    }
    Ok(Command::new(name))
}

/// A name PostgreSQL keeps whole: at most 63 bytes, cut on a character boundary.
pub fn identifier_with_suffix(base: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len());
    let mut end = base.len().min(room);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_database_names_are_quoted_and_long_ones_cut_on_a_character_boundary() {
        assert_eq!(conninfo_dbname("it's a\\b"), r"dbname='it\'s a\\b'");
        let long = "é".repeat(40);
        let name = identifier_with_suffix(&long, "_before_20261123T000000Z");
        assert!(name.len() <= 63, "{}", name.len());
        assert!(name.ends_with("_before_20261123T000000Z"));
    }
}
