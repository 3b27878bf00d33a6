//! `cargo xtask archive`: continuous WAL archiving and point-in-time restore through
//! pgBackRest, on the database host or over SSH. One file a command (`setup`, `backup`,
//! `status`, `restore`, `extract`); what they share: the host (`host`), its clusters
//! (`cluster`), the archiver's state (`archiver`), the restorable window (`window`), a cluster
//! restored to a point in time (`pitr`) and its guard (`guard`). The tool's own flags and files
//! are in `database/pgbackrest.rs`.

pub mod archiver;
mod backup;
pub mod cluster;
mod extract;
pub mod guard;
pub mod host;
mod pitr;
mod restore;
mod setup;
pub mod status;
mod window;

use anyhow::{Context as _, bail};

use crate::database::pgbackrest::{ConfigFile, Info, PgBackRest};
use crate::flags;
use archiver::Archiver;
use cluster::Cluster;
use host::DbHost;
use window::Window;

impl flags::Archive {
    pub fn run(self) -> anyhow::Result<()> {
        let pgbackrest = PgBackRest::new(&self.on.config, &self.on.stanza)?;
        // What can be refused without the host is refused before it is reached.
        match &self.what {
            flags::ArchiveWhat::Setup(setup) => setup::check_flags(setup)?,
            flags::ArchiveWhat::Restore(restore) => restore::check_flags(restore)?,
            flags::ArchiveWhat::Extract(extract) => extract::check_flags(extract)?,
            flags::ArchiveWhat::Backup(_) | flags::ArchiveWhat::Status(_) => {}
        }
        let host = DbHost::connect(&self.on)?;
        let context = Context {
            host,
            pgbackrest,
            on: self.on.clone(),
        };
        match self.what {
            flags::ArchiveWhat::Setup(setup) => setup::run(setup, &context),
            flags::ArchiveWhat::Backup(backup) => backup::run(backup, &context),
            flags::ArchiveWhat::Status(status) => status::run(status, &context),
            flags::ArchiveWhat::Restore(restore) => restore::run(restore, &context),
            flags::ArchiveWhat::Extract(extract) => extract::run(extract, &context),
        }
    }
}

/// What every archive command works with.
pub struct Context {
    pub host: DbHost,
    pub pgbackrest: PgBackRest,
    pub on: flags::ArchiveOn,
}

/// The stanza as its configuration file describes it.
pub struct Configured {
    pub pg_path: String,
    pub pg_port: u16,
    pub repo: String,
}

impl Context {
    /// `cargo xtask archive <what>` with this run's host, configuration and stanza, to print as
    /// a next step.
    pub fn command_line(&self, what: &str) -> String {
        use crate::deploy::remote::shell_quote;
        let mut line = format!("cargo xtask archive {what}");
        if let Some(on) = &self.on.on {
            line.push_str(&format!(" --on {}", shell_quote(on)));
        }
        if let Some(config) = &self.on.ssh_config {
            line.push_str(&format!(
                " --ssh-config {}",
                shell_quote(&config.to_string_lossy())
            ));
        }
        if self.on.config != flags::DEFAULT_PGBACKREST_CONFIG {
            line.push_str(&format!(" --config {}", shell_quote(&self.on.config)));
        }
        if self.on.stanza != flags::DEFAULT_STANZA {
            line.push_str(&format!(" --stanza {}", shell_quote(&self.on.stanza)));
        }
        line
    }

    /// The configuration file's text, or `None` when there is none.
    fn read_config(&self) -> anyhow::Result<Option<String>> {
        let printed = self.host.script_ok(
            &format!("read {}", self.pgbackrest.config),
            r#"if [ -e "$1" ]; then printf 'present\n'; cat -- "$1"; else printf 'absent\n'; fi"#,
            &[&self.pgbackrest.config],
            None,
        )?;
        Ok(printed.strip_prefix("present\n").map(str::to_owned))
    }

    /// The repository's passphrase, for redactors only.
    pub fn passphrase(&self) -> anyhow::Result<Option<String>> {
        Ok(self.read_config()?.and_then(|text| {
            ConfigFile::parse(&text)
                .value(&self.pgbackrest.stanza, "repo1-cipher-pass")
                .map(str::to_owned)
        }))
    }

    /// The stanza's cluster and repository, from its configuration file.
    pub fn configured(&self) -> anyhow::Result<Configured> {
        let stanza = &self.pgbackrest.stanza;
        let Some(text) = self.read_config()? else {
            bail!(
                "there is no pgBackRest configuration {} on {}: run `cargo xtask archive setup --pg-path DIR --pg-port PORT` first (or give --config the file it wrote)",
                self.pgbackrest.config,
                self.host.label()
            );
        };
        let config = ConfigFile::parse(&text);
        let value = |key: &str| {
            config.value(stanza, key).with_context(|| {
                format!(
                    "{} names no {key} for stanza {stanza:?}: is --stanza right? (`cargo xtask archive setup` writes both)",
                    self.pgbackrest.config
                )
            })
        };
        Ok(Configured {
            pg_path: value("pg1-path")?.to_owned(),
            pg_port: config
                .value(stanza, "pg1-port")
                .unwrap_or("5432")
                .parse()
                .context("pg1-port is not a port number")?,
            repo: value("repo1-path")?.to_owned(),
        })
    }

    /// The live cluster the configuration names, if it is a cluster here.
    pub fn live(&self, configured: &Configured) -> anyhow::Result<Option<Cluster>> {
        cluster::by_data_dir(&self.host, &configured.pg_path)
    }

    /// The backups, the archiver (when the live cluster answers) and the restorable window.
    pub fn state(&self, configured: &Configured) -> anyhow::Result<State> {
        let info = self.pgbackrest.info(&self.host)?;
        let archiver = Archiver::read(&self.host, configured.pg_port);
        let window = Window::find(
            &self.host,
            &info,
            archiver.as_ref().ok(),
            &configured.repo,
            &self.pgbackrest.stanza,
        )?;
        Ok(State {
            info,
            archiver,
            window,
        })
    }
}

impl Context {
    /// What a restore to `target` (as the operator wrote it: `given`) starts from, once it is
    /// known to be inside the window: the configuration, the live cluster (if it is here), and
    /// PostgreSQL's major version for the new cluster. A running live cluster first writes one
    /// commit (an empty transaction's) and switches its WAL into the repository, so that a
    /// target up to now has a commit after it to stop at; nothing else of it changes.
    pub fn ready_to_restore(
        &self,
        target: i64,
        given: &str,
        started: std::time::Instant,
    ) -> anyhow::Result<Ready> {
        let configured = self.configured()?;
        let live = self.live(&configured)?;
        if let Some(live) = live.as_ref().filter(|live| live.online) {
            let archived = live
                .psql(&self.host, "postgres", "SELECT pg_current_xact_id()", &[])
                .and_then(|_| self.pgbackrest.run(&self.host, "check", &[]));
            match archived {
                Ok(_) => crate::util::progress::step(
                    started,
                    &format!(
                        "{} switched its WAL into the repository: the window reaches now",
                        live.id()
                    ),
                ),
                Err(error) => eprintln!(
                    "note: the live cluster's newest WAL did not reach the repository ({error:#}); the window ends at the newest archived WAL"
                ),
            }
        }
        let state = self.state(&configured)?;
        let window = state.window.as_ref().with_context(|| {
            format!(
                "stanza {:?} has no backup to restore from; nothing was created",
                self.pgbackrest.stanza
            )
        })?;
        window.check(target, given)?;
        let version = live
            .as_ref()
            .map(|live| live.version.clone())
            .or(state.info.pg_version.clone())
            .context("neither the live cluster nor pgbackrest info tells PostgreSQL's version")?;
        Ok(Ready {
            configured,
            live,
            version,
        })
    }
}

/// What a restore starts from (see [`Context::ready_to_restore`]).
pub struct Ready {
    pub configured: Configured,
    pub live: Option<Cluster>,
    pub version: String,
}

/// The archive at one moment.
pub struct State {
    pub info: Info,
    pub archiver: anyhow::Result<Archiver>,
    pub window: Option<Window>,
}
