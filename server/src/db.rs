//! The database: connecting with bounded retries, migrations with validation, the health ping.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{PgConnection, Postgres};

use crate::config::{DatabaseConfig, SslMode};

/// The migrations in `server/migrations`, built into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The connection options, built field by field so a password with any characters works.
/// Without SAULPOS_DB_PASSWORD the password comes from `~/.pgpass` (or `PGPASSFILE`) as libpq
/// finds it, or none is sent (trust, peer or certificate authentication).
pub fn connect_options(config: &DatabaseConfig) -> PgConnectOptions {
    let base = match &config.password {
        Some(_) => PgConnectOptions::new_without_pgpass(),
        // sqlx reads the pgpass file only while parsing a URL: give it one with no password.
        None => {
            let host = if config.host.contains(':') {
                format!("[{}]", config.host)
            } else {
                config.host.clone()
            };
            format!(
                "postgres://{}@{host}:{}/{}",
                percent_encode(&config.username),
                config.port,
                percent_encode(&config.name)
            )
            .parse()
            .unwrap_or_else(|_| PgConnectOptions::new_without_pgpass())
        }
    };
    let options = base
        .host(&config.host)
        .port(config.port)
        .database(&config.name)
        .username(&config.username)
        .application_name("saulpos-server")
        // The server's own NOTICEs (a migration's "already exists, skipping") are not news.
        .options([("client_min_messages", "warning")])
        .ssl_mode(match config.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    let options = match &config.ssl_root_cert {
        Some(path) => options.ssl_root_cert(path),
        None => options,
    };
    match &config.password {
        Some(password) => options.password(password.expose()),
        None => options,
    }
}

/// Every byte but the unreserved ones as `%XX`, for a URL's user or path.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Opens the pool, retrying an unreachable database until the startup timeout.
///
/// A database that answers and refuses (bad password, no such database) is not retried, nor is
/// a TLS failure (a certificate that does not check out, no TLS where it is required).
pub async fn connect_with_retry(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let deadline = Instant::now() + config.startup_timeout;
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let result = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.connect_timeout)
            .connect_with(connect_options(config))
            .await;
        match result {
            Ok(pool) => return Ok(pool),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("3D000") => bail!(
                "database {} does not exist at {}:{}: create it (e.g. createdb -h {} -p {} -U {} {}) or fix SAULPOS_DB_URL",
                config.name,
                config.host,
                config.port,
                config.host,
                config.port,
                config.username,
                config.name
            ),
            Err(sqlx::Error::Database(error)) => bail!(
                "database {} at {}:{} refused the connection for user {:?}: {}; check SAULPOS_DB_URL, SAULPOS_DB_USERNAME and SAULPOS_DB_PASSWORD",
                config.name,
                config.host,
                config.port,
                config.username,
                error.message()
            ),
            // A certificate or TLS problem does not go away by waiting: say so once. rustls's
            // handshake errors reach sqlx as I/O errors of kind InvalidData.
            Err(error) if is_tls_failure(&error, config.ssl_mode) => bail!(
                "TLS to the database at {}:{} failed (sslmode={}{}): {error}; fix the certificate, SAULPOS_DB_SSLROOTCERT or sslmode in SAULPOS_DB_URL",
                config.host,
                config.port,
                config.ssl_mode.as_str(),
                config
                    .ssl_root_cert
                    .as_ref()
                    .map(|path| format!(", root certificate {}", path.display()))
                    .unwrap_or_default()
            ),
            Err(error) if Instant::now() + delay < deadline => {
                tracing::warn!(
                    attempt,
                    host = %config.host,
                    port = config.port,
                    "database not reachable yet, retrying in {} ms: {error}",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(error) => bail!(
                "cannot reach the database at {}:{} after {} attempts in {} s: {error}; check that PostgreSQL is up and SAULPOS_DB_URL, or raise SAULPOS_DB_STARTUP_TIMEOUT_SECONDS",
                config.host,
                config.port,
                attempt,
                config.startup_timeout.as_secs()
            ),
        }
    }
}

/// Whether a connection error is TLS refusing (a certificate that does not check out, no TLS
/// where it is required) rather than a database not there yet.
fn is_tls_failure(error: &sqlx::Error, mode: SslMode) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            mode != SslMode::Disable && io.kind() == std::io::ErrorKind::InvalidData
        }
        _ => false,
    }
}

/// Applies pending migrations and validates the applied ones against the files built in.
///
/// A changed migration stops startup. Migrations applied by a newer release are tolerated with
/// a warning, so that a rolled-back binary still starts.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let known: Vec<i64> = MIGRATOR.iter().map(|migration| migration.version).collect();
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .context("cannot read the migration history")?;
    if table_exists {
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .context("cannot read the migration history")?;
        for (version, description) in applied {
            if !known.contains(&version) {
                tracing::warn!(
                    version,
                    description,
                    "the database has a migration this release does not know (applied by a newer release); continuing"
                );
            }
        }
    }
    let mut migrator = sqlx::migrate!();
    migrator.set_ignore_missing(true);
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMismatch(version)) => bail!(
            "migration {} was changed after it was applied to this database; restore the original file {} (migrations are never edited, add a new one instead)",
            version,
            migration_file(version)
        ),
        Err(MigrateError::Dirty(version)) => bail!(
            "migration {} failed part way on an earlier start; fix the database by hand and delete its row from _sqlx_migrations",
            migration_file(version)
        ),
        Err(error) => Err(error).context("cannot apply the database migrations"),
    }
}

fn migration_file(version: i64) -> String {
    MIGRATOR
        .iter()
        .find(|migration| migration.version == version)
        .map(|migration| format!("{}_{}.sql", migration.version, migration.description))
        .unwrap_or_else(|| version.to_string())
}

/// Checks the database answers within `timeout`; returns how long it took.
pub async fn ping(db: &Db, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let check = async {
        let mut connection = db.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *connection).await
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The pool as the request handlers use it: each connection taken is timed into
/// `saulpos_db_pool_acquire_duration_seconds` (sqlx keeps no such figure).
#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    acquire_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Db {
    pub fn new(
        pool: PgPool,
        acquire_seconds: prometheus_client::metrics::histogram::Histogram,
    ) -> Db {
        Db {
            pool,
            acquire_seconds,
        }
    }

    /// A connection from the pool, for one request's queries.
    pub async fn acquire(&self) -> sqlx::Result<PoolConnection<Postgres>> {
        let started = Instant::now();
        let connection = self.pool.acquire().await;
        self.acquire_seconds
            .observe(started.elapsed().as_secs_f64());
        connection
    }
}

/// What a metrics scrape reads from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeFigures {
    /// Bearer tokens not yet expired.
    pub tokens_active: i64,
    pub migrations_applied: i64,
    pub archiver: ArchiverFigures,
}

/// The database's WAL archiver (`pg_stat_archiver`), which continuous archiving rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiverFigures {
    /// archive_mode is on (or always).
    pub enabled: bool,
    /// When the last segment was archived, and when an attempt last failed (Unix seconds).
    pub last_archived: Option<f64>,
    pub last_failed: Option<f64>,
    /// Failed attempts since the database server started.
    pub failures: i64,
    /// Completed WAL segments not archived yet.
    pub segments_waiting: i64,
}

/// The figures of a scrape; none when the database does not answer within `timeout`.
pub async fn scrape_figures(db: &Db, timeout: Duration) -> Option<ScrapeFigures> {
    let read = async {
        let mut connection = db.acquire().await?;
        scrape_query(&mut connection).await
    };
    tokio::time::timeout(timeout, read).await.ok()?.ok()
}

type ScrapeRow = (
    i64,
    i64,
    String,
    Option<f64>,
    Option<f64>,
    i64,
    String,
    String,
    i64,
);

async fn scrape_query(connection: &mut PgConnection) -> sqlx::Result<ScrapeFigures> {
    let row: ScrapeRow = sqlx::query_as(
        "SELECT (SELECT count(*) FROM auth_token WHERE expires_at > now()),
                (SELECT count(*) FROM _sqlx_migrations WHERE success),
                current_setting('archive_mode'),
                extract(epoch FROM last_archived_time)::float8,
                extract(epoch FROM last_failed_time)::float8,
                failed_count,
                coalesce(last_archived_wal, ''),
                CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END,
                (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
           FROM pg_stat_archiver",
    )
    .fetch_one(connection)
    .await?;
    let (tokens_active, migrations_applied, mode, last_archived, last_failed, failures) =
        (row.0, row.1, row.2, row.3, row.4, row.5);
    let enabled = mode == "on" || mode == "always";
    let segments_waiting = if enabled {
        segments_between(&row.6, &row.7, row.8)
    } else {
        0
    };
    Ok(ScrapeFigures {
        tokens_active,
        migrations_applied,
        archiver: ArchiverFigures {
            enabled,
            last_archived,
            last_failed,
            failures,
            segments_waiting,
        },
    })
}

/// The completed segments after `archived` and before `current` (the one being written), by
/// segment number whatever the timeline; 0 when either is unknown.
pub fn segments_between(archived: &str, current: &str, segment_bytes: i64) -> i64 {
    let per_log = 0x1_0000_0000_i64 / segment_bytes.max(1);
    let number = |name: &str| -> Option<i64> {
        let log = i64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let segment = i64::from_str_radix(name.get(16..24)?, 16).ok()?;
        Some(log * per_log + segment)
    };
    match (number(archived), number(current)) {
        (Some(archived), Some(current)) => (current - archived - 1).max(0),
        _ => 0,
    }
}

#[cfg(test)]
mod archiver_tests {
    use super::segments_between;

    #[test]
    fn waiting_segments_are_counted_across_logs_and_timelines() {
        let size = 16 << 20;
        assert_eq!(
            segments_between("0000000100000000000000FE", "000000010000000100000001", size),
            2
        );
        assert_eq!(
            segments_between("000000010000000000000005", "000000020000000000000006", size),
            0
        );
        assert_eq!(segments_between("", "000000010000000000000006", size), 0);
    }
}
