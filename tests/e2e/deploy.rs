//! `cargo xtask deploy`, `run.sh`, `health`, `smoke`, `rollback` and `status`, end to end: real
//! releases packaged in the snapshot clone, a real server started by run.sh on PostgreSQL.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hostile::{Evil, evil_dist, flip_a_byte};
use crate::support::{
    Configured, SMOKE_PASSWORD, SMOKE_USER, TestDb, add_smoke_user, clone, free_port, text,
};
use crate::support::{
    STARTS_ONLY_1_2_0, assert_back_on_1_2_0, assert_passed_the_gate, deploy, hold_lock, live, run,
    snapshot, start_run_sh, stop, wait_up,
};
use crate::support::{deploy_ok, run_json};
use crate::support::{release_1_0_0, release_1_2_0};

/// 1.0.0 deployed to staging in a new folder, with the reason "first install".
fn deployed_1_0_0() -> (tempfile::TempDir, PathBuf) {
    release_1_0_0();
    let dest = tempfile::tempdir().unwrap();
    let payload = dest.path().join("saulpos-staging");
    deploy_ok(
        "staging",
        "1.0.0",
        dest.path(),
        &["--reason", "first install"],
    );
    assert_eq!(live(&payload), "releases/1.0.0");
    (dest, payload)
}

/// saulpos.env for `db` on a free port, with a password that must never leak, and the smoke
/// user; the server's URL.
fn configure(payload: &Path, db: &TestDb) -> String {
    add_smoke_user(db);
    let port = free_port();
    fs::write(
        payload.join("saulpos.env"),
        format!(
            "SAULPOS_DB_URL=postgres://127.0.0.1:5432/{}\nSAULPOS_DB_USERNAME=postgres\nSAULPOS_DB_PASSWORD='s3cret:@/#%'\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\nSAULPOS_SMOKE_USERNAME={SMOKE_USER}\nSAULPOS_SMOKE_PASSWORD='{SMOKE_PASSWORD}'\n",
            db.name
        ),
    )
    .unwrap();
    fs::set_permissions(
        payload.join("saulpos.env"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn deploy_lays_out_the_environments_folder_and_a_unit_systemd_accepts() {
    let (_dest, payload) = deployed_1_0_0();
    let run_sh = payload.join("run.sh");
    assert_eq!(
        fs::metadata(&run_sh).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(payload.join("releases/1.0.0/bin/saulpos-server").is_file());
    assert!(
        payload
            .join("releases/1.0.0/config/application-staging.toml")
            .is_file()
    );
    let manifest = fs::read_to_string(payload.join("manifest.txt")).unwrap();
    assert!(manifest.contains("version: 1.0.0\n"), "{manifest}");
    let example = fs::read_to_string(payload.join("saulpos.env.example")).unwrap();
    for name in [
        "SAULPOS_DB_URL",
        "SAULPOS_DB_USERNAME",
        "SAULPOS_DB_PASSWORD",
        "SAULPOS_SERVER_PORT",
        "SAULPOS_SERVER_ADDRESS",
        "SAULPOS_DB_POOL_SIZE",
        "SAULPOS_HEALTH_TIMEOUT_MS",
        "SAULPOS_LOG_FORMAT",
        "SAULPOS_LOG_LEVEL",
    ] {
        assert!(
            example.contains(&format!("{name}=")),
            "{name} missing:\n{example}"
        );
    }
    let unit = fs::read_to_string(payload.join("saulpos-staging.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}", run_sh.display())),
        "{unit}"
    );
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("KillSignal=SIGTERM"));
    let analyzed = Command::new("systemd-analyze")
        .arg("verify")
        .arg(payload.join("saulpos-staging.service"))
        .output()
        .expect("systemd-analyze is needed to check the unit: apt-get install systemd");
    assert!(
        analyzed.status.success() && analyzed.stderr.is_empty(),
        "systemd-analyze verify complains: {}",
        text(&analyzed)
    );
}

#[test]
fn run_sh_without_its_variables_names_every_missing_one_and_starts_nothing() {
    let (_dest, payload) = deployed_1_0_0();
    // Without its variables, run.sh names every missing one and starts nothing.
    let mut bare = start_run_sh(&payload, &[]);
    let status = bare.wait().unwrap();
    let mut message = String::new();
    std::io::Read::read_to_string(bare.stderr.as_mut().unwrap(), &mut message).unwrap();
    assert_eq!(status.code(), Some(2), "{message}");
    assert!(
        message.contains("needs SAULPOS_DB_URL SAULPOS_DB_USERNAME: set them in"),
        "{message}"
    );
}

#[test]
fn a_deployed_release_is_up_and_passes_the_smoke_checks_and_its_log_holds_no_password() {
    let (_dest, payload) = deployed_1_0_0();
    let db = TestDb::new("deploy_up");
    let url = configure(&payload, &db);
    let mut server = start_run_sh(&payload, &[]);
    let health = wait_up(&url, "1.0.0");
    let body: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(body["status"], "UP", "{body}");
    let env_file = payload.join("saulpos.env");
    let smoke = run(&[
        "smoke",
        "--url",
        &url,
        "--expect-version",
        "1.0.0",
        "--env-file",
        env_file.to_str().unwrap(),
    ]);
    let report = text(&smoke);
    assert!(smoke.status.success(), "{report}");
    assert!(
        report.contains("PASS product lookup (404 path)"),
        "{report}"
    );
    assert!(report.contains("PASS checkout dry-run"), "{report}");
    let log = fs::read_to_string(payload.join("logs/saulpos.log")).unwrap();
    assert!(!log.is_empty() && !log.contains("s3cret"), "{log}");

    stop(&mut server);
}

#[test]
fn an_upgrade_then_a_rollback_switch_the_live_release_and_the_history_says_why() {
    release_1_2_0();
    let (dest, payload) = deployed_1_0_0();
    let db = TestDb::new("deploy_cycle");
    let url = configure(&payload, &db);
    let mut server = start_run_sh(&payload, &[]);
    wait_up(&url, "1.0.0");

    // Upgrade: deploy 1.2.0, restart, and health sees the new version.
    deploy_ok("staging", "1.2.0", dest.path(), &[]);
    assert_eq!(live(&payload), "releases/1.2.0");
    stop(&mut server);
    let mut server = start_run_sh(&payload, &[]);
    wait_up(&url, "1.2.0");

    // Roll back: the previous release, with the reason recorded and the next steps printed.
    let output = run(&[
        "rollback",
        "staging",
        dest.path().to_str().unwrap(),
        "--reason",
        "INC-42 checkout errors",
    ]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(message.contains("from 1.2.0 to 1.0.0"), "{message}");
    // The server still runs 1.2.0 (run.sh in the foreground): the next step restarts it.
    assert!(
        message.contains(&format!("$ {}/run.sh restart", payload.display())),
        "{message}"
    );
    assert!(
        message.contains("the backup taken before 1.2.0 was deployed holds the data of 1.0.0"),
        "{message}"
    );
    assert_eq!(live(&payload), "releases/1.0.0");
    stop(&mut server);
    let mut server = start_run_sh(&payload, &[]);
    wait_up(&url, "1.0.0");
    stop(&mut server);

    let status = run_json(&["status", "staging", dest.path().to_str().unwrap(), "--json"]);
    assert_eq!(status["live"], "1.0.0");
    assert_eq!(status["previous"], "1.2.0");
    assert_eq!(status["kept"], serde_json::json!(["1.0.0", "1.2.0"]));
    let history = fs::read_to_string(payload.join("history.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["from"], "1.2.0");
    assert_eq!(last["to"], "1.0.0");
    assert_eq!(last["reason"], "INC-42 checkout errors");
    assert!(!history.contains("s3cret"));
}

/// A copy of release 1.0.0's folder in a dist of its own.
fn copy_release(dist: &Path, from: &Path, version: &str) -> PathBuf {
    let copy = dist.join(version);
    crate::support::copy_release(from, &copy);
    copy
}

#[test]
fn a_tampered_or_hostile_payload_is_refused_and_nothing_changes() {
    let good = release_1_0_0();
    let dest = tempfile::tempdir().unwrap();
    deploy_ok("prod", "1.0.0", dest.path(), &[]);
    let before = snapshot(dest.path());

    // Tampered: one flipped byte in the payload.
    let dist = tempfile::tempdir().unwrap();
    let tampered = copy_release(dist.path(), good, "1.0.0");
    flip_a_byte(&tampered.join("saulpos-prod-1.0.0.tar.gz"));
    let dist_arg = dist.path().to_str().unwrap();
    let output = deploy("prod", "1.0.0", dest.path(), &["--dist", dist_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("refused") && message.contains("does not match its checksum"),
        "{message}"
    );
    assert_eq!(snapshot(dest.path()), before);
}

/// Hostile archives as someone who can replace a payload (but holds no signing key) makes them,
/// every checksum and manifest regenerated to match: each case, and what its refusal names.
fn hostile_archives(top: &str) -> Vec<(&'static str, Vec<Evil>, &'static str)> {
    let dir = |path: &str| Evil::Dir(format!("{top}/{path}"));
    let at = |path: &str| format!("{top}/{path}");
    vec![
        (
            "climbs out with ..",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::File(at("../../victim.txt"), b"overwritten\n"),
            ],
            "climbs out",
        ),
        (
            "an absolute path",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::File("/tmp/saulpos-e2e-victim.txt".to_owned(), b"x\n"),
            ],
            "absolute",
        ),
        (
            "a link out, then a file through it",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::Link(at("bin"), "/tmp"),
                Evil::File(at("bin/saulpos-e2e-victim.txt"), b"through the link\n"),
            ],
            "is a link",
        ),
        (
            // The audit's chain: each link's parts stay inside when counted, the whole leads out.
            "a chain of links",
            vec![
                Evil::Dir(top.to_owned()),
                dir("d1"),
                dir("d1/d2"),
                dir("d1/d2/d3"),
                dir("d1/d2/d3/d4"),
                Evil::Link(at("d1/d2/d3/d4/up"), "../../../.."),
                Evil::Link(at("evil"), "d1/d2/d3/d4/up/../../../../victim.txt"),
                Evil::File(at("evil"), b"overwritten through a chain\n"),
            ],
            "is a link",
        ),
        (
            "a link then a file of the same name",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::Link(at("x"), "../../../victim.txt"),
                Evil::File(at("x"), b"overwritten\n"),
            ],
            "is a link",
        ),
        (
            "a path twice",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::File(at("x"), b"first\n"),
                Evil::File(at("x"), b"second\n"),
            ],
            "appears twice",
        ),
        (
            "a hard link",
            vec![
                Evil::Dir(top.to_owned()),
                Evil::HardLink(at("h"), "/etc/passwd"),
            ],
            "hard link",
        ),
        (
            "a fifo",
            vec![Evil::Dir(top.to_owned()), Evil::Fifo(at("f"))],
            "device or fifo",
        ),
    ]
}

#[test]
fn hostile_archives_are_refused_by_deploy_and_install_sh_and_nothing_outside_changes() {
    let good = release_1_0_0();
    let host = tempfile::tempdir().unwrap();
    let dest = host.path().join("opt");
    fs::create_dir(&dest).unwrap();
    // What the hostile archives aim at, beside the destination.
    fs::write(host.path().join("victim.txt"), "untouched\n").unwrap();
    let output = deploy("prod", "1.0.0", &dest, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let before = snapshot(host.path());
    let version = "1.0.0";
    let top = format!("saulpos-server-{version}");
    for (case, entries, expected) in hostile_archives(&top) {
        let dist = tempfile::tempdir().unwrap();
        evil_dist(good, dist.path(), "prod", version, &entries);
        let dist_arg = dist.path().to_str().unwrap();
        let output = deploy("prod", version, &dest, &["--dist", dist_arg, "--keep", "2"]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {message}");
        assert!(
            message.contains("is unsafe") && message.contains(expected),
            "{case}: {message}"
        );
        assert!(
            message.contains("nothing was copied anywhere"),
            "{case}: {message}"
        );
        assert_eq!(
            snapshot(host.path()),
            before,
            "{case}: deploy changed something"
        );
        // The payload's own install.sh, run on a host, refuses it as well.
        let unpacked = tempfile::tempdir().unwrap();
        let payload = crate::support::hostile::unpack_payload(
            &dist.path().join(version),
            "prod",
            version,
            unpacked.path(),
        );
        let output = Command::new(payload.join("install.sh"))
            .arg(&dest)
            .output()
            .unwrap();
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {message}");
        assert!(
            message.contains("refused") && message.contains("nothing was installed"),
            "{case}: {message}"
        );
        assert_eq!(
            snapshot(host.path()),
            before,
            "{case}: install.sh changed something"
        );
        assert!(!Path::new("/tmp/saulpos-e2e-victim.txt").exists(), "{case}");
    }
    assert_eq!(live(&dest.join("saulpos-prod")), "releases/1.0.0");
}

#[test]
fn a_held_lock_refuses_a_second_deploy_naming_the_holder_and_a_killed_holder_blocks_nothing() {
    release_1_0_0();
    let dest = tempfile::tempdir().unwrap();
    let payload = dest.path().join("saulpos-dev");
    fs::create_dir_all(&payload).unwrap();
    // Another deploy in progress: a live process holds the kernel lock and wrote its details.
    let lock = payload.join("deploy.lock");
    let mut holder = hold_lock(&lock, "alice", "deploy 9.9.9");
    let output = deploy("dev", "1.0.0", dest.path(), &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is locked: deploy 9.9.9 by alice (pid ")
            && message.contains("since 2026-11-24T10:00:00Z holds it; wait for it to finish"),
        "{message}"
    );
    assert!(!payload.join("current").exists());

    // The holder is killed: its details stay in the file, the lock goes with the process, and
    // the next deploy goes through at once.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let started = Instant::now();
    let output = deploy_ok("dev", "1.0.0", dest.path(), &[]);
    assert!(!output.contains("locked"), "{}", output);
    assert_eq!(live(&payload), "releases/1.0.0");
    eprintln!("deploy after a killed holder took {:?}", started.elapsed());

    // A lock file left empty (a run killed between creating and writing it) blocks nothing.
    fs::write(&lock, "").unwrap();
    let output = deploy("dev", "1.0.0", dest.path(), &["--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["outcome"], "deployed", "{summary}");
    assert_eq!(summary["hosts"][0]["outcome"], "skipped", "{summary}");
    assert_eq!(
        summary["hosts"][0]["why"], "1.0.0 is already live",
        "{summary}"
    );
    assert_eq!(live(&payload), "releases/1.0.0");

    // Wrong environment, unknown version, a folder of one environment given as the
    // destination: refused, naming what is valid.
    let output = deploy("qa", "1.0.0", dest.path(), &[]);
    assert!(
        text(&output).contains("[possible values: dev, staging, prod]"),
        "{}",
        text(&output)
    );
    let output = deploy("dev", "7.7.7", dest.path(), &[]);
    assert!(
        text(&output).contains("packaged versions: 1.0.0"),
        "{}",
        text(&output)
    );
    let output = deploy("prod", "1.0.0", &payload, &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is the folder of the dev environment; give the folder above it"),
        "{message}"
    );
    assert!(!payload.join("saulpos-prod").exists());
}

#[test]
fn deploys_killed_at_any_moment_leave_a_complete_live_release_and_the_next_one_succeeds() {
    release_1_0_0();
    let second = release_1_2_0();
    assert!(second.is_dir());
    let dest = tempfile::tempdir().unwrap();
    let payload = dest.path().join("saulpos-staging");
    let output = deploy("staging", "1.0.0", dest.path(), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let xtask_binary = clone().dir.join("target/debug/xtask");
    for delay_ms in [0u64, 5, 20, 50, 100, 200] {
        // Remove 1.2.0 each round, so each deploy has the extraction to do.
        if live(&payload) == "releases/1.0.0" {
            let _ = fs::remove_dir_all(payload.join("releases/1.2.0"));
        }
        // In a process group of its own, killed whole, as a terminal's or a CI job's kill does.
        let mut child = Command::new(&xtask_binary)
            .args(["deploy", "staging", "1.2.0", dest.path().to_str().unwrap()])
            .current_dir(&clone().dir)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        child.wait().unwrap();
        // No install or lock holder outlives the group: both locks are free at once.
        for lock in ["deploy.lock", "rollout.lock"] {
            let path = payload.join(lock);
            if path.exists() {
                let free = Command::new("flock")
                    .args(["-n", path.to_str().unwrap(), "true"])
                    .status()
                    .unwrap();
                assert!(
                    free.success(),
                    "after a kill at {delay_ms} ms, {lock} is still held"
                );
            }
        }
        let current = live(&payload);
        let version = current.strip_prefix("releases/").unwrap();
        let binary = payload.join(&current).join("bin/saulpos-server");
        let printed = Command::new(&binary).arg("--version").output().unwrap();
        assert!(
            String::from_utf8_lossy(&printed.stdout).contains(version),
            "after a kill at {delay_ms} ms the live release {current} is not complete"
        );
    }
    deploy_ok("staging", "1.2.0", dest.path(), &[]);
    assert_eq!(live(&payload), "releases/1.2.0");
    let hidden: Vec<_> = fs::read_dir(payload.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "partials left: {hidden:?}");
}

#[test]
fn deploy_restart_gates_on_health_and_smoke_and_switches_back_by_itself_when_they_fail() {
    release_1_0_0();
    release_1_2_0();
    let db = TestDb::new("deploy_restart");
    let configured = Configured::new("staging", &db);
    let (dest, payload, url) = (&configured.dest, &configured.installed, &configured.url);

    // No systemd unit is active here: run.sh restart starts it, and the gate waits for UP and
    // the smoke checks, at the port of saulpos.env.
    for version in ["1.0.0", "1.2.0"] {
        let output = deploy("staging", version, dest.path(), &["--restart"]);
        assert_passed_the_gate(&output, url, version);
    }

    // A release that does not come up (this restart command starts only 1.2.0): the deploy fails
    // saying why, and 1.2.0 is live, restarted and healthy again, the switch back recorded.
    let output = deploy(
        "staging",
        "1.0.0",
        dest.path(),
        &[
            "--restart",
            "--restart-command",
            STARTS_ONLY_1_2_0,
            "--health-timeout",
            "3s",
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("1.0.0 failed its health gate at {url}"))
            && message.contains("was not UP with version 1.0.0 within"),
        "{message}"
    );
    assert!(
        message.contains("1.2.0 is live again, UP and passing the smoke checks"),
        "{message}"
    );
    assert!(
        message.contains("the end of "),
        "the log's end is shown: {message}"
    );
    let last = assert_back_on_1_2_0(payload, url);
    assert_eq!(last["from"], "1.0.0");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("automatic: 1.0.0 failed its health gate"),
        "{last}"
    );
}
