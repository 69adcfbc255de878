//! Uptime, boot time, process count, and the host facts sent once in the handshake.

use sentinel_protocol::{limits::MAX_TEXT_BYTES, HostInfo, Sample};
use sysinfo::{CpuRefreshKind, System};

use super::{truncate_text, CollectError};

/// Boot time never changes while the agent runs; read it once.
pub fn boot_time() -> Result<u64, CollectError> {
    System::boot_time().map_err(|e| CollectError::sysinfo("boot time", e))
}

/// `boot_time_s` is read once at start: uptime follows from the clock without a file read.
pub fn collect(boot_time_s: u64, s: &mut Sample) -> Result<(), CollectError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    s.boot_time_s = boot_time_s;
    s.uptime_s = now.saturating_sub(boot_time_s);
    s.processes = count_processes()?;
    Ok(())
}

/// Numeric directories of /proc: one per process, without reading any of them.
fn count_processes() -> Result<u32, CollectError> {
    let dir = std::fs::read_dir("/proc").map_err(|error| CollectError::Io {
        what: "/proc",
        error,
    })?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    if n == 0 {
        return Err(CollectError::Zero {
            what: "process count",
        });
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
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
