//! Disk I/O: cumulative read/write bytes of whole disks from /proc/diskstats (sysinfo only
//! has per-process I/O). Partitions, loop, ram/zram and device-mapper/md devices are skipped:
//! they would count the same bytes twice or are not disks.

use sentinel_protocol::Sample;

use std::collections::HashMap;

use super::procfile::ProcFile;
use super::CollectError;

/// /proc/diskstats counts 512-byte sectors whatever the device's sector size.
const SECTOR_BYTES: u64 = 512;

/// Devices that are not physical disks or duplicate another device's I/O.
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `is_whole_disk` decides partitions (whole disks appear in /sys/block).
pub fn parse(text: &str, mut is_whole_disk: impl FnMut(&str) -> bool) -> Option<(u64, u64)> {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        if is_virtual(name) || !is_whole_disk(name) {
            continue;
        }
        let sectors_read: u64 = f[5].parse().ok()?;
        let sectors_written: u64 = f[9].parse().ok()?;
        read = read.saturating_add(sectors_read.saturating_mul(SECTOR_BYTES));
        written = written.saturating_add(sectors_written.saturating_mul(SECTOR_BYTES));
    }
    Some((read, written))
}

fn whole_disk(name: &str) -> bool {
    let sys_block = std::path::Path::new("/sys/block");
    if sys_block.exists() {
        sys_block.join(name).exists()
    } else {
        // No /sys (some containers): a name ending in a digit after letters is a partition
        // (sda1); nvme/mmc partitions end in pN.
        !(name.ends_with(|c: char| c.is_ascii_digit())
            && (name.starts_with("sd")
                || name.starts_with("vd")
                || name.starts_with("xvd")
                || name.contains('p')))
    }
}

pub struct DiskIo {
    stats: ProcFile,
    /// Whether a device name is a whole disk, decided once per name (two stat calls each).
    whole: HashMap<String, bool>,
}

impl DiskIo {
    pub fn new() -> Self {
        DiskIo {
            stats: ProcFile::new("/proc/diskstats"),
            whole: HashMap::new(),
        }
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        let whole = &mut self.whole;
        let is_whole = |name: &str| {
            *whole
                .entry(name.to_owned())
                .or_insert_with(|| whole_disk(name))
        };
        let cell = std::cell::RefCell::new(is_whole);
        let (read, written) =
            parse(self.stats.read()?, |n| (cell.borrow_mut())(n)).ok_or(CollectError::Parse {
                what: "/proc/diskstats",
            })?;
        s.disk_read_bytes = read;
        s.disk_write_bytes = written;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_whole_real_disks_are_counted_in_bytes() {
        let text = "\
   7       0 loop0 5 0 100 0 0 0 0 0 0 0 0
 254       0 vda 17545 6153 1000 25033 24890 24838 2000 22091 0 5848 48383
 254       1 vda1 17000 6000 900 25000 24000 24000 1900 22000 0 5800 48000
 253       0 dm-0 1 0 7777 0 0 0 7777 0 0 0 0
 259       0 nvme0n1 1 0 10 0 0 0 20 0 0 0 0
 259       1 nvme0n1p1 1 0 10 0 0 0 20 0 0 0 0
";
        let whole = |n: &str| ["vda", "nvme0n1", "dm-0", "loop0"].contains(&n);
        assert_eq!(super::parse(text, whole), Some((1010 * 512, 2020 * 512)));
    }
}
