//! The shared-memory host table.
//!
//! Invariants:
//! - Only the collector writes slots, holding the raw_sync mutex *and* the slot's seqlock;
//!   the supervisor writes only the header and, while no collector runs, repairs slots.
//! - The http process never takes the lock and never writes: it copies a slot and checks the
//!   slot's sequence counter around the copy, so a writer that dies at any instant can never
//!   wedge it (raw_sync's locks are not robust).
//! - A write first fills the redo journal (the complete new record), marks it complete with
//!   `journal_seq`, and only then changes the visible record: a slot left odd by a SIGKILL
//!   is either untouched (journal incomplete) or fully recoverable (journal complete).

pub mod account;
pub mod image;
pub mod layout;
pub mod older;

use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use raw_sync::locks::{LockImpl, LockInit, Mutex};

use layout::{Header, SlotFixed, LAYOUT_VERSION, MAGIC, SAMPLE_BYTES};
pub use layout::{HistoryPoint, Record};

/// Reads of a slot under a live writer retry this often before giving up; a write takes
/// microseconds, so this is only reached when something is badly wrong.
const READ_ATTEMPTS: u32 = 1000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    #[error("segment is {len} bytes, smaller than a table header")]
    TooSmall { len: usize },
    #[error("segment is not a Sentinel table (bad magic)")]
    BadMagic,
    #[error("table layout version {found} is not the version {LAYOUT_VERSION} this binary uses")]
    BadVersion { found: u32 },
    #[error("table header is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error(
        "capacity {capacity} x history {history_points} needs {need} bytes, segment has {len}"
    )]
    SizeMismatch {
        capacity: u32,
        history_points: u32,
        need: usize,
        len: usize,
    },
    #[error("raw_sync mutex needs {0} bytes, the header reserves {1}")]
    LockTooLarge(usize, usize),
    #[error("raw_sync: {0}")]
    Lock(String),
}

/// A view of a table in memory this process has mapped (a shared-memory segment, or any
/// 8-aligned buffer in tests). Does not own the memory.
pub struct Table {
    base: *mut u8,
    capacity: u32,
    history_points: u32,
    slot_size: usize,
}

// SAFETY: all shared mutation goes through atomics, the seqlock protocol and the process-
// shared mutex; the pointer stays valid as long as the mapping, which outlives the Table.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

/// A consistent copy of one host's record with its newest history points (see
/// [`Table::read_history`]).
pub struct Recent {
    pub record: Record,
    /// The number (0-based, over the host's life in this table) of `points[0]`.
    pub first: u64,
    pub points: Vec<HistoryPoint>,
    pub sample: Option<Vec<u8>>,
}

/// A consistent copy of one host: record, latest sample bytes and history (oldest first).
pub struct HostDetail {
    pub record: Record,
    pub sample: Option<Vec<u8>>,
    pub history: Vec<HistoryPoint>,
}

impl Table {
    /// Writes a fresh header and lock into `base` (zero-filled memory of at least
    /// `segment_size` bytes).
    ///
    /// # Safety
    /// `base` must be valid for `len` bytes, 8-aligned, and not used by another process yet.
    pub unsafe fn init(
        base: *mut u8,
        len: usize,
        capacity: u32,
        history_points: u32,
        supervisor_pid: u32,
        now_ms: u64,
    ) -> Result<Table, TableError> {
        let need = layout::segment_size(capacity, history_points);
        if len < need || capacity == 0 || history_points == 0 {
            return Err(TableError::SizeMismatch {
                capacity,
                history_points,
                need,
                len,
            });
        }
        let h = base as *mut Header;
        ptr::write_bytes(base, 0, std::mem::size_of::<Header>());
        (*h).layout_version = LAYOUT_VERSION;
        (*h).header_size = std::mem::size_of::<Header>() as u32;
        (*h).capacity = capacity;
        (*h).history_points = history_points;
        (*h).slot_size = layout::slot_size(history_points) as u64;
        (*h).record_size = std::mem::size_of::<Record>() as u32;
        (*h).sample_bytes = SAMPLE_BYTES as u32;
        (*h).created_ms = now_ms;
        (*h).supervisor_pid
            .store(u64::from(supervisor_pid), Ordering::Relaxed);
        let table = Table {
            base,
            capacity,
            history_points,
            slot_size: layout::slot_size(history_points),
        };
        table.reinit_lock()?;
        fence(Ordering::Release);
        // The magic goes last: a segment whose creator died mid-init is recognisably not ready.
        ptr::write_volatile(ptr::addr_of_mut!((*h).magic), MAGIC);
        Ok(table)
    }

    /// Checks magic, layout version and sizes of an existing table.
    ///
    /// # Safety
    /// `base` must be valid for `len` bytes and 8-aligned for the life of the Table.
    pub unsafe fn open(base: *mut u8, len: usize) -> Result<Table, TableError> {
        if len < std::mem::size_of::<Header>() {
            return Err(TableError::TooSmall { len });
        }
        let h = &*(base as *const Header);
        if ptr::read_volatile(&h.magic) != MAGIC {
            return Err(TableError::BadMagic);
        }
        fence(Ordering::Acquire);
        if h.layout_version != LAYOUT_VERSION {
            return Err(TableError::BadVersion {
                found: h.layout_version,
            });
        }
        if h.header_size as usize != std::mem::size_of::<Header>() {
            return Err(TableError::Inconsistent("header size"));
        }
        if h.record_size as usize != std::mem::size_of::<Record>()
            || h.sample_bytes as usize != SAMPLE_BYTES
        {
            return Err(TableError::Inconsistent("record or sample size"));
        }
        let (capacity, history_points) = (h.capacity, h.history_points);
        if capacity == 0
            || history_points == 0
            || h.slot_size as usize != layout::slot_size(history_points)
        {
            return Err(TableError::Inconsistent("slot size"));
        }
        let need = layout::segment_size(capacity, history_points);
        if len < need {
            return Err(TableError::SizeMismatch {
                capacity,
                history_points,
                need,
                len,
            });
        }
        Ok(Table {
            base,
            capacity,
            history_points,
            slot_size: layout::slot_size(history_points),
        })
    }

    pub fn header(&self) -> &Header {
        // SAFETY: open/init checked the length; Header's mutable fields are atomics.
        unsafe { &*(self.base as *const Header) }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots in use, clamped to the capacity (the header is shared memory: never trust it).
    pub fn host_count(&self) -> usize {
        (self.header().host_count.load(Ordering::Acquire) as usize).min(self.capacity as usize)
    }

    fn slot(&self, i: usize) -> *mut SlotFixed {
        assert!(i < self.capacity as usize, "slot index out of range");
        // SAFETY: in bounds by the check above and the size check in open/init.
        unsafe {
            self.base
                .add(std::mem::size_of::<Header>() + i * self.slot_size)
                as *mut SlotFixed
        }
    }

    fn seq(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the slot is in bounds; AtomicU64 has the layout of u64.
        unsafe { &(*self.slot(i)).seq }
    }

    fn journal_seq(&self, i: usize) -> &AtomicU64 {
        // SAFETY: as in `seq`.
        unsafe { &(*self.slot(i)).journal_seq }
    }

    fn ring(&self, i: usize) -> *mut HistoryPoint {
        // SAFETY: the ring follows the fixed part inside the slot.
        unsafe {
            (self.slot(i) as *mut u8).add(std::mem::size_of::<SlotFixed>()) as *mut HistoryPoint
        }
    }

    /// (Re)initialises the collectors' process-shared mutex. Only called when no collector
    /// runs: a collector SIGKILLed while holding it would otherwise leave it locked forever.
    pub fn reinit_lock(&self) -> Result<(), TableError> {
        let lock_ptr = self.lock_ptr();
        let need = Mutex::size_of(Some(lock_ptr));
        if need > layout::LOCK_BYTES {
            return Err(TableError::LockTooLarge(need, layout::LOCK_BYTES));
        }
        // SAFETY: lock_ptr points at LOCK_BYTES reserved bytes in the header.
        unsafe {
            ptr::write_bytes(lock_ptr, 0, layout::LOCK_BYTES);
            Mutex::new(lock_ptr, ptr::null_mut()).map_err(|e| TableError::Lock(e.to_string()))?;
        }
        Ok(())
    }

    fn lock_ptr(&self) -> *mut u8 {
        // SAFETY: field of the header.
        unsafe { ptr::addr_of_mut!((*(self.base as *mut Header)).lock) as *mut u8 }
    }

    /// A consistent copy of slot `i`'s record, without any lock. `None` only if a live writer
    /// kept changing the slot for all of `READ_ATTEMPTS`.
    pub fn read_record(&self, i: usize) -> Option<Record> {
        self.read_consistent(i, |src| {
            let mut out = Record::zeroed();
            // SAFETY: src points at a Record inside the slot.
            unsafe {
                copy_words(
                    src as *const u8,
                    &mut out as *mut Record as *mut u8,
                    std::mem::size_of::<Record>(),
                )
            };
            out
        })
    }

    /// A consistent copy of slot `i` with its latest sample and its history, oldest first.
    pub fn read_detail(&self, i: usize) -> Option<HostDetail> {
        let points = self.history_points as usize;
        let mut sample = vec![0u8; SAMPLE_BYTES];
        let mut ring = vec![HistoryPoint::default(); points];
        let record = self.read_consistent(i, |src| {
            let mut rec = Record::zeroed();
            // SAFETY: src, the sample buffers and the ring are inside slot i.
            unsafe {
                copy_words(
                    src as *const u8,
                    &mut rec as *mut Record as *mut u8,
                    std::mem::size_of::<Record>(),
                );
                let buf = usize::from(rec.sample_buf & 1);
                let bufp = ptr::addr_of!((*self.slot(i)).samples[buf]) as *const u8;
                copy_words(bufp, sample.as_mut_ptr(), SAMPLE_BYTES);
                copy_words(
                    self.ring(i) as *const u8,
                    ring.as_mut_ptr() as *mut u8,
                    points * std::mem::size_of::<HistoryPoint>(),
                );
            }
            rec
        })?;
        // The ring cell of the write in progress may be torn; the record carries its value.
        if (record.pending_index as usize) < points {
            ring[record.pending_index as usize] = record.pending_point;
        }
        let sample = if record.has_sample == 1 {
            let len =
                (record.sample_len[usize::from(record.sample_buf & 1)] as usize).min(SAMPLE_BYTES);
            sample.truncate(len);
            Some(sample)
        } else {
            None
        };
        let count = record.history_count;
        let held = (count as usize).min(points);
        let mut history = Vec::with_capacity(held);
        for k in 0..held as u64 {
            let idx = ((count - held as u64 + k) % points as u64) as usize;
            history.push(ring[idx]);
        }
        Some(HostDetail {
            record,
            sample,
            history,
        })
    }

    /// Slot `i`'s seqlock counter: it moves on every write, so the http process can tell which
    /// hosts changed without copying them (live updates). Read-only, never waits.
    pub fn slot_version(&self, i: usize) -> u64 {
        self.seq(i).load(Ordering::Acquire)
    }

    /// A consistent copy of slot `i`'s record and of its history points numbered `from..count`
    /// (`count` = the record's `history_count`; point `k` is the k-th stored sample), limited
    /// to the newest `max` and to those the ring still holds, oldest first. Copies only those
    /// ring cells (sparklines of 5,000 hosts and the remote_write forwarder read through this).
    /// With `with_sample`, also the latest sample's bytes (only its length is copied).
    pub fn read_history(
        &self,
        i: usize,
        from: u64,
        max: usize,
        with_sample: bool,
    ) -> Option<Recent> {
        let points = u64::from(self.history_points);
        let mut out = Vec::with_capacity(max.min(self.history_points as usize));
        let mut first = 0;
        let mut sample = Vec::new();
        let record = self.read_consistent(i, |src| {
            let mut rec = Record::zeroed();
            out.clear();
            sample.clear();
            // SAFETY: src, the sample buffer and the ring cells are inside slot i; indices are
            // reduced mod points and the sample length is clamped to the buffer.
            unsafe {
                copy_words(
                    src as *const u8,
                    &mut rec as *mut Record as *mut u8,
                    std::mem::size_of::<Record>(),
                );
                if with_sample && rec.has_sample == 1 {
                    let buf = usize::from(rec.sample_buf & 1);
                    let len = (rec.sample_len[buf] as usize).min(SAMPLE_BYTES);
                    sample.resize(len.div_ceil(8) * 8, 0);
                    let bufp = ptr::addr_of!((*self.slot(i)).samples[buf]) as *const u8;
                    copy_words(bufp, sample.as_mut_ptr(), sample.len());
                    sample.truncate(len);
                }
                let count = rec.history_count;
                first = from
                    .max(count.saturating_sub(points))
                    .max(count.saturating_sub(max as u64));
                for k in first..count.max(first) {
                    let mut p = HistoryPoint::default();
                    copy_words(
                        self.ring(i).add((k % points) as usize) as *const u8,
                        &mut p as *mut HistoryPoint as *mut u8,
                        std::mem::size_of::<HistoryPoint>(),
                    );
                    out.push(p);
                }
            }
            rec
        })?;
        // The ring cell of the write in progress may be torn; the record carries its value.
        for (k, p) in (first..).zip(out.iter_mut()) {
            if k % points == record.pending_index {
                *p = record.pending_point;
            }
        }
        Some(Recent {
            record,
            first,
            points: out,
            sample: (with_sample && record.has_sample == 1).then_some(sample),
        })
    }

    /// The seqlock read. For an odd slot whose journal is complete the journal is the truth
    /// (the visible record may be half written); for an odd slot whose journal is incomplete
    /// the visible record has not been touched yet. Either way the copy is consistent if the
    /// counters did not move while it was taken.
    fn read_consistent<T>(&self, i: usize, mut copy: impl FnMut(*const Record) -> T) -> Option<T> {
        let seq = self.seq(i);
        let jseq = self.journal_seq(i);
        for attempt in 0..READ_ATTEMPTS {
            let s1 = seq.load(Ordering::Acquire);
            let j1 = jseq.load(Ordering::Acquire);
            // SAFETY: fields of slot i.
            let src = unsafe {
                if s1 % 2 == 1 && j1 == s1 {
                    ptr::addr_of!((*self.slot(i)).journal)
                } else {
                    ptr::addr_of!((*self.slot(i)).record)
                }
            };
            let value = copy(src);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s1 && jseq.load(Ordering::Relaxed) == j1 {
                return Some(value);
            }
            if attempt < 32 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    /// Finishes every slot a dead writer left odd: a complete journal is applied (redo), an
    /// incomplete one is discarded (the visible record was not touched). Returns the slots
    /// repaired. Only while no collector runs. Only slots in use and the one being allocated
    /// (`host_count`) can have been written, so untouched slots are not even faulted in.
    pub fn repair(&self) -> Vec<(usize, bool)> {
        let mut repaired = Vec::new();
        let written = (self.host_count() + 1).min(self.capacity as usize);
        for i in 0..written {
            let s = self.seq(i).load(Ordering::Acquire);
            if s % 2 == 0 {
                continue;
            }
            let applied = self.journal_seq(i).load(Ordering::Acquire) == s;
            if applied {
                // SAFETY: no writer runs; the journal is complete.
                unsafe {
                    let slot = self.slot(i);
                    let journal = ptr::read_volatile(ptr::addr_of!((*slot).journal));
                    ptr::write_volatile(ptr::addr_of_mut!((*slot).record), journal);
                    let idx = journal.pending_index as usize;
                    if idx < self.history_points as usize {
                        ptr::write_volatile(self.ring(i).add(idx), journal.pending_point);
                    }
                }
            }
            self.seq(i).store(s + 1, Ordering::Release);
            repaired.push((i, applied));
        }
        repaired
    }

    /// Attaches the collector's writer (takes the lock storage as initialised by the
    /// supervisor).
    pub fn writer(&self) -> Result<Writer<'_>, TableError> {
        // SAFETY: the supervisor initialised the mutex before starting this collector.
        let (lock, _) = unsafe { Mutex::from_existing(self.lock_ptr(), ptr::null_mut()) }
            .map_err(|e| TableError::Lock(e.to_string()))?;
        Ok(Writer { table: self, lock })
    }
}

/// Copies `len` bytes (a multiple of 8, both sides 8-aligned) one volatile word at a time, so
/// a racing writer produces a torn copy (rejected by the seqlock check), never UB-driven
/// reordering of the reads across the fences.
unsafe fn copy_words(src: *const u8, dst: *mut u8, len: usize) {
    debug_assert!(len % 8 == 0 && src as usize % 8 == 0);
    let (s, d) = (src as *const u64, dst as *mut u64);
    for k in 0..len / 8 {
        ptr::write_unaligned(d.add(k), ptr::read_volatile(s.add(k)));
    }
}

unsafe fn write_words(src: *const u8, dst: *mut u8, len: usize) {
    let (s, d) = (src as *const u64, dst as *mut u64);
    for k in 0..len / 8 {
        ptr::write_volatile(d.add(k), ptr::read_unaligned(s.add(k)));
    }
}

/// Where a write stops: tests use it to leave a slot as a SIGKILL at that point would.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum StopAt {
    Complete,
    /// After the sample buffer, before the journal is complete.
    BeforeJournal,
    /// After the journal is complete, half way through the visible record.
    MidRecord,
}

/// The collector's write access. All writes to one slot go through [`Writer::commit`].
pub struct Writer<'t> {
    table: &'t Table,
    lock: Box<dyn LockImpl>,
}

// SAFETY: the boxed raw_sync mutex is a pointer into the shared segment plus a data pointer;
// a pthread mutex may be used from any thread, and every lock is released by the thread that
// took it (the guard never leaves `commit_until`).
unsafe impl Send for Writer<'_> {}

impl Writer<'_> {
    pub fn table(&self) -> &Table {
        self.table
    }

    /// The visible record of slot `i`. Only the collector writes, so this needs no seqlock.
    pub fn record(&self, i: usize) -> Record {
        // SAFETY: slot in bounds; this process is the only writer, and every write goes
        // through this writer, so a plain copy sees the last commit.
        unsafe { ptr::read(ptr::addr_of!((*self.table.slot(i)).record)) }
    }

    /// Publishes `new` as slot `i`'s record, with an optional new sample and history point.
    /// `pending_*`, `sample_buf`, `sample_len`, `has_sample` and `history_count` are the
    /// table's: whatever the caller put there is replaced.
    pub fn commit(
        &self,
        i: usize,
        mut new: Record,
        sample: Option<&[u8]>,
        point: Option<HistoryPoint>,
    ) {
        self.commit_in_place(i, &mut new, sample, point)
    }

    /// [`Writer::commit`], leaving `new` equal to the record now visible, so a caller that
    /// writes a run of samples to one slot reads the record once instead of once per sample.
    pub fn commit_in_place(
        &self,
        i: usize,
        new: &mut Record,
        sample: Option<&[u8]>,
        point: Option<HistoryPoint>,
    ) {
        self.commit_with(i, new, sample, point, StopAt::Complete)
    }

    pub fn commit_until(
        &self,
        i: usize,
        mut new: Record,
        sample: Option<&[u8]>,
        point: Option<HistoryPoint>,
        stop: StopAt,
    ) {
        self.commit_with(i, &mut new, sample, point, stop)
    }

    fn commit_with(
        &self,
        i: usize,
        new: &mut Record,
        sample: Option<&[u8]>,
        point: Option<HistoryPoint>,
        stop: StopAt,
    ) {
        let _guard = match self.lock.lock() {
            Ok(g) => g,
            Err(e) => {
                // Only a corrupted mutex fails here; writing without it is still safe for the
                // readers (they use the seqlock), and only this process writes.
                tracing::error!(error = %e, "could not take the table lock; writing without it");
                return self.commit_locked(i, new, sample, point, stop);
            }
        };
        self.commit_locked(i, new, sample, point, stop)
    }

    fn commit_locked(
        &self,
        i: usize,
        new: &mut Record,
        sample: Option<&[u8]>,
        point: Option<HistoryPoint>,
        stop: StopAt,
    ) {
        let t = self.table;
        let slot = t.slot(i);
        let seq = t.seq(i);
        let s = seq.load(Ordering::Relaxed);
        let odd = s | 1;
        let odd = if odd == s { s + 2 } else { odd }; // never reuse an odd value left behind
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        // The bookkeeping of the buffers and the ring belongs to the table, not the caller.
        // SAFETY: slot i is in bounds; only this writer writes these fields.
        let (current_buf, current_len, current_has, current_count) = unsafe {
            let r = ptr::addr_of!((*slot).record);
            (
                ptr::read(ptr::addr_of!((*r).sample_buf)),
                ptr::read(ptr::addr_of!((*r).sample_len)),
                ptr::read(ptr::addr_of!((*r).has_sample)),
                ptr::read(ptr::addr_of!((*r).history_count)),
            )
        };
        new.sample_buf = current_buf & 1;
        new.sample_len = current_len;
        new.has_sample = current_has;
        new.history_count = current_count;
        // SAFETY: slot i is in bounds; this thread holds the lock and the slot is odd.
        unsafe {
            if let Some(bytes) = sample {
                let len = bytes.len().min(SAMPLE_BYTES);
                let buf = usize::from(!current_buf & 1);
                let dst = ptr::addr_of_mut!((*slot).samples[buf]) as *mut u8;
                ptr::copy_nonoverlapping(bytes.as_ptr(), dst, len);
                new.sample_buf = buf as u8;
                new.sample_len[buf] = len as u32;
                new.has_sample = 1;
            }
            if let Some(p) = point {
                let points = u64::from(t.history_points);
                new.pending_index = new.history_count % points;
                new.pending_point = p;
                new.history_count += 1;
            } else {
                new.pending_index = u64::MAX;
            }
            if stop == StopAt::BeforeJournal {
                return;
            }
            write_words(
                new as *const Record as *const u8,
                ptr::addr_of_mut!((*slot).journal) as *mut u8,
                std::mem::size_of::<Record>(),
            );
            t.journal_seq(i).store(odd, Ordering::Release);
            fence(Ordering::Release);
            let rec_len = if stop == StopAt::MidRecord {
                std::mem::size_of::<Record>() / 2
            } else {
                std::mem::size_of::<Record>()
            };
            // Poison what a dead writer would leave: the first half new, the rest garbage.
            write_words(
                new as *const Record as *const u8,
                ptr::addr_of_mut!((*slot).record) as *mut u8,
                rec_len,
            );
            if stop == StopAt::MidRecord {
                let rest = (ptr::addr_of_mut!((*slot).record) as *mut u8).add(rec_len);
                ptr::write_bytes(rest, 0xAB, std::mem::size_of::<Record>() - rec_len);
                return;
            }
            if let Some(p) = point {
                ptr::write_volatile(t.ring(i).add(new.pending_index as usize), p);
            }
        }
        seq.store(odd + 1, Ordering::Release);
    }

    /// Frees slot `i`: the record becomes all zero (`in_use` = 0, no sample, no history) and
    /// the history ring is zeroed, through the same seqlock and journal as every write, so a
    /// reader sees the host or the free slot, never half of each, and a collector killed
    /// mid-clear leaves a slot that repair completes (the journal holds the zero record).
    pub fn clear(&self, i: usize) {
        let _guard = self.lock.lock().ok();
        let t = self.table;
        let slot = t.slot(i);
        let seq = t.seq(i);
        let s = seq.load(Ordering::Relaxed);
        let odd = s | 1;
        let odd = if odd == s { s + 2 } else { odd };
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut zero = Record::zeroed();
        zero.pending_index = u64::MAX;
        // SAFETY: slot i is in bounds; this thread holds the lock and the slot is odd.
        unsafe {
            write_words(
                &zero as *const Record as *const u8,
                ptr::addr_of_mut!((*slot).journal) as *mut u8,
                std::mem::size_of::<Record>(),
            );
            t.journal_seq(i).store(odd, Ordering::Release);
            fence(Ordering::Release);
            write_words(
                &zero as *const Record as *const u8,
                ptr::addr_of_mut!((*slot).record) as *mut u8,
                std::mem::size_of::<Record>(),
            );
            ptr::write_bytes(
                t.ring(i) as *mut u8,
                0,
                t.history_points as usize * std::mem::size_of::<HistoryPoint>(),
            );
        }
        seq.store(odd + 1, Ordering::Release);
    }

    /// Makes slot `count` (fresh) visible to readers by publishing the new host count.
    pub fn publish_host_count(&self, count: usize) {
        self.table
            .header()
            .host_count
            .store(count as u64, Ordering::Release);
    }
}

/// A table in heap memory, for tests of the code that reads or writes tables.
#[cfg(test)]
pub struct TestTable {
    pub table: Table,
    _mem: Vec<u64>,
}

#[cfg(test)]
impl TestTable {
    pub fn new(capacity: u32, history_points: u32) -> TestTable {
        let mut mem = vec![0u64; layout::segment_size(capacity, history_points).div_ceil(8)];
        let len = mem.len() * 8;
        // SAFETY: the Vec's buffer is 8-aligned, zeroed, and lives as long as the TestTable.
        let table = unsafe {
            Table::init(
                mem.as_mut_ptr() as *mut u8,
                len,
                capacity,
                history_points,
                1,
                1,
            )
        }
        .unwrap();
        TestTable { table, _mem: mem }
    }
}

#[cfg(test)]
mod tests {
    use super::layout::{segment_size, slot_size, Header};
    use super::*;

    /// An 8-aligned zeroed buffer standing in for a segment.
    struct Mem(Vec<u64>);
    impl Mem {
        fn new(capacity: u32, points: u32) -> Mem {
            Mem(vec![0u64; segment_size(capacity, points).div_ceil(8)])
        }
        fn ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr() as *mut u8
        }
        fn len(&self) -> usize {
            self.0.len() * 8
        }
    }

    fn table(mem: &mut Mem, capacity: u32, points: u32) -> Table {
        let len = mem.len();
        unsafe { Table::init(mem.ptr(), len, capacity, points, 1, 1) }.unwrap()
    }

    fn record(n: u64) -> Record {
        let mut r = Record::zeroed();
        r.in_use = 1;
        r.hostname.set(&format!("host-{n}"));
        r.samples_received = n;
        r.last_seq = n;
        r.duplicates = n;
        r.reconnects = n;
        r.summary.mem_total_bytes = n;
        r
    }

    fn consistent(r: &Record) -> bool {
        let n = r.samples_received;
        r.last_seq == n
            && r.duplicates == n
            && r.reconnects == n
            && r.summary.mem_total_bytes == n
            && r.hostname.get() == format!("host-{n}")
    }

    #[test]
    fn layout_sizes_are_fixed() {
        assert_eq!(std::mem::size_of::<Header>(), 512);
        assert_eq!(std::mem::size_of::<Record>(), 2712);
        assert_eq!(std::mem::size_of::<HistoryPoint>(), 40);
        assert_eq!(slot_size(600) % 64, 0);
        assert_eq!(segment_size(4096, 600), 512 + 4096 * slot_size(600));
        assert!(Mutex::size_of(None) <= layout::LOCK_BYTES);
    }

    #[test]
    fn open_rejects_a_wrong_segment() {
        let mut mem = Mem::new(4, 8);
        let len = mem.len();
        assert_eq!(
            unsafe { Table::open(mem.ptr(), len) }.err(),
            Some(TableError::BadMagic)
        );
        let t = table(&mut mem, 4, 8);
        let _ = t;
        assert!(unsafe { Table::open(mem.ptr(), len) }.is_ok());
        assert!(matches!(
            unsafe { Table::open(mem.ptr(), len - 64) },
            Err(TableError::SizeMismatch { .. })
        ));
        assert_eq!(
            unsafe { Table::open(mem.ptr(), 100) }.err(),
            Some(TableError::TooSmall { len: 100 })
        );
        unsafe { (*(mem.ptr() as *mut Header)).layout_version = 99 };
        assert_eq!(
            unsafe { Table::open(mem.ptr(), len) }.err(),
            Some(TableError::BadVersion { found: 99 })
        );
    }

    #[test]
    fn seqlock_reader_sees_only_consistent_records_under_a_concurrent_writer() {
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let mut mem = Mem::new(2, 16);
        let t = table(&mut mem, 2, 16);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (writes, reads) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let w = t.writer().unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let p = HistoryPoint {
                        ts_ms: n,
                        mem_used_bytes: n,
                        ..Default::default()
                    };
                    w.commit(0, record(n), Some(&n.to_le_bytes().repeat(100)), Some(p));
                    // A writer that never pauses starves a seqlock reader of its slot (the
                    // collector commits a slot once per sample). Paced at ~20k commits/s,
                    // still far more often than any host, many reads overlap a write.
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                n
            });
            let _stop = StopOnDrop(&stop); // also on a failed assertion, so the scope can end
            let mut reads = 0;
            let mut seen = std::collections::BTreeSet::new();
            // Enough reads of enough distinct writes, within a generous deadline (CI machines
            // run other suites beside this one).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while (reads < 2000 || seen.len() < 100) && std::time::Instant::now() < deadline {
                let Some(d) = t.read_detail(0) else { continue };
                if d.record.in_use == 0 {
                    continue; // before the first write
                }
                assert!(consistent(&d.record), "torn record");
                let n = d.record.samples_received;
                assert_eq!(
                    d.sample.as_deref(),
                    Some(&n.to_le_bytes().repeat(100)[..]),
                    "sample belongs to the record"
                );
                assert_eq!(
                    d.history.last().map(|p| p.ts_ms),
                    Some(n),
                    "history belongs to the record"
                );
                assert_eq!(d.history.len() as u64, n.min(16));
                seen.insert(n);
                reads += 1;
            }
            drop(_stop);
            (writer.join().unwrap(), (reads, seen.len()))
        });
        let (reads, distinct) = reads;
        assert!(
            writes > 0 && reads >= 2000 && distinct >= 100,
            "writes {writes} reads {reads} of {distinct} distinct writes"
        );
    }

    #[test]
    fn a_write_killed_midway_is_readable_and_repair_makes_it_whole() {
        let cases = [
            (StopAt::BeforeJournal, 1, false), // journal incomplete: the old record stays
            (StopAt::MidRecord, 2, true),      // journal complete: redo gives the new record
        ];
        for (stop, want, applied) in cases {
            let mut mem = Mem::new(2, 4);
            let t = table(&mut mem, 2, 4);
            let w = t.writer().unwrap();
            let p = |n| HistoryPoint {
                ts_ms: n,
                ..Default::default()
            };
            w.commit(1, record(1), Some(b"one"), Some(p(1)));
            w.publish_host_count(2);
            w.commit_until(1, record(2), Some(b"two"), Some(p(2)), stop);
            // A reader never blocks on the dead writer and sees a consistent host.
            let d = t.read_detail(1).expect("readable while odd");
            assert!(consistent(&d.record));
            assert_eq!(d.record.samples_received, want, "{stop:?}");
            assert_eq!(
                d.sample.as_deref(),
                Some(if want == 1 { &b"one"[..] } else { b"two" })
            );
            assert_eq!(d.history.len() as u64, want);
            // The supervisor re-initialises the lock and repairs the slot.
            t.reinit_lock().unwrap();
            assert_eq!(t.repair(), vec![(1, applied)]);
            let d = t.read_detail(1).unwrap();
            assert!(consistent(&d.record));
            assert_eq!(d.record.samples_received, want);
            assert_eq!(d.history.last().unwrap().ts_ms, want);
            assert!(t.repair().is_empty());
            // And the next write works normally.
            t.writer().unwrap().commit(1, record(3), None, None);
            assert_eq!(t.read_record(1).unwrap().samples_received, 3);
        }
    }

    #[test]
    fn a_cleared_slot_is_free_with_no_sample_and_no_history() {
        let mut mem = Mem::new(2, 4);
        let t = table(&mut mem, 2, 4);
        let w = t.writer().unwrap();
        let p = HistoryPoint {
            ts_ms: 9,
            ..Default::default()
        };
        w.commit(0, record(1), Some(b"one"), Some(p));
        w.publish_host_count(1);
        w.clear(0);
        let d = t.read_detail(0).unwrap();
        assert_eq!(d.record.in_use, 0);
        assert!(d.sample.is_none() && d.history.is_empty());
        // A new host in the slot starts from nothing.
        w.commit(0, record(2), None, Some(p));
        let d = t.read_detail(0).unwrap();
        assert_eq!((d.record.samples_received, d.history.len()), (2, 1));
        assert!(t.repair().is_empty());
    }

    #[test]
    fn lock_left_held_by_a_dead_writer_is_reinitialised() {
        let mut mem = Mem::new(1, 4);
        let t = table(&mut mem, 1, 4);
        let w = t.writer().unwrap();
        std::mem::forget(w.lock.lock().unwrap()); // a holder that never unlocks (as if SIGKILLed)
        t.reinit_lock().unwrap();
        t.writer().unwrap().commit(0, record(5), None, None);
        assert_eq!(t.read_record(0).unwrap().samples_received, 5);
    }

    #[test]
    fn text_fields_truncate_on_char_boundaries_and_survive_garbage() {
        let mut r = Record::zeroed();
        let long = "é".repeat(200); // 400 bytes
        r.hostname.set(&long);
        assert_eq!(r.hostname.get().len(), 256);
        r.hostname.len = u32::MAX; // hostile memory: clamped
        r.hostname.bytes[0] = 0xff;
        assert_eq!(r.hostname.get().chars().count(), 1 + 127 + 1); // U+FFFD, 127 x é, U+FFFD
    }
}
