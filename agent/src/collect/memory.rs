//! Memory and swap from /proc/meminfo, through a kept-open descriptor. sysinfo has the same
//! figures but allocates a 16 KiB buffer per read, which musl's allocator maps and unmaps every
//! sample (page faults and two syscalls each time: docs/BENCHMARKS.md, "Agent profile").

use sentinel_protocol::Sample;

use super::procfile::ProcFile;
use super::CollectError;

/// The figures read, in bytes.
#[derive(Debug, Default, PartialEq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Parses the `Key:   N kB` lines that matter. MemAvailable exists since Linux 3.14; older
/// kernels get free + buffers + cached as the usual approximation.
pub fn parse(text: &str) -> Option<MemInfo> {
    let (mut m, mut available, mut free, mut cached) = (MemInfo::default(), None, 0, 0);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib = |r: &str| {
            r.split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let bytes = match kib(rest) {
            Some(v) => v.saturating_mul(1024),
            None => continue,
        };
        match key {
            "MemTotal" => m.total = bytes,
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free += bytes,
            "Buffers" | "Cached" => cached += bytes,
            "SwapTotal" => m.swap_total = bytes,
            "SwapFree" => m.swap_free = bytes,
            _ => {}
        }
    }
    m.available = available.unwrap_or(free + cached);
    (m.total > 0).then_some(m)
}

pub struct Memory {
    meminfo: ProcFile,
}

impl Memory {
    pub fn new() -> Self {
        Memory {
            meminfo: ProcFile::new("/proc/meminfo"),
        }
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        let m = parse(self.meminfo.read()?).ok_or(CollectError::Zero {
            what: "total memory",
        })?;
        s.mem_total_bytes = m.total;
        s.mem_available_bytes = m.available.min(m.total);
        s.mem_used_bytes = m.total - s.mem_available_bytes;
        s.swap_total_bytes = m.swap_total;
        s.swap_used_bytes = m.swap_total.saturating_sub(m.swap_free);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_lines_give_bytes_and_zero_total_is_no_reading() {
        let text = "MemTotal:       24684084 kB\nMemFree:         1000 kB\nMemAvailable:   23000000 kB\nBuffers: 5 kB\nSwapTotal:       2048 kB\nSwapFree:        1024 kB\nHugePages_Total:       0\n";
        let m = super::parse(text).unwrap();
        assert_eq!(m.total, 24_684_084 * 1024);
        assert_eq!(m.available, 23_000_000 * 1024);
        assert_eq!((m.swap_total, m.swap_free), (2048 * 1024, 1024 * 1024));
        let old_kernel =
            super::parse("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n")
                .unwrap();
        assert_eq!(
            old_kernel.available,
            35 * 1024,
            "free + buffers + cached without MemAvailable"
        );
        assert!(
            super::parse("MemTotal: 0 kB\n").is_none(),
            "a zero reading is no reading"
        );
    }
}
