//! pgBackRest, the tool the archive commands drive: its command line (as the postgres user on
//! the database host, progress read from its per-file lines), its configuration file, and its
//! `info --output=json`, the output it keeps stable across versions. The commands above this
//! module speak the operator's words (a time, a table); only this one knows the tool's.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::database::archive::host::DbHost;
use crate::deploy::remote::shell_quote;
use crate::util::progress::step;

/// One stanza of one configuration file.
pub struct PgBackRest {
    pub config: String,
    pub stanza: String,
}

impl PgBackRest {
    /// Refuses a configuration path or stanza name that could mean something else to the
    /// tools (a relative path, a line break, an option).
    pub fn new(config: &str, stanza: &str) -> anyhow::Result<PgBackRest> {
        if !config.starts_with('/') || config.contains(['\n', '\r', '\0']) {
            bail!(
                "--config {config:?}: give the configuration file's absolute path on the database host, e.g. /etc/pgbackrest/pgbackrest.conf"
            );
        }
        if stanza.is_empty()
            || stanza.len() > 63
            || stanza.starts_with(['-', '.'])
            || !stanza
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "--stanza {stanza:?}: a stanza is 1 to 63 letters, digits, '-', '_' or '.', e.g. saulpos"
            );
        }
        Ok(PgBackRest {
            config: config.to_owned(),
            stanza: stanza.to_owned(),
        })
    }

    /// The tool's command line for `command`: our configuration and stanza, errors on stderr,
    /// per-file detail on stdout when `detail` (the progress), else nothing there.
    fn argv(&self, command: &str, options: &[String], detail: bool) -> Vec<String> {
        let mut argv = vec![
            "pgbackrest".to_owned(),
            format!("--config={}", self.config),
            format!("--stanza={}", self.stanza),
            format!(
                "--log-level-console={}",
                if detail { "detail" } else { "off" }
            ),
            "--log-level-stderr=warn".to_owned(),
        ];
        argv.extend(options.iter().cloned());
        argv.push(command.to_owned());
        argv
    }

    /// Runs `command` to its end and returns what it printed on stdout.
    pub fn run(&self, host: &DbHost, command: &str, options: &[String]) -> anyhow::Result<String> {
        let argv = self.argv(command, options, false);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        host.postgres_ok(&format!("run pgbackrest {command}"), &argv, None)
            .map_err(explain)
    }

    /// Runs a long `command` (backup, restore), printing its progress from its per-file lines:
    /// a line a tenth of the way (at most one a second), and at least every 10 s.
    pub fn run_with_progress(
        &self,
        host: &DbHost,
        command: &str,
        options: &[String],
        started: Instant,
    ) -> anyhow::Result<()> {
        let argv = self.argv(command, options, true);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = host
            .postgres_command(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run pgbackrest {command} on {}", host.label()))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut shown_tenth = 0;
        let mut shown_at = Instant::now();
        let mut last = None;
        for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
            let Ok(line) = line else { break };
            let Some((bytes, percent)) = file_progress(&line) else {
                continue;
            };
            last = Some((bytes.to_owned(), percent));
            let tenth = (percent / 10.0) as u32;
            let since = shown_at.elapsed();
            if (tenth > shown_tenth && since >= Duration::from_secs(1))
                || since >= Duration::from_secs(10)
            {
                shown_tenth = tenth;
                shown_at = Instant::now();
                step(
                    started,
                    &format!("{command}: {percent:.0} % (file of {bytes})"),
                );
            }
        }
        let status = child.wait()?;
        let said = errors.join().unwrap_or_default();
        if !status.success() {
            return Err(explain(anyhow::anyhow!(
                "pgbackrest {command} on {} failed ({status}): {}",
                host.label(),
                said.trim()
            )));
        }
        if let Some((_, percent)) = last
            && percent < 100.0
        {
            step(started, &format!("{command}: 100 %"));
        }
        Ok(())
    }

    /// `info --output=json` of this stanza.
    pub fn info(&self, host: &DbHost) -> anyhow::Result<Info> {
        let printed = self.run(host, "info", &["--output=json".to_owned()])?;
        Info::parse(&printed, &self.stanza)
    }

    /// The `archive_command` PostgreSQL runs for every completed WAL segment.
    pub fn archive_command(&self) -> String {
        format!(
            "pgbackrest {} {} archive-push %p",
            shell_quote(&format!("--config={}", self.config)),
            shell_quote(&format!("--stanza={}", self.stanza)),
        )
    }
}

/// `(8KB, 45.67%)` of a `backup file` or `restore file` line: the file's size and how far the
/// whole command is.
fn file_progress(line: &str) -> Option<(&str, f64)> {
    if !line.contains(" file ") {
        return None;
    }
    let open = line.find(" (")?;
    let inside = &line[open + 2..];
    let close = inside.find(')')?;
    let (size, percent) = inside[..close].split_once(", ")?;
    let percent: f64 = percent.strip_suffix('%')?.parse().ok()?;
    Some((size, percent))
}

/// The hint for what pgBackRest says in a known way.
fn explain(error: anyhow::Error) -> anyhow::Error {
    let text = format!("{error:#}");
    let hint = if text.contains("unable to open missing file") && text.contains(".conf") {
        "hint: run `cargo xtask archive setup` first, or give --config the file setup wrote"
    } else if text.contains("does not exist") && text.contains("stanza") {
        "hint: run `cargo xtask archive setup` (it creates the stanza), or check --stanza"
    } else if text.contains("unable to acquire lock") {
        "hint: another pgBackRest command of this stanza is running; wait for it and run again"
    } else if text.contains("[028]") || text.contains("archive_mode") {
        "hint: archiving is off or not set up; run `cargo xtask archive setup`"
    } else {
        return error;
    };
    error.context(hint)
}

/// What `info` says of a stanza.
#[derive(Debug)]
pub struct Info {
    pub status_code: i64,
    pub status_message: String,
    pub backup_running: bool,
    pub cipher: String,
    /// The PostgreSQL major version of the stanza's newest database, e.g. `15`.
    pub pg_version: Option<String>,
    pub backups: Vec<BackupSet>,
    /// The oldest and newest WAL segment in the repository.
    pub archive_min: Option<String>,
    pub archive_max: Option<String>,
}

/// One backup in the repository.
#[derive(Debug, Clone)]
pub struct BackupSet {
    pub label: String,
    pub kind: String,
    /// Unix seconds.
    pub start: i64,
    pub stop: i64,
    pub size: u64,
    pub repository_size: u64,
    pub wal_start: String,
    pub wal_stop: String,
}

impl Info {
    pub fn parse(json: &str, stanza: &str) -> anyhow::Result<Info> {
        let all: Value = serde_json::from_str(json)
            .context("pgbackrest info --output=json printed something that is not JSON")?;
        let Some(found) = all
            .as_array()
            .and_then(|stanzas| stanzas.iter().find(|one| one["name"] == stanza))
        else {
            bail!("pgbackrest info knows no stanza {stanza:?}; run `cargo xtask archive setup`");
        };
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let backups = found["backup"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|backup| backup["error"] != true)
            .map(|backup| BackupSet {
                label: text(&backup["label"]),
                kind: text(&backup["type"]),
                start: backup["timestamp"]["start"].as_i64().unwrap_or(0),
                stop: backup["timestamp"]["stop"].as_i64().unwrap_or(0),
                size: backup["info"]["size"].as_u64().unwrap_or(0),
                repository_size: backup["info"]["repository"]["size"].as_u64().unwrap_or(0),
                wal_start: text(&backup["archive"]["start"]),
                wal_stop: text(&backup["archive"]["stop"]),
            })
            .collect();
        let archives = found["archive"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let archive_min = archives
            .iter()
            .filter_map(|archive| archive["min"].as_str())
            .min()
            .map(str::to_owned);
        let archive_max = archives
            .iter()
            .filter_map(|archive| archive["max"].as_str())
            .max()
            .map(str::to_owned);
        Ok(Info {
            status_code: found["status"]["code"].as_i64().unwrap_or(-1),
            status_message: text(&found["status"]["message"]),
            backup_running: found["status"]["lock"]["backup"]["held"] == true,
            cipher: text(&found["cipher"]),
            pg_version: found["db"]
                .as_array()
                .and_then(|databases| databases.last())
                .and_then(|database| database["version"].as_str())
                .map(str::to_owned),
            backups,
            archive_min,
            archive_max,
        })
    }
}

/// A configuration file's `key=value` lines by section, as pgBackRest reads them.
pub struct ConfigFile {
    lines: Vec<(String, String, String)>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> ConfigFile {
        let mut section = String::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(name) = line
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
            {
                section = name.trim().to_owned();
            } else if let Some((key, value)) = line.split_once('=') {
                lines.push((
                    section.clone(),
                    key.trim().to_owned(),
                    value.trim().to_owned(),
                ));
            }
        }
        ConfigFile { lines }
    }

    /// The value of `key` in `section`, else in `[global]`.
    pub fn value(&self, section: &str, key: &str) -> Option<&str> {
        let find = |wanted: &str| {
            self.lines
                .iter()
                .rev()
                .find(|(name, found, _)| name == wanted && found == key)
                .map(|(_, _, value)| value.as_str())
        };
        find(section).or_else(|| find("global"))
    }
}

/// What `archive setup` writes: one encrypted repository, retention, and the stanza's cluster.
pub struct Settings<'a> {
    pub stanza: &'a str,
    pub repo: &'a str,
    pub passphrase: &'a str,
    pub retention_full: u16,
    pub pg_path: &'a str,
    pub pg_port: u16,
}

impl Settings<'_> {
    pub fn render(&self) -> String {
        format!(
            "# Written by `cargo xtask archive setup`. The passphrase below is the only key to the\n\
             # repository: keep a copy in your secret store; never share this file.\n\
             [global]\n\
             repo1-path={repo}\n\
             repo1-cipher-type=aes-256-cbc\n\
             repo1-cipher-pass={passphrase}\n\
             repo1-retention-full={retention}\n\
             start-fast=y\n\
             process-max=2\n\
             compress-type=lz4\n\
             \n\
             [{stanza}]\n\
             pg1-path={pg_path}\n\
             pg1-port={pg_port}\n",
            repo = self.repo,
            passphrase = self.passphrase,
            retention = self.retention_full,
            stanza = self.stanza,
            pg_path = self.pg_path,
            pg_port = self.pg_port,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_configuration_reads_back_and_a_stanza_overrides_global() {
        let text = Settings {
            stanza: "saulpos",
            repo: "/var/lib/pgbackrest",
            passphrase: "p",
            retention_full: 3,
            pg_path: "/var/lib/postgresql/15/main",
            pg_port: 5433,
        }
        .render();
        let config = ConfigFile::parse(&text);
        assert_eq!(config.value("saulpos", "pg1-port"), Some("5433"));
        assert_eq!(
            config.value("saulpos", "repo1-path"),
            Some("/var/lib/pgbackrest")
        );
        assert_eq!(config.value("saulpos", "repo1-retention-full"), Some("3"));
        assert_eq!(config.value("other", "pg1-path"), None);
        let overridden = ConfigFile::parse("[global]\nrepo1-path=/a\n[s]\nrepo1-path = /b\n");
        assert_eq!(overridden.value("s", "repo1-path"), Some("/b"));
    }

    #[test]
    fn progress_is_read_from_the_per_file_lines() {
        let line = "2026-12-06 06:12:43.215 P01 DETAIL: backup file /var/lib/postgresql/15/main/base/5/16397 (195.3MB, 89.74%) checksum 6a51";
        assert_eq!(file_progress(line), Some(("195.3MB", 89.74)));
        assert_eq!(
            file_progress("P00 INFO: backup start archive = 0000000100"),
            None
        );
    }

    #[test]
    fn stanza_names_and_config_paths_that_could_mean_something_else_are_refused() {
        assert!(PgBackRest::new("/etc/pgbackrest/pgbackrest.conf", "saulpos").is_ok());
        for (config, stanza) in [
            ("pgbackrest.conf", "saulpos"),
            ("/etc/a\nb", "saulpos"),
            ("/etc/p.conf", "--repo1-path=/tmp"),
            ("/etc/p.conf", "a b"),
            ("/etc/p.conf", ""),
        ] {
            assert!(
                PgBackRest::new(config, stanza).is_err(),
                "{config:?} {stanza:?}"
            );
        }
    }

    #[test]
    fn info_gives_the_backups_the_archive_range_and_the_status() {
        let json = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000007","min":"000000010000000000000001"}],
            "backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"error":false,
            "info":{"delta":23177727,"repository":{"delta":3076752,"size":3076752},"size":23177727},"label":"20261206-060835F",
            "timestamp":{"start":1796537315,"stop":1796537318},"type":"full"}],"cipher":"aes-256-cbc",
            "db":[{"id":1,"repo-key":1,"system-id":7716068984836656657,"version":"15"}],"name":"saulpos",
            "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;
        let info = Info::parse(json, "saulpos").unwrap();
        assert_eq!(info.backups.len(), 1);
        assert_eq!(info.backups[0].stop, 1_796_537_318);
        assert_eq!(info.backups[0].repository_size, 3_076_752);
        assert_eq!(
            info.archive_max.as_deref(),
            Some("000000010000000000000007")
        );
        assert_eq!((info.status_code, info.cipher.as_str()), (0, "aes-256-cbc"));
        assert_eq!(info.pg_version.as_deref(), Some("15"));
        assert!(
            Info::parse(json, "other")
                .unwrap_err()
                .to_string()
                .contains("archive setup")
        );
    }
}
