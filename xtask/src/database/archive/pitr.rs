//! A cluster restored to a point in time beside the live one: the steps `archive restore` and
//! `archive extract` share. A new cluster (pg_createcluster, emptied), pgBackRest's restore of
//! the backup before the target with the WAL up to it, a start, the promotion once the target
//! is reached, and the proof that it stopped there. A guard process removes the cluster if
//! this one dies before it is kept.

use std::process::Child;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::database::archive::cluster::{self, Cluster};
use crate::database::archive::guard;
use crate::database::archive::host::DbHost;
use crate::database::pgbackrest::PgBackRest;
use crate::flags::ArchiveOn;
use crate::util::progress::step;
use crate::util::utc;

/// What to make: the cluster's version, name, port (none: pg_createcluster picks one) and
/// data directory, `postgresql.conf` settings, and the point in time.
pub struct Plan<'a> {
    pub version: &'a str,
    pub name: &'a str,
    pub port: Option<u16>,
    pub data_dir: Option<&'a str>,
    pub options: &'a [&'a str],
    pub target: i64,
}

/// A restored cluster, removed when dropped unless kept.
pub struct Restored<'h> {
    pub cluster: Cluster,
    host: &'h DbHost,
    guard: Option<Child>,
    kept: bool,
    /// The commit recovery stopped before, as PostgreSQL logged it, and the last one applied.
    pub stopped_before: String,
    pub last_applied: Option<String>,
}

impl Restored<'_> {
    /// From now on the cluster stays, whatever happens to this process.
    pub fn keep(mut self) -> Cluster {
        self.kept = true;
        if let Some(child) = self.guard.take() {
            guard::finish(child);
        }
        self.cluster.clone()
    }

    /// Stops and removes the cluster now that it served.
    pub fn remove(mut self) -> anyhow::Result<()> {
        cluster::drop(self.host, &self.cluster.version, &self.cluster.name)?;
        self.kept = true;
        if let Some(child) = self.guard.take() {
            guard::finish(child);
        }
        Ok(())
    }

    pub fn json(&self) -> Value {
        json!({
            "cluster": self.cluster.id(),
            "port": self.cluster.port,
            "data_directory": self.cluster.data_dir,
            "stopped_before": self.stopped_before,
            "last_applied_commit": self.last_applied,
        })
    }
}

impl Drop for Restored<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Failed part-way: the guard removes the cluster, as it would had this process died.
        match self.guard.take() {
            Some(child) => guard::abandon(child),
            None => {
                let cluster = &self.cluster;
                if let Err(error) = guard::remove(
                    self.host,
                    &cluster.version,
                    &cluster.name,
                    &cluster.data_dir,
                ) {
                    eprintln!(
                        "note: the unfinished cluster {} could not be removed ({error:#}); remove it: pg_dropcluster --stop {} {}",
                        cluster.id(),
                        cluster.version,
                        cluster.name
                    );
                }
            }
        }
    }
}

/// Makes the cluster of `plan` and brings it to the target.
pub fn restore_beside<'h>(
    host: &'h DbHost,
    pgbackrest: &PgBackRest,
    on: &ArchiveOn,
    plan: &Plan<'_>,
    started: Instant,
) -> anyhow::Result<Restored<'h>> {
    // The guard first: a kill during pg_createcluster leaves a half-made cluster it removes.
    let data_dir = plan
        .data_dir
        .map(str::to_owned)
        .unwrap_or_else(|| format!("/var/lib/postgresql/{}/{}", plan.version, plan.name));
    let guard = guard::start(on, plan.version, plan.name, &data_dir);
    let mut restored = Restored {
        guard,
        cluster: Cluster {
            version: plan.version.to_owned(),
            name: plan.name.to_owned(),
            port: plan.port.unwrap_or(0),
            online: false,
            data_dir: data_dir.clone(),
            log_file: String::new(),
        },
        host,
        kept: false,
        stopped_before: String::new(),
        last_applied: None,
    };
    restored.cluster = cluster::create_empty(
        host,
        plan.version,
        plan.name,
        plan.port,
        Some(&data_dir),
        plan.options,
    )?;
    let cluster = restored.cluster.clone();
    step(
        started,
        &format!(
            "created cluster {} (port {}, data {}); restoring the backup before {}",
            cluster.id(),
            cluster.port,
            cluster.data_dir,
            utc::postgres_instant(plan.target)
        ),
    );
    pgbackrest.run_with_progress(
        host,
        "restore",
        &[
            format!("--pg1-path={}", cluster.data_dir),
            "--type=time".to_owned(),
            format!("--target={}", utc::postgres_instant(plan.target)),
            "--target-action=promote".to_owned(),
            // The restored cluster must never archive into the live one's repository.
            "--archive-mode=off".to_owned(),
        ],
        started,
    )?;
    step(
        started,
        &format!("starting {}: replaying WAL up to the target", cluster.id()),
    );
    cluster
        .control(host, "start")
        .with_context(|| cluster::log_tail(host, &cluster))?;
    cluster::wait_promoted(host, &cluster, started)?;
    let Some(stopped_before) = cluster::recovery_stop(host, &cluster)? else {
        bail!(
            "cluster {} ended its recovery without reaching {}: {}",
            cluster.id(),
            utc::postgres_instant(plan.target),
            cluster::log_tail(host, &cluster)
        );
    };
    let applied = cluster.psql(
        host,
        "postgres",
        "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, ''), \
                coalesce(pg_last_xact_replay_timestamp()::text, '')",
        &[],
    )?;
    let (applied_epoch, applied_text) = applied.split_once('|').unwrap_or(("", ""));
    if let Ok(seconds) = applied_epoch.parse::<f64>()
        && (seconds * 1_000_000.0) as i64 > plan.target
    {
        bail!(
            "cluster {} applied a commit of {applied_text}, after the target {}",
            cluster.id(),
            utc::postgres_instant(plan.target)
        );
    }
    restored.stopped_before = stopped_before;
    restored.last_applied = Some(applied_text.to_owned()).filter(|text| !text.is_empty());
    step(
        started,
        &format!(
            "{} reached the target and promoted: it stopped before {}",
            cluster.id(),
            restored.stopped_before
        ),
    );
    Ok(restored)
}
