//! The two text formats a scrape can ask for: Prometheus's own (version 0.0.4, the default) and
//! OpenMetrics 1.0 (when the `Accept` header names `application/openmetrics-text`).

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the client asks for it (as Prometheus does by default), else the
    /// Prometheus text format every scraper reads.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let asks = accept.is_some_and(|accept| {
            accept.split(',').any(|part| {
                let mut fields = part.split(';').map(str::trim);
                let wanted = fields.next() == Some("application/openmetrics-text");
                let refused = fields.any(|field| field.replace(' ', "") == "q=0");
                wanted && !refused
            })
        });
        if asks {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

pub fn render(registry: &Registry, format: Format) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let encoded = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, registry),
        Format::OpenMetrics => text::encode(&mut out, registry),
    };
    // Writing into a String cannot fail; a collector's own error would leave a partial page.
    encoded.expect("metrics encode into a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_the_client_asks_for_it() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }
}
