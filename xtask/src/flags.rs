//! The command line of `cargo xtask`: every subcommand and every argument, with its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Release and operations tasks for the SaulPOS server.
///
/// Run from anywhere in the workspace as `cargo xtask <command>`. Human progress goes to
/// stderr; `--json` output goes to stdout.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Package(Package),
    Verify(Verify),
    Backup(Backup),
    Restore(Restore),
}

/// Build the server in release mode and write a reproducible release into dist/<version>/:
/// the tarball, its .sha256, manifest.txt and manifest.json.
#[derive(Args)]
pub struct Package {
    /// The release version: a semantic version MAJOR.MINOR.PATCH with optional -pre-release and
    /// +build metadata, e.g. 2.0.0 or 2.1.0-rc.1. A version already in dist/ is refused.
    pub version: String,
    /// Package even though the git tree has uncommitted changes; the manifest records it.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Package outside a git checkout; the manifest records the commit as "none".
    #[arg(long)]
    pub allow_no_git: bool,
    /// Print one JSON object describing the release on stdout when done (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Re-check a release folder: the checksum file against the archive, and the manifest against
/// the archive and every file inside it. Prints each problem; exits non-zero on any.
#[derive(Args)]
pub struct Verify {
    /// The version to check, as packaged: dist/<version>/ must exist.
    pub version: String,
    /// The folder holding the releases (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
    /// Print the result as one JSON object on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Back up a PostgreSQL database with pg_dump (custom format) into <backup-dir>:
/// <database>-<UTC time>.dump and <same>.dump.sha256, the dump verified by reading it whole.
///
/// The password comes from PGPASSWORD or ~/.pgpass, never from the command line.
#[derive(Args)]
pub struct Backup {
    /// The database server's host name or address.
    pub host: String,
    /// The database server's port, e.g. 5432.
    pub port: u16,
    /// The database to back up.
    pub database: String,
    /// The user to connect as.
    pub username: String,
    /// The folder to write the backup into; it must exist.
    pub backup_dir: PathBuf,
    /// pg_dump's compression level, 0 (none) to 9 (smallest, slowest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress: u32,
    /// After a successful backup, keep only this many verified backups of this database in the
    /// folder, removing the oldest.
    #[arg(long)]
    pub keep: Option<usize>,
    /// Print one JSON object describing the backup on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Restore a backup made by `cargo xtask backup` into <database>, safely: the checksum is
/// checked before any database is touched, the dump is restored into a scratch database, and
/// only a complete restore is swapped in. The previous database is kept under a dated name.
///
/// The password comes from PGPASSWORD or ~/.pgpass, never from the command line.
#[derive(Args)]
pub struct Restore {
    /// The database server's host name or address.
    pub host: String,
    /// The database server's port, e.g. 5432.
    pub port: u16,
    /// The database to restore into; created if it does not exist.
    pub database: String,
    /// The user to connect as (it must be allowed to create and rename databases).
    pub username: String,
    /// The .dump file written by `cargo xtask backup`.
    pub backup_file: PathBuf,
    /// The .sha256 file written beside it.
    pub checksum_file: PathBuf,
    /// Restoring over an existing database replaces its data: confirm without a prompt.
    /// Required when not run on a terminal.
    #[arg(long)]
    pub yes: bool,
    /// How many pg_restore processes load data and build indexes at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print one JSON object describing the restore on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}
