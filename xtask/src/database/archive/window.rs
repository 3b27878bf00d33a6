//! The window a cluster can be restored to: from the end of the oldest backup (a time before a
//! backup ends is not consistent) to the newest archived WAL, and whether every WAL segment in
//! between is in the repository.

use anyhow::bail;
use serde_json::{Value, json};

use crate::database::archive::archiver::Archiver;
use crate::database::archive::host::DbHost;
use crate::database::pgbackrest::Info;
use crate::util::utc;

/// A restorable window, in Unix microseconds.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    /// Where `end` comes from: the live cluster's archiver, or the repository's newest file.
    pub end_from: &'static str,
    /// Segments missing between the oldest backup's first WAL and the newest archived one.
    pub missing: Vec<String>,
}

impl Window {
    /// The window of the stanza's backups and archive; `None` when there is no backup yet.
    pub fn find(
        host: &DbHost,
        info: &Info,
        archiver: Option<&Archiver>,
        repo: &str,
        stanza: &str,
    ) -> anyhow::Result<Option<Window>> {
        let Some(oldest) = info.backups.iter().min_by_key(|backup| backup.stop) else {
            return Ok(None);
        };
        let archive_dir = format!("{}/archive/{stanza}", repo.trim_end_matches('/'));
        let listing = host.postgres_ok(
            "list the archived WAL in the repository",
            &[
                "find",
                &archive_dir,
                "-type",
                "f",
                "-name",
                "0*",
                "-printf",
                "%T@ %f\\n",
            ],
            None,
        )?;
        let mut segments = Vec::new();
        let mut newest_file = 0.0f64;
        for line in listing.lines() {
            let Some((modified, name)) = line.split_once(' ') else {
                continue;
            };
            if let Some(segment) = name.get(..24).filter(|prefix| {
                prefix.bytes().all(|byte| byte.is_ascii_hexdigit())
                    && name.as_bytes().get(24) == Some(&b'-')
            }) {
                segments.push(segment.to_owned());
                newest_file = newest_file.max(modified.parse().unwrap_or(0.0));
            }
        }
        let (end_seconds, end_from) = match archiver.and_then(|archiver| archiver.last_archived_at)
        {
            Some(at) => (at.max(newest_file), "pg_stat_archiver"),
            None => (newest_file, "repository"),
        };
        let per_log =
            0x1_0000_0000u64 / archiver.map_or(16 << 20, |archiver| archiver.wal_segment_bytes);
        let missing = missing_segments(&oldest.wal_start, &segments, per_log);
        let start = (oldest.stop + 1) * 1_000_000;
        Ok(Some(Window {
            start,
            end: ((end_seconds * 1_000_000.0) as i64).max(start),
            end_from,
            missing,
        }))
    }

    /// Refuses `target` outside the window, naming it.
    pub fn check(&self, target: i64, given: &str) -> anyhow::Result<()> {
        if target < self.start || target > self.end {
            bail!(
                "--to {given:?} is outside the restorable window {} to {} (the end of the oldest backup to the newest archived WAL); choose a time inside it (`cargo xtask archive status` shows it); nothing was created",
                utc::postgres_instant(self.start),
                utc::postgres_instant(self.end)
            );
        }
        Ok(())
    }

    pub fn json(&self) -> Value {
        json!({
            "start": utc::postgres_instant(self.start),
            "end": utc::postgres_instant(self.end),
            "end_from": self.end_from,
            "missing_wal": self.missing,
        })
    }
}

/// The segment names from `first` to the newest in `present` that no timeline has.
fn missing_segments(first: &str, present: &[String], per_log: u64) -> Vec<String> {
    let number = |name: &str| -> Option<u64> {
        let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let segment = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
        Some(log * per_log + segment)
    };
    let Some(first_number) = number(first) else {
        return Vec::new();
    };
    let mut have: Vec<u64> = present.iter().filter_map(|name| number(name)).collect();
    have.sort_unstable();
    have.dedup();
    let Some(&last) = have.last() else {
        return vec![first.to_owned()];
    };
    let timeline = first.get(..8).unwrap_or("00000001");
    (first_number..=last)
        .filter(|wanted| have.binary_search(wanted).is_err())
        .take(20)
        .map(|gap| format!("{timeline}{:08X}{:08X}", gap / per_log, gap % per_log))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_in_the_archive_is_named_across_log_boundaries() {
        let present: Vec<String> = [
            "0000000100000000000000FE",
            "000000010000000100000001",
            "000000020000000100000002",
        ]
        .iter()
        .map(|name| name[..24].to_owned())
        .collect();
        assert_eq!(
            missing_segments("0000000100000000000000FE", &present, 256),
            ["0000000100000000000000FF", "000000010000000100000000"]
        );
        let whole: Vec<String> = ["000000010000000000000002", "000000010000000000000003"]
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert!(missing_segments("000000010000000000000002", &whole, 256).is_empty());
    }
}
