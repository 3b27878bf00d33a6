//! A payload installed on a host with no workspace: `install.sh` and `rollback.sh` run from a
//! copy of the payload under `env -i PATH=/usr/bin:/bin` (no cargo), `run.sh` starting the
//! server; refusals, the shared lock, kills at many points, and the same tree as `cargo xtask
//! deploy` leaves.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::hostile::{Evil, flip_a_byte, regenerate_sums, write_evil_release};
use crate::support::release_1_0_0;
use crate::support::release_1_2_0;
use crate::support::run_json;
use crate::support::{Configured, TestDb, free_port, text};
use crate::support::{
    STARTS_ONLY_1_2_0, assert_back_on_1_2_0, assert_passed_the_gate, deploy, hold_lock, live,
    snapshot, start_run_sh, stop, wait_up,
};
use crate::support::{host_command, install_sh, payload_copy, rollback_sh};

#[test]
fn install_sh_installs_starts_upgrades_and_rolls_back_on_a_host_without_cargo() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let (_one, payload_1) = payload_copy(first, "staging", "1.0.0");
    let (_two, payload_2) = payload_copy(second, "staging", "1.2.0");
    let db = TestDb::new("install_cycle");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-staging");

    let output = install_sh(&payload_1, &[dest_arg, "--reason", "first install"]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("live release of staging: 1.0.0 (was none)"),
        "{message}"
    );
    assert_eq!(live(&installed), "releases/1.0.0");
    for (name, mode) in [
        ("run.sh", 0o755),
        ("rollback.sh", 0o755),
        ("saulpos.env.example", 0o644),
    ] {
        let meta = fs::metadata(installed.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    let unit = fs::read_to_string(installed.join("saulpos-staging.service")).unwrap();
    let resolved = fs::canonicalize(&installed).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/run.sh", resolved.display())),
        "{unit}"
    );

    // A database that does not exist: run.sh by hand says so where it was started, with the
    // command that creates it, and `run.sh start` shows the end of the log.
    let port = free_port();
    fs::write(
        installed.join("saulpos.env"),
        format!(
            "SAULPOS_DB_URL=postgres://127.0.0.1:5432/{}_missing\nSAULPOS_DB_USERNAME=postgres\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\n",
            db.name
        ),
    )
    .unwrap();
    let by_hand = host_command(&installed.join("run.sh")).output().unwrap();
    let message = text(&by_hand);
    assert_eq!(by_hand.status.code(), Some(1), "{message}");
    let hint = format!(
        "createdb -h 127.0.0.1 -p 5432 -U postgres {}_missing",
        db.name
    );
    assert!(
        message.contains("does not exist") && message.contains(&hint),
        "{message}"
    );
    let started = host_command(&installed.join("run.sh"))
        .arg("start")
        .output()
        .unwrap();
    let message = text(&started);
    assert_eq!(started.status.code(), Some(1), "{message}");
    assert!(
        message.contains("saulpos-server exited at once") && message.contains(&hint),
        "{message}"
    );
    let status = host_command(&installed.join("run.sh"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));

    // The operator's saulpos.env, which no install touches.
    let env_text = format!(
        "SAULPOS_DB_URL=postgres://127.0.0.1:5432/{}\nSAULPOS_DB_USERNAME=postgres\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\n",
        db.name
    );
    fs::write(installed.join("saulpos.env"), &env_text).unwrap();
    fs::set_permissions(
        installed.join("saulpos.env"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start_run_sh(&installed, &[]);
    wait_up(&url, "1.0.0");

    // Version 2, then back with rollback.sh.
    let output = install_sh(&payload_2, &[dest_arg]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains(&format!("curl -sSf {url}/actuator/health")),
        "the next steps name the port of saulpos.env: {message}"
    );
    stop(&mut server);
    let mut server = start_run_sh(&installed, &[]);
    wait_up(&url, "1.2.0");

    let output = rollback_sh(&installed, &["--reason", "INC-7 checkout errors"]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("rolled staging back from 1.2.0 to 1.0.0 (files re-verified)"),
        "{message}"
    );
    assert_eq!(live(&installed), "releases/1.0.0");
    stop(&mut server);
    let mut server = start_run_sh(&installed, &[]);
    wait_up(&url, "1.0.0");
    stop(&mut server);

    assert_eq!(
        fs::read_to_string(installed.join("saulpos.env")).unwrap(),
        env_text
    );
    let history = fs::read_to_string(installed.join("history.log")).unwrap();
    let events: Vec<serde_json::Value> = history
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{history}");
    assert_eq!(events[0]["reason"], "first install");
    assert_eq!(events[1]["from"], "1.0.0");
    assert_eq!(events[1]["to"], "1.2.0");
    assert_eq!(events[2]["action"], "rollback");
    assert_eq!(events[2]["to"], "1.0.0");
    assert_eq!(events[2]["reason"], "INC-7 checkout errors");
    assert_eq!(events[2]["user"], "e2e");

    // cargo xtask reads the tree install.sh left: status, and nothing to roll back to twice.
    let status = run_json(&["status", "staging", dest_arg, "--json"]);
    assert_eq!(status["live"], "1.0.0");
    assert_eq!(status["previous"], "1.2.0");
    let output = rollback_sh(&installed, &["--to", "1.0.0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("1.0.0 is already the live release of staging; nothing to do"),
        "{}",
        text(&output)
    );
    let output = rollback_sh(&installed, &["--to", "3.0.0"]);
    assert!(
        text(&output).contains("release 3.0.0 is not kept")
            && text(&output).contains("1.0.0, 1.2.0"),
        "{}",
        text(&output)
    );
}

#[test]
fn install_sh_refuses_a_damaged_or_hostile_payload_and_another_environments_folder() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let (_one, payload_1) = payload_copy(first, "prod", "1.0.0");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-prod");
    let output = install_sh(&payload_1, &[dest_arg]);
    assert!(output.status.success(), "{}", text(&output));
    let before = snapshot(dest.path());

    // A flipped byte in the server archive inside the payload.
    let (_two, payload_2) = payload_copy(second, "prod", "1.2.0");
    let inner = payload_2.join(format!(
        "saulpos-server-1.2.0-{}.tar.gz",
        env!("E2E_HOST_TARGET")
    ));
    flip_a_byte(&inner);
    let output = install_sh(&payload_2, &[dest_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("the payload's files do not match its SHA256SUMS"),
        "{message}"
    );
    assert_eq!(snapshot(dest.path()), before);
    // With the payload's SHA256SUMS regenerated too, the archive's own checksum still holds.
    regenerate_sums(&payload_2);
    let output = install_sh(&payload_2, &[dest_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("does not match its checksum")
            && message.contains("nothing was installed"),
        "{message}"
    );
    assert_eq!(snapshot(dest.path()), before);

    // Hostile archives with their checksum and manifests regenerated.
    let top = "saulpos-server-1.2.0".to_owned();
    for (case, entries, expected) in [
        (
            "climbs out",
            vec![
                Evil::Dir(top.clone()),
                Evil::File(format!("{top}/../../escape.txt"), b"written outside\n"),
            ],
            "is unsafe (outside saulpos-server-1.2.0/, absolute, or climbing with ..)",
        ),
        (
            "links out",
            vec![
                Evil::Dir(top.clone()),
                Evil::Link(format!("{top}/bin"), "/tmp"),
                Evil::File(format!("{top}/bin/escape.txt"), b"through the link\n"),
            ],
            "is unsafe: it is a link",
        ),
    ] {
        let (_host, payload) = payload_copy(second, "prod", "1.2.0");
        write_evil_release(&payload, "1.2.0", &entries);
        let output = install_sh(&payload, &[dest_arg]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {message}");
        assert!(message.contains(expected), "{case}: {message}");
        assert!(
            message.contains("nothing was installed"),
            "{case}: {message}"
        );
        assert!(!dest.path().join("escape.txt").exists());
        assert!(!Path::new("/tmp/escape.txt").exists());
        assert_eq!(snapshot(dest.path()), before, "{case}");
    }

    // A payload of another environment pointed at this environment's folder.
    let (_three, staging) = payload_copy(second, "staging", "1.2.0");
    let output = install_sh(&staging, &[installed.to_str().unwrap()]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is the folder of the prod environment; give the folder above it"),
        "{message}"
    );
    assert_eq!(snapshot(dest.path()), before);

    // Usage errors say what to do.
    let output = install_sh(&payload_1, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("give the folder to install into"),
        "{}",
        text(&output)
    );
    let output = install_sh(&payload_1, &[dest_arg, "--keep", "1"]);
    assert!(text(&output).contains("use 2 or more"), "{}", text(&output));
    let missing = dest.path().join("missing");
    let output = install_sh(&payload_1, &[missing.to_str().unwrap()]);
    assert!(
        text(&output).contains("does not exist; create it"),
        "{}",
        text(&output)
    );
    assert_eq!(live(&installed), "releases/1.0.0");
}

#[test]
fn install_sh_and_deploy_exclude_each_other_through_one_lock() {
    let release = release_1_0_0();
    let (_host, payload) = payload_copy(release, "dev", "1.0.0");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-dev");
    fs::create_dir_all(&installed).unwrap();
    let mut holder = hold_lock(&installed.join("deploy.lock"), "bob", "deploy 1.1.0");
    let output = install_sh(&payload, &[dest_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is locked: deploy 1.1.0 by bob (pid "),
        "{message}"
    );
    assert!(!installed.join("current").exists());
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Without USER in the environment, the history names the uid's user, as `id -un` does.
    let output = Command::new(payload.join("install.sh"))
        .arg(dest_arg)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let me = Command::new("id").arg("-un").output().unwrap();
    let history = fs::read_to_string(installed.join("history.log")).unwrap();
    assert!(
        history.contains(&format!(
            "\"user\":\"{}\"",
            String::from_utf8_lossy(&me.stdout).trim()
        )),
        "{history}"
    );

    // install.sh holding the lock (paused inside it, as a slow install would be) keeps a
    // cargo xtask deploy and a rollback.sh out.
    let mut slow = hold_lock(&installed.join("deploy.lock"), "carol", "install 1.0.0");
    release_1_2_0();
    let output = deploy("dev", "1.2.0", dest.path(), &[]);
    assert!(
        text(&output).contains("is locked: install 1.0.0 by carol"),
        "{}",
        text(&output)
    );
    let output = rollback_sh(&installed, &["--to", "1.0.0"]);
    assert!(
        text(&output).contains("is locked: install 1.0.0 by carol"),
        "{}",
        text(&output)
    );
    slow.kill().unwrap();
    slow.wait().unwrap();
}

#[test]
fn installs_killed_at_any_moment_leave_a_complete_live_release_and_the_next_one_succeeds() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let (_one, payload_1) = payload_copy(first, "staging", "1.0.0");
    let (_two, payload_2) = payload_copy(second, "staging", "1.2.0");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-staging");
    let output = install_sh(&payload_1, &[dest_arg]);
    assert!(output.status.success(), "{}", text(&output));
    for delay_ms in [0u64, 10, 30, 60, 100, 150, 200, 300, 450] {
        if live(&installed) == "releases/1.0.0" {
            let _ = fs::remove_dir_all(installed.join("releases/1.2.0"));
        }
        let mut child = host_command(&payload_2.join("install.sh"))
            .arg(dest_arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // The whole group: install.sh and the tar, sha256sum or mv it is running.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", child.id())])
            .status();
        child.wait().unwrap();
        let current = live(&installed);
        let version = current.strip_prefix("releases/").unwrap();
        let binary = installed.join(&current).join("bin/saulpos-server");
        let printed = Command::new(&binary).arg("--version").output().unwrap();
        assert!(
            String::from_utf8_lossy(&printed.stdout).contains(version),
            "after a kill at {delay_ms} ms the live release {current} is not complete"
        );
        // The next run is never blocked by what the killed one left.
        let output = install_sh(&payload_1, &[dest_arg]);
        assert!(
            output.status.success(),
            "after a kill at {delay_ms} ms: {}",
            text(&output)
        );
        assert_eq!(live(&installed), "releases/1.0.0");
    }
    let output = install_sh(&payload_2, &[dest_arg]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(live(&installed), "releases/1.2.0");
    let hidden: Vec<_> = fs::read_dir(installed.join("releases"))
        .unwrap()
        .chain(fs::read_dir(&installed).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "partials left: {hidden:?}");
}

#[test]
fn install_sh_restart_gates_on_health_and_switches_back_by_itself_without_curl() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let (_one, payload_1) = payload_copy(first, "staging", "1.0.0");
    let (_two, payload_2) = payload_copy(second, "staging", "1.2.0");
    let db = TestDb::new("install_restart");
    let configured = Configured::new("staging", &db);
    let (dest_arg, installed, url) = (
        configured.dest_arg(),
        &configured.installed,
        &configured.url,
    );
    for (payload, version) in [(&payload_1, "1.0.0"), (&payload_2, "1.2.0")] {
        let output = install_sh(payload, &[dest_arg, "--restart"]);
        assert_passed_the_gate(&output, url, version);
    }
    // The server does not hold the install's lock: the next install takes it at once.
    let output = install_sh(
        &payload_1,
        &[
            dest_arg,
            "--restart",
            "--restart-command",
            STARTS_ONLY_1_2_0,
            "--health-timeout",
            "3",
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("was not UP with version 1.0.0 within 3 s")
            && message.contains("1.0.0 failed its health gate; switching back to 1.2.0")
            && message.contains("1.2.0 is live again, UP and passing the smoke checks"),
        "{message}"
    );
    let last = assert_back_on_1_2_0(installed, url);
    assert_eq!(last["reason"], "automatic: 1.0.0 failed its health gate");
}

#[test]
fn a_saulpos_env_value_holding_shell_code_is_read_literally_and_never_run() {
    let (_host, payload) = payload_copy(release_1_0_0(), "staging", "1.0.0");
    let dest = tempfile::tempdir().unwrap();
    let output = install_sh(&payload, &[dest.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    let installed = dest.path().join("saulpos-staging");
    let marker = dest.path().join("pwned");
    let marker_arg = marker.display();
    // What an attacker (or an unlucky password) puts in saulpos.env: command substitution, a
    // backtick, and a space whose second word a shell would run.
    fs::write(
        installed.join("saulpos.env"),
        format!(
            "SAULPOS_DB_URL=postgres://127.0.0.1:5432/nowhere\n\
             SAULPOS_DB_USERNAME='app $(touch {marker_arg}) `touch {marker_arg}`'\n\
             SAULPOS_DB_PASSWORD=first touch {marker_arg}\n\
             not a setting\n"
        ),
    )
    .unwrap();
    fs::set_permissions(
        installed.join("saulpos.env"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let output = host_command(&installed.join("run.sh"))
        .args(["run", "--check-config"])
        .output()
        .unwrap();
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        !marker.exists(),
        "run.sh ran a command from saulpos.env: {said}"
    );
    assert!(
        said.contains(&format!(
            "database.username = app $(touch {marker_arg}) `touch {marker_arg}`"
        )),
        "{said}"
    );
    assert!(said.contains("database.password = <redacted>"), "{said}");
    assert!(
        said.contains("line 4 of") && said.contains("is not NAME=value"),
        "{said}"
    );
    assert!(!said.contains("command not found"), "{said}");
    // The log run.sh keeps is its owner's alone.
    let log = installed.join("logs/saulpos.log");
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_destination_the_systemd_unit_cannot_name_is_refused() {
    let (_host, payload) = payload_copy(release_1_0_0(), "prod", "1.0.0");
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("opt saulpos");
    fs::create_dir(&dest).unwrap();
    let output = install_sh(&payload, &[dest.to_str().unwrap()]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("has a character the systemd unit cannot carry"),
        "{message}"
    );
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing was installed"
    );
}
