//! The release manifest: the same facts as `manifest.txt` (readable `key: value` lines) and
//! `manifest.json` (for machines). docs/manifest.md documents every field.

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub const TEXT_NAME: &str = "manifest.txt";
pub const JSON_NAME: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub git_commit: String,
    pub git_dirty: bool,
    /// When the package was made (RFC 3339, UTC).
    pub build_time: String,
    /// The source's date (commit time or SOURCE_DATE_EPOCH): the archive's timestamps and the
    /// build time embedded in the binary.
    pub source_date: String,
    pub rustc: String,
    pub target: String,
    pub profile: String,
    pub archive: ArchiveFacts,
    pub files: Vec<FileFacts>,
    /// The OCI image built from the same binary; `None` for releases made before it.
    pub image: Option<ImageFacts>,
}

/// The OCI image: its tar in `dist/`, the digest registries name it by, and the files it holds
/// beside the release's own, with the Debian package each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub digest: String,
    pub files: Vec<ImageFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `<package> <version> <architecture>` as dpkg knows it; `None` when dpkg does not.
    pub package: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFacts {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One entry inside the archive. Folders have no size or SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub path: String,
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub sha256: Option<String>,
}

impl Manifest {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "build_time": self.build_time,
            "source_date": self.source_date,
            "rustc": self.rustc,
            "target": self.target,
            "profile": self.profile,
            "archive": {
                "name": self.archive.name,
                "size": self.archive.size,
                "sha256": self.archive.sha256,
            },
            "files": self.files.iter().map(|file| json!({
                "path": file.path,
                "kind": file.kind,
                "size": file.size,
                "mode": format!("{:04o}", file.mode),
                "sha256": file.sha256,
            })).collect::<Vec<_>>(),
            "image": self.image.as_ref().map(|image| json!({
                "name": image.name,
                "size": image.size,
                "sha256": image.sha256,
                "digest": image.digest,
                "files": image.files.iter().map(|file| json!({
                    "path": file.path,
                    "size": file.size,
                    "sha256": file.sha256,
                    "package": file.package,
                })).collect::<Vec<_>>(),
            })),
        })
    }

    pub fn to_json_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_json()).expect("JSON of plain values");
        text.push('\n');
        text
    }

    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            text.push_str(&format!("{key}: {value}\n"));
        };
        line("name", &self.name);
        line("version", &self.version);
        line("git_commit", &self.git_commit);
        line("git_dirty", &self.git_dirty);
        line("build_time", &self.build_time);
        line("source_date", &self.source_date);
        line("rustc", &self.rustc);
        line("target", &self.target);
        line("profile", &self.profile);
        line("archive", &self.archive.name);
        line("archive_size", &self.archive.size);
        line("archive_sha256", &self.archive.sha256);
        for file in &self.files {
            let value = match &file.sha256 {
                Some(digest) => format!(
                    "{} {} size={} mode={:04o} sha256={digest}",
                    file.path, file.kind, file.size, file.mode
                ),
                None => format!("{} {} mode={:04o}", file.path, file.kind, file.mode),
            };
            line("file", &value);
        }
        if let Some(image) = &self.image {
            line("image", &image.name);
            line("image_size", &image.size);
            line("image_sha256", &image.sha256);
            line("image_digest", &image.digest);
            for file in &image.files {
                line(
                    "image_file",
                    &format!(
                        "{} size={} sha256={} package={}",
                        file.path,
                        file.size,
                        file.sha256,
                        file.package
                            .as_deref()
                            .unwrap_or("unknown")
                            .replace(" ", "_")
                    ),
                );
            }
        }
        text
    }

    pub fn from_json(text: &str) -> anyhow::Result<Manifest> {
        let value: Value = serde_json::from_str(text).context("manifest.json is not valid JSON")?;
        let string = |value: &Value, key: &str| -> anyhow::Result<String> {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("manifest.json has no text field {key:?}"))
        };
        let number = |value: &Value, key: &str| -> anyhow::Result<u64> {
            value
                .get(key)
                .and_then(Value::as_u64)
                .with_context(|| format!("manifest.json has no number field {key:?}"))
        };
        let archive = value
            .get("archive")
            .context("manifest.json has no \"archive\"")?;
        let mut files = Vec::new();
        for file in value
            .get("files")
            .and_then(Value::as_array)
            .context("manifest.json has no \"files\" list")?
        {
            let mode_text = string(file, "mode")?;
            let Ok(mode) = u32::from_str_radix(&mode_text, 8) else {
                bail!("manifest.json has mode {mode_text:?}, which is not octal");
            };
            files.push(FileFacts {
                path: string(file, "path")?,
                kind: string(file, "kind")?,
                size: number(file, "size")?,
                mode,
                sha256: file
                    .get("sha256")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        Ok(Manifest {
            name: string(&value, "name")?,
            version: string(&value, "version")?,
            git_commit: string(&value, "git_commit")?,
            git_dirty: value
                .get("git_dirty")
                .and_then(Value::as_bool)
                .context("manifest.json has no true/false field \"git_dirty\"")?,
            build_time: string(&value, "build_time")?,
            source_date: string(&value, "source_date")?,
            rustc: string(&value, "rustc")?,
            target: string(&value, "target")?,
            profile: string(&value, "profile")?,
            archive: ArchiveFacts {
                name: string(archive, "name")?,
                size: number(archive, "size")?,
                sha256: string(archive, "sha256")?,
            },
            files,
            image: match value.get("image") {
                None | Some(Value::Null) => None,
                Some(image) => {
                    let mut files = Vec::new();
                    for file in image
                        .get("files")
                        .and_then(Value::as_array)
                        .context("manifest.json's image has no \"files\" list")?
                    {
                        files.push(ImageFile {
                            path: string(file, "path")?,
                            size: number(file, "size")?,
                            sha256: string(file, "sha256")?,
                            package: file
                                .get("package")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        });
                    }
                    Some(ImageFacts {
                        name: string(image, "name")?,
                        size: number(image, "size")?,
                        sha256: string(image, "sha256")?,
                        digest: string(image, "digest")?,
                        files,
                    })
                }
            },
        })
    }
}
