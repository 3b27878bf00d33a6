//! `cargo xtask backup`: `pg_dump` in custom format, hashed as it streams to disk and verified
//! by `pg_restore` reading every byte of the same stream, then renamed into place with its
//! `.sha256`. A failed or interrupted backup never carries the final name.

use std::fs;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use xshell::Shell;

use crate::database::postgres::{self, Server};
use crate::release::checksum::{self, HashingWriter};
use crate::{flags, util::durable, util::utc};

impl flags::Backup {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        if !self.backup_dir.is_dir() {
            bail!(
                "backup folder {} does not exist; create it (on durable storage) and run again",
                self.backup_dir.display()
            );
        }
        if self.keep == Some(0) {
            bail!("--keep 0 would delete every backup, the new one too; keep at least 1");
        }
        if let Some(path) = &self.metrics_file {
            check_metrics_file(path)?;
        }
        let server = Server {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
        };
        let stem = file_stem(&self.database);
        durable::remove_stale_partials(&self.backup_dir, &format!("{stem}-"))?;
        let name = format!("{stem}-{}.dump", utc::compact(utc::now()));
        let final_path = self.backup_dir.join(&name);
        if final_path.exists() {
            bail!(
                "{} already exists (a backup started within the same second?); wait a second and run again",
                final_path.display()
            );
        }
        eprintln!(
            "backing up database {:?} at {} as {:?} into {}",
            self.database,
            server.address(),
            self.username,
            final_path.display()
        );
        let dumped = dump(&server, &self.database, self.compress, &final_path)?;
        let checksum_path = self.backup_dir.join(format!("{name}.sha256"));
        durable::write_with_mode(
            &checksum_path,
            checksum::line(&dumped.sha256, &name).as_bytes(),
            0o600,
        )?;
        let elapsed = started.elapsed();
        eprintln!(
            "ok: {} ({} bytes, {} table data entries, sha256 {}) verified in {:.1} s",
            final_path.display(),
            dumped.size,
            dumped.tables,
            dumped.sha256,
            elapsed.as_secs_f64()
        );
        eprintln!("checksum: {}", checksum_path.display());
        let removed = match self.keep {
            Some(keep) => prune(&self.backup_dir, &stem, keep.into())?,
            None => Vec::new(),
        };
        for path in &removed {
            eprintln!("removed old backup {}", path.display());
        }
        if let Some(path) = &self.metrics_file {
            let finished = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64());
            let text = metrics_text(&self.database, finished, dumped.size, elapsed);
            durable::write_with_mode(path, text.as_bytes(), 0o644)?;
            eprintln!("metrics: {}", path.display());
        }
        if self.json {
            let summary = json!({
                "database": self.database,
                "host": self.host,
                "port": self.port,
                "backup": final_path,
                "checksum_file": checksum_path,
                "size": dumped.size,
                "sha256": dumped.sha256,
                "table_data_entries": dumped.tables,
                "compress": self.compress,
                "seconds": elapsed.as_secs_f64(),
                "removed": removed,
            });
            println!("{summary}");
        }
        Ok(())
    }
}

/// Refuses a metrics file node_exporter would not read, or one whose folder is missing, before
/// anything is dumped.
fn check_metrics_file(path: &Path) -> anyhow::Result<()> {
    if path.extension().is_none_or(|extension| extension != "prom") {
        bail!(
            "--metrics-file {}: node_exporter's textfile collector reads only *.prom files; name it e.g. saulpos-backup.prom",
            path.display()
        );
    }
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!(
            "--metrics-file {}: the folder {} does not exist; create it (node_exporter's --collector.textfile.directory) and run again",
            path.display(),
            folder.display()
        );
    }
    Ok(())
}

/// The backup's figures in Prometheus's text format, the database as a label.
fn metrics_text(database: &str, finished: f64, size: u64, took: Duration) -> String {
    let label = database
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let mut text = String::new();
    for (name, help, value) in [
        (
            "saulpos_backup_last_success_timestamp_seconds",
            "When the newest verified backup by cargo xtask backup finished (Unix time)",
            format!("{finished:.3}"),
        ),
        (
            "saulpos_backup_last_size_bytes",
            "The size of the newest verified backup",
            size.to_string(),
        ),
        (
            "saulpos_backup_last_duration_seconds",
            "How long the newest verified backup took, its verification included",
            format!("{:.3}", took.as_secs_f64()),
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}.\n# TYPE {name} gauge\n{name}{{database=\"{label}\"}} {value}\n"
        ));
    }
    text
}

/// A file-name-safe form of a database name: letters, digits, `-`, `_` and `.` stay.
pub fn file_stem(database: &str) -> String {
    database
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub struct Dumped {
    pub size: u64,
    pub sha256: String,
    pub tables: usize,
}

/// `pg_dump` of `database` into `final_path`, verified (see [`write_verified_dump`]).
fn dump(
    server: &Server,
    database: &str,
    compress: u32,
    final_path: &Path,
) -> anyhow::Result<Dumped> {
    let mut pg_dump = postgres::tool("pg_dump")?;
    pg_dump
        .arg("--format=custom")
        .arg(format!("--compress={compress}"))
        .args(server.args(database));
    write_verified_dump(
        pg_dump,
        &format!("database {database:?} at {}", server.address()),
        final_path,
    )
}

/// Runs `pg_dump` (custom format on its standard output; here or on another host) into a
/// temporary file beside `final_path` while hashing the stream and feeding it to a local
/// `pg_restore` that reads all of it (every data block decompressed, the SQL thrown away);
/// renames into place only if both succeed. `dumped` names what is dumped, for messages.
pub fn write_verified_dump(
    mut pg_dump: std::process::Command,
    dumped: &str,
    final_path: &Path,
) -> anyhow::Result<Dumped> {
    let temporary = TemporaryFile(durable::temporary_name(final_path));
    let mut pg_dump = pg_dump
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start pg_dump")?;
    let dump_errors = collect_stderr(&mut pg_dump);
    let mut verifier = postgres::tool("pg_restore")?
        .args(["--file=/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start pg_restore to verify the dump")?;
    let verify_errors = collect_stderr(&mut verifier);

    // A backup holds customer data: its owner's alone, whatever the umask.
    let file = durable::create_private(&temporary.0)
        .with_context(|| format!("cannot create {}", temporary.0.display()))?;
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut source = pg_dump.stdout.take().expect("stdout is piped");
    let mut sink = verifier.stdin.take();
    let mut buffer = vec![0u8; 1 << 18];
    let mut progress = Progress::new();
    let copied: anyhow::Result<()> = (|| {
        loop {
            let read = source
                .read(&mut buffer)
                .context("cannot read pg_dump's output")?;
            if read == 0 {
                break;
            }
            writer
                .write_all(&buffer[..read])
                .with_context(|| format!("cannot write {}", temporary.0.display()))?;
            if let Some(stdin) = sink.as_mut()
                && stdin.write_all(&buffer[..read]).is_err()
            {
                // The verifier stopped reading: its exit status below says why.
                sink = None;
            }
            progress.update(writer.written());
        }
        Ok(())
    })();
    drop(sink);
    progress.finish(writer.written());
    if let Err(error) = copied {
        // The backup cannot be written (a full disk, say): end both sides of the pipeline now,
        // or pg_dump would wait for ever on its full pipe.
        drop(source);
        let _ = pg_dump.kill();
        let _ = pg_dump.wait();
        let _ = verifier.kill();
        let _ = verifier.wait();
        let folder = final_path.parent().unwrap_or(Path::new("."));
        return Err(error).with_context(|| {
            format!(
                "the backup into {} failed; no backup was written (free space there, or choose another folder)",
                folder.display()
            )
        });
    }
    let dump_status = pg_dump.wait().context("pg_dump did not finish")?;
    let dump_errors = dump_errors.join().unwrap_or_default();
    if !dump_status.success() {
        let _ = verifier.kill();
        let _ = verifier.wait();
        bail!(
            "pg_dump of {dumped} failed ({dump_status}): {}{}; no backup was written",
            dump_errors.trim(),
            hint(&dump_errors)
        );
    }
    let (buffered, sha256, size) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| format!("cannot write {}", temporary.0.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", temporary.0.display()))?;
    drop(file);

    let verify_status = verifier.wait().context("pg_restore did not finish")?;
    let verify_errors = verify_errors.join().unwrap_or_default();
    if !verify_status.success() {
        bail!(
            "the dump did not read back whole (pg_restore {verify_status}): {}; no backup was written",
            verify_errors.trim()
        );
    }
    let listing = postgres::tool("pg_restore")?
        .arg("--list")
        .arg(&temporary.0)
        .output()
        .context("cannot run pg_restore --list")?;
    let tables = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|line| line.contains(" TABLE DATA "))
        .count();
    temporary.persist(final_path)?;
    Ok(Dumped {
        size,
        sha256,
        tables,
    })
}

/// What to try when pg_dump says a known thing.
fn hint(message: &str) -> &'static str {
    if message.contains("server version mismatch")
        || message.contains("aborting because of server version mismatch")
    {
        "\nhint: pg_dump is older than the server; install the client tools of the server's major version (or newer) and put them first on PATH"
    } else if message.contains("password authentication failed")
        || message.contains("no password supplied")
    {
        "\nhint: set PGPASSWORD in the environment or add the server to ~/.pgpass (passwords are never taken on the command line)"
    } else if message.contains("Connection refused")
        || message.contains("could not translate host name")
        || message.contains("timeout expired")
    {
        "\nhint: check the host and port, and that PostgreSQL is running there (pg_isready -h HOST -p PORT)"
    } else if message.contains("does not exist") {
        "\nhint: check the database and user names (psql -l lists the databases)"
    } else {
        ""
    }
}

/// Reads a child's stderr to the end on a thread of its own.
pub fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

/// A temporary file that is removed on drop unless persisted under its final name.
struct TemporaryFile(PathBuf);

impl TemporaryFile {
    fn persist(self, final_path: &Path) -> anyhow::Result<()> {
        fs::rename(&self.0, final_path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.0.display(),
                final_path.display()
            )
        })?;
        std::mem::forget(self);
        durable::sync_dir(final_path.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Bytes written and the rate, on a terminal only, at most a few times a second.
struct Progress {
    started: Instant,
    shown: Instant,
    terminal: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            shown: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, bytes: u64) {
        if self.terminal && self.shown.elapsed() > Duration::from_millis(250) {
            self.shown = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r  {:>10.1} MiB written, {:>7.1} MiB/s ",
                bytes as f64 / 1048576.0,
                bytes as f64 / 1048576.0 / seconds
            );
        }
    }

    fn finish(&self, bytes: u64) {
        if self.terminal {
            eprintln!(
                "\r  {:>10.1} MiB written in {:.1} s          ",
                bytes as f64 / 1048576.0,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Removes the oldest verified backups of this database beyond `keep` (a dump counts as
/// verified when its `.sha256` is beside it); returns what was removed.
fn prune(dir: &Path, stem: &str, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("{stem}-");
    let mut backups: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".dump"))
                .is_some_and(|time| {
                    time.len() == 16 && time.ends_with('Z') && time.as_bytes()[8] == b'T'
                })
        })
        .filter(|name| dir.join(format!("{name}.sha256")).is_file())
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in backups.into_iter().take(excess) {
        let dump = dir.join(&name);
        fs::remove_file(dir.join(format!("{name}.sha256")))
            .and_then(|()| fs::remove_file(&dump))
            .with_context(|| format!("cannot remove old backup {}", dump.display()))?;
        removed.push(dump);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_text_quotes_the_database_label() {
        let text = metrics_text("odd\"db\\x", 1700000000.5, 42, Duration::from_millis(1500));
        assert!(text.contains(
            "saulpos_backup_last_success_timestamp_seconds{database=\"odd\\\"db\\\\x\"} 1700000000.500\n"
        ));
        assert!(text.contains("saulpos_backup_last_size_bytes{database=\"odd\\\"db\\\\x\"} 42\n"));
        assert!(text.contains("# TYPE saulpos_backup_last_duration_seconds gauge\n"));
    }
}
