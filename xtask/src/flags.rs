//! The command line of `cargo xtask`: every subcommand and every argument, with its help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Release and operations tasks for the SaulPOS server.
///
/// Run from anywhere in the workspace; `cargo xtask <command> --help` tells more.
/// Human progress goes to stderr; `--json` output goes to stdout.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", verbatim_doc_comment)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Release(Release),
    VerifyTag(VerifyTag),
    Package(Package),
    Verify(Verify),
    Kubernetes(Kubernetes),
    PushImage(PushImage),
    Backup(Backup),
    Restore(Restore),
    #[command(hide = true)]
    RestoreGuard(RestoreGuard),
    Archive(Archive),
    #[command(hide = true)]
    ArchiveGuard(ArchiveGuard),
    Deploy(Deploy),
    Rollback(Rollback),
    Status(Status),
    Health(Health),
    Smoke(Smoke),
    Incident(Incident),
    Bench(Bench),
    Test(Test),
}

/// Cut a version: checks, notes, signed tag, package, one atomic push.
///
/// Without --execute nothing changes: every check runs (a clean tree on the release branch, not
/// behind the remote, a new tag above the last release, Cargo.lock current, the signing key in
/// release/allowed_signers, a bump that covers breaking changes and migrations) and the plan is
/// printed with the notes. --execute carries it out, the irreversible part last: CHANGELOG.md
/// and the version committed ("release: X.Y.Z"), the annotated tag vX.Y.Z (body: the notes)
/// signed and checked with git verify-tag, `package` from that commit with the notes as
/// RELEASE-NOTES.md, the next development version committed, and one `git push --atomic`
/// of the branch and the tag, leased on the remote branch the checks saw. A journal in .git/
/// lets --execute run again after any failure or kill and finish without doing a step twice.
#[derive(Args)]
pub struct Release {
    /// The version to cut, e.g. 2.1.0 or 2.1.0-rc.1 (or --bump).
    #[arg(conflicts_with = "bump")]
    pub version: Option<String>,
    /// The next version after the highest release tag (semver order): major, minor or patch.
    #[arg(long, value_enum)]
    pub bump: Option<crate::cut::version::Bump>,
    /// With --bump: a pre-release, e.g. --pre rc makes X.Y.Z-rc.N.
    #[arg(long, value_name = "ID", requires = "bump")]
    pub pre: Option<String>,
    /// Carry the plan out (or finish a cut under way).
    #[arg(long)]
    pub execute: bool,
    /// The remote to check against and push to.
    #[arg(long, default_value = "origin")]
    pub remote: String,
    /// The branch a release is cut from.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Everything but reading the remote and the push; a later --execute pushes.
    #[arg(long)]
    pub offline: bool,
    /// Sign the tag and SHA256SUMS with this SSH key file (a .pub: its key in ssh-agent).
    /// Default: the file SAULPOS_SIGNING_KEY names.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Release notes written by hand instead of the generated ones.
    #[arg(long, value_name = "FILE")]
    pub notes_file: Option<PathBuf>,
    /// Show where a cut under way stands.
    #[arg(long, conflicts_with_all = ["execute", "abort"])]
    pub status: bool,
    /// Undo a cut under way: what exists only here goes; a tag on the remote stays.
    #[arg(long, conflicts_with = "execute")]
    pub abort: bool,
    /// Print one JSON object (the checks, the steps, the version, the tag, the next command).
    #[arg(long)]
    pub json: bool,
}

/// Check a pushed release tag before a release job publishes it.
///
/// The tag must be annotated and name a release version; when the repository has
/// release/allowed_signers it must be signed by a key there (git verify-tag); its body must be
/// the version's CHANGELOG.md section at the tagged commit, byte for byte.
#[derive(Args)]
pub struct VerifyTag {
    /// The tag, e.g. v2.1.0.
    pub tag: String,
    /// Write the tag's body (the release notes) to this file, for `package --release-notes`.
    #[arg(long, value_name = "FILE")]
    pub notes_out: Option<PathBuf>,
    /// Print one JSON object (tag, version, commit, signer, notes) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Build a release: archive, SBOM, provenance, image, payloads, signature.
///
/// Build the server in release mode and write a reproducible release into dist/<version>/:
/// the tarball, its .sha256, manifest.txt and manifest.json, one deploy payload per environment
/// (saulpos-<env>-<version>.tar.gz with its .sha256, installable with its install.sh on a host
/// without cargo), and SHA256SUMS listing every other file.
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
    /// Sign SHA256SUMS (and each payload's) with this SSH key file, writing SHA256SUMS.sig
    /// (namespace saulpos-release). A .pub file means its private key is in ssh-agent. Default:
    /// the file SAULPOS_SIGNING_KEY names. Never the key itself.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// The folder to write the release into (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
    /// Ship these release notes as RELEASE-NOTES.md, listed in SHA256SUMS and so covered by its
    /// signature (`cargo xtask release` gives the notes it wrote into CHANGELOG.md and the tag).
    #[arg(long, value_name = "FILE")]
    pub release_notes: Option<PathBuf>,
    /// Print one JSON object describing the release on stdout when done (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Print an environment's Kubernetes manifests for your registry.
///
/// Print one environment's Kubernetes manifests from dist/<version>/kubernetes/ with the image
/// in your registry: <REG>/saulpos-server@sha256:..., the digest the release built. Pipe it to
/// `kubectl apply -f -`. The file is checked against SHA256SUMS first.
#[derive(Args)]
pub struct Kubernetes {
    /// The environment.
    #[arg(value_enum)]
    pub env: Env,
    /// The version, as packaged: dist/<version>/ must exist.
    pub version: String,
    /// The registry (and path) the image was pushed under: host[:port][/path], e.g.
    /// registry.example.com/saulpos (push it with `cargo xtask push-image`).
    #[arg(long)]
    pub registry: String,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The folder holding the releases (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
}

/// Copy a release's OCI image to a registry, the same digest.
///
/// Copy a release's OCI image (dist/<version>/saulpos-server-<version>-oci.tar) to a registry
/// with skopeo, tagged <version>, and check that the registry holds the very digest in dist/.
/// Credentials come from skopeo's own auth file (`skopeo login`), never from the command line.
#[derive(Args)]
pub struct PushImage {
    /// The version, as packaged: dist/<version>/ must exist.
    pub version: String,
    /// Where to: <registry>/<repository>, e.g. registry.example.com/saulpos/saulpos-server.
    pub destination: String,
    /// Speak plain HTTP (or HTTPS without checking the certificate): for a local registry only.
    #[arg(long)]
    pub insecure: bool,
    /// Check SHA256SUMS.sig against this allowed_signers file before pushing.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// The folder holding the releases (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
    /// Print one JSON object (destination, digest) on stdout when done.
    #[arg(long)]
    pub json: bool,
}

/// Re-check a release: checksums, manifests, payloads, SBOM, signature.
///
/// Re-check a release folder: the checksum file against the archive, and the manifest against
/// the archive and every file inside it. Prints each problem; exits non-zero on any.
#[derive(Args)]
pub struct Verify {
    /// The version to check, as packaged: dist/<version>/ must exist.
    pub version: String,
    /// Also check SHA256SUMS.sig (and every payload's) against this allowed_signers file
    /// (lines `<identity> <key type> <public key>`), naming the signer; unsigned is refused.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Also package the recorded commit again in a fresh worktree, with the recorded toolchain,
    /// and compare the server archive byte for byte: "reproduced", or the files that differ.
    #[arg(long)]
    pub rebuild: bool,
    /// The folder holding the releases (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
    /// Print the result as one JSON object on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Back up a PostgreSQL database, with its checksum.
///
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
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub keep: Option<u16>,
    /// After a successful backup, write its time, size and duration to this `.prom` file (for
    /// node_exporter's textfile collector; the shipped alert rules read it).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Print one JSON object describing the backup on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Restore a backup into a database safely, keeping the data before.
///
/// Restore a backup made by `cargo xtask backup` into <database>, safely: the checksum is
/// checked before any database is touched, the dump is restored into a scratch database, and
/// only a complete restore is swapped in. The previous database is kept under a dated name.
/// The restored database keeps the owner, encoding, locale, tablespace, settings, privileges,
/// connection limit and comment of the one it replaces.
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
    /// The user to connect as (it must be allowed to create and rename databases, and to create
    /// one owned by the target's owner: a superuser, or a member of that role).
    pub username: String,
    /// The .dump file written by `cargo xtask backup`.
    pub backup_file: PathBuf,
    /// The .sha256 file written beside it.
    pub checksum_file: PathBuf,
    /// Restoring over an existing database replaces its data: confirm without a prompt.
    /// Required when not run on a terminal.
    #[arg(long)]
    pub yes: bool,
    /// How many connections pg_restore uses at once (its --jobs): tables load and indexes
    /// build side by side as their dependencies allow.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Count the rows of tables up to this size exactly (smallest first, at most four times
    /// this much in all); bigger tables show the row count their index build recorded.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub count_rows_up_to_mb: i64,
    /// Print one JSON object describing the restore on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// Internal, started by `restore` beside itself: waits on standard input and, if the restore
/// ends without writing "done" there (Ctrl-C, a kill, a lost session), drops the scratch
/// database it was filling. Not for direct use.
#[derive(Args)]
pub struct RestoreGuard {
    /// The database server's host name or address.
    pub host: String,
    /// The database server's port.
    pub port: u16,
    /// The user to connect as (its password from PGPASSWORD or ~/.pgpass).
    pub username: String,
    /// The database the restore was restoring.
    pub database: String,
    /// The scratch database to drop if the restore dies.
    pub scratch: String,
}

/// Continuous WAL archiving and point-in-time restore, through pgBackRest.
///
/// Drives pgBackRest (Debian's package) on the database host: this machine, or the one --on
/// names over SSH (it needs pgBackRest, PostgreSQL's Debian cluster tools and an SSH server,
/// never cargo). Commands run there as the postgres user. The repository passphrase lives only
/// in the pgBackRest configuration file: it is never printed, logged or put in a bundle.
/// See docs/runbooks/pitr.md.
#[derive(Args)]
pub struct Archive {
    #[command(subcommand)]
    pub what: ArchiveWhat,
    #[command(flatten)]
    pub on: ArchiveOn,
}

pub const DEFAULT_PGBACKREST_CONFIG: &str = "/etc/pgbackrest/pgbackrest.conf";
pub const DEFAULT_STANZA: &str = "saulpos";

/// Where pgBackRest runs, and with which configuration and stanza.
#[derive(Args, Clone)]
pub struct ArchiveOn {
    /// The database host: ssh://[user@]host[:port] (the user must be root or postgres there);
    /// default: this machine.
    #[arg(long, global = true, value_name = "SSH_URL")]
    pub on: Option<String>,
    /// The ssh_config file for ssh (its -F; default: ~/.ssh/config as usual).
    #[arg(long, global = true, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// The pgBackRest configuration file on the database host.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/pgbackrest/pgbackrest.conf"
    )]
    pub config: String,
    /// The pgBackRest stanza: the name of the cluster's archive and backups.
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_STANZA)]
    pub stanza: String,
    /// Print one JSON object on stdout (human progress stays on stderr).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ArchiveWhat {
    Setup(ArchiveSetup),
    Backup(ArchiveBackup),
    Status(ArchiveStatus),
    Restore(ArchiveRestore),
    Extract(ArchiveExtract),
}

/// Set up archiving: configuration, encrypted repository, PostgreSQL's settings, first backup.
///
/// Writes the pgBackRest configuration (the postgres user's, mode 0600) with an encrypted
/// repository (aes-256-cbc; the passphrase generated here and kept only in that file), sets
/// archive_mode, archive_command and archive_timeout, creates the stanza, runs pgBackRest's
/// check and the first full backup. archive_mode needs PostgreSQL restarted: --restart does
/// it, else setup stops and says how. Run it again after any failure: a configuration that is
/// there is kept, its passphrase too.
#[derive(Args)]
pub struct ArchiveSetup {
    /// The live cluster's data directory, e.g. /var/lib/postgresql/15/main.
    #[arg(long, value_name = "DIR")]
    pub pg_path: String,
    /// The live cluster's port, e.g. 5432.
    #[arg(long, value_name = "PORT")]
    pub pg_port: u16,
    /// The repository folder on the database host (better: another disk than the cluster's).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/pgbackrest")]
    pub repo: String,
    /// How many full backups retention keeps (with their differentials and WAL).
    #[arg(long, value_name = "N", default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=9999))]
    pub retention_full: u16,
    /// archive_timeout: the longest a commit waits before its WAL segment is archived (the
    /// recovery point objective), e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub archive_timeout: Duration,
    /// Restart the cluster (pg_ctlcluster) when archive_mode needs it.
    #[arg(long)]
    pub restart: bool,
}

/// Take a backup (full, differential or incremental), then apply retention.
#[derive(Args)]
pub struct ArchiveBackup {
    /// full, diff (changes since the last full) or incr (since the last backup).
    #[arg(long = "type", value_enum, default_value = "full")]
    pub kind: BackupKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

/// The backups, the window one can restore to, and the archiving lag; fails when archiving
/// fails or lags.
///
/// The backups (pgBackRest's info), the restorable window (from the end of the first backup
/// to the newest archived WAL, with any segment missing from the repository named), and the
/// archiver (pg_stat_archiver: the last archived WAL and its age, failures, the last failed
/// WAL, segments waiting). Exits 1 when archiving fails, a completed segment has waited longer
/// than --max-lag, or WAL is missing: a monitor can run it.
#[derive(Args)]
pub struct ArchiveStatus {
    /// The longest a completed WAL segment may wait for the archive (default: twice
    /// archive_timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_lag: Option<Duration>,
}

/// A new cluster at a point in time, beside the live one (--switch: in its place).
///
/// Restores the backup before TIME and replays the archived WAL up to TIME into a new cluster
/// (pg_createcluster) on --pg-port, starts it, lets it promote once it reached TIME, and
/// checks it: it answers, it is out of recovery, it stopped at TIME. The live cluster is not
/// touched. With --switch the live cluster is then stopped and the restored data put in its
/// place (archiving on again, to a new timeline); the old data directory is kept as
/// <data dir>.before-<time> until you remove it. A TIME outside the restorable window is
/// refused, naming the window. Killed part-way, the new cluster is removed.
#[derive(Args)]
pub struct ArchiveRestore {
    /// The point in time, with its offset: 2026-12-06 14:05:00+01, 2026-12-06T13:05:00Z.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// The new cluster's port: a free one (the live cluster keeps its own).
    #[arg(long, value_name = "PORT")]
    pub pg_port: u16,
    /// The new cluster's data directory (default: /var/lib/postgresql/<version>/<cluster>;
    /// with --switch it must be on the live data directory's filesystem).
    #[arg(long, value_name = "DIR")]
    pub pg_path: Option<String>,
    /// Then stop the live cluster and put the restored data in its place.
    #[arg(long)]
    pub switch: bool,
    /// With --switch: replace the live cluster's data without the typed confirmation.
    #[arg(long, requires = "switch")]
    pub yes: bool,
}

/// Tables as they were at a point in time, as dumps `cargo xtask restore` loads.
///
/// Restores into a scratch cluster (no TCP port; removed afterwards, also when killed), and
/// pg_dumps each table into <backup-dir>/<table>-<time>.dump with its .sha256: the files
/// `cargo xtask restore` takes. The live cluster is not touched.
#[derive(Args)]
pub struct ArchiveExtract {
    /// The point in time, with its offset (as for restore).
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// A table to get back, e.g. sales or public.sales; repeat for more.
    #[arg(long = "table", value_name = "NAME", required = true)]
    pub tables: Vec<String>,
    /// The database that holds the tables.
    #[arg(long, value_name = "NAME", default_value = "saulpos")]
    pub database: String,
    /// Where the dumps go, on this machine; it must exist.
    pub backup_dir: PathBuf,
}

/// Internal, started by `archive restore` and `archive extract` beside themselves: waits on
/// standard input and, if the command ends without writing "done" there, stops and removes
/// the cluster it was restoring. Not for direct use.
#[derive(Args)]
pub struct ArchiveGuard {
    #[command(flatten)]
    pub on: ArchiveOn,
    /// The cluster's major version, e.g. 15.
    pub version: String,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's data directory.
    pub data_dir: String,
}

/// Measure our tools beside the plain ones on the same input.
///
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
    Archive(BenchArchive),
    Deploy(BenchDeploy),
    Fleet(BenchFleet),
    Release(BenchRelease),
}

/// The cut's own steps beside git commit, git tag -s and git push --atomic.
///
/// In a scratch clone of this repository with a bare remote on disk and a throwaway key: the
/// checks, the notes, the release commit, the signed tag and its verify-tag, the development
/// commit and the atomic leased push (the package step is `bench package`'s), beside the plain
/// sequence on the same repository, in turns.
#[derive(Args)]
pub struct BenchRelease {
    /// How many cuts (and plain sequences) to take the median of.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
}

/// A rollout over 1, 3 and 6 loopback SSH hosts beside the plain loop.
///
/// A version rolled with `cargo xtask deploy` over 1, 3 and 6 loopback hosts (an sshd the bench
/// starts on a free port with throwaway keys; a folder, a database and a port per host), batch 1
/// and all at once, beside the plain loop (scp, then ssh tar + install.sh --restart) over 3; our
/// time per host beyond the server's own restart and health wait. Runs as the user sshd lets in
/// (root here).
#[derive(Args)]
pub struct BenchFleet {
    #[command(flatten)]
    pub database: BenchDatabase,
}

/// Deploy and rollback beside install.sh and rollback.sh alone.
///
/// Deploy of the real payload with `cargo xtask deploy` (its checks, then the payload's
/// install.sh as a one-host rollout) and with install.sh alone (unpacked first, as on a host),
/// and a rollback switch (rollback.sh: re-verify and switch), on two versions packaged for the
/// bench.
#[derive(Args)]
pub struct BenchDeploy {
    /// How many deploys and rollbacks to take the median of.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
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

/// Server start, idle memory and requests per second.
///
/// The server built in release mode: time from start to the first 200 from /actuator/health,
/// idle memory, and requests per second on loopback for health, liveness, logins, and an
/// authenticated product lookup beside the same lookup on the last server without login.
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
    /// The commit whose server (without login) the authenticated lookup is compared with, built
    /// in a worktree under target/bench/baseline/; the default is the last commit before login.
    #[arg(long, default_value = "28e5a0e9ef849cf03c12fa6130944ac1a0f277c8")]
    pub baseline: String,
    #[command(flatten)]
    pub database: BenchDatabase,
}

/// The archive step and the whole package beside tar and sha256sum.
///
/// Our archive + checksum step against `tar -czf` then `sha256sum` on the same staged files,
/// the wall time of `cargo xtask package` for a second version with no source change, and the
/// payload step's share of it.
#[derive(Args)]
pub struct BenchPackage {
    /// How many runs of each archive step to take the median of.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Backup and restore beside pg_dump, pg_restore and sha256sum.
///
/// Our backup and restore against `pg_dump -Fc` + `sha256sum` and `sha256sum -c` +
/// `pg_restore -j1` (with `pg_restore -j2` alone beside them), on a generated database (kept as
/// saulpos_bench_pos for the next run).
#[derive(Args)]
pub struct BenchBackup {
    /// The size of the generated database, in MB.
    #[arg(long, default_value_t = 500)]
    pub size_mb: u64,
    /// The folder for the dumps (default: a temporary folder under target/).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// How many times each backup and restore is timed, the sides taking turns at going first;
    /// the table shows medians.
    #[arg(long, default_value_t = 4)]
    pub runs: u32,
    #[command(flatten)]
    pub database: BenchDatabase,
}

/// pgBackRest's backup and point-in-time restore beside our dumps; the recovery point.
///
/// On the point-of-sale database `bench backup` generates, in a cluster of the bench's own
/// (archiving needs a restart; kept for the next run): pgBackRest's full backup (`archive
/// backup`) beside `backup` (pg_dump -Fc + SHA-256), `archive restore` to a time beside the
/// dump's `restore`, and the time from a commit to its WAL in the repository with
/// archive_timeout at 10 s.
#[derive(Args)]
pub struct BenchArchive {
    /// The size of the generated database, in MB.
    #[arg(long, default_value_t = 500)]
    pub size_mb: u64,
    /// How many backups and restores of each kind to take the median of.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// How many commits to time to the repository.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rpo_samples: u32,
}

/// Wait until the server is UP (and runs the version expected).
///
/// Wait until the server's /actuator/health says UP (and, if asked, /actuator/info names the
/// expected version), then print the health JSON. Exits non-zero on timeout, naming the last
/// status or error.
#[derive(Args)]
pub struct Health {
    /// The server's base URL, e.g. http://localhost:8080, or https://... through a TLS proxy
    /// (default: http://127.0.0.1:<SAULPOS_SERVER_PORT of --env-file, else 8080>).
    #[arg(long)]
    pub url: Option<String>,
    /// The environment's saulpos.env (e.g. /opt/saulpos/saulpos-staging/saulpos.env): the port
    /// the server listens on, when --url is not given.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// For https: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// How long to keep polling: e.g. 60s, 2m, 500ms (a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The pause between polls.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Wait also until /actuator/info reports this version (after a deploy or a rollback).
    #[arg(long)]
    pub expect_version: Option<String>,
    /// Print one JSON object with the outcome on stdout, also on failure.
    #[arg(long)]
    pub json: bool,
}

/// Run the smoke checks against a running server.
///
/// The smoke checks against a running server: health UP, info's version (and profile),
/// login as the smoke user, a product lookup (a demo SKU in dev; the 404 path in staging and
/// prod), a checkout dry-run outside prod (priced in dev; refused with 422 for an unknown SKU in
/// staging), and logout. One line per check with its time; exits non-zero if any fails. Nothing
/// is written but the login's token, which logout ends.
///
/// The smoke user comes from SAULPOS_SMOKE_USERNAME and SAULPOS_SMOKE_PASSWORD, in the
/// environment or in the file --env-file names (the environment's saulpos.env). The password is
/// never printed.
#[derive(Args)]
pub struct Smoke {
    /// The server's base URL, e.g. http://localhost:8080, or https://... through a TLS proxy
    /// (default: http://127.0.0.1:<SAULPOS_SERVER_PORT of --env-file, else 8080>).
    #[arg(long)]
    pub url: Option<String>,
    /// For https: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Read SAULPOS_SMOKE_USERNAME and SAULPOS_SMOKE_PASSWORD (and the port, without --url)
    /// from this file (NAME=value lines, e.g. /opt/saulpos/saulpos-staging/saulpos.env) instead
    /// of the environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Fail unless /actuator/info reports this version.
    #[arg(long)]
    pub expect_version: Option<String>,
    /// How long each request may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Print the checks as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A duration as [`parse_duration`] reads it back: `3s`, `2m`, `1h`, `1500ms`.
pub fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        _ if !millis.is_multiple_of(1000) => format!("{millis}ms"),
        _ if millis >= 3_600_000 && millis.is_multiple_of(3_600_000) => {
            format!("{}h", millis / 3_600_000)
        }
        _ if millis >= 60_000 && millis.is_multiple_of(60_000) => format!("{}m", millis / 60_000),
        _ => format!("{}s", millis / 1000),
    }
}

/// `60s`, `2m`, `500ms`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 60s, 2m or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Install a release in an environment: a local folder, or hosts over SSH.
///
/// Deploy a packaged release to an environment with its payload's own install.sh, as on a host:
/// the payload is checked here first (checksums, manifest, and an archive of plain files and
/// folders only), then install.sh verifies it again, extracts it into
/// <dest>/saulpos-<env>/releases/<version>/, writes run.sh, rollback.sh, an example environment
/// file and a systemd unit, and switches the live link to it atomically. One folder is a
/// one-host rollout whose host is local (--json prints the rollout's table as JSON).
///
/// With several destinations, ssh:// ones or --hosts, it rolls out: --batch hosts at a time,
/// each one gets the payload (unless it holds it already), installs it with its install.sh,
/// restarts and must pass the health gate. If one fails, every host this rollout switched goes
/// back to the release it ran before, restarted and checked; then a table per host (--json for
/// CI) and a non-zero exit. Hosts already on the version are skipped, so a re-run continues.
#[derive(Args)]
pub struct Deploy {
    /// The environment (run.sh starts the server with that profile).
    #[arg(value_enum)]
    pub env: Env,
    /// The version to deploy; it must be packaged in dist/.
    pub version: String,
    /// Where: a folder that holds the environments' folders (e.g. /opt/saulpos; it must exist),
    /// or ssh://[user@]host[:port]/path on a host, through the system ssh (~/.ssh/config, agents
    /// and known_hosts apply; an unknown host key is refused). Several at once roll out in order.
    #[arg(value_name = "DEST", required_unless_present = "hosts")]
    pub destinations: Vec<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// How many releases to keep in the environment's folder (2 or more: the live one and the
    /// one before it always stay).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub keep: u16,
    /// Why, for the deploy history (e.g. a change ticket).
    #[arg(long)]
    pub reason: Option<String>,
    /// The folder holding the releases (default: dist/ in the workspace).
    #[arg(long)]
    pub dist: Option<PathBuf>,
    /// Require a valid signature by a key in this allowed_signers file (default:
    /// <dest>/allowed_signers when it exists; without either, signatures are not checked).
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// After the switch, restart the service (systemctl restart saulpos-<env> where that unit is
    /// active, else run.sh restart), wait until health is UP with the new version and the smoke
    /// checks pass; if not, switch back, restart the release before, check it, and fail saying
    /// why (the last health answer, the end of the log).
    #[arg(long)]
    pub restart: bool,
    /// With --restart: the command that restarts the service (run by sh in the environment's
    /// folder).
    #[arg(long, value_name = "COMMAND")]
    pub restart_command: Option<String>,
    /// With --restart: where the server answers (default http://127.0.0.1:<SAULPOS_SERVER_PORT
    /// of saulpos.env, else 8080>). In a rollout, {host} stands for each host's name, e.g.
    /// http://{host}:8080; the host itself checks it.
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// With --restart: how long the new release may take to be UP.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Skip the backup a deploy takes first (staging and prod, when saulpos.env names a
    /// database); the history records that none was taken.
    #[arg(long, conflicts_with_all = ["backup", "backup_dir"])]
    pub no_backup: bool,
    /// Take the pre-deploy backup in dev too (staging and prod take it by default).
    #[arg(long)]
    pub backup: bool,
    /// Where the pre-deploy backup goes (default: backups/ in the environment's folder; created
    /// readable by its owner only). Implies --backup.
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    #[command(flatten)]
    pub canary: CanaryArgs,
    /// Print one JSON object describing the deploy on stdout (for CI).
    #[arg(long)]
    pub json: bool,
}

/// The canary analysis of a rollout (see docs/runbooks/fleet.md).
#[derive(Args)]
#[command(next_help_heading = "Canary analysis")]
pub struct CanaryArgs {
    /// The first N hosts of the list get the release first; the rest follow only once the
    /// analysis passed. Needs --analysis.
    #[arg(long, value_name = "N", requires = "analysis",
        value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub canary: Option<u16>,
    /// How long to compare the canaries' metrics with the hosts still on the old release (with
    /// one host: with its own just before the switch), e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub analysis: Option<Duration>,
    /// How often the analysis reads every host's /actuator/prometheus and judges the interval.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub analysis_interval: Duration,
    /// An interval with fewer requests on a canary is inconclusive.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub min_requests: u64,
    /// A canary fails over this 5xx ratio (e.g. 1% or 0.01)...
    #[arg(long, value_name = "RATIO", default_value = "1%", value_parser = parse_ratio)]
    pub max_error_ratio: f64,
    /// ...when it is also over the baseline's plus this.
    #[arg(long, value_name = "RATIO", default_value = "0.5%", value_parser = parse_ratio)]
    pub error_margin: f64,
    /// A canary fails over this multiple of the baseline's p99...
    #[arg(long, value_name = "FACTOR", default_value_t = 1.2)]
    pub max_p99_ratio: f64,
    /// ...when its p99 is also over this.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub p99_floor: Duration,
    /// After this many failed intervals the canaries go back (a failed scrape is a failed
    /// interval, and so is a canary whose server restarted).
    #[arg(long, value_name = "N", default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub failed_intervals: u16,
    /// What an inconclusive interval does: stop (the canaries go back, nothing is promoted) or
    /// proceed (it counts for nothing).
    #[arg(long, value_enum, default_value = "stop")]
    pub on_inconclusive: OnInconclusive,
}

impl CanaryArgs {
    /// No analysis: the defaults of every threshold.
    pub fn none() -> CanaryArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            canary: CanaryArgs,
        }
        Only::parse_from(["deploy"]).canary
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnInconclusive {
    Stop,
    Proceed,
}

/// A ratio as `1%` or `0.01`, from 0 to 1.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (trimmed, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a ratio; use e.g. 1% or 0.01"))?;
    let ratio = value / scale;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("{text:?} is out of range; give 0% to 100%"));
    }
    Ok(ratio)
}

/// Switch an environment back to a release before (--with-data: its data too).
///
/// Switch an environment back to the release before the live one (or the one named), after
/// re-verifying its files; record the reason; print the next steps (restart, and the restore
/// command if the data must go back too).
///
/// With several destinations, ssh:// ones or --hosts, every host goes back (to --to, or each to
/// the release it ran before) with its rollback.sh, restarted and health-checked, --batch at a
/// time; hosts already there are skipped, one host's failure does not stop the others.
#[derive(Args)]
pub struct Rollback {
    /// The environment.
    #[arg(value_enum)]
    pub env: Env,
    /// The folder that holds the environments' folders, as given to deploy (e.g. /opt/saulpos),
    /// or ssh://[user@]host[:port]/path.
    #[arg(value_name = "DEST", required_unless_present = "hosts")]
    pub destinations: Vec<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// In a rollout: how long each host's release may take to be UP again.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// In a rollout: where each host's server answers ({host} for its name), as for deploy.
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// The version to go back to (default: the release live before the current one).
    #[arg(long)]
    pub to: Option<String>,
    /// Why, for the deploy history (e.g. the incident number).
    #[arg(long)]
    pub reason: Option<String>,
    /// Require a valid signature of the release gone back to by a key in this allowed_signers
    /// file (default: <dest>/allowed_signers when it exists).
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Also put the data back: restore the backup the deploy of the live release took (checked
    /// against the checksum the history recorded; restored safely as `restore` does, the
    /// current database kept under a dated name), then switch. One local folder only.
    #[arg(long)]
    pub with_data: bool,
    /// With --with-data: replace the database's data without the typed confirmation.
    #[arg(long, requires = "with_data")]
    pub yes: bool,
    /// Print one JSON object describing the rollback on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Show what is live, what the server runs, backups and history.
///
/// Show an environment's live and previous releases, the releases kept, and the end of the
/// deploy history. With several destinations, ssh:// ones or --hosts: one line per host (live,
/// previous, health).
#[derive(Args)]
pub struct Status {
    /// The environment.
    #[arg(value_enum)]
    pub env: Env,
    /// The folder that holds the environments' folders, as given to deploy (e.g. /opt/saulpos),
    /// or ssh://[user@]host[:port]/path.
    #[arg(value_name = "DEST", required_unless_present = "hosts")]
    pub destinations: Vec<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Where the server answers ({host} for each host's name; default: the port of the
    /// folder's saulpos.env on 127.0.0.1).
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// How many history lines to show.
    #[arg(long, default_value_t = 10)]
    pub history: usize,
    /// Print it as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The destinations beyond the command line, and how to reach them.
#[derive(Args)]
pub struct FleetArgs {
    /// Also the destinations listed in FILE, one a line in rollout order (# starts a comment;
    /// see docs/runbooks/fleet.md).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// In a rollout: how many hosts at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// The ssh_config file for ssh (its -F; default: ~/.ssh/config as usual).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

impl FleetArgs {
    /// No hosts file, one at a time, the usual ssh configuration.
    pub fn local() -> FleetArgs {
        FleetArgs {
            hosts: None,
            batch: 1,
            ssh_config: None,
        }
    }

    /// The destinations, and whether they make a rollout (several, ssh://, or --hosts) rather
    /// than the one local folder of the single-host commands.
    pub fn destinations(
        &self,
        given: &[String],
    ) -> anyhow::Result<(Vec<crate::deploy::destination::Destination>, bool)> {
        use crate::deploy::destination::{self, Destination};
        let all = destination::gather(given, self.hosts.as_deref())?;
        let rollout = self.hosts.is_some()
            || all.len() > 1
            || all.iter().any(|one| matches!(one, Destination::Ssh(_)));
        Ok((all, rollout))
    }
}

/// Make the machine ready for the tests, then run them all.
///
/// Installs what the tests run and is missing (apt-get install: podman, sshd, skopeo, ...; pip
/// install: the SBOM and Kubernetes validators, zizmor), starts PostgreSQL at 127.0.0.1:5432 if
/// it is down, then runs `cargo test --workspace --locked` with the arguments after `--`. Run it
/// as root: installing needs it, and one test mounts a 1 MB tmpfs. On a machine already set
/// up, `cargo test --workspace` alone runs the same tests.
#[derive(Args)]
pub struct Test {
    /// Install nothing and start nothing: fail naming what is missing.
    #[arg(long)]
    pub no_install: bool,
    /// Make the machine ready, then stop without running the tests.
    #[arg(long)]
    pub setup_only: bool,
    /// Passed to cargo test, e.g. `-- deploy::` to run some tests only.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Capture incident evidence into one redacted bundle
///
/// The bundle is incident-<UTC time>-<severity>.tar.gz with its .sha256: the live release's manifest, the deploy history, health and info (or the error
/// reaching them), database availability, the service's recent logs, host facts, and
/// incident.md, the report template prefilled. A collector that fails is recorded and never
/// stops the capture; secrets are redacted everywhere in the bundle.
///
/// Severity classes:
///   SEV-1  the service is down or data is being lost or exposed: all hands, now.
///   SEV-2  a major function is degraded for many users (checkout slow or failing): act now.
///   SEV-3  a minor or partial problem with a workaround: handle in working hours.
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct Incident {
    /// The environment.
    #[arg(value_enum)]
    pub env: Env,
    /// The folder that holds the environments' folders, as given to deploy (e.g. /opt/saulpos).
    pub dest: PathBuf,
    /// The server's base URL (default: http://127.0.0.1:<SAULPOS_SERVER_PORT from saulpos.env,
    /// else 8080>).
    #[arg(long)]
    pub url: Option<String>,
    /// How bad it is: SEV-1, SEV-2 or SEV-3 (see above).
    #[arg(long, value_enum, default_value = "SEV-2")]
    pub severity: Severity,
    /// Where to write the bundle (default: <dest>/saulpos-<env>/incidents/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The pgBackRest configuration whose `archive status` goes into the bundle (recorded as
    /// failed where there is none).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PGBACKREST_CONFIG)]
    pub archive_config: String,
    /// The stanza of that `archive status`.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STANZA)]
    pub archive_stanza: String,
    /// Print one JSON object describing the bundle on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The environments a release ships a payload for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Env {
    /// Demo data, no backups by default.
    Dev,
    /// The rehearsal of prod: a backup before every deploy.
    Staging,
    /// Production: a backup before every deploy, no checkout dry-run.
    Prod,
}

impl Env {
    pub fn name(self) -> &'static str {
        match self {
            Env::Dev => "dev",
            Env::Staging => "staging",
            Env::Prod => "prod",
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Severity {
    /// The service is down, or data is being lost or exposed.
    #[value(name = "SEV-1")]
    Sev1,
    /// A major function is degraded for many users.
    #[value(name = "SEV-2")]
    Sev2,
    /// A minor or partial problem with a workaround.
    #[value(name = "SEV-3")]
    Sev3,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Sev1 => "SEV-1",
            Severity::Sev2 => "SEV-2",
            Severity::Sev3 => "SEV-3",
        }
    }

    pub fn definition_of(label: &str) -> &'static str {
        match label {
            "SEV-1" => "the service is down, or data is being lost or exposed; all hands, now",
            "SEV-2" => {
                "a major function is degraded for many users (e.g. checkout slow or failing); act now"
            }
            _ => "a minor or partial problem with a workaround; handle in working hours",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Xtask;

    /// `cargo xtask --help` is a short table read at a glance: one line per subcommand, none
    /// wider than a terminal. UPDATE_SNAPSHOTS=1 rewrites the snapshot after a deliberate change.
    #[test]
    fn the_top_level_help_is_a_short_table_that_matches_its_snapshot() {
        let help = Xtask::command().render_long_help().to_string();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/help.txt");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &help).unwrap();
        }
        for line in help.lines() {
            assert!(
                line.chars().count() <= 90,
                "too wide for a terminal: {line:?}"
            );
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            help, snapshot,
            "`cargo xtask --help` changed; if that is meant, run UPDATE_SNAPSHOTS=1 cargo test -p xtask"
        );
    }
}
