//! The canary analysis's arithmetic, on the text a server's `/actuator/prometheus` serves: the
//! application's requests, their 5xx and their duration histogram at one scrape, the deltas
//! between two scrapes (a counter reset counts from zero), the p99 as Prometheus's
//! `histogram_quantile` computes it, and the verdict on a canary beside its baseline.

use std::time::Duration;

/// What one scrape says of the application's requests (the actuator's and unmatched paths'
/// aside: health checks and scrapes are not traffic).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative counts by upper bound (`le`), summed over routes and statuses, ascending.
    pub buckets: Vec<(f64, f64)>,
    /// `process_start_time_seconds`: a change means the process restarted.
    pub start_time: Option<f64>,
}

const DURATION: &str = "http_server_request_duration_seconds";

/// The figures of `text`, or why it is not a server's metrics.
pub fn parse(text: &str) -> Result<Snapshot, String> {
    let mut snapshot = Snapshot::default();
    let mut seen_duration = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        match name {
            "process_start_time_seconds" => snapshot.start_time = Some(value),
            _ if name == format!("{DURATION}_count") => {
                seen_duration = true;
                if !is_traffic(&labels) {
                    continue;
                }
                snapshot.requests += value;
                if label(&labels, "http_response_status_code")
                    .is_some_and(|code| code.starts_with('5'))
                {
                    snapshot.errors += value;
                }
            }
            _ if name == format!("{DURATION}_bucket") => {
                if !is_traffic(&labels) {
                    continue;
                }
                let Some(bound) = label(&labels, "le").and_then(parse_value) else {
                    continue;
                };
                match snapshot.buckets.iter_mut().find(|(le, _)| *le == bound) {
                    Some((_, count)) => *count += value,
                    None => snapshot.buckets.push((bound, value)),
                }
            }
            _ => {}
        }
    }
    if !seen_duration && snapshot.start_time.is_none() {
        return Err(format!(
            "not a SaulPOS server's metrics (no {DURATION} and no process_start_time_seconds)"
        ));
    }
    snapshot
        .buckets
        .sort_by(|left, right| left.0.total_cmp(&right.0));
    Ok(snapshot)
}

fn is_traffic(labels: &[(String, String)]) -> bool {
    label(labels, "http_route")
        .is_some_and(|route| route != "unmatched" && !route.starts_with("/actuator/"))
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// A sample's labels, as (name, value) pairs.
type Labels = Vec<(String, String)>;

/// `name{label="value",...} value [timestamp]`, the label values unescaped.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (index, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[index + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

/// The requests of one interval: `later` minus `earlier`, or `later` itself when a counter went
/// down (the process restarted, its counters from zero).
pub fn delta(earlier: &Snapshot, later: &Snapshot) -> Snapshot {
    let reset = later.requests < earlier.requests
        || later.errors < earlier.errors
        || later.buckets.iter().any(|(le, count)| {
            earlier
                .buckets
                .iter()
                .any(|(before, was)| before == le && count < was)
        });
    if reset {
        return later.clone();
    }
    Snapshot {
        requests: later.requests - earlier.requests,
        errors: later.errors - earlier.errors,
        buckets: later
            .buckets
            .iter()
            .map(|(le, count)| {
                let was = earlier
                    .buckets
                    .iter()
                    .find(|(before, _)| before == le)
                    .map_or(0.0, |(_, was)| *was);
                (*le, count - was)
            })
            .collect(),
        start_time: later.start_time,
    }
}

/// Several hosts' intervals as one (the baseline is every host still on the old release).
pub fn sum<'a>(intervals: impl IntoIterator<Item = &'a Snapshot>) -> Snapshot {
    let mut total = Snapshot::default();
    for interval in intervals {
        total.requests += interval.requests;
        total.errors += interval.errors;
        for (le, count) in &interval.buckets {
            match total.buckets.iter_mut().find(|(bound, _)| bound == le) {
                Some((_, sum)) => *sum += count,
                None => total.buckets.push((*le, *count)),
            }
        }
    }
    total
        .buckets
        .sort_by(|left, right| left.0.total_cmp(&right.0));
    total
}

/// The `q` quantile of the requests in `buckets`, interpolated inside its bucket as Prometheus's
/// `histogram_quantile` does; none without requests.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last().map(|(_, count)| *count)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (index, (le, count)) in buckets.iter().enumerate() {
        if *count >= rank {
            if le.is_infinite() {
                // In the +Inf bucket: the highest finite bound is the answer.
                return Some(if index == 0 {
                    0.0
                } else {
                    buckets[index - 1].0
                });
            }
            let inside = count - below;
            if inside <= 0.0 {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / inside);
        }
        lower = *le;
        below = *count;
    }
    None
}

/// One interval's figures, as the table shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub requests: f64,
    pub error_ratio: f64,
    pub p99: Option<f64>,
}

impl Figures {
    pub fn of(interval: &Snapshot) -> Figures {
        Figures {
            requests: interval.requests,
            error_ratio: if interval.requests > 0.0 {
                interval.errors / interval.requests
            } else {
                0.0
            },
            p99: quantile(0.99, &interval.buckets),
        }
    }

    /// `120 req, 0.8% 5xx, p99 4.9 ms`.
    pub fn describe(&self) -> String {
        format!(
            "{} req, {:.1}% 5xx, p99 {}",
            self.requests.round(),
            self.error_ratio * 100.0,
            self.p99.map_or_else(
                || "none".to_owned(),
                |p99| format!("{:.1} ms", p99 * 1000.0)
            )
        )
    }
}

/// The limits a canary is held to (the deploy flags of the same names).
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// A canary fails over this 5xx ratio...
    pub max_error_ratio: f64,
    /// ...when it is also over the baseline's plus this.
    pub error_margin: f64,
    /// A canary fails over this multiple of the baseline's p99...
    pub max_p99_ratio: f64,
    /// ...when its p99 is also over this.
    pub p99_floor: Duration,
    /// An interval with fewer requests on a canary says nothing.
    pub min_requests: u64,
}

/// What one interval says of one canary.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Inconclusive(_) => "inconclusive",
        }
    }
}

/// The verdict on a canary's interval beside the baseline's (none when no baseline host had
/// traffic: then only the absolute limits count).
pub fn judge(canary: &Figures, baseline: Option<&Figures>, limits: &Thresholds) -> Verdict {
    if canary.requests < limits.min_requests as f64 {
        return Verdict::Inconclusive(format!(
            "{} requests in the interval, fewer than --min-requests {}",
            canary.requests.round(),
            limits.min_requests
        ));
    }
    let baseline_errors = baseline.map_or(0.0, |baseline| baseline.error_ratio);
    if canary.error_ratio > limits.max_error_ratio
        && canary.error_ratio > baseline_errors + limits.error_margin
    {
        return Verdict::Fail(format!(
            "5xx ratio {:.1}% is over {:.1}% and over the baseline's {:.1}% plus {:.1}%",
            canary.error_ratio * 100.0,
            limits.max_error_ratio * 100.0,
            baseline_errors * 100.0,
            limits.error_margin * 100.0
        ));
    }
    let floor = limits.p99_floor.as_secs_f64();
    if let Some(p99) = canary.p99
        && p99 > floor
    {
        match baseline.and_then(|baseline| baseline.p99) {
            Some(base) if p99 > base * limits.max_p99_ratio => {
                return Verdict::Fail(format!(
                    "p99 {:.1} ms is over {}x the baseline's {:.1} ms and over {:.0} ms",
                    p99 * 1000.0,
                    limits.max_p99_ratio,
                    base * 1000.0,
                    floor * 1000.0
                ));
            }
            Some(_) => {}
            None => {
                return Verdict::Fail(format!(
                    "p99 {:.1} ms is over {:.0} ms and no baseline host had traffic to compare with",
                    p99 * 1000.0,
                    floor * 1000.0
                ));
            }
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's page: `ok` lookups under 5 ms and `failed` 500s between 0.25 and 0.5 s, beside
    /// health checks and a scan, none of which count.
    fn page(ok: u64, failed: u64, started: f64) -> String {
        let route = r#"http_request_method="GET",http_route="/api/v1/products/{sku}""#;
        let mut text = String::from(
            "# HELP http_server_request_duration_seconds Duration.\n# TYPE http_server_request_duration_seconds histogram\n",
        );
        for (status, count, first_le) in [("200", ok, 0), ("500", failed, 6)] {
            let bounds = [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "+Inf",
            ];
            for (index, le) in bounds.iter().enumerate() {
                let value = if index >= first_le { count } else { 0 };
                text.push_str(&format!(
                    "{DURATION}_bucket{{{route},http_response_status_code=\"{status}\",le=\"{le}\"}} {value}\n"
                ));
            }
            text.push_str(&format!(
                "{DURATION}_count{{{route},http_response_status_code=\"{status}\"}} {count}\n"
            ));
        }
        text.push_str(&format!(
            "{DURATION}_count{{http_request_method=\"GET\",http_route=\"/actuator/health\",http_response_status_code=\"503\"}} 7\n\
             {DURATION}_bucket{{http_request_method=\"GET\",http_route=\"unmatched\",http_response_status_code=\"404\",le=\"+Inf\"}} 99\n\
             {DURATION}_count{{http_request_method=\"GET\",http_route=\"unmatched\",http_response_status_code=\"404\"}} 99\n\
             process_start_time_seconds {started}\n"
        ));
        text
    }

    fn limits() -> Thresholds {
        Thresholds {
            max_error_ratio: 0.01,
            error_margin: 0.005,
            max_p99_ratio: 1.2,
            p99_floor: Duration::from_millis(50),
            min_requests: 20,
        }
    }

    #[test]
    fn a_page_gives_the_application_requests_only() {
        let snapshot = parse(&page(90, 10, 1700000000.25)).unwrap();
        assert_eq!(snapshot.requests, 100.0);
        assert_eq!(snapshot.errors, 10.0);
        assert_eq!(snapshot.start_time, Some(1700000000.25));
        assert_eq!(snapshot.buckets.first(), Some(&(0.005, 90.0)));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 100.0)));
    }

    #[test]
    fn escaped_label_values_and_timestamps_are_read() {
        let text = "http_server_request_duration_seconds_count{http_route=\"/a\\\"b,c}\",http_response_status_code=\"502\"} 3 1700000000000\nprocess_start_time_seconds 5\n";
        let snapshot = parse(text).unwrap();
        assert_eq!((snapshot.requests, snapshot.errors), (3.0, 3.0));
    }

    #[test]
    fn what_is_not_a_servers_metrics_is_refused() {
        assert!(parse("fleet.sh: error: nothing answers").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn a_delta_is_the_interval_and_a_counter_reset_counts_from_zero() {
        let earlier = parse(&page(100, 0, 1.0)).unwrap();
        let later = parse(&page(150, 5, 1.0)).unwrap();
        let interval = delta(&earlier, &later);
        assert_eq!((interval.requests, interval.errors), (55.0, 5.0));
        let figures = Figures::of(&interval);
        assert!((figures.error_ratio - 5.0 / 55.0).abs() < 1e-9);
        let restarted = parse(&page(12, 0, 2.0)).unwrap();
        assert_eq!(delta(&later, &restarted).requests, 12.0);
    }

    #[test]
    fn the_p99_interpolates_like_histogram_quantile() {
        // 100 requests: 90 under 5 ms, 10 between 0.25 and 0.5 s: rank 99 is 9/10 into the last.
        let snapshot = parse(&page(90, 10, 1.0)).unwrap();
        let p99 = quantile(0.99, &snapshot.buckets).unwrap();
        assert!((p99 - 0.475).abs() < 1e-9, "{p99}");
        // All in the first bucket: interpolated from 0.
        assert_eq!(
            quantile(0.5, &[(0.005, 10.0), (f64::INFINITY, 10.0)]),
            Some(0.0025)
        );
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(
            quantile(0.99, &[(0.005, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.005)
        );
        // A histogram with no samples has no quantile.
        assert_eq!(quantile(0.99, &[(0.005, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }

    #[test]
    fn a_missing_series_is_no_traffic() {
        let only_process = parse("process_start_time_seconds 7\n").unwrap();
        let figures = Figures::of(&delta(&only_process, &only_process));
        assert_eq!(figures.requests, 0.0);
        assert_eq!(figures.p99, None);
        assert!(matches!(
            judge(&figures, None, &limits()),
            Verdict::Inconclusive(_)
        ));
    }

    #[test]
    fn the_verdict_compares_the_canary_with_the_baseline() {
        let good = Figures {
            requests: 200.0,
            error_ratio: 0.0,
            p99: Some(0.004),
        };
        let limits = limits();
        assert_eq!(judge(&good, Some(&good), &limits), Verdict::Pass);
        // 5 % of 500s fails; 1.2 % beside a baseline at 1 % does not (under its margin).
        let erring = Figures {
            error_ratio: 0.05,
            ..good.clone()
        };
        assert!(
            matches!(judge(&erring, Some(&good), &limits), Verdict::Fail(why) if why.contains("5xx ratio 5.0%"))
        );
        let noisy = Figures {
            error_ratio: 0.012,
            ..good.clone()
        };
        let noisy_baseline = Figures {
            error_ratio: 0.01,
            ..good.clone()
        };
        assert_eq!(judge(&noisy, Some(&noisy_baseline), &limits), Verdict::Pass);
        // Twice the baseline's p99 fails past the floor; a 2 ms blip under the floor does not.
        let slow = Figures {
            p99: Some(0.210),
            ..good.clone()
        };
        assert!(
            matches!(judge(&slow, Some(&good), &limits), Verdict::Fail(why) if why.contains("p99 210.0 ms"))
        );
        let blip = Figures {
            p99: Some(0.012),
            ..good.clone()
        };
        assert_eq!(judge(&blip, Some(&good), &limits), Verdict::Pass);
        // Too few requests says nothing, even with 500s.
        let quiet = Figures {
            requests: 5.0,
            error_ratio: 1.0,
            p99: Some(1.0),
        };
        assert!(matches!(
            judge(&quiet, Some(&good), &limits),
            Verdict::Inconclusive(_)
        ));
        // No baseline traffic: the absolute limits only.
        assert!(matches!(judge(&slow, None, &limits), Verdict::Fail(_)));
        assert_eq!(judge(&good, None, &limits), Verdict::Pass);
    }
}
