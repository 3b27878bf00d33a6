//! The OCI image `saulpos-server-<version>-oci.tar`: an OCI image layout in a tar, built without
//! a daemon from the release binary, its profiles, and the host's shared libraries it loads.
//!
//! One gzip layer, byte for byte reproducible: entries sorted, one timestamp (the source date),
//! owners numeric, and JSON with sorted keys. `podman load`, `skopeo copy oci-archive:...` and
//! `docker load` read it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tar::{EntryType, Header};

use crate::release::archive::Entry;
use crate::release::checksum;
use crate::release::gzip;

/// The user the server runs as inside the image (as distroless images do).
pub const USER: u32 = 65532;
/// The port the image declares; the server's default.
pub const PORT: u16 = 8080;
/// Where the release's `bin/` and `config/` go inside the image.
pub const APP: &str = "app";
/// The layer's gzip level: the layer is mostly the binary, and level 9 is 1 % smaller than 7
/// for 0.1 s more (`cargo xtask bench package`).
const LEVEL: u32 = 9;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn file_name(version: &str) -> String {
    format!("saulpos-server-{version}-oci.tar")
}

/// The name the image carries in its layout (`org.opencontainers.image.ref.name`).
pub fn ref_name(version: &str) -> String {
    format!("saulpos-server:{version}")
}

/// A file of the host the binary needs at run time, and the Debian package that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFile {
    /// The absolute path the binary asks for (as `ldd` names it), also its path in the image.
    pub path: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// `(package, version, architecture)` from dpkg; `None` on a host without dpkg.
    pub package: Option<(String, String, String)>,
}

/// The shared libraries and the loader `binary` needs, read from this host, with their Debian
/// packages.
pub fn runtime_files(binary: &Path) -> anyhow::Result<Vec<RuntimeFile>> {
    let output = Command::new("ldd").arg(binary).output().context(
        "cannot run ldd to find the shared libraries the server needs; install libc-bin",
    )?;
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let paths = ldd_paths(&String::from_utf8_lossy(&output.stdout));
    let packages = debian_packages(&paths);
    let mut files = Vec::new();
    for path in paths {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {path}"))?;
        files.push(RuntimeFile {
            sha256: checksum::sha256_hex(&bytes),
            package: packages.get(&path).cloned(),
            path,
            bytes,
        });
    }
    Ok(files)
}

/// The absolute paths in `ldd` output, sorted: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and
/// the loader's own line; the kernel's vDSO has no file.
fn ldd_paths(text: &str) -> Vec<String> {
    let mut paths: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.split_once("=>").map_or(line, |(_, rest)| rest.trim());
            let path = rest.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Which Debian package (name, version, architecture) holds each path, from dpkg's database.
fn debian_packages(paths: &[String]) -> BTreeMap<String, (String, String, String)> {
    let mut found = BTreeMap::new();
    let Ok(output) = Command::new("dpkg-query").arg("-S").args(paths).output() else {
        return found;
    };
    // `libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6`
    let owners: Vec<(String, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (package, path) = line.split_once(": ")?;
            Some((path.trim().to_owned(), package.trim().to_owned()))
        })
        .collect();
    for (path, package) in owners {
        let Ok(shown) = Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${Version} ${Architecture}"])
            .arg(&package)
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        if let [name, version, arch] = text.split_whitespace().collect::<Vec<_>>()[..] {
            found.insert(path, (name.to_owned(), version.to_owned(), arch.to_owned()));
        }
    }
    found
}

/// What the image is made from and says about itself.
pub struct Recipe<'a> {
    pub version: &'a str,
    pub revision: &'a str,
    /// RFC 3339: the source date.
    pub created: &'a str,
    /// Unix seconds: every entry's timestamp.
    pub source_date: i64,
    /// Where the source lives (the git remote), when known.
    pub source: Option<&'a str>,
    pub licenses: &'a str,
    /// The Rust target triple the binary was built for.
    pub target: &'a str,
    /// The release archive's entries under `saulpos-server-<version>/`: `bin/` and `config/`
    /// land in `/app`.
    pub release: &'a [Entry],
    pub runtime: &'a [RuntimeFile],
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub name: String,
    /// The OCI tar's size and SHA-256.
    pub size: u64,
    pub sha256: String,
    /// The image manifest's digest, `sha256:...`: what registries and Kubernetes name it by.
    pub digest: String,
    /// The compressed layer's size.
    pub layer_size: u64,
}

/// Writes the OCI tar into `folder`; returns its facts.
pub fn write(folder: &Path, recipe: &Recipe) -> anyhow::Result<ImageFacts> {
    let architecture = oci_architecture(recipe.target)?;
    let layer_tar = layer(recipe)?;
    let diff_id = format!("sha256:{}", checksum::sha256_hex(&layer_tar));
    let mut layer = Vec::new();
    gzip::compress(&layer_tar, LEVEL, &mut layer)?;
    let layer_digest = format!("sha256:{}", checksum::sha256_hex(&layer));

    let annotations = annotations(recipe);
    let config = json!({
        "created": recipe.created,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "User": format!("{USER}:{USER}"),
            "Entrypoint": [format!("/{APP}/bin/saulpos-server")],
            "Env": ["PATH=/app/bin"],
            "WorkingDir": format!("/{APP}"),
            "ExposedPorts": { format!("{PORT}/tcp"): {} },
            "StopSignal": "SIGTERM",
            "Labels": annotations,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": recipe.created,
            "created_by": format!("cargo xtask package {}", recipe.version),
        }],
    });
    let config = bytes_of(&config);
    let config_digest = format!("sha256:{}", checksum::sha256_hex(&config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer.len() }],
        "annotations": annotations,
    });
    let manifest = bytes_of(&manifest);
    let digest = format!("sha256:{}", checksum::sha256_hex(&manifest));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": digest,
            "size": manifest.len(),
            "platform": { "architecture": architecture, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": ref_name(recipe.version) },
        }],
    });

    let mut entries: Vec<(String, u32, Option<Vec<u8>>)> = vec![
        ("blobs".to_owned(), 0o755, None),
        ("blobs/sha256".to_owned(), 0o755, None),
        (
            "oci-layout".to_owned(),
            0o644,
            Some(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        ("index.json".to_owned(), 0o644, Some(bytes_of(&index))),
    ];
    let layer_size = layer.len() as u64;
    for (blob_digest, bytes) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&digest, manifest),
    ] {
        let hex = blob_digest.trim_start_matches("sha256:");
        entries.push((format!("blobs/sha256/{hex}"), 0o644, Some(bytes)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let name = file_name(recipe.version);
    let path = folder.join(&name);
    let (sha256, size) = checksum::write_hashed_file(&path, |writer| {
        let mut builder = tar::Builder::new(writer);
        for (entry_path, mode, contents) in &entries {
            append(
                &mut builder,
                entry_path,
                *mode,
                0,
                recipe.source_date,
                contents.as_deref(),
            )?;
        }
        builder.finish()
    })?;
    Ok(ImageFacts {
        name,
        size,
        sha256,
        digest,
        layer_size,
    })
}

/// The `org.opencontainers.image.*` annotations, also the config's labels.
fn annotations(recipe: &Recipe) -> Value {
    let mut annotations = json!({
        "org.opencontainers.image.title": "saulpos-server",
        "org.opencontainers.image.description": "The SaulPOS server",
        "org.opencontainers.image.version": recipe.version,
        "org.opencontainers.image.revision": recipe.revision,
        "org.opencontainers.image.created": recipe.created,
        "org.opencontainers.image.licenses": recipe.licenses,
    });
    if let Some(source) = recipe.source {
        annotations["org.opencontainers.image.source"] = json!(source);
    }
    annotations
}

/// The layer's uncompressed tar: `/app/bin/saulpos-server`, `/app/config/`, the runtime
/// files at their paths, `/etc/passwd` and `/etc/group` naming the user, its home and `/tmp`.
fn layer(recipe: &Recipe) -> anyhow::Result<Vec<u8>> {
    // path -> (mode, uid, contents)
    let mut files: BTreeMap<String, (u32, u64, Option<Vec<u8>>)> = BTreeMap::new();
    let top = format!("saulpos-server-{}/", recipe.version);
    for entry in recipe.release {
        let Some(relative) = entry.path.strip_prefix(&top) else {
            continue;
        };
        if !(relative.starts_with("bin") || relative.starts_with("config")) {
            continue;
        }
        files.insert(
            format!("{APP}/{relative}"),
            (entry.mode, 0, entry.contents.clone()),
        );
    }
    for file in recipe.runtime {
        files.insert(
            file.path.trim_start_matches('/').to_owned(),
            (0o755, 0, Some(file.bytes.clone())),
        );
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{USER}:\n");
    files.insert(
        "etc/passwd".to_owned(),
        (0o644, 0, Some(passwd.into_bytes())),
    );
    files.insert("etc/group".to_owned(), (0o644, 0, Some(group.into_bytes())));
    files.insert("home/nonroot".to_owned(), (0o700, USER as u64, None));
    files.insert("tmp".to_owned(), (0o1777, 0, None));
    // Every parent folder, so that the layer stands alone.
    let parents: Vec<String> = files
        .keys()
        .flat_map(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len())
                .map(|count| parts[..count].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    for parent in parents {
        files.entry(parent).or_insert((0o755, 0, None));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, (mode, uid, contents)) in &files {
        append(
            &mut builder,
            path,
            *mode,
            *uid,
            recipe.source_date,
            contents.as_deref(),
        )?;
    }
    Ok(builder.into_inner()?)
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    owner: u64,
    mtime: i64,
    contents: Option<&[u8]>,
) -> io::Result<()> {
    let mut header = Header::new_ustar();
    header.set_uid(owner);
    header.set_gid(owner);
    header.set_mtime(mtime.max(0) as u64);
    header.set_mode(mode);
    match contents {
        Some(bytes) => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(bytes.len() as u64);
            builder.append_data(&mut header, path, bytes)
        }
        None => {
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("{path}/"), io::empty())
        }
    }
}

/// Compact JSON with sorted keys: the same value always gives the same bytes.
fn bytes_of(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON of plain values")
}

/// The OCI architecture of a Rust target triple.
fn oci_architecture(target: &str) -> anyhow::Result<&'static str> {
    Ok(match target.split('-').next().unwrap_or_default() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64gc" => "riscv64",
        "powerpc64le" => "ppc64le",
        "s390x" => "s390x",
        other => bail!("no OCI architecture is known for the target {target} ({other})"),
    })
}

/// The git remote the source came from, for `org.opencontainers.image.source`.
pub fn source_url(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .current_dir(root)
        .output()
        .ok()?;
    let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !url.is_empty()).then_some(url)
}

/// The index's manifest digest of an OCI tar in `dist/`, read back from the file.
pub fn read_digest(path: &PathBuf) -> anyhow::Result<String> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a tar", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("{} is damaged", path.display()))?;
        if entry.path_bytes().as_ref() == b"index.json" {
            let index: Value = serde_json::from_reader(&mut entry)
                .with_context(|| format!("{}: index.json is not JSON", path.display()))?;
            return index["manifests"][0]["digest"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{}: index.json names no manifest", path.display()));
        }
    }
    bail!(
        "{} holds no index.json: it is not an OCI image",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files_and_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f5b)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5b)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f5b)\n";
        assert_eq!(
            ldd_paths(text),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn the_same_recipe_gives_the_same_bytes_and_the_layer_holds_every_parent() {
        let release = vec![
            Entry {
                path: "saulpos-server-1.0.0/bin/saulpos-server".to_owned(),
                mode: 0o755,
                contents: Some(b"binary".to_vec()),
            },
            Entry {
                path: "saulpos-server-1.0.0/README.md".to_owned(),
                mode: 0o644,
                contents: Some(b"readme".to_vec()),
            },
        ];
        let recipe = Recipe {
            version: "1.0.0",
            revision: "abc",
            created: "2026-01-01T00:00:00Z",
            source_date: 1_767_225_600,
            source: None,
            licenses: "Apache-2.0",
            target: "x86_64-unknown-linux-gnu",
            release: &release,
            runtime: &[],
        };
        let dir = std::env::temp_dir().join(format!("xtask-image-test-{}", std::process::id()));
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::create_dir_all(dir.join("b")).unwrap();
        let first = write(&dir.join("a"), &recipe).unwrap();
        let second = write(&dir.join("b"), &recipe).unwrap();
        assert_eq!(first, second);
        let digest = read_digest(&dir.join("a").join(&first.name)).unwrap();
        assert_eq!(digest, first.digest);
        let layer = layer(&recipe).unwrap();
        let mut names = Vec::new();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
        assert_eq!(
            names,
            [
                "app/",
                "app/bin/",
                "app/bin/saulpos-server",
                "etc/",
                "etc/group",
                "etc/passwd",
                "home/",
                "home/nonroot/",
                "tmp/"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
