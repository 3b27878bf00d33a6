//! The live cluster's WAL archiver, as PostgreSQL reports it: `pg_stat_archiver` (the last
//! archived and the last failed segment), the segments still waiting (`.ready` files in
//! `pg_wal/archive_status`), and the settings that make archiving.

use serde_json::{Value, json};

use crate::database::archive::cluster;
use crate::database::archive::host::DbHost;

/// The archiver at one moment. Times are Unix seconds.
#[derive(Debug, Clone)]
pub struct Archiver {
    pub now: f64,
    pub archive_mode: String,
    pub archive_timeout_seconds: u64,
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<f64>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_at: Option<f64>,
    /// Completed segments not yet archived, and when the oldest of them completed.
    pub waiting: u64,
    pub oldest_waiting_at: Option<f64>,
    pub wal_segment_bytes: u64,
}

const QUERY: &str = "SELECT extract(epoch FROM now()),
       current_setting('archive_mode'),
       (SELECT setting FROM pg_settings WHERE name = 'archive_timeout'),
       archived_count, coalesce(last_archived_wal, ''),
       coalesce(extract(epoch FROM last_archived_time)::text, ''),
       failed_count, coalesce(last_failed_wal, ''),
       coalesce(extract(epoch FROM last_failed_time)::text, ''),
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
       coalesce((SELECT extract(epoch FROM min(modification))::text FROM pg_ls_archive_statusdir()
                 WHERE name LIKE '%.ready'), ''),
       (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')
  FROM pg_stat_archiver";

impl Archiver {
    /// Reads the archiver of the cluster at `port` on the host.
    pub fn read(host: &DbHost, port: u16) -> anyhow::Result<Archiver> {
        let row = cluster::psql(host, port, "postgres", QUERY, &[])?;
        Archiver::parse(&row)
    }

    fn parse(row: &str) -> anyhow::Result<Archiver> {
        let fields: Vec<&str> = row.split('|').collect();
        if fields.len() != 12 {
            anyhow::bail!("pg_stat_archiver gave an unexpected row: {row:?}");
        }
        let number = |text: &str| text.trim().parse::<f64>().ok();
        let count = |text: &str| text.trim().parse::<u64>().unwrap_or(0);
        let name = |text: &str| Some(text.to_owned()).filter(|text| !text.is_empty());
        Ok(Archiver {
            now: number(fields[0]).unwrap_or(0.0),
            archive_mode: fields[1].to_owned(),
            archive_timeout_seconds: count(fields[2]),
            archived_count: count(fields[3]),
            last_archived_wal: name(fields[4]),
            last_archived_at: number(fields[5]),
            failed_count: count(fields[6]),
            last_failed_wal: name(fields[7]),
            last_failed_at: number(fields[8]),
            waiting: count(fields[9]),
            oldest_waiting_at: number(fields[10]),
            wal_segment_bytes: count(fields[11]).max(1 << 20),
        })
    }

    /// Whether the newest attempt failed: a failure after the last success.
    pub fn failing(&self) -> bool {
        match (self.last_failed_at, self.last_archived_at) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// How long the oldest completed segment has waited for the archive (0 when none waits).
    pub fn lag_seconds(&self) -> f64 {
        self.oldest_waiting_at
            .map_or(0.0, |completed| (self.now - completed).max(0.0))
    }

    /// The age of the last archived segment.
    pub fn last_archived_age(&self) -> Option<f64> {
        self.last_archived_at.map(|at| (self.now - at).max(0.0))
    }

    pub fn json(&self) -> Value {
        json!({
            "archive_mode": self.archive_mode,
            "archive_timeout_seconds": self.archive_timeout_seconds,
            "archived_count": self.archived_count,
            "last_archived_wal": self.last_archived_wal,
            "last_archived_time": self.last_archived_at.map(|at| crate::util::utc::rfc3339(at as i64)),
            "last_archived_age_seconds": self.last_archived_age(),
            "failed_count": self.failed_count,
            "last_failed_wal": self.last_failed_wal,
            "last_failed_time": self.last_failed_at.map(|at| crate::util::utc::rfc3339(at as i64)),
            "failing": self.failing(),
            "waiting_segments": self.waiting,
            "lag_seconds": self.lag_seconds(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_the_last_success_is_failing_and_lag_is_the_oldest_wait() {
        let row = "1000.5|on|60|7|000000010000000000000007|990.0|3|000000010000000000000008|999.0|2|980.5|16777216";
        let archiver = Archiver::parse(row).unwrap();
        assert!(archiver.failing());
        assert_eq!(archiver.lag_seconds(), 20.0);
        assert_eq!(archiver.last_archived_age(), Some(10.5));
        let healthy = Archiver::parse(
            "1000|on|60|7|000000010000000000000007|999|3|000000010000000000000005|900||||16777216",
        )
        .unwrap_err();
        assert!(healthy.to_string().contains("unexpected row"));
        let healthy = Archiver::parse(
            "1000|on|60|7|000000010000000000000007|999|3|000000010000000000000005|900|0||16777216",
        )
        .unwrap();
        assert!(!healthy.failing());
        assert_eq!(healthy.lag_seconds(), 0.0);
    }
}
