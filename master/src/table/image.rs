//! Table images: every host of a table (record, latest sample, history ring) as one byte
//! string, and the restore of such an image into a fresh table. The supervisor writes images
//! to the state directory (`crate::snapshot`), so a master restart keeps the fleet's state.
//!
//! Invariants:
//! - An image is taken with the seqlock reader only: taking one never waits on the collector
//!   and never writes the table, so a live (or dead) collector is never disturbed.
//! - An image is restored only into a table no process has opened yet, and only after the
//!   whole image was checked (magic, format, layout version, sizes, checksum, bounds): a bad
//!   image leaves the table empty, never half restored.
//!
//! Format (all integers in this machine's byte order; the endian mark detects another one):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `SNTLSNAP` |
//! | 4 | format version ([`IMAGE_FORMAT`]) |
//! | 4 | endian mark `0x01020304` |
//! | 4 | table layout version (`layout::LAYOUT_VERSION`): records are raw `Record` bytes of that layout |
//! | 4 | `size_of::<Record>()` of that layout (layouts 1 and 2: 2032; 3: 2192; 4: 2712) |
//! | 4 | `size_of::<HistoryPoint>()` |
//! | 4 | `SAMPLE_BYTES` |
//! | 4 | history points per host of the table the image was taken from (information) |
//! | 4 | reserved (0) |
//! | 8 | host count |
//! | 8 | unix ms when taken |
//! | 8 | body length in bytes |
//! | 8 | FNV-1a 64 of the body |
//!
//! Then (format 2 on) the collector's counters: `word_count: u32`, `0: u32`, and
//! `word_count` u64 in the order of `layout::CollectorCounters` (a reader takes the words it
//! knows; format 1 has no such block: the counters start at 0).
//!
//! Then per host: the record, `sample_len: u32`, `point_count: u32`, the sample bytes padded
//! to 8, and `point_count` history points, oldest first.

use std::ptr;
use std::sync::atomic::Ordering;

use super::layout::{
    HistoryPoint, Record, COLLECTOR_COUNTER_WORDS, LAYOUT_VERSION, RECORD_BYTES_V1, SAMPLE_BYTES,
};
use super::Table;

pub const IMAGE_MAGIC: [u8; 8] = *b"SNTLSNAP";
/// Version of the image framing above (the records inside are versioned by the layout).
/// 2 added the collector's counters; format 1 images are still read.
pub const IMAGE_FORMAT: u32 = 2;
/// Migration of an older layout's records: every layout only ever appended fields at the end
/// of `Record`, and all-zero is "nothing yet" for each of them. So a record of an older layout
/// (`record_size` bytes, between [`RECORD_BYTES_V1`] and this binary's) is read by copying its
/// bytes and zeroing the rest. A record of the current layout must have exactly this size.
pub(super) fn record_from(bytes: &[u8]) -> Record {
    let mut rec = Record::zeroed();
    let n = bytes.len().min(std::mem::size_of::<Record>());
    // SAFETY: Record is plain old data valid for any bit pattern; n is within both.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), &mut rec as *mut Record as *mut u8, n) };
    rec
}
const ENDIAN_MARK: u32 = 0x0102_0304;
/// Bytes of the image header.
pub const IMAGE_HEADER_BYTES: usize = 72;
/// A host whose slot a live writer kept changing is re-read this often before the image is
/// given up (the previous snapshot file stays): a write takes microseconds.
pub(super) const HOST_READ_ATTEMPTS: u32 = 100;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    #[error("not a Sentinel table snapshot (bad magic or shorter than its header)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not a version this binary reads (1 to {IMAGE_FORMAT})"
    )]
    Format { found: u32 },
    #[error("snapshot was written on a machine with another byte order")]
    Endian,
    #[error("snapshot holds table layout version {found}, this binary uses layout version {LAYOUT_VERSION}")]
    Layout { found: u32 },
    #[error("snapshot sizes do not match this binary: {0}")]
    Sizes(String),
    #[error("snapshot is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("host {0} kept changing while the image was taken")]
    Busy(usize),
}

/// What an image holds, from its header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageInfo {
    pub hosts: u64,
    pub created_ms: u64,
    pub history_points: u32,
    /// Format of the image (1 carried no collector counters).
    pub format: u32,
    /// Table layout the records were written with (older ones are migrated).
    pub layout: u32,
    /// Bytes of one record in the image.
    pub record_size: u32,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is one of the table's plain-old-data types (no padding is read as anything
    // but bytes; every bit pattern is valid for them).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn pod_from<T: Copy>(bytes: &[u8]) -> T {
    assert_eq!(bytes.len(), std::mem::size_of::<T>());
    // SAFETY: length checked; T is plain old data valid for any bit pattern.
    unsafe { ptr::read_unaligned(bytes.as_ptr() as *const T) }
}

/// A bounds-checked reader over the body.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(ImageError::Corrupt("a host entry runs past the end"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_ne_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_ne_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// One host as read from an image.
struct HostEntry {
    record: Record,
    sample: Vec<u8>,
    points: Vec<HistoryPoint>,
}

impl Table {
    /// A consistent image of every host, taken with the seqlock reader (never locks). Free
    /// slots (removed or expired hosts) are left out: a restore never brings them back, and
    /// packs the remaining hosts into the first slots.
    pub fn image(&self, created_ms: u64) -> Result<Vec<u8>, ImageError> {
        let hosts = self.host_count();
        let mut body = start_body(&self.header().counters.values());
        let mut written = 0usize;
        for i in 0..hosts {
            let detail = (0..HOST_READ_ATTEMPTS)
                .find_map(|_| self.read_detail(i))
                .ok_or(ImageError::Busy(i))?;
            if detail.record.in_use != 1 {
                continue;
            }
            written += 1;
            let sample = detail.sample.unwrap_or_default();
            put_host(&mut body, &detail.record, &sample, &detail.history);
        }
        Ok(finish(body, written, self.history_points, created_ms))
    }
}

/// Appends one host entry (the format above) to an image body.
pub(super) fn put_host(
    body: &mut Vec<u8>,
    record: &Record,
    sample: &[u8],
    history: &[HistoryPoint],
) {
    body.extend_from_slice(pod_bytes(record));
    put32(body, sample.len() as u32);
    put32(body, history.len() as u32);
    body.extend_from_slice(sample);
    body.resize(body.len().div_ceil(8) * 8, 0);
    for p in history {
        body.extend_from_slice(pod_bytes(p));
    }
}

/// The body of an image starting with the collector's counters.
pub(super) fn start_body(counters: &[u64; COLLECTOR_COUNTER_WORDS]) -> Vec<u8> {
    let mut body = Vec::new();
    put32(&mut body, counters.len() as u32);
    put32(&mut body, 0);
    for &v in counters {
        put64(&mut body, v);
    }
    body
}

/// Header + `body` (this binary's layout and format).
pub(super) fn finish(body: Vec<u8>, hosts: usize, history_points: u32, created_ms: u64) -> Vec<u8> {
    {
        let mut out = Vec::with_capacity(IMAGE_HEADER_BYTES + body.len());
        out.extend_from_slice(&IMAGE_MAGIC);
        put32(&mut out, IMAGE_FORMAT);
        put32(&mut out, ENDIAN_MARK);
        put32(&mut out, LAYOUT_VERSION);
        put32(&mut out, std::mem::size_of::<Record>() as u32);
        put32(&mut out, std::mem::size_of::<HistoryPoint>() as u32);
        put32(&mut out, SAMPLE_BYTES as u32);
        put32(&mut out, history_points);
        put32(&mut out, 0);
        put64(&mut out, hosts as u64);
        put64(&mut out, created_ms);
        put64(&mut out, body.len() as u64);
        put64(&mut out, fnv1a(&body));
        debug_assert_eq!(out.len(), IMAGE_HEADER_BYTES);
        out.extend_from_slice(&body);
        out
    }
}

impl Table {
    /// Restores `image` into this table, which must be fresh (no host yet) and opened by no
    /// other process. Everything is checked before the first byte is written. Hosts beyond
    /// the capacity are left out (returned as the second number); a host's history keeps its
    /// newest points when the ring is now shorter.
    pub fn restore(&self, image: &[u8]) -> Result<(ImageInfo, usize), ImageError> {
        let (info, counters, hosts) = parse(image)?;
        self.header().counters.set_values(&counters);
        let fit = hosts.len().min(self.capacity as usize);
        let points = u64::from(self.history_points);
        for (i, host) in hosts.iter().take(fit).enumerate() {
            let mut rec = host.record;
            let held = (host.points.len() as u64).min(points);
            rec.history_count = rec.history_count.max(host.points.len() as u64);
            rec.connected = 0; // connections died with the previous master
                               // The image may come from another boot: its boot-clock times mean nothing here.
            rec.last_seen_boot_ms = 0;
            rec.pending_index = u64::MAX;
            rec.sample_buf = 0;
            rec.sample_len = [host.sample.len() as u32, 0];
            rec.has_sample = u8::from(rec.has_sample == 1 && !host.sample.is_empty());
            let newest = &host.points[host.points.len() - held as usize..];
            // SAFETY: i < capacity; no other process has this table yet (see the doc), so
            // plain writes into the slot race with nobody.
            unsafe {
                let slot = self.slot(i);
                ptr::write_volatile(ptr::addr_of_mut!((*slot).record), rec);
                let dst = ptr::addr_of_mut!((*slot).samples[0]) as *mut u8;
                ptr::copy_nonoverlapping(host.sample.as_ptr(), dst, host.sample.len());
                for (k, p) in newest.iter().enumerate() {
                    let idx = (rec.history_count - held + k as u64) % points;
                    ptr::write_volatile(self.ring(i).add(idx as usize), *p);
                }
            }
            self.seq(i).store(0, Ordering::Release);
        }
        self.header()
            .host_count
            .store(fit as u64, Ordering::Release);
        Ok((info, hosts.len() - fit))
    }
}

fn check_header(image: &[u8]) -> Result<(ImageInfo, &[u8]), ImageError> {
    if image.len() < IMAGE_HEADER_BYTES || image[..8] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic);
    }
    let mut c = Cursor {
        bytes: &image[8..IMAGE_HEADER_BYTES],
        at: 0,
    };
    let format = c.u32()?;
    if !(1..=IMAGE_FORMAT).contains(&format) {
        return Err(ImageError::Format { found: format });
    }
    if c.u32()? != ENDIAN_MARK {
        return Err(ImageError::Endian);
    }
    let layout = c.u32()?;
    if !(1..=LAYOUT_VERSION).contains(&layout) {
        return Err(ImageError::Layout { found: layout });
    }
    let record_size = c.u32()?;
    let record_ok = if layout == LAYOUT_VERSION {
        record_size as usize == std::mem::size_of::<Record>()
    } else {
        (RECORD_BYTES_V1..=std::mem::size_of::<Record>()).contains(&(record_size as usize))
            && record_size % 8 == 0
    };
    if !record_ok {
        return Err(ImageError::Sizes(format!(
            "record is {record_size} bytes in the snapshot (layout {layout}), {} here",
            std::mem::size_of::<Record>()
        )));
    }
    let sizes = [
        (
            "history point",
            c.u32()?,
            std::mem::size_of::<HistoryPoint>(),
        ),
        ("sample buffer", c.u32()?, SAMPLE_BYTES),
    ];
    for (what, found, want) in sizes {
        if found as usize != want {
            return Err(ImageError::Sizes(format!(
                "{what} is {found} bytes in the snapshot, {want} here"
            )));
        }
    }
    let history_points = c.u32()?;
    let _reserved = c.u32()?;
    let hosts = c.u64()?;
    let created_ms = c.u64()?;
    let body_len = c.u64()?;
    let checksum = c.u64()?;
    let body = &image[IMAGE_HEADER_BYTES..];
    if body.len() as u64 != body_len {
        return Err(ImageError::Corrupt(
            "the body length does not match the header",
        ));
    }
    if fnv1a(body) != checksum {
        return Err(ImageError::Corrupt("checksum mismatch"));
    }
    let info = ImageInfo {
        hosts,
        created_ms,
        history_points,
        format,
        layout,
        record_size,
    };
    Ok((info, body))
}

/// The collector's counters (all 0 in a format 1 image).
type Counters = [u64; COLLECTOR_COUNTER_WORDS];

fn parse(image: &[u8]) -> Result<(ImageInfo, Counters, Vec<HostEntry>), ImageError> {
    let (info, body) = check_header(image)?;
    let mut c = Cursor { bytes: body, at: 0 };
    let mut counters = [0; COLLECTOR_COUNTER_WORDS];
    if info.format >= 2 {
        let words = c.u32()? as usize;
        let _reserved = c.u32()?;
        for i in 0..words {
            let v = c.u64()?;
            // Words a newer format added are not this binary's to keep.
            if let Some(slot) = counters.get_mut(i) {
                *slot = v;
            }
        }
    }
    let mut hosts = Vec::new();
    for _ in 0..info.hosts {
        let record = record_from(c.take(info.record_size as usize)?);
        let sample_len = c.u32()? as usize;
        let count = c.u32()? as usize;
        if sample_len > SAMPLE_BYTES {
            return Err(ImageError::Corrupt(
                "a sample is larger than the sample buffer",
            ));
        }
        let sample = c.take(sample_len)?.to_vec();
        c.take(sample_len.div_ceil(8) * 8 - sample_len)?;
        let raw = c.take(
            count
                .checked_mul(std::mem::size_of::<HistoryPoint>())
                .ok_or(ImageError::Corrupt("history length overflows"))?,
        )?;
        let points = raw
            .chunks_exact(std::mem::size_of::<HistoryPoint>())
            .map(pod_from::<HistoryPoint>)
            .collect();
        hosts.push(HostEntry {
            record,
            sample,
            points,
        });
    }
    if c.at != body.len() {
        return Err(ImageError::Corrupt("bytes after the last host"));
    }
    Ok((info, counters, hosts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::layout::RECORD_BYTES_V3;
    use crate::table::TestTable;

    fn point(n: u64) -> HistoryPoint {
        HistoryPoint {
            ts_ms: n,
            mem_used_bytes: n * 10,
            ..Default::default()
        }
    }

    /// A table with `hosts` hosts, host h holding `10 + h` samples (with history).
    fn filled(hosts: usize, points: u32) -> TestTable {
        let t = TestTable::new(8, points);
        let w = t.table.writer().unwrap();
        for h in 0..hosts {
            for n in 1..=(10 + h as u64) {
                let mut r = w.record(h);
                r.in_use = 1;
                r.connected = 1;
                r.agent_id = [b'a' + h as u8; 32];
                r.hostname.set(&format!("host-{h}"));
                r.last_seq = n;
                r.samples_received = n;
                w.commit(
                    h,
                    r,
                    Some(format!("sample {h}/{n}").as_bytes()),
                    Some(point(n)),
                );
            }
            w.publish_host_count(h + 1);
        }
        t
    }

    #[test]
    fn an_image_restores_hosts_counters_samples_and_history() {
        let src = filled(3, 16);
        let image = src.table.image(42).unwrap();
        for points in [16, 4, 64] {
            let dst = TestTable::new(8, points);
            let (info, left_out) = dst.table.restore(&image).unwrap();
            assert_eq!((info.hosts, info.created_ms, left_out), (3, 42, 0));
            assert_eq!(dst.table.host_count(), 3);
            for h in 0..3 {
                let n = 10 + h as u64;
                let d = dst.table.read_detail(h).unwrap();
                assert_eq!(d.record.hostname.get(), format!("host-{h}"));
                assert_eq!((d.record.last_seq, d.record.samples_received), (n, n));
                assert_eq!(
                    d.record.connected, 0,
                    "connections do not survive a restart"
                );
                assert_eq!(d.sample.unwrap(), format!("sample {h}/{n}").as_bytes());
                let held = n.min(16).min(u64::from(points));
                let want: Vec<_> = (n + 1 - held..=n).map(point).collect();
                assert_eq!(d.history, want, "points {points}");
            }
            // The collector continues where the image left off.
            let w = dst.table.writer().unwrap();
            let mut r = w.record(0);
            r.last_seq += 1;
            w.commit(0, r, Some(b"next"), Some(point(11)));
            let d = dst.table.read_detail(0).unwrap();
            assert_eq!(d.history.last(), Some(&point(11)));
            assert_eq!(d.sample.as_deref(), Some(&b"next"[..]));
        }
    }

    #[test]
    fn an_image_carries_the_collector_counters() {
        let src = filled(2, 8);
        let words: [u64; COLLECTOR_COUNTER_WORDS] = std::array::from_fn(|i| 100 + i as u64);
        src.table.header().counters.set_values(&words);
        let dst = TestTable::new(8, 8);
        let (info, _) = dst.table.restore(&src.table.image(1).unwrap()).unwrap();
        assert_eq!(info.format, IMAGE_FORMAT);
        assert_eq!(dst.table.header().counters.values(), words);
    }

    /// The same image with the records cut to their layout 1/2 size (2032 bytes: what a
    /// 0.1.0 master wrote), as `format` (1: without the collector counters) of `layout`.
    fn as_old_layout(image: &[u8], format: u32, layout: u32) -> Vec<u8> {
        as_layout_of(image, format, layout, RECORD_BYTES_V1)
    }

    /// The same image with the records cut to `record_bytes` (an older layout's size).
    fn as_layout_of(image: &[u8], format: u32, layout: u32, record_bytes: usize) -> Vec<u8> {
        let counters = 8 + 8 * COLLECTOR_COUNTER_WORDS;
        let hosts = u64::from_ne_bytes(image[40..48].try_into().unwrap());
        let mut body = if format >= 2 {
            image[IMAGE_HEADER_BYTES..IMAGE_HEADER_BYTES + counters].to_vec()
        } else {
            Vec::new()
        };
        let mut c = Cursor {
            bytes: &image[IMAGE_HEADER_BYTES + counters..],
            at: 0,
        };
        for _ in 0..hosts {
            let rec = c.take(std::mem::size_of::<Record>()).unwrap();
            body.extend_from_slice(&rec[..record_bytes]);
            let sample_len = c.u32().unwrap();
            let count = c.u32().unwrap();
            body.extend_from_slice(&sample_len.to_ne_bytes());
            body.extend_from_slice(&count.to_ne_bytes());
            let rest = (sample_len as usize).div_ceil(8) * 8
                + count as usize * std::mem::size_of::<HistoryPoint>();
            body.extend_from_slice(c.take(rest).unwrap());
        }
        let mut out = image[..IMAGE_HEADER_BYTES].to_vec();
        out[8..12].copy_from_slice(&format.to_ne_bytes());
        out[16..20].copy_from_slice(&layout.to_ne_bytes());
        out[20..24].copy_from_slice(&(record_bytes as u32).to_ne_bytes());
        out[56..64].copy_from_slice(&(body.len() as u64).to_ne_bytes());
        out[64..72].copy_from_slice(&fnv1a(&body).to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn as_format_1(image: &[u8]) -> Vec<u8> {
        as_old_layout(image, 1, 1)
    }

    #[test]
    fn layout_1_and_2_images_restore_their_hosts_unpinned() {
        let src = filled(3, 8);
        // A pin in the source must not survive the cut: the old layout had no such field.
        let w = src.table.writer().unwrap();
        let mut r = w.record(1);
        r.key = [9; 32];
        r.key_pinned_ms = 5;
        r.cloned_ms = 6;
        r.cloned_address.set("10.0.0.1:1");
        w.commit(1, r, None, None);
        drop(w);
        let image = src.table.image(1).unwrap();
        for (format, layout) in [(1, 1), (2, 1), (2, 2)] {
            let old = as_old_layout(&image, format, layout);
            let dst = TestTable::new(8, 8);
            let (info, left_out) = dst.table.restore(&old).unwrap();
            assert_eq!((info.layout, info.record_size), (layout, 2032));
            assert_eq!((info.hosts, left_out), (3, 0));
            for h in 0..3 {
                let d = dst.table.read_detail(h).unwrap();
                assert_eq!(d.record.hostname.get(), format!("host-{h}"));
                assert_eq!(d.record.last_seq, 10 + h as u64);
                assert_eq!(d.record.pinned_key(), None, "layout {layout}: unpinned");
                assert_eq!((d.record.key_pinned_ms, d.record.cloned_ms), (0, 0));
                assert_eq!(d.record.cloned_address.get(), "");
                assert_eq!(d.history.len(), 8);
            }
        }
        // The current layout carries the pin.
        let dst = TestTable::new(8, 8);
        dst.table.restore(&image).unwrap();
        let r = dst.table.read_record(1).unwrap();
        assert_eq!((r.pinned_key(), r.key_pinned_ms), (Some(&[9; 32]), 5));
        assert_eq!(r.cloned_address.get(), "10.0.0.1:1");
    }

    #[test]
    fn a_layout_3_image_restores_its_hosts_with_no_labels_and_keeps_their_pins() {
        let src = filled(2, 8);
        let w = src.table.writer().unwrap();
        let mut r = w.record(1);
        r.key = [7; 32];
        r.set_labels(&std::collections::BTreeMap::from([(
            "role".to_owned(),
            "db".to_owned(),
        )]));
        w.commit(1, r, None, None);
        drop(w);
        let image = src.table.image(1).unwrap();
        let old = as_layout_of(&image, IMAGE_FORMAT, 3, RECORD_BYTES_V3);
        let dst = TestTable::new(8, 8);
        let (info, left_out) = dst.table.restore(&old).unwrap();
        assert_eq!((info.layout, info.record_size), (3, 2192));
        assert_eq!((info.hosts, left_out), (2, 0));
        for h in 0..2 {
            let d = dst.table.read_detail(h).unwrap();
            assert_eq!(d.record.hostname.get(), format!("host-{h}"));
            assert!(d.record.labels().is_empty(), "layout 3 had no labels");
            assert_eq!(d.record.labels_len, 0);
            assert_eq!(d.history.len(), 8);
        }
        // Layout 3's own fields survive the migration.
        assert_eq!(
            dst.table.read_record(1).unwrap().pinned_key(),
            Some(&[7; 32])
        );
        // The current layout carries the labels.
        let dst = TestTable::new(8, 8);
        dst.table.restore(&image).unwrap();
        let labels = dst.table.read_record(1).unwrap().labels();
        assert_eq!(labels, [("role".to_owned(), "db".to_owned())]);
    }

    #[test]
    fn an_old_layout_image_with_a_record_of_another_size_is_refused() {
        let old = as_old_layout(&filled(1, 8).table.image(1).unwrap(), 2, 2);
        for bad in [2024u32, 2036, 4000] {
            let mut b = old.clone();
            b[20..24].copy_from_slice(&bad.to_ne_bytes());
            let dst = TestTable::new(4, 8);
            assert!(matches!(
                dst.table.restore(&b).unwrap_err(),
                ImageError::Sizes(_)
            ));
            assert_eq!(dst.table.host_count(), 0);
        }
    }

    #[test]
    fn a_format_1_image_of_layout_1_is_restored_with_counters_at_zero() {
        let src = filled(3, 8);
        src.table
            .header()
            .counters
            .handshakes
            .store(9, Ordering::Relaxed);
        let dst = TestTable::new(8, 8);
        let (info, _) = dst
            .table
            .restore(&as_format_1(&src.table.image(1).unwrap()))
            .unwrap();
        assert_eq!((info.format, info.hosts), (1, 3));
        assert_eq!(dst.table.read_record(2).unwrap().last_seq, 12);
        assert_eq!(
            dst.table.header().counters.values(),
            [0; COLLECTOR_COUNTER_WORDS]
        );
    }

    #[test]
    fn hosts_beyond_the_capacity_are_left_out() {
        let src = filled(3, 8);
        let dst = TestTable::new(2, 8);
        let (_, left_out) = dst.table.restore(&src.table.image(1).unwrap()).unwrap();
        assert_eq!((dst.table.host_count(), left_out), (2, 1));
    }

    #[test]
    fn a_bad_image_is_refused_and_the_table_stays_empty() {
        let good = filled(2, 8).table.image(1).unwrap();
        let patch = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases: Vec<(Vec<u8>, ImageError)> = vec![
            (b"nonsense".to_vec(), ImageError::BadMagic),
            (
                patch(8, &7u32.to_ne_bytes()),
                ImageError::Format { found: 7 },
            ),
            (patch(12, &ENDIAN_MARK.to_be_bytes()), ImageError::Endian),
            (
                patch(16, &99u32.to_ne_bytes()),
                ImageError::Layout { found: 99 },
            ),
            (
                patch(20, &8u32.to_ne_bytes()),
                ImageError::Sizes(format!(
                    "record is 8 bytes in the snapshot (layout {LAYOUT_VERSION}), {} here",
                    std::mem::size_of::<Record>()
                )),
            ),
            (
                good[..good.len() - 1].to_vec(),
                ImageError::Corrupt("the body length does not match the header"),
            ),
            (
                patch(IMAGE_HEADER_BYTES + 100, b"x"),
                ImageError::Corrupt("checksum mismatch"),
            ),
        ];
        for (image, want) in cases {
            let dst = TestTable::new(4, 8);
            assert_eq!(dst.table.restore(&image).unwrap_err(), want);
            assert_eq!(dst.table.host_count(), 0);
        }
    }
}
