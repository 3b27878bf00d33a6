//! The server's Prometheus metrics, served at `/actuator/prometheus`: one explicit registry a
//! server (so the tests can build many apps in one process), HTTP requests by route template,
//! the database pool, logins, the build and the process.

mod exposition;
pub mod http;
mod pool;
mod process;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::atomic::AtomicU64;

pub use exposition::Format;

use crate::build_info;

/// The buckets OpenTelemetry advises for HTTP durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How a login ended, a label of `saulpos_auth_logins_total`.
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum LoginOutcome {
    success,
    /// A wrong user or password, or a disabled user.
    failure,
    /// Refused while the user waits after repeated failures (429).
    throttled,
    /// No hash slot free in time (503).
    busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabel {
    outcome: LoginOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    profile: &'static str,
}

/// The database's WAL archiver, read at each scrape (continuous archiving rests on it; the
/// shipped alert rules watch it).
struct ArchiverGauges {
    enabled: Gauge,
    last_archived: Gauge<f64, AtomicU64>,
    last_failed: Gauge<f64, AtomicU64>,
    failures: Gauge,
    waiting: Gauge,
}

impl ArchiverGauges {
    fn register(registry: &mut Registry) -> ArchiverGauges {
        let gauges = ArchiverGauges {
            enabled: Gauge::default(),
            last_archived: Gauge::default(),
            last_failed: Gauge::default(),
            failures: Gauge::default(),
            waiting: Gauge::default(),
        };
        registry.register(
            "saulpos_db_wal_archiving_enabled",
            "1 when the database archives its WAL (archive_mode on)",
            gauges.enabled.clone(),
        );
        registry.register(
            "saulpos_db_wal_last_archived_timestamp_seconds",
            "When the database last archived a WAL segment (Unix time; 0: never)",
            gauges.last_archived.clone(),
        );
        registry.register(
            "saulpos_db_wal_last_archive_failure_timestamp_seconds",
            "When archiving a WAL segment last failed (Unix time; 0: never)",
            gauges.last_failed.clone(),
        );
        registry.register(
            "saulpos_db_wal_archive_failures",
            "Failed attempts to archive WAL since the database server started",
            gauges.failures.clone(),
        );
        registry.register(
            "saulpos_db_wal_segments_waiting",
            "Completed WAL segments not archived yet",
            gauges.waiting.clone(),
        );
        gauges
    }
}

/// Every metric of one server, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub http: http::HttpMetrics,
    logins: Family<OutcomeLabel, Counter>,
    lockouts: Counter,
    tokens_active: Gauge,
    migrations_applied: Gauge,
    archiver: ArchiverGauges,
    /// The time to get a connection from the pool.
    pub acquire: Histogram,
}

impl Metrics {
    pub fn new(profile: &'static str, pool: &PgPool) -> Metrics {
        let mut registry = Registry::default();
        let http = http::HttpMetrics::register(&mut registry);
        let acquire = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "saulpos_db_pool_acquire_duration_seconds",
            "Time to get a connection from the database pool",
            acquire.clone(),
        );
        registry.register_collector(Box::new(pool::PoolCollector::new(pool.clone())));
        let logins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "saulpos_auth_logins",
            "Logins by outcome: success, failure (wrong user or password), throttled, busy",
            logins.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "saulpos_auth_lockouts",
            "Times a user's logins from one address began to wait after repeated failures",
            lockouts.clone(),
        );
        let tokens_active = Gauge::default();
        registry.register(
            "saulpos_auth_tokens_active",
            "Bearer tokens issued and not yet expired (read at each scrape)",
            tokens_active.clone(),
        );
        let migrations_applied = Gauge::default();
        registry.register(
            "saulpos_db_migrations_applied",
            "Migrations applied to the database (read at each scrape)",
            migrations_applied.clone(),
        );
        let archiver = ArchiverGauges::register(&mut registry);
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: build_info::VERSION,
                commit: build_info::COMMIT,
                profile,
            })
            .set(1);
        registry.register(
            "saulpos_build_info",
            "The release this server runs: version, git commit and profile (always 1)",
            build,
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry,
            http,
            logins,
            lockouts,
            tokens_active,
            migrations_applied,
            archiver,
            acquire,
        }
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// What a scrape reads from the database, set before the registry is encoded.
    pub fn set_database_figures(&self, figures: &crate::db::ScrapeFigures) {
        self.tokens_active.set(figures.tokens_active);
        self.migrations_applied.set(figures.migrations_applied);
        let archiver = &figures.archiver;
        self.archiver.enabled.set(i64::from(archiver.enabled));
        self.archiver
            .last_archived
            .set(archiver.last_archived.unwrap_or(0.0));
        self.archiver
            .last_failed
            .set(archiver.last_failed.unwrap_or(0.0));
        self.archiver.failures.set(archiver.failures);
        self.archiver.waiting.set(archiver.segments_waiting);
    }

    /// The registry as text in `format`.
    pub fn render(&self, format: Format) -> String {
        exposition::render(&self.registry, format)
    }
}
