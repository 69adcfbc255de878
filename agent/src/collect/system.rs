//! Uptime, boot time, process count, and the host facts sent once in the handshake.

use sentinel_protocol::{limits::MAX_TEXT_BYTES, HostInfo, Sample};
use sysinfo::{CpuRefreshKind, System};

use super::{procfile::ProcFile, truncate_text, CollectError};

/// The time since boot from /proc/uptime (the kernel's boot clock, CLOCK_BOOTTIME), kept
/// open and re-read in place. Reading it per sample makes uptime follow the kernel whatever
/// the wall clock does: "wall clock minus a boot time read at start" was 21.6 s off after a
/// clock step.
pub struct Uptime {
    file: ProcFile,
}

impl Uptime {
    pub fn new() -> Self {
        Uptime {
            file: ProcFile::new("/proc/uptime"),
        }
    }

    /// Milliseconds since boot.
    pub fn read_ms(&mut self) -> Result<u64, CollectError> {
        parse_uptime_ms(self.file.read()?).ok_or(CollectError::Zero { what: "uptime" })
    }
}

/// The first field of /proc/uptime ("12345.67 23456.78\n") in milliseconds; `None` if it is
/// missing, malformed or zero.
fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then_some((secs * 1000.0) as u64)
}

/// How old the reported process count may be (docs/PROTOCOL.md says so for `procs`).
pub const PROCESSES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts processes as the numeric entries of /proc, through one kept-open descriptor and one
/// reused buffer (rustix's raw getdents). `std::fs::read_dir` re-opens /proc and reads it in
/// 2 KiB steps with an allocation per entry: five syscalls and ~200 allocations per sample,
/// the largest cost left in the agent's profile.
pub struct Processes {
    dir: Option<std::os::fd::OwnedFd>,
    /// The last count and when it was taken: walking /proc makes the kernel look up every
    /// pid's dentry, ~30% of the agent's CPU per walk (perf, docs/BENCHMARKS.md), and the
    /// count moves slowly, so it is refreshed every [`PROCESSES_EVERY`].
    last: Option<(u32, std::time::Instant)>,
    /// 64 KiB: one getdents call for ~2,700 processes; more just take more calls.
    buf: Vec<u8>,
}

impl Processes {
    pub fn new() -> Self {
        Processes {
            dir: None,
            last: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// The process count, at most [`PROCESSES_EVERY`] old.
    pub fn count(&mut self) -> Result<u32, CollectError> {
        if let Some((n, at)) = self.last {
            if at.elapsed() < PROCESSES_EVERY {
                return Ok(n);
            }
        }
        let n = self.walk()?;
        self.last = Some((n, std::time::Instant::now()));
        Ok(n)
    }

    fn walk(&mut self) -> Result<u32, CollectError> {
        let io = |error: rustix::io::Errno| CollectError::Io {
            what: "/proc",
            error: error.into(),
        };
        let dir = match &self.dir {
            Some(d) => {
                rustix::fs::seek(d, rustix::fs::SeekFrom::Start(0)).map_err(io)?;
                d
            }
            None => self.dir.insert(
                rustix::fs::open(
                    "/proc",
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(io)?,
            ),
        };
        let mut n = 0u32;
        let mut failed = None;
        let mut entries = rustix::fs::RawDir::new(dir, self.buf.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            match entry {
                Ok(e) => {
                    let name = e.file_name().to_bytes();
                    if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                        n += 1;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            // Reopen next time: the descriptor may be what broke.
            self.dir = None;
            return Err(io(e));
        }
        if n == 0 {
            return Err(CollectError::Zero {
                what: "process count",
            });
        }
        Ok(n)
    }
}

/// Uptime from the boot clock; the boot time is the wall clock minus it, as the kernel
/// computes `btime` (so after a wall-clock step it moves with the clock, like `btime`).
pub fn collect(
    uptime: &mut Uptime,
    processes: &mut Processes,
    s: &mut Sample,
) -> Result<(), CollectError> {
    let up_ms = uptime.read_ms()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    s.uptime_s = up_ms / 1000;
    s.boot_time_s = now_ms.saturating_sub(up_ms) / 1000;
    s.processes = processes.count()?;
    Ok(())
}

pub fn host_info(sys: &mut System) -> HostInfo {
    if sys.cpus().is_empty() {
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
    }
    let text = |s: String| truncate_text(s, MAX_TEXT_BYTES);
    HostInfo {
        os: text(
            System::long_os_version()
                .or_else(|_| System::name())
                .unwrap_or_else(|_| "Linux".into()),
        ),
        kernel: text(System::kernel_version().unwrap_or_default()),
        arch: text(System::cpu_arch()),
        cpu_model: text(
            sys.cpus()
                .first()
                .map(|c| c.brand().trim().to_owned())
                .unwrap_or_default(),
        ),
        cpu_count: u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_first_field_of_proc_uptime_in_milliseconds() {
        assert_eq!(parse_uptime_ms("12345.67 23456.78\n"), Some(12_345_670));
        assert_eq!(parse_uptime_ms("0.00 0.00\n"), None);
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("junk 1\n"), None);
        let mut real = Uptime::new();
        let (a, b) = (real.read_ms().unwrap(), real.read_ms().unwrap());
        assert!(a > 0 && b >= a, "{a} then {b}");
    }
}
