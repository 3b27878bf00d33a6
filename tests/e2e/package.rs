//! `cargo xtask package` and `cargo xtask verify`, run in snapshot clones of the workspace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::release_1_0_0;
use crate::support::{
    clone, git, lock, snapshot_workspace, text, tool, workspace_root, xtask, xtask_command,
};
use crate::support::{copy_release, release_files};
use crate::support::{xtask_json, xtask_ok};

const TARGET: &str = env!("E2E_HOST_TARGET");

pub fn archive_name(version: &str) -> String {
    format!("saulpos-server-{version}-{TARGET}.tar.gz")
}

#[test]
fn package_writes_the_archive_checksum_and_manifests_that_the_plain_tools_accept() {
    let release = release_1_0_0();
    let archive = archive_name("1.0.0");
    let names = release_files(release);
    let mut expected_names = vec![
        "SHA256SUMS".to_owned(),
        "kubernetes/kustomization.yaml".to_owned(),
        "kubernetes/saulpos-dev.yaml".to_owned(),
        "kubernetes/saulpos-prod.yaml".to_owned(),
        "kubernetes/saulpos-staging.yaml".to_owned(),
        "saulpos-server-1.0.0-oci.tar".to_owned(),
        "manifest.json".to_owned(),
        "manifest.txt".to_owned(),
        "provenance.intoto.json".to_owned(),
        "saulpos-server-1.0.0.cdx.json".to_owned(),
    ];
    for env in ["dev", "prod", "staging"] {
        expected_names.push(format!("saulpos-{env}-1.0.0.tar.gz"));
        expected_names.push(format!("saulpos-{env}-1.0.0.tar.gz.sha256"));
    }
    expected_names.push(archive.clone());
    expected_names.push(format!("{archive}.sha256"));
    expected_names.sort();
    assert_eq!(names, expected_names);
    let sums = tool(release, "sha256sum", &["-c", "--strict", "SHA256SUMS"]);
    assert!(sums.status.success(), "{}", text(&sums));
    let listed = String::from_utf8_lossy(&sums.stdout).lines().count();
    assert_eq!(listed, names.len() - 1, "SHA256SUMS lists every other file");

    let checked = tool(release, "sha256sum", &["-c", &format!("{archive}.sha256")]);
    assert!(checked.status.success(), "{}", text(&checked));
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout),
        format!("{archive}: OK\n")
    );
    let checked = tool(
        release,
        "shasum",
        &["-a", "256", "-c", &format!("{archive}.sha256")],
    );
    assert!(checked.status.success(), "{}", text(&checked));

    let listing = tool(release, "tar", &["-tzvf", &archive]);
    assert!(listing.status.success(), "{}", text(&listing));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let mut paths = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "0/0", "owner of {line}");
        paths.push((fields[0].to_owned(), fields[5].to_owned()));
    }
    let expected: Vec<(String, String)> = [
        ("drwxr-xr-x", "saulpos-server-1.0.0/"),
        ("-rw-r--r--", "saulpos-server-1.0.0/README.md"),
        ("drwxr-xr-x", "saulpos-server-1.0.0/bin/"),
        ("-rwxr-xr-x", "saulpos-server-1.0.0/bin/saulpos-server"),
        ("drwxr-xr-x", "saulpos-server-1.0.0/config/"),
        (
            "-rw-r--r--",
            "saulpos-server-1.0.0/config/application-dev.toml",
        ),
        (
            "-rw-r--r--",
            "saulpos-server-1.0.0/config/application-prod.toml",
        ),
        (
            "-rw-r--r--",
            "saulpos-server-1.0.0/config/application-staging.toml",
        ),
        ("-rw-r--r--", "saulpos-server-1.0.0/config/application.toml"),
    ]
    .iter()
    .map(|(mode, path)| (mode.to_string(), path.to_string()))
    .collect();
    assert_eq!(paths, expected);

    // The manifest describes the archive and, entry by entry, what is inside it.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(release.join("manifest.json")).unwrap()).unwrap();
    let commit = git(&clone().dir, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(manifest["name"], "saulpos-server");
    assert_eq!(manifest["version"], "1.0.0");
    assert_eq!(manifest["git_commit"], commit.as_str());
    assert_eq!(manifest["git_dirty"], false);
    assert_eq!(manifest["target"], TARGET);
    assert_eq!(manifest["profile"], "release");
    assert_eq!(manifest["source_date"], "2026-01-01T00:00:00Z");
    assert_eq!(manifest["archive"]["name"], archive.as_str());
    let archive_bytes = fs::read(release.join(&archive)).unwrap();
    assert_eq!(manifest["archive"]["size"], archive_bytes.len() as u64);
    let sha_line = fs::read_to_string(release.join(format!("{archive}.sha256"))).unwrap();
    assert_eq!(manifest["archive"]["sha256"], &sha_line[..64]);

    let extracted = tempfile::tempdir().unwrap();
    let untar = tool(
        extracted.path(),
        "tar",
        &["-xzf", release.join(&archive).to_str().unwrap()],
    );
    assert!(untar.status.success(), "{}", text(&untar));
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), expected.len());
    for file in files {
        let path = extracted.path().join(file["path"].as_str().unwrap());
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(
            file["mode"].as_str().unwrap(),
            format!("{:04o}", metadata.permissions().mode() & 0o7777),
            "{path:?}"
        );
        if file["kind"] == "file" {
            assert_eq!(file["size"], metadata.len(), "{path:?}");
            let sum = tool(extracted.path(), "sha256sum", &[path.to_str().unwrap()]);
            assert_eq!(
                file["sha256"].as_str().unwrap(),
                &String::from_utf8_lossy(&sum.stdout)[..64],
                "{path:?}"
            );
        }
    }
    let text_manifest = fs::read_to_string(release.join("manifest.txt")).unwrap();
    for line in [
        "name: saulpos-server\n".to_owned(),
        "version: 1.0.0\n".to_owned(),
        format!("git_commit: {commit}\n"),
        "git_dirty: false\n".to_owned(),
        format!("archive: {archive}\n"),
        format!("archive_sha256: {}\n", &sha_line[..64]),
    ] {
        assert!(text_manifest.contains(&line), "{line:?} in {text_manifest}");
    }

    let binary = extracted
        .path()
        .join("saulpos-server-1.0.0/bin/saulpos-server");
    let version = tool(extracted.path(), binary.to_str().unwrap(), &["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("saulpos-server 1.0.0 (commit {commit}, built 2026-01-01T00:00:00Z)\n")
    );
    let path_inside = String::from_utf8_lossy(&fs::read(&binary).unwrap())
        .contains(clone().dir.to_str().unwrap());
    assert!(!path_inside, "the binary carries the checkout's path");

    let summary: serde_json::Value = xtask_json(&clone().dir, &["verify", "1.0.0", "--json"]);
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["files_checked"], 9);
    assert_eq!(
        summary["payloads"],
        serde_json::json!([
            "saulpos-dev-1.0.0.tar.gz",
            "saulpos-staging-1.0.0.tar.gz",
            "saulpos-prod-1.0.0.tar.gz"
        ])
    );
}

#[test]
fn each_payload_unpacks_to_one_folder_with_the_release_and_what_installs_it() {
    let release = release_1_0_0();
    let archive = archive_name("1.0.0");
    for env in ["dev", "staging", "prod"] {
        let payload = format!("saulpos-{env}-1.0.0.tar.gz");
        let checked = tool(release, "sha256sum", &["-c", &format!("{payload}.sha256")]);
        assert!(checked.status.success(), "{}", text(&checked));
        let listing = tool(release, "tar", &["-tzvf", &payload]);
        assert!(listing.status.success(), "{}", text(&listing));
        let listing = String::from_utf8(listing.stdout).unwrap();
        let entries: Vec<(String, String)> = listing
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(fields[1], "0/0", "owner of {line}");
                (fields[0].to_owned(), fields[5].to_owned())
            })
            .collect();
        let top = format!("saulpos-{env}-1.0.0");
        let mut expected = vec![
            ("drwxr-xr-x".to_owned(), format!("{top}/")),
            ("-rw-r--r--".to_owned(), format!("{top}/README.md")),
            ("-rw-r--r--".to_owned(), format!("{top}/SHA256SUMS")),
            (
                "-rw-r--r--".to_owned(),
                format!("{top}/provenance.intoto.json"),
            ),
            (
                "-rw-r--r--".to_owned(),
                format!("{top}/saulpos-server-1.0.0.cdx.json"),
            ),
            ("-rwxr-xr-x".to_owned(), format!("{top}/install.sh")),
            ("-rw-r--r--".to_owned(), format!("{top}/manifest.json")),
            ("-rw-r--r--".to_owned(), format!("{top}/manifest.txt")),
            ("-rwxr-xr-x".to_owned(), format!("{top}/rollback.sh")),
            ("-rwxr-xr-x".to_owned(), format!("{top}/run.sh")),
            (
                "-rw-r--r--".to_owned(),
                format!("{top}/saulpos-{env}.service"),
            ),
            ("-rw-r--r--".to_owned(), format!("{top}/{archive}")),
            ("-rw-r--r--".to_owned(), format!("{top}/{archive}.sha256")),
            (
                "-rw-r--r--".to_owned(),
                format!("{top}/saulpos.env.example"),
            ),
        ];
        expected.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(entries, expected, "{payload}");

        // The release inside is the release beside it, byte for byte.
        let unpacked = tempfile::tempdir().unwrap();
        let untar = tool(
            unpacked.path(),
            "tar",
            &["-xzf", release.join(&payload).to_str().unwrap()],
        );
        assert!(untar.status.success(), "{}", text(&untar));
        let inside = unpacked.path().join(&top);
        for name in [
            archive.clone(),
            format!("{archive}.sha256"),
            "manifest.txt".to_owned(),
            "manifest.json".to_owned(),
            "saulpos-server-1.0.0.cdx.json".to_owned(),
            "provenance.intoto.json".to_owned(),
        ] {
            assert!(
                fs::read(inside.join(&name)).unwrap() == fs::read(release.join(&name)).unwrap(),
                "{payload}: {name} differs from the release's"
            );
        }
        // Nothing in it names the machine or the checkout that built it.
        let clone_path = clone().dir.to_string_lossy().into_owned();
        for entry in fs::read_dir(&inside).unwrap() {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&clone_path),
                "{} names the checkout",
                path.display()
            );
        }
        let readme = fs::read_to_string(inside.join("README.md")).unwrap();
        assert!(readme.contains("./install.sh /opt/saulpos"), "{readme}");
        assert!(readme.contains("run.sh"), "{readme}");

        // The scripts it ships are shellcheck-clean and answer --help.
        let checked = tool(
            &inside,
            "shellcheck",
            &["install.sh", "rollback.sh", "run.sh"],
        );
        assert!(checked.status.success(), "shellcheck: {}", text(&checked));
        for script in ["install.sh", "rollback.sh", "run.sh"] {
            let help = tool(&inside, &format!("./{script}"), &["--help"]);
            assert!(help.status.success(), "{script} --help: {}", text(&help));
            assert!(
                String::from_utf8_lossy(&help.stdout).starts_with("Usage: ./"),
                "{script} --help: {}",
                text(&help)
            );
        }
    }
}

#[test]
fn an_invalid_version_is_refused_before_any_work_with_a_hint() {
    let clone = clone();
    let cases = [
        ("v2.0.0", "drop the leading v"),
        ("2.0", "give all three numbers"),
        ("02.0.0", "drop the leading zeros"),
        ("2.0.0.1", "exactly three numbers"),
        ("1.2.3-01", "drop the leading zeros"),
        ("2.0.0 ", "remove the spaces"),
        ("", "give the version to release"),
    ];
    for (version, hint) in cases {
        let started = Instant::now();
        let output = xtask(&clone.dir, &["package", version]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{version:?}: {message}");
        assert!(
            message.contains(&format!("invalid release version {version:?}")),
            "{message}"
        );
        assert!(message.contains(hint), "{version:?}: {message}");
        assert!(message.contains("e.g. 2.0.0"), "{message}");
        assert!(output.stdout.is_empty());
        assert!(!message.contains("Compiling saulpos-server"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(60));
        let leftovers: Vec<String> = fs::read_dir(clone.dir.join("dist"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with('.') || name.contains(&format!(".{version}.")))
            .filter(|name| name.starts_with(version) && !version.is_empty())
            .collect();
        assert!(leftovers.is_empty(), "{version:?} wrote {leftovers:?}");
    }
}

#[test]
fn a_version_already_released_is_refused_also_with_other_build_metadata() {
    let release = release_1_0_0();
    let before = fs::read(release.join("manifest.json")).unwrap();
    for version in ["1.0.0", "1.0.0+rebuild.1"] {
        let output = xtask(&clone().dir, &["package", version]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains("is already released as") && message.contains("dist/1.0.0"),
            "{message}"
        );
        assert!(message.contains("choose a new version"), "{message}");
    }
    assert!(!clone().dir.join("dist/1.0.0+rebuild.1").exists());
    assert_eq!(fs::read(release.join("manifest.json")).unwrap(), before);
}

#[test]
fn a_dirty_tree_is_refused_and_outside_git_the_flag_is_named() {
    let dir = workspace_root().join("target/e2e/dirty-clone");
    snapshot_workspace(&dir);
    fs::write(dir.join("server/src/scratch.rs"), "// not committed\n").unwrap();
    let shared_target = workspace_root().join("target/e2e/shared-target");
    let run = |args: &[&str]| {
        xtask_command(&dir, args)
            .env("CARGO_TARGET_DIR", &shared_target)
            // The clone lives inside this workspace's checkout: git must not find that one.
            .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
            .output()
            .unwrap()
    };
    let output = run(&["package", "4.0.0"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("the git tree has uncommitted changes"),
        "{message}"
    );
    assert!(message.contains("?? server/src/scratch.rs"), "{message}");
    assert!(message.contains("pass --allow-dirty"), "{message}");
    assert!(!dir.join("dist/4.0.0").exists());

    fs::remove_dir_all(dir.join(".git")).unwrap();
    let output = run(&["package", "4.0.0"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("is not a git checkout"), "{message}");
    assert!(message.contains("--allow-no-git"), "{message}");
    assert!(!dir.join("dist/4.0.0").exists());
}

#[test]
fn verify_catches_a_flipped_byte_in_every_file_of_a_release() {
    let release = release_1_0_0();
    let archive = archive_name("1.0.0");
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("1.0.0");
    copy_release(release, &copy);
    let dist = copies.path().to_str().unwrap();
    xtask_ok(&clone().dir, &["verify", "1.0.0", "--dist", dist]);

    for (name, expected) in [
        (archive.clone(), "the archive's sha256 is"),
        (format!("{archive}.sha256"), "checksum file"),
        ("manifest.txt".to_owned(), "manifest.txt line"),
        ("manifest.json".to_owned(), "problem:"),
        (
            "saulpos-server-1.0.0-oci.tar".to_owned(),
            "saulpos-server-1.0.0-oci.tar is",
        ),
        (
            "kubernetes/saulpos-prod.yaml".to_owned(),
            "kubernetes/saulpos-prod.yaml's sha256 is",
        ),
    ] {
        let path = copy.join(&name);
        let original = fs::read(&path).unwrap();
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01;
        fs::write(&path, &flipped).unwrap();
        let output = xtask(&clone().dir, &["verify", "1.0.0", "--dist", dist]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains("do not ship or deploy it"),
            "{name}: {message}"
        );
        fs::write(&path, original).unwrap();
    }

    let output = xtask(&clone().dir, &["verify", "9.9.9", "--dist", dist]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        message.contains("version 9.9.9 is not packaged")
            && message.contains("packaged versions: 1.0.0"),
        "{message}"
    );
}

#[test]
fn a_package_killed_mid_way_leaves_no_release_folder_and_the_next_run_succeeds() {
    let clone = clone();
    let _guard = lock(clone);
    // A dirty tree, packaged on purpose: the manifest must say so. And a config profile that
    // is a FIFO: package blocks reading it while it writes the release, so the kill lands
    // mid-way every time, whatever the machine's speed.
    let note = clone.dir.join("server/scratch-note.md");
    let fifo = clone.dir.join("server/config/application-zz-blocking.toml");
    let scratch = Scratch(vec![note.clone(), fifo.clone()]);
    fs::write(&note, "uncommitted\n").unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let dist = clone.dir.join("dist");
    let mut child = xtask_command(&clone.dir, &["package", "1.1.0", "--allow-dirty"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // Wait until the release is being written, then kill the whole process group.
    let deadline = Instant::now() + Duration::from_secs(900);
    let partial = loop {
        let found = fs::read_dir(&dist)
            .into_iter()
            .flatten()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .find(|name| name.starts_with(".1.1.0.partial-"));
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "package never started writing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "package ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = std::process::Command::new("kill")
        // `kill -KILL -PGID` is taken for other options by procps' kill; `--` is reliable.
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    assert!(
        !dist.join("1.1.0").exists(),
        "a killed package left dist/1.1.0"
    );
    fs::remove_file(&fifo).unwrap();

    let output = xtask(&clone.dir, &["package", "1.1.0", "--allow-dirty"]);
    drop(scratch);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        !dist.join(&partial).exists(),
        "the stale {partial} was not removed"
    );
    let manifest = fs::read_to_string(dist.join("1.1.0/manifest.txt")).unwrap();
    assert!(manifest.contains("git_dirty: true\n"), "{manifest}");
    assert!(!manifest.contains("zz-blocking"), "{manifest}");
    xtask_ok(&clone.dir, &["verify", "1.1.0"]);
}

/// Files a test put into the shared clone, removed when it ends, even when it fails, so that
/// the other tests see a clean tree.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// The same commit packaged again at another path (a git worktree, with fresh file times and
/// its own target folder), under another umask, gives the same release byte for byte: the
/// archive, the manifests, the SBOM, the provenance, the payloads and SHA256SUMS.
#[test]
fn verify_rebuild_packages_the_recorded_commit_again_elsewhere_and_reproduces_the_release() {
    let release = release_1_0_0();
    let cargo = xtask_command(&clone().dir, &[]).get_program().to_owned();
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            "umask 077 && exec \"$0\" xtask verify 1.0.0 --rebuild --json",
        ])
        .arg(cargo)
        .current_dir(&clone().dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("reproduced: the recorded commit, built again at another path"),
        "{message}"
    );
    let files = release_files(release).len();
    assert!(
        message.contains(&format!("compared {files} files with the rebuild")),
        "{message}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["reproduced"], true);
    let worktrees = git(&clone().dir, &["worktree", "list"]);
    assert_eq!(
        worktrees.lines().count(),
        1,
        "a worktree was left: {worktrees}"
    );
}
