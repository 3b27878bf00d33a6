//! `cargo xtask bench deploy`: the time to deploy the real artifact (verify, extract, switch)
//! and to switch back with a rollback, each the median of several runs.

use std::fs;

use xshell::Shell;

use super::{Row, fresh_dir, median, note, package_version, timed};
use crate::{flags, project_root};

pub fn run(sh: &Shell, flags: &flags::BenchDeploy) -> anyhow::Result<Vec<Row>> {
    let runs = flags.runs.max(1);
    let work = project_root().join("target/bench/deploy");
    let dist = work.join("dist");
    fresh_dir(&work)?;
    for version in ["0.0.0-bench.1", "0.0.0-bench.2"] {
        note(&format!(
            "packaging {version} (builds the server if needed)"
        ));
        package_version(sh, &dist, version)?;
    }
    let deploy = |dest: &std::path::Path, version: &str| {
        flags::Deploy {
            env: "staging".to_owned(),
            version: version.to_owned(),
            dest: dest.to_owned(),
            keep: 5,
            reason: Some("bench".to_owned()),
            dist: Some(dist.clone()),
            json: false,
        }
        .run(sh)
    };
    let mut deploys = Vec::new();
    let mut rollbacks = Vec::new();
    for run in 1..=runs {
        note(&format!("deploy and rollback, run {run} of {runs}"));
        let dest = work.join(format!("dest-{run}"));
        fs::create_dir_all(&dest)?;
        let ((), took) = timed(|| deploy(&dest, "0.0.0-bench.1"))?;
        deploys.push(took);
        deploy(&dest, "0.0.0-bench.2")?;
        let ((), took) = timed(|| {
            flags::Rollback {
                env: "staging".to_owned(),
                dest: dest.clone(),
                to: None,
                reason: Some("bench".to_owned()),
                json: false,
            }
            .run(sh)
        })?;
        rollbacks.push(took);
    }
    let size = fs::read_dir(dist.join("0.0.0-bench.1"))?
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().ends_with(".tar.gz"))
        .map(|entry| entry.metadata().map(|meta| meta.len()).unwrap_or(0))
        .unwrap_or(0);
    fs::remove_dir_all(&work)?;
    let (deploy_time, rollback_time) = (median(deploys), median(rollbacks));
    let deploy_ms = deploy_time.as_secs_f64() * 1000.0;
    let rollback_ms = rollback_time.as_secs_f64() * 1000.0;
    Ok(vec![
        Row::figure("archive deployed", format!("{size} bytes")),
        Row::goal(
            format!("deploy: verify, extract, switch (median of {runs})"),
            format!("{deploy_ms:.0} ms"),
            "< 500 ms",
            deploy_ms < 500.0,
        ),
        Row::goal(
            format!("rollback: re-verify and switch (median of {runs})"),
            format!("{rollback_ms:.1} ms"),
            "< 50 ms",
            rollback_ms < 50.0,
        ),
    ])
}
