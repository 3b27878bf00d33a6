//! The backup a deploy takes of its environment's database before it switches, and finding it
//! again for `rollback --with-data`. The database, user and password come from the payload's
//! `saulpos.env`; the password reaches `backup` and `restore` (run as this binary's own
//! subcommands) in PGPASSWORD, never on a command line.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::database::postgres;
use crate::deploy::installation::Installation;
use crate::release::checksum;
use crate::util::env_file;

/// Where the environment's database is, as its `saulpos.env` says.
pub struct Connection {
    pub host: String,
    pub port: String,
    pub name: String,
    pub username: String,
    password: Option<String>,
}

impl Connection {
    /// The database of the installed folder's `saulpos.env`, if it names one (with its user).
    pub fn of(installation: &Installation) -> Option<Connection> {
        let text = fs::read_to_string(installation.dir.join("saulpos.env")).ok()?;
        let database = env_file::database(&text)?;
        let username =
            env_file::value(&text, "SAULPOS_DB_USERNAME").filter(|name| !name.is_empty())?;
        if database.name.is_empty() {
            return None;
        }
        Some(Connection {
            host: database.host,
            port: database.port,
            name: database.name,
            username,
            password: env_file::value(&text, "SAULPOS_DB_PASSWORD")
                .filter(|password| !password.is_empty()),
        })
    }

    /// `cargo xtask <subcommand> <host> <port> <database> <user> ...`: this binary, with the
    /// password in its environment.
    fn xtask(&self, subcommand: &str) -> anyhow::Result<Command> {
        let mut command =
            Command::new(std::env::current_exe().context("cannot find this xtask binary")?);
        command
            .arg(subcommand)
            .args([&self.host, &self.port, &self.name, &self.username]);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        Ok(command)
    }

    /// The databases restores kept of this one under dated names (`<name>_before_<UTC time>`),
    /// oldest first, as the server lists them now.
    pub fn kept_databases(&self) -> anyhow::Result<Vec<String>> {
        let server = postgres::Server {
            host: self.host.clone(),
            port: self.port.parse().context("the port of SAULPOS_DB_URL")?,
            username: self.username.clone(),
        };
        let prefix = postgres::identifier_with_suffix(&self.name, "_before_20260101T000000Z");
        let prefix = &prefix[..prefix.len() - "_before_20260101T000000Z".len()];
        let rows = server.psql_as(
            "postgres",
            "SELECT datname FROM pg_database WHERE left(datname, length(:'prefix')) = :'prefix' \
             AND substr(datname, length(:'prefix') + 1) ~ '^_before_[0-9]{8}T[0-9]{6}Z$' \
             ORDER BY datname",
            &[("prefix", prefix)],
            self.password.as_deref(),
        )?;
        Ok(rows.lines().map(str::to_owned).collect())
    }

    /// The command that drops a kept database, with this connection's host, port and user.
    pub fn drop_command(&self, database: &str) -> String {
        format!(
            "psql -h {} -p {} -U {} -d postgres -c 'DROP DATABASE \"{database}\"'",
            self.host, self.port, self.username
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "{} at {}:{} as {}",
            self.name, self.host, self.port, self.username
        )
    }
}

/// A verified backup with its checksum.
pub struct Taken {
    pub file: PathBuf,
    pub sha256: String,
}

impl Taken {
    pub fn checksum_file(&self) -> PathBuf {
        let mut name = self.file.as_os_str().to_owned();
        name.push(".sha256");
        PathBuf::from(name)
    }
}

/// The backup the last deploy of `live` took, with the release that was live before it, from
/// the history; an error says why there is none.
pub fn before_deploy_of(history: &[Value], live: &str) -> anyhow::Result<(String, Taken)> {
    let deploy = history
        .iter()
        .rev()
        .find(|event| event["action"] == "deploy" && event["to"] == live && event["from"] != live)
        .with_context(|| format!("the history records no deploy of {live}"))?;
    let from = deploy["from"].as_str().unwrap_or_default().to_owned();
    match (deploy["backup"].as_str(), deploy["backup_sha256"].as_str()) {
        (Some(file), Some(sha256)) => Ok((
            from,
            Taken {
                file: PathBuf::from(file),
                sha256: sha256.to_owned(),
            },
        )),
        _ => bail!(
            "the deploy of {live} took no backup ({}); restore one by hand (docs/runbooks/restore.md) or roll back without --with-data",
            deploy["backup_skipped"]
                .as_str()
                .unwrap_or("no database in saulpos.env then")
        ),
    }
}

/// Checks that `taken` is on disk and still what was recorded, before anything changes.
pub fn check(taken: &Taken) -> anyhow::Result<()> {
    let checksum_file = taken.checksum_file();
    if !taken.file.is_file() || !checksum_file.is_file() {
        bail!(
            "the pre-deploy backup {} (or its .sha256) is missing; nothing was changed",
            taken.file.display()
        );
    }
    let (actual, _) = checksum::sha256_file(&taken.file)?;
    let (listed, _) = checksum::read(&checksum_file)?;
    if actual != taken.sha256 || listed != taken.sha256 {
        bail!(
            "the pre-deploy backup {} does not match the checksum the deploy recorded (sha256 {actual}, recorded {}): damaged or replaced; nothing was changed",
            taken.file.display(),
            taken.sha256
        );
    }
    Ok(())
}

/// The safe restore of `cargo xtask restore` (checksum, scratch database, swap, the old one
/// kept), always confirmed (`--yes`: the caller asked first); the name the data before was kept
/// under, if there was any.
pub fn restore(connection: &Connection, taken: &Taken) -> anyhow::Result<Option<String>> {
    let mut command = connection.xtask("restore")?;
    command
        .arg(&taken.file)
        .arg(taken.checksum_file())
        .args(["--yes", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let output = command.output().context("cannot run the restore")?;
    if !output.status.success() {
        bail!(
            "the restore of {} into {} failed (see above)",
            taken.file.display(),
            connection.describe()
        );
    }
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    Ok(summary["previous_database"].as_str().map(str::to_owned))
}
