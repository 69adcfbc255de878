//! The shared-memory segment (/dev/shm/NAME) that holds the table: created by the supervisor
//! (which removes a stale one left by a SIGKILLed predecessor), opened by the children.

use anyhow::{bail, Context};
use shared_memory::{Shmem, ShmemConf, ShmemError};

use crate::table::{layout, Table, TableError};

/// A mapped segment and the table view of it. The supervisor's mapping owns the segment and
/// unlinks it when dropped; the children's do not.
pub struct Segment {
    table: Table,
    /// Keeps the mapping alive (dropping it unmaps; for the supervisor also unlinks).
    _mapping: Shmem,
}

fn os_id(name: &str) -> String {
    format!("/{name}")
}

/// Wall-clock unix ms: for timestamps shown or stored (receive times, snapshot ages). It
/// steps with NTP or an operator's `date`: never judge a process's liveness by it
/// ([`boot_ms`]).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds of CLOCK_BOOTTIME: never steps (NTP, `date -s`) and is the same clock for
/// every process of one boot, so an age written by one process (the collector's heartbeat)
/// and judged by another (the supervisor's watchdog, /healthz) survives wall-clock steps.
/// Unlike CLOCK_MONOTONIC it also counts a suspend, which is still time without a heartbeat.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Segment {
    /// Creates and initialises the table. A segment of that name left by a dead supervisor is
    /// removed first (after an image of its hosts was taken: returned, so the caller can
    /// restore it); one whose supervisor is alive is an error.
    pub fn create(
        name: &str,
        capacity: u32,
        history_points: u32,
    ) -> anyhow::Result<(Segment, Option<Vec<u8>>)> {
        let size = layout::segment_size(capacity, history_points);
        let mut salvaged = None;
        let shmem = match ShmemConf::new().os_id(os_id(name)).size(size).create() {
            Ok(s) => s,
            Err(ShmemError::MappingIdExists) | Err(ShmemError::LinkExists) => {
                salvaged = remove_stale(name)?;
                ShmemConf::new()
                    .os_id(os_id(name))
                    .size(size)
                    .create()
                    .with_context(|| {
                        format!("cannot create shared memory segment /dev/shm/{name}")
                    })?
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create shared memory segment /dev/shm/{name}")
                })
            }
        };
        // SAFETY: a fresh mapping of `size` bytes, page aligned, nobody else has it yet.
        let table = unsafe {
            Table::init(
                shmem.as_ptr(),
                shmem.len(),
                capacity,
                history_points,
                std::process::id(),
                now_ms(),
            )
        }
        .context("cannot initialise the table")?;
        Ok((
            Segment {
                table,
                _mapping: shmem,
            },
            salvaged,
        ))
    }

    /// Opens the table the supervisor created (children).
    pub fn open(name: &str) -> anyhow::Result<Segment> {
        let shmem = ShmemConf::new()
            .os_id(os_id(name))
            .open()
            .with_context(|| format!("cannot open shared memory segment /dev/shm/{name}"))?;
        // SAFETY: the mapping stays alive as long as the Segment, which owns both.
        let table = unsafe { Table::open(shmem.as_ptr(), shmem.len()) }
            .with_context(|| format!("/dev/shm/{name} is not a usable table"))?;
        Ok(Segment {
            table,
            _mapping: shmem,
        })
    }

    pub fn table(&self) -> &Table {
        &self.table
    }
}

/// Removes /dev/shm/NAME unless its recorded supervisor is a live sentinel-master. A stale
/// table of this binary's layout, or of an older one (`table::older`, migrated), is imaged first (read-only, with the seqlock reader, after
/// its children are gone): a SIGKILLed supervisor's table is the freshest state there is.
fn remove_stale(name: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut salvaged = None;
    let pid = match ShmemConf::new().os_id(os_id(name)).open() {
        Ok(shmem) => {
            // SAFETY: the mapping lives until the end of this block.
            match unsafe { Table::open(shmem.as_ptr(), shmem.len()) } {
                Ok(t) => {
                    let pid = t.header().supervisor_pid.load(std::sync::atomic::Ordering::Relaxed);
                    if !is_live_master(pid as i32) || pid == u64::from(std::process::id()) {
                        salvaged = salvage(name, t.header(), || t.image(now_ms()));
                    }
                    Some(pid)
                }
                Err(TableError::BadVersion { found }) if found < layout::LAYOUT_VERSION => {
                    // An older Sentinel's table (an upgrade after a SIGKILL): imaged with its
                    // own slot geometry and migrated, like an older snapshot.
                    // SAFETY: open() checked the mapping holds at least a header.
                    let header = unsafe { &*(shmem.as_ptr() as *const layout::Header) };
                    let pid = header.supervisor_pid.load(std::sync::atomic::Ordering::Relaxed);
                    if !is_live_master(pid as i32) {
                        // SAFETY: the mapping lives until the end of this block.
                        salvaged = salvage(name, header, || unsafe {
                            crate::table::older::image_of_older_segment(shmem.as_ptr(), shmem.len(), now_ms())
                        });
                    }
                    Some(pid)
                }
                Err(TableError::BadVersion { .. }) | Err(TableError::Inconsistent(_)) | Err(TableError::SizeMismatch { .. }) => {
                    // An older or differently sized Sentinel table: its pid sits at the same offset.
                    // SAFETY: open() checked the mapping holds at least a header.
                    Some(unsafe { (*(shmem.as_ptr() as *const layout::Header)).supervisor_pid.load(std::sync::atomic::Ordering::Relaxed) })
                }
                Err(TableError::BadMagic) | Err(TableError::TooSmall { .. }) if looks_unfinished(&shmem) => None,
                Err(e) => bail!(
                    "/dev/shm/{name} exists and is not a Sentinel table ({e}); remove it or choose another --shm-name"
                ),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, segment = %format!("/dev/shm/{name}"), "cannot map existing segment; removing it");
            None
        }
    };
    if let Some(pid) = pid.filter(|&p| p != 0 && p != u64::from(std::process::id())) {
        if is_live_master(pid as i32) {
            bail!("another sentinel-master (pid {pid}) is using /dev/shm/{name}; stop it or choose another --shm-name");
        }
    }
    tracing::warn!(segment = %format!("/dev/shm/{name}"), old_supervisor_pid = ?pid, "removing a stale shared memory segment left by a master that did not shut down cleanly");
    let c = std::ffi::CString::new(os_id(name)).context("segment name")?;
    // SAFETY: plain libc call with a valid C string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("cannot remove stale /dev/shm/{name}"));
        }
    }
    Ok(salvaged)
}

/// How long a dead supervisor's children get to exit (they got SIGTERM by PDEATHSIG; the
/// collector finishes its write under the lock first) before the table is imaged anyway.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// An image of a stale table, once the children recorded in its header are gone. A child
/// still running after [`ORPHAN_GRACE`] may still write: the image is taken anyway (the
/// seqlock reader gives consistent hosts; later writes are lost with the old segment).
fn salvage(
    name: &str,
    header: &layout::Header,
    image: impl FnOnce() -> Result<Vec<u8>, crate::table::image::ImageError>,
) -> Option<Vec<u8>> {
    use std::sync::atomic::Ordering::Acquire;
    let deadline = std::time::Instant::now() + ORPHAN_GRACE;
    let orphans = || {
        [
            header.collector_pid.load(Acquire),
            header.http_pid.load(Acquire),
        ]
        .into_iter()
        .filter(|&p| p != 0 && is_live_master(p as i32))
        .collect::<Vec<_>>()
    };
    while !orphans().is_empty()
        && std::time::Instant::now() < deadline
        && !crate::supervisor::stopping()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let left @ [_, ..] = orphans().as_slice() {
        tracing::warn!(segment = %format!("/dev/shm/{name}"), pids = ?left, "children of the dead master are still running; imaging its table anyway");
    }
    match image() {
        Ok(image) => {
            let hosts = header.host_count.load(Acquire);
            let layout = header.layout_version;
            tracing::info!(segment = %format!("/dev/shm/{name}"), hosts, layout, "took an image of the stale table to restore it");
            Some(image)
        }
        Err(e) => {
            tracing::warn!(segment = %format!("/dev/shm/{name}"), error = %e, "cannot image the stale table; the snapshot file is used instead");
            None
        }
    }
}

/// A segment whose creator died before writing the magic is all zeros at the start.
fn looks_unfinished(shmem: &Shmem) -> bool {
    let n = shmem.len().min(std::mem::size_of::<layout::Header>());
    // SAFETY: n bytes of the live mapping.
    unsafe { std::slice::from_raw_parts(shmem.as_ptr(), n) }
        .iter()
        .all(|&b| b == 0)
}

/// True if `pid` is alive and runs sentinel-master (argv[0]'s file name).
pub fn is_live_master(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence/permission.
    if unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
    {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    base.starts_with(b"sentinel-master")
}
