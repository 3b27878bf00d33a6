//! The OCI image and the Kubernetes manifests of a release: read by skopeo and umoci, run by
//! podman against the test PostgreSQL, pushed to a real registry, and the manifests checked by
//! an independent validator in strict mode.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::copy_release;
use crate::support::release_1_0_0;
use crate::support::xtask_ok;
use crate::support::{
    SOURCE_URL, TestDb, clone, eventually, free_port, get, get_json, text, xtask,
};

const IMAGE: &str = "saulpos-server-1.0.0-oci.tar";

fn manifest(release: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(release.join("manifest.json")).unwrap()).unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} (.ci/run installs it): {error}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json_of(program: &str, args: &[&str]) -> Value {
    serde_json::from_str(&ok(program, args)).unwrap()
}

/// The documents of a YAML file as JSON, read by PyYAML (which kubernetes-validate brings).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script =
        "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    json_of("python3", &["-c", script, path.to_str().unwrap()])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_image_is_an_oci_layout_skopeo_and_umoci_read_with_only_what_the_server_needs() {
    let release = release_1_0_0();
    let manifest = manifest(release);
    let digest = manifest["image"]["digest"].as_str().unwrap();
    let archive = release.join(IMAGE);
    let reference = format!("oci-archive:{}:saulpos-server:1.0.0", archive.display());

    let inspected = json_of("skopeo", &["inspect", &reference]);
    assert_eq!(inspected["Digest"], digest);
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    let labels = &inspected["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        manifest["git_commit"]
    );
    assert_eq!(
        labels["org.opencontainers.image.created"],
        manifest["source_date"]
    );
    assert_eq!(labels["org.opencontainers.image.source"], SOURCE_URL);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.title"], "saulpos-server");
    let raw = json_of("skopeo", &["inspect", "--raw", &reference]);
    assert_eq!(raw["annotations"], *labels, "the manifest's annotations");
    let config = json_of("skopeo", &["inspect", "--config", &reference]);
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/app/bin/saulpos-server"])
    );
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(config["created"], manifest["source_date"]);

    // umoci checks every digest and diff_id as it unpacks.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fs::create_dir(&layout).unwrap();
    ok(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ],
    );
    let image = format!("{}:saulpos-server:1.0.0", layout.display());
    let bundle = work.path().join("bundle");
    ok(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &image,
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let binary_sha256 = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["path"] == "saulpos-server-1.0.0/bin/saulpos-server")
        .unwrap()["sha256"]
        .clone();
    assert_eq!(
        Value::from(sha256_of(&rootfs.join("app/bin/saulpos-server"))),
        binary_sha256,
        "the image holds the archive's binary"
    );
    for profile in ["application.toml", "application-prod.toml"] {
        assert!(
            rootfs.join("app/config").join(profile).is_file(),
            "{profile}"
        );
    }
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    for absent in [
        "bin/sh",
        "usr/bin",
        "bin/bash",
        "usr/bin/apt",
        "var/lib/dpkg",
    ] {
        assert!(!rootfs.join(absent).exists(), "the image holds /{absent}");
    }
    // Every file from the host is recorded with its Debian package, and is what the image holds.
    let files = manifest["image"]["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|file| file["path"] == "/lib64/ld-linux-x86-64.so.2"),
        "{files:?}"
    );
    for file in files {
        let path = file["path"].as_str().unwrap();
        assert_eq!(
            Value::from(sha256_of(&rootfs.join(path.trim_start_matches('/')))),
            file["sha256"],
            "{path}"
        );
        let package = file["package"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no package"));
        let owner = ok("dpkg-query", &["-S", path]);
        let name = package.split(' ').next().unwrap();
        assert!(
            owner.starts_with(&format!("{name}:")),
            "{path}: {package} / {owner}"
        );
    }
    let text = fs::read_to_string(release.join("manifest.txt")).unwrap();
    assert!(
        text.contains(&format!("image_digest: {digest}\n"))
            && text.contains("image_file: /lib/x86_64-linux-gnu/libc.so.6 size="),
        "{text}"
    );
    let sbom: Value = serde_json::from_str(
        &fs::read_to_string(release.join("saulpos-server-1.0.0.cdx.json")).unwrap(),
    )
    .unwrap();
    let libc = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|component| component["name"] == "libc6")
        .expect("the SBOM lists libc6");
    assert!(
        libc["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:deb/debian/libc6@"),
        "{libc}"
    );
}

fn sha256_of(path: &Path) -> String {
    ok("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// podman with a storage of its own under a temporary folder, removed with it.
struct Podman {
    dir: tempfile::TempDir,
    containers: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().unwrap(),
            containers: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self
            .command(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run podman (.ci/run installs it): {error}"));
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            text(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = self.command(&["rm", "-f", "-t", "0", name]).output();
        }
        let _ = self.command(&["system", "reset", "--force"]).output();
    }
}

#[test]
fn the_image_runs_in_podman_against_postgres_as_65532_and_stops_within_its_grace() {
    let release = release_1_0_0();
    let podman = &mut Podman::new();
    let loaded = podman.ok(&["load", "-i", release.join(IMAGE).to_str().unwrap()]);
    assert!(
        loaded.contains("localhost/saulpos-server:1.0.0"),
        "{loaded}"
    );
    let db = TestDb::new("image");
    let port = free_port();
    let name = format!("saulpos-e2e-{port}");
    podman.containers.push(name.clone());
    let url = db.url();
    let port_text = port.to_string();
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "host",
        "-e",
        "SAULPOS_PROFILE=staging",
        "-e",
        &format!("SAULPOS_DB_URL={url}"),
        "-e",
        "SAULPOS_DB_USERNAME=postgres",
        "-e",
        "SAULPOS_SERVER_ADDRESS=127.0.0.1",
        "-e",
        &format!("SAULPOS_SERVER_PORT={port_text}"),
        "localhost/saulpos-server:1.0.0",
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), || {
        get(&format!("{base}/actuator/health"))
            .is_ok_and(|(status, body)| status == 200 && body.contains("\"UP\""))
    });
    assert!(up, "not UP: {}", podman.ok(&["logs", &name]));
    let (status, info) = get_json(&format!("{base}/actuator/info"));
    assert_eq!(status, 200);
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["profile"], "staging");
    assert_eq!(
        db.query("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        fs::read_dir(crate::support::workspace_root().join("server/migrations"))
            .unwrap()
            .count()
            .to_string()
    );
    // The process runs as 65532 on the host too (no user namespace here).
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let status_text = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status_text
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("65532"), "{uid}");

    let started = Instant::now();
    podman.ok(&["stop", "-t", "25", &name]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "stop took {took:?}");
    let exit = podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(exit.trim(), "0", "{}", podman.ok(&["logs", &name]));
    let logs = text(&podman.command(&["logs", &name]).output().unwrap());
    assert!(logs.contains("saulpos-server stopped"), "{logs}");
}

/// Debian's docker-registry on a free loopback port, storing under a temporary folder.
struct Registry {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("cannot run docker-registry (.ci/run installs it)");
        let registry = Registry {
            child,
            address,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", registry.address);
        assert!(
            eventually(Duration::from_secs(20), || get(&url)
                .is_ok_and(|(status, _)| status == 200)),
            "the registry did not answer at {url}"
        );
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_image_puts_the_digest_from_dist_in_a_registry_and_refuses_plain_http_by_default() {
    let release = release_1_0_0();
    let digest = manifest(release)["image"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let dist = release.parent().unwrap().to_str().unwrap();
    let registry = Registry::start();
    let destination = format!("{}/saulpos/saulpos-server", registry.address);
    let remote = format!("docker://{destination}:1.0.0");

    let refused = xtask(
        &clone().dir,
        &["push-image", "1.0.0", &destination, "--dist", dist],
    );
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("HTTP response to HTTPS client") && message.contains("--insecure"),
        "{message}"
    );
    assert!(
        !run("skopeo", &["inspect", "--tls-verify=false", &remote])
            .status
            .success(),
        "nothing may be pushed over plain HTTP without --insecure"
    );

    let no_repository = xtask(
        &clone().dir,
        &["push-image", "1.0.0", &registry.address, "--dist", dist],
    );
    let message = text(&no_repository);
    assert_eq!(no_repository.status.code(), Some(1), "{message}");
    assert!(
        message.contains("names a registry but no repository"),
        "{message}"
    );

    let pushed = xtask(
        &clone().dir,
        &[
            "push-image",
            "1.0.0",
            &destination,
            "--insecure",
            "--json",
            "--dist",
            dist,
        ],
    );
    let message = text(&pushed);
    assert!(pushed.status.success(), "{message}");
    let summary: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(summary["digest"], digest.as_str());
    assert_eq!(summary["tag"], "1.0.0");
    assert!(
        message.contains(&format!("pushed {destination}:1.0.0@{digest}")),
        "{message}"
    );
    let inspected = json_of("skopeo", &["inspect", "--tls-verify=false", &remote]);
    assert_eq!(inspected["Digest"], digest.as_str());
    let left: Vec<String> = fs::read_dir(dist)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".push-"))
        .collect();
    assert!(left.is_empty(), "push-image left {left:?} in dist/");
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.version"],
        "1.0.0"
    );
}

#[test]
fn kubectl_kustomize_renders_every_environment_with_what_a_prometheus_needs_to_find_the_pods() {
    let release = release_1_0_0();
    let rendered = ok(
        "kubectl",
        &["kustomize", release.join("kubernetes").to_str().unwrap()],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    fs::write(&file, &rendered).unwrap();
    let validated = run("kubernetes-validate", &["--strict", file.to_str().unwrap()]);
    assert!(validated.status.success(), "{}", text(&validated));
    let documents = yaml_documents(&file);
    for env in ["dev", "staging", "prod"] {
        let namespace = format!("saulpos-{env}");
        let find = |kind: &str, name: &str| {
            documents
                .iter()
                .find(|document| {
                    document["kind"] == kind
                        && document["metadata"]["name"] == name
                        && document["metadata"]["namespace"] == namespace.as_str()
                })
                .unwrap_or_else(|| panic!("{env}: no {kind} {name} in {rendered}"))
                .clone()
        };
        let deployment = find("Deployment", "saulpos-server");
        let port =
            deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
                .as_u64()
                .unwrap();
        let port_text = port.to_string();
        let annotations = [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/path", "/actuator/prometheus"),
            ("prometheus.io/port", port_text.as_str()),
        ];
        let service = find("Service", "saulpos-server");
        let pod = &deployment["spec"]["template"]["metadata"];
        for (key, value) in annotations {
            assert_eq!(service["metadata"]["annotations"][key], value, "{env}");
            assert_eq!(pod["annotations"][key], value, "{env}");
        }
        // The headless Service the shipped kubernetes.yml scrape configuration resolves.
        let pods = find("Service", "saulpos-server-pods");
        assert_eq!(pods["spec"]["clusterIP"], "None", "{env}");
        assert_eq!(pods["spec"]["ports"][0]["port"], port, "{env}");
        assert_eq!(
            pods["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let scrape = fs::read_to_string(
            crate::support::workspace_root().join("deploy/prometheus/kubernetes.yml"),
        )
        .unwrap();
        assert!(
            scrape.contains(&format!(
                "- saulpos-server-pods.{namespace}.svc.cluster.local\n"
            )),
            "{scrape}"
        );
        assert!(scrape.contains(&format!("port: {port}\n")), "{scrape}");
    }
}

#[test]
fn the_kubernetes_manifests_pass_strict_validation_with_probes_limits_and_only_a_secret_reference()
{
    let release = release_1_0_0();
    let digest = manifest(release)["image"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let grace = 20; // server/config/application.toml
    let folder = release.join("kubernetes");
    let kustomization = fs::read_to_string(folder.join("kustomization.yaml")).unwrap();
    for env in ["dev", "staging", "prod"] {
        let file = folder.join(format!("saulpos-{env}.yaml"));
        assert!(
            kustomization.contains(&format!("  - saulpos-{env}.yaml\n")),
            "{kustomization}"
        );
        let validated = run("kubernetes-validate", &["--strict", file.to_str().unwrap()]);
        let message = text(&validated);
        assert!(validated.status.success(), "{env}: {message}");
        for kind in [
            "namespace",
            "serviceaccount",
            "configmap",
            "service",
            "poddisruptionbudget",
            "deployment",
        ] {
            assert!(
                message.contains(&format!("passed for resource {kind}/")),
                "{env} {kind}: {message}"
            );
        }
        let documents = yaml_documents(&file);
        let of = |kind: &str| {
            documents
                .iter()
                .find(|document| document["kind"] == kind)
                .unwrap_or_else(|| panic!("{env}: no {kind}"))
                .clone()
        };
        let namespace = format!("saulpos-{env}");
        for document in &documents {
            if document["kind"] != "Namespace" {
                assert_eq!(document["metadata"]["namespace"], namespace.as_str());
            }
        }
        let config_map = of("ConfigMap");
        assert_eq!(config_map["data"]["SAULPOS_PROFILE"], env);
        assert!(
            config_map["data"]
                .as_object()
                .unwrap()
                .keys()
                .all(|key| !key.contains("PASSWORD")),
            "{config_map}"
        );
        let deployment = of("Deployment");
        let spec = &deployment["spec"];
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let pod = &spec["template"]["spec"];
        let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let container = &pod["containers"][0];
        let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap();
        assert!(
            termination > grace + pause,
            "{env}: terminationGracePeriodSeconds {termination} must exceed the grace {grace} + preStop {pause}"
        );
        assert_eq!(
            container["image"],
            format!("registry.invalid/saulpos/saulpos-server@{digest}").as_str()
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"],
            "/actuator/health/liveness"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"],
            "/actuator/health/readiness"
        );
        assert_eq!(
            container["startupProbe"]["httpGet"]["path"],
            "/actuator/health/liveness"
        );
        assert!(container["resources"]["requests"]["memory"].is_string());
        assert!(container["resources"]["limits"]["memory"].is_string());
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        let env_vars = container["env"].as_array().unwrap();
        assert_eq!(env_vars.len(), 1, "{env_vars:?}");
        assert_eq!(env_vars[0]["name"], "SAULPOS_DB_PASSWORD");
        assert!(env_vars[0].get("value").is_none());
        assert_eq!(
            env_vars[0]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "saulpos-db", "key": "password"})
        );
        assert!(
            documents
                .iter()
                .all(|document| document["kind"] != "Secret")
        );
    }

    // `kubernetes` fills the registry in, checked against SHA256SUMS first.
    let dist = release.parent().unwrap().to_str().unwrap();
    let fill = [
        "kubernetes",
        "prod",
        "1.0.0",
        "--registry",
        "127.0.0.1:5000/team",
        "--dist",
        dist,
    ];
    let filled = xtask(&clone().dir, &fill);
    assert!(filled.status.success(), "{}", text(&filled));
    let stdout = String::from_utf8(filled.stdout).unwrap();
    assert!(
        stdout.contains(&format!(
            "image: 127.0.0.1:5000/team/saulpos-server@{digest}\n"
        )) && !stdout.contains("registry.invalid/saulpos/saulpos-server@"),
        "{stdout}"
    );
    let work = tempfile::tempdir().unwrap();
    let written = work.path().join("prod.yaml");
    xtask_ok(
        &clone().dir,
        &[&fill[..], &["--output", written.to_str().unwrap()]].concat(),
    );
    assert_eq!(fs::read_to_string(&written).unwrap(), stdout);
    let validated = run(
        "kubernetes-validate",
        &["--strict", written.to_str().unwrap()],
    );
    assert!(validated.status.success(), "{}", text(&validated));

    for (args, expected) in [
        (
            vec![
                "kubernetes",
                "prod",
                "1.0.0",
                "--registry",
                "https://reg.example",
            ],
            "--registry \"https://reg.example\" is not a registry",
        ),
        (
            vec!["kubernetes", "qa", "1.0.0", "--registry", "reg.example"],
            "invalid value 'qa'",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--dist", dist]);
        let refused = xtask(&clone().dir, &args);
        let message = text(&refused);
        assert_ne!(refused.status.code(), Some(0), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    // A changed file is never printed.
    let copies = tempfile::tempdir().unwrap();
    let copy: PathBuf = copies.path().join("1.0.0");
    copy_release(release, &copy);
    let yaml = copy.join("kubernetes/saulpos-prod.yaml");
    let changed = fs::read_to_string(&yaml)
        .unwrap()
        .replace("maxUnavailable: 0", "maxUnavailable: 3");
    fs::write(&yaml, changed).unwrap();
    let refused = xtask(
        &clone().dir,
        &[
            "kubernetes",
            "prod",
            "1.0.0",
            "--registry",
            "reg.example",
            "--dist",
            copies.path().to_str().unwrap(),
        ],
    );
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("does not match its line in SHA256SUMS") && refused.stdout.is_empty(),
        "{message}"
    );
}
