//! Driving deploys as the tests do: `cargo xtask` in the shared clone, run.sh's server started
//! and stopped, the live link, snapshots of a folder, a held lock, the health gate's outcome,
//! and a payload unpacked and installed on a host with no workspace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::hostile::unpack_payload;
use super::{clone, text, xtask, xtask_json, xtask_ok};

/// `cargo xtask <args>` in the shared clone.
pub fn run(args: &[&str]) -> Output {
    xtask(&clone().dir, args)
}

/// `cargo xtask <args>` in the shared clone, which must succeed: its whole output.
#[track_caller]
pub fn run_ok(args: &[&str]) -> String {
    xtask_ok(&clone().dir, args)
}

/// `cargo xtask <args> --json`-style commands in the shared clone, which must succeed: the JSON
/// object they print on stdout.
#[track_caller]
pub fn run_json(args: &[&str]) -> serde_json::Value {
    xtask_json(&clone().dir, args)
}

/// `cargo xtask deploy <env> <version> <dest> <extra>` in the shared clone, which must succeed:
/// its whole output.
#[track_caller]
pub fn deploy_ok(env: &str, version: &str, dest: &Path, extra: &[&str]) -> String {
    let mut args = vec!["deploy", env, version, dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// `cargo xtask deploy <env> <version> <dest> <extra>` in the shared clone.
pub fn deploy(env: &str, version: &str, dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["deploy", env, version, dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

/// `run.sh` started with only `envs` from the SAULPOS_ family, like an operator's shell.
pub fn start_run_sh(payload: &Path, envs: &[(&str, String)]) -> Child {
    let mut command = Command::new(payload.join("run.sh"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SAULPOS_") || name.starts_with("PG") {
            command.env_remove(name);
        }
    }
    command
        .envs(envs.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        // Started by hand, run.sh copies the server's logs to its stdout as well as to the log.
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cargo xtask health` until the server at `url` is UP with `version`; its output.
pub fn wait_up(url: &str, version: &str) -> Output {
    let health = run(&[
        "health",
        "--url",
        url,
        "--timeout",
        "60s",
        "--expect-version",
        version,
    ]);
    assert!(health.status.success(), "{}", text(&health));
    health
}

pub fn live(payload: &Path) -> String {
    fs::read_link(payload.join("current"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The payload's files (their SHA-256) and the link targets, to show that nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            found.push((
                path.clone(),
                format!("link -> {}", fs::read_link(&path).unwrap().display()),
            ));
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            found.push((path.clone(), super::hostile::hex(&fs::read(&path).unwrap())));
        }
    }
    found.sort();
    found
}

/// A process that holds `lock` with flock, as a deploy or install.sh does, its details written.
pub fn hold_lock(lock: &Path, user: &str, action: &str) -> Child {
    let mut holder = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 9>>\"$0\" && flock 9 && printf 'pid=%s\\nuser={user}\\naction={action}\\nsince=2026-11-24T10:00:00Z\\n' $$ > \"$0\" && echo held && exec sleep 60"
        ))
        .arg(lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "held\n");
    holder
}

/// A restart command that starts the server only when 1.2.0 is live, so 1.0.0 never comes up.
pub const STARTS_ONLY_1_2_0: &str = "if [ \"$(readlink current)\" = releases/1.2.0 ]; then ./run.sh restart; else ./run.sh stop; fi";

/// A deploy or install with --restart succeeded: `version` is UP at `url` after the gate.
pub fn assert_passed_the_gate(output: &Output, url: &str, version: &str) {
    let message = text(output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains(&format!(
            "{version} is UP at {url} and passed the smoke checks"
        )),
        "{message}"
    );
    let (_, info) = crate::support::get_json(&format!("{url}/actuator/info"));
    assert_eq!(info["version"], version);
}

/// After a failed gate: 1.2.0 is live and answers at `url`, and the history ends with the
/// switch back, which is returned.
pub fn assert_back_on_1_2_0(payload: &Path, url: &str) -> serde_json::Value {
    assert_eq!(live(payload), "releases/1.2.0");
    let (_, info) = crate::support::get_json(&format!("{url}/actuator/info"));
    assert_eq!(info["version"], "1.2.0");
    let history = fs::read_to_string(payload.join("history.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["to"], "1.2.0");
    last
}

/// A host's shell: nothing but PATH (no cargo on it), and a fixed user for the history.
pub fn host_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("USER", "e2e")
        .stdin(Stdio::null());
    command
}

/// `./install.sh <args>` from the payload folder.
pub fn install_sh(payload: &Path, args: &[&str]) -> Output {
    host_command(&payload.join("install.sh"))
        .args(args)
        .current_dir(payload)
        .output()
        .unwrap()
}

pub fn rollback_sh(installed: &Path, args: &[&str]) -> Output {
    host_command(&installed.join("rollback.sh"))
        .args(args)
        .output()
        .unwrap()
}

/// The payload of `env` for `version`, copied out of dist/ and unpacked in a folder of its own.
pub fn payload_copy(release: &Path, env: &str, version: &str) -> (tempfile::TempDir, PathBuf) {
    let host = tempfile::tempdir().unwrap();
    let copy = host.path().join(format!("saulpos-{env}-{version}.tar.gz"));
    fs::copy(
        release.join(format!("saulpos-{env}-{version}.tar.gz")),
        &copy,
    )
    .unwrap();
    let folder = unpack_payload(host.path(), env, version, host.path());
    (host, folder)
}

/// Copies every file of the release folder `from` into `to`.
pub fn copy_release(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("kubernetes")).unwrap();
    for name in release_files(from) {
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// Every file of a release folder, `kubernetes/` ones as `kubernetes/<name>`, sorted.
pub fn release_files(release: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(release).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.path().is_dir() {
            for inner in fs::read_dir(entry.path()).unwrap() {
                names.push(format!(
                    "{name}/{}",
                    inner.unwrap().file_name().into_string().unwrap()
                ));
            }
        } else {
            names.push(name);
        }
    }
    names.sort();
    names
}
