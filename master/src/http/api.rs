//! The JSON API: /healthz, /api/v1/hosts (the fleet, with what the fleet view needs per host)
//! and /api/v1/hosts/{id} (one host with its latest sample and history).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use bytes_utils::SegmentedBuf;
use hyper::StatusCode;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{json_response, not_found, Resp};
use crate::segment::boot_ms;
use crate::status::Status;
use crate::table::layout::Summary;
use crate::table::{Recent, Record, Table};

/// /healthz reports `degraded` (503) when the collector heartbeat is older than this.
pub const HEARTBEAT_STALE_MS: u64 = 2000;
/// Points of each host's CPU and memory sparkline in the fleet view (1 min at 1 s): enough to
/// see a trend, small enough that 5,000 hosts stay a few MB of JSON.
pub const SPARK_POINTS: usize = 60;

/// Judged on the boot clock (the heartbeat's), never on the wall clock a request renders with.
pub fn collector_alive(table: &Table) -> bool {
    boot_ms().saturating_sub(
        table
            .header()
            .collector_heartbeat_boot_ms
            .load(Ordering::Acquire),
    ) <= HEARTBEAT_STALE_MS
}

pub fn healthz(table: &Table) -> Resp {
    let h = table.header();
    let beat = h.collector_heartbeat_boot_ms.load(Ordering::Acquire);
    let age = boot_ms().saturating_sub(beat);
    let ok = age <= HEARTBEAT_STALE_MS;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "supervisor_pid": h.supervisor_pid.load(Ordering::Acquire),
        "collector_pid": h.collector_pid.load(Ordering::Acquire),
        "http_pid": std::process::id(),
        "collector_heartbeat_age_ms": age,
        "hosts": table.host_count(),
        "capacity": table.capacity(),
    });
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

/// An f32 as JSON with its shortest decimal form (12.3, not 12.300000190734863).
pub fn num(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    format!("{v}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// `v` as a JSON object to add fields to. Through the text form: `serde_json::to_value`
/// would widen f32 fields to f64 digits (12.300000190734863) where the text has 12.3.
fn to_map<T: Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_vec(v).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    }
}

/// A sparkline point: a percentage as a whole number, `None` (null) if not finite. A sparkline
/// is tens of pixels high, so tenths would not show, and whole numbers keep the fleet's JSON
/// smaller (8.4 -> 7.2 MB at 5,000 hosts with full sparklines).
fn whole(v: f64) -> Option<i32> {
    // Half away from zero, as f64::round, which is a libm call in the static build (120 per
    // host rendered).
    v.is_finite().then(|| {
        if v >= 0.0 {
            (v + 0.5) as i32
        } else {
            -((0.5 - v) as i32)
        }
    })
}

/// The sample in a slot's buffer: its wire form (table layout 2), or the long-key form a
/// layout-1 snapshot restored from an older master holds until the host's next sample.
fn stored_sample(bytes: &[u8]) -> Option<sentinel_protocol::Sample> {
    sentinel_protocol::decode_sample(bytes)
        .or_else(|_| sentinel_protocol::decode_body(bytes))
        .ok()
}

/// A ratio rounded to 3 decimals (`fs_fullest.used_ratio`, a filesystem's `used_ratio`);
/// `None` (null) if not finite. An integer divided by 1000 is the double nearest to the
/// 3-decimal number, so it serializes with at most 3 decimals.
fn thousandth(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 1000.0).round() / 1000.0)
}

/// The fullest filesystem of the sample in a slot's buffer (see [`stored_sample`]), read
/// without building the rest of the sample. Used and its ratio as df computes them
/// (`sentinel_protocol::used_ratio`).
fn stored_fs_fullest(bytes: &[u8]) -> Option<FsFullest> {
    type Figures<'a> = (&'a str, u64, u64, Option<u64>);
    fn fullest<'a>(filesystems: impl Iterator<Item = Figures<'a>>) -> Option<FsFullest> {
        filesystems
            .filter(|f| f.1 > 0)
            .map(|f| (sentinel_protocol::used_ratio(f.1, f.2, f.3), f))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(
                |(ratio, (mount, total_bytes, available_bytes, free))| FsFullest {
                    mount: mount.to_owned(),
                    used_ratio: thousandth(ratio),
                    total_bytes,
                    available_bytes,
                    used_bytes: sentinel_protocol::used_bytes(total_bytes, available_bytes, free),
                },
            )
    }
    match sentinel_protocol::decode_filesystems(bytes) {
        Ok(list) => fullest(
            list.iter()
                .map(|f| (f.mount, f.total_bytes, f.available_bytes, f.free_bytes)),
        ),
        Err(_) => fullest(stored_sample(bytes)?.filesystems.iter().map(|f| {
            (
                f.mount.as_str(),
                f.total_bytes,
                f.available_bytes,
                f.free_bytes,
            )
        })),
    }
}

pub fn status_of(rec: &Record, now: u64) -> Status {
    let (seen, now) = crate::status::seen_and_now(rec.last_seen_ms, rec.last_seen_boot_ms, now);
    Status::derive(rec.goodbye == 1, seen, rec.interval_ms, now)
}

/// The HOST object of docs/CONTRACT.md. Floats serialize in their shortest form and as null
/// when not finite.
#[derive(Serialize)]
pub struct Host<'a> {
    /// ASCII hex, so always borrowed.
    id: Cow<'a, str>,
    hostname: Cow<'a, str>,
    address: Cow<'a, str>,
    status: &'static str,
    connected: bool,
    first_seen_ms: u64,
    last_seen_ms: u64,
    interval_ms: u32,
    clock_offset_ms: i64,
    agent_version: Cow<'a, str>,
    os: Cow<'a, str>,
    kernel: Cow<'a, str>,
    arch: Cow<'a, str>,
    cpu_model: Cow<'a, str>,
    cpu_count: u32,
    run_id: u64,
    last_seq: u64,
    samples_received: u64,
    samples_replayed: u64,
    samples_dropped: u64,
    samples_missing: u64,
    duplicates: u64,
    reconnects: u64,
    samples_before_start: u64,
    /// "pinned", "unpinned" or "cloned" ([`identity_of`]).
    identity: Identity,
    /// SHA-256 of the pinned public key (hex); null when unpinned.
    key_sha256: Option<String>,
    /// While `identity` is "cloned": the other machine's address and when it last proved
    /// this host's key (unix ms); null otherwise.
    cloned_address: Option<Cow<'a, str>>,
    cloned_ms: Option<u64>,
    /// The host's labels as the collector merged them at the last hello, `{}` when none.
    labels: Labels<'a>,
    /// The latest sample's values.
    #[serde(flatten)]
    summary: Summary,
}

/// A record's labels as a JSON object in name order (CONTRACT.md: `labels`).
pub struct Labels<'a>(pub &'a Record);

impl Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.labels_iter())
    }
}

/// A host's identity as the API and the dashboard show it (docs/PROTOCOL.md section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// A key is pinned to the agent id.
    Pinned,
    /// No key is pinned: the agent sends none, or its key was forgotten.
    Unpinned,
    /// A key is pinned and a second machine proved it while the connected one was live,
    /// within the last `CLONED_SHOWN_MS`.
    Cloned,
}

pub fn identity_of(rec: &Record, now: u64) -> Identity {
    use crate::collector::store::CLONED_SHOWN_MS;
    match rec.pinned_key() {
        None => Identity::Unpinned,
        Some(_) if rec.cloned_ms != 0 && now.saturating_sub(rec.cloned_ms) < CLONED_SHOWN_MS => {
            Identity::Cloned
        }
        Some(_) => Identity::Pinned,
    }
}

impl<'a> Host<'a> {
    pub fn new(rec: &'a Record, now: u64, collector_alive: bool) -> Host<'a> {
        Host {
            id: String::from_utf8_lossy(&rec.agent_id),
            hostname: rec.hostname.as_str(),
            address: rec.address.as_str(),
            status: status_of(rec, now).as_str(),
            connected: rec.connected == 1 && collector_alive,
            first_seen_ms: rec.first_seen_ms,
            last_seen_ms: rec.last_seen_ms,
            interval_ms: rec.interval_ms,
            clock_offset_ms: rec.clock_offset_ms,
            agent_version: rec.agent_version.as_str(),
            os: rec.os.as_str(),
            kernel: rec.kernel.as_str(),
            arch: rec.arch.as_str(),
            cpu_model: rec.cpu_model.as_str(),
            cpu_count: rec.cpu_count,
            run_id: rec.run_id,
            last_seq: rec.last_seq,
            samples_received: rec.samples_received,
            samples_replayed: rec.samples_replayed,
            samples_dropped: rec.samples_dropped,
            samples_missing: rec.samples_missing,
            duplicates: rec.duplicates,
            reconnects: rec.reconnects,
            samples_before_start: rec.samples_before_start,
            identity: identity_of(rec, now),
            key_sha256: rec
                .pinned_key()
                .map(|k| crate::collector::store::key_fingerprint(k)),
            cloned_address: (identity_of(rec, now) == Identity::Cloned)
                .then(|| rec.cloned_address.as_str()),
            cloned_ms: (identity_of(rec, now) == Identity::Cloned).then_some(rec.cloned_ms),
            labels: Labels(rec),
            summary: rec.summary,
        }
    }
}

/// The HOST object of docs/CONTRACT.md, as a map to add fields to.
pub fn host_json(rec: &Record, now: u64, collector_alive: bool) -> Map<String, Value> {
    to_map(&Host::new(rec, now, collector_alive))
}

/// The fleet-view fields added to HOST in /api/v1/hosts and the event stream: the latest
/// network rates (from the newest history point), the fullest filesystem (from the latest
/// sample) and the CPU and memory sparklines (percent, oldest first).
#[derive(Serialize)]
pub struct FleetExtras {
    net_rx_bytes_per_s: Option<f32>,
    net_tx_bytes_per_s: Option<f32>,
    fs_fullest: Option<FsFullest>,
    spark: Spark,
}

#[derive(Serialize)]
struct FsFullest {
    mount: String,
    used_ratio: Option<f64>,
    total_bytes: u64,
    available_bytes: u64,
    /// `total - free` as df shows it (`total - available` from a 0.1.0 agent).
    used_bytes: u64,
}

#[derive(Serialize)]
struct Spark {
    /// Points stored over the host's life up to the newest here.
    n: u64,
    cpu: Vec<Option<i32>>,
    mem: Vec<Option<i32>>,
}

impl FleetExtras {
    pub fn new(recent: &Recent) -> FleetExtras {
        let rec = &recent.record;
        let last = recent.points.last();
        let fs_fullest = recent.sample.as_deref().and_then(stored_fs_fullest);
        let total = rec.summary.mem_total_bytes.max(1) as f64;
        FleetExtras {
            net_rx_bytes_per_s: last.map(|p| p.net_rx_bytes_per_s),
            net_tx_bytes_per_s: last.map(|p| p.net_tx_bytes_per_s),
            fs_fullest,
            spark: Spark {
                n: recent.first + recent.points.len() as u64,
                cpu: recent
                    .points
                    .iter()
                    .map(|p| whole(f64::from(p.cpu_percent)))
                    .collect(),
                mem: recent
                    .points
                    .iter()
                    .map(|p| whole(p.mem_used_bytes as f64 * 100.0 / total))
                    .collect(),
            },
        }
    }
}

/// Adds [`FleetExtras`] to a host map.
pub fn fleet_extras(recent: &Recent, host: &mut Map<String, Value>) {
    host.extend(to_map(&FleetExtras::new(recent)));
}

/// One host of /api/v1/hosts: HOST plus the fleet-view fields.
#[derive(Serialize)]
struct FleetHost<'a> {
    #[serde(flatten)]
    host: Host<'a>,
    #[serde(flatten)]
    extras: FleetExtras,
}

/// The fleet host of slot `i`, rendered as JSON, or `None` for an unused or unreadable slot.
/// `prefix` goes before the object in the same buffer.
fn fleet_host_json(
    table: &Table,
    i: usize,
    now: u64,
    alive: bool,
    prefix: &[u8],
) -> Option<(Record, Vec<u8>)> {
    let recent = table.read_history(i, 0, SPARK_POINTS, true)?;
    if recent.record.in_use != 1 {
        return None;
    }
    let host = FleetHost {
        host: Host::new(&recent.record, now, alive),
        extras: FleetExtras::new(&recent),
    };
    let mut json = Vec::with_capacity(1536);
    json.extend_from_slice(prefix);
    serde_json::to_writer(&mut json, &host).ok()?;
    Some((recent.record, json))
}

/// HOST plus the fleet-view fields for slot `i`, or `None` for an unused or unreadable slot.
pub fn fleet_host(table: &Table, i: usize, now: u64, alive: bool) -> Option<(Record, Value)> {
    let (rec, json) = fleet_host_json(table, i, now, alive, b"")?;
    Some((rec, serde_json::from_slice(&json).ok()?))
}

/// The fleet view's row for slot `i`: only the HOST fields the fleet view shows, plus the
/// fleet-view fields. The event stream sends these (a third of a full HOST: 5,000 hosts a
/// second is a lot of JSON for a browser to parse); /api/v1/hosts sends full HOST objects.
pub fn fleet_row(table: &Table, i: usize, now: u64, alive: bool) -> Option<(Record, Value)> {
    let recent = table.read_history(i, 0, SPARK_POINTS, true)?;
    let rec = &recent.record;
    if rec.in_use != 1 {
        return None;
    }
    let s = &rec.summary;
    let mut row = match json!({
        "id": rec.agent_id(),
        "hostname": rec.hostname.get(),
        "status": status_of(rec, now).as_str(),
        "connected": rec.connected == 1 && alive,
        "last_seen_ms": rec.last_seen_ms,
        "agent_version": rec.agent_version.get(),
        "cpu_percent": num(s.cpu_percent),
        "load1": num(s.load1),
        "load5": num(s.load5),
        "load15": num(s.load15),
        "mem_total_bytes": s.mem_total_bytes,
        "mem_used_bytes": s.mem_used_bytes,
        "uptime_s": s.uptime_s,
        "identity": identity_of(rec, now),
        "cloned_address": (identity_of(rec, now) == Identity::Cloned).then(|| rec.cloned_address.get()),
        "labels": Labels(rec),
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    fleet_extras(&recent, &mut row);
    Some((recent.record, Value::Object(row)))
}

/// Consistent copies of every host record in use.
pub fn records(table: &Table) -> Vec<Record> {
    (0..table.host_count())
        .filter_map(|i| table.read_record(i))
        .filter(|r| r.in_use == 1)
        .collect()
}

/// What a reader remembers of a slot to tell, without copying it, whether what it rendered
/// from the slot is still true: the slot's seqlock counter, and the status with what it is
/// derived from (only the passing of time changes the status of an unchanged record).
#[derive(Clone, Copy, PartialEq)]
pub struct SlotState {
    pub version: u64,
    pub status: Status,
    goodbye: bool,
    last_seen_ms: u64,
    last_seen_boot_ms: u64,
    interval_ms: u32,
}

impl SlotState {
    /// `version` must have been read before `rec` was copied.
    pub fn of(rec: &Record, version: u64, now: u64) -> SlotState {
        SlotState {
            version,
            status: status_of(rec, now),
            goodbye: rec.goodbye == 1,
            last_seen_ms: rec.last_seen_ms,
            last_seen_boot_ms: rec.last_seen_boot_ms,
            interval_ms: rec.interval_ms,
        }
    }

    /// True if the slot still holds what was rendered and its status has not moved on.
    pub fn unchanged(&self, version: u64, now: u64) -> bool {
        self.version == version && version % 2 == 0 && {
            let (seen, now) =
                crate::status::seen_and_now(self.last_seen_ms, self.last_seen_boot_ms, now);
            Status::derive(self.goodbye, seen, self.interval_ms, now) == self.status
        }
    }
}

/// GET /api/v1/hosts with each host's JSON kept between requests: a request renders only the
/// hosts whose slot changed (or whose status moved on) since the last one, and sends the rest
/// from memory. The body is the cached objects themselves, in order, which hyper writes with
/// writev: joining 5,000 hosts into one buffer was a quarter of the request's CPU.
///
/// A client that polls every few seconds would still find most hosts changed (5,000 hosts at
/// 2 Hz change 10,000 times a second) and wait for all of them to render. So while anyone has
/// asked in the last [`KEEP_WARM_MS`], [`HostsCache::warm`] renders the changed hosts every
/// [`WARM_EVERY`] in the background, and a request renders only what changed since (docs/
/// BENCHMARKS.md has both the back-to-back and the polling figures). Memory: one rendered HOST
/// per slot in use.
#[derive(Default)]
pub struct HostsCache {
    inner: std::sync::Mutex<CacheInner>,
    /// Unix ms of the latest request.
    last_request_ms: AtomicU64,
    /// Signalled by every request: the warmer sleeps on it while nobody polls.
    pub requested: tokio::sync::Notify,
}

/// How long after the latest GET /api/v1/hosts the cache is kept warm: a poller's interval,
/// with room. An idle master renders nothing.
pub const KEEP_WARM_MS: u64 = 60_000;
/// How often the warmer renders the hosts that changed.
pub const WARM_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// Slots the warmer renders per turn of the lock, so that a request waits for at most this
/// many hosts' rendering before it takes over.
const WARM_BATCH: usize = 128;

#[derive(Default)]
struct CacheInner {
    hosts: Vec<Option<CachedHost>>,
    /// Slots in use, by (hostname, id); rebuilt when a host appears or is renamed.
    order: Vec<usize>,
    order_valid: bool,
    alive: bool,
}

struct CachedHost {
    state: SlotState,
    key: (String, String),
    /// `,` and the host's JSON object: the separator travels with the host, so the body is
    /// one part per host (the first host's part starts after the comma).
    json: Bytes,
}

impl CacheInner {
    /// Follows the table's slot count and the collector's liveness (which every host's
    /// `connected` depends on).
    fn follow(&mut self, table: &Table) -> bool {
        let alive = collector_alive(table);
        if self.alive != alive {
            self.hosts.clear();
            self.alive = alive;
        }
        let count = table.host_count();
        if self.hosts.len() != count {
            self.hosts.resize_with(count, || None);
            self.order_valid = false;
        }
        alive
    }

    /// Renders again the hosts in `slots` whose slot changed or whose status moved on.
    /// Returns how many it rendered.
    fn refresh(
        &mut self,
        table: &Table,
        now: u64,
        alive: bool,
        slots: std::ops::Range<usize>,
    ) -> usize {
        let (mut rendered, mut reorder) = (0, false);
        let end = slots.end.min(self.hosts.len());
        for (i, cached) in self.hosts[..end].iter_mut().enumerate().skip(slots.start) {
            let version = table.slot_version(i);
            if cached
                .as_ref()
                .is_some_and(|h| h.state.unchanged(version, now))
            {
                continue;
            }
            let old = cached.take();
            let Some((rec, json)) = fleet_host_json(table, i, now, alive, b",") else {
                reorder |= old.is_some();
                continue;
            };
            rendered += 1;
            // The sort key, kept unless the host was renamed (or the slot is new).
            let key = match old {
                Some(h)
                    if h.key.0 == rec.hostname.as_str() && h.key.1.as_bytes() == rec.agent_id =>
                {
                    h.key
                }
                _ => {
                    reorder = true;
                    (rec.hostname.get(), rec.agent_id())
                }
            };
            *cached = Some(CachedHost {
                state: SlotState::of(&rec, version, now),
                key,
                json: Bytes::from(json),
            });
        }
        if reorder {
            self.order_valid = false;
        }
        rendered
    }
}

impl HostsCache {
    /// The body of GET /api/v1/hosts (docs/CONTRACT.md), the same as [`hosts`] renders, as
    /// the parts to send one after another.
    pub fn render(&self, table: &Table, now: u64) -> SegmentedBuf<Bytes> {
        self.last_request_ms.fetch_max(now, Ordering::Relaxed);
        self.requested.notify_one();
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *c;
        let alive = c.follow(table);
        c.refresh(table, now, alive, 0..usize::MAX);
        if !c.order_valid {
            let hosts = &c.hosts;
            c.order = (0..hosts.len()).filter(|&i| hosts[i].is_some()).collect();
            c.order.sort_by(|&a, &b| {
                let key = |i: usize| hosts[i].as_ref().map(|h| &h.key);
                key(a).cmp(&key(b))
            });
            c.order_valid = true;
        }
        let mut parts = VecDeque::with_capacity(c.order.len() + 2);
        parts.push_back(Bytes::from(format!("{{\"now_ms\":{now},\"hosts\":[")));
        let hosts = c.order.iter().filter_map(|&i| c.hosts[i].as_ref());
        for (n, h) in hosts.enumerate() {
            parts.push_back(if n == 0 {
                h.json.slice(1..)
            } else {
                h.json.clone()
            });
        }
        parts.push_back(Bytes::from_static(b"]}"));
        SegmentedBuf::from(parts)
    }

    /// True if a request came in the last [`KEEP_WARM_MS`].
    pub fn polled(&self, now: u64) -> bool {
        now.saturating_sub(self.last_request_ms.load(Ordering::Relaxed)) <= KEEP_WARM_MS
    }

    /// Renders the hosts that changed, if a request came in the last [`KEEP_WARM_MS`];
    /// returns how many it rendered. The http process calls it every [`WARM_EVERY`].
    pub fn warm(&self, table: &Table, now: u64) -> usize {
        if !self.polled(now) {
            return 0;
        }
        let mut rendered = 0;
        let mut start = 0;
        loop {
            let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let alive = c.follow(table);
            if start >= c.hosts.len() {
                return rendered;
            }
            rendered += c.refresh(table, now, alive, start..start + WARM_BATCH);
            start += WARM_BATCH;
        }
    }
}

/// The fleet, every host rendered now (the uncached form of [`HostsCache::render`]).
pub fn hosts(table: &Table, now: u64) -> Value {
    let alive = collector_alive(table);
    let mut hosts: Vec<(Record, Value)> = (0..table.host_count())
        .filter_map(|i| fleet_host(table, i, now, alive))
        .collect();
    hosts.sort_by_cached_key(|(r, _)| (r.hostname.get(), r.agent_id()));
    let hosts: Vec<Value> = hosts.into_iter().map(|(_, v)| v).collect();
    json!({"now_ms": now, "hosts": hosts})
}

pub fn host_detail(table: &Table, id: &str, now: u64) -> Resp {
    if !sentinel_protocol::is_valid_agent_id(id) {
        return not_found();
    }
    let found = (0..table.host_count()).find(|&i| {
        table
            .read_record(i)
            .is_some_and(|r| r.in_use == 1 && r.agent_id() == id)
    });
    let Some(detail) = found.and_then(|i| table.read_detail(i)) else {
        return not_found();
    };
    let mut host = host_json(&detail.record, now, collector_alive(table));
    let sample = detail
        .sample
        .and_then(|b| stored_sample(&b))
        .and_then(|s| {
            let text = serde_json::to_string(&s).ok()?;
            let mut v = serde_json::from_str::<Value>(&text).ok()?;
            // Used as df shows it, computed here once for the API and the dashboard.
            if let Some(list) = v["filesystems"].as_array_mut() {
                for (j, f) in list.iter_mut().zip(&s.filesystems) {
                    j["used_bytes"] = f.used_bytes().into();
                    j["used_ratio"] = json!(thousandth(f.used_ratio()));
                }
            }
            Some(v)
        })
        .unwrap_or(Value::Null);
    host.insert("sample".into(), sample);
    let points: Vec<Value> = detail
        .history
        .iter()
        .map(|p| {
            json!({
                "ts_ms": p.ts_ms,
                "cpu_percent": num(p.cpu_percent),
                "mem_used_bytes": p.mem_used_bytes,
                "load1": num(p.load1),
                "net_rx_bytes_per_s": num(p.net_rx_bytes_per_s),
                "net_tx_bytes_per_s": num(p.net_tx_bytes_per_s),
                "disk_read_bytes_per_s": num(p.disk_read_bytes_per_s),
                "disk_write_bytes_per_s": num(p.disk_write_bytes_per_s),
            })
        })
        .collect();
    host.insert("history".into(), json!({ "points": points }));
    json_response(StatusCode::OK, &Value::Object(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentinel_protocol::{encode_sample, Filesystem, Sample};

    fn fs(mount: &str, total: u64, available: u64, free: Option<u64>) -> Filesystem {
        Filesystem {
            mount: mount.into(),
            fs_type: "ext4".into(),
            total_bytes: total,
            available_bytes: available,
            free_bytes: free,
        }
    }

    #[test]
    fn fs_fullest_is_used_as_df_computes_it_with_3_decimals() {
        // "/": 1000 total, 780 free, 80 available (700 reserved): df 220 used, 220/300 = 73.3 %.
        // "/data": no free (0.1.0 agent): 500 of 1000 used, 50 %.
        let s = Sample {
            seq: 1,
            filesystems: vec![fs("/data", 1000, 500, None), fs("/", 1000, 80, Some(780))],
            ..Sample::default()
        };
        let mut wire = Vec::new();
        encode_sample(&s, &mut wire).unwrap();
        let f = stored_fs_fullest(&wire).unwrap();
        assert_eq!((f.mount.as_str(), f.used_bytes), ("/", 220));
        assert_eq!(f.used_ratio, Some(0.733));
        assert_eq!(serde_json::to_string(&f.used_ratio).unwrap(), "0.733");
        // Total - available would have said 92 %.
        let old = Sample {
            filesystems: vec![fs("/data", 1000, 500, None)],
            ..s
        };
        let mut wire = Vec::new();
        encode_sample(&old, &mut wire).unwrap();
        let f = stored_fs_fullest(&wire).unwrap();
        assert_eq!((f.used_bytes, f.used_ratio), (500, Some(0.5)));
        for v in [0.123_456_7, 2.0 / 3.0, 0.1 + 0.2, 0.999_95] {
            let text = serde_json::to_string(&thousandth(v)).unwrap();
            assert!(
                text.split_once('.').is_none_or(|(_, d)| d.len() <= 3),
                "{v}: {text}"
            );
        }
    }
}
