//! The runbooks as a new release manager follows them, word for word: the `sh` blocks of
//! release.md, deploy.md and rollback.md run in order (the folders, versions and port put in),
//! and every `Success:` line they quote is checked against what its block printed, so a runbook
//! can no longer promise what the program does not print. `sh manual` blocks (root, systemd, an
//! editor, another host) are skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::deploy;
use crate::support::deploy_ok;
use crate::support::make_key;
use crate::support::release_1_2_0;
use crate::support::{
    StopServers, TestDb, clone, free_port, lock, text, workspace_root, write_env,
};

/// One runnable block of a runbook and the success fragments quoted after it.
struct Block {
    line: usize,
    script: String,
    success: Vec<String>,
}

/// The `sh` blocks of a runbook, each with the backquoted fragments of the `Success:` line that
/// follows it (if one does, before the next block).
fn blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut found = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index] != "```sh" {
            index += 1;
            continue;
        }
        let line = index + 1;
        let mut script = String::new();
        index += 1;
        while index < lines.len() && lines[index] != "```" {
            script.push_str(lines[index]);
            script.push('\n');
            index += 1;
        }
        let mut success = Vec::new();
        let mut ahead = index + 1;
        while ahead < lines.len() && !lines[ahead].starts_with("```") {
            if let Some(rest) = lines[ahead].strip_prefix("Success:") {
                success = rest
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
                break;
            }
            ahead += 1;
        }
        found.push(Block {
            line,
            script,
            success,
        });
        index += 1;
    }
    found
}

/// Runs a runbook's blocks in the clone with the substitutions made; checks each block's exit
/// code and success fragments.
fn follow(name: &str, substitutions: &[(&str, String)], workspace: &Path) {
    let path = workspace_root().join("docs/runbooks").join(name);
    let markdown = fs::read_to_string(&path).unwrap();
    let put_in = |text: &str| {
        substitutions
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    };
    let folded = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    let path_variable = format!(
        "{}:{}",
        cargo.parent().unwrap_or(Path::new("/usr/bin")).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let runnable = blocks(&markdown);
    assert!(!runnable.is_empty(), "{name} has no sh block");
    for block in runnable {
        let script = put_in(&block.script);
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(workspace)
            .env("PATH", &path_variable);
        for variable in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "RUSTFLAGS",
            "SOURCE_DATE_EPOCH",
            "CARGO_MANIFEST_DIR",
        ] {
            command.env_remove(variable);
        }
        let output = command.output().unwrap();
        let printed = text(&output);
        assert!(
            output.status.success(),
            "{name}:{}: the block failed:\n{script}\n{printed}",
            block.line
        );
        for fragment in &block.success {
            let fragment = put_in(fragment);
            assert!(
                folded(&printed).contains(&folded(&fragment)),
                "{name}:{}: the runbook promises {fragment:?}, the block printed:\n{printed}",
                block.line
            );
        }
    }
}

#[test]
fn the_release_deploy_and_rollback_runbooks_run_as_written() {
    release_1_2_0();
    let clone = clone();
    let db = TestDb::new("runbooks");
    let dest = tempfile::tempdir().unwrap();
    let incoming = tempfile::tempdir().unwrap();
    let port = free_port();
    // The release manager's key (step 0 of release.md, done here), in place of ~/.ssh.
    let keys = tempfile::tempdir().unwrap();
    make_key(keys.path(), "release");
    fs::rename(
        keys.path().join("release"),
        keys.path().join("saulpos-release"),
    )
    .unwrap();
    let allowed = keys.path().join("saulpos-allowed_signers");
    fs::rename(keys.path().join("release.allowed_signers"), &allowed).unwrap();
    let substitutions = |dest: &Path| {
        [
            ("http://localhost:8080", format!("http://127.0.0.1:{port}")),
            ("8080", port.to_string()),
            ("/opt/saulpos", dest.to_string_lossy().into_owned()),
            (
                "/tmp/incoming",
                incoming.path().to_string_lossy().into_owned(),
            ),
            ("~/.ssh/", format!("{}/", keys.path().display())),
            ("2.0.0", "3.0.0".to_owned()),
            ("1.9.0", "1.2.0".to_owned()),
        ]
    };
    let staging = dest.path().join("saulpos-staging");
    // prod's host trusts no key yet: its release before (here 1.2.0) was never signed.
    let prod_dest = tempfile::tempdir().unwrap();
    let prod = prod_dest.path().join("saulpos-prod");
    let _servers = StopServers(vec![staging.clone(), prod.clone()]);

    {
        // The release runbook packages in the shared clone, which must stay clean meanwhile.
        let _guard = lock(clone);
        follow("release.md", &substitutions(dest.path()), &clone.dir);
    }

    // The host had 1.9.0 (here 1.2.0) and its saulpos.env; the payload was copied to it.
    let output = deploy("staging", "1.2.0", dest.path(), &[]);
    assert!(output.status.success(), "{}", text(&output));
    write_env(&staging, &db, port);
    fs::copy(&allowed, dest.path().join("allowed_signers")).unwrap();
    for name in [
        "saulpos-staging-3.0.0.tar.gz",
        "saulpos-staging-3.0.0.tar.gz.sha256",
    ] {
        fs::copy(
            clone.dir.join("dist/3.0.0").join(name),
            incoming.path().join(name),
        )
        .unwrap();
    }
    follow("deploy.md", &substitutions(dest.path()), &clone.dir);
    let stopped = Command::new(staging.join("run.sh"))
        .arg("stop")
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));

    // prod had 1.9.0, then 2.0.0, which misbehaves.
    for version in ["1.2.0", "3.0.0"] {
        deploy_ok("prod", version, prod_dest.path(), &[]);
    }
    write_env(&prod, &db, port);
    follow("rollback.md", &substitutions(prod_dest.path()), &clone.dir);
    let history = fs::read_to_string(prod.join("history.log")).unwrap();
    assert!(
        history.contains("\"reason\":\"INC-42: checkout errors after 3.0.0\""),
        "{history}"
    );
}
