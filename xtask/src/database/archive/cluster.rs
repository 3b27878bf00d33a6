//! PostgreSQL clusters on the database host, through Debian's cluster tools (`pg_lsclusters`,
//! `pg_createcluster`, `pg_ctlcluster`, `pg_dropcluster`), and SQL run there with `psql` over the
//! local socket as the postgres user.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::database::archive::host::DbHost;
use crate::util::progress::step;

/// One cluster, as `pg_lsclusters` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub version: String,
    pub name: String,
    pub port: u16,
    pub online: bool,
    pub data_dir: String,
    pub log_file: String,
}

impl Cluster {
    /// `15/main`, as the operator names it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.version, self.name)
    }

    /// Runs SQL on `database` of this cluster; the unaligned output. `vars` become psql
    /// variables (`:'name'` for literals).
    pub fn psql(
        &self,
        host: &DbHost,
        database: &str,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        psql(host, self.port, database, sql, vars)
    }

    /// `pg_ctlcluster VERSION NAME ACTION` (start, stop, restart), as the login user.
    pub fn control(&self, host: &DbHost, action: &str) -> anyhow::Result<()> {
        host.run_ok(
            &format!("{action} cluster {}", self.id()),
            &[
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ],
            None,
        )?;
        Ok(())
    }
}

/// SQL on the cluster at `port` of the host, over its local socket.
pub fn psql(
    host: &DbHost,
    port: u16,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<String> {
    let port = port.to_string();
    let dbname = crate::database::postgres::conninfo_dbname(database);
    let mut argv = vec![
        "psql",
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-p",
        &port,
        "-d",
        &dbname,
    ];
    let assignments: Vec<String> = vars
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    for assignment in &assignments {
        argv.extend(["-v", assignment.as_str()]);
    }
    let output = host.postgres_ok(
        &format!("run SQL on the cluster at port {port}"),
        &argv,
        Some(sql.as_bytes()),
    )?;
    Ok(output.trim_end().to_owned())
}

/// Every cluster on the host.
pub fn list(host: &DbHost) -> anyhow::Result<Vec<Cluster>> {
    let printed = host
        .run_ok("list the PostgreSQL clusters", &["pg_lsclusters", "--no-header"], None)
        .context("the archive commands need Debian's PostgreSQL cluster tools there (apt-get install postgresql-common)")?;
    let mut clusters = Vec::new();
    for line in printed.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            continue;
        }
        clusters.push(Cluster {
            version: fields[0].to_owned(),
            name: fields[1].to_owned(),
            port: fields[2].parse().unwrap_or(0),
            online: fields[3].starts_with("online"),
            data_dir: fields[5].to_owned(),
            log_file: fields.get(6).copied().unwrap_or_default().to_owned(),
        });
    }
    Ok(clusters)
}

/// The cluster whose data directory is `data_dir`.
pub fn by_data_dir(host: &DbHost, data_dir: &str) -> anyhow::Result<Option<Cluster>> {
    let wanted = data_dir.trim_end_matches('/');
    Ok(list(host)?
        .into_iter()
        .find(|cluster| cluster.data_dir.trim_end_matches('/') == wanted))
}

/// The cluster named `version/name`.
pub fn by_name(host: &DbHost, version: &str, name: &str) -> anyhow::Result<Option<Cluster>> {
    Ok(list(host)?
        .into_iter()
        .find(|cluster| cluster.version == version && cluster.name == name))
}

/// Creates an empty cluster (started by hand only, never at boot) for a restore to fill:
/// pg_createcluster's configuration with our port and `options` (`name=value`), its data
/// directory emptied.
pub fn create_empty(
    host: &DbHost,
    version: &str,
    name: &str,
    port: Option<u16>,
    data_dir: Option<&str>,
    options: &[&str],
) -> anyhow::Result<Cluster> {
    let port_text = port.map(|port| port.to_string());
    let mut argv = vec!["pg_createcluster", "--start-conf=manual"];
    if let Some(port) = &port_text {
        argv.extend(["-p", port.as_str()]);
    }
    if let Some(dir) = data_dir {
        argv.extend(["-d", dir]);
    }
    for option in options {
        argv.extend(["-o", option]);
    }
    argv.extend([version, name]);
    host.run_ok(&format!("create cluster {version}/{name}"), &argv, None)?;
    let cluster = by_name(host, version, name)?
        .with_context(|| format!("pg_createcluster made no cluster {version}/{name}"))?;
    host.postgres_ok(
        &format!(
            "empty the data directory {} for the restore",
            cluster.data_dir
        ),
        &["find", &cluster.data_dir, "-mindepth", "1", "-delete"],
        None,
    )?;
    Ok(cluster)
}

/// Stops and removes a cluster, its data directory and its configuration.
pub fn drop(host: &DbHost, version: &str, name: &str) -> anyhow::Result<()> {
    host.run_ok(
        &format!("remove cluster {version}/{name}"),
        &["pg_dropcluster", "--stop", version, name],
        None,
    )?;
    Ok(())
}

/// Waits until a cluster that is recovering has reached its target and promoted: it answers
/// and is out of recovery. Fails with the end of its log if it stops on the way.
pub fn wait_promoted(host: &DbHost, cluster: &Cluster, started: Instant) -> anyhow::Result<()> {
    let mut said_at = Instant::now();
    loop {
        match cluster.psql(host, "postgres", "SELECT pg_is_in_recovery()", &[]) {
            Ok(answer) if answer == "f" => return Ok(()),
            Ok(_) | Err(_) => {}
        }
        let still = by_name(host, &cluster.version, &cluster.name)?;
        if !still.is_some_and(|found| found.online) {
            bail!(
                "cluster {} stopped during recovery: {}",
                cluster.id(),
                log_tail(host, cluster)
            );
        }
        if said_at.elapsed() > Duration::from_secs(10) {
            said_at = Instant::now();
            step(started, &format!("{}: still replaying WAL", cluster.id()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last lines of a cluster's log that say something (for messages).
pub fn log_tail(host: &DbHost, cluster: &Cluster) -> String {
    host.run_ok(
        "read the cluster's log",
        &["tail", "-n", "8", &cluster.log_file],
        None,
    )
    .map(|text| {
        text.lines()
            .filter(|line| line.contains("FATAL") || line.contains("ERROR") || line.contains("LOG"))
            .collect::<Vec<_>>()
            .join(" | ")
    })
    .unwrap_or_else(|error| format!("(its log cannot be read: {error:#})"))
}

/// Where the recovery of a cluster stopped, from its log: the commit it stopped before and that
/// commit's time as PostgreSQL wrote it.
pub fn recovery_stop(host: &DbHost, cluster: &Cluster) -> anyhow::Result<Option<String>> {
    let log = host.run_ok("read the cluster's log", &["cat", &cluster.log_file], None)?;
    Ok(log.lines().rev().find_map(|line| {
        line.split_once("recovery stopping before ")
            .map(|(_, what)| what.to_owned())
    }))
}
