//! The SBOM, `saulpos-server-<version>.cdx.json`: a CycloneDX 1.5 JSON bill of the crates
//! compiled into the server binary for its target, from `cargo metadata` (locked) and
//! the checksums in Cargo.lock. Deterministic: no serial number, the source date as its time.
//!
//! What counts: saulpos-server's normal dependencies, transitively, for the target. Build
//! dependencies and proc-macros run at compile time and are not linked, so they are left out
//! with everything only they pull in; dev-dependencies never reach a release. `cargo metadata`
//! unifies features across the workspace, so a crate another member enables may show up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::release::image::RuntimeFile;

pub fn file_name(version: &str) -> String {
    format!("saulpos-server-{version}.cdx.json")
}

/// One crate in the bill.
#[derive(Debug, PartialEq, Eq)]
struct Crate {
    name: String,
    version: String,
    license: Option<String>,
    /// The SHA-256 Cargo.lock records for a crate from a registry.
    sha256: Option<String>,
    depends_on: BTreeSet<String>,
}

impl Crate {
    fn purl(&self) -> String {
        format!("pkg:cargo/{}@{}", self.name, self.version)
    }
}

/// `cargo metadata` for `target`, started in the background: it runs while the server builds.
pub struct Metadata {
    child: Child,
    workspace: PathBuf,
}

impl Metadata {
    pub fn start(workspace: &Path, target: &str) -> anyhow::Result<Metadata> {
        let child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", target, "--manifest-path"])
            .arg(workspace.join("Cargo.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run cargo metadata for the SBOM")?;
        Ok(Metadata {
            child,
            workspace: workspace.to_owned(),
        })
    }

    /// Waits for `cargo metadata` and writes the SBOM's JSON text from it and Cargo.lock.
    pub fn sbom(
        self,
        version: &str,
        archive_sha256: &str,
        source_date: &str,
        runtime: &[RuntimeFile],
    ) -> anyhow::Result<String> {
        let output = self.child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed, so no SBOM can be written: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let metadata: Value =
            serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
        let lock_path = self.workspace.join("Cargo.lock");
        let lock = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("cannot read {}", lock_path.display()))?;
        let crates = compiled_in(&metadata, &lock_checksums(&lock))?;
        Ok(document(
            version,
            &crates,
            archive_sha256,
            source_date,
            runtime,
        ))
    }
}

/// `(name, version) -> sha256` from Cargo.lock's `[[package]]` entries.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    let (mut name, mut version) = (String::new(), String::new());
    let quoted = |line: &str, key: &str| {
        line.strip_prefix(key).map(|rest| {
            rest.trim()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"')
                .to_owned()
        })
    };
    for line in lock.lines() {
        if line == "[[package]]" {
            name.clear();
            version.clear();
        } else if let Some(value) = quoted(line, "name ") {
            name = value;
        } else if let Some(value) = quoted(line, "version ") {
            version = value;
        } else if let Some(value) = quoted(line, "checksum ") {
            found.insert((name.clone(), version.clone()), value);
        }
    }
    found
}

/// The crates linked into saulpos-server: its normal dependencies, transitively, without
/// proc-macros and build-only crates. The server itself is the first.
fn compiled_in(
    metadata: &Value,
    checksums: &BTreeMap<(String, String), String>,
) -> anyhow::Result<Vec<Crate>> {
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?
        .iter()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata has no resolve graph")?
        .iter()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let Some(root) = packages
        .values()
        .find(|package| package["name"] == "saulpos-server")
        .and_then(|package| package["id"].as_str())
    else {
        bail!("cargo metadata does not list saulpos-server");
    };
    let is_proc_macro = |id: &str| {
        packages[id]["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|target| {
                target["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|kind| kind == "proc-macro"))
            })
        })
    };
    let mut crates: BTreeMap<&str, Crate> = BTreeMap::new();
    let mut pending = vec![root];
    while let Some(id) = pending.pop() {
        if crates.contains_key(id) {
            continue;
        }
        let package = packages[id];
        let mut depends_on = BTreeSet::new();
        for dependency in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dependency["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null()));
            let Some(dependency_id) = dependency["pkg"].as_str() else {
                continue;
            };
            if !normal || is_proc_macro(dependency_id) {
                continue;
            }
            let dependency_package = packages[dependency_id];
            depends_on.insert(format!(
                "pkg:cargo/{}@{}",
                dependency_package["name"].as_str().unwrap_or_default(),
                dependency_package["version"].as_str().unwrap_or_default()
            ));
            pending.push(dependency_id);
        }
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        let version = package["version"].as_str().unwrap_or_default().to_owned();
        crates.insert(
            id,
            Crate {
                sha256: checksums.get(&(name.clone(), version.clone())).cloned(),
                license: package["license"]
                    .as_str()
                    .map(|license| license.replace('/', " OR ")),
                name,
                version,
                depends_on,
            },
        );
    }
    let server = crates.remove(root).expect("the root was visited");
    let mut ordered: Vec<Crate> = crates.into_values().collect();
    ordered.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    ordered.insert(0, server);
    Ok(ordered)
}

/// The image's files that are not ours, one component per Debian package (`pkg:deb`), each
/// naming its files; a file dpkg does not know is a `file` component with its hash.
fn image_components(runtime: &[RuntimeFile]) -> Vec<Value> {
    let mut packages: BTreeMap<(String, String, String), Vec<&str>> = BTreeMap::new();
    let mut components = Vec::new();
    for file in runtime {
        match &file.package {
            Some(package) => packages
                .entry(package.clone())
                .or_default()
                .push(file.path.as_str()),
            None => components.push(json!({
                "type": "file",
                "bom-ref": format!("file:{}", file.path),
                "name": file.path,
                "description": "In the OCI image only, copied from the build host",
                "hashes": [{ "alg": "SHA-256", "content": file.sha256 }],
            })),
        }
    }
    for ((name, version, arch), paths) in packages {
        let purl = format!(
            "pkg:deb/debian/{name}@{}?arch={arch}",
            version
                .replace('%', "%25")
                .replace('+', "%2B")
                .replace(':', "%3A")
        );
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
            "scope": "required",
            "description": "In the OCI image only: the build host's Debian package",
            "properties": paths.iter().map(|path| json!({ "name": "saulpos:image:file", "value": path })).collect::<Vec<_>>(),
        }));
    }
    components
}

fn document(
    version: &str,
    crates: &[Crate],
    archive_sha256: &str,
    source_date: &str,
    runtime: &[RuntimeFile],
) -> String {
    let license = |item: &Crate| match &item.license {
        Some(expression) => json!([{ "expression": expression }]),
        None => json!([]),
    };
    let server = &crates[0];
    let server_ref = format!("pkg:cargo/saulpos-server@{version}");
    let mut components: Vec<Value> = crates[1..]
        .iter()
        .map(|item| {
            let mut component = json!({
                "type": "library",
                "bom-ref": item.purl(),
                "name": item.name,
                "version": item.version,
                "purl": item.purl(),
                "scope": "required",
            });
            if let Some(digest) = &item.sha256 {
                component["hashes"] = json!([{ "alg": "SHA-256", "content": digest }]);
            }
            if item.license.is_some() {
                component["licenses"] = license(item);
            }
            component
        })
        .collect();
    components.extend(image_components(runtime));
    let mut dependencies = vec![json!({
        "ref": server_ref,
        "dependsOn": server.depends_on,
    })];
    for item in &crates[1..] {
        dependencies.push(json!({ "ref": item.purl(), "dependsOn": item.depends_on }));
    }
    let bom = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": source_date,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "cargo xtask package",
                    "description": "SaulPOS release tasks: the SBOM from cargo metadata and Cargo.lock",
                }],
            },
            "component": {
                "type": "application",
                "bom-ref": server_ref,
                "name": "saulpos-server",
                "version": version,
                "purl": server_ref,
                "description": "The SaulPOS server, as released in its archive (the hash is the archive's)",
                "hashes": [{ "alg": "SHA-256", "content": archive_sha256 }],
                "licenses": license(server),
            },
        },
        "components": components,
        "dependencies": dependencies,
    });
    let mut text = serde_json::to_string_pretty(&bom).expect("JSON of plain values");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_dependencies_that_are_linked_are_listed_with_their_lock_checksum() {
        let metadata = json!({
            "packages": [
                {"id": "s", "name": "saulpos-server", "version": "2.0.0", "license": "Apache-2.0", "targets": [{"kind": ["bin"]}]},
                {"id": "a", "name": "alpha", "version": "1.0.0", "license": "MIT/Apache-2.0", "targets": [{"kind": ["lib"]}]},
                {"id": "m", "name": "macros", "version": "0.1.0", "license": "MIT", "targets": [{"kind": ["proc-macro"]}]},
                {"id": "b", "name": "builder", "version": "0.2.0", "license": "MIT", "targets": [{"kind": ["lib"]}]},
                {"id": "h", "name": "helper", "version": "3.0.0", "license": null, "targets": [{"kind": ["lib"]}]}
            ],
            "resolve": {"nodes": [
                {"id": "s", "deps": [
                    {"pkg": "a", "dep_kinds": [{"kind": null}]},
                    {"pkg": "m", "dep_kinds": [{"kind": null}]},
                    {"pkg": "b", "dep_kinds": [{"kind": "build"}]}
                ]},
                {"id": "a", "deps": [{"pkg": "h", "dep_kinds": [{"kind": null}]}]},
                {"id": "m", "deps": [{"pkg": "h", "dep_kinds": [{"kind": null}]}]},
                {"id": "b", "deps": []},
                {"id": "h", "deps": []}
            ]}
        });
        let lock = "[[package]]\nname = \"alpha\"\nversion = \"1.0.0\"\nsource = \"registry\"\nchecksum = \"aa\"\n\n[[package]]\nname = \"helper\"\nversion = \"3.0.0\"\nchecksum = \"hh\"\n";
        let crates = compiled_in(&metadata, &lock_checksums(lock)).unwrap();
        let names: Vec<&str> = crates.iter().map(|item| item.name.as_str()).collect();
        assert_eq!(names, ["saulpos-server", "alpha", "helper"]);
        assert_eq!(crates[1].sha256.as_deref(), Some("aa"));
        assert_eq!(crates[1].license.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(
            crates[0].depends_on.iter().collect::<Vec<_>>(),
            ["pkg:cargo/alpha@1.0.0"]
        );
        let text = document("2.0.0", &crates, "ff", "2026-01-01T00:00:00Z", &[]);
        assert_eq!(
            text,
            document("2.0.0", &crates, "ff", "2026-01-01T00:00:00Z", &[])
        );
        assert!(!text.contains("serialNumber"));
        assert!(text.contains("\"pkg:cargo/helper@3.0.0\""));
    }
}
