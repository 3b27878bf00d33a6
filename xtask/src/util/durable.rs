//! Writing so that a final name always means a complete file: write under a temporary name in
//! the same folder, fsync, rename, fsync the folder.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Flushes a folder's entries (a rename in it) to disk.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// `<dir>/.<name>.partial-<pid>`: beside the final name, hidden, and owned by this process.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Removes what killed runs left in `dir`: `.<prefix>....partial-<pid>` whose process is gone.
pub fn remove_stale_partials(dir: &Path, prefix: &str) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !file_name.starts_with(&format!(".{prefix}")) {
            continue;
        }
        let Some((_, pid)) = file_name.rsplit_once(".partial-") else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            let stale = entry.path();
            eprintln!("removing {} left by an interrupted run", stale.display());
            let removed = if stale.is_dir() {
                fs::remove_dir_all(&stale)
            } else {
                fs::remove_file(&stale)
            };
            removed.with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    Ok(())
}

/// Creates (or truncates) `path` readable and writable by its owner only (0600), whatever the
/// umask: for what holds customer data or logs (backups, evidence bundles).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Creates `dir` and the folders above it that are missing, each open to its owner only (0700);
/// folders that exist keep their mode.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` atomically with the permission bits `mode`, whatever the umask.
pub fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    write_as(path, bytes, Some(mode))
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_as(path, bytes, None)
}

fn write_as(path: &Path, bytes: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let temporary = temporary_name(path);
    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        if let Some(mode) = mode {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A folder that is removed on drop unless it was renamed into place with `commit`.
pub struct StagingDir {
    path: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates the temporary folder for `final_path`.
    pub fn new(final_path: &Path) -> anyhow::Result<StagingDir> {
        let path = temporary_name(final_path);
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(StagingDir {
            path,
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the folder and renames it to `final_path` in one step.
    pub fn commit(mut self, final_path: &Path) -> anyhow::Result<()> {
        sync_dir(&self.path)?;
        fs::rename(&self.path, final_path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                final_path.display()
            )
        })?;
        self.committed = true;
        sync_dir(final_path.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
