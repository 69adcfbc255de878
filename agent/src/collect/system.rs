//! Uptime, boot time, process count, and the host facts sent once in the handshake.

use sentinel_protocol::{limits::MAX_TEXT_BYTES, HostInfo, Sample};
use sysinfo::{CpuRefreshKind, System};

use super::{truncate_text, CollectError};

pub fn collect(s: &mut Sample) -> Result<(), CollectError> {
    s.uptime_s = System::uptime().map_err(|e| CollectError::sysinfo("uptime", e))?;
    s.boot_time_s = System::boot_time().map_err(|e| CollectError::sysinfo("boot time", e))?;
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
