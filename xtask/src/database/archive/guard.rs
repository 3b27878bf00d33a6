//! `cargo xtask archive-guard` (hidden): the process `archive restore` and `archive extract`
//! start beside themselves, before they make their cluster, in a process group of their own, so
//! that one killed where it cannot clean up (Ctrl-C, a kill, a lost SSH session) still stops and
//! removes the cluster it was restoring, even one `pg_createcluster` left half-made. A command
//! that fails lets its guard do the same: the removal has this one definition. The live cluster
//! is never the guard's business.

use std::ffi::OsString;
use std::io::Write;
use std::process::Child;

use crate::database::archive::host::DbHost;
use crate::flags;
use crate::util::guard;

pub use guard::{abandon, finish};

/// Stops and removes a cluster and its data directory whatever state a kill left them in:
/// registered or half-made by pg_createcluster, running or not.
const REMOVE: &str = r#"set -uo pipefail
version=$1 name=$2 data=$3
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env --chdir=/ "$@"; else "$@"; fi; }
found=
if pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1 == v && $2 == n { found = 1 } END { exit !found }'; then
  found=1
  pg_dropcluster --stop "$version" "$name" >/dev/null 2>&1
fi
if [ -f "$data/postmaster.pid" ]; then
  as_postgres "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
fi
for path in "/etc/postgresql/$version/$name" "$data"; do
  if [ -e "$path" ]; then found=1; rm -rf -- "$path" || exit 1; fi
done
rm -f -- "/var/log/postgresql/postgresql-$version-$name.log"
if [ -n "$found" ]; then echo removed; fi
"#;

impl flags::ArchiveGuard {
    pub fn run(self) -> anyhow::Result<()> {
        if guard::released() {
            return Ok(());
        }
        let host = DbHost::connect(&self.on)?;
        if !remove(&host, &self.version, &self.cluster, &self.data_dir)? {
            return Ok(());
        }
        // The terminal may be gone with the session: a message that cannot be written is lost.
        let _ = writeln!(
            std::io::stderr(),
            "the restore into cluster {}/{} did not finish: removed that cluster and its data directory {}; the live cluster was not touched",
            self.version,
            self.cluster,
            self.data_dir
        );
        Ok(())
    }
}

/// Removes what there is of the cluster; whether there was anything.
pub fn remove(host: &DbHost, version: &str, name: &str, data_dir: &str) -> anyhow::Result<bool> {
    let said = host.script_ok(
        &format!("remove the unfinished cluster {version}/{name}"),
        REMOVE,
        &[version, name, data_dir],
        None,
    )?;
    Ok(said.trim() == "removed")
}

/// Starts the guard of the cluster about to be made, in a process group of its own so that
/// Ctrl-C does not reach it. `None` (with a note) if it cannot start: the command goes on, and
/// removes the cluster itself when it fails.
pub fn start(on: &flags::ArchiveOn, version: &str, name: &str, data_dir: &str) -> Option<Child> {
    let mut args: Vec<OsString> = vec!["archive-guard".into()];
    if let Some(address) = &on.on {
        args.extend(["--on".into(), address.into()]);
    }
    if let Some(config) = &on.ssh_config {
        args.extend(["--ssh-config".into(), config.into()]);
    }
    args.extend([version, name, data_dir].map(OsString::from));
    guard::start(args, "removes the new cluster")
}
