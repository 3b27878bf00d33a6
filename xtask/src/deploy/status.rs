//! `cargo xtask status <env> <dest>`: the live and previous releases, the releases kept, and
//! the release the server really runs (and what to do when it is not the live one), the
//! databases restores kept aside, and the end of the deploy history.

use serde_json::{Value, json};
use xshell::Shell;

use std::path::Path;

use crate::database::predeploy::Connection;
use crate::deploy::destination::Destination;
use crate::deploy::fleet::{self, Fleet};
use crate::deploy::installation::Installation;
use crate::deploy::service;
use crate::flags;

impl flags::Status {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (destinations, rollout) = self.fleet.destinations(&self.destinations)?;
        if rollout {
            let mut fleet = Fleet::new(self.env, destinations, &self.fleet)?;
            fleet.health_url = self.health_url.clone();
            return fleet::status(&fleet, self.json);
        }
        let Some(Destination::Local(given)) = destinations.into_iter().next() else {
            unreachable!("one local destination");
        };
        self.run_local(&given)
    }

    fn run_local(self, given: &Path) -> anyhow::Result<()> {
        let installation = Installation::existing(self.env, given)?;
        let live = installation.live();
        let previous = installation.previous();
        let kept: Vec<String> = installation
            .kept()
            .iter()
            .map(ToString::to_string)
            .collect();
        let history = installation.history();
        let recent: Vec<&Value> = history.iter().rev().take(self.history).rev().collect();
        // The backup taken before each deploy the history records, and whether it is still there.
        let backups: Vec<Value> = history
            .iter()
            .filter(|event| event["action"] == "deploy" && event["backup"].is_string())
            .map(|event| {
                let file = event["backup"].as_str().unwrap_or_default();
                json!({
                    "release": event["to"],
                    "time": event["time"],
                    "backup": file,
                    "sha256": event["backup_sha256"],
                    "present": std::path::Path::new(file).is_file(),
                })
            })
            .collect();
        let running = service::report(&installation, live.as_deref());
        let connection = Connection::of(&installation);
        // The databases restores kept aside, as the server lists them now.
        let kept_databases: Vec<String> = connection
            .as_ref()
            .and_then(|connection| connection.kept_databases().ok())
            .unwrap_or_default();
        if self.json {
            let out = json!({
                "running": running,
                "kept_databases": kept_databases,
                "backups": backups,
                "env": installation.env,
                "folder": installation.dir,
                "live": live,
                "previous": previous,
                "kept": kept,
                "history": recent,
            });
            println!("{out}");
            return Ok(());
        }
        println!("environment: {}", installation.env);
        println!("folder:      {}", installation.dir.display());
        println!("live:        {}", live.as_deref().unwrap_or("none"));
        println!("running:     {}", running_line(&running));
        println!("previous:    {}", previous.as_deref().unwrap_or("none"));
        println!("kept:        {}", kept.join(", "));
        println!("backups taken before deploys:");
        if backups.is_empty() {
            println!("  none");
        }
        for backup in &backups {
            println!(
                "  before {:<10} {}  {}{}",
                backup["release"].as_str().unwrap_or("-"),
                backup["time"].as_str().unwrap_or("-"),
                backup["backup"].as_str().unwrap_or("-"),
                if backup["present"] == true {
                    ""
                } else {
                    "  (MISSING: pruned or moved)"
                }
            );
        }
        if let Some(connection) = &connection
            && !kept_databases.is_empty()
        {
            println!("databases restores kept aside (drop each when no longer needed):");
            for name in &kept_databases {
                println!("  {name}:  {}", connection.drop_command(name));
            }
        }
        println!("history (last {}):", recent.len());
        for event in recent {
            let text = |key: &str| event[key].as_str().unwrap_or("-").to_owned();
            println!(
                "  {}  {:<8} {:>10} -> {:<10} by {}{}{}",
                text("time"),
                text("action"),
                text("from"),
                text("to"),
                text("user"),
                event["reason"]
                    .as_str()
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default(),
                event["kept_database"]
                    .as_str()
                    .map(|kept| format!(" (the data before kept as {kept})"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// What runs, in one line: the release the process runs, and the next step when it is not the
/// live one.
fn running_line(running: &Value) -> String {
    let pid = running["pid"]
        .as_u64()
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    let url = running["url"].as_str().unwrap_or("?");
    let answer = match (
        running["info_version"].as_str(),
        running["info_error"].as_str(),
    ) {
        (Some(_), _) => format!(", answering at {url}"),
        (None, Some(error)) => format!("; nothing answers at {url}: {error}"),
        (None, None) => String::new(),
    };
    let what = match running["version"].as_str() {
        Some(version) => format!("{version}{pid}{answer}"),
        None => format!("unknown{pid}{answer}"),
    };
    match running["next"].as_str() {
        Some(next) => format!("{what}; {next}"),
        None => what,
    }
}
