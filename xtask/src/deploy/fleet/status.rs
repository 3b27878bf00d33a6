//! `cargo xtask status <env> <destination>...`: one line a host.

use std::thread;

use anyhow::bail;
use serde_json::json;

use super::Fleet;
use super::report::{or_null, render};
use crate::deploy::remote::Ran;

/// `cargo xtask status <env> <destination>...`: one line per host (live, previous, health).
pub fn status(fleet: &Fleet, json_out: bool) -> anyhow::Result<()> {
    let rows: Vec<anyhow::Result<Ran>> = thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .destinations
            .iter()
            .map(|destination| {
                scope.spawn(move || {
                    let path = Fleet::path(destination);
                    let mut args = vec!["probe".to_owned(), fleet.env.clone(), path];
                    args.extend(fleet.health_url_for(destination));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    fleet
                        .connector
                        .run(fleet.connector.fleet(destination, &args), "", false)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a status thread panicked"))
            .collect()
    });
    let mut hosts = Vec::new();
    let mut unreachable = 0;
    for (destination, row) in fleet.destinations.iter().zip(rows) {
        let ran = row.unwrap_or_else(|error| Ran {
            success: false,
            lines: vec![format!("error: {error:#}")],
        });
        let fact = |name: &str| {
            ran.lines
                .iter()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_owned()
        };
        if ran.success {
            hosts.push(json!({
                "destination": destination.to_string(),
                "live": or_null(&fact("live")),
                "previous": or_null(&fact("previous")),
                "health": fact("health"),
            }));
        } else {
            unreachable += 1;
            hosts.push(json!({ "destination": destination.to_string(), "error": ran.why() }));
        }
    }
    if json_out {
        println!("{}", json!({ "env": fleet.env, "hosts": hosts }));
    } else {
        let mut table = vec![
            ["HOST", "LIVE", "PREVIOUS", "HEALTH"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for host in &hosts {
            let text = |key: &str| host[key].as_str().unwrap_or("none").to_owned();
            if host.get("error").is_some() {
                table.push(vec![
                    text("destination"),
                    "?".into(),
                    "?".into(),
                    format!("unreachable: {}", text("error")),
                ]);
            } else {
                table.push(vec![
                    text("destination"),
                    text("live"),
                    text("previous"),
                    text("health"),
                ]);
            }
        }
        print!("{}", render(&table));
    }
    if unreachable > 0 {
        bail!("{unreachable} destination(s) could not be read; see the table");
    }
    Ok(())
}
