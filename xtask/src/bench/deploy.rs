//! `cargo xtask bench deploy`: the time to install the real payload with `cargo xtask deploy`
//! (its checks, then the payload's `install.sh` as a one-host rollout) and with `install.sh`
//! alone (unpacked first, as on a host), and to switch back with a rollback, each the median of
//! several runs.

use std::fs;

use xshell::{Shell, cmd};

use super::{Row, fresh_dir, median, note, package_version, timed};
use crate::release::payload_files;
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
            env: flags::Env::Staging,
            version: version.to_owned(),
            destinations: vec![dest.display().to_string()],
            fleet: flags::FleetArgs::local(),
            keep: 5,
            reason: Some("bench".to_owned()),
            dist: Some(dist.clone()),
            allowed_signers: None,
            restart: false,
            restart_command: None,
            health_url: None,
            health_timeout: std::time::Duration::from_secs(60),
            no_backup: false,
            backup: false,
            backup_dir: None,
            canary: flags::CanaryArgs::none(),
            json: false,
        }
        .run(sh)
    };
    let payload = dist
        .join("0.0.0-bench.1")
        .join(payload_files::payload_archive_name(
            "staging",
            "0.0.0-bench.1",
        ));
    let mut deploys = Vec::new();
    let mut installs = Vec::new();
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
                env: flags::Env::Staging,
                destinations: vec![dest.display().to_string()],
                fleet: flags::FleetArgs::local(),
                health_timeout: std::time::Duration::from_secs(60),
                health_url: None,
                with_data: false,
                yes: false,
                to: None,
                reason: Some("bench".to_owned()),
                allowed_signers: None,
                json: false,
            }
            .run(sh)
        })?;
        rollbacks.push(took);

        // The host's way: unpack the payload, run its install.sh.
        let host = work.join(format!("host-{run}"));
        let installed = host.join("opt");
        fs::create_dir_all(&installed)?;
        let install_sh = host
            .join(payload_files::payload_name("staging", "0.0.0-bench.1"))
            .join("install.sh");
        let ((), took) = timed(|| {
            cmd!(sh, "tar -xzf {payload} -C {host}").quiet().run()?;
            cmd!(sh, "{install_sh} {installed} --reason bench")
                .quiet()
                .ignore_stderr()
                .run()?;
            Ok(())
        })?;
        installs.push(took);
    }
    let size = fs::metadata(&payload).map(|meta| meta.len()).unwrap_or(0);
    fs::remove_dir_all(&work)?;
    let (deploy_time, rollback_time) = (median(deploys), median(rollbacks));
    let deploy_ms = deploy_time.as_secs_f64() * 1000.0;
    let install_ms = median(installs).as_secs_f64() * 1000.0;
    let shell_ratio = install_ms / deploy_ms;
    let rollback_ms = rollback_time.as_secs_f64() * 1000.0;
    Ok(vec![
        Row::figure("payload deployed", format!("{size} bytes")),
        Row::goal(
            format!("cargo xtask deploy: checks, then install.sh (median of {runs})"),
            format!("{deploy_ms:.0} ms"),
            "< 500 ms",
            deploy_ms < 500.0,
        ),
        Row::goal(
            format!("tar -xzf payload + install.sh (median of {runs})"),
            format!("{install_ms:.0} ms"),
            "< 500 ms",
            install_ms < 500.0,
        ),
        Row::goal(
            "install.sh alone / cargo xtask deploy",
            format!("{shell_ratio:.2}"),
            "<= 2",
            shell_ratio <= 2.0,
        ),
        Row::goal(
            format!("rollback: rollback.sh re-verifies and switches (median of {runs})"),
            format!("{rollback_ms:.1} ms"),
            "< 50 ms",
            rollback_ms < 50.0,
        ),
    ])
}
