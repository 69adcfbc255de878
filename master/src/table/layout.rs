//! The shared-memory layout: `#[repr(C)]` plain-old-data with explicit sizes, asserted at
//! compile time. Every type here is valid for any bit pattern (no `bool`, no enums, no
//! pointers), so a reader may copy bytes out of a slot while a writer changes them and only
//! then decide, with the sequence counter, whether the copy is usable.

use std::sync::atomic::{AtomicU64, Ordering};

/// First bytes of every Sentinel table; a segment without them is not ours.
pub const MAGIC: [u8; 8] = *b"SNTLTBL\0";
/// Bump on any change to the types in this file: a process built for another layout refuses
/// to open the segment instead of misreading it.
/// Version 2 added [`CollectorCounters`] to the header, and sample buffers hold the sample's
/// wire form (short keys, `sentinel_protocol::decode_sample`) as the agent sent it; the
/// record struct is unchanged since 1.
/// Version 3 appended the identity fields to [`Record`] (pinned key, clone report), the
/// monotonic network totals ([`NetTotals`]) and the boot-clock receive time; images
/// of layouts 1 and 2 are migrated on restore (`table::image`: old record bytes copied, the
/// new tail zeroed, which means "no key pinned, never cloned").
/// Version 4 appended the host's labels to [`Record`] (`labels_len`, `labels`); images and
/// stale segments of layouts 1 to 3 migrate the same way (a zero tail = no labels).
pub const LAYOUT_VERSION: u32 = 4;
/// `size_of::<Record>()` of layouts 1 and 2: the shortest record an image may hold.
pub const RECORD_BYTES_V1: usize = 2032;
/// `size_of::<Record>()` of layout 3 (identity fields, no labels).
pub const RECORD_BYTES_V3: usize = 2192;
/// Bytes of a record's label field: `name=value\0` per label, sorted by name. The protocol's
/// bound on a label set is this size, so every valid set fits.
pub const LABELS_BYTES: usize = sentinel_protocol::limits::MAX_LABELS_BYTES;
/// Bytes reserved for the latest sample's CBOR encoding (wire form, typically ~300 bytes); a
/// larger one is stored with its per-core, filesystem and interface lists truncated.
pub const SAMPLE_BYTES: usize = 8192;
/// Bytes reserved for raw_sync's process-shared mutex (a `pthread_mutex_t` is 40-48 bytes on
/// the targets we build for); checked at start.
pub const LOCK_BYTES: usize = 128;
/// Refusal counters in the header, one per `refused` code (`collector::RefusalCode` numbers
/// them). More than the codes there are, so a new code needs no layout change.
pub const REFUSAL_CODES: usize = 16;
/// Slots start on a cache-line boundary so two slots never share a line.
pub const SLOT_ALIGN: usize = 64;

/// The segment's header. Written once by the supervisor; afterwards only the atomics change.
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub layout_version: u32,
    /// `size_of::<Header>()`, so a reader can detect a layout mismatch the version missed.
    pub header_size: u32,
    /// Number of host slots.
    pub capacity: u32,
    /// Points in each slot's history ring.
    pub history_points: u32,
    /// Bytes from one slot to the next.
    pub slot_size: u64,
    /// `size_of::<Record>()`, checked on open.
    pub record_size: u32,
    /// [`SAMPLE_BYTES`], checked on open.
    pub sample_bytes: u32,
    /// Incremented each time a collector starts (after the supervisor repaired the slots).
    pub generation: AtomicU64,
    /// Pid of the supervisor that created the segment: a stale segment's owner is checked
    /// against it before the segment is removed.
    pub supervisor_pid: AtomicU64,
    pub collector_pid: AtomicU64,
    pub http_pid: AtomicU64,
    /// CLOCK_BOOTTIME ms (`segment::boot_ms`, not unix ms: a wall-clock step must not make a
    /// healthy collector look hung), written by the collector every 250 ms; the supervisor's
    /// watchdog and /healthz judge the collector by it. Never in images (docs/MASTER-NOTES.md).
    pub collector_heartbeat_boot_ms: AtomicU64,
    /// Unix ms when the current collector started.
    pub collector_started_ms: AtomicU64,
    /// Slots in use (`0..host_count`); only grows, published after the slot is written.
    pub host_count: AtomicU64,
    /// Unix ms when the supervisor created the segment.
    pub created_ms: u64,
    /// raw_sync Mutex storage, taken only by collectors (never by the http process).
    pub lock: [u64; LOCK_BYTES / 8],
    /// What the collector did with its connections, for /metrics.
    pub counters: CollectorCounters,
    pub reserved: [u64; 13],
    /// Host lifecycle counters (removals, expiries, table full), taken from the reserved
    /// words without a layout change: an older segment has zeros there.
    pub lifecycle: LifecycleCounters,
}
const _: () = assert!(std::mem::size_of::<Header>() == 512);
const _: () = assert!(std::mem::align_of::<Header>() == 8);

/// The collector's connection counters (`sentinel_collector_*` in /metrics). Only collectors
/// add to them (relaxed atomics, no lock); they live in the header so they survive a
/// collector restart, and table images carry them across a master restart.
#[repr(C)]
pub struct CollectorCounters {
    /// TCP connections accepted on the agent listener, before any limit or handshake: the
    /// denominator of everything below.
    pub connections_accepted: AtomicU64,
    /// Handshakes that ended in a `welcome`.
    pub handshakes: AtomicU64,
    /// Frames that could not be read (over the length limit, truncated, a read error) or
    /// whose body was not valid CBOR for an agent message; each is also refused `invalid`.
    pub decode_errors: AtomicU64,
    /// Refused connections, indexed by `collector::RefusalCode::index`.
    pub refused: [AtomicU64; REFUSAL_CODES],
}
/// What happened to host slots, for /metrics (`sentinel_master_hosts_removed_total` ...).
/// Only the collector adds (relaxed atomics). They live in the segment, so they survive a
/// collector or http restart; table images do not carry them (a master restart starts them
/// at zero, which Prometheus reads as a counter reset).
#[repr(C)]
pub struct LifecycleCounters {
    /// Hosts an operator removed (control channel `RemoveHost`).
    pub hosts_removed: AtomicU64,
    /// Hosts removed because they were down or stopped longer than `host_expiry`.
    pub hosts_expired: AtomicU64,
    /// New hosts refused `busy` because every slot was taken.
    pub table_full: AtomicU64,
}
const _: () = assert!(std::mem::size_of::<LifecycleCounters>() == 24);

/// `CollectorCounters` as a flat list of u64 (what a table image stores).
pub const COLLECTOR_COUNTER_WORDS: usize = 3 + REFUSAL_CODES;
const _: () = assert!(std::mem::size_of::<CollectorCounters>() == 8 * COLLECTOR_COUNTER_WORDS);

impl CollectorCounters {
    fn words(&self) -> impl Iterator<Item = &AtomicU64> {
        [
            &self.connections_accepted,
            &self.handshakes,
            &self.decode_errors,
        ]
        .into_iter()
        .chain(self.refused.iter())
    }

    /// Every counter, in the order of the fields (images store this).
    pub fn values(&self) -> [u64; COLLECTOR_COUNTER_WORDS] {
        let mut out = [0; COLLECTOR_COUNTER_WORDS];
        for (o, w) in out.iter_mut().zip(self.words()) {
            *o = w.load(Ordering::Relaxed);
        }
        out
    }

    /// Sets every counter from [`values`](Self::values) of another table (a restore).
    pub fn set_values(&self, values: &[u64; COLLECTOR_COUNTER_WORDS]) {
        for (v, w) in values.iter().zip(self.words()) {
            w.store(*v, Ordering::Relaxed);
        }
    }
}

/// A fixed-size text field: length plus bytes; the reader clamps the length.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    /// Stores `s`, truncated to `N` bytes on a character boundary.
    pub fn set(&mut self, s: &str) {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes = [0; N];
        self.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        self.len = end as u32;
    }

    /// The stored text; bytes that are not UTF-8 become U+FFFD.
    pub fn get(&self) -> String {
        self.as_str().into_owned()
    }

    /// The stored text, borrowed unless bytes that are not UTF-8 had to become U+FFFD.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let len = (self.len as usize).min(N);
        String::from_utf8_lossy(&self.bytes[..len])
    }
}

/// The latest sample's scalars, for the fleet view and /metrics without decoding CBOR. Its
/// serde form is the part of the API's HOST object that comes from the sample (CONTRACT.md).
#[repr(C)]
#[derive(Clone, Copy, serde::Serialize)]
pub struct Summary {
    /// Agent clock of the sample (unix ms).
    #[serde(skip)]
    pub ts_ms: u64,
    #[serde(skip)]
    pub seq: u64,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub uptime_s: u64,
    pub cpu_percent: f32,
    pub cpu_user_percent: f32,
    pub cpu_system_percent: f32,
    pub cpu_iowait_percent: f32,
    pub cpu_steal_percent: f32,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
    pub processes: u32,
    #[serde(skip)]
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<Summary>() == 104);

/// Cumulative counters of the previous stored sample, to turn the next one into rates.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RateBase {
    /// 0 = no previous sample in this run.
    pub valid: u64,
    pub ts_ms: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
}
const _: () = assert!(std::mem::size_of::<RateBase>() == 48);

/// A host's network counters as /metrics exports them: cumulative, and never going backwards
/// when an interface disappears, the set of counted interfaces changes, or the host reboots
/// (Prometheus would read a decrease as a counter reset). `account::advance_net_totals` keeps
/// them; docs/CONTRACT.md says what they count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetTotals {
    /// Bytes received on the counted interfaces since the host first reported (see above).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// FNV-1a of the counted interfaces' names at the previous stored sample: a changed set
    /// (rename, appeared, disappeared) adds nothing for that one interval instead of a jump.
    pub names_hash: u64,
}
const _: () = assert!(std::mem::size_of::<NetTotals>() == 24);

/// One point of a host's history ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct HistoryPoint {
    pub ts_ms: u64,
    pub mem_used_bytes: u64,
    pub cpu_percent: f32,
    pub load1: f32,
    pub net_rx_bytes_per_s: f32,
    pub net_tx_bytes_per_s: f32,
    pub disk_read_bytes_per_s: f32,
    pub disk_write_bytes_per_s: f32,
}
const _: () = assert!(std::mem::size_of::<HistoryPoint>() == 40);

/// Everything about one host except the sample bytes and the history ring. A slot holds two:
/// the visible record and its redo journal.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    /// 1 once the slot belongs to a host.
    pub in_use: u8,
    /// 1 while an authenticated connection of this host is open.
    pub connected: u8,
    /// 1 after a goodbye, until the next handshake.
    pub goodbye: u8,
    /// 1 once a sample is stored.
    pub has_sample: u8,
    /// Which of the two sample buffers holds the latest sample (0 or 1).
    pub sample_buf: u8,
    pub _pad0: [u8; 3],
    /// The agent id as ASCII hex.
    pub agent_id: [u8; 32],
    pub interval_ms: u32,
    pub cpu_count: u32,
    /// CBOR length of each sample buffer.
    pub sample_len: [u32; 2],
    /// Master receive time of the first handshake (unix ms).
    pub first_seen_ms: u64,
    /// Master receive time of the last frame from the agent (unix ms).
    pub last_seen_ms: u64,
    /// Agent clock minus master clock at the last handshake.
    pub clock_offset_ms: i64,
    pub run_id: u64,
    /// Highest seq of the current run held, gaps accounted as dropped or missing.
    pub last_seq: u64,
    /// The agent's cumulative `dropped` of the current run, as last seen.
    pub run_dropped: u64,
    /// Samples of a run that precede the first one this table stored and that no reported
    /// drop explains: acked by an earlier master instance (the table starts empty after a
    /// master restart), so neither missing nor held. Sum over runs.
    pub samples_before_start: u64,
    pub samples_received: u64,
    pub samples_replayed: u64,
    pub samples_dropped: u64,
    pub samples_missing: u64,
    pub duplicates: u64,
    pub reconnects: u64,
    /// Handshakes ever completed (reconnects = handshakes - 1).
    pub handshakes: u64,
    /// Points ever appended to the history ring; the newest is at `(history_count-1) % points`.
    pub history_count: u64,
    /// Ring index the last write put `pending_point` at (`u64::MAX` for none): readers of a
    /// half-written slot overlay it, and repair writes it.
    pub pending_index: u64,
    pub pending_point: HistoryPoint,
    pub summary: Summary,
    pub rate_base: RateBase,
    pub hostname: Text<256>,
    /// The peer's socket address as text.
    pub address: Text<64>,
    pub agent_version: Text<256>,
    pub os: Text<256>,
    pub kernel: Text<256>,
    pub arch: Text<256>,
    pub cpu_model: Text<256>,
    // --- Layout 3 (identity). New fields go after these; all-zero must mean "nothing yet",
    // since an older image restores with this tail zeroed.
    /// The Ed25519 public key pinned to this agent id at its first keyed welcome; all zero =
    /// no key pinned (a 0.1.0 agent, or the key was forgotten).
    pub key: [u8; 32],
    /// Master time when `key` was pinned (unix ms), 0 = not pinned.
    pub key_pinned_ms: u64,
    /// Master time of the first hello that proved the pinned key while another connection of
    /// this host was live (a cloned VM suspected); 0 = none pending. A later one within
    /// `collector::store::CLONE_WINDOW_MS`, after the live one sent a frame, confirms it.
    pub clone_suspect_ms: u64,
    /// Master time of the last confirmed clone: a second peer proved the pinned key while the
    /// connected one was live (unix ms), 0 = never.
    pub cloned_ms: u64,
    /// The refused peer's address at `cloned_ms`.
    pub cloned_address: Text<64>,
    /// The network counters /metrics exports (monotonic; all zero = no sample yet, and a
    /// migrated older record seeds them from its next sample).
    pub net_totals: NetTotals,
    /// `last_seen_ms` on the boot clock (`segment::boot_ms`, CLOCK_BOOTTIME), which no
    /// wall-clock step moves: liveness is judged by it (`status::seen_and_now`). 0 = none
    /// in this boot (a record restored from an image, until its next frame).
    pub last_seen_boot_ms: u64,
    // --- Layout 4 (labels). All zero = no labels.
    /// Bytes of `labels` in use (clamped to [`LABELS_BYTES`] by the reader).
    pub labels_len: u16,
    pub _pad_labels: [u8; 6],
    /// The host's labels as the collector merged them at the last accepted hello (agent's,
    /// then master.toml `[[host_labels]]` over them): `name=value\0` repeated, sorted by name.
    pub labels: [u8; LABELS_BYTES],
}
const _: () = assert!(std::mem::size_of::<Record>() == RECORD_BYTES_V3 + 8 + LABELS_BYTES);
const _: () = assert!(RECORD_BYTES_V3 == 2032 + 32 + 24 + 72 + 24 + 8);
const _: () = assert!(std::mem::size_of::<Record>() % 8 == 0);

impl Record {
    pub fn zeroed() -> Record {
        // SAFETY: Record is plain old data; all-zero is a valid value of every field.
        unsafe { std::mem::zeroed() }
    }

    pub fn agent_id(&self) -> String {
        String::from_utf8_lossy(&self.agent_id).into_owned()
    }

    /// The pinned public key, if any.
    pub fn pinned_key(&self) -> Option<&[u8; 32]> {
        (self.key != [0; 32]).then_some(&self.key)
    }

    /// The stored labels in name order, borrowed. Tolerant of garbage (a torn copy, a hostile
    /// image): it stops at the first entry that is not `name=value\0` with a label-syntax
    /// name, a non-empty UTF-8 value, and a name after the previous one.
    pub fn labels_iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let len = usize::from(self.labels_len).min(LABELS_BYTES);
        let mut rest = &self.labels[..len];
        let mut previous: Option<&str> = None;
        std::iter::from_fn(move || {
            let end = rest.iter().position(|&b| b == 0)?;
            let entry = std::str::from_utf8(&rest[..end]).ok()?;
            let (name, value) = entry.split_once('=')?;
            if !sentinel_protocol::labels::is_label_name(name)
                || value.is_empty()
                || previous.is_some_and(|p| p >= name)
            {
                return None;
            }
            rest = &rest[end + 1..];
            previous = Some(name);
            Some((name, value))
        })
    }

    /// The stored labels in name order (see [`labels_iter`](Self::labels_iter)).
    pub fn labels(&self) -> Vec<(String, String)> {
        self.labels_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    /// Replaces the stored labels with `labels` (already validated, so they fit: a set beyond
    /// [`LABELS_BYTES`] keeps only the labels that fit, whole, in name order).
    pub fn set_labels(&mut self, labels: &std::collections::BTreeMap<String, String>) {
        self.labels = [0; LABELS_BYTES];
        let mut at = 0;
        for (name, value) in labels {
            let n = name.len() + value.len() + 2;
            if at + n > LABELS_BYTES {
                break;
            }
            let entry = &mut self.labels[at..at + n];
            entry[..name.len()].copy_from_slice(name.as_bytes());
            entry[name.len()] = b'=';
            entry[name.len() + 1..n - 1].copy_from_slice(value.as_bytes());
            at += n;
        }
        self.labels_len = at as u16;
    }
}

/// The fixed part of a slot; the history ring (`history_points` x [`HistoryPoint`]) follows.
#[repr(C)]
pub struct SlotFixed {
    /// Seqlock counter: odd while a write is in progress.
    pub seq: AtomicU64,
    /// Set to the (odd) `seq` once `journal` holds the complete new record.
    pub journal_seq: AtomicU64,
    pub record: Record,
    pub journal: Record,
    /// Double buffer: a write fills the one the visible record does not point to.
    pub samples: [[u8; SAMPLE_BYTES]; 2],
}
const _: () = assert!(
    std::mem::size_of::<SlotFixed>() == 16 + 2 * std::mem::size_of::<Record>() + 2 * SAMPLE_BYTES
);
const _: () = assert!(std::mem::size_of::<SlotFixed>() % 8 == 0);

/// Bytes of one slot for a history ring of `history_points`.
pub const fn slot_size(history_points: u32) -> usize {
    let raw = std::mem::size_of::<SlotFixed>()
        + history_points as usize * std::mem::size_of::<HistoryPoint>();
    raw.div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}

/// Bytes of a whole segment.
pub const fn segment_size(capacity: u32, history_points: u32) -> usize {
    std::mem::size_of::<Header>() + capacity as usize * slot_size(history_points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn record_labels_round_trip_in_name_order() {
        let mut r = Record::zeroed();
        assert!(r.labels().is_empty(), "all zero = no labels");
        let set: BTreeMap<String, String> = [("role", "db"), ("dc", "eu1"), ("team", "a=b c")]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        r.set_labels(&set);
        let got = r.labels();
        let want: Vec<(String, String)> = set.clone().into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(&r.labels[..7], b"dc=eu1\0");
        // Replacing with fewer labels leaves nothing of the old set behind.
        r.set_labels(&BTreeMap::from([("a".to_owned(), "1".to_owned())]));
        assert_eq!(r.labels(), [("a".to_owned(), "1".to_owned())]);
        assert!(r.labels[4..].iter().all(|&b| b == 0));
        r.set_labels(&BTreeMap::new());
        assert_eq!((r.labels_len, r.labels()), (0, vec![]));
    }

    #[test]
    fn record_labels_stop_at_the_first_malformed_entry() {
        type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (b"a=1\0b=2\0", &[("a", "1"), ("b", "2")]),
            (b"a=1\0b=2", &[("a", "1")]),
            (b"a=1\0noequals\0c=3\0", &[("a", "1")]),
            (b"a=1\0=x\0", &[("a", "1")]),
            (b"a=1\0b=\0", &[("a", "1")]),
            (b"a=1\x001b=2\0", &[("a", "1")]),
            (b"b=1\0a=2\0", &[("b", "1")]),
            (b"a=1\0a=2\0", &[("a", "1")]),
            (b"a=\xff\0", &[]),
            (b"\0\0\0", &[]),
        ];
        for (bytes, want) in cases {
            let mut r = Record::zeroed();
            r.labels[..bytes.len()].copy_from_slice(bytes);
            r.labels_len = bytes.len() as u16;
            let got: Vec<(&str, &str)> = r.labels_iter().collect();
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(bytes));
        }
        // A length beyond the field is clamped, never read past it.
        let mut r = Record::zeroed();
        r.labels = [b'a'; LABELS_BYTES];
        r.labels_len = u16::MAX;
        assert_eq!(r.labels_iter().count(), 0);
    }
}
