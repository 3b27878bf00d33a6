//! The database pool's gauges, read from sqlx at each scrape: connections in use, idle, and the
//! most the pool opens.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use sqlx::PgPool;

#[derive(Debug)]
pub struct PoolCollector {
    pool: PgPool,
}

impl PoolCollector {
    pub fn new(pool: PgPool) -> PoolCollector {
        PoolCollector { pool }
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        let max = i64::from(self.pool.options().get_max_connections());
        for (name, help, value) in [
            (
                "saulpos_db_pool_connections_in_use",
                "Database connections handed out to requests",
                (size - idle).max(0),
            ),
            (
                "saulpos_db_pool_connections_idle",
                "Open database connections waiting in the pool",
                idle,
            ),
            (
                "saulpos_db_pool_connections_max",
                "The most database connections the pool opens (SAULPOS_DB_POOL_SIZE)",
                max,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
