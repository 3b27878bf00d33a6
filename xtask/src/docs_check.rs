//! The docs and the CI files cannot drift from the CLI: every `cargo xtask ...` command in them
//! must parse against the real command line, and every subcommand must appear in a runbook.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};

use crate::flags::Xtask;
use crate::project_root;

/// The `cargo xtask` commands written in `text`, each with its line number and its words.
fn commands_in(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let mut joined = String::new();
    let mut first_line = 0;
    for (number, line) in text.lines().enumerate() {
        if joined.is_empty() {
            first_line = number + 1;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            joined.push_str(continued);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let mut rest = joined.as_str();
        while let Some(at) = rest.find("cargo xtask") {
            let inline = rest[..at].matches('`').count() % 2 == 1;
            let after = &rest[at + "cargo xtask".len()..];
            let end = if inline {
                after.find('`').unwrap_or(after.len())
            } else {
                ["  #", " #", "&&", "||", ";", " | ", " > ", "`"]
                    .iter()
                    .filter_map(|stop| after.find(stop))
                    .min()
                    .unwrap_or(after.len())
            };
            found.push((first_line, split_words(&after[..end])));
            rest = &after[end..];
        }
        joined.clear();
    }
    found
}

/// Splits like a shell: spaces separate words, quotes group them.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(open), c) if c == open => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    // Placeholders stand for values: a port must still be a number.
    words
        .into_iter()
        .map(|word| {
            if word == "<port>" {
                "5432".to_owned()
            } else {
                word
            }
        })
        .collect()
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// Every file whose commands are checked: README, docs/, the CI workflows.
fn checked_files() -> Vec<PathBuf> {
    let root = project_root();
    let mut files = vec![root.join("README.md"), root.join(".gitlab-ci.yml")];
    files_under(&root.join("docs"), &mut files);
    files_under(&root.join(".github/workflows"), &mut files);
    files.sort();
    files
}

#[test]
fn every_documented_command_parses_against_the_real_cli() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in checked_files() {
        let text =
            fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for (line, words) in commands_in(&text) {
            checked += 1;
            // Prose names the tool (`cargo xtask`, `cargo xtask ...`) or a subcommand alone.
            if words.is_empty() || words == ["..."] {
                continue;
            }
            if words.len() == 1 && !words[0].starts_with('-') {
                if Xtask::command().find_subcommand(&words[0]).is_none() {
                    problems.push(format!(
                        "{}:{line}: no subcommand {:?}",
                        file.display(),
                        words[0]
                    ));
                }
                continue;
            }
            let args = std::iter::once("cargo xtask".to_owned()).chain(words.clone());
            if let Err(error) = Xtask::try_parse_from(args) {
                use clap::error::ErrorKind;
                if !matches!(
                    error.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) {
                    problems.push(format!(
                        "{}:{line}: `cargo xtask {}`: {}",
                        file.display(),
                        words.join(" "),
                        error.render().to_string().lines().next().unwrap_or("")
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} commands found; is the extraction broken?"
    );
    assert!(
        problems.is_empty(),
        "commands that no longer parse:\n{}",
        problems.join("\n")
    );
}

/// The `--flags` written after `script` (e.g. `install.sh`) in `text`, with their line numbers.
fn script_flags_in(text: &str, script: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(script) {
            let after = &rest[at + script.len()..];
            let end = ["`", "&&", "||", ";", "|", "#", ")"]
                .iter()
                .filter_map(|stop| after.find(stop))
                .min()
                .unwrap_or(after.len());
            for word in split_words(&after[..end]) {
                if let Some(flag) = word.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap_or_default();
                    found.push((number + 1, format!("--{flag}")));
                }
            }
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_documented_flag_of_the_payload_scripts_is_one_they_take() {
    let shipped = crate::release::payload_files::generated("prod", "2.0.0", "a.tar.gz");
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in checked_files() {
        let text = fs::read_to_string(&file).unwrap();
        for script in ["install.sh", "rollback.sh", "run.sh"] {
            let source = shipped
                .iter()
                .find(|payload_file| payload_file.name == script)
                .map(|payload_file| String::from_utf8_lossy(&payload_file.contents).into_owned())
                .unwrap();
            // The usage text, between `cat <<EOF` (or 'USAGE') and its end.
            let usage = source
                .split("usage() {")
                .nth(1)
                .and_then(|rest| rest.split("\n}\n").next())
                .unwrap_or_else(|| panic!("{script} has no usage()"));
            for (line, flag) in script_flags_in(&text, script) {
                checked += 1;
                if !usage.contains(&flag) {
                    problems.push(format!(
                        "{}:{line}: {script} takes no {flag}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked >= 3,
        "only {checked} script flags found; is the extraction broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_subcommand_appears_in_a_runbook() {
    let mut runbooks = Vec::new();
    files_under(&project_root().join("docs/runbooks"), &mut runbooks);
    let used: Vec<String> = runbooks
        .iter()
        .flat_map(|file| commands_in(&fs::read_to_string(file).unwrap()))
        .filter_map(|(_, words)| words.first().cloned())
        .collect();
    // Hidden ones are internal: `restore-guard` is started by `restore`, never by a person.
    let missing: Vec<String> = Xtask::command()
        .get_subcommands()
        .filter(|command| !command.is_hide_set())
        .map(|command| command.get_name().to_owned())
        .filter(|name| !used.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "subcommands no runbook shows: {missing:?}"
    );
}

#[test]
fn the_ci_workflows_run_the_release_commands() {
    let root = project_root();
    for (file, expected) in [
        (
            ".github/workflows/release.yml",
            ["verify-tag", "package", "verify"].as_slice(),
        ),
        (
            ".gitlab-ci.yml",
            ["verify-tag", "package", "verify"].as_slice(),
        ),
    ] {
        let text = fs::read_to_string(root.join(file)).unwrap();
        let used: Vec<String> = commands_in(&text)
            .into_iter()
            .filter_map(|(_, words)| words.first().cloned())
            .collect();
        for command in expected {
            assert!(
                used.iter().any(|used| used == command),
                "{file} does not run `cargo xtask {command}`"
            );
        }
    }
    let ci = fs::read_to_string(root.join(".github/workflows/ci.yml")).unwrap();
    assert!(
        ci.contains("cargo test --workspace --locked"),
        "ci.yml must run the README's test command"
    );
}

#[test]
fn commands_are_found_inline_in_blocks_and_across_continuations() {
    let text = "Run `cargo xtask verify 2.0.0` first.\n\
                cargo xtask restore h 5432 db u \\\n  a.dump a.dump.sha256  # comment\n\
                x && cargo xtask health --url \"http://x:1\" | tee";
    let found = commands_in(text);
    assert_eq!(found[0], (1, vec!["verify".to_owned(), "2.0.0".to_owned()]));
    assert_eq!(
        found[1].1,
        ["restore", "h", "5432", "db", "u", "a.dump", "a.dump.sha256"]
    );
    assert_eq!(found[2].1, ["health", "--url", "http://x:1"]);
}
