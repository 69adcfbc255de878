//! Real filesystems only: pseudo and in-memory filesystems are noise to an operator, and one
//! device mounted twice (bind mounts) is reported once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sentinel_protocol::{
    limits::{MAX_FILESYSTEMS, MAX_TEXT_BYTES},
    Filesystem, Sample,
};
use sysinfo::{DiskRefreshKind, Disks};

use super::{truncate_text, CollectError};

/// Filesystem types that hold no operator data.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "fuse.lxcfs",
    "fuse.portal",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "nfsd",
    "iso9660",
    "aufs",
    "rootfs",
];

pub fn is_real(fs_type: &str) -> bool {
    !PSEUDO.contains(&fs_type) && !fs_type.starts_with("cgroup")
}

/// How often the mount table is re-read: mounts that come and go are followed within this
/// time, and in between each sample costs one statvfs per filesystem instead of parsing
/// /proc/mounts and probing every block device.
const RELIST_EVERY: Duration = Duration::from_secs(60);

pub struct Filesystems {
    disks: Disks,
    listed_at: Option<Instant>,
}

impl Filesystems {
    pub fn new() -> Result<Self, CollectError> {
        let disks = Disks::new().map_err(|e| CollectError::sysinfo("disks", e))?;
        Ok(Filesystems {
            disks,
            listed_at: None,
        })
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        let storage = DiskRefreshKind::nothing().with_storage();
        if self.listed_at.is_none_or(|t| t.elapsed() >= RELIST_EVERY) {
            // `true`: forget mounts that went away.
            self.disks.refresh_specifics(true, storage);
            self.listed_at = Some(Instant::now());
        } else {
            for d in self.disks.iter_mut() {
                d.refresh_specifics(storage);
            }
        }
        collect(&self.disks, s)
    }
}

fn collect(disks: &Disks, s: &mut Sample) -> Result<(), CollectError> {
    let mut seen = HashSet::new();
    s.filesystems = disks
        .iter()
        .filter(|d| d.total_space() > 0)
        .filter(|d| is_real(&d.file_system().to_string_lossy()))
        .filter(|d| seen.insert(d.name().to_owned()))
        .take(MAX_FILESYSTEMS)
        .map(|d| Filesystem {
            mount: truncate_text(
                d.mount_point().to_string_lossy().into_owned(),
                MAX_TEXT_BYTES,
            ),
            fs_type: truncate_text(
                d.file_system().to_string_lossy().into_owned(),
                MAX_TEXT_BYTES,
            ),
            total_bytes: d.total_space(),
            available_bytes: d.available_space().min(d.total_space()),
        })
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pseudo_filesystems_are_not_real() {
        for t in [
            "tmpfs", "proc", "overlay", "cgroup2", "squashfs", "devtmpfs", "nsfs",
        ] {
            assert!(!super::is_real(t), "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "vfat", "nfs4", "zfs"] {
            assert!(super::is_real(t), "{t}");
        }
    }
}
