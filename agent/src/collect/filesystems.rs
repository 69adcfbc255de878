//! Real filesystems only: pseudo and in-memory filesystems are noise to an operator, and one
//! device mounted twice (bind mounts) is reported once.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
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
/// time, and in between each refresh costs one statvfs per filesystem instead of parsing
/// /proc/mounts and probing every block device.
const RELIST_EVERY: Duration = Duration::from_secs(60);

/// How old the filesystem figures may get (docs/PROTOCOL.md says so for `fs`): used space
/// moves slowly, and waking the helper thread for every 1 s sample was 13 % of the agent's CPU
/// time (perf, docs/BENCHMARKS.md). At a longer interval every sample refreshes.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A refresh still running after this long is taken for a hung mount: the samples then carry
/// no filesystems (the collector's failure is logged) until it returns.
pub const HUNG_AFTER: Duration = Duration::from_secs(5);

/// Reads the filesystem figures; runs on the helper thread, where it may block.
pub type Source = Box<dyn FnMut() -> Vec<Filesystem> + Send>;

/// Filesystem figures from a helper thread. statvfs on a dead NFS or FUSE mount blocks in the
/// kernel, so it never runs on the agent's only runtime thread: a sample asks the helper for a
/// refresh when the figures are due ([`REFRESH_EVERY`]) and takes the newest complete list
/// without waiting for it. The helper usually finishes while the rest of the sample is read (it
/// runs on another core), otherwise the figures are the previous refresh's. Handing the whole sample to tokio's
/// blocking pool instead cost two thread switches and two runtime wake-ups per sample
/// (docs/BENCHMARKS.md, "Agent profile").
pub struct Filesystems {
    shared: Arc<Shared>,
    /// Unparked for each refresh (a futex wake only when it sleeps); None if it did not start.
    helper: Option<std::thread::Thread>,
    /// [`REFRESH_EVERY`] and [`HUNG_AFTER`]; shorter in tests.
    refresh_every: Duration,
    hung_after: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the first refresh finished (`wait_first`); later ones wake no one.
    first: Condvar,
}

#[derive(Default)]
struct State {
    /// Refreshes requested and finished; the helper is busy while they differ.
    requested: u64,
    finished: u64,
    /// When the running refresh was requested: a refresh older than [`HUNG_AFTER`] is hung.
    requested_at: Option<Instant>,
    /// The newest complete list.
    latest: Vec<Filesystem>,
    /// Set when the collector is dropped: the helper ends (after its refresh, if one hangs).
    closed: bool,
}

impl Filesystems {
    pub fn new() -> Result<Self, CollectError> {
        let mut disks = Disks::new().map_err(|e| CollectError::sysinfo("disks", e))?;
        let mut listed_at: Option<Instant> = None;
        Ok(Self::with_source(Box::new(move || {
            if listed_at.is_none_or(|t| t.elapsed() >= RELIST_EVERY) {
                // Only the mount list: the sizes come from our own statvfs below, which
                // also gives the free blocks sysinfo does not expose. `true`: forget mounts
                // that went away.
                disks.refresh_specifics(true, DiskRefreshKind::nothing());
                listed_at = Some(Instant::now());
            }
            list(&disks)
        })))
    }

    /// Starts the helper thread on `source` and asks for the first refresh.
    pub fn with_source(source: Source) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            first: Condvar::new(),
        });
        let serving = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("statvfs".into())
            .stack_size(HELPER_STACK)
            .spawn(move || serving.serve(source));
        let helper = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(error) => {
                // Without the helper the samples carry no filesystems: `collect` reports it hung.
                tracing::error!(%error, "Cannot start the filesystem helper thread.");
                None
            }
        };
        let fs = Filesystems {
            shared,
            helper,
            refresh_every: REFRESH_EVERY,
            hung_after: HUNG_AFTER,
        };
        fs.refresh();
        fs
    }

    /// Asks the helper for a refresh if the figures are due (at most [`REFRESH_EVERY`] old)
    /// and it is not still busy with the last one. Call it at the start of a sample: the
    /// helper then works while the other collectors read /proc.
    pub fn refresh(&self) {
        {
            let mut state = self.shared.lock();
            let due = state
                .requested_at
                .is_none_or(|t| t.elapsed() >= self.refresh_every);
            if !due || state.finished != state.requested {
                return;
            }
            state.requested += 1;
            state.requested_at = Some(Instant::now());
        }
        // After the unlock, so the woken helper does not run into the held lock.
        if let Some(helper) = &self.helper {
            helper.unpark();
        }
    }

    /// Fills `s.filesystems` with the newest complete list. Never blocks on the helper; fails
    /// while a refresh has been running for longer than [`HUNG_AFTER`].
    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        let state = self.shared.lock();
        if state.finished != state.requested {
            if let Some(busy) = state.requested_at.map(|t| t.elapsed()) {
                if busy >= self.hung_after {
                    return Err(CollectError::Hung {
                        what: "statvfs",
                        secs: busy.as_secs(),
                    });
                }
            }
        }
        s.filesystems.clone_from(&state.latest);
        Ok(())
    }

    /// Waits until the first refresh finished, at most `timeout` (`--once` has no earlier
    /// sample to take figures from).
    pub fn wait_first(&self, timeout: Duration) {
        let state = self.shared.lock();
        let _unused = self
            .shared
            .first
            .wait_timeout_while(state, timeout, |st| st.finished == 0)
            .map(drop);
    }
}

impl Drop for Filesystems {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        if let Some(helper) = &self.helper {
            helper.unpark();
        }
    }
}

/// The helper's stack: statvfs and the mount list need little; std's default is 2 MiB.
const HELPER_STACK: usize = 256 * 1024;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The helper only stores whole lists, so a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The helper thread: one refresh per request; ends when the collector is dropped.
    fn serve(self: Arc<Self>, mut source: Source) {
        let mut done = 0;
        loop {
            let target = {
                let state = self.lock();
                if state.closed {
                    return;
                }
                state.requested
            };
            if target == done {
                // An unpark between the check and here is kept, so no request is missed.
                std::thread::park();
                continue;
            }
            let list = source();
            let first = {
                let mut state = self.lock();
                state.latest = list;
                state.finished = target;
                done = target;
                target == 1
            };
            if first {
                self.first.notify_all();
            }
        }
    }
}

/// Sizes of one filesystem from a single statvfs, as df reads them: blocks of `f_frsize`
/// bytes; total `f_blocks`, available to users `f_bavail`, free including the blocks
/// reserved for root `f_bfree`. `None` if statvfs fails or the filesystem has no blocks.
pub fn sizes(mount: &std::path::Path) -> Option<(u64, u64, u64)> {
    let st = rustix::fs::statvfs(mount).ok()?;
    let bytes = |blocks: u64| blocks.saturating_mul(st.f_frsize);
    let total = bytes(st.f_blocks);
    // Clamped so that available <= free <= total holds as the protocol requires, whatever a
    // filesystem driver reports.
    let available = bytes(st.f_bavail).min(total);
    let free = bytes(st.f_bfree).clamp(available, total);
    (total > 0).then_some((total, available, free))
}

fn list(disks: &Disks) -> Vec<Filesystem> {
    let mut seen = HashSet::new();
    disks
        .iter()
        .filter(|d| is_real(&d.file_system().to_string_lossy()))
        .filter_map(|d| sizes(d.mount_point()).map(|sz| (d, sz)))
        .filter(|(d, _)| seen.insert(d.name().to_owned()))
        .take(MAX_FILESYSTEMS)
        .map(|(d, (total, available, free))| Filesystem {
            mount: truncate_text(
                d.mount_point().to_string_lossy().into_owned(),
                MAX_TEXT_BYTES,
            ),
            fs_type: truncate_text(
                d.file_system().to_string_lossy().into_owned(),
                MAX_TEXT_BYTES,
            ),
            total_bytes: total,
            available_bytes: available,
            free_bytes: Some(free),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_filesystems_are_not_real() {
        for t in [
            "tmpfs", "proc", "overlay", "cgroup2", "squashfs", "devtmpfs", "nsfs",
        ] {
            assert!(!is_real(t), "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "vfat", "nfs4", "zfs"] {
            assert!(is_real(t), "{t}");
        }
    }

    fn fs(mount: &str) -> Filesystem {
        Filesystem {
            mount: mount.into(),
            fs_type: "nfs4".into(),
            total_bytes: 100,
            available_bytes: 50,
            free_bytes: None,
        }
    }

    #[test]
    fn figures_are_refreshed_when_due_not_every_sample() {
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let mut f = Filesystems::with_source(Box::new(move || {
            *counted.lock().unwrap() += 1;
            vec![fs("/")]
        }));
        f.refresh_every = Duration::from_millis(200);
        f.wait_first(Duration::from_secs(5));
        let mut s = Sample::default();
        for _ in 0..5 {
            f.refresh();
            f.collect(&mut s).unwrap();
            assert_eq!(s.filesystems, vec![fs("/")]);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(*calls.lock().unwrap(), 1, "not due yet");
        std::thread::sleep(Duration::from_millis(200));
        f.refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *calls.lock().unwrap() < 2 {
            assert!(Instant::now() < deadline, "due refresh never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_hung_statvfs_never_blocks_a_sample_and_is_reported_until_it_returns() {
        // The second refresh hangs until the test releases it.
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let mut calls = 0;
        let mut f = Filesystems::with_source(Box::new(move || {
            calls += 1;
            if calls == 2 {
                hang.recv().ok();
            }
            vec![fs(&format!("/call{calls}"))]
        }));
        f.refresh_every = Duration::ZERO;
        f.hung_after = Duration::from_millis(300);
        f.wait_first(Duration::from_secs(5));
        let take = |f: &mut Filesystems| {
            let mut s = Sample::default();
            let started = Instant::now();
            f.refresh();
            let r = f.collect(&mut s);
            assert!(
                started.elapsed() < Duration::from_millis(50),
                "collect waited"
            );
            r.map(|()| s.filesystems)
        };
        // Sample 1 asks for the second refresh, which hangs, and has the first.
        assert_eq!(take(&mut f).unwrap(), vec![fs("/call1")]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            take(&mut f).unwrap(),
            vec![fs("/call1")],
            "a slow refresh: the previous figures"
        );
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            assert!(
                matches!(take(&mut f), Err(CollectError::Hung { .. })),
                "hung: no figures"
            );
        }
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            match take(&mut f) {
                Ok(list) if list != vec![fs("/call1")] => break list,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => panic!("the helper did not recover: {other:?}"),
            }
        };
        assert!(
            got == vec![fs("/call2")] || got == vec![fs("/call3")],
            "back once statvfs returns: {got:?}"
        );
    }
}
