//! PostgreSQL clusters of a test's own for the archive tests (archiving needs a restart, so never
//! the shared cluster on 5432): one made with `pg_createcluster` on a free port, its pgBackRest
//! configuration, repository and stanza in a folder of the test's, all removed afterwards with
//! every cluster a restore made beside it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{free_port, run, text};

/// PostgreSQL's major version here (the one the shared cluster runs).
pub fn pg_version() -> String {
    let listed = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .expect(
            "these tests need Debian's PostgreSQL cluster tools: apt-get install postgresql-common",
        );
    String::from_utf8(listed.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("pg_lsclusters lists no cluster; these tests need PostgreSQL installed")
        .to_owned()
}

/// `pg_lsclusters`' rows (version, name, port, status, data directory).
pub fn clusters() -> Vec<Vec<String>> {
    let listed = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .unwrap();
    String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The names of the clusters whose name starts with `prefix`.
pub fn clusters_named(prefix: &str) -> Vec<String> {
    clusters()
        .into_iter()
        .filter(|row| row.len() > 1 && row[1].starts_with(prefix))
        .map(|row| row[1].clone())
        .collect()
}

/// A live cluster with archiving to set up: its stanza is its name.
pub struct ArchivedCluster {
    pub version: String,
    pub name: String,
    pub port: u16,
    pub data_dir: String,
    pub dir: tempfile::TempDir,
}

impl ArchivedCluster {
    pub fn new(purpose: &str) -> ArchivedCluster {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // The counter first, so that no name starts with another's.
        let name = format!(
            "e2e{}-{purpose}-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::process::id()
        );
        let version = pg_version();
        let port = free_port();
        let made = Command::new("pg_createcluster")
            .args([
                "--start-conf=manual",
                "-p",
                &port.to_string(),
                &version,
                &name,
            ])
            .output()
            .unwrap();
        assert!(made.status.success(), "pg_createcluster: {}", text(&made));
        let started = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, &name, "start"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctlcluster start: {}",
            text(&started)
        );
        let dir = tempfile::tempdir().unwrap();
        // The postgres user writes the repository and reads the configuration in here.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        ArchivedCluster {
            data_dir: format!("/var/lib/postgresql/{version}/{name}"),
            version,
            name,
            port,
            dir,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("pgbackrest.conf")
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A folder of the test's for dumps.
    pub fn out(&self) -> PathBuf {
        let out = self.dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        out
    }

    /// `archive <config and stanza> <args>`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<String> {
        let mut all = vec![
            "archive".to_owned(),
            "--config".to_owned(),
            self.config().display().to_string(),
            "--stanza".to_owned(),
            self.name.clone(),
        ];
        all.extend(args.iter().map(|arg| arg.to_string()));
        all
    }

    /// `cargo xtask archive ... <args>` in the shared clone.
    pub fn archive(&self, args: &[&str]) -> Output {
        let all = self.args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&all)
    }

    /// The same, which must succeed: its whole output.
    #[track_caller]
    pub fn archive_ok(&self, args: &[&str]) -> String {
        let output = self.archive(args);
        assert!(
            output.status.success(),
            "`cargo xtask archive {}` failed:\n{}",
            args.join(" "),
            text(&output)
        );
        text(&output)
    }

    /// Archiving set up with a 1 s archive_timeout, the first full backup taken.
    pub fn set_up(&self) -> String {
        let port = self.port.to_string();
        let repo = self.repo().display().to_string();
        self.archive_ok(&[
            "setup",
            "--pg-path",
            &self.data_dir,
            "--pg-port",
            &port,
            "--repo",
            &repo,
            "--archive-timeout",
            "1s",
            "--restart",
        ])
    }

    /// The repository passphrase setup wrote into the configuration.
    pub fn passphrase(&self) -> String {
        let config = fs::read_to_string(self.config()).unwrap();
        config
            .lines()
            .find_map(|line| line.strip_prefix("repo1-cipher-pass="))
            .expect("the configuration names a passphrase")
            .to_owned()
    }

    /// SQL on `database` of this cluster (or the one at `port`), as the postgres user.
    pub fn sql_at(port: u16, database: &str, sql: &str) -> String {
        let output = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "psql",
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-p", &port.to_string(), "-d", database, "-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql on port {port}: {sql}: {}",
            text(&output)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .trim_end()
            .to_owned()
    }

    pub fn sql(&self, database: &str, sql: &str) -> String {
        ArchivedCluster::sql_at(self.port, database, sql)
    }

    /// Now, as the cluster's clock says it, written for `--to`.
    pub fn now(&self) -> String {
        self.sql(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        )
    }
}

impl Drop for ArchivedCluster {
    fn drop(&mut self) {
        // The live cluster, and those a restore made beside it (named for the stanza).
        for name in clusters_named(&self.name) {
            let _ = Command::new("pg_dropcluster")
                .args(["--stop", &self.version, &name])
                .output();
        }
        // Data directories a switch kept aside.
        let parent = Path::new(&self.data_dir).parent().unwrap().to_owned();
        if let Ok(entries) = fs::read_dir(&parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&self.name) {
                    let _ = fs::remove_dir_all(entry.path());
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let _ = fs::remove_dir_all(format!("/etc/postgresql/{}/{}", self.version, self.name));
        for entry in fs::read_dir("/var/log/pgbackrest")
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&self.name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}
