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
    Bench(Bench),
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
    /// The folder to write the release into (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
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

/// Measure our tools against the plain ones on the same input, in one run, and print a table
/// of the figures beside their goals.
#[derive(Args)]
pub struct Bench {
    #[command(subcommand)]
    pub what: BenchWhat,
    /// Print the table as one JSON object on stdout instead.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BenchWhat {
    Server(BenchServer),
    Package(BenchPackage),
    Backup(BenchBackup),
}

/// Where the benches find PostgreSQL; the password, if any, comes from PGPASSWORD or ~/.pgpass.
#[derive(Args, Clone)]
pub struct BenchDatabase {
    /// The PostgreSQL host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The PostgreSQL port.
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// The user to connect as; it must be allowed to create databases.
    #[arg(long, default_value = "postgres")]
    pub username: String,
}

/// The server built in release mode: time from start to the first 200 from /actuator/health,
/// idle memory, and requests per second for health and liveness on loopback.
#[derive(Args)]
pub struct BenchServer {
    /// How many starts to take the median of.
    #[arg(long, default_value_t = 7)]
    pub starts: usize,
    /// How long each load run lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// How many keep-alive connections the load generator holds open.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    #[command(flatten)]
    pub database: BenchDatabase,
}

/// Our archive + checksum step against `tar -czf` then `sha256sum` on the same staged files,
/// and the wall time of `cargo xtask package` for a second version with no source change.
#[derive(Args)]
pub struct BenchPackage {
    /// How many runs of each archive step to take the median of.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Our backup and restore against `pg_dump -Fc` + `sha256sum` and `sha256sum -c` +
/// `pg_restore -j1`, on a generated database (kept as saulpos_bench for the next run).
#[derive(Args)]
pub struct BenchBackup {
    /// The size of the generated database, in MB.
    #[arg(long, default_value_t = 500)]
    pub size_mb: u64,
    /// The folder for the dumps (default: a temporary folder under target/).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: BenchDatabase,
}
