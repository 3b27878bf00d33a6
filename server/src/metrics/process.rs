//! The process's own figures, as every Prometheus client library names them, read from `/proc`
//! at each scrape: start time, resident memory, CPU seconds and open file descriptors.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks a second (`getconf CLK_TCK`), 100 on every Linux platform Rust targets.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector;

/// What `/proc/self/stat` and `/proc/stat` give.
struct Stat {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: f64,
}

fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // Field 14 (utime) is fields[11] here, as the first two fields (pid, comm) are gone.
    let number = |index: usize| fields.get(index)?.parse::<f64>().ok();
    let cpu_seconds = (number(11)? + number(12)?) / TICKS_PER_SECOND;
    let started_ticks = number(19)?;
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| {
            line.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })?
        * 1024.0;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    Some(Stat {
        cpu_seconds,
        start_time_seconds: boot_time + started_ticks / TICKS_PER_SECOND,
        resident_bytes,
    })
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stat) = stat() {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            for (name, help, value) in [
                (
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    stat.start_time_seconds,
                ),
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    stat.resident_bytes,
                ),
            ] {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(fds) = open_fds() {
            let gauge = ConstGauge::new(fds);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_are_read_from_proc() {
        let stat = stat().expect("/proc/self/stat reads");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stat.start_time_seconds <= now + 1.0 && stat.start_time_seconds > now - 3600.0);
        assert!(stat.resident_bytes > 1024.0 * 1024.0);
        assert!(open_fds().unwrap() >= 3.0);
    }
}
