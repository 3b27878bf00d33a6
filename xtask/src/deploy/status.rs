//! `cargo xtask status <env> <dest>`: the live and previous releases, the releases kept, and
//! the end of the deploy history.

use serde_json::{Value, json};
use xshell::Shell;

use std::path::Path;

use crate::deploy::destination::Destination;
use crate::deploy::fleet::{self, Fleet};
use crate::deploy::payload::Payload;
use crate::flags;

impl flags::Status {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (destinations, rollout) = self.fleet.destinations(&self.destinations)?;
        if rollout {
            let mut fleet = Fleet::new(&self.env, destinations, &self.fleet)?;
            fleet.health_url = self.health_url.clone();
            return fleet::status(&fleet, self.json);
        }
        let Some(Destination::Local(given)) = destinations.into_iter().next() else {
            unreachable!("one local destination");
        };
        self.run_local(&given)
    }

    fn run_local(self, given: &Path) -> anyhow::Result<()> {
        let payload = Payload::existing(&self.env, given)?;
        let live = payload.live();
        let previous = payload.previous();
        let kept: Vec<String> = payload.kept().iter().map(ToString::to_string).collect();
        let history = payload.history();
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
        if self.json {
            let out = json!({
                "backups": backups,
                "env": payload.env,
                "payload": payload.dir,
                "live": live,
                "previous": previous,
                "kept": kept,
                "history": recent,
            });
            println!("{out}");
            return Ok(());
        }
        println!("environment: {}", payload.env);
        println!("payload:     {}", payload.dir.display());
        println!("live:        {}", live.as_deref().unwrap_or("none"));
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
        println!("history (last {}):", recent.len());
        for event in recent {
            let text = |key: &str| event[key].as_str().unwrap_or("-").to_owned();
            println!(
                "  {}  {:<8} {:>10} -> {:<10} by {}{}",
                text("time"),
                text("action"),
                text("from"),
                text("to"),
                text("user"),
                event["reason"]
                    .as_str()
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}
