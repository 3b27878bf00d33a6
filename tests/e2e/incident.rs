//! `cargo xtask incident`: the evidence bundle with the server up, with it down, and from a
//! payload with no logs yet; checked with the real `tar` and `sha256sum -c`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::deploy_ok;
use crate::support::release_1_0_0;
use crate::support::{TestDb, clone, free_port, text, tool, workspace_root};
use crate::support::{deploy, run, start_run_sh, stop};

const PASSWORD: &str = "Inc1dent:p@ss/w#rd%";

/// Runs the capture with the password also in the environment; returns the bundle's folder
/// and the text of every file in it, by name.
fn capture(env: &str, dest: &Path, url: &str, out: &Path) -> (String, Vec<(String, String)>) {
    let output = crate::support::xtask_command(
        &clone().dir,
        &[
            "incident",
            env,
            dest.to_str().unwrap(),
            "--url",
            url,
            "--severity",
            "SEV-2",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .env("PGPASSWORD", PASSWORD)
    .env("SAULPOS_DB_PASSWORD", PASSWORD)
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains(PASSWORD));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let bundle = summary["bundle"].as_str().unwrap().to_owned();
    let name = Path::new(&bundle).file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("incident-") && name.ends_with("-SEV-2.tar.gz"),
        "{name}"
    );
    let checked = tool(out, "sha256sum", &["-c", &format!("{name}.sha256")]);
    assert!(checked.status.success(), "{}", text(&checked));
    // Evidence holds logs and customer data: the owner's alone.
    for file in [bundle.clone(), format!("{bundle}.sha256")] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let raw = fs::read(&bundle).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(PASSWORD));
    let unpacked = out.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let extracted = tool(
        out,
        "tar",
        &["-xzf", &bundle, "-C", unpacked.to_str().unwrap()],
    );
    assert!(extracted.status.success(), "{}", text(&extracted));
    let mut files = Vec::new();
    let mut pending = vec![unpacked.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(&unpacked).unwrap().to_string_lossy();
                let inner = relative.split_once('/').unwrap().1.to_owned();
                files.push((inner, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    for (name, content) in &files {
        assert!(!content.contains(PASSWORD), "the password is in {name}");
    }
    fs::remove_dir_all(&unpacked).unwrap();
    (bundle, files)
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    files
        .iter()
        .find(|(file, _)| file == name)
        .map(|(_, content)| content.as_str())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not in the bundle: {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        })
}

#[test]
fn the_bundle_holds_the_evidence_with_the_server_up_and_down_and_no_secret() {
    release_1_0_0();
    let db = TestDb::new("incident");
    let dest = tempfile::tempdir().unwrap();
    let payload = dest.path().join("saulpos-staging");
    deploy_ok("staging", "1.0.0", dest.path(), &["--reason", "CHG-7"]);
    let port = free_port();
    let env_file = payload.join("saulpos.env");
    fs::write(
        &env_file,
        format!(
            "SAULPOS_DB_URL=postgres://127.0.0.1:5432/{}\nSAULPOS_DB_USERNAME=postgres\nSAULPOS_DB_PASSWORD='{PASSWORD}'\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\nSAULPOS_LOG_LEVEL=debug\n",
            db.name
        ),
    )
    .unwrap();
    fs::set_permissions(&env_file, fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start_run_sh(&payload, &[]);
    let health = run(&["health", "--url", &url, "--timeout", "60s"]);
    assert!(health.status.success(), "{}", text(&health));
    let out = tempfile::tempdir().unwrap();

    let (_, files) = capture("staging", dest.path(), &url, out.path());
    // incident.md's table of the bundle's files is the bundle's list, no more, no less.
    let runbook = fs::read_to_string(workspace_root().join("docs/runbooks/incident.md")).unwrap();
    let mut documented: Vec<&str> = runbook
        .lines()
        .filter_map(|line| {
            line.strip_prefix("| `")?
                .split_once('`')
                .map(|(name, _)| name)
        })
        .collect();
    let mut bundled: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    // No archiving is set up on this machine's default stanza: archive.rs captures that file.
    documented.retain(|name| *name != "archive-status.txt");
    documented.sort_unstable();
    bundled.sort_unstable();
    assert_eq!(
        documented, bundled,
        "incident.md's file table and the bundle differ"
    );
    assert!(file(&files, "health.json").contains("\"status\":\"UP\""));
    assert!(file(&files, "info.json").contains("\"version\":\"1.0.0\""));
    let metrics = file(&files, "metrics.txt");
    assert!(
        metrics.contains("saulpos_build_info{version=\"1.0.0\"")
            && metrics.contains("http_server_request_duration_seconds_count{"),
        "{metrics}"
    );
    assert!(file(&files, "release.txt").contains("live: 1.0.0"));
    assert!(file(&files, "release.txt").contains("version: 1.0.0"));
    assert!(file(&files, "history.log").contains("CHG-7"));
    assert!(file(&files, "database.txt").contains("accepting connections"));
    assert!(file(&files, "database.txt").contains("latency:"));
    assert!(!file(&files, "logs/saulpos.log").is_empty());
    assert!(file(&files, "environment.txt").contains("SAULPOS_DB_PASSWORD=[REDACTED]"));
    for fact in ["## kernel", "## disk", "## memory", "## load"] {
        assert!(file(&files, "host.txt").contains(fact), "{fact}");
    }
    let report = file(&files, "incident.md");
    for section in [
        "SEV-2:",
        "## Timeline",
        "## Root cause",
        "## Preventive action",
        "live release: 1.0.0",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }

    // The server down: the capture still completes and says what failed.
    stop(&mut server);
    let (_, files) = capture("staging", dest.path(), &url, out.path());
    let collectors: serde_json::Value =
        serde_json::from_str(file(&files, "collectors.json")).unwrap();
    let health = collectors
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collector"] == "health")
        .unwrap();
    assert_eq!(health["ok"], false);
    assert!(
        health["error"].as_str().unwrap().contains("cannot connect"),
        "{health}"
    );
    assert!(file(&files, "incident.md").contains("unreachable"));
    assert!(!files.iter().any(|(name, _)| name == "health.json"));
}

#[test]
fn a_payload_with_no_logs_yet_still_gives_a_bundle() {
    release_1_0_0();
    let dest = tempfile::tempdir().unwrap();
    let output = deploy("dev", "1.0.0", dest.path(), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let out = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (bundle, files) = capture("dev", dest.path(), &closed, out.path());
    let collectors = file(&files, "collectors.json");
    assert!(collectors.contains("no log file at"), "{collectors}");
    assert!(file(&files, "incident.md").contains("service log: FAILED"));
    let listing = Command::new("tar")
        .args(["-tzvf", &bundle])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.lines().all(|line| line.contains(" 0/0 ")),
        "{listing}"
    );
}
