//! Memory and swap from sysinfo (RAM and swap only; no process walk).

use sentinel_protocol::Sample;
use sysinfo::{MemoryRefreshKind, System};

use super::CollectError;

pub fn collect(sys: &mut System, s: &mut Sample) -> Result<(), CollectError> {
    sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
    s.mem_total_bytes = sys.total_memory();
    if s.mem_total_bytes == 0 {
        return Err(CollectError::Zero {
            what: "total memory",
        });
    }
    s.mem_available_bytes = sys.available_memory().min(s.mem_total_bytes);
    s.mem_used_bytes = s.mem_total_bytes - s.mem_available_bytes;
    s.swap_total_bytes = sys.total_swap();
    s.swap_used_bytes = sys.used_swap().min(s.swap_total_bytes);
    Ok(())
}
