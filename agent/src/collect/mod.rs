//! Collection: one small module per subsystem, each filling its part of a [`Sample`].
//! sysinfo where it has the figure, /proc directly where it does not. Only what is reported is
//! refreshed (never `System::new_all()`, which walks every process). One failing collector is
//! logged (rate-limited) and leaves its fields at zero; it does not cost the sample.

mod cpu;
mod disk;
mod filesystems;
mod load;
mod memory;
mod network;
mod procfile;
mod system;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sentinel_protocol::{HostInfo, Sample};
use sysinfo::System;

/// How often one collector's repeated failure is logged again.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// CPU shares need two /proc/stat readings this far apart (20 ticks per core at USER_HZ 100);
/// the first
/// sample after start waits this long after the priming reading.
pub const PRIMING_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("cannot parse {what}")]
    Parse { what: &'static str },
    #[error("sysinfo cannot read {what}: {reason}")]
    Sysinfo { what: &'static str, reason: String },
    /// A source that has not answered for a long time (e.g. statvfs on a dead NFS mount).
    #[error("{what} has not returned for {secs} s (a hung mount?)")]
    Hung { what: &'static str, secs: u64 },
    /// An all-zero reading: typically a chroot or container without /proc.
    #[error("{what} reads as zero (no /proc?)")]
    Zero { what: &'static str },
}

impl CollectError {
    fn sysinfo(what: &'static str, e: impl std::fmt::Display) -> Self {
        CollectError::Sysinfo {
            what,
            reason: e.to_string(),
        }
    }
}

/// The state kept between samples: open /proc files, previous counters, sysinfo handles.
pub struct Collector {
    /// Host facts come from sysinfo (once).
    sys: System,
    cpu: cpu::Cpu,
    memory: memory::Memory,
    load: load::Load,
    filesystems: filesystems::Filesystems,
    network: network::Network,
    disk: disk::DiskIo,
    /// /proc/uptime, kept open: uptime and boot time per sample.
    uptime: system::Uptime,
    processes: system::Processes,
    /// Last time each collector's error was logged, so a broken one does not flood the log.
    error_logged: HashMap<&'static str, Instant>,
}

impl Collector {
    /// Opens the sources and takes the priming CPU reading. Wait [`PRIMING_DELAY`] before
    /// the first [`Collector::sample`] for real CPU figures.
    pub fn new() -> Result<Self, CollectError> {
        Ok(Collector {
            sys: System::new().map_err(|e| CollectError::sysinfo("system", e))?,
            cpu: cpu::Cpu::new(),
            memory: memory::Memory::new(),
            load: load::Load::new(),
            filesystems: filesystems::Filesystems::new()?,
            network: network::Network::new(),
            disk: disk::DiskIo::new(),
            uptime: system::Uptime::new(),
            processes: system::Processes::new(),
            error_logged: HashMap::new(),
        })
    }

    /// Waits (at most `timeout`) for the first filesystem figures: `--once` takes a single
    /// sample, with no earlier refresh to fall back on.
    pub fn wait_filesystems(&self, timeout: Duration) {
        self.filesystems.wait_first(timeout);
    }

    /// Facts that do not change while the agent runs.
    pub fn host_info(&mut self) -> HostInfo {
        system::host_info(&mut self.sys)
    }

    /// One reading. `seq`, `ts_ms` and `dropped` are left for the caller. Fails only when
    /// the reading is meaningless (all zero), never for one broken collector.
    pub fn sample(&mut self) -> Result<Sample, CollectError> {
        let mut s = Sample::default();
        // The helper thread takes the statvfs figures while /proc is read here.
        self.filesystems.refresh();
        let results = [
            ("cpu", self.cpu.collect(&mut s)),
            ("memory", self.memory.collect(&mut s)),
            ("load", self.load.collect(&mut s)),
            ("network", self.network.collect(&mut s)),
            ("disk", self.disk.collect(&mut s)),
            (
                "system",
                system::collect(&mut self.uptime, &mut self.processes, &mut s),
            ),
            ("filesystems", self.filesystems.collect(&mut s)),
        ];
        let mut memory_failed = None;
        for (name, result) in results {
            if let Err(error) = result {
                if name == "memory" {
                    memory_failed = Some(error);
                    continue;
                }
                self.log_error(name, &error);
            }
        }
        if let Some(error) = memory_failed {
            // Memory is the one figure every host has: without it the whole reading is void.
            return Err(error);
        }
        Ok(s)
    }

    fn log_error(&mut self, collector: &'static str, error: &CollectError) {
        let now = Instant::now();
        let due = self
            .error_logged
            .get(collector)
            .is_none_or(|t| now.duration_since(*t) >= ERROR_LOG_EVERY);
        if due {
            self.error_logged.insert(collector, now);
            tracing::warn!(collector, %error, "A collector failed; its fields are zero in this sample.");
        } else {
            tracing::debug!(collector, %error, "A collector failed again.");
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary (protocol text limits).
pub fn truncate_text(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_sample_is_plausible_and_valid() {
        let mut c = Collector::new().unwrap();
        std::thread::sleep(PRIMING_DELAY);
        let mut s = c.sample().unwrap();
        s.seq = 1;
        s.validate().unwrap();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(s.mem_total_bytes, kib * 1024);
        assert!(s.mem_available_bytes > 0 && s.mem_available_bytes <= s.mem_total_bytes);
        assert_eq!(s.mem_used_bytes, s.mem_total_bytes - s.mem_available_bytes);
        assert!(!s.cpu_cores_percent.is_empty());
        assert!(s.uptime_s > 0 && s.boot_time_s > 1_500_000_000, "{s:?}");
        assert!(s.processes > 0);
        assert!(s.interfaces.iter().all(|i| i.name != "lo"));
        assert!(s
            .filesystems
            .iter()
            .all(|f| f.total_bytes > 0 && !f.fs_type.contains("tmpfs")));
        if std::path::Path::new("/sys/block").exists() {
            assert!(
                s.disk_read_bytes > 0,
                "a booted machine has read from some disk"
            );
        }
    }

    #[test]
    fn host_info_is_filled() {
        let mut c = Collector::new().unwrap();
        let h = c.host_info();
        assert!(h.cpu_count > 0);
        assert!(
            !h.kernel.is_empty() && !h.arch.is_empty() && !h.os.is_empty(),
            "{h:?}"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate_text("héllo".into(), 2), "h");
        assert_eq!(truncate_text("abc".into(), 5), "abc");
    }
}
