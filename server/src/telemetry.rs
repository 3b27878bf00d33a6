//! Logging through `tracing`: readable text or JSON lines, filtered by the configured level.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber; the level was validated with the configuration.
pub fn init(format: LogFormat, level: &str) {
    let filter: Targets = level.parse().unwrap_or_else(|_| Targets::new());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(false))
            .init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .init(),
    }
}
