//! The canary analysis: for the window, every interval, each canary's and each baseline host's
//! `/actuator/prometheus` read through the SSH connection the rollout holds to it, the interval's
//! deltas compared, and a verdict: promote, go back (after `--failed-intervals` failed
//! intervals), or stop as inconclusive.

use std::thread;
use std::time::{Duration, Instant};

use super::Fleet;
use super::analysis::{self, Figures, Snapshot, Thresholds, Verdict};
use super::report::Report;
use crate::deploy::destination::Destination;
use crate::flags::{CanaryArgs, OnInconclusive};
use crate::util::interrupt::Interrupt;

/// The analysis a rollout was asked for.
pub struct Analysis {
    pub canaries: usize,
    pub window: Duration,
    pub interval: Duration,
    pub limits: Thresholds,
    pub failed_intervals: u16,
    pub on_inconclusive: OnInconclusive,
}

impl Analysis {
    /// The analysis of `args` over `hosts` destinations, or none without `--analysis`.
    pub fn from_args(args: &CanaryArgs, hosts: usize) -> anyhow::Result<Option<Analysis>> {
        let Some(window) = args.analysis else {
            return Ok(None);
        };
        let canaries = match args.canary {
            Some(canaries) => usize::from(canaries),
            None if hosts == 1 => 1,
            None => anyhow::bail!(
                "--analysis over {hosts} hosts needs --canary N: the first N hosts get the release and are compared with the others"
            ),
        };
        if hosts > 1 && canaries >= hosts {
            anyhow::bail!(
                "--canary {canaries} of {hosts} hosts leaves no host on the old release to compare with; give at most {}",
                hosts - 1
            );
        }
        if hosts == 1 && canaries > 1 {
            anyhow::bail!(
                "--canary {canaries}: there is one host; give --canary 1 or leave it out"
            );
        }
        if args.analysis_interval < Duration::from_millis(100) || args.analysis_interval > window {
            anyhow::bail!(
                "--analysis-interval {} must be at least 100ms and at most --analysis {}: give a shorter interval (e.g. --analysis-interval {}) or a longer window",
                crate::flags::show_duration(args.analysis_interval),
                crate::flags::show_duration(window),
                crate::flags::show_duration((window / 2).max(Duration::from_millis(100)))
            );
        }
        if !(args.max_p99_ratio.is_finite() && args.max_p99_ratio >= 1.0) {
            anyhow::bail!(
                "--max-p99-ratio {}: give a factor of 1 or more, e.g. 1.2",
                args.max_p99_ratio
            );
        }
        Ok(Some(Analysis {
            canaries,
            window,
            interval: args.analysis_interval,
            limits: Thresholds {
                max_error_ratio: args.max_error_ratio,
                error_margin: args.error_margin,
                max_p99_ratio: args.max_p99_ratio,
                p99_floor: args.p99_floor,
                min_requests: args.min_requests,
            },
            failed_intervals: args.failed_intervals,
            on_inconclusive: args.on_inconclusive,
        }))
    }

    fn intervals(&self) -> u32 {
        let count = self.window.as_secs_f64() / self.interval.as_secs_f64();
        (count.ceil() as u32).max(1)
    }
}

/// How the analysis ended.
pub enum Ending {
    Promote,
    /// The canaries failed: why (a canary's verdict).
    Failed(String),
    Inconclusive(String),
    Interrupted,
}

/// One host's row of figures for the table and the JSON (the last interval's).
#[derive(Clone, Debug)]
pub struct HostFigures {
    pub role: &'static str,
    pub figures: Option<Figures>,
    pub verdict: String,
}

impl HostFigures {
    pub fn describe(&self) -> String {
        match &self.figures {
            Some(figures) => format!("{} {}: {}", self.role, figures.describe(), self.verdict),
            None => format!("{}: {}", self.role, self.verdict),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role,
            "requests": self.figures.as_ref().map(|figures| figures.requests),
            "error_ratio": self.figures.as_ref().map(|figures| figures.error_ratio),
            "p99_seconds": self.figures.as_ref().and_then(|figures| figures.p99),
            "verdict": self.verdict,
        })
    }
}

impl Fleet {
    /// The server's metrics on `destination`, read over the rollout's connection to it.
    pub fn scrape(&self, destination: &Destination) -> Result<Snapshot, String> {
        let path = Fleet::path(destination);
        let mut args = vec!["metrics".to_owned(), self.env.clone(), path];
        args.extend(self.health_url_for(destination));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = self.connector.fleet(destination, &args);
        match self.connector.run(command, "", false) {
            Ok(ran) if ran.success => analysis::parse(&ran.lines.join("\n")),
            Ok(ran) => Err(ran.why()),
            Err(error) => Err(format!("{error:#}")),
        }
    }

    fn scrape_all(&self, destinations: &[Destination]) -> Vec<Result<Snapshot, String>> {
        thread::scope(|scope| {
            let handles: Vec<_> = destinations
                .iter()
                .map(|destination| scope.spawn(move || self.scrape(destination)))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a scrape thread panicked"))
                .collect()
        })
    }

    /// A host's figures over one interval before it switches: the baseline of a one-host
    /// analysis, or why its server could not be read.
    pub fn before_switch(
        &self,
        destination: &Destination,
        interval: Duration,
    ) -> Result<Figures, String> {
        let first = self.scrape(destination)?;
        thread::sleep(interval);
        let second = self.scrape(destination)?;
        Ok(Figures::of(&analysis::delta(&first, &second)))
    }
}

/// Sleeps until `deadline`, waking early when interrupted; whether it was.
fn wait_until(deadline: Instant, interrupt: &Interrupt) -> bool {
    while Instant::now() < deadline {
        if interrupt.happened() {
            return true;
        }
        thread::sleep((deadline - Instant::now()).min(Duration::from_millis(100)));
    }
    interrupt.happened()
}

/// Runs the analysis of the canaries (`reports[..canaries]`) beside the baseline hosts (the rest
/// that are not already on the new version), or beside `before` (a one-host analysis).
pub fn analyse(
    fleet: &Fleet,
    analysis: &Analysis,
    reports: &mut [Report],
    version: &str,
    before: Option<Result<Figures, String>>,
    interrupt: &Interrupt,
) -> Ending {
    let canaries = analysis.canaries;
    let baseline: Vec<usize> = (canaries..reports.len())
        .filter(|&index| reports[index].before != version)
        .collect();
    let watched: Vec<usize> = (0..canaries).chain(baseline.iter().copied()).collect();
    let destinations: Vec<Destination> = watched
        .iter()
        .map(|&index| reports[index].destination.clone())
        .collect();
    let total = analysis.intervals();
    eprintln!(
        "canary analysis of {version}: {canaries} canar{} beside {}, {total} interval(s) of {}",
        if canaries == 1 { "y" } else { "ies" },
        match &before {
            Some(_) => "its own figures before the switch".to_owned(),
            None => format!("{} host(s) on the old release", baseline.len()),
        },
        crate::flags::show_duration(analysis.interval)
    );
    let before = before.map(|figures| match figures {
        Ok(figures) => Some(figures),
        Err(why) => {
            eprintln!("  no figures from before the switch ({why}): the absolute limits only");
            None
        }
    });
    let started = Instant::now();
    let mut last = fleet.scrape_all(&destinations);
    let first_start: Vec<Option<f64>> = last
        .iter()
        .map(|scraped| {
            scraped
                .as_ref()
                .ok()
                .and_then(|snapshot| snapshot.start_time)
        })
        .collect();
    let mut failed = 0;
    for interval in 1..=total {
        if wait_until(started + analysis.interval * interval, interrupt) {
            return Ending::Interrupted;
        }
        let now = fleet.scrape_all(&destinations);
        // The baseline: every host still on the old release that was read both times.
        let baseline_figures = match &before {
            Some(figures) => figures.clone(),
            None => {
                let deltas: Vec<Snapshot> = (canaries..watched.len())
                    .filter_map(|slot| match (&last[slot], &now[slot]) {
                        (Ok(earlier), Ok(later)) => Some(analysis::delta(earlier, later)),
                        _ => None,
                    })
                    .collect();
                let summed = analysis::sum(&deltas);
                (summed.requests > 0.0).then(|| Figures::of(&summed))
            }
        };
        for slot in canaries..watched.len() {
            let report = &mut reports[watched[slot]];
            report.analysis = Some(match (&last[slot], &now[slot]) {
                (Ok(earlier), Ok(later)) => HostFigures {
                    role: "baseline",
                    figures: Some(Figures::of(&analysis::delta(earlier, later))),
                    verdict: "baseline".to_owned(),
                },
                (_, Err(why)) | (Err(why), _) => HostFigures {
                    role: "baseline",
                    figures: None,
                    verdict: format!("not read: {why}"),
                },
            });
        }
        let mut failures = Vec::new();
        let mut inconclusive = Vec::new();
        for slot in 0..canaries {
            let verdict = match (&last[slot], &now[slot]) {
                (_, Err(why)) => (None, Verdict::Fail(format!("the scrape failed: {why}"))),
                (Err(why), Ok(_)) => (
                    None,
                    Verdict::Fail(format!("no earlier scrape to compare with: {why}")),
                ),
                (Ok(earlier), Ok(later)) => {
                    let figures = Figures::of(&analysis::delta(earlier, later));
                    let verdict = if later.start_time != first_start[slot] {
                        Verdict::Fail(
                            "its server restarted during the analysis (process_start_time_seconds changed)"
                                .to_owned(),
                        )
                    } else {
                        analysis::judge(&figures, baseline_figures.as_ref(), &analysis.limits)
                    };
                    (Some(figures), verdict)
                }
            };
            let (figures, verdict) = verdict;
            let report = &mut reports[watched[slot]];
            let why = match &verdict {
                Verdict::Pass => String::new(),
                Verdict::Fail(why) | Verdict::Inconclusive(why) => format!(" ({why})"),
            };
            eprintln!(
                "  interval {interval}/{total}: {}: {}; baseline {}: {}{why}",
                report.destination,
                figures
                    .as_ref()
                    .map_or_else(|| "not read".to_owned(), Figures::describe),
                baseline_figures
                    .as_ref()
                    .map_or_else(|| "no traffic".to_owned(), Figures::describe),
                verdict.label()
            );
            report.analysis = Some(HostFigures {
                role: "canary",
                figures,
                verdict: verdict.label().to_owned(),
            });
            match verdict {
                Verdict::Pass => {}
                Verdict::Fail(why) => failures.push(format!("{}: {why}", report.destination)),
                Verdict::Inconclusive(why) => {
                    inconclusive.push(format!("{}: {why}", report.destination));
                }
            }
        }
        if !failures.is_empty() {
            failed += 1;
            if failed >= analysis.failed_intervals {
                return Ending::Failed(format!(
                    "the canary analysis failed in {failed} interval(s): {}",
                    failures.join("; ")
                ));
            }
        } else if !inconclusive.is_empty() && analysis.on_inconclusive == OnInconclusive::Stop {
            return Ending::Inconclusive(inconclusive.join("; "));
        }
        last = now;
    }
    if failed > 0 {
        eprintln!(
            "canary analysis: {failed} failed interval(s) of {total}, under --failed-intervals {}: promoting",
            analysis.failed_intervals
        );
    } else {
        eprintln!("canary analysis: passed {total} interval(s): promoting {version}");
    }
    Ending::Promote
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn analysis_of(args: &[&str], hosts: usize) -> anyhow::Result<Option<Analysis>> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            canary: CanaryArgs,
        }
        let mut argv = vec!["deploy"];
        argv.extend_from_slice(args);
        Analysis::from_args(&Only::parse_from(argv).canary, hosts)
    }

    #[test]
    fn a_window_the_interval_does_not_fit_or_a_canary_without_a_baseline_is_refused() {
        let error = analysis_of(&["--analysis", "5s"], 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains(
                "--analysis-interval 30s must be at least 100ms and at most --analysis 5s"
            ) && error.contains("e.g. --analysis-interval 2500ms"),
            "{error}"
        );
        let error = analysis_of(&["--analysis", "1m"], 3)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("needs --canary N"), "{error}");
        let error = analysis_of(&["--canary", "3", "--analysis", "1m"], 3)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("give at most 2"), "{error}");
        let one = analysis_of(&["--analysis", "1m"], 1).unwrap().unwrap();
        assert_eq!((one.canaries, one.intervals()), (1, 2));
        assert!(analysis_of(&[], 3).unwrap().is_none());
    }
}
