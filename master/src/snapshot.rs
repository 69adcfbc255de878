//! Table snapshots in the state directory, so a master restart keeps hosts, counters and
//! history. The supervisor writes `<state_dir>/<shm_name>.snapshot` every `snapshot_interval`
//! and once more after its children stopped; on start it restores the freshest state there
//! is before any child runs: the image of a stale segment a SIGKILLed master left behind,
//! else the snapshot file.
//!
//! Invariants:
//! - A snapshot file is replaced atomically (temp file, fsync, rename, fsync of the
//!   directory): a crash at any moment leaves the old snapshot or the new one, never a mix.
//! - Taking a snapshot reads the table with the seqlock reader only (`Table::image`): it
//!   never waits on the collector's lock, so a wedged or dead collector cannot stall the
//!   supervisor.
//! - A snapshot this binary cannot use (format, layout version, sizes, checksum) is refused
//!   with a log line, renamed to `*.rejected` (kept for an operator, not overwritten by the
//!   next snapshot), and the master starts with an empty table.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::segment::now_ms;
use crate::table::{image, Table};

/// A failing snapshot (full disk, missing state directory) is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

pub struct Snapshots {
    path: PathBuf,
    /// `None`: only at shutdown (`snapshot_interval = "0s"`).
    interval: Option<Duration>,
    next: Instant,
    /// When a failure was last logged, and how many were not logged since (rate limit).
    last_error_log: Option<Instant>,
    suppressed: u64,
}

/// `<state_dir>/<shm_name>.snapshot`: two masters on one host use two segment names, so
/// they never share a snapshot either.
pub fn path(state_dir: &Path, shm_name: &str) -> PathBuf {
    state_dir.join(format!("{shm_name}.snapshot"))
}

impl Snapshots {
    pub fn new(state_dir: &Path, shm_name: &str, interval: Duration) -> Snapshots {
        let interval = (!interval.is_zero()).then_some(interval);
        Snapshots {
            path: path(state_dir, shm_name),
            interval,
            next: Instant::now() + interval.unwrap_or_default(),
            last_error_log: None,
            suppressed: 0,
        }
    }

    /// Fills the fresh `table` from `salvaged` (the image of a stale segment) if there is
    /// one, else from the snapshot file. Never fails: an unusable state means an empty table.
    pub fn restore(&self, table: &Table, salvaged: Option<Vec<u8>>) {
        if let Some(image) = salvaged {
            // Persist it first: if this start fails, the next one still has it.
            if let Err(e) = write_atomic(&self.path, &image) {
                tracing::warn!(error = %format!("{e:#}"), "cannot save the stale table's image as the snapshot");
            }
            match table.restore(&image) {
                Ok((info, left_out)) => {
                    log_restored("the stale segment", info, left_out);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot restore the stale table's image"),
            }
        }
        let bytes = match read_file(&self.path) {
            Ok(b) => b,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(snapshot = %self.path.display(), "no table snapshot; starting with an empty table");
                return;
            }
            Err(ReadError::Stopping) => {
                tracing::info!(snapshot = %self.path.display(), "stop requested while reading the table snapshot; not restoring it");
                return;
            }
            Err(e @ ReadError::NotRegular(_)) => {
                self.refuse(&e);
                return;
            }
            Err(e) => {
                tracing::warn!(snapshot = %self.path.display(), error = %e, "cannot read the table snapshot; starting with an empty table");
                return;
            }
        };
        match table.restore(&bytes) {
            Ok((info, left_out)) => log_restored(&self.path.display().to_string(), info, left_out),
            Err(e) => self.refuse(&e),
        }
    }

    /// Sets an unusable snapshot aside as `*.rejected` (kept for an operator, never
    /// overwritten by the next snapshot) and logs why; the table stays empty.
    fn refuse(&self, e: &dyn std::fmt::Display) {
        let rejected = self.path.with_extension("snapshot.rejected");
        let kept = fs::rename(&self.path, &rejected).is_ok();
        tracing::warn!(
            snapshot = %self.path.display(),
            error = %e,
            kept_as = %if kept { rejected.display().to_string() } else { "-".into() },
            "refusing the table snapshot; starting with an empty table"
        );
    }

    /// Writes a snapshot if one is due.
    pub fn tick(&mut self, table: &Table) {
        let Some(interval) = self.interval else {
            return;
        };
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + interval;
        let _ = self.write(table, "periodic");
    }

    /// Writes a snapshot now; failures are logged (rate-limited) and returned.
    pub fn write(&mut self, table: &Table, why: &'static str) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = table
            .image(now_ms())
            .context("cannot take an image of the table")
            .and_then(|image| write_atomic(&self.path, &image).map(|()| image.len()));
        match result {
            Ok(bytes) => {
                let hosts = table.host_count();
                let ms = started.elapsed().as_millis() as u64;
                if why == "periodic" {
                    tracing::debug!(hosts, bytes, ms, "wrote the table snapshot");
                } else {
                    tracing::info!(hosts, bytes, ms, why, snapshot = %self.path.display(), "wrote the table snapshot");
                }
                Ok(())
            }
            Err(e) => {
                let due = self
                    .last_error_log
                    .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY);
                if due || why != "periodic" {
                    tracing::warn!(snapshot = %self.path.display(), error = %format!("{e:#}"), suppressed = self.suppressed, "cannot write the table snapshot");
                    self.last_error_log = Some(Instant::now());
                    self.suppressed = 0;
                } else {
                    self.suppressed += 1;
                }
                Err(e)
            }
        }
    }
}

fn log_restored(from: &str, info: image::ImageInfo, left_out: usize) {
    tracing::info!(
        from,
        hosts = info.hosts,
        age_ms = now_ms().saturating_sub(info.created_ms),
        "restored the table"
    );
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "the snapshot holds more hosts than `capacity`; the rest were left out"
        );
    }
}

/// Bytes read per `read` call while restoring: between two calls the supervisor's stop flag
/// is checked, so SIGTERM during the restore of a large snapshot is honoured within one chunk.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, device, socket or directory: reading it could block forever (a FIFO without a
    /// writer) or never end (a character device).
    #[error("not a regular file (a {0}): a snapshot is only ever a regular file")]
    NotRegular(&'static str),
    #[error("stop requested")]
    Stopping,
}

/// Reads the snapshot file without ever waiting on it: opened with O_NONBLOCK (opening a FIFO
/// for reading would otherwise block until a writer comes) and refused unless fstat says it
/// is a regular file; read in chunks, giving up as soon as the supervisor is stopping.
fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_fifo() {
            "FIFO"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else {
            "special file"
        }));
    }
    // What the file claims, up to one chunk's worth of slack: a sparse file claiming terabytes
    // grows the buffer only as far as bytes actually arrive.
    let mut bytes = Vec::with_capacity((meta.len() as usize).min(64 * READ_CHUNK));
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if crate::supervisor::stopping() {
            return Err(ReadError::Stopping);
        }
        match f.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Replaces `path` with `bytes`: temp file (mode 0600: it holds what the table holds),
/// fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("snapshot.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TestTable;

    fn one_host() -> TestTable {
        let t = TestTable::new(4, 8);
        let w = t.table.writer().unwrap();
        let mut r = w.record(0);
        r.in_use = 1;
        r.last_seq = 7;
        r.hostname.set("kept");
        w.commit(0, r, Some(b"s"), None);
        w.publish_host_count(1);
        t
    }

    #[test]
    fn a_written_snapshot_is_restored_and_a_bad_one_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("sentinel-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut snaps = Snapshots::new(&dir, "m", Duration::from_secs(10));
        snaps.write(&one_host().table, "test").unwrap();
        let fresh = TestTable::new(4, 8);
        snaps.restore(&fresh.table, None);
        assert_eq!(fresh.table.read_record(0).unwrap().hostname.get(), "kept");
        assert!(!dir.join("m.snapshot.tmp").exists());

        // Another layout version: refused, kept aside, the table stays empty.
        let mut bytes = fs::read(dir.join("m.snapshot")).unwrap();
        bytes[16..20].copy_from_slice(&99u32.to_ne_bytes());
        fs::write(dir.join("m.snapshot"), &bytes).unwrap();
        let fresh = TestTable::new(4, 8);
        snaps.restore(&fresh.table, None);
        assert_eq!(fresh.table.host_count(), 0);
        assert!(dir.join("m.snapshot.rejected").exists());
        assert!(!dir.join("m.snapshot").exists());

        // A salvaged image wins and is saved as the snapshot.
        let image = one_host().table.image(5).unwrap();
        let fresh = TestTable::new(4, 8);
        snaps.restore(&fresh.table, Some(image.clone()));
        assert_eq!(fresh.table.host_count(), 1);
        assert_eq!(fs::read(dir.join("m.snapshot")).unwrap(), image);
        fs::remove_dir_all(&dir).unwrap();
    }
}
