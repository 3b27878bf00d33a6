//! A release manager's day, walked as the README and the tools say, on a non-default port:
//! install, configure, start, a second version, rollbacks back and forward, with data too. Every
//! next step a tool prints on a `$ ` line is run exactly as printed and must succeed; `status`
//! must say which release the server really runs. Then the scripts started every way a person
//! starts them: through a symlink, by a relative path, from another folder.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::live;
use crate::support::payload_copy;
use crate::support::release_1_0_0;
use crate::support::release_1_2_0;
use crate::support::{
    PG_HOST, PG_PORT, Server, StopServers, TestDb, clone, free_port, get_json, psql, text,
    workspace_root, write_env, xtask_fails, xtask_ok,
};

/// The commands a tool printed as next steps: every `$ ` line, as printed.
fn next_steps(printed: &str) -> Vec<String> {
    printed
        .lines()
        .filter_map(|line| {
            line.split_once("  $ ")
                .map(|(_, command)| command.to_owned())
        })
        .collect()
}

/// Runs one printed command with bash in the workspace clone (where `cargo xtask` works);
/// `answer` is typed at a terminal when the command asks (a confirmation).
fn run_printed(command: &str, answer: Option<&str>) -> Output {
    let mut bash = match answer {
        // A terminal of its own, as the person who reads the step has.
        Some(_) => {
            let mut script = Command::new("script");
            script.args(["-qec", command, "/dev/null"]);
            script
        }
        None => {
            let mut bash = Command::new("bash");
            bash.args(["-euo", "pipefail", "-c", command]);
            bash
        }
    };
    for name in ["CARGO_TARGET_DIR", "RUSTFLAGS", "SOURCE_DATE_EPOCH"] {
        bash.env_remove(name);
    }
    let mut child = bash
        .current_dir(&clone().dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let mut stdin = child.stdin.take().unwrap();
    if let Some(answer) = answer {
        let _ = stdin.write_all(format!("{answer}\n").as_bytes());
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Runs every next step `printed` names, in order, each of which must succeed.
#[track_caller]
fn run_next_steps(printed: &str, answers: &[(&str, &str)]) -> Vec<String> {
    let steps = next_steps(printed);
    assert!(!steps.is_empty(), "no next step was printed:\n{printed}");
    let mut outputs = Vec::new();
    for step in steps {
        let answer = answers
            .iter()
            .find(|(start, _)| step.starts_with(start))
            .map(|(_, answer)| *answer);
        let output = run_printed(&step, answer);
        let said = text(&output);
        assert!(
            output.status.success(),
            "the printed next step `{step}` failed:\n{said}\n(printed by:\n{printed})"
        );
        outputs.push(said);
    }
    outputs
}

fn status_json(dest: &Path) -> serde_json::Value {
    let printed = xtask_ok(
        &clone().dir,
        &["status", "staging", dest.to_str().unwrap(), "--json"],
    );
    let line = printed
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{printed}"));
    serde_json::from_str(line).unwrap()
}

fn run_sh(installed: &Path, args: &[&str]) -> Output {
    Command::new(installed.join("run.sh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_first_install_says_saulpos_env_comes_first_and_its_steps_start_the_server() {
    release_1_0_0();
    let workspace = &clone().dir;
    let db = TestDb::new("day_first");
    let dest = tempfile::tempdir().unwrap();
    let installed = dest.path().join("saulpos-staging");
    let _stop = StopServers(vec![installed.clone()]);
    let port = free_port();

    let printed = xtask_ok(
        workspace,
        &["deploy", "staging", "1.0.0", dest.path().to_str().unwrap()],
    );
    assert!(printed.contains("has no saulpos.env yet"), "{printed}");
    let steps = next_steps(&printed);
    assert!(
        steps[0].starts_with("install -m 600 ") && steps[0].ends_with("/saulpos.env"),
        "{steps:?}"
    );
    // The copy first, then the database and the smoke user set in it, then the rest.
    let copied = run_printed(&steps[0], None);
    assert!(copied.status.success(), "{}", text(&copied));
    let mode = fs::metadata(installed.join("saulpos.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    write_env(&installed, &db, port);
    for step in &steps[1..] {
        let output = run_printed(step, None);
        assert!(output.status.success(), "`{step}`: {}", text(&output));
    }
    let log = installed.join("logs/saulpos.log");
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600,
        "the server's log is its owner's only, as the bundles made from it are"
    );
    let said = text(&run_sh(&installed, &["status"]));
    assert!(
        said.contains("running (pid") && said.contains("1.0.0 (releases/1.0.0, the live release)"),
        "{said}"
    );
    // The log holds no NOTICE from the migrations' bookkeeping.
    let logged = fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("already exists, skipping"), "{logged}");
}

#[test]
fn a_release_managers_day_runs_every_printed_next_step_as_printed() {
    release_1_0_0();
    release_1_2_0();
    let workspace = &clone().dir;
    let db = TestDb::new("day");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-staging");
    let env_file = installed.join("saulpos.env");
    let env_arg = env_file.to_str().unwrap().to_owned();
    let _stop = StopServers(vec![installed.clone()]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    // 1.0.0, configured on a port that is not 8080, started as the install says.
    xtask_ok(workspace, &["deploy", "staging", "1.0.0", dest_arg]);
    write_env(&installed, &db, port);
    let started = text(&run_sh(&installed, &["start"]));
    assert!(
        started.contains("started (pid")
            && started.contains(&format!("1.0.0, listening on http://127.0.0.1:{port}")),
        "run.sh start says where it listens: {started}"
    );
    // health and smoke find the port in saulpos.env: no --url.
    let health = xtask_ok(
        workspace,
        &[
            "health",
            "--env-file",
            &env_arg,
            "--expect-version",
            "1.0.0",
            "--timeout",
            "30s",
        ],
    );
    assert!(
        health.contains(&format!("UP at {url}/actuator/health")),
        "{health}"
    );
    let smoke = xtask_ok(workspace, &["smoke", "--env-file", &env_arg]);
    assert!(smoke.contains("smoke checks passed"), "{smoke}");

    // 1.2.0 installed without a restart: the server still runs 1.0.0, and status says so.
    let printed = xtask_ok(workspace, &["deploy", "staging", "1.2.0", dest_arg]);
    let said = text(&run_sh(&installed, &["status"]));
    assert!(
        said.contains("running (pid")
            && said.contains("1.0.0; 1.2.0 is installed but not running")
            && said.contains("run.sh restart"),
        "{said}"
    );
    let status = status_json(dest.path());
    assert_eq!(status["live"], "1.2.0", "{status}");
    assert_eq!(status["running"]["version"], "1.0.0", "{status}");
    assert_eq!(status["running"]["info_version"], "1.0.0", "{status}");
    assert!(
        status["running"]["next"]
            .as_str()
            .unwrap_or_default()
            .contains("1.2.0 is installed but not running"),
        "{status}"
    );
    assert!(
        !printed.contains("or by hand:"),
        "a second server in the foreground fails on the port: {printed}"
    );
    let steps = next_steps(&printed);
    assert!(steps[0].ends_with("/run.sh restart"), "{steps:?}");
    run_next_steps(&printed, &[]);
    assert_eq!(status_json(dest.path())["running"]["version"], "1.2.0");

    // A sale written under 1.2.0, which the data rollback takes back out.
    psql(
        &db.name,
        "INSERT INTO product (sku, name, unit_price_cents) VALUES ('DAY-SALE-1', 'day sale', 100)",
    );

    // Back to 1.0.0 without data: restart and check as printed, then the data as printed (stop,
    // restore with the real paths, start), confirmed at a terminal.
    let printed = xtask_ok(workspace, &["rollback", "staging", dest_arg]);
    assert!(
        printed.contains("rolled staging back from 1.2.0 to 1.0.0"),
        "{printed}"
    );
    assert!(!printed.contains("<backup-dir>"), "{printed}");
    let restore = next_steps(&printed)
        .into_iter()
        .find(|step| step.starts_with("cargo xtask restore "))
        .unwrap_or_else(|| panic!("no restore step: {printed}"));
    assert!(
        restore.contains(&format!("{PG_HOST} {PG_PORT} {} postgres ", db.name)),
        "{restore}"
    );
    run_next_steps(&printed, &[("cargo xtask restore", &db.name)]);
    assert_eq!(status_json(dest.path())["running"]["version"], "1.0.0");
    assert_eq!(
        db.query("SELECT count(*) FROM product WHERE sku = 'DAY-SALE-1'"),
        "0"
    );

    // Forward again: "forward", and no data step, since no backup holds 1.2.0's data.
    let printed = xtask_ok(
        workspace,
        &["rollback", "staging", dest_arg, "--to", "1.2.0"],
    );
    assert!(
        printed.contains("rolled staging forward from 1.0.0 to 1.2.0"),
        "{printed}"
    );
    assert!(
        !printed.contains("only if the data must go back"),
        "{printed}"
    );
    run_next_steps(&printed, &[]);
    assert_eq!(status_json(dest.path())["running"]["version"], "1.2.0");
}

#[test]
fn rollback_with_data_stops_the_server_restores_switches_starts_and_names_the_kept_database() {
    release_1_0_0();
    release_1_2_0();
    let workspace = &clone().dir;
    let db = TestDb::new("day_data");
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-staging");
    let _stop = StopServers(vec![installed.clone()]);
    let port = free_port();

    xtask_ok(workspace, &["deploy", "staging", "1.0.0", dest_arg]);
    write_env(&installed, &db, port);
    assert!(run_sh(&installed, &["start"]).status.success());
    xtask_ok(
        workspace,
        &["deploy", "staging", "1.2.0", dest_arg, "--restart"],
    );
    let pid_before = status_json(dest.path())["running"]["pid"].clone();
    psql(
        &db.name,
        "INSERT INTO product (sku, name, unit_price_cents) VALUES ('DAY-SALE-2', 'day sale', 100)",
    );

    // Without --yes and nobody at a terminal: refused before anything stops.
    let refused = xtask_fails(workspace, &["rollback", "staging", dest_arg, "--with-data"]);
    assert!(refused.contains("pass --yes"), "{refused}");
    assert_eq!(status_json(dest.path())["running"]["pid"], pid_before);
    assert_eq!(live(&installed), "releases/1.2.0");

    let printed = xtask_ok(
        workspace,
        &[
            "rollback",
            "staging",
            dest_arg,
            "--with-data",
            "--yes",
            "--reason",
            "INC-7",
        ],
    );
    // The order: stop, restore, switch, start with health and smoke.
    let at = |fragment: &str| {
        printed
            .find(fragment)
            .unwrap_or_else(|| panic!("{fragment:?} not in:\n{printed}"))
    };
    assert!(at("stopping the server") < at("restoring "), "{printed}");
    assert!(
        at("restored \"") < at("rolled staging back from 1.2.0 to 1.0.0"),
        "{printed}"
    );
    assert!(
        at("rolled staging back") < at("1.0.0 is UP at")
            && printed.contains("passed the smoke checks"),
        "{printed}"
    );
    assert!(
        printed.contains("the data of 1.0.0 is back too"),
        "{printed}"
    );
    assert!(
        !printed.contains("only if the data must go back"),
        "the restore is not offered again: {printed}"
    );
    assert!(
        printed.contains("live release: 1.0.0") && printed.contains("server: runs 1.0.0"),
        "{printed}"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM product WHERE sku = 'DAY-SALE-2'"),
        "0"
    );

    // The kept database is named in the history and by status, with a drop command that works.
    let history = fs::read_to_string(installed.join("history.log")).unwrap();
    let restore: serde_json::Value = history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["action"] == "restore")
        .unwrap();
    let kept = restore["kept_database"].as_str().unwrap().to_owned();
    assert!(kept.starts_with(&format!("{}_before_", db.name)), "{kept}");
    let kept_rows = psql(
        &kept,
        "SELECT count(*) FROM product WHERE sku = 'DAY-SALE-2'",
    );
    assert_eq!(kept_rows, "1", "the sale is in the kept database");
    let status = status_json(dest.path());
    assert_eq!(
        status["kept_databases"],
        serde_json::json!([kept]),
        "{status}"
    );
    assert_eq!(status["running"]["version"], "1.0.0", "{status}");
    let shown = xtask_ok(workspace, &["status", "staging", dest_arg]);
    let drop = shown
        .lines()
        .find_map(|line| line.strip_prefix(&format!("  {kept}:  ")))
        .unwrap_or_else(|| panic!("status names no drop command for {kept}:\n{shown}"))
        .to_owned();
    let dropped = run_printed(&drop, None);
    assert!(dropped.status.success(), "{}", text(&dropped));
    assert_eq!(
        status_json(dest.path())["kept_databases"],
        serde_json::json!([])
    );
}

#[test]
fn install_rollback_and_run_scripts_work_through_a_symlink_a_relative_path_and_from_any_folder() {
    let release = release_1_0_0();
    let second = release_1_2_0();
    let (host, payload) = payload_copy(release, "staging", "1.0.0");
    let dest = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let installed = dest.path().join("saulpos-staging");
    let _stop = StopServers(vec![installed.clone()]);
    let run = |program: &Path, args: &[&str], cwd: &Path| {
        let output = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let said = text(&output);
        assert!(
            output.status.success(),
            "{} {args:?} in {}: {said}",
            program.display(),
            cwd.display()
        );
        said
    };

    // install.sh through a symlink in another folder, started from a third one.
    std::os::unix::fs::symlink(
        payload.join("install.sh"),
        links.path().join("install-saulpos"),
    )
    .unwrap();
    let said = run(
        &links.path().join("install-saulpos"),
        &[dest.path().to_str().unwrap()],
        elsewhere.path(),
    );
    assert!(said.contains("live release of staging: 1.0.0"), "{said}");
    // And by a relative path, from the folder above the payload (a second install, same release).
    let relative = Path::new(payload.file_name().unwrap()).join("install.sh");
    let said = run(&relative, &[dest.path().to_str().unwrap()], host.path());
    assert!(said.contains("is already there and intact"), "{said}");

    // run.sh through a symlink on PATH-like folder, and by a relative path.
    std::os::unix::fs::symlink(installed.join("run.sh"), links.path().join("saulpos")).unwrap();
    let said = text(
        &Command::new(links.path().join("saulpos"))
            .arg("status")
            .current_dir(elsewhere.path())
            .output()
            .unwrap(),
    );
    assert!(said.contains("not running; live: 1.0.0"), "{said}");
    let said = text(
        &Command::new("saulpos-staging/run.sh")
            .arg("status")
            .current_dir(dest.path())
            .output()
            .unwrap(),
    );
    assert!(said.contains("not running; live: 1.0.0"), "{said}");

    // rollback.sh through a symlink: it finds its own folder's releases.
    let (_host_2, payload_2) = payload_copy(second, "staging", "1.2.0");
    run(
        &payload_2.join("install.sh"),
        &[dest.path().to_str().unwrap()],
        elsewhere.path(),
    );
    std::os::unix::fs::symlink(
        installed.join("rollback.sh"),
        links.path().join("rollback-saulpos"),
    )
    .unwrap();
    let said = run(
        &links.path().join("rollback-saulpos"),
        &["--check"],
        elsewhere.path(),
    );
    assert!(said.contains("release 1.0.0 checks out"), "{said}");
    let said = run(
        Path::new("./rollback.sh"),
        &["--reason", "relative"],
        &installed,
    );
    assert!(
        said.contains("rolled staging back from 1.2.0 to 1.0.0"),
        "{said}"
    );
    assert_eq!(live(&installed), "releases/1.0.0");
}

#[test]
fn durations_read_the_same_everywhere_and_a_refusal_quotes_what_was_given() {
    let release = release_1_0_0();
    let (_host, payload) = payload_copy(release, "staging", "1.0.0");
    let dest = tempfile::tempdir().unwrap();
    for (given, accepted) in [
        ("60s", true),
        ("2m", true),
        ("90", true),
        ("soon", false),
        ("-5", false),
    ] {
        let output = Command::new(payload.join("install.sh"))
            .args([
                "--restart",
                "--restart-command",
                "false",
                "--health-timeout",
                given,
                "--no-backup",
            ])
            .arg(dest.path())
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let said = text(&output);
        // An accepted duration gets as far as the restart (which `false` fails).
        assert_eq!(
            !said.contains("is not a duration"),
            accepted,
            "--health-timeout {given}: {said}"
        );
        if !accepted {
            assert!(
                said.contains(&format!("--health-timeout \"{given}\" is not a duration")),
                "{said}"
            );
        }
    }
    let said = xtask_fails(
        &clone().dir,
        &[
            "health",
            "--url",
            "http://127.0.0.1:1",
            "--timeout",
            "3s",
            "--interval",
            "200ms",
        ],
    );
    assert!(said.contains("was not UP within 3s"), "{said}");
    let said = xtask_fails(&clone().dir, &["health", "--timeout", "soon"]);
    assert!(said.contains("\"soon\" is not a duration"), "{said}");
}

#[test]
fn the_configuration_page_names_the_health_components_the_server_answers() {
    let db = TestDb::new("components");
    let url = db.url();
    let server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    let (status, health) = get_json(&server.url("/actuator/health"));
    assert_eq!(status, 200, "{health}");
    let mut answered: Vec<String> = health["components"]
        .as_object()
        .unwrap_or_else(|| panic!("no components outside prod: {health}"))
        .keys()
        .cloned()
        .collect();
    let page = fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    let listed = page
        .split_once("components (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(names, _)| names)
        .unwrap_or_else(|| panic!("configuration.md lists no health components"));
    let mut documented: Vec<String> = listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    answered.sort();
    documented.sort();
    assert_eq!(
        documented, answered,
        "configuration.md and /actuator/health differ"
    );
}
