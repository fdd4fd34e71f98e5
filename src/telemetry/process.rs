//! Process metrics in the names Prometheus client libraries use everywhere:
//! `process_resident_memory_bytes` and `process_cpu_seconds_total`, read from `/proc/self`
//! on each scrape. Elsewhere than Linux they are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Exports the process's resident memory and CPU time, read when `/metrics` is encoded.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Resident memory and CPU time of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_bytes: i64,
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(stats.resident_bytes);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        // Registered without `_total`: the encoder appends it to counters.
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        Ok(())
    }
}

/// This process's figures, or `None` where `/proc` cannot tell (not Linux, or unreadable).
#[cfg(target_os = "linux")]
pub fn read() -> Option<ProcessStats> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let page = i64::try_from(rustix::param::page_size()).ok()?;
    let ticks = f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).ok()?);
    Some(ProcessStats {
        resident_bytes: resident_pages(&statm)? * page,
        cpu_seconds: cpu_ticks(&stat)? as f64 / ticks,
    })
}

/// This process's figures, or `None` where `/proc` cannot tell (not Linux, or unreadable).
#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<ProcessStats> {
    None
}

/// The second field of `/proc/self/statm`: resident pages.
fn resident_pages(statm: &str) -> Option<i64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, in clock ticks. The command name
/// (field 2) is in parentheses and may itself contain spaces or parentheses, so the fields
/// are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_pages_is_the_second_statm_field() {
        assert_eq!(resident_pages("5000 1234 300 10 0 900 0\n"), Some(1234));
        assert_eq!(resident_pages("5000"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("42 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_resident_memory_and_cpu_time() {
        let stats = read().expect("Linux has /proc/self");
        assert!(stats.resident_bytes > 0);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
