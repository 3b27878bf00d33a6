//! The server an installed folder runs on this host: which release the process runs (from the
//! kernel, not the `current` link), what `/actuator/info` says, and how it is run (systemd's
//! unit or run.sh), to stop and start it around a restore.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::deploy::http::{self, BaseUrl};
use crate::deploy::installation::Installation;

/// What runs the environment's server here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// Its systemd unit `saulpos-<env>` is active.
    Systemd,
    /// run.sh started it (its pid file names a live process).
    RunSh,
    /// Nothing runs it.
    Stopped,
}

impl Manager {
    /// How the server of `installation` runs now.
    pub fn detect(installation: &Installation) -> Manager {
        let unit_active = Command::new("systemctl")
            .args(["is-active", "--quiet", &installation.service_name()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if unit_active {
            Manager::Systemd
        } else if Running::read(installation).pid.is_some() {
            Manager::RunSh
        } else {
            Manager::Stopped
        }
    }

    /// The command that starts it again, run by sh in the folder (none when it was stopped).
    pub fn start_command(self, installation: &Installation) -> Option<String> {
        match self {
            Manager::Systemd => Some(format!("systemctl start {}", installation.service_name())),
            Manager::RunSh => Some("./run.sh start".to_owned()),
            Manager::Stopped => None,
        }
    }

    /// The command that stops it, as an operator would type it.
    pub fn stop_command(self, installation: &Installation) -> Option<String> {
        match self {
            Manager::Systemd => Some(format!("systemctl stop {}", installation.service_name())),
            Manager::RunSh => Some(format!("{}/run.sh stop", installation.dir.display())),
            Manager::Stopped => None,
        }
    }

    /// Stops the server and waits until it is gone (run.sh stop waits for requests in flight).
    pub fn stop(self, installation: &Installation) -> anyhow::Result<()> {
        let Some(command) = self.stop_command(installation) else {
            return Ok(());
        };
        eprintln!("stopping the server so that nothing writes during the restore: {command}");
        run_sh(installation, &command)
    }

    /// Starts the server again the way it ran before.
    pub fn start(self, installation: &Installation) -> anyhow::Result<()> {
        match self.start_command(installation) {
            Some(command) => run_sh(installation, &command),
            None => Ok(()),
        }
    }
}

fn run_sh(installation: &Installation, command: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args(["-c", command])
        .current_dir(&installation.dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {command}"))?;
    if !status.success() {
        bail!("`{command}` failed ({status})");
    }
    Ok(())
}

/// The server of an installed folder as this host sees it.
pub struct Running {
    /// run.sh's pid, when its pid file names a live process.
    pub pid: Option<u32>,
    /// The release that process runs, from `/proc/<pid>/exe`.
    pub release: Option<String>,
}

impl Running {
    /// Reads run.sh's pid file and the binary the kernel started for it.
    pub fn read(installation: &Installation) -> Running {
        let pid = fs::read_to_string(installation.dir.join("saulpos.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|pid| fs::metadata(format!("/proc/{pid}")).is_ok());
        let release = pid.and_then(|pid| {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let rest = exe.strip_prefix(installation.releases()).ok()?;
            Some(rest.iter().next()?.to_string_lossy().into_owned())
        });
        Running { pid, release }
    }
}

/// What `/actuator/info` at `url` says the server runs: its version, or why there is no answer.
pub fn info_version(url: &str) -> Result<String, String> {
    let base = BaseUrl::parse(url).map_err(|error| format!("{error:#}"))?;
    let response = http::request(&base, "GET", "/actuator/info", None, Duration::from_secs(2))
        .map_err(|error| format!("{error:#}"))?;
    let info = response.json().map_err(|error| format!("{error:#}"))?;
    info["version"].as_str().map(str::to_owned).ok_or_else(|| {
        format!(
            "/actuator/info answered {} without a version",
            response.status
        )
    })
}

/// The truth about what runs against what is live: the process's release (or info's version),
/// and the next step when the live link points elsewhere.
pub fn report(installation: &Installation, live: Option<&str>) -> Value {
    let running = Running::read(installation);
    let url = installation.health_url();
    let answered = info_version(&url);
    let version = running
        .release
        .clone()
        .or_else(|| answered.as_ref().ok().cloned());
    let next = match (version.as_deref(), live) {
        (Some(version), Some(live)) if version != live => Some(format!(
            "{live} is installed but not running: {}",
            restart_hint(installation)
        )),
        (None, Some(_)) if running.pid.is_none() && answered.is_err() => Some(format!(
            "not running: {}/run.sh start",
            installation.dir.display()
        )),
        _ => None,
    };
    json!({
        "pid": running.pid,
        "version": version,
        "url": url,
        "info_version": answered.as_ref().ok(),
        "info_error": answered.as_ref().err(),
        "next": next,
    })
}

/// The command that restarts the server the way it runs now.
fn restart_hint(installation: &Installation) -> String {
    match Manager::detect(installation) {
        Manager::Systemd => format!("sudo systemctl restart {}", installation.service_name()),
        _ => format!("{}/run.sh restart", installation.dir.display()),
    }
}
