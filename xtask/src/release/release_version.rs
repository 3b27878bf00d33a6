//! Release versions: strict semantic versions (semver 2.0.0), refused with a rule, an example
//! and a hint.

use anyhow::bail;
use semver::Version;

const RULE: &str = "a release version is a semantic version MAJOR.MINOR.PATCH (numbers without leading zeros), optionally followed by -pre.release and +build.metadata, e.g. 2.0.0, 2.1.0-rc.1 or 2.0.0+build.7";

/// Parses `text` as a release version, or explains what is wrong with it.
pub fn parse(text: &str) -> anyhow::Result<Version> {
    match Version::parse(text) {
        Ok(version) => Ok(version),
        Err(error) => {
            let numbers = core(text).split('.').count();
            if !text.trim().is_empty() && text.trim() == text && numbers < 3 {
                // semver's own words blame the number after the last one given.
                bail!(
                    "invalid release version {text:?}: it has {numbers} number{}, a release version has three (MAJOR.MINOR.PATCH); {}\n{RULE}",
                    if numbers == 1 { "" } else { "s" },
                    hint(text)
                )
            }
            let hint = hint(text);
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            };
            bail!("invalid release version {text:?}: {error}{hint}\n{RULE}")
        }
    }
}

/// A suggestion for the common mistakes.
/// The numbers of a version, without a leading v, pre-release or build metadata.
fn core(text: &str) -> &str {
    text.split(['-', '+'])
        .next()
        .unwrap_or_default()
        .trim_start_matches(['v', 'V'])
}

fn hint(text: &str) -> &'static str {
    let core = core(text);
    if text.trim().is_empty() {
        "give the version to release, e.g. cargo xtask package 2.0.0"
    } else if text.trim() != text || text.contains(char::is_whitespace) {
        "remove the spaces"
    } else if text.starts_with(['v', 'V']) {
        "drop the leading v (git tags may use v2.0.0, release versions do not)"
    } else if core.split('.').count() < 3 {
        "give all three numbers, e.g. 2.0.0 for 2.0"
    } else if core.split('.').count() > 3 {
        "a version has exactly three numbers; put extra parts in pre-release or build metadata, e.g. 2.0.0+build.1"
    } else if text.split(['.', '-', '+']).any(|part| {
        part.len() > 1 && part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit())
    }) {
        "drop the leading zeros, e.g. 2.0.0 for 02.0.0 or 1.2.3-1 for 1.2.3-01"
    } else {
        ""
    }
}

/// Whether two versions name the same release: build metadata does not make a new release.
pub fn same_release(a: &Version, b: &Version) -> bool {
    a.major == b.major && a.minor == b.minor && a.patch == b.patch && a.pre == b.pre
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_versions_are_accepted() {
        for text in [
            "2.0.0",
            "0.1.0",
            "2.1.0-rc.1",
            "2.0.0+rebuild.1",
            "1.0.0-alpha+001",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn each_common_mistake_gets_its_hint() {
        let cases = [
            ("v2.0.0", "drop the leading v"),
            ("2.0", "give all three numbers"),
            ("02.0.0", "drop the leading zeros"),
            ("2.0.0.1", "exactly three numbers"),
            ("1.2.3-01", "drop the leading zeros"),
            (" 2.0.0", "remove the spaces"),
            ("", "give the version to release"),
        ];
        for (text, hint) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(hint), "{text:?}: {message}");
            assert!(message.contains("e.g. 2.0.0"), "{text:?}: {message}");
        }
    }

    #[test]
    fn build_metadata_does_not_make_a_new_release() {
        let plain = parse("2.0.0").unwrap();
        assert!(same_release(&plain, &parse("2.0.0+rebuild.1").unwrap()));
        assert!(!same_release(&plain, &parse("2.0.0-rc.1").unwrap()));
    }
}
