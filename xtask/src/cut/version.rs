//! Which version a cut makes: the one given, or the next after the highest release tag in
//! semver order (`1.0.0-rc.1` < `1.0.0`, unlike `sort -V`), and the development version the
//! workspace moves on to after the tag.

use semver::{Prerelease, Version};

/// How far `--bump` moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Bump {
    Patch,
    Minor,
    Major,
}

/// The release tags' versions (`v<semver>`), highest first.
pub fn release_tags(tags: &str) -> Vec<Version> {
    let mut versions: Vec<Version> = tags
        .lines()
        .filter_map(|tag| Version::parse(tag.trim().strip_prefix('v')?).ok())
        .collect();
    versions.sort();
    versions.reverse();
    versions
}

/// The next version after `last` (none: 0.0.0), `bump` far, as a pre-release `<pre>.N` when
/// asked (N one past the highest such tag).
pub fn next(last: Option<&Version>, bump: Bump, pre: Option<&str>, tags: &[Version]) -> Version {
    let last = last.cloned().unwrap_or_else(|| Version::new(0, 0, 0));
    // A pre-release's own version comes first: 1.0.0-rc.1 bumps to 1.0.0.
    let released = Version::new(last.major, last.minor, last.patch);
    let mut base = match bump {
        _ if last.pre.is_empty() => match bump {
            Bump::Patch => Version::new(last.major, last.minor, last.patch + 1),
            Bump::Minor => Version::new(last.major, last.minor + 1, 0),
            Bump::Major => Version::new(last.major + 1, 0, 0),
        },
        Bump::Patch => released,
        Bump::Minor if last.patch == 0 => released,
        Bump::Minor => Version::new(last.major, last.minor + 1, 0),
        Bump::Major if last.minor == 0 && last.patch == 0 => released,
        Bump::Major => Version::new(last.major + 1, 0, 0),
    };
    if let Some(pre) = pre {
        let number = tags
            .iter()
            .filter(|tag| (tag.major, tag.minor, tag.patch) == (base.major, base.minor, base.patch))
            .filter_map(|tag| {
                let (id, number) = tag.pre.as_str().rsplit_once('.')?;
                (id == pre).then(|| number.parse::<u64>().ok())?
            })
            .max()
            .unwrap_or(0)
            + 1;
        base.pre = Prerelease::new(&format!("{pre}.{number}")).unwrap_or(Prerelease::EMPTY);
    }
    base
}

/// How big a step `from` → `to` is (a first release counts as major).
pub fn step(from: Option<&Version>, to: &Version) -> Bump {
    match from {
        None => Bump::Major,
        Some(from) if to.major != from.major => Bump::Major,
        Some(from) if to.minor != from.minor => Bump::Minor,
        Some(_) => Bump::Patch,
    }
}

/// The step a release needs: major for a breaking change (minor before 1.0.0), at least minor
/// for a migration.
pub fn needed(from: Option<&Version>, breaking: bool, migrations: bool) -> Bump {
    let before_one = from.is_some_and(|from| from.major == 0);
    match (breaking, migrations) {
        (true, _) if before_one => Bump::Minor,
        (true, _) => Bump::Major,
        (false, true) => Bump::Minor,
        (false, false) => Bump::Patch,
    }
}

/// The workspace's version after the tag: the next minor's `-dev` (a pre-release's own
/// version's `-dev` while that is not released).
pub fn development_after(released: &Version) -> Version {
    let mut next = if released.pre.is_empty() {
        Version::new(released.major, released.minor + 1, 0)
    } else {
        Version::new(released.major, released.minor, released.patch)
    };
    next.pre = Prerelease::new("dev").expect("dev is a pre-release");
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn the_highest_tag_is_taken_in_semver_order() {
        let tags = release_tags("v1.0.0\nv1.0.0-rc.1\nv0.9.0\nnot-a-release\nv1.0.0-rc.2\n");
        assert_eq!(tags[0], v("1.0.0"));
        assert_eq!(next(Some(&tags[0]), Bump::Patch, None, &tags), v("1.0.1"));
        assert_eq!(
            next(Some(&tags[0]), Bump::Minor, Some("rc"), &tags),
            v("1.1.0-rc.1")
        );
        let rc = release_tags("v1.0.0-rc.1\nv0.9.0\n");
        assert_eq!(
            next(Some(&rc[0]), Bump::Patch, Some("rc"), &rc),
            v("1.0.0-rc.2")
        );
        assert_eq!(next(Some(&rc[0]), Bump::Patch, None, &rc), v("1.0.0"));
        assert_eq!(next(None, Bump::Minor, None, &[]), v("0.1.0"));
    }

    #[test]
    fn the_bump_rules_ask_more_for_breaking_changes_and_migrations() {
        let one = v("1.2.3");
        assert_eq!(needed(Some(&one), true, false), Bump::Major);
        assert_eq!(needed(Some(&one), false, true), Bump::Minor);
        assert_eq!(needed(Some(&v("0.4.0")), true, true), Bump::Minor);
        assert_eq!(step(Some(&one), &v("1.2.4")), Bump::Patch);
        assert_eq!(step(Some(&one), &v("1.3.0")), Bump::Minor);
        assert_eq!(development_after(&v("2.0.0")), v("2.1.0-dev"));
        assert_eq!(development_after(&v("2.1.0-rc.1")), v("2.1.0-dev"));
    }
}
