//! Signed releases end to end: a release packaged with a key held by ssh-agent, checked with the
//! plain tools (`ssh-keygen -Y verify`, `sha256sum -c`) and an independent CycloneDX validator;
//! hosts with an allowed_signers file install and roll back only what a trusted key signed.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::hostile::{Evil, flip_a_byte, hex, unpack_payload, write_evil_release};
use crate::support::install_sh;
use crate::support::release_1_0_0;
use crate::support::run_ok;
use crate::support::signed_release;
use crate::support::{clone, git, text, tool, xtask_command};
use crate::support::{deploy, live, run, snapshot};

const TARGET: &str = env!("E2E_HOST_TARGET");

fn ssh_verify(dir: &Path, allowed: &Path, identity: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("ssh-keygen -Y verify -f \"$0\" -I \"$1\" -n saulpos-release -s SHA256SUMS.sig < SHA256SUMS")
        .arg(allowed)
        .arg(identity)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_signed_release_checks_out_with_the_plain_tools_and_its_sbom_and_provenance_hold() {
    let (release, keys) = signed_release();
    let allowed = keys.allowed("release");

    // The release folder, with OpenSSH and coreutils alone.
    let verified = ssh_verify(release, &allowed, "release@saulpos");
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("Good \"saulpos-release\" signature for release@saulpos"),
        "{}",
        text(&verified)
    );
    let sums = tool(release, "sha256sum", &["-c", "--strict", "SHA256SUMS"]);
    assert!(sums.status.success(), "{}", text(&sums));
    let stranger = ssh_verify(release, &keys.allowed("other"), "other@saulpos");
    assert!(!stranger.status.success(), "{}", text(&stranger));

    // A payload alone proves itself: its own SHA256SUMS, signed.
    let host = tempfile::tempdir().unwrap();
    let payload = unpack_payload(release, "prod", "1.3.0", host.path());
    let verified = ssh_verify(&payload, &allowed, "release@saulpos");
    assert!(verified.status.success(), "{}", text(&verified));
    let sums = tool(&payload, "sha256sum", &["-c", "--strict", "SHA256SUMS"]);
    assert!(sums.status.success(), "{}", text(&sums));
    let listed = String::from_utf8_lossy(&sums.stdout).lines().count();
    let held = fs::read_dir(&payload).unwrap().count();
    assert_eq!(
        listed,
        held - 2,
        "SHA256SUMS lists every file but itself and its signature"
    );

    // The SBOM: valid CycloneDX 1.5 to an independent validator, the crates linked in only.
    let sbom_path = release.join("saulpos-server-1.3.0.cdx.json");
    let validated = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from cyclonedx.schema import SchemaVersion\n\
             from cyclonedx.validation.json import JsonStrictValidator\n\
             error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
             print(error if error else 'valid')\n\
             sys.exit(1 if error else 0)",
        )
        .arg(&sbom_path)
        .output()
        .expect("python3 is needed");
    assert!(
        validated.status.success(),
        "the CycloneDX validator refuses the SBOM (or is missing: pip install 'cyclonedx-python-lib[json-validation]'): {}",
        text(&validated)
    );
    let sbom: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["specVersion"], "1.5");
    let archive = format!("saulpos-server-1.3.0-{TARGET}.tar.gz");
    let archive_sha = hex(&fs::read(release.join(&archive)).unwrap());
    assert_eq!(
        sbom["metadata"]["component"]["hashes"][0]["content"],
        archive_sha.as_str()
    );
    assert_eq!(sbom["metadata"]["timestamp"], "2026-01-01T00:00:00Z");
    let components = sbom["components"].as_array().unwrap();
    let named = |name: &str| {
        components
            .iter()
            .find(|component| component["name"] == name)
    };
    let axum = named("axum").expect("axum is linked into the server");
    assert!(
        axum["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:cargo/axum@0.8.")
    );
    let lock = fs::read_to_string(clone().dir.join("Cargo.lock")).unwrap();
    let axum_sha = axum["hashes"][0]["content"].as_str().unwrap();
    assert!(
        lock.contains(&format!("checksum = \"{axum_sha}\"")),
        "{axum}"
    );
    assert!(axum["licenses"][0]["expression"].is_string(), "{axum}");
    for compile_time_only in ["sqlx-macros", "tokio-macros", "cc", "tempfile"] {
        assert!(
            named(compile_time_only).is_none(),
            "{compile_time_only} is not linked into the server but is in the SBOM"
        );
    }

    // The provenance: every subject is a file of the release with that sha256.
    let statement: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(release.join("provenance.intoto.json")).unwrap())
            .unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = statement["subject"].as_array().unwrap();
    assert!(subjects.len() >= 5, "{statement}");
    for subject in subjects {
        let name = subject["name"].as_str().unwrap();
        assert_eq!(
            subject["digest"]["sha256"].as_str().unwrap(),
            hex(&fs::read(release.join(name)).unwrap()),
            "{name}"
        );
    }
    let commit = git(&clone().dir, &["rev-parse", "HEAD"]).trim().to_owned();
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["source"]["digest"]["gitCommit"],
        commit.as_str()
    );
    assert_eq!(
        definition["resolvedDependencies"][1]["digest"]["sha256"],
        hex(lock.as_bytes()).as_str()
    );

    // cargo xtask verify names the signer, and refuses a stranger's key and an unsigned release.
    let dist = clone().dir.join("dist");
    let dist_arg = dist.to_str().unwrap();
    let output = run_ok(&[
        "verify",
        "1.3.0",
        "--allowed-signers",
        allowed.to_str().unwrap(),
        "--dist",
        dist_arg,
    ]);
    assert!(
        output.contains("signature: Good \"saulpos-release\" signature for release@saulpos"),
        "{}",
        output
    );
    let other = keys.allowed("other");
    let output = run(&[
        "verify",
        "1.3.0",
        "--allowed-signers",
        other.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("is not signed by any key in"),
        "{}",
        text(&output)
    );
    release_1_0_0();
    let output = run(&[
        "verify",
        "1.0.0",
        "--allowed-signers",
        allowed.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("is not signed (no"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_signing_key_is_a_file_named_never_the_key_itself_and_a_bad_one_stops_package_first() {
    let (_, keys) = signed_release();
    let key_text = fs::read_to_string(keys.private("release")).unwrap();
    let output = xtask_command(&clone().dir, &["package", "5.0.0"])
        .env("SAULPOS_SIGNING_KEY", &key_text)
        .output()
        .unwrap();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("SAULPOS_SIGNING_KEY names a file which cannot be read")
            && message.contains("never the key itself"),
        "{message}"
    );
    assert!(
        !message.contains("OPENSSH PRIVATE KEY"),
        "the key was echoed: {message}"
    );
    let not_a_key = keys.allowed("release");
    let output = xtask_command(
        &clone().dir,
        &[
            "package",
            "5.0.0",
            "--sign-key",
            not_a_key.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("is not an SSH key file"), "{message}");
    assert!(!message.contains("Compiling saulpos-server"), "{message}");
    assert!(!clone().dir.join("dist/5.0.0").exists());
}

#[test]
fn hosts_with_allowed_signers_install_and_roll_back_only_what_a_trusted_key_signed() {
    let (signed, keys) = signed_release();
    let unsigned = release_1_0_0();
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let installed = dest.path().join("saulpos-prod");
    let host = tempfile::tempdir().unwrap();

    // Before the host trusts a key, an unsigned release installs, and says so.
    let old = unpack_payload(unsigned, "prod", "1.0.0", host.path());
    let output = install_sh(&old, &[dest_arg]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("signatures were not checked: no"),
        "{}",
        text(&output)
    );
    fs::copy(keys.allowed("release"), dest.path().join("allowed_signers")).unwrap();

    // A signed release installs, naming the key.
    let good = unpack_payload(signed, "prod", "1.3.0", host.path());
    let output = install_sh(&good, &[dest_arg]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("signature: Good \"saulpos-release\" signature for release@saulpos with ED25519 key SHA256:"),
        "{message}"
    );
    assert_eq!(live(&installed), "releases/1.3.0");
    let before = snapshot(dest.path());

    let refused = |payload: &Path, case: &str, expected: &str| {
        let output = install_sh(payload, &[dest_arg]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {message}");
        assert!(message.contains(expected), "{case}: {message}");
        assert!(
            message.contains("nothing was installed"),
            "{case}: {message}"
        );
        assert_eq!(snapshot(dest.path()), before, "{case}");
    };
    // Unsigned.
    let other_host = tempfile::tempdir().unwrap();
    let again = unpack_payload(unsigned, "prod", "1.0.0", other_host.path());
    refused(&again, "unsigned", "is not signed (no SHA256SUMS.sig)");
    // Signed by another key.
    let stranger_host = tempfile::tempdir().unwrap();
    let stranger = unpack_payload(signed, "prod", "1.3.0", stranger_host.path());
    fs::remove_file(stranger.join("SHA256SUMS.sig")).unwrap();
    let resigned = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "saulpos-release", "-f"])
        .arg(keys.private("other"))
        .arg(stranger.join("SHA256SUMS"))
        .output()
        .unwrap();
    assert!(resigned.status.success(), "{}", text(&resigned));
    refused(&stranger, "another key", "is not a signature by any key in");
    // A flipped byte in SHA256SUMS.
    let flipped_host = tempfile::tempdir().unwrap();
    let flipped = unpack_payload(signed, "prod", "1.3.0", flipped_host.path());
    flip_a_byte(&flipped.join("SHA256SUMS"));
    refused(
        &flipped,
        "flipped SHA256SUMS",
        "signature does not check out",
    );
    // The archive replaced, every checksum regenerated, but no key to sign with.
    let evil_host = tempfile::tempdir().unwrap();
    let evil = unpack_payload(signed, "prod", "1.3.0", evil_host.path());
    let top = "saulpos-server-1.3.0".to_owned();
    write_evil_release(
        &evil,
        "1.3.0",
        &[
            Evil::Dir(top.clone()),
            Evil::File(format!("{top}/README.md"), b"evil\n"),
        ],
    );
    refused(&evil, "replaced archive", "signature does not check out");

    // cargo xtask deploy holds the host to the same rule.
    let output = deploy("prod", "1.0.0", dest.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("is not signed"), "{}", text(&output));
    assert_eq!(snapshot(dest.path()), before);

    // Going back to the unsigned release is refused too, both ways; the live one stays.
    let output = Command::new(installed.join("rollback.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("release 1.0.0's signature does not check out"),
        "{}",
        text(&output)
    );
    let output = run(&["rollback", "prod", dest_arg]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("refused: release 1.0.0"),
        "{}",
        text(&output)
    );
    assert_eq!(live(&installed), "releases/1.3.0");
}
