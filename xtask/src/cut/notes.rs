//! Release notes from Conventional Commits: the subjects since the last release tag grouped
//! (breaking changes first, then features, fixes, performance, security, and the rest), the
//! migrations the release adds, and the range; and the section they make at the top of
//! `CHANGELOG.md` (Keep a Changelog).

/// One commit of the range.
pub struct Commit {
    pub id: String,
    pub subject: String,
    pub body: String,
}

/// What a commit's subject says, read as a Conventional Commit.
#[derive(Debug, PartialEq, Eq)]
pub struct Conventional<'a> {
    pub kind: &'a str,
    pub scope: Option<&'a str>,
    pub breaking: bool,
    pub description: &'a str,
}

/// `type(scope)!: description`; `None` for a subject that is not one.
pub fn parse(subject: &str) -> Option<Conventional<'_>> {
    let (head, description) = subject.split_once(": ")?;
    let (head, breaking) = match head.strip_suffix('!') {
        Some(head) => (head, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((kind, rest)) => (kind, Some(rest.strip_suffix(')')?)),
        None => (head, None),
    };
    let word = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !word(kind) || scope.is_some_and(|scope| !word(scope)) || description.trim().is_empty() {
        return None;
    }
    Some(Conventional {
        kind,
        scope,
        breaking,
        description,
    })
}

impl Commit {
    /// Marked as breaking: `!` in the subject or `BREAKING CHANGE:` in the body.
    pub fn breaking(&self) -> bool {
        parse(&self.subject).is_some_and(|parsed| parsed.breaking)
            || self.body.lines().any(|line| {
                line.starts_with("BREAKING CHANGE:") || line.starts_with("BREAKING-CHANGE:")
            })
    }

    /// The line the notes give it: `**scope:** description (abc1234)`.
    fn line(&self) -> String {
        let short = &self.id[..self.id.len().min(7)];
        match parse(&self.subject) {
            Some(parsed) => match parsed.scope {
                Some(scope) => format!("- **{scope}:** {} ({short})", parsed.description),
                None => format!("- {} ({short})", parsed.description),
            },
            None => format!("- {} ({short})", self.subject),
        }
    }
}

/// The groups, in the order the notes give them.
const GROUPS: [&str; 6] = [
    "Breaking changes",
    "Features",
    "Fixes",
    "Performance",
    "Security",
    "Other changes",
];

fn group_of(commit: &Commit) -> usize {
    if commit.breaking() {
        return 0;
    }
    match parse(&commit.subject) {
        Some(parsed) if parsed.kind == "security" || parsed.scope == Some("security") => 4,
        Some(parsed) if parsed.kind == "feat" => 1,
        Some(parsed) if parsed.kind == "fix" => 2,
        Some(parsed) if parsed.kind == "perf" => 3,
        _ => 5,
    }
}

/// What the notes are made of.
pub struct Range<'a> {
    pub version: &'a str,
    /// The commit's date, YYYY-MM-DD.
    pub date: &'a str,
    /// The last release tag, if any.
    pub since: Option<&'a str>,
    /// The last commit released.
    pub head: &'a str,
    /// Newest first, as git log lists them.
    pub commits: &'a [Commit],
    /// The migrations the release adds, by path.
    pub migrations: &'a [String],
}

/// The notes: the CHANGELOG section, the tag's body and RELEASE-NOTES.md, byte for byte.
pub fn render(range: &Range<'_>) -> String {
    let mut text = format!("## [{}] - {}\n\n", range.version, range.date);
    let short = &range.head[..range.head.len().min(7)];
    let count = range.commits.len();
    let plural = if count == 1 { "" } else { "s" };
    match range.since {
        Some(since) => text.push_str(&format!(
            "Changes since {since}: `{since}..{short}`, {count} commit{plural}.\n"
        )),
        None => text.push_str(&format!(
            "The first release: {count} commit{plural} up to `{short}`.\n"
        )),
    }
    if !range.migrations.is_empty() {
        text.push_str(
            "\n### Database migrations\n\nThe first start of this release changes the schema; back the database up before \
             the deploy (staging and prod deploys do):\n\n",
        );
        for migration in range.migrations {
            text.push_str(&format!("- `{migration}`\n"));
        }
    }
    for (index, heading) in GROUPS.iter().enumerate() {
        let lines: Vec<String> = range
            .commits
            .iter()
            .filter(|commit| !commit.subject.starts_with("release: "))
            .filter(|commit| group_of(commit) == index)
            .map(Commit::line)
            .collect();
        if lines.is_empty() {
            continue;
        }
        text.push_str(&format!("\n### {heading}\n\n"));
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

const CHANGELOG_HEADER: &str = "# Changelog\n\nEvery release of the SaulPOS server, newest first. The format follows \
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/); versions follow \
[Semantic Versioning](https://semver.org/). Each section is also the release's tag message and its \
`RELEASE-NOTES.md`.\n\n";

/// `CHANGELOG.md` with `section` as its newest entry (the file made when there is none).
pub fn changelog_with(existing: Option<&str>, section: &str) -> String {
    let existing = existing.unwrap_or(CHANGELOG_HEADER);
    match existing.find("\n## [") {
        Some(at) => format!("{}{section}\n{}", &existing[..at + 1], &existing[at + 1..]),
        None => {
            let mut text = existing.to_owned();
            if !text.ends_with("\n\n") {
                text.push('\n');
            }
            text.push_str(section);
            text
        }
    }
}

/// The section of `version` in a CHANGELOG.md, if it has one.
pub fn section_of(changelog: &str, version: &str) -> Option<String> {
    let heading = format!("## [{version}]");
    let start = changelog
        .match_indices("## [")
        .map(|(at, _)| at)
        .find(|at| {
            changelog[*at..].starts_with(&heading) && (*at == 0 || &changelog[at - 1..*at] == "\n")
        })?;
    let rest = &changelog[start..];
    let end = rest[1..]
        .find("\n## [")
        .map(|at| at + 2)
        .unwrap_or(rest.len());
    let section = &rest[..end];
    // The blank line before the next section belongs to the file, not the section.
    Some(
        section
            .strip_suffix("\n\n")
            .map(|text| format!("{text}\n"))
            .unwrap_or_else(|| section.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(id: &str, subject: &str, body: &str) -> Commit {
        Commit {
            id: id.to_owned(),
            subject: subject.to_owned(),
            body: body.to_owned(),
        }
    }

    #[test]
    fn conventional_subjects_are_read_and_others_are_not() {
        assert_eq!(
            parse("feat(deploy)!: one install path"),
            Some(Conventional {
                kind: "feat",
                scope: Some("deploy"),
                breaking: true,
                description: "one install path"
            })
        );
        assert_eq!(parse("fix: a typo").unwrap().kind, "fix");
        assert!(parse("Merge branch 'x'").is_none());
        assert!(parse("feat(no closing: x").is_none());
        assert!(parse("feat: ").is_none());
    }

    #[test]
    fn the_notes_group_breaking_changes_first_and_list_the_migrations() {
        let commits = [
            commit("aaaaaaaa1", "docs: a runbook", ""),
            commit("bbbbbbbb2", "feat(server): metrics", ""),
            commit(
                "cccccccc3",
                "fix: the lock",
                "BREAKING CHANGE: the lock file moved",
            ),
            commit("dddddddd4", "perf: faster", ""),
            commit("eeeeeeee5", "fix(security): a header", ""),
            commit("ffffffff6", "feat!: new API", ""),
        ];
        let text = render(&Range {
            version: "3.0.0",
            date: "2026-12-03",
            since: Some("v2.0.0"),
            head: "aaaaaaaa1",
            commits: &commits,
            migrations: &["server/migrations/1_x.sql".to_owned()],
        });
        let order: Vec<usize> = [
            "## [3.0.0] - 2026-12-03",
            "`v2.0.0..aaaaaaa`, 6 commits",
            "### Database migrations",
            "- `server/migrations/1_x.sql`",
            "### Breaking changes",
            "- the lock (ccccccc)",
            "- new API (fffffff)",
            "### Features",
            "- **server:** metrics (bbbbbbb)",
            "### Performance",
            "### Security",
            "- **security:** a header (eeeeeee)",
            "### Other changes",
            "- a runbook (aaaaaaa)",
        ]
        .iter()
        .map(|part| {
            text.find(part)
                .unwrap_or_else(|| panic!("{part:?} missing:\n{text}"))
        })
        .collect();
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
        assert!(
            !text.contains("### Fixes\n\n### "),
            "an empty group is left out:\n{text}"
        );
    }

    #[test]
    fn the_changelog_gets_the_new_section_on_top_and_gives_it_back_whole() {
        let first = changelog_with(None, "## [1.0.0] - 2026-01-01\n\nOne.\n");
        assert!(first.starts_with("# Changelog\n"), "{first}");
        let second = changelog_with(Some(&first), "## [1.1.0] - 2026-02-01\n\nTwo.\n");
        assert!(
            second.find("## [1.1.0]").unwrap() < second.find("## [1.0.0]").unwrap(),
            "{second}"
        );
        assert_eq!(
            section_of(&second, "1.1.0").unwrap(),
            "## [1.1.0] - 2026-02-01\n\nTwo.\n"
        );
        assert_eq!(
            section_of(&second, "1.0.0").unwrap(),
            "## [1.0.0] - 2026-01-01\n\nOne.\n"
        );
        assert!(section_of(&second, "1.0").is_none());
    }
}
