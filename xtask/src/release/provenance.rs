//! The provenance, `provenance.intoto.json`: an in-toto Statement v1 whose predicate is SLSA
//! provenance v1: what was built (each core file with its SHA-256), from what (the git commit,
//! whether the tree was dirty, Cargo.lock's hash), with what (rustc, the target), by whom (the CI
//! run from the GitHub or GitLab variables, or a local build, never named, so that the same
//! commit gives the same bytes on any machine).

use serde_json::{Value, json};

pub const FILE_NAME: &str = "provenance.intoto.json";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
const BUILD_TYPE: &str = "urn:saulpos:build-type:cargo-xtask-package:v1";

/// What the statement records of the build.
pub struct Build<'a> {
    pub version: &'a str,
    pub git_commit: &'a str,
    pub git_dirty: bool,
    pub rustc: &'a str,
    pub target: &'a str,
    pub source_date: &'a str,
    pub cargo_lock_sha256: &'a str,
    /// `(file name, sha256)` of every subject.
    pub subjects: Vec<(String, String)>,
}

/// The builder and the run, from the CI's variables: (builder id, invocation id).
fn builder(variable: impl Fn(&str) -> Option<String>) -> (String, Option<String>) {
    if let (Some(server), Some(repository), Some(run)) = (
        variable("GITHUB_SERVER_URL"),
        variable("GITHUB_REPOSITORY"),
        variable("GITHUB_RUN_ID"),
    ) {
        let attempt = variable("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_owned());
        let id = match variable("GITHUB_WORKFLOW_REF") {
            Some(workflow) => format!("{server}/{workflow}"),
            None => format!("{server}/{repository}/.github/workflows"),
        };
        return (
            id,
            Some(format!(
                "{server}/{repository}/actions/runs/{run}/attempts/{attempt}"
            )),
        );
    }
    if let Some(job) = variable("CI_JOB_URL") {
        let id = match (variable("CI_SERVER_URL"), variable("CI_PROJECT_PATH")) {
            (Some(server), Some(project)) => {
                format!("{server}/{project}/-/blob/HEAD/.gitlab-ci.yml")
            }
            _ => "https://gitlab.com/.gitlab-ci.yml".to_owned(),
        };
        return (id, Some(job));
    }
    ("urn:saulpos:builder:local-cargo-xtask".to_owned(), None)
}

/// The statement's JSON text, the builder taken from this process's environment.
pub fn statement(build: &Build) -> String {
    statement_with(build, |name| {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    })
}

fn statement_with(build: &Build, variable: impl Fn(&str) -> Option<String>) -> String {
    let (builder_id, invocation) = builder(variable);
    let mut metadata = json!({});
    if let Some(invocation) = invocation {
        metadata["invocationId"] = Value::String(invocation);
    }
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": build.subjects.iter().map(|(name, digest)| json!({
            "name": name,
            "digest": { "sha256": digest },
        })).collect::<Vec<_>>(),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "command": format!("cargo xtask package {}", build.version),
                    "version": build.version,
                    "source": {
                        "digest": { "gitCommit": build.git_commit },
                        "dirty": build.git_dirty,
                    },
                },
                "internalParameters": {
                    "rustc": build.rustc,
                    "target": build.target,
                    "profile": "release",
                    "sourceDate": build.source_date,
                },
                "resolvedDependencies": [
                    {
                        "name": "source",
                        "digest": { "gitCommit": build.git_commit },
                        "annotations": { "dirty": build.git_dirty },
                    },
                    {
                        "name": "Cargo.lock",
                        "digest": { "sha256": build.cargo_lock_sha256 },
                    },
                ],
            },
            "runDetails": {
                "builder": { "id": builder_id },
                "metadata": metadata,
            },
        },
    });
    let mut text = serde_json::to_string_pretty(&statement).expect("JSON of plain values");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_is_the_ci_run_when_there_is_one_and_no_machine_otherwise() {
        let build = Build {
            version: "2.0.0",
            git_commit: "abc",
            git_dirty: false,
            rustc: "rustc 1.95.0",
            target: "x86_64-unknown-linux-gnu",
            source_date: "2026-01-01T00:00:00Z",
            cargo_lock_sha256: "11",
            subjects: vec![("a.tar.gz".to_owned(), "22".to_owned())],
        };
        let local = statement_with(&build, |_| None);
        assert!(
            local.contains("urn:saulpos:builder:local-cargo-xtask"),
            "{local}"
        );
        assert!(!local.contains("invocationId"));
        let github = statement_with(&build, |name| {
            match name {
                "GITHUB_SERVER_URL" => Some("https://github.com"),
                "GITHUB_REPOSITORY" => Some("o/r"),
                "GITHUB_RUN_ID" => Some("7"),
                _ => None,
            }
            .map(str::to_owned)
        });
        assert!(
            github
                .contains("\"invocationId\": \"https://github.com/o/r/actions/runs/7/attempts/1\""),
            "{github}"
        );
        let gitlab = statement_with(&build, |name| {
            (name == "CI_JOB_URL").then(|| "https://gitlab.example/o/r/-/jobs/9".to_owned())
        });
        assert!(gitlab.contains("/-/jobs/9"), "{gitlab}");
        let parsed: Value = serde_json::from_str(&local).unwrap();
        assert_eq!(parsed["subject"][0]["digest"]["sha256"], "22");
        assert_eq!(parsed["predicateType"], PREDICATE_TYPE);
    }
}
