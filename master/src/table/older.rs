//! Images of a stale segment of an older table layout (a 0.1.0 master, layout 2, SIGKILLed
//! before an upgrade): its hosts are read with that layout's slot geometry and written as an
//! image of this binary's layout, migrated like an old image (`image::record_from`: the old
//! record's bytes, the new tail zeroed = no key pinned). Without it the older segment would
//! be dropped and only the snapshot file, up to `snapshot_interval` older, restored.
//!
//! Every layout so far only appended fields to `Record` and kept the header's size and the
//! slot's order (seq, journal_seq, record, journal, two sample buffers, history ring); the
//! header's own sizes say the old record size, and they are checked against each other and
//! the mapping before a byte is read.

use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::image::{self, ImageError, HOST_READ_ATTEMPTS};
use super::layout::{
    Header, HistoryPoint, Record, COLLECTOR_COUNTER_WORDS, LAYOUT_VERSION, RECORD_BYTES_V1,
    SAMPLE_BYTES, SLOT_ALIGN,
};

/// Slot geometry of an older layout whose records are `record` bytes.
struct Geometry {
    record: usize,
    slot: usize,
    /// Offset of the sample buffers in a slot.
    samples: usize,
    /// Offset of the history ring in a slot.
    ring: usize,
}

impl Geometry {
    fn new(record: usize, points: usize) -> Geometry {
        let samples = 16 + 2 * record;
        let ring = samples + 2 * SAMPLE_BYTES;
        let slot =
            (ring + points * std::mem::size_of::<HistoryPoint>()).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        Geometry {
            record,
            slot,
            samples,
            ring,
        }
    }
}

/// An image (this binary's layout) of the older-layout table at `base`.
///
/// # Safety
/// `base` must be valid for `len` bytes and 8-aligned while this runs; the caller checked the
/// magic. Only the seqlock reader's loads are used: nothing is written.
pub unsafe fn image_of_older_segment(
    base: *const u8,
    len: usize,
    created_ms: u64,
) -> Result<Vec<u8>, ImageError> {
    if len < std::mem::size_of::<Header>() {
        return Err(ImageError::Corrupt(
            "the segment is shorter than its header",
        ));
    }
    let h = &*(base as *const Header);
    let layout = h.layout_version;
    if !(1..LAYOUT_VERSION).contains(&layout) {
        return Err(ImageError::Layout { found: layout });
    }
    let record = h.record_size as usize;
    let (capacity, points) = (h.capacity as usize, h.history_points as usize);
    if h.header_size as usize != std::mem::size_of::<Header>()
        || !(RECORD_BYTES_V1..std::mem::size_of::<Record>()).contains(&record)
        || record % 8 != 0
        || h.sample_bytes as usize != SAMPLE_BYTES
        || capacity == 0
        || points == 0
    {
        return Err(ImageError::Sizes(format!(
            "older segment (layout {layout}) with record {record} bytes, {capacity} slots, {points} points"
        )));
    }
    let g = Geometry::new(record, points);
    let need = capacity
        .checked_mul(g.slot)
        .and_then(|s| s.checked_add(std::mem::size_of::<Header>()));
    if h.slot_size as usize != g.slot || need.is_none_or(|n| n > len) {
        return Err(ImageError::Sizes(format!(
            "older segment (layout {layout}): slot size {} (expected {}), {len} bytes mapped",
            h.slot_size, g.slot
        )));
    }
    // Layout 1 had no counters in the header (that space was reserved, zero).
    let counters = if layout >= 2 {
        h.counters.values()
    } else {
        [0; COLLECTOR_COUNTER_WORDS]
    };
    let hosts = (h.host_count.load(Ordering::Acquire) as usize).min(capacity);
    let mut body = image::start_body(&counters);
    for i in 0..hosts {
        let slot = base.add(std::mem::size_of::<Header>() + i * g.slot);
        let (rec, sample, history) = (0..HOST_READ_ATTEMPTS)
            .find_map(|_| read_host(slot, &g, points))
            .ok_or(ImageError::Busy(i))?;
        image::put_host(&mut body, &rec, &sample, &history);
    }
    Ok(image::finish(body, hosts, points as u32, created_ms))
}

/// One seqlock read of an older-layout slot: the record (migrated), its latest sample and its
/// history oldest first, or `None` if a writer moved the slot meanwhile.
unsafe fn read_host(
    slot: *const u8,
    g: &Geometry,
    points: usize,
) -> Option<(Record, Vec<u8>, Vec<HistoryPoint>)> {
    let seq = &*(slot as *const AtomicU64);
    let jseq = &*(slot.add(8) as *const AtomicU64);
    let s1 = seq.load(Ordering::Acquire);
    let j1 = jseq.load(Ordering::Acquire);
    // As in `Table::read_consistent`: an odd slot with a complete journal is the journal.
    let src = if s1 % 2 == 1 && j1 == s1 {
        slot.add(16 + g.record)
    } else {
        slot.add(16)
    };
    let rec = image::record_from(&volatile_copy(src, g.record));
    let buf = usize::from(rec.sample_buf & 1);
    let sample = if rec.has_sample == 1 {
        let n = (rec.sample_len[buf] as usize).min(SAMPLE_BYTES);
        volatile_copy(slot.add(g.samples + buf * SAMPLE_BYTES), n)
    } else {
        Vec::new()
    };
    let mut ring = Vec::with_capacity(points);
    let at = slot.add(g.ring) as *const HistoryPoint;
    for k in 0..points {
        ring.push(ptr::read_volatile(at.add(k)));
    }
    fence(Ordering::Acquire);
    if seq.load(Ordering::Relaxed) != s1 || jseq.load(Ordering::Relaxed) != j1 {
        return None;
    }
    if (rec.pending_index as usize) < points {
        ring[rec.pending_index as usize] = rec.pending_point;
    }
    let count = rec.history_count;
    let held = (count as usize).min(points);
    let history = (0..held as u64)
        .map(|k| ring[((count - held as u64 + k) % points as u64) as usize])
        .collect();
    Some((rec, sample, history))
}

unsafe fn volatile_copy(src: *const u8, n: usize) -> Vec<u8> {
    (0..n).map(|k| ptr::read_volatile(src.add(k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::layout::MAGIC;
    use crate::table::TestTable;

    /// A layout 2 segment (0.1.0's) in memory: 3 hosts with samples and history.
    fn layout_2_segment(capacity: usize, points: usize) -> Vec<u64> {
        older_segment(2, RECORD_BYTES_V1, capacity, points)
    }

    /// A segment of an older `layout` whose records are `record_bytes` long, hosts as above
    /// (from layout 3 on, host 1 has a pinned key).
    fn older_segment(layout: u32, record_bytes: usize, capacity: usize, points: usize) -> Vec<u64> {
        let g = Geometry::new(record_bytes, points);
        let mut mem = vec![0u64; (std::mem::size_of::<Header>() + capacity * g.slot) / 8];
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: all writes are inside `mem`, which is 8-aligned.
        unsafe {
            let h = &mut *(base as *mut Header);
            h.magic = MAGIC;
            h.layout_version = layout;
            h.header_size = std::mem::size_of::<Header>() as u32;
            h.capacity = capacity as u32;
            h.history_points = points as u32;
            h.slot_size = g.slot as u64;
            h.record_size = record_bytes as u32;
            h.sample_bytes = SAMPLE_BYTES as u32;
            h.counters.handshakes.store(7, Ordering::Relaxed);
            for i in 0..3usize {
                let slot = base.add(std::mem::size_of::<Header>() + i * g.slot);
                let mut r = Record::zeroed();
                r.in_use = 1;
                r.has_sample = 1;
                r.sample_buf = 1;
                r.agent_id = [b'a' + i as u8; 32];
                r.hostname.set(&format!("old-{i}"));
                r.last_seq = 10 + i as u64;
                r.samples_received = 10 + i as u64;
                r.sample_len = [0, 6];
                r.history_count = 2;
                r.pending_index = u64::MAX;
                if layout >= 3 && i == 1 {
                    r.key = [5; 32];
                }
                // An older record is the first `record_bytes` of this binary's.
                let bytes =
                    std::slice::from_raw_parts(&r as *const Record as *const u8, record_bytes);
                ptr::copy_nonoverlapping(bytes.as_ptr(), slot.add(16), record_bytes);
                ptr::copy_nonoverlapping(b"samp-x".as_ptr(), slot.add(g.samples + SAMPLE_BYTES), 6);
                let ring = slot.add(g.ring) as *mut HistoryPoint;
                for k in 0..2 {
                    *ring.add(k) = HistoryPoint {
                        ts_ms: 100 + k as u64,
                        ..Default::default()
                    };
                }
            }
            h.host_count.store(3, Ordering::Release);
        }
        mem
    }

    #[test]
    fn a_stale_layout_2_segment_is_imaged_and_restores_its_hosts_unpinned() {
        let mem = layout_2_segment(4, 8);
        // SAFETY: `mem` is a whole layout 2 segment.
        let image =
            unsafe { image_of_older_segment(mem.as_ptr() as *const u8, mem.len() * 8, 1) }.unwrap();
        let dst = TestTable::new(8, 8);
        let (info, left_out) = dst.table.restore(&image).unwrap();
        assert_eq!((info.hosts, left_out), (3, 0));
        assert_eq!(
            dst.table
                .header()
                .counters
                .handshakes
                .load(Ordering::Relaxed),
            7
        );
        for i in 0..3 {
            let d = dst.table.read_detail(i).unwrap();
            assert_eq!(d.record.hostname.get(), format!("old-{i}"));
            assert_eq!(d.record.last_seq, 10 + i as u64);
            assert_eq!(d.record.pinned_key(), None);
            assert_eq!(d.sample.as_deref(), Some(&b"samp-x"[..]));
            assert_eq!(
                d.history.iter().map(|p| p.ts_ms).collect::<Vec<_>>(),
                [100, 101]
            );
        }
    }

    #[test]
    fn a_stale_layout_3_segment_restores_its_hosts_pinned_and_without_labels() {
        let mem = older_segment(3, crate::table::layout::RECORD_BYTES_V3, 4, 8);
        // SAFETY: `mem` is a whole layout 3 segment.
        let image =
            unsafe { image_of_older_segment(mem.as_ptr() as *const u8, mem.len() * 8, 1) }.unwrap();
        let dst = TestTable::new(8, 8);
        let (info, left_out) = dst.table.restore(&image).unwrap();
        assert_eq!((info.hosts, left_out), (3, 0));
        for i in 0..3 {
            let d = dst.table.read_detail(i).unwrap();
            assert_eq!(d.record.hostname.get(), format!("old-{i}"));
            assert!(d.record.labels().is_empty());
            assert_eq!(d.sample.as_deref(), Some(&b"samp-x"[..]));
        }
        assert_eq!(
            dst.table.read_record(1).unwrap().pinned_key(),
            Some(&[5; 32])
        );
    }

    #[test]
    fn an_older_segment_whose_sizes_disagree_is_refused() {
        let mut mem = layout_2_segment(4, 8);
        let len = mem.len() * 8;
        // SAFETY: header fields inside `mem`.
        unsafe { (*(mem.as_mut_ptr() as *mut Header)).slot_size += 64 };
        let r = unsafe { image_of_older_segment(mem.as_ptr() as *const u8, len, 1) };
        assert!(matches!(r, Err(ImageError::Sizes(_))), "{r:?}");
        // SAFETY: as above.
        let r = unsafe { image_of_older_segment(mem.as_ptr() as *const u8, len / 2, 1) };
        assert!(matches!(r, Err(ImageError::Sizes(_))), "{r:?}");
    }
}
