//! Process metrics in the names Prometheus client libraries use everywhere
//! (`process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`, `process_threads`,
//! `process_start_time_seconds`), plus `waitroom_open_sockets` (open TCP/Unix sockets:
//! listeners, HTTP clients, Postgres and AMQP connections), read from `/proc/self` on each
//! scrape. prometheus-client has no process collector, hence this one. Elsewhere than Linux
//! they are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Exports this process's figures, read when `/metrics` is encoded.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Memory, CPU time and file descriptors of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_bytes: i64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: i64,
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: i64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors (None when `/proc/self/fd` cannot be listed).
    pub open_fds: Option<i64>,
    /// Of which sockets.
    pub open_sockets: Option<i64>,
    /// The soft limit on open file descriptors (None: unlimited or unreadable).
    pub max_fds: Option<i64>,
}

fn gauge<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = read() else {
            return Ok(());
        };
        let e = &mut encoder;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            stats.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stats.virtual_bytes,
        )?;
        // Registered without `_total`: the encoder appends it to counters.
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        gauge(e, "process_threads", "Number of OS threads", stats.threads)?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            stats.start_time_seconds,
        )?;
        if let Some(n) = stats.open_fds {
            gauge(e, "process_open_fds", "Number of open file descriptors", n)?;
        }
        if let Some(n) = stats.max_fds {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors",
                n,
            )?;
        }
        if let Some(n) = stats.open_sockets {
            gauge(
                e,
                "waitroom_open_sockets",
                "Open sockets: listeners, HTTP clients, Postgres and AMQP connections",
                n,
            )?;
        }
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
    let fields = StatFields::parse(&stat)?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s))?;
    let (open_fds, open_sockets) = match fds() {
        Some((fds, sockets)) => (Some(fds), Some(sockets)),
        None => (None, None),
    };
    Some(ProcessStats {
        resident_bytes: statm_field(&statm, 1)? * page,
        virtual_bytes: statm_field(&statm, 0)? * page,
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        threads: fields.threads,
        start_time_seconds: boot_time as f64 + fields.start_ticks as f64 / ticks,
        open_fds,
        open_sockets,
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s)),
    })
}

/// This process's figures, or `None` where `/proc` cannot tell (not Linux, or unreadable).
#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<ProcessStats> {
    None
}

/// Open descriptors and, of them, sockets (their link reads `socket:[inode]`).
#[cfg(target_os = "linux")]
fn fds() -> Option<(i64, i64)> {
    let mut fds = 0;
    let mut sockets = 0;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        fds += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    // The directory handle used for the listing was one of them.
    Some((fds - 1, sockets)).filter(|(n, _)| *n >= 0)
}

/// Field `n` (0-based) of `/proc/self/statm`, in pages: 0 is the virtual size, 1 resident.
fn statm_field(statm: &str, n: usize) -> Option<i64> {
    statm.split_whitespace().nth(n)?.parse().ok()
}

/// What is read from `/proc/self/stat`.
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    threads: i64,
    start_ticks: u64,
}

impl StatFields {
    /// utime, stime (fields 14, 15), num_threads (20) and starttime (22), counted from the
    /// last `)`: the command name (field 2) may itself contain spaces or parentheses.
    fn parse(stat: &str) -> Option<Self> {
        let (_, rest) = stat.rsplit_once(')')?;
        // rest starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            utime: f.get(11)?.parse().ok()?,
            stime: f.get(12)?.parse().ok()?,
            threads: f.get(17)?.parse().ok()?,
            start_ticks: f.get(19)?.parse().ok()?,
        })
    }
}

/// `btime` of `/proc/stat`: boot time, seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_fields_are_virtual_then_resident_pages() {
        assert_eq!(statm_field("5000 1234 300 10 0 900 0\n", 1), Some(1234));
        assert_eq!(statm_field("5000 1234 300 10 0 900 0\n", 0), Some(5000));
        assert_eq!(statm_field("5000", 1), None);
    }

    #[test]
    fn stat_fields_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000 \
                    123456 300";
        assert_eq!(
            StatFields::parse(stat),
            Some(StatFields {
                utime: 250,
                stime: 75,
                threads: 8,
                start_ticks: 1000,
            })
        );
        assert_eq!(StatFields::parse("42 (x) S 1"), None);
    }

    #[test]
    fn limits_give_the_soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95487                95487                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_cpu_time_threads_and_descriptors() {
        let stats = read().expect("Linux has /proc/self");
        assert!(stats.resident_bytes > 0);
        assert!(stats.virtual_bytes >= stats.resident_bytes);
        assert!(stats.cpu_seconds >= 0.0);
        assert!(stats.threads >= 1);
        assert!(stats.open_fds.expect("fds listed") >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0);
        assert!(stats.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
