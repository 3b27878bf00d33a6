//! Rollouts over SSH, end to end: a real `sshd` on loopback with throwaway host and user keys,
//! three "hosts" that are three folders, each with its own server port and database, and
//! `cargo xtask deploy|status|rollback` with ssh:// destinations and a hosts file.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::release_1_0_0;
use crate::support::release_1_2_0;
use crate::support::signed_release;
use crate::support::{Host, Sshd, outcomes, rollout, rollout_ok, rollout_watching};
use crate::support::{clone, text, xtask_command};
use crate::support::{hold_lock, live, run};

#[test]
fn a_rolling_deploy_over_ssh_gates_every_host_and_puts_them_all_back_when_one_fails() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let (third, _keys) = signed_release();
    assert!(first.is_dir() && second.is_dir() && third.is_dir());
    let sshd = Sshd::start();
    let config = sshd.config();
    let hosts: Vec<Host> = (1..=3).map(|n| Host::new(&format!("fleet_{n}"))).collect();
    let destinations: Vec<String> = hosts
        .iter()
        .map(|host| sshd.destination(host.dest()))
        .collect();
    let hosts_file = sshd.dir.path().join("hosts");
    fs::write(
        &hosts_file,
        format!(
            "# the three stores, in rollout order\n{}\n",
            destinations.join("\n")
        ),
    )
    .unwrap();
    let deploy = |version: &str, batch: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "staging", version];
        args.extend(destinations.iter().map(String::as_str));
        args.extend([
            "--ssh-config",
            &config,
            "--batch",
            batch,
            "--health-timeout",
            "30s",
            "--json",
        ]);
        args.extend_from_slice(extra);
        rollout(&args)
    };

    // Version 1, one host at a time: each gets the payload, installs, restarts, passes the gate.
    let (output, json) = deploy("1.0.0", "1", &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(json["outcome"], "deployed");
    assert_eq!(outcomes(&json), ["deployed 1.0.0"; 3]);
    for (host, report) in hosts.iter().zip(json["hosts"].as_array().unwrap()) {
        assert_eq!(host.serves(), "1.0.0");
        assert_eq!(report["copied"], true);
        assert!(report["gate_ms"].as_u64().is_some(), "{report}");
    }
    assert!(
        text(&output).contains("[3/3] ssh://"),
        "progress per host: {}",
        text(&output)
    );

    // Version 2, all three at once, from the hosts file; then again: nothing to do.
    let mut args = vec![
        "deploy",
        "staging",
        "1.2.0",
        "--hosts",
        hosts_file.to_str().unwrap(),
    ];
    args.extend(["--ssh-config", &config, "--batch", "3", "--json"]);
    rollout_ok(&args, &["deployed 1.2.0"; 3]);
    assert!(hosts.iter().all(|host| host.serves() == "1.2.0"));
    let json = rollout_ok(&args, &["skipped 1.2.0"; 3]);
    assert!(
        json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|host| host["copied"] == false)
    );

    // Status over the same destinations: one line per host.
    let mut args = vec!["status", "staging"];
    args.extend(destinations.iter().map(String::as_str));
    args.extend(["--ssh-config", &config]);
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    for destination in &destinations {
        let line = table
            .lines()
            .find(|line| line.starts_with(destination.as_str()))
            .unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1..], ["1.2.0", "1.0.0", "UP"], "{table}");
    }

    // Host 3 is broken (its database does not exist): version 3 stops there; hosts 1 and 2, which
    // it switched, and host 3 go back to version 2, and the table says why.
    let env_3 = hosts[2].installed().join("saulpos.env");
    let good_env = fs::read_to_string(&env_3).unwrap();
    fs::write(
        &env_3,
        good_env.replace(&hosts[2].db.name, "saulpos_fleet_no_such_db"),
    )
    .unwrap();
    // (Without its pre-deploy backup, which would stop host 3 sooner: see below.)
    let (output, json) = deploy("1.3.0", "1", &["--no-backup"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert_eq!(json["outcome"], "failed");
    assert_eq!(
        outcomes(&json),
        ["rolled back 1.2.0", "rolled back 1.2.0", "failed 1.2.0"]
    );
    let why = json["hosts"][2]["why"].as_str().unwrap();
    assert!(
        why.contains("health stayed DOWN")
            && why.contains("saulpos_fleet_no_such_db does not exist"),
        "{why}"
    );
    assert!(
        message.contains(&format!(
            "the rollout of 1.3.0 stopped at {}",
            destinations[2]
        )),
        "{message}"
    );
    assert_eq!(hosts[0].serves(), "1.2.0");
    assert_eq!(hosts[1].serves(), "1.2.0");
    assert_eq!(live(&hosts[2].installed()), "releases/1.2.0");
    for host in &hosts[..2] {
        let history = fs::read_to_string(host.installed().join("history.log")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(history.lines().last().unwrap()).unwrap();
        assert_eq!(
            (
                last["action"].as_str(),
                last["from"].as_str(),
                last["to"].as_str()
            ),
            (Some("rollback"), Some("1.3.0"), Some("1.2.0"))
        );
        assert_eq!(
            last["reason"],
            format!(
                "automatic: the rollout of 1.3.0 stopped at {}",
                destinations[2]
            )
        );
    }
    // With its pre-deploy backup (staging takes one), host 3 stops before anything changes
    // there; the human table says so, and hosts 1 and 2 are back on 1.2.0 again.
    let mut args = vec!["deploy", "staging", "1.3.0"];
    args.extend(destinations.iter().map(String::as_str));
    args.extend(["--ssh-config", &config, "--health-timeout", "5s"]);
    let output = run(&args);
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1));
    let row = table
        .lines()
        .find(|line| line.starts_with(destinations[2].as_str()))
        .unwrap();
    assert!(
        row.split_whitespace()
            .skip(1)
            .take(3)
            .eq(["1.2.0", "1.2.0", "failed"])
            && row.contains("the backup of saulpos_fleet_no_such_db"),
        "{table}"
    );
    let rolled_back = table.lines().filter(|line| line.contains("rolled back"));
    assert_eq!(rolled_back.count(), 2, "{table}");
    assert_eq!(hosts[0].serves(), "1.2.0");

    // Fixed, the same command goes through: no lock is left behind anywhere.
    fs::write(&env_3, &good_env).unwrap();
    let (output, json) = deploy("1.3.0", "1", &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(outcomes(&json), ["deployed 1.3.0"; 3]);
    assert!(hosts.iter().all(|host| host.serves() == "1.3.0"));

    // Rollback over the same destinations, to a named release; hosts already there are skipped.
    let mut args = vec!["rollback", "staging"];
    args.extend(destinations.iter().map(String::as_str));
    args.extend([
        "--ssh-config",
        &config,
        "--to",
        "1.2.0",
        "--batch",
        "3",
        "--json",
    ]);
    rollout_ok(&args, &["rolled back 1.2.0"; 3]);
    assert!(hosts.iter().all(|host| host.serves() == "1.2.0"));
    rollout_ok(&args, &["skipped 1.2.0"; 3]);

    // Ctrl-C while host 1 is in flight: host 1 finishes, hosts 2 and 3 are not started, every
    // host is on a complete, healthy release, and the table says where each one is.
    let mut args = vec!["deploy", "staging", "1.3.0"];
    args.extend(destinations.iter().map(String::as_str));
    args.extend(["--ssh-config", &config, "--json"]);
    let (output, said) = rollout_watching(&args, |line, pid| {
        if line.contains("[1/3]") && line.contains("deploying 1.3.0") {
            let sent = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
    });
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("interrupted: the hosts in flight finished"),
        "{said}"
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["outcome"], "interrupted");
    assert_eq!(
        outcomes(&json),
        ["deployed 1.3.0", "not started 1.2.0", "not started 1.2.0"]
    );
    assert_eq!(hosts[0].serves(), "1.3.0");
    assert_eq!(hosts[1].serves(), "1.2.0");
    assert_eq!(hosts[2].serves(), "1.2.0");
    // And the re-run continues where it stopped.
    let (output, json) = deploy("1.3.0", "3", &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        outcomes(&json),
        ["skipped 1.3.0", "deployed 1.3.0", "deployed 1.3.0"]
    );
}

#[test]
fn an_unknown_host_key_or_a_rollout_in_progress_is_refused_before_anything_is_copied() {
    let first = release_1_0_0();
    assert!(first.is_dir());
    let sshd = Sshd::start();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let destinations = [sshd.destination(one.path()), sshd.destination(two.path())];
    let unknown = sshd.dir.path().join("ssh_config_unknown");
    let started = Instant::now();
    let output = run(&[
        "deploy",
        "staging",
        "1.0.0",
        &destinations[0],
        &destinations[1],
        "--ssh-config",
        unknown.to_str().unwrap(),
    ]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("refused before anything was copied"),
        "{message}"
    );
    assert!(
        message.contains("Host key verification failed"),
        "{message}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("refused"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    for dest in [&one, &two] {
        assert_eq!(
            fs::read_dir(dest.path()).unwrap().count(),
            0,
            "nothing is created on a refused host"
        );
    }

    // Another rollout holds host 2: refused naming it, nothing copied to host 1 either.
    fs::create_dir_all(two.path().join("saulpos-staging")).unwrap();
    let mut holder = hold_lock(
        &two.path().join("saulpos-staging/rollout.lock"),
        "alice",
        "rollout",
    );
    let output = run(&[
        "deploy",
        "staging",
        "1.0.0",
        &destinations[0],
        &destinations[1],
        "--ssh-config",
        &sshd.config(),
    ]);
    let _ = holder.kill();
    let _ = holder.wait();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("is locked: rollout by alice"), "{message}");
    let payloads: Vec<_> = fs::read_dir(one.path().join("saulpos-staging/payloads"))
        .unwrap()
        .collect();
    assert!(payloads.is_empty(), "nothing copied: {payloads:?}");
    assert!(!one.path().join("saulpos-staging/current").exists());
}

/// Whether nobody holds `lock` (a file locked with flock, as the scripts do).
fn lock_is_free(lock: &Path) -> bool {
    Command::new("flock")
        .args(["-n"])
        .arg(lock)
        .arg("true")
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn a_rollout_killed_at_any_point_leaves_every_host_on_a_complete_release_and_blocks_nothing() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    assert!(first.is_dir() && second.is_dir());
    let sshd = Sshd::start();
    let config = sshd.config();
    let hosts: Vec<Host> = (1..=2)
        .map(|n| Host::new(&format!("fleet_kill_{n}")))
        .collect();
    let destinations: Vec<String> = hosts
        .iter()
        .map(|host| sshd.destination(host.dest()))
        .collect();
    let args = |version: &'static str| {
        let mut args = vec!["deploy", "staging", version];
        args.extend(destinations.iter().map(String::as_str));
        args.extend([
            "--ssh-config",
            config.as_str(),
            "--health-timeout",
            "30s",
            "--json",
        ]);
        args
    };
    let (output, _) = rollout(&args("1.0.0"));
    assert!(output.status.success(), "{}", text(&output));

    let mut target = "1.0.0";
    for delay_ms in [100, 400, 700, 1000, 1500, 2200, 3000] {
        target = if target == "1.0.0" { "1.2.0" } else { "1.0.0" };
        let mut child = xtask_command(&clone().dir, &args(target))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // What the killed rollout started on a host runs to its end there; then nothing is
        // locked, and every host is on a complete release.
        for host in &hosts {
            let installed = host.installed();
            assert!(
                crate::support::eventually(Duration::from_secs(60), || {
                    ["rollout.lock", "deploy.lock"].iter().all(|name| {
                        !installed.join(name).exists() || lock_is_free(&installed.join(name))
                    })
                }),
                "after a kill at {delay_ms} ms a lock is still held on {}",
                installed.display()
            );
            let current = live(&installed);
            let version = current.strip_prefix("releases/").unwrap();
            let printed = Command::new(installed.join(&current).join("bin/saulpos-server"))
                .arg("--version")
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&printed.stdout).contains(version),
                "after a kill at {delay_ms} ms the live release {current} is not complete"
            );
        }
        // The next run is never blocked, and brings every host to the version, serving it.
        let (output, json) = rollout(&args(target));
        assert!(
            output.status.success(),
            "after a kill at {delay_ms} ms: {}",
            text(&output)
        );
        assert!(
            json["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|host| host["after"] == target),
            "{json}"
        );
        assert!(
            hosts.iter().all(|host| host.serves() == target),
            "after a kill at {delay_ms} ms"
        );
    }
}
